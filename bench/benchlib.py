"""Shared pieces of the benchmarks under bench/ (bench/METHOD.md says how they measure).

  - paths: the agent binary (TPM_PROVISION_BIN or build/tpm-provision), the test fixtures
    (tests/lib: Swtpm, TemplateSwtpm, TpmProxy; tests/emulator: the DPS emulator)
  - Device: one TPM, a configuration file and a runtime directory, as a boot would have them
  - timing: whole processes from fork to reap, warm-up runs first, the OS's own accounting of
    user and system time (wait4), reported as min / median / max; two commands
    alternate A B A B and their ratio is taken pair by pair
  - stats() and pct() for what the scripts print

Nothing here judges: the scripts print what they measured and bench/report.py writes it down.
"""
import atexit
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "lib"))
sys.path.insert(0, os.path.join(ROOT, "tests", "emulator"))
from client import Emulator  # noqa: E402,F401
from swtpm import Swtpm, TemplateSwtpm  # noqa: E402,F401
from tpmproxy import CC, MUTATING_CC, TpmProxy, cc_name  # noqa: E402,F401

AGENT = os.environ.get("TPM_PROVISION_BIN", os.path.join(ROOT, "build", "tpm-provision"))


def _stop_leftover_children():
    """At exit, the swtpm and emulator processes this script started and a failure left
    running (their own stop() was never reached): each by its pid."""
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                cmd = f.read().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if ppid == me and (os.path.basename(cmd[0]) == b"swtpm" or
                           any(c.endswith(b"dps_emulator.py") for c in cmd)):
            try:
                os.kill(int(entry), signal.SIGKILL)
            except OSError:
                pass


atexit.register(_stop_leftover_children)
OUT_DIR = os.environ.get("BENCH_OUT", os.path.join(ROOT, "build", "bench"))
RUNS = int(os.environ.get("BENCH_RUNS", "21"))
WARMUP = int(os.environ.get("BENCH_WARMUP", "1"))


# -- devices --------------------------------------------------------------------------------

def clean_env(extra=None):
    """The caller's environment without anything that would steer the agent."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TPM_PROVISION_", "CREDENTIALS_DIRECTORY", "NOTIFY_SOCKET"))}
    env.update(extra or {})
    return env


class Device:
    """A TPM plus what a boot gives the agent: a configuration file (TPM_PROVISION_CONFIG), a
    runtime directory (RUNTIME_DIRECTORY) and an empty kernel command line."""

    def __init__(self, workdir, tpm, emu=None, registration_id=None):
        self.dir = workdir
        self.tpm = tpm
        self.emu = emu
        self.runtime_dir = os.path.join(workdir, "run")
        self.config = os.path.join(workdir, "tpm-provision.conf")
        lines = ["[Provisioning]"]
        if emu is not None:
            lines += ["IdScope=" + emu.id_scope, "GlobalEndpoint=" + emu.url, "CABundle=" + emu.ca]
        else:
            lines += ["IdScope=0ne00000001"]
        if registration_id:
            lines += ["RegistrationId=" + registration_id]
        with open(self.config, "w") as f:
            f.write("\n".join(lines) + "\n")

    def env(self, tcti=None):
        return clean_env({"TPM_PROVISION_TCTI": tcti or self.tpm.tcti,
                          "TPM_PROVISION_CONFIG": self.config,
                          "RUNTIME_DIRECTORY": self.runtime_dir,
                          "TPM_PROVISION_CMDLINE": os.devnull})

    def argv(self, *args):
        return [AGENT, *args]

    def run(self, *args, tcti=None, check=True):
        res = subprocess.run(self.argv(*args), env=self.env(tcti), capture_output=True,
                             text=True, timeout=600)
        if check and res.returncode != 0:
            raise RuntimeError("tpm-provision %s exited %d: %s" % (
                " ".join(args), res.returncode, res.stderr[-2000:]))
        return res

    def ek_public(self):
        import base64
        return base64.b64decode(json.loads(self.run("ek", "--json").stdout)["endorsementKey"])


class CopySwtpm(Swtpm):
    """A Swtpm started from a copy of another TPM's state directory (say, one already owned):
    no swtpm_setup, and every copy is the same TPM at the moment the state was taken."""

    def __init__(self, workdir, state_from):
        self._state_from = state_from
        super().__init__(workdir, ek_cert=True, persist_ek=True)

    def _manufacture(self, ek_cert):
        shutil.copytree(self._state_from, self.state, dirs_exist_ok=True)


def owned_template(workdir, persist_ek=True):
    """The state directory of a TPM on which `own` has run, for CopySwtpm."""
    t = TemplateSwtpm(os.path.join(workdir, "owned-template"), persist_ek=persist_ek)
    try:
        Device(os.path.join(workdir, "owned-template"), t).run("own")
    finally:
        t.stop(clean=True)
    return t.state


def workdir(prefix):
    return tempfile.mkdtemp(prefix="tpmprov-bench-%s-" % prefix)


# -- timing ---------------------------------------------------------------------------------

def run_measured(argv, env, stdout=subprocess.DEVNULL):
    """One whole process: wall seconds from just before fork to just after reap, and the
    kernel's accounting of the reaped child (user and system seconds). Not its peak RSS: a
    child forked from this Python process starts with Python's pages counted, and Linux keeps
    that high-water mark across exec; footprint.py measures RSS under GNU time instead."""
    t0 = time.monotonic()
    p = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=stdout,
                         stderr=subprocess.DEVNULL)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.monotonic() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    return {"wall": wall, "user": ru.ru_utime, "sys": ru.ru_stime,
            "cpu": ru.ru_utime + ru.ru_stime, "rc": p.returncode}


def measure(prepare, runs=None, warmup=None):
    """Times `runs` runs after `warmup` uncounted ones. prepare(i) is called untimed before
    run i and returns (argv, env, cleanup or None)."""
    runs = RUNS if runs is None else runs
    warmup = WARMUP if warmup is None else warmup
    samples = []
    for i in range(warmup + runs):
        argv, env, cleanup = prepare(i)
        try:
            s = run_measured(argv, env)
        finally:
            if cleanup:
                cleanup()
        if i >= warmup:
            samples.append(s)
    return summarize(samples)


def measure_pair(prepare_a, prepare_b, runs=None, warmup=None):
    """A and B in turn (A B A B ...), each pair's ratio A/B: a ratio that holds while the
    machine's speed drifts. Returns (a, b, ratio) summaries."""
    runs = RUNS if runs is None else runs
    warmup = WARMUP if warmup is None else warmup
    a, b = [], []
    for i in range(warmup + runs):
        pair = []
        for prepare in (prepare_a, prepare_b):
            argv, env, cleanup = prepare(i)
            try:
                pair.append(run_measured(argv, env))
            finally:
                if cleanup:
                    cleanup()
        if i >= warmup:
            a.append(pair[0])
            b.append(pair[1])
    ratios = [x["wall"] / y["wall"] for x, y in zip(a, b)]
    return summarize(a), summarize(b), {"ratio_wall": stats(ratios)}


def summarize(samples):
    bad = [s["rc"] for s in samples if s["rc"] != 0]
    return {"runs": len(samples), "failed_runs": len(bad), "exit_codes": sorted(set(bad)),
            "wall": stats([s["wall"] for s in samples]),
            "cpu": stats([s["cpu"] for s in samples])}


def stats(values):
    values = list(values)
    if not values:
        return {"n": 0}
    return {"n": len(values), "min": min(values), "median": statistics.median(values),
            "max": max(values)}


def pct(values, p):
    """The p-th percentile (nearest rank) of values."""
    v = sorted(values)
    if not v:
        return None
    k = max(0, min(len(v) - 1, math.ceil(p / 100.0 * len(v)) - 1))
    return v[k]


# -- load -----------------------------------------------------------------------------------

def loadavg():
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def cpu_busy_snapshot():
    """(busy, total) jiffies of the whole machine from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def proc_cpu_seconds(pid):
    """utime + stime of a live process, in seconds (/proc/PID/stat fields 14 and 15)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def machine():
    info = {"cores": os.cpu_count(), "loadavg": loadavg()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return info


def save(name, data):
    os.makedirs(OUT_DIR, exist_ok=True)
    path = os.path.join(OUT_DIR, name + ".json")
    with open(path + ".tmp", "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
    os.rename(path + ".tmp", path)
    return path
