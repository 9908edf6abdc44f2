#!/bin/sh
# The host packages the boot tests need, installed when missing (as tests/deps.sh does).
# dracut and initramfs-tools are deliberately not among them: they conflict, and the images
# are built inside the Debian 12 chroot instead.
set -eu
PACKAGES="qemu-system-x86 qemu-utils debootstrap e2fsprogs swtpm swtpm-tools python3-cryptography"
missing=""
for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "tpm-provision boot tests: installing missing Debian packages:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $missing >/dev/null
