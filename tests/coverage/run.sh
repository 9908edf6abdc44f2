#!/bin/bash
# `make coverage` (issue 7): line coverage of agent/ by the unit and integration tests. Builds
# an instrumented agent in build/cov (gcc --coverage, -O0), runs both tiers against it, then
# prints gcov's line counts per source file and in total. docs/coverage.md says what is not
# covered and why. Extra arguments go to pytest (say, -k register for a quick look).
set -u
cd "$(dirname "$0")/../.."
BUILD=build/cov
find "$BUILD" -name '*.gcda' -delete 2>/dev/null
make --no-print-directory -s BUILD=$BUILD CFLAGS="-O0 -g --coverage" LDFLAGS="--coverage" \
    all unit-bins || exit 1
# Runs as another user (the B13 tests) write their counts too.
find "$BUILD" -type d -exec chmod 0777 {} +
# The tests' output goes to build/cov/tests.log; failures are shown (they lower the figures).
BUILD=$BUILD TPM_PROVISION_BIN=$PWD/$BUILD/tpm-provision SUITES=tests/integration \
    tests/run-tests.sh "$@" >"$BUILD/tests.log" 2>&1
grep -E '^(FAILED|ERROR) ' "$BUILD/tests.log"
tail -n 1 "$BUILD/tests.log"

/usr/bin/python3 - "$BUILD" <<'PYEOF'
import glob, os, re, subprocess, sys
build = sys.argv[1]
total_run = total_lines = 0
rows = []
for src in sorted(glob.glob("agent/*.c") + glob.glob("agent/*/*.c")):
    obj_dir = os.path.join(build, "obj", os.path.dirname(src))
    out = subprocess.run(["gcov", "-n", "-o", obj_dir, src], capture_output=True,
                         text=True).stdout
    # gcov prints "File 'x.c'" then "Lines executed:P% of N" for the file and its headers.
    m = re.search(r"File '%s'\nLines executed:([0-9.]+)%% of (\d+)" % re.escape(src), out)
    if not m:
        rows.append((src, 0.0, 0))
        continue
    pct, n = float(m.group(1)), int(m.group(2))
    rows.append((src, pct, n))
    total_run += round(pct * n / 100)
    total_lines += n
for src, pct, n in rows:
    print("%-32s %6.1f%% of %5d lines" % (src, pct, n))
print("coverage: %.1f%% of %d lines of agent/ (%d run)" % (
    100.0 * total_run / max(total_lines, 1), total_lines, total_run))
PYEOF
