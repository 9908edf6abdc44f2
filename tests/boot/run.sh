#!/bin/bash
# `make check-boot`: qemu boots of a Debian 12 kernel and root file system (tests/boot/README.md).
# Needs root (debootstrap, chroot, mount); elsewhere every scenario is reported skipped.
set -u
cd "$(dirname "$0")/../.."
if [ "$(id -u)" -ne 0 ]; then
    echo "boot tests need root (debootstrap, chroot); skipped"
    echo "0 passed, 0 failed, 5 skipped"
    exit 0
fi
tests/boot/deps.sh || { echo "0 passed, 1 failed"; exit 1; }
exec /usr/bin/python3 tests/boot/boot_test.py "$@"
