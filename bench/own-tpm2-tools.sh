#!/bin/bash
# The ownership steps of `tpm-provision own` done with tpm2-tools, one tool per step, for
# bench/tpm_commands.py to compare with (its TPM commands counted through the same proxy, its
# wall time measured the same way). On a fresh TPM it leaves what `own` leaves:
#
#   EK   0x81010001  TCG EK Credential Profile RSA-2048 template (tpm2_createek, which honours a
#                    template and nonce the TPM maker stored in NV), persisted; with --ek-persisted
#                    the EK is already there and only read (tpm2_readpublic)
#   SRK  0x81000001  TCG Provisioning Guidance RSA-2048 storage key, unique = 256 zero bytes
#   NV   0x01000100  1024 bytes, ownerwrite|ownerread|authread|no_da, slot 0 holding a valid
#                    "owned" state record (docs/state-record.md), so `own` afterwards finds
#                    nothing to do
#
# and then flushes the transient objects the tools leave (without a resource manager, the SRK
# createprimary made stays loaded). Unlike `own` it checks nothing first: it is only right on a
# TPM known to be fresh, and it does not compare the EK with the EK certificate.
#
# Usage: TPM2TOOLS_TCTI=swtpm:path=SOCKET bench/own-tpm2-tools.sh [--ek-persisted] WORKDIR
set -eu

ek_persisted=0
if [ "${1:-}" = "--ek-persisted" ]; then
    ek_persisted=1
    shift
fi
dir=${1:?usage: own-tpm2-tools.sh [--ek-persisted] WORKDIR}
mkdir -p "$dir"
export TSS2_LOG=${TSS2_LOG:-all+none}

# The state record, slot 0: magic TPPS, version 1, reserved 0, payload length 23, sequence 1;
# payload: state 1 (owned), flags 0, identity handle 0, changed_at (u64 seconds), errorCode 0,
# five empty strings; then SHA-256 over all of that, then zeros to 512 bytes.
# shellcheck disable=SC2059 # the format is the point: hex digits become \x escapes
hex_to_file() { printf "$(printf '%s' "$1" | sed 's/../\\x&/g')" >"$2"; }
record() {
    local head
    head="545050530100001700000001"                       # header
    head="${head}0100""00000000""$(printf '%016x' "$(date +%s)")""00000000""0000000000"
    hex_to_file "$head" "$dir/slot.bin"
    hex_to_file "$(sha256sum "$dir/slot.bin" | cut -c1-64)" "$dir/digest.bin"
    cat "$dir/digest.bin" >>"$dir/slot.bin"
    head -c $((512 - 35 - 32)) /dev/zero >>"$dir/slot.bin"
}

if [ "$ek_persisted" = 1 ]; then
    tpm2_readpublic -c 0x81010001 -o "$dir/ek.pub" >/dev/null
else
    tpm2_createek -c 0x81010001 -G rsa -u "$dir/ek.pub"
fi

# unique: a TPM2B whose size field the tools read little-endian (256 = 00 01), then 256 zeros.
{ printf '\000\001'; head -c 256 /dev/zero; } >"$dir/unique.bin"
tpm2_createprimary -C o -g sha256 -G rsa2048:aes128cfb \
    -a 'fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda|restricted|decrypt' \
    -u "$dir/unique.bin" -c "$dir/srk.ctx" >/dev/null
tpm2_evictcontrol -C o -c "$dir/srk.ctx" 0x81000001 >/dev/null
tpm2_flushcontext -t

tpm2_nvdefine 0x01000100 -C o -s 1024 -a 'ownerwrite|ownerread|authread|no_da' >/dev/null
record
tpm2_nvwrite 0x01000100 -C o -i "$dir/slot.bin"
