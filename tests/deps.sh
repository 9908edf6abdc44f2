#!/bin/sh
# Installs the Debian 12 packages the build, the tests and the demo need, when missing, and
# says which. Run as root on a fresh machine; elsewhere it only reports what is missing.
set -eu

PACKAGES="build-essential pkg-config libtss2-dev libsystemd-dev libssl-dev libcurl4-openssl-dev
libjson-c-dev libcmocka-dev swtpm swtpm-tools tpm2-tools openssl python3-cryptography
python3-pytest faketime clang libclang-rt-14-dev valgrind"

missing=""
for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0

echo "tpm-provision: installing missing Debian packages:$missing"
if [ "$(id -u)" -ne 0 ]; then
    echo "tpm-provision: not root; install them with: apt-get install$missing" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $missing >/dev/null
echo "tpm-provision: packages installed."
