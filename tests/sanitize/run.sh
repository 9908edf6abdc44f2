#!/bin/bash
# `make check-sanitize` (issue 7): the unit tests and the integration tests against an agent
# built with AddressSanitizer, LeakSanitizer and UndefinedBehaviorSanitizer (SANITIZE=1, in
# build/asan). A sanitizer report fails the run: ASan and LSan reports go to files under
# build/asan/reports (found even when the test around them passed), UBSan's stop the agent
# (halt_on_error) and show in the failing test's output. Ends with "N passed, N failed".
set -u
cd "$(dirname "$0")/../.."
BUILD=build/asan
make --no-print-directory -s BUILD=$BUILD SANITIZE=1 WERROR=1 all unit-bins || {
    echo "0 passed, 1 failed"; exit 1; }
reports=$PWD/$BUILD/reports
rm -rf "$reports"
mkdir -p "$reports"
chmod 1777 "$reports"   # some tests run the agent as nobody
# verify_asan_link_order=0: some tests preload a shim (clock, EBUSY) ahead of the runtime.
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:verify_asan_link_order=0:log_path=$reports/asan"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$reports/ubsan"
export LSAN_OPTIONS="log_path=$reports/lsan"
out=$(BUILD=$BUILD TPM_PROVISION_BIN=$PWD/$BUILD/tpm-provision SUITES=tests/integration \
    tests/run-tests.sh 2>&1)
rc=$?
printf '%s\n' "$out" | sed '$d'
read -r passed _ failed _ < <(printf '%s\n' "$out" | tail -n 1)
# Reports reach files under $reports when the runtime honours log_path; UBSan inside the ASan
# runtime writes to the agent's stderr instead, which a test shows when the run fails
# (halt_on_error makes the agent exit 1, and every test checks the exit status).
found=$(find "$reports" -type f | sort)
in_output=$(printf '%s\n' "$out" | grep -cE 'runtime error:|ERROR: (Address|Leak)Sanitizer')
if [ -n "$found" ]; then
    echo "sanitizer report files:"
    for f in $found; do echo "== $f"; head -n 40 "$f"; done
    failed=$((failed + 1))
fi
echo "sanitizers: $(echo "$found" | grep -c .) report files, $in_output reports in test output"
[ "$in_output" -eq 0 ] || failed=$((failed + 1))
echo "${passed:-0} passed, ${failed:-1} failed"
[ "$rc" -eq 0 ] && [ -z "$found" ] && [ "$in_output" -eq 0 ]
