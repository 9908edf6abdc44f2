#!/bin/bash
# `make cross-check-arm64`: the agent cross built for arm64 with Debian's cross compiler and the
# arm64 libraries installed side by side through multiarch, in its own build directory
# (build/arm64), then checked to be an AArch64 executable linked against the expected
# libraries, and run under qemu-user (user-mode emulation). Ends with "N passed, N failed".
set -u
cd "$(dirname "$0")/../.."
BUILD_DIR=build/arm64
passed=0
failed=0
ok() { echo "ok: $*"; passed=$((passed + 1)); }
bad() { echo "FAIL: $*"; failed=$((failed + 1)); }
finish() { echo "$passed passed, $failed failed"; [ "$failed" -eq 0 ]; exit; }

if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    if [ "$(id -u)" -ne 0 ]; then
        bad "arm64 is not a dpkg architecture here; as root: dpkg --add-architecture arm64"
        finish
    fi
    echo "cross-check-arm64: adding arm64 as a dpkg architecture (multiarch)"
    dpkg --add-architecture arm64
fi
packaging/ensure-packages.sh "cross-check-arm64" gcc-aarch64-linux-gnu libc6-dev:arm64 \
    pkgconf:arm64 libtss2-dev:arm64 libsystemd-dev:arm64 libssl-dev:arm64 \
    libcurl4-openssl-dev:arm64 libjson-c-dev:arm64 file binutils-aarch64-linux-gnu qemu-user ||
    { bad "cross build dependencies"; finish; }

rm -rf "$BUILD_DIR"
log=$(mktemp)
if make --no-print-directory BUILD="$BUILD_DIR" CC=aarch64-linux-gnu-gcc \
    PKG_CONFIG=aarch64-linux-gnu-pkg-config WERROR=1 -j"$(nproc)" all >"$log" 2>&1; then
    ok "make BUILD=$BUILD_DIR CC=aarch64-linux-gnu-gcc PKG_CONFIG=aarch64-linux-gnu-pkg-config"
else
    tail -n 20 "$log"
    bad "cross build failed"
    rm -f "$log"
    finish
fi
rm -f "$log"

bin=$BUILD_DIR/tpm-provision
desc=$(file -b "$bin")
echo "file: $desc"
case $desc in
*"ELF 64-bit LSB"*"ARM aarch64"*) ok "file: ELF 64-bit, ARM aarch64" ;;
*) bad "file does not say ELF 64-bit ARM aarch64" ;;
esac

# Linked against the arm64 copies of the project's libraries (pkg-config gave the arm64 flags),
# hardened as on the host: PIE and immediate binding.
needed=$(aarch64-linux-gnu-readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')
echo "NEEDED: $needed"
missing=""
for lib in libtss2-esys.so.0 libtss2-tctildr.so.0 libsystemd.so.0 libcrypto.so.3 \
    libjson-c.so.5; do
    case " $needed " in *" $lib "*) ;; *) missing="$missing $lib" ;; esac
done
[ -z "$missing" ] && ok "links the project's libraries" || bad "NEEDED lacks$missing"
# libcurl is dlopen()ed when a request is about to be made (agent/dps/curl-api.h).
case " $needed " in
*" libcurl.so.4 "*) bad "NEEDED names libcurl.so.4, which the agent dlopen()s" ;;
*) ok "libcurl is not linked (the agent dlopen()s it)" ;;
esac
if aarch64-linux-gnu-readelf -d "$bin" | grep -q 'FLAGS_1.*NOW.*PIE'; then
    ok "PIE with immediate binding"
else
    bad "not PIE with BIND_NOW"
fi

if command -v qemu-aarch64 >/dev/null; then
    # The arm64 loader and libraries are installed under / by multiarch.
    out=$(qemu-aarch64 -L / "$bin" --version 2>&1)
    case $out in
    *0.1*) ok "runs under qemu-aarch64: $out" ;;
    *) bad "qemu-aarch64 $bin --version: $out" ;;
    esac
    # Reads the packaged configuration, then finds no TPM: exit 3, where a broken file gives 2.
    qemu-aarch64 -L / "$bin" --config=packaging/tpm-provision.conf --tcti=device:/nonexistent \
        status >/dev/null 2>&1
    rc=$?
    [ "$rc" -eq 3 ] && ok "under qemu-aarch64, status without a TPM exits 3" ||
        bad "under qemu-aarch64, status without a TPM exited $rc, not 3"
else
    echo "skipped: running the binary (no qemu-aarch64; apt-get install qemu-user)"
fi
finish
