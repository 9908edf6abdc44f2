#!/bin/sh
# ensure-packages.sh WHAT PACKAGE...: installs the Debian packages that are missing, saying which
# and for what; tests/deps.sh, tests/boot/deps.sh and the packaging scripts use it. Names may
# carry an architecture (libssl-dev:arm64). Not root: says what to install and fails.
set -eu
what=$1
shift
missing=""
for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0

echo "tpm-provision $what: installing missing Debian packages:$missing"
if [ "$(id -u)" -ne 0 ]; then
    echo "tpm-provision $what: not root; install them with: apt-get install$missing" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $missing >/dev/null
echo "tpm-provision $what: packages installed."
