#!/usr/bin/python3
"""`make bench`: runs the benchmarks under bench/ and writes bench/RESULTS.md.

Usage: bench/run.py [PART ...]   PART: tpm http footprint fleet manufacturing (default: all).
Each part is its own script and leaves its figures in build/bench/PART.json (BENCH_OUT); the
report is then written from the newest figures of every part, so one part can be measured
again on its own. Exits non-zero when a part failed (the report says which).
Environment: BENCH_RUNS, BENCH_WARMUP, BENCH_RSS_RUNS, FLEET_DEVICES, FLEET_RATE,
FLEET_RETRY_AFTER, TPM_PROVISION_BIN, BOOT_CACHE.
"""
import datetime
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time

import benchlib as b
import report

HERE = os.path.dirname(os.path.abspath(__file__))
PY = "/usr/bin/python3"
PARTS = [("tpm", "tpm_commands.py"), ("http", "http_requests.py"),
         ("footprint", "footprint.py"), ("fleet", "fleet.py"),
         ("manufacturing", "manufacturing.py")]


def ensure_time():
    """GNU time for the RSS figures (Debian package `time`)."""
    if os.path.exists("/usr/bin/time"):
        return
    if os.geteuid() != 0:
        sys.exit("bench: /usr/bin/time is missing; install it with: apt-get install time")
    print("bench: installing the Debian package time", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-q"], env=env, check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "time"],
                   env=env, check=True, stdout=subprocess.DEVNULL)


def output(*cmd):
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=b.ROOT)
        return (res.stdout or res.stderr).strip().splitlines()[0]
    except (OSError, IndexError):
        return None


def first_match(pattern, text):
    m = re.search(pattern, text or "")
    return m.group(1) if m else text


def package_version(name):
    return output("dpkg-query", "-W", "-f=${Version}\\n", name)


def changed_build_inputs():
    """Files the binary is built from that differ from the commit (agent/, Makefile)."""
    res = subprocess.run(["git", "status", "--porcelain", "--", "agent", "Makefile"],
                         capture_output=True, text=True, cwd=b.ROOT)
    return [line[3:] for line in res.stdout.splitlines() if line[3:]]


def build_identity():
    with open(b.AGENT, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    return {
        "commit": output("git", "rev-parse", "--short", "HEAD"),
        "describe": output("git", "describe", "--always", "--dirty"),
        "binary": os.path.relpath(b.AGENT, b.ROOT) if b.AGENT.startswith(b.ROOT) else b.AGENT,
        "tree_dirty": bool(output("git", "status", "--porcelain", "--untracked-files=no")),
        "uncommitted_build_inputs": changed_build_inputs(),
        "binary_sha256": digest[:16],
        "versions": {
            "swtpm": first_match(r"version (\S+),", output("swtpm", "--version")),
            "tpm2-tools": first_match(r'version="([^"]+)"',
                                      output("tpm2_createprimary", "--version")),
            "libtss2-esys": package_version("libtss2-esys-3.0.2-0"),
            "libcurl": package_version("libcurl4"),
            "openssl": first_match(r"OpenSSL (\S+)", output("openssl", "version")),
            "python": first_match(r"Python (\S+)", output(PY, "--version")),
            "kernel": output("uname", "-r"),
        },
    }


def run_part(name, script):
    start = time.time()
    load = b.loadavg()
    print("bench: %s (%s)" % (name, script), flush=True)
    cmd = [PY, os.path.join(HERE, script)]
    if name == "manufacturing":
        # It prints its figures as JSON on stdout rather than writing a file.
        res = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, cwd=b.ROOT)
        if res.returncode == 0:
            b.save("manufacturing", json.loads(res.stdout))
    else:
        res = subprocess.run(cmd, cwd=b.ROOT)
    return {"script": script, "exit_code": res.returncode,
            "binary_sha256": build_identity()["binary_sha256"],
            "started": datetime.datetime.fromtimestamp(start, datetime.timezone.utc)
                       .strftime("%Y-%m-%d %H:%M:%S UTC"),
            "seconds": round(time.time() - start, 1),
            "loadavg_before": load, "loadavg_after": b.loadavg()}


def main():
    wanted = sys.argv[1:] or [n for n, _ in PARTS]
    unknown = [w for w in wanted if w not in dict(PARTS)]
    if unknown:
        sys.exit("bench: unknown part %s; parts: %s" % (
            ", ".join(unknown), " ".join(n for n, _ in PARTS)))
    if not os.path.exists(b.AGENT):
        sys.exit("bench: %s is missing; run make first" % b.AGENT)
    ensure_time()
    if "TPM_PROVISION_BIN" not in os.environ:
        # One binary for every part: build/ is shared, and a `make` elsewhere may replace
        # build/tpm-provision while the parts run.
        snapshot = os.path.join(b.OUT_DIR, "tpm-provision")
        os.makedirs(b.OUT_DIR, exist_ok=True)
        shutil.copy2(b.AGENT, snapshot + ".tmp")
        os.rename(snapshot + ".tmp", snapshot)
        os.environ["TPM_PROVISION_BIN"] = b.AGENT = snapshot

    meta_path = os.path.join(b.OUT_DIR, "meta.json")
    try:
        with open(meta_path) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        meta = {"parts": {}}
    meta["build"] = build_identity()
    meta["machine"] = b.machine()
    for name, script in PARTS:
        if name in wanted:
            meta["parts"][name] = run_part(name, script)
            b.save("meta", meta)

    path = report.write()
    failed = [n for n, p in meta["parts"].items() if p["exit_code"] != 0]
    print("bench: wrote %s%s" % (os.path.relpath(path, b.ROOT),
                                 "; failed: " + ", ".join(failed) if failed else ""))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
