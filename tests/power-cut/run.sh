#!/bin/bash
# `make check-power-cut` (issue 7): power cuts and killed agents at every TPM command of a
# whole first boot (own, then register against the DPS emulator), then boots until the device
# converges. Prints how many cut points it covered and ends with "N passed, N failed".
# Extra arguments go to pytest (for example -k 'after' or -x).
set -u
cd "$(dirname "$0")/../.."
PY=/usr/bin/python3
BUILD=${BUILD:-build}
xml="$BUILD/power-cut-results.xml"
rm -f "$xml"
t0=$(date +%s)
$PY -m pytest -q -p no:cacheprovider --import-mode=importlib --junitxml="$xml" tests/power-cut "$@"
[ -f "$xml" ] || { echo "0 passed, 1 failed"; exit 1; }
$PY - "$xml" "$(( $(date +%s) - t0 ))" <<'PYEOF'
import re, sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
cases = root.iter("testcase")
modes, cuts, passed, failed = {}, {}, 0, 0
for c in cases:
    bad = c.find("failure") is not None or c.find("error") is not None
    skipped = c.find("skipped") is not None
    m = re.search(r"^test_power_cut_or_kill_at_every_command_of_(\w+)\[(\d+)-(after|before|kill)\]$",
                  c.get("name", ""))
    if m and not skipped:
        what, n, mode = m.group(1), int(m.group(2)), m.group(3)
        modes.setdefault((what, mode), set()).add(n)
        cuts.setdefault(what, set()).add(n)
    if skipped:
        continue
    failed += bad
    passed += not bad
for (what, mode), ns in sorted(modes.items()):
    print("power cut: %s, mode %-6s covered %d cut points (%d..%d)"
          % (what.replace("_", " "), mode, len(ns), min(ns), max(ns)))
for what, ns in sorted(cuts.items()):
    print("power cut: %s: %d TPM commands" % (what.replace("_", " "), len(ns)))
print("power cut: %d runs, %s s" % (passed + failed, sys.argv[2]))
print("%d passed, %d failed" % (passed, failed))
# A harness that covered no cut point proves nothing.
sys.exit(1 if failed or not passed or not cuts else 0)
PYEOF
