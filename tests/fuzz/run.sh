#!/bin/bash
# Builds every tests/fuzz/fuzz-*.c with libFuzzer, AddressSanitizer and UBSan (clang), and runs
# each for FUZZ_SECONDS (default 30) on its seed corpus in tests/fuzz/corpus/NAME. New inputs
# collect in build/fuzz/corpus-NAME; a crash leaves build/fuzz/crash-* and fails the run (turn
# it into a seed of its corpus once fixed). Prints the executions per target.
set -euo pipefail
cd "$(dirname "$0")/../.."

SECONDS_EACH=${FUZZ_SECONDS:-30}
OUT=build/fuzz
CC=${FUZZ_CC:-clang}
PKGS="tss2-esys tss2-mu tss2-rc tss2-tctildr libsystemd libcrypto libssl libcurl json-c"
CFLAGS="-g -O1 -std=gnu11 -D_GNU_SOURCE -DVERSION=\"fuzz\" -DBUILD_EPOCH=0 -Iagent \
    -fsanitize=fuzzer-no-link,address,undefined $(pkg-config --cflags $PKGS)"
mkdir -p "$OUT/obj"

objs=()
for src in agent/*.c agent/*/*.c; do
    [ "$src" = agent/main.c ] && continue
    obj="$OUT/obj/$(echo "${src%.c}" | tr / _).o"
    if [ ! -f "$obj" ] || [ "$src" -nt "$obj" ]; then
        # shellcheck disable=SC2086
        $CC $CFLAGS -c "$src" -o "$obj"
    fi
    objs+=("$obj")
done

status=0
passed=0
failed=0
for src in tests/fuzz/fuzz-*.c; do
    name=$(basename "$src" .c)
    name=${name#fuzz-}
    # shellcheck disable=SC2086
    $CC $CFLAGS -fsanitize=fuzzer "$src" "${objs[@]}" $(pkg-config --libs $PKGS) \
        -o "$OUT/fuzz-$name"
    mkdir -p "$OUT/corpus-$name"
    log="$OUT/fuzz-$name.log"
    if "$OUT/fuzz-$name" -max_total_time="$SECONDS_EACH" -artifact_prefix="$OUT/crash-$name-" \
        -print_final_stats=1 "$OUT/corpus-$name" "tests/fuzz/corpus/$name" >"$log" 2>&1; then
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
        echo "fuzz $name: ${runs:-?} executions in ${SECONDS_EACH} s, no crash"
        passed=$((passed + 1))
    else
        echo "fuzz $name: FAILED, see $log"
        tail -30 "$log"
        status=1
        failed=$((failed + 1))
    fi
done
echo "$passed passed, $failed failed"
exit $status
