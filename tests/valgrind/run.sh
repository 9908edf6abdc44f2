#!/bin/bash
# `make check-valgrind` (issue 7): the main flows under valgrind's memcheck: own (fresh TPM,
# EK persisted or not, owned again), status, ek, register (happy path, the fast path, --force),
# sas, reset, and enroll, each an integration test run against the real binary through a
# wrapper. Any memcheck error or definite/indirect leak in any run fails, even where the test
# itself passed. Ends with "N passed, N failed".
set -u
cd "$(dirname "$0")/../.."
make --no-print-directory -s all || { echo "0 passed, 1 failed"; exit 1; }
dir=$PWD/build/valgrind
logs=$dir/logs
rm -rf "$logs"
mkdir -p "$logs"
cat >"$dir/tpm-provision" <<WRAP
#!/bin/sh
exec valgrind -q --error-exitcode=99 --leak-check=full --show-leak-kinds=definite,indirect \\
    --errors-for-leak-kinds=definite,indirect --log-file=$logs/vg.%p \\
    $PWD/build/tpm-provision "\$@"
WRAP
chmod +x "$dir/tpm-provision"

# The flows, by test name. Tests with tight time bounds are left out: memcheck runs the agent
# ten to fifty times slower.
flows="test_own_with_ek_persisted_at_setup_keeps_that_ek
test_own_with_ek_not_persisted_creates_the_ek_of_the_certificate
test_own_twice_changes_nothing_the_second_time
test_status_of_a_fresh_tpm_changes_nothing
test_ek_json_equals_independent_computation
test_ek_csv_and_text
test_register_provisions_over_one_tls_connection_and_the_hub_accepts_its_token
test_second_register_sends_nothing_writes_nothing_and_rewrites_the_handoff
test_register_force_replaces_the_hub_key
test_reset_needs_yes_then_removes_only_what_register_made
test_enroll_options_reach_the_enrollment
test_enroll_read_only_policy_is_a_clear_error_nothing_created"
expr=$(printf '%s\n' $flows | paste -sd '|' | sed 's/|/ or /g')

xml=$dir/results.xml
TPM_PROVISION_BIN=$dir/tpm-provision /usr/bin/python3 -m pytest -q -p no:cacheprovider \
    --import-mode=importlib --junitxml="$xml" -k "$expr" tests/integration
read -r passed failed < <(/usr/bin/python3 - "$xml" <<'PYEOF'
import sys, xml.etree.ElementTree as ET
cases = list(ET.parse(sys.argv[1]).getroot().iter("testcase"))
bad = sum(1 for c in cases if c.find("failure") is not None or c.find("error") is not None)
print(len(cases) - bad, bad)
PYEOF
)
runs=$(find "$logs" -type f | wc -l)
dirty=$(find "$logs" -type f -size +0 | sort)
if [ -n "$dirty" ]; then
    for f in $dirty; do echo "== $f"; head -n 60 "$f"; done
    failed=$((failed + 1))
    echo "valgrind: errors in $(echo "$dirty" | wc -l) of $runs agent runs"
else
    echo "valgrind: $runs agent runs, no memcheck error and no definite or indirect leak"
fi
[ "$runs" -gt 0 ] || failed=$((failed + 1))
echo "${passed:-0} passed, ${failed:-1} failed"
[ "${failed:-1}" -eq 0 ]
