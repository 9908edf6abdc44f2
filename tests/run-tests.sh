#!/bin/bash
# Runs every test tier and ends with one summary line, "N passed, N failed":
#   1. unit tests (cmocka binaries in build/tests/),
#   2. integration tests of the real binary against swtpm (pytest, tests/integration),
#   3. the DPS emulator's own tests (pytest, tests/emulator).
# --unit-only stops after the first tier; SUITES= chooses the pytest tiers. BUILD= and
# TPM_PROVISION_BIN= choose the binaries (tests/sanitize uses both). Exit status 0 only when
# nothing failed.
set -u
cd "$(dirname "$0")/.."

PY=/usr/bin/python3   # Debian's interpreter: it has python3-cryptography and python3-pytest.
BUILD=${BUILD:-build}
passed=0
failed=0

echo "== unit tests"
for t in "$BUILD"/tests/test-*; do
    [ -x "$t" ] || continue
    out=$("$t" 2>&1)
    rc=$?
    printf '%s\n' "$out" | grep -E '^\[  (PASSED|FAILED|  ERROR) |^\[  ERROR|^\[   LINE' || true
    p=$(printf '%s\n' "$out" | sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p')
    f=$(printf '%s\n' "$out" | sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p')
    passed=$((passed + ${p:-0}))
    failed=$((failed + ${f:-0}))
    # A crash prints no summary: count the binary as one failure.
    if [ "$rc" -ne 0 ] && [ -z "$f" ]; then failed=$((failed + 1)); fi
done

if [ "${1:-}" != "--unit-only" ]; then
    for suite in ${SUITES:-tests/integration tests/emulator}; do
        ls "$suite"/test_*.py >/dev/null 2>&1 || continue
        echo "== $suite"
        xml="$BUILD/$(basename "$suite")-results.xml"
        rm -f "$xml"
        $PY -m pytest -q -p no:cacheprovider --import-mode=importlib --junitxml="$xml" "$suite"
        if [ -f "$xml" ]; then
            read -r p f < <($PY - "$xml" <<'PYEOF'
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == "testsuite" else list(root)
t = sum(int(s.get("tests", 0)) for s in suites)
bad = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
skip = sum(int(s.get("skipped", 0)) for s in suites)
print(t - bad - skip, bad)
PYEOF
)
            passed=$((passed + p))
            failed=$((failed + f))
        else
            failed=$((failed + 1))
        fi
    done
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
