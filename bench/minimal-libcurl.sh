#!/bin/bash
# A libcurl with only what DPS needs, to measure what Debian's libcurl4 costs the agent in
# memory (bench/footprint.py, BENCH_LIBCURL_DIR). Built from Debian 12's own curl source
# package, with Debian's patches, and configured as a Yocto image would build it: OpenSSL,
# zlib, the threaded resolver and proxies; no LDAP, RTMP, SSH, GSS-API, PSL, IDN, HTTP/2,
# brotli or zstd. Only libcurl.so.4 is built and installed, under DEST/lib.
#
# Usage: bench/minimal-libcurl.sh DEST
# Needs the Debian archive's sources (deb-src is added for this run only, in a private apt
# state directory), dpkg-dev, libssl-dev, zlib1g-dev, gcc and make.
set -euo pipefail

dest=${1:?usage: bench/minimal-libcurl.sh DEST}
mkdir -p "$dest"
dest=$(cd "$dest" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

missing=()
for pkg in dpkg-dev libssl-dev zlib1g-dev; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' ||
        missing+=("$pkg")
done
if ((${#missing[@]})); then
    echo "minimal-libcurl: installing ${missing[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        "${missing[@]}" >&2
fi

# The machine's own Debian archives, as deb-src, in a private apt state: nothing of the
# system's apt configuration or package lists changes.
if [[ -r /etc/apt/sources.list.d/debian.sources ]]; then
    sed 's/^Types:.*/Types: deb-src/' /etc/apt/sources.list.d/debian.sources >"$work/src.sources"
    list=(-o "Dir::Etc::sourcelist=-" -o "Dir::Etc::sourceparts=$work/parts")
    mkdir "$work/parts" && mv "$work/src.sources" "$work/parts/debian.sources"
else
    sed -n 's/^deb /deb-src /p' /etc/apt/sources.list >"$work/src.list"
    list=(-o "Dir::Etc::sourcelist=$work/src.list" -o "Dir::Etc::sourceparts=-")
fi
mkdir -p "$work/lists/partial" "$work/cache/archives/partial"
apt=(apt-get -q "${list[@]}" -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache")
"${apt[@]}" update >&2
(cd "$work" && "${apt[@]}" source --download-only curl >&2)
dpkg-source -x "$work"/curl_*.dsc "$work/curl" >&2

cd "$work/curl"
./configure --prefix="$dest" --disable-static --enable-versioned-symbols \
    --with-openssl --with-zlib --enable-threaded-resolver --enable-proxy \
    --disable-ldap --disable-ldaps --without-librtmp --without-libssh2 --without-libssh \
    --without-libpsl --without-libidn2 --without-nghttp2 --without-brotli --without-zstd \
    --without-gssapi --disable-manual \
    --with-ca-bundle=/etc/ssl/certs/ca-certificates.crt >"$work/configure.log" 2>&1 ||
    { tail -20 "$work/configure.log" >&2; exit 1; }
make -s -j"$(nproc)" -C lib >&2
make -s -C lib install >&2
echo "$dest/lib/libcurl.so.4: $(dpkg-parsechangelog -l debian/changelog -S Version)," \
    "needs: $(ldd "$dest/lib/libcurl.so.4" | awk '/=>/ {print $1}' | tr '\n' ' ')"
