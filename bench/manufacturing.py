#!/usr/bin/python3
"""Measures the manufacturing line's tools (bench/manufacturing.md has the method and results):

  ek      seconds per device for `tpm-provision ek --csv --serial=S --append=LIST` on swtpm (the
          TPM already manufactured and running; EK persisted, as `own` or the TPM maker leaves
          it, and not persisted, so the agent computes it with CreatePrimary)
  enroll  rows per second for `tpm-provision enroll` of ROWS synthetic rows against the DPS
          emulator on loopback, bulk calls of 10

Usage: bench/manufacturing.py [--runs N] [--rows N]. Prints one JSON object.
"""
import argparse
import base64
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "lib"))
sys.path.insert(0, os.path.join(ROOT, "tests", "emulator"))
from client import Emulator  # noqa: E402
from swtpm import Swtpm  # noqa: E402
from tpmcheck import EK, read_public  # noqa: E402

AGENT = os.environ.get("TPM_PROVISION_BIN", os.path.join(ROOT, "build", "tpm-provision"))


def run(args, tcti="device:/nonexistent"):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TPM_PROVISION_")}
    env["TPM_PROVISION_TCTI"] = tcti
    t0 = time.monotonic()
    subprocess.run([AGENT, *args], env=env, check=True, capture_output=True)
    return time.monotonic() - t0


def bench_ek(work, runs, persisted):
    t = Swtpm(os.path.join(work, "ek-%s" % persisted), persist_ek=persisted)
    listing = os.path.join(work, "ek-%s.csv" % persisted)
    try:
        times = [run(["ek", "--csv", "--serial=SN-%d" % i, "--append=" + listing], t.tcti)
                 for i in range(1)]  # the first append creates the file; measured apart
        for i in range(runs):
            os.unlink(listing)
            times.append(run(["ek", "--csv", "--serial=SN-%d" % i, "--append=" + listing],
                             t.tcti))
        return t, times[1:]
    finally:
        t.stop()


def regid(ek):
    return base64.b32encode(hashlib.sha256(ek).digest()).decode().lower().rstrip("=")


def bench_enroll(work, real_ek, rows, runs):
    rates = []
    for r in range(runs):
        emu = Emulator()
        emu.start()
        try:
            listing = os.path.join(work, "enroll-%d.csv" % r)
            with open(listing, "w") as f:
                f.write("registrationId,endorsementKey,ekCertSerial,ekCertSha256,deviceSerial,"
                        "time\n")
                for i in range(rows):
                    ek = real_ek[:-256] + bytes([0x80 | os.urandom(1)[0]]) + os.urandom(255)
                    f.write("%s,%s,,,SN-%d,2026-01-01T00:00:00Z\n" % (
                        regid(ek), base64.b64encode(ek).decode(), i))
            cs = os.path.join(work, "cs")
            with open(cs, "w") as f:
                f.write(emu.connection_string())
            os.chmod(cs, 0o600)
            seconds = run(["enroll", "--list=" + listing, "--connection-string-file=" + cs,
                           "--endpoint=" + emu.url, "--ca-bundle=" + emu.ca])
            rates.append(rows / seconds)
        finally:
            emu.close()
    return rates


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--rows", type=int, default=500)
    a = p.parse_args()
    work = tempfile.mkdtemp(prefix="tpmprov-bench-")
    try:
        t, persisted = bench_ek(work, a.runs, True)
        _, computed = bench_ek(work, a.runs, False)
        real_ek = read_public_stopped(t, work)
        rates = bench_enroll(work, real_ek, a.rows, max(3, a.runs // 2))
        print(json.dumps({
            "ek_seconds_per_device_persisted": {"median": statistics.median(persisted),
                                                "runs": persisted},
            "ek_seconds_per_device_computed": {"median": statistics.median(computed),
                                               "runs": computed},
            "enroll_rows_per_second": {"median": statistics.median(rates), "rows": a.rows,
                                       "runs": rates},
        }, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def read_public_stopped(t, work):
    t.start()
    try:
        return read_public(t, EK, work)
    finally:
        t.stop()


if __name__ == "__main__":
    main()
