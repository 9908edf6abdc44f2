#!/bin/bash
# `make check-packaging`: the packages as an image builder uses them.
#   1. make deb, and what the .debs declare (dependencies, triggers, conffiles, maintainer
#      scripts that neither enable nor start a unit), and the binary's hardening;
#   2. lintian: no error and no warning, and no tag at any level that is not overridden with
#      a reason;
#   3. both man pages render without a warning;
#   4. tpm-provision + tpm-provision-initramfs-tools installed with apt into one Debian 12 root,
#      tpm-provision + tpm-provision-dracut into another (dracut and initramfs-tools conflict):
#      the files, the tss group, units installed but not enabled, the agent runs, and the
#      initramfs rebuilt by the trigger holds the agent; removal rebuilds it without;
#   5. the Yocto layer's static checks (tests/packaging/yocto.sh);
#   6. the arm64 cross build (tests/packaging/cross-arm64.sh).
# Needs root (debootstrap, chroot, mount). Ends with "N passed, N failed" and the wall time.
set -u
cd "$(dirname "$0")/../.."
start=$(date +%s)
passed=0
failed=0
ok() { echo "ok: $*"; passed=$((passed + 1)); }
bad() { echo "FAIL: $*"; failed=$((failed + 1)); }
check() {
    local what=$1
    shift
    if "$@"; then ok "$what"; else bad "$what"; fi
}
finish() {
    echo "wall time: $(($(date +%s) - start)) s"
    echo "$passed passed, $failed failed"
    [ "$failed" -eq 0 ]
    exit
}
# A script that prints its own "N passed, N failed": its lines are shown, its counts added.
run_counted() {
    local out rc p f
    out=$("$@" 2>&1)
    rc=$?
    printf '%s\n' "$out" | sed '$d'
    read -r p f <<<"$(printf '%s\n' "$out" | sed -n '$s/^\([0-9]*\) passed, \([0-9]*\) failed$/\1 \2/p')"
    if [ -z "$p" ]; then
        printf '%s\n' "$out" | tail -n 1
        bad "$* ended without a summary (exit $rc)"
        return
    fi
    passed=$((passed + p))
    failed=$((failed + f))
    [ "$rc" -eq 0 ] || [ "$f" -gt 0 ] || bad "$* exited $rc"
}
section() { echo "== $* ($(($(date +%s) - start)) s)"; }

if [ "$(id -u)" -ne 0 ]; then
    echo "check-packaging needs root (debootstrap, chroot, mount); nothing was run"
    echo "0 passed, 1 failed"
    exit 1
fi
packaging/ensure-packages.sh "check-packaging" debootstrap lintian devscripts man-db file ||
    { bad "packages for the checks"; finish; }

source tests/packaging/roots.sh
work=$(mktemp -d /var/tmp/tpm-provision-packaging.XXXXXX)
cleanup() {
    umount_all
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- 1. make deb ----
section "make deb"
DEB=build/deb
if make --no-print-directory deb; then
    ok "make deb"
else
    bad "make deb"
    finish
fi
AGENT_DEB=$(ls $DEB/tpm-provision_*_amd64.deb 2>/dev/null)
DRACUT_DEB=$(ls $DEB/tpm-provision-dracut_*_all.deb 2>/dev/null)
IRT_DEB=$(ls $DEB/tpm-provision-initramfs-tools_*_all.deb 2>/dev/null)
check "the three packages are in build/deb" \
    [ -f "$AGENT_DEB" -a -f "$DRACUT_DEB" -a -f "$IRT_DEB" ]
[ -f "$AGENT_DEB" ] && [ -f "$DRACUT_DEB" ] && [ -f "$IRT_DEB" ] || finish

field() { dpkg-deb -f "$1" "$2"; }
control_file() { dpkg-deb --ctrl-tarfile "$1" | tar -xOf - "./$2" 2>/dev/null; }
# has TEXT ERE / lacks TEXT ERE
has() { grep -qE -- "$2" <<<"$1"; }
lacks() { ! grep -qE -- "$2" <<<"$1"; }
# The libraries libcurl.so.4 needs in root (its ldd) that an initramfs listing lacks: the agent
# dlopen()s libcurl there to register (rd.tpm_provision.register=1).
curl_deps_missing() {
    local root=$1 listing=$2 lib out=""
    for lib in $(in_root "$root" ldd /usr/lib/x86_64-linux-gnu/libcurl.so.4 |
        sed -n 's|.*=> /[^ ]*/\([^/ ]*\) (.*|\1|p'); do
        grep -q "/$lib\$\|/$lib " <<<"$listing" || out="$out $lib"
    done
    echo "$out"
}

deps=$(field "$AGENT_DEB" Depends)
check "tpm-provision depends on libtss2-tcti-device0 (dlopen()ed, no shlibs entry names it)" \
    has "$deps" '(^|, )libtss2-tcti-device0(,|$| )'
check "tpm-provision depends on libcurl4 (dlopen()ed when it talks to DPS)" \
    has "$deps" '(^|, )libcurl4(,|$| )'
check "tpm-provision depends on tpm-udev (the tss group and the node's owner)" \
    has "$deps" '(^|, )tpm-udev(,|$| )'
check "tpm-provision-dracut depends on tpm-provision and dracut-core" \
    has "$(field "$DRACUT_DEB" Depends)" '^dracut-core, tpm-provision \(>= [^)]*\)$'
check "tpm-provision-initramfs-tools depends on tpm-provision and initramfs-tools" \
    has "$(field "$IRT_DEB" Depends)" '^initramfs-tools, tpm-provision \(>= [^)]*\)$'
for d in "$DRACUT_DEB" "$IRT_DEB"; do
    check "$(field "$d" Package): trigger activate-noawait update-initramfs" \
        has "$(control_file "$d" triggers)" '^activate-noawait update-initramfs$'
done
check "/etc/tpm-provision/tpm-provision.conf is a conffile" \
    has "$(control_file "$AGENT_DEB" conffiles)" '^/etc/tpm-provision/tpm-provision.conf$'
scripts="$(control_file "$AGENT_DEB" preinst)$(control_file "$AGENT_DEB" postinst)"
check "no maintainer script enables or starts a unit (udev pulls them)" \
    lacks "$scripts" 'deb-systemd-helper (enable|update-state)|deb-systemd-invoke (start|restart) |systemctl .*(enable|start)'
check "an upgrade restarts only units that run (try-restart)" \
    has "$scripts" 'deb-systemd-invoke try-restart'
check "nothing stops the units before an upgrade" \
    lacks "$(control_file "$AGENT_DEB" preinst)" 'deb-systemd-invoke stop'
check "removal stops the units" \
    has "$(control_file "$AGENT_DEB" prerm)" 'deb-systemd-invoke stop tpm-provision-register.service tpm-provision-tpm.service'

mkdir -p "$work/agent"
dpkg-deb -x "$AGENT_DEB" "$work/agent"
hc=$(hardening-check "$work/agent/usr/sbin/tpm-provision" 2>&1)
# The five features hardening=+all gives on bookworm; hardening-check also reports stack clash
# and control flow protection, which bookworm's dpkg-buildflags does not add.
for feature in "Position Independent Executable" "Stack protected" "Fortify Source functions" \
    "Read-only relocations" "Immediate binding"; do
    check "hardening-check: $feature" has "$hc" "^ *$feature: yes"
done

# ---- 2. lintian ----
section "lintian"
lint=$(lintian --fail-on error,warning --display-info --display-experimental --pedantic \
    "$DEB"/tpm-provision_*_amd64.changes 2>&1)
rc=$?
printf '%s\n' "$lint" | grep -v 'running with root privileges' | sed 's/^/    /'
check "lintian --fail-on error,warning" [ "$rc" -eq 0 ]
check "lintian: no tag at any level (info, pedantic, experimental) without a justified override" \
    lacks "$lint" '^[EWIPX]: '

# ---- 3. man pages ----
section "man pages"
for page in docs/tpm-provision.8 docs/tpm-provision.conf.5; do
    err=$(LC_ALL=C.UTF-8 MANROFFSEQ='' MANWIDTH=80 man --warnings -E UTF-8 -l -Tutf8 "$page" 2>&1 >/dev/null)
    rc=$?
    [ -z "$err" ] || printf '%s\n' "$err" | sed 's/^/    /'
    check "man --warnings -l $page: no warning" [ "$rc" -eq 0 -a -z "$err" ]
done

# ---- 4. installed into Debian 12 roots ----
section "Debian 12 roots"
if ! kernel_deb || ! base_root "$KERNEL_DEB"; then
    bad "the Debian 12 base root (debootstrap, kernel)"
    finish
fi
KVER=$(cat "$BASE_DIR/kernel-version")

# The files the tpm-provision package puts on a system, as root-relative paths.
AGENT_FILES="usr/sbin/tpm-provision lib/systemd/system/tpm-provision-tpm.service
lib/systemd/system/tpm-provision-register.service lib/udev/rules.d/60-tpm-provision-tss.rules
lib/udev/rules.d/70-tpm-provision.rules usr/share/man/man8/tpm-provision.8.gz
usr/share/man/man5/tpm-provision.conf.5.gz etc/tpm-provision/tpm-provision.conf"

# install_into ROOT DEB...: apt-get install of the local packages; the log in $work/apt.log.
install_into() {
    local root=$1 d names=()
    shift
    mkdir -p "$root/tmp/debs"
    for d in "$@"; do
        cp "$d" "$root/tmp/debs/"
        names+=("/tmp/debs/$(basename "$d")")
    done
    root_apt_install "$root" "${names[@]}" >"$work/apt.log" 2>&1
}

# Checks every root gets from the tpm-provision package itself.
check_agent() {
    local root=$1 tag=$2 f missing="" out rc
    for f in $AGENT_FILES; do [ -e "$root/$f" ] || missing="$missing $f"; done
    check "$tag: binary, units, rules, man pages and conffile installed${missing:+ (missing:$missing)}" \
        [ -z "$missing" ]
    check "$tag: dpkg lists /etc/tpm-provision/tpm-provision.conf as a conffile" \
        has "$(in_root "$root" dpkg-query -W -f='${Conffiles}' tpm-provision)" \
        '^ /etc/tpm-provision/tpm-provision.conf [0-9a-f]{32}$'
    check "$tag: tpm-udev came with it" \
        has "$(in_root "$root" dpkg-query -W -f='${Status}' tpm-udev 2>&1)" '^install ok installed$'
    check "$tag: the tss group exists" has "$(in_root "$root" getent group tss)" '^tss:'
    check "$tag: libtss2-tcti-device.so.0 is installed" \
        has "$(cd "$root/usr/lib/x86_64-linux-gnu" && ls)" '^libtss2-tcti-device\.so\.0'
    for f in tpm-provision-tpm.service tpm-provision-register.service; do
        out=$(in_root "$root" systemctl is-enabled "$f" 2>&1)
        check "$tag: $f installed, not enabled (is-enabled: $out)" [ "$out" = static ]
    done
    out=$(find "$root/etc/systemd" -name 'tpm-provision*' 2>/dev/null)
    check "$tag: no unit links under /etc/systemd${out:+ ($out)}" [ -z "$out" ]
    check "$tag: 70-tpm-provision.rules pulls both units when a tpmrm device appears" \
        has "$(cat "$root/lib/udev/rules.d/70-tpm-provision.rules")" \
        '^[^#]*SUBSYSTEM=="tpmrm".*SYSTEMD_WANTS\}\+="tpm-provision-tpm\.service tpm-provision-register\.service"'
    out=$(in_root "$root" ldd /usr/sbin/tpm-provision 2>&1 | grep 'not found')
    check "$tag: every library the agent links is there${out:+ ($out)}" [ -z "$out" ]
    out=$(in_root "$root" tpm-provision --version 2>&1)
    check "$tag: tpm-provision --version: $out" [ "$out" = "tpm-provision $(field "$AGENT_DEB" Version)" ]
    # The shipped configuration is read first: a broken one exits 2, no TPM exits 3.
    in_root "$root" tpm-provision --tcti=device:/nonexistent status >/dev/null 2>&1
    rc=$?
    check "$tag: with the shipped configuration, status without a TPM exits 3 (got $rc)" [ "$rc" -eq 3 ]
}

initrd_sum() { sha256sum <"$1/boot/initrd.img-$KVER" 2>/dev/null | cut -d' ' -f1; }

scenario_initramfs_tools() {
    local root list before listing
    flavour_root "$BASE_DIR" irt || { bad "initramfs-tools root"; return; }
    overlay_root "$FLAVOUR_DIR" "$work/irt" || { bad "overlay of the initramfs-tools root"; return; }
    root=$ROOT
    before=$(initrd_sum "$root")
    listing=$(in_root "$root" lsinitramfs "/boot/initrd.img-$KVER")
    check "initramfs-tools: the initramfs lacks the agent before the install" \
        lacks "$listing" 'usr/sbin/tpm-provision$'

    if install_into "$root" "$AGENT_DEB" "$IRT_DEB"; then
        ok "initramfs-tools: apt-get install tpm-provision tpm-provision-initramfs-tools"
    else
        tail -n 20 "$work/apt.log"
        bad "initramfs-tools: apt-get install tpm-provision tpm-provision-initramfs-tools"
        umount_all
        return
    fi
    check_agent "$root" initramfs-tools
    check "initramfs-tools: hook and boot script installed, executable" \
        [ -x "$root/usr/share/initramfs-tools/hooks/tpm-provision" -a \
          -x "$root/usr/share/initramfs-tools/scripts/init-premount/tpm-provision" ]
    check "initramfs-tools: the trigger ran update-initramfs" \
        has "$(sed -n '/Processing triggers for initramfs-tools/,$p' "$work/apt.log")" \
        "^update-initramfs: Generating /boot/initrd.img-$KVER"
    check "initramfs-tools: the initramfs was rebuilt" [ "$(initrd_sum "$root")" != "$before" ]
    listing=$(in_root "$root" lsinitramfs "/boot/initrd.img-$KVER")
    missing=""
    for f in 'usr/sbin/tpm-provision$' 'libtss2-tcti-device\.so\.0' 'libcurl\.so\.4' \
        'libnghttp2\.so' 'scripts/init-premount/tpm-provision$' 'etc/tpm-provision/tpm-provision\.conf$' \
        'drivers/char/tpm/tpm_tis_spi\.ko'; do
        grep -q "$f" <<<"$listing" || missing="$missing $f"
    done
    check "initramfs-tools: the initramfs holds agent, TCTI module, script, configuration, TPM drivers${missing:+ (missing:$missing)}" \
        [ -z "$missing" ]
    missing=$(curl_deps_missing "$root" "$listing")
    check "initramfs-tools: the initramfs holds every library libcurl needs${missing:+ (missing:$missing)}" \
        [ -z "$missing" ]
    # The script runs only if init-premount's ORDER lists it.
    rm -rf "$root/tmp/unpacked"
    in_root "$root" unmkinitramfs "/boot/initrd.img-$KVER" /tmp/unpacked >/dev/null 2>&1
    check "initramfs-tools: scripts/init-premount/ORDER runs the script" \
        has "$(cat "$root"/tmp/unpacked/{,main/}scripts/init-premount/ORDER 2>/dev/null)" \
        '^/scripts/init-premount/tpm-provision'

    root_apt "$root" remove tpm-provision-initramfs-tools >"$work/apt.log" 2>&1
    listing=$(in_root "$root" lsinitramfs "/boot/initrd.img-$KVER")
    check "initramfs-tools: removing the package ran update-initramfs" \
        has "$(cat "$work/apt.log")" '^update-initramfs: Generating'
    check "initramfs-tools: the rebuilt initramfs has no tpm-provision script" \
        lacks "$listing" 'scripts/init-premount/tpm-provision$'
    root_apt "$root" purge tpm-provision >"$work/apt.log" 2>&1
    check "initramfs-tools: purging tpm-provision removes the conffile, units and binary" \
        [ ! -e "$root/etc/tpm-provision/tpm-provision.conf" -a \
          ! -e "$root/lib/systemd/system/tpm-provision-tpm.service" -a \
          ! -e "$root/usr/sbin/tpm-provision" ]
    umount_all
}

scenario_dracut() {
    local root before listing missing f
    flavour_root "$BASE_DIR" dracut || { bad "dracut root"; return; }
    overlay_root "$FLAVOUR_DIR" "$work/dracut" || { bad "overlay of the dracut root"; return; }
    root=$ROOT
    before=$(initrd_sum "$root")
    listing=$(in_root "$root" lsinitrd "/boot/initrd.img-$KVER")
    check "dracut: the initramfs lacks the agent before the install" \
        lacks "$listing" 'usr/sbin/tpm-provision$'

    if install_into "$root" "$AGENT_DEB" "$DRACUT_DEB"; then
        ok "dracut: apt-get install tpm-provision tpm-provision-dracut"
    else
        tail -n 20 "$work/apt.log"
        bad "dracut: apt-get install tpm-provision tpm-provision-dracut"
        umount_all
        return
    fi
    check_agent "$root" dracut
    check "dracut: module installed (module-setup.sh executable, units, rule)" \
        [ -x "$root/usr/lib/dracut/modules.d/91tpm-provision/module-setup.sh" -a \
          -f "$root/usr/lib/dracut/modules.d/91tpm-provision/tpm-provision-initrd.service" -a \
          -f "$root/usr/lib/dracut/modules.d/91tpm-provision/70-tpm-provision.rules" ]
    check "dracut: the trigger ran dracut" \
        has "$(sed -n '/Processing triggers for dracut/,$p' "$work/apt.log")" \
        "^dracut: Generating /boot/initrd.img-$KVER"
    f=$(grep -E 'ERROR|FAILED|cannot|not found' "$work/apt.log")
    check "dracut: the rebuild reported no error${f:+ ($f)}" [ -z "$f" ]
    check "dracut: the initramfs was rebuilt" [ "$(initrd_sum "$root")" != "$before" ]
    listing=$(in_root "$root" lsinitrd "/boot/initrd.img-$KVER")
    missing=""
    for f in '^tpm-provision$' 'usr/sbin/tpm-provision$' 'libtss2-tcti-device\.so\.0' \
        'libcurl\.so\.4' 'libnghttp2\.so' 'systemd/system/tpm-provision-initrd\.service$' \
        'systemd/system/tpm-provision-initrd-register\.service$' \
        'udev/rules\.d/70-tpm-provision\.rules$' 'etc/tpm-provision/tpm-provision\.conf$'; do
        grep -q "$f" <<<"$listing" || missing="$missing $f"
    done
    check "dracut: the initramfs holds module, agent, TCTI module, units, rule, configuration${missing:+ (missing:$missing)}" \
        [ -z "$missing" ]
    missing=$(curl_deps_missing "$root" "$listing")
    check "dracut: the initramfs holds every library libcurl needs${missing:+ (missing:$missing)}" \
        [ -z "$missing" ]

    root_apt "$root" remove tpm-provision-dracut >"$work/apt.log" 2>&1
    listing=$(in_root "$root" lsinitrd "/boot/initrd.img-$KVER")
    check "dracut: removing the package ran dracut" \
        has "$(cat "$work/apt.log")" '^dracut: Generating'
    check "dracut: the rebuilt initramfs has neither the module nor its units" \
        lacks "$listing" '^tpm-provision$|tpm-provision-initrd\.service$'
    umount_all
}

section "initramfs-tools root"
scenario_initramfs_tools
section "dracut root"
scenario_dracut

# ---- 5. Yocto ----
section "Yocto layer"
run_counted tests/packaging/yocto.sh

# ---- 6. arm64 ----
section "arm64 cross build"
run_counted tests/packaging/cross-arm64.sh

finish
