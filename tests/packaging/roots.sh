# Debian 12 roots for the package installation tests, sourced by tests/packaging/run.sh.
#
# Three cached roots under $PACKAGING_CACHE (default /var/cache/tpm-provision-packaging):
#   base-KEY     debootstrap (minbase) of bookworm from the host's Debian mirror, with systemd
#                (as init), udev and kmod, and a Debian 12 kernel (modules in /usr/lib/modules,
#                vmlinuz in /boot) unpacked from its deb, so the initramfs tools have a kernel
#   irt-KEY      base + initramfs-tools, and an initramfs built for that kernel
#   dracut-KEY   base + dracut, and an initramfs built for that kernel
# None of them holds the agent's libraries: installing the packages under test pulls those in,
# tpm-udev and its tss group among them, as on an image builder's system. A test works on an
# overlay of a cached root and throws the overlay away. Downloaded packages are kept in
# $PACKAGING_CACHE/archives, so later runs need the network only for what changed.
#
# The only network address used is the Debian mirror in the host's own apt sources (the same
# rule as tests/boot/bootimage.py); other repositories in those sources are left out.

PACKAGING_CACHE=${PACKAGING_CACHE:-/var/cache/tpm-provision-packaging}
ROOTS_RECIPE=1        # bump when a root's recipe changes in a way the keys below do not see
SUITE=bookworm
BASE_PACKAGES=systemd,systemd-sysv,udev,kmod
# Driver trees an initramfs of these tests never needs: fewer modules, faster initramfs builds.
# drivers/char/tpm stays, since the hook copies the TPM drivers.
PRUNE_MODULES="drivers/gpu drivers/media drivers/net drivers/infiniband drivers/staging
drivers/scsi drivers/usb drivers/hid drivers/input drivers/bluetooth drivers/isdn drivers/iio
drivers/md drivers/video sound net fs/btrfs fs/xfs fs/ocfs2 fs/gfs2 fs/nfs fs/nfsd fs/ceph
fs/smb fs/cifs fs/f2fs fs/ntfs3 fs/jfs fs/reiserfs fs/ubifs fs/nilfs2"

_mounts=()

say() { echo "packaging: $*"; }

# The host's Debian apt sources as one-line entries (deb URI SUITE COMPONENTS), from the
# one-line and the deb822 formats; entries whose URI is not a Debian archive are dropped.
# Sorted, so that the cache key does not change with the order of the files.
host_debian_sources() {
    _host_debian_sources | sort -u
}

_host_debian_sources() {
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        sed -e 's/#.*//' -e 's/\[[^]]*\]//' "$f" |
            awk '$1 == "deb" && $2 ~ /^https?:\/\/.*\/debian(-security)?\/?$/ { print }'
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk '
            function flush() {
                if (types ~ /(^| )deb( |$)/)
                    for (u in uris) if (uris[u] ~ /^https?:\/\/.*\/debian(-security)?\/?$/)
                        for (s in suites) print "deb " uris[u] " " suites[s] " " comps
                types = ""; comps = ""; delete uris; delete suites
            }
            /^[[:space:]]*#/ { next }
            /^[[:space:]]*$/ { flush(); next }
            $1 == "Types:" { $1 = ""; types = $0 }
            $1 == "URIs:" { for (i = 2; i <= NF; i++) uris[i] = $i }
            $1 == "Suites:" { for (i = 2; i <= NF; i++) suites[i] = $i }
            $1 == "Components:" { $1 = ""; comps = substr($0, 2) }
            END { flush() }' "$f"
    done
}

host_debian_mirror() {
    host_debian_sources | awk '$2 ~ /\/debian\/?$/ && $3 == "'"$SUITE"'" { print $2; exit }'
}

key_of() { printf '%s\n' "$@" | sha256sum | cut -c1-16; }

# Mounts what commands in a chroot need; umount_all undoes every mount made here, newest first.
# /sys is the host's, read-only: dracut reads a few kernel parameters there, nothing writes.
mount_chroot() {
    local root=$1
    mount -t proc proc "$root/proc" && _mounts+=("$root/proc")
    mount -t sysfs -o ro sysfs "$root/sys" && _mounts+=("$root/sys")
    mkdir -p "$PACKAGING_CACHE/archives/partial" "$root/var/cache/apt/archives"
    mount --bind "$PACKAGING_CACHE/archives" "$root/var/cache/apt/archives" &&
        _mounts+=("$root/var/cache/apt/archives")
}

umount_all() {
    local i
    for ((i = ${#_mounts[@]} - 1; i >= 0; i--)); do
        umount "${_mounts[i]}" 2>/dev/null || umount -l "${_mounts[i]}"
    done
    _mounts=()
}

in_root() {
    local root=$1
    shift
    env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 HOME=/root \
        DEBIAN_FRONTEND=noninteractive chroot "$root" "$@"
}

# apt in a root, as root: its _apt user cannot write the archive directory bound from the cache.
root_apt() {
    local root=$1
    shift
    in_root "$root" apt-get -q -y -o APT::Sandbox::User=root "$@"
}

# Installs packages in a root; when the root's package lists no longer match the mirror, fetches
# them again and retries once.
root_apt_install() {
    local root=$1
    shift
    root_apt "$root" install --no-install-recommends "$@" && return 0
    say "apt-get install failed; updating the root's package lists and trying again"
    root_apt "$root" update >/dev/null && root_apt "$root" install --no-install-recommends "$@"
}

# kernel_deb: sets KERNEL_DEB to the kernel deb linux-image-amd64 points to, downloaded once.
kernel_deb() {
    local pkg dir=$PACKAGING_CACHE/kernel
    pkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
        awk '$1 == "Depends:" && $2 ~ /^linux-image-6/ { print $2; exit }')
    [ -n "$pkg" ] || { echo "no linux-image-6.* in apt's lists; run apt-get update" >&2; return 1; }
    mkdir -p "$dir"
    if ! ls "$dir/${pkg}_"*.deb >/dev/null 2>&1; then
        say "downloading $pkg (once; kept in $dir)"
        # apt's _apt user cannot write root's cache directory; apt says so and downloads as root.
        (cd "$dir" && apt-get download -q "$pkg" >/dev/null 2>&1) || return 1
    fi
    KERNEL_DEB=$(ls "$dir/${pkg}_"*.deb | sort | tail -n 1)
}

# base_root KERNEL_DEB: sets BASE_DIR to the base root's directory, building it when not cached.
base_root() {
    local deb=$1 mirror sources key dir kver tmp sub
    mirror=$(host_debian_mirror)
    sources=$(host_debian_sources)
    [ -n "$mirror" ] || { echo "no Debian $SUITE mirror in /etc/apt/sources*" >&2; return 1; }
    key=$(key_of "$ROOTS_RECIPE" "$SUITE" "$sources" "$BASE_PACKAGES" "$(basename "$deb")" \
        "$PRUNE_MODULES")
    dir=$PACKAGING_CACHE/base-$key
    if [ ! -e "$dir/complete" ]; then
        rm -rf "$PACKAGING_CACHE"/base-* "$PACKAGING_CACHE"/irt-* "$PACKAGING_CACHE"/dracut-*
        mkdir -p "$dir"
        say "debootstrap $SUITE from $mirror (once; cached in $dir)"
        debootstrap --variant=minbase --include="$BASE_PACKAGES" "$SUITE" "$dir/root" "$mirror" \
            >"$dir/debootstrap.log" 2>&1 || { tail -n 20 "$dir/debootstrap.log" >&2; return 1; }
        printf '%s\n' "$sources" >"$dir/root/etc/apt/sources.list"

        # The kernel: modules and the files mkinitramfs and dracut read. The deb ships /lib and
        # the root has a merged /usr, so the files are moved, not unpacked over the root.
        kver=$(dpkg-deb -f "$deb" Package)
        kver=${kver#linux-image-}
        tmp=$dir/kernel
        mkdir -p "$dir/root/usr/lib/modules"
        dpkg-deb -x "$deb" "$tmp" &&
            mv "$tmp/lib/modules/$kver" "$dir/root/usr/lib/modules/$kver" &&
            cp "$tmp/boot/vmlinuz-$kver" "$tmp/boot/config-$kver" "$tmp/boot/System.map-$kver" \
                "$dir/root/boot/" || return 1
        rm -rf "$tmp"
        for sub in $PRUNE_MODULES; do
            rm -rf "$dir/root/usr/lib/modules/$kver/kernel/$sub"
        done
        in_root "$dir/root" depmod -a "$kver" || return 1
        mount_chroot "$dir/root"
        root_apt "$dir/root" update >/dev/null
        local rc=$?
        umount_all
        [ "$rc" -eq 0 ] || return 1
        echo "$kver" >"$dir/kernel-version"
        touch "$dir/complete"
    fi
    BASE_DIR=$dir
}

# flavour_root BASE irt|dracut: sets FLAVOUR_DIR to the directory of the base with that
# initramfs generator and an initramfs already built, building it when not cached.
flavour_root() {
    local base=$1 flavour=$2 dir kver rc
    dir=$PACKAGING_CACHE/$flavour-$(basename "$base" | sed 's/^base-//')
    kver=$(cat "$base/kernel-version")
    if [ ! -e "$dir/complete" ]; then
        rm -rf "$PACKAGING_CACHE/$flavour"-*
        mkdir -p "$dir"
        say "preparing the $flavour root (once; cached in $dir)"
        cp -a "$base/root" "$dir/root"
        mount_chroot "$dir/root"
        case $flavour in
        irt)
            # MODULES=list: the initramfs holds what hooks add, so a rebuild takes seconds and
            # the TPM drivers found in it come from the project's hook.
            root_apt_install "$dir/root" initramfs-tools >"$dir/setup.log" 2>&1 &&
                sed -i 's/^MODULES=.*/MODULES=list/' "$dir/root/etc/initramfs-tools/initramfs.conf" &&
                in_root "$dir/root" update-initramfs -c -k "$kver" >>"$dir/setup.log" 2>&1
            ;;
        dracut)
            # hostonly=no: a chroot tells nothing about the machine the image will boot on.
            mkdir -p "$dir/root/etc/dracut.conf.d"
            echo 'hostonly="no"' >"$dir/root/etc/dracut.conf.d/50-packaging-test.conf"
            # dracut's postinst builds the initramfs of every kernel in /boot.
            root_apt_install "$dir/root" dracut >"$dir/setup.log" 2>&1
            ;;
        esac
        rc=$?
        umount_all
        [ "$rc" -eq 0 ] && [ -s "$dir/root/boot/initrd.img-$kver" ] ||
            { tail -n 20 "$dir/setup.log" >&2; return 1; }
        touch "$dir/complete"
    fi
    FLAVOUR_DIR=$dir
}

# overlay_root FLAVOUR_DIR WORK: sets ROOT to an overlay of the cached root in WORK/merged,
# written to WORK/upper, with /proc and the archive cache mounted.
overlay_root() {
    local lower=$1/root work=$2
    mkdir -p "$work/upper" "$work/work" "$work/merged"
    mount -t overlay overlay -o "lowerdir=$lower,upperdir=$work/upper,workdir=$work/work" \
        "$work/merged" || return 1
    _mounts+=("$work/merged")
    mount_chroot "$work/merged"
    ROOT=$work/merged
}
