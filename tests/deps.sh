#!/bin/sh
# Installs the Debian 12 packages the build, the tests and the demo need, when missing, and
# says which. Run as root on a fresh machine; elsewhere it only reports what is missing.
set -eu

PACKAGES="build-essential pkg-config libtss2-dev libsystemd-dev libssl-dev libcurl4-openssl-dev
libjson-c-dev libcmocka-dev swtpm swtpm-tools tpm2-tools openssl python3-cryptography
python3-pytest faketime clang libclang-rt-14-dev valgrind"

# shellcheck disable=SC2086
exec "$(dirname "$0")/../packaging/ensure-packages.sh" "tests" $PACKAGES
