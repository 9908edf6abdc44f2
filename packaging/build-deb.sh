#!/bin/bash
# `make deb`: the Debian packages from a clean copy of the tree, left in build/deb/.
#
# dpkg-buildpackage wants debian/ at the top of the source tree, and the project keeps it in
# packaging/debian (DESIGN.md, layout), so the tree is copied to build/deb-src/ with
# packaging/debian staged as debian/. The copy holds what git knows of (tracked files and
# untracked ones that are not ignored, as they are in the work tree), so nothing from build/
# and no local build products reach the package. Outside a git checkout everything but build/
# is copied.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
out=$top/build/deb
stage=$top/build/deb-src

packaging/ensure-packages.sh "make deb" dpkg-dev debhelper

version=$(dpkg-parsechangelog -l packaging/debian/changelog -S Version)
make_version=$(sed -n 's/^VERSION[[:space:]]*:=[[:space:]]*//p' Makefile)
# A native package's version is the program's: a mismatch would ship a binary whose --version
# disagrees with its package.
if [ "$version" != "$make_version" ]; then
    echo "make deb: packaging/debian/changelog says $version, the Makefile's VERSION is $make_version" >&2
    exit 1
fi

rm -rf "$out" "$stage"
src=$stage/tpm-provision-$version
mkdir -p "$src" "$out"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    # Files deleted in the work tree but still in the index are left out.
    git ls-files -z --cached --others --exclude-standard |
        while IFS= read -r -d '' f; do [ -e "$f" ] || [ -L "$f" ] && printf '%s\0' "$f"; done |
        tar --null --no-recursion -T - -cf - | tar -C "$src" -xf -
else
    tar --exclude=./build --exclude=./.git -cf - . | tar -C "$src" -xf -
fi
cp -a packaging/debian "$src/debian"

# Build dependencies from debian/control that are missing here: apt reads them from the staged
# tree, and says what it installs.
if ! (cd "$src" && dpkg-checkbuilddeps >/dev/null 2>&1); then
    echo "tpm-provision make deb: installing missing build dependencies: $(cd "$src" && dpkg-checkbuilddeps 2>&1 | sed 's/.*Unmet build dependencies: //')"
    if [ "$(id -u)" -ne 0 ]; then
        echo "make deb: not root; install them, or run: apt-get build-dep $src" >&2
        exit 1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get build-dep -y -q "$src" >/dev/null
fi

echo "make deb: dpkg-buildpackage -us -uc -b in $src (log: build/deb/build.log)"
if ! (cd "$src" && dpkg-buildpackage -us -uc -b) >"$out/build.log" 2>&1; then
    tail -n 40 "$out/build.log" >&2
    echo "make deb: dpkg-buildpackage failed; the whole log is build/deb/build.log" >&2
    exit 1
fi
mv "$stage"/*.deb "$stage"/*.changes "$stage"/*.buildinfo "$out"/
mv "$stage"/*.ddeb "$out"/ 2>/dev/null || true
ls -1 "$out"
