#!/bin/bash
# Static checks of the Yocto layer (packaging/yocto), which cannot be built here:
#   - the initramfs-framework module parses (dash, busybox ash) and behaves: it runs under a
#     stand-in for the framework's /init, in a busybox chroot with a fake /dev and a stub agent;
#   - the recipe's LIC_FILES_CHKSUM matches the tree, and the files it names exist;
#   - the recipe's do_compile and do_install, run as shell with Yocto's directory values and
#     an oe_runmake that calls make as bitbake's does, install exactly the files its packages
#     list, with the paths filled in.
# Needs root for chroot. Ends with "N passed, N failed".
set -u
cd "$(dirname "$0")/../.."
TOP=$PWD
RECIPE=packaging/yocto/recipes-core/tpm-provision/tpm-provision_0.1.bb
MODULE_IN=initramfs/initramfs-framework/tpm_provision.in
MODULE_NAME=85-tpm_provision
passed=0
failed=0
ok() { echo "ok: $*"; passed=$((passed + 1)); }
bad() { echo "FAIL: $*"; failed=$((failed + 1)); }
check() {
    local what=$1
    shift
    if "$@"; then ok "$what"; else bad "$what"; fi
}

work=$(mktemp -d /var/tmp/tpm-provision-yocto.XXXXXX)
# YOCTO_KEEP=1 keeps the work directory for a look after a failure.
[ -n "${YOCTO_KEEP:-}" ] && echo "yocto checks: work directory $work" || trap 'rm -rf "$work"' EXIT

packaging/ensure-packages.sh "yocto checks" busybox-static dash make ||
    { bad "packages for the checks"; echo "$passed passed, $failed failed"; exit 1; }

# ---- the initramfs-framework module ----
sed -e 's|@sbindir@|/usr/sbin|g' "$MODULE_IN" >"$work/module"
check "module: dash -n" dash -n "$work/module"
check "module: busybox ash -n" busybox sh -n "$work/module"
check "module: every @...@ is substituted" bash -c "! grep -q '@[a-z]*@' '$work/module'"
check "module: defines tpm_provision_enabled and tpm_provision_run" \
    bash -c "grep -q '^tpm_provision_enabled()' '$work/module' && grep -q '^tpm_provision_run()' '$work/module'"

# The chroot: busybox as every tool, the module where the framework looks, a stub agent that
# records how it was called, and an empty /dev in which the test creates tpmrm0 or not.
root=$work/root
mkdir -p "$root/bin" "$root/usr/sbin" "$root/init.d" "$root/dev" "$root/run" "$root/tmp"
cp "$(command -v busybox)" "$root/bin/busybox"
chroot "$root" /bin/busybox --install -s /bin
install -m 0755 "$work/module" "$root/init.d/$MODULE_NAME"
cat >"$root/usr/sbin/tpm-provision" <<'EOF'
#!/bin/sh
echo "$* RUNTIME_DIRECTORY=$RUNTIME_DIRECTORY TSS2_LOG=$TSS2_LOG" >>/tmp/agent.log
exit "${STUB_RC:-0}"
EOF
chmod 0755 "$root/usr/sbin/tpm-provision"
# A stand-in for the framework's /init, written from its documented contract: source every
# /init.d/NN-NAME in order, NAME being what follows "NN-" up to the next "-", and call
# NAME_enabled, then NAME_run. msg, info and debug are the helpers modules may use.
cat >"$root/harness" <<'EOF'
#!/bin/sh
msg() { echo "$@"; }
info() { [ -n "$bootparam_verbose" ] && echo "$@"; }
debug() { :; }
fatal() { echo "fatal: $*"; exit 99; }
for m in /init.d/*; do
    name=${m##*/}
    name=${name#*-}
    name=${name%%-*}
    . "$m"
    if ! eval "${name}_enabled"; then
        echo "harness: $name skipped"
        continue
    fi
    eval "${name}_run"
    echo "harness: $name ran, status $?"
done
EOF
chmod 0755 "$root/harness"

# run_module SETUP [VAR=VALUE...]: a fresh /dev, /run and log, then SETUP (shell, in the chroot)
# and the harness with those variables; sets OUT, STATUS (the status file), AGENT (the stub's
# log) and ELAPSED (tenths of a second).
run_module() {
    local setup=$1 t0 t1
    shift
    rm -rf "$root/dev/"* "$root/run/"* "$root/tmp/agent.log"
    mknod -m 0666 "$root/dev/null" c 1 3
    t0=$(date +%s%N)
    OUT=$(env -i PATH=/bin:/usr/sbin "$@" chroot "$root" /bin/sh -c "$setup /harness" 2>&1)
    t1=$(date +%s%N)
    ELAPSED=$(((t1 - t0) / 100000000))
    STATUS=$(cat "$root/run/tpm-provision/initramfs.status" 2>/dev/null)
    AGENT=$(cat "$root/tmp/agent.log" 2>/dev/null)
}

run_module "touch /dev/tpmrm0;"
check "module: runs 'own' when /dev/tpmrm0 is there" [ "$AGENT" = "own RUNTIME_DIRECTORY=/run/tpm-provision TSS2_LOG=all+none" ]
check "module: records own=0" [ "$STATUS" = "own=0" ]
check "module: the framework's name rule finds tpm_provision_* (file $MODULE_NAME)" \
    bash -c "grep -q 'harness: tpm_provision ran, status 0' <<<'$OUT'"

run_module "touch /dev/tpmrm1;"
check "module: a TPM 2.0 that is not number 0 (tpmrm1) is found" [ "$STATUS" = "own=0" ]

run_module "" bootparam_rd_tpm_provision_wait=1
check "module: without a TPM, own=skipped and the agent is not run" \
    bash -c "[ '$STATUS' = own=skipped ] && [ -z '$AGENT' ]"
check "module: without a TPM, rd.tpm_provision.wait=1 bounds the wait ($((ELAPSED / 10)).$((ELAPSED % 10)) s)" \
    [ "$ELAPSED" -ge 10 -a "$ELAPSED" -lt 30 ]

run_module "(sleep 0.6; touch /dev/tpmrm0) &" bootparam_rd_tpm_provision_wait=5
check "module: a TPM that appears late is waited for ($((ELAPSED / 10)).$((ELAPSED % 10)) s)" \
    bash -c "[ '$STATUS' = own=0 ] && [ '$ELAPSED' -lt 30 ]"

run_module "touch /dev/tpmrm0;" STUB_RC=4
check "module: a failing 'own' is recorded (own=4) and the boot goes on" \
    bash -c "[ '$STATUS' = own=4 ] && grep -q 'harness: tpm_provision ran, status 0' <<<'$OUT'"

# A busybox built without FEATURE_FLOAT_SLEEP: a sleep that refuses fractions. The wait must
# still end after about rd.tpm_provision.wait seconds, not ten times that.
cat >"$root/tmp/sleep" <<'EOF'
#!/bin/sh
case $1 in *.*) echo "sleep: invalid number '$1'" >&2; exit 1 ;; esac
exec /bin/busybox sleep "$1"
EOF
chmod 0755 "$root/tmp/sleep"
run_module "PATH=/tmp:\$PATH;" bootparam_rd_tpm_provision_wait=2
check "module: with a whole-second sleep the wait still ends after ~2 s ($((ELAPSED / 10)).$((ELAPSED % 10)) s)" \
    bash -c "[ '$STATUS' = own=skipped ] && [ '$ELAPSED' -ge 20 ] && [ '$ELAPSED' -lt 40 ]"

rm "$root/tmp/sleep"
chmod 0644 "$root/usr/sbin/tpm-provision"
run_module "touch /dev/tpmrm0;"
check "module: skipped when the agent is not installed" \
    bash -c "grep -q 'harness: tpm_provision skipped' <<<'$OUT' && [ -z '$AGENT' ]"

# ---- the recipe, statically ----
lic=$(sed -n 's/^LIC_FILES_CHKSUM = "file:\/\/\([^;]*\);beginline=\([0-9]*\);endline=\([0-9]*\);md5=\([0-9a-f]*\)"/\1 \2 \3 \4/p' "$RECIPE")
read -r lic_file lic_begin lic_end lic_md5 <<<"$lic"
check "recipe: LIC_FILES_CHKSUM names $lic_file lines $lic_begin-$lic_end with the right md5" \
    bash -c "[ -n '$lic_md5' ] && [ \"\$(sed -n '${lic_begin},${lic_end}p' '$lic_file' | md5sum | cut -d' ' -f1)\" = '$lic_md5' ] && grep -q 'SPDX-License-Identifier: MIT' '$lic_file'"
missing=""
for f in $(grep -o '\${S}/[^ ]*' "$RECIPE" | sed 's|\${S}/||' | sort -u); do
    [ -e "$f" ] || missing="$missing $f"
done
check "recipe: every \${S}/ file it names exists${missing:+ (missing:$missing)}" [ -z "$missing" ]

# The recipe's tasks run as shell: a bitbake variable's value (one line or continued lines
# ending in a backslash) and a shell function's body, taken from the recipe.
bb_var() {
    awk -v name="$1" '
        $0 ~ "^" name " = \"" { on = 1; sub("^" name " = \"", "") }
        on { line = $0; done = sub(/"[[:space:]]*$/, "", line); sub(/\\$/, "", line)
             printf "%s ", line; if (done) exit }' "$RECIPE"
}
bb_func() {
    awk -v name="$1" '$0 == name "() {" { on = 1; next } on && $0 == "}" { exit } on { print }' "$RECIPE"
}
# bitbake expands ${VAR} of its own variables in a shell task before the shell sees it, inside
# single quotes too; the rest is left to the shell.
BB_VARS="prefix sbindir sysconfdir datadir mandir nonarch_libdir nonarch_base_libdir
systemd_system_unitdir S B D TPM_PROVISION_DIRS"
bb_expand() {
    local v args=()
    for v in $BB_VARS; do
        [ -n "${!v-}" ] && args+=(-e "s|\${$v}|${!v}|g")
    done
    sed "${args[@]}"
}

# Yocto's values for a usrmerge distro (scarthgap's bitbake.conf).
prefix=/usr sbindir=/usr/sbin sysconfdir=/etc datadir=/usr/share mandir=/usr/share/man
nonarch_libdir=/usr/lib nonarch_base_libdir=/usr/lib
systemd_system_unitdir=/usr/lib/systemd/system
S=$TOP B=$work/build D=$work/image
TPM_PROVISION_DIRS=$(bb_var TPM_PROVISION_DIRS | bb_expand)
EXTRA_OEMAKE=$(bb_var EXTRA_OEMAKE | bb_expand)
{
    # As base.bbclass's oe_runmake: make, the parallel flags, EXTRA_OEMAKE, the arguments.
    echo "oe_runmake() { make -j2 $EXTRA_OEMAKE \"\$@\" || exit 1; }"
    echo "set -e; mkdir -p '$B' '$D'; cd '$B'"
    bb_func do_compile | bb_expand
    bb_func do_install | bb_expand
} >"$work/tasks.sh"
if bash "$work/tasks.sh" >"$work/tasks.log" 2>&1; then
    ok "recipe: do_compile and do_install run with Yocto's directories"
else
    tail -n 15 "$work/tasks.log"
    bad "recipe: do_compile and do_install run with Yocto's directories"
fi
installed=$(cd "$D" 2>/dev/null && find . -type f -o -type l | sed 's|^\.||' | sort)
expected="/etc/tpm-provision/tpm-provision.conf
/init.d/85-tpm_provision
/usr/lib/dracut/modules.d/91tpm-provision/70-tpm-provision.rules
/usr/lib/dracut/modules.d/91tpm-provision/module-setup.sh
/usr/lib/dracut/modules.d/91tpm-provision/tpm-provision-initrd-register.service
/usr/lib/dracut/modules.d/91tpm-provision/tpm-provision-initrd.service
/usr/lib/dracut/modules.d/91tpm-provision/tpm-provision-own.sh
/usr/lib/systemd/system/tpm-provision-register.service
/usr/lib/systemd/system/tpm-provision-tpm.service
/usr/lib/udev/rules.d/60-tpm-provision-tss.rules
/usr/lib/udev/rules.d/70-tpm-provision.rules
/usr/sbin/tpm-provision
/usr/share/man/man5/tpm-provision.conf.5
/usr/share/man/man8/tpm-provision.8"
if [ "$installed" = "$expected" ]; then
    ok "recipe: installs exactly the files its packages list"
else
    bad "recipe: installed files differ from the packages' lists:"
    diff <(echo "$expected") <(echo "$installed") | sed 's/^/    /'
fi
# Each installed file falls under one package's FILES: the recipe's own entries plus the
# defaults that hold ${sbindir}, ${sysconfdir} and ${mandir}.
check "recipe: FILES:initramfs-module-tpm-provision holds /init.d/$MODULE_NAME" \
    grep -q "^FILES:initramfs-module-tpm-provision = \"/init.d/$MODULE_NAME\"" "$RECIPE"
check "recipe: FILES:\${PN}-dracut holds the dracut module" \
    grep -q '^FILES:${PN}-dracut = "${nonarch_libdir}/dracut/modules.d/91tpm-provision"' "$RECIPE"
check "recipe: SYSTEMD_SERVICE names the units that are installed" \
    bash -c "for u in \$(sed -n 's/^SYSTEMD_SERVICE:\${PN} = \"\(.*\)\"/\1/p' '$RECIPE'); do [ -f '$D/usr/lib/systemd/system/'\$u ] || exit 1; done"
check "recipe: installed units and scripts call /usr/sbin/tpm-provision, no @...@ left" \
    bash -c "grep -q 'ExecStart=/usr/sbin/tpm-provision own' '$D/usr/lib/systemd/system/tpm-provision-tpm.service' && grep -q '^TPM_PROVISION_AGENT=/usr/sbin/tpm-provision$' '$D/init.d/$MODULE_NAME' && ! grep -rq '@[a-z]*@' '$D/usr/lib' '$D/init.d'"
check "recipe: RDEPENDS on libtss2-tcti-device (dlopen()ed by the TCTI loader)" \
    grep -q '^RDEPENDS:${PN} += "libtss2-tcti-device"' "$RECIPE"
check "recipe: RDEPENDS on libcurl (dlopen()ed when the agent talks to DPS)" \
    grep -q '^RDEPENDS:${PN} += "libcurl"' "$RECIPE"
check "recipe: the units are not enabled (SYSTEMD_AUTO_ENABLE = \"disable\")" \
    grep -q '^SYSTEMD_AUTO_ENABLE = "disable"' "$RECIPE"
check "layer: layer.conf names the collection and the recipe's layer variable" \
    bash -c "grep -q '^BBFILE_COLLECTIONS += \"tpm-provision\"' packaging/yocto/conf/layer.conf && grep -q '^TPM_PROVISION_LAYERDIR := \"\${LAYERDIR}\"' packaging/yocto/conf/layer.conf"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
