#!/bin/sh
# The host packages the boot tests need, installed when missing (as tests/deps.sh does).
# dracut and initramfs-tools are deliberately not among them: they conflict, and the images
# are built inside the Debian 12 chroot instead.
set -eu
PACKAGES="qemu-system-x86 qemu-utils debootstrap e2fsprogs swtpm swtpm-tools python3-cryptography"
# shellcheck disable=SC2086
exec "$(dirname "$0")/../../packaging/ensure-packages.sh" "boot tests" $PACKAGES
