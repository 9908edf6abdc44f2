#!/usr/bin/python3
"""A fleet booting at once against a rate-limited DPS (bench/METHOD.md, part 4).

FLEET_DEVICES devices (default 200), each its own swtpm (a copy of one TPM on which `own` ran:
field case B23's "devices booting at once", after their TPM phase) and its own agent process
with its own configuration and runtime directory, all let go at the same instant (each waits
on one start pipe first: starting 200 processes takes seconds) against one DPS emulator
(--polls 0) whose rate_limit fault lets 2 x FLEET_RATE registration PUTs a second through (a
sliding one-second window over all devices; each registration needs two PUTs, so FLEET_RATE
registrations a second at best) and answers the rest 429 with Retry-After FLEET_RETRY_AFTER
seconds. Every copy has the same EK, so each device registers under its own
registration ID (fleet-NNNN), all enrolled with that EK.

Measured: the time until the last device finished against the ideal (devices / rate), each
device's finish time, requests and TLS connections per device from the emulator's request log
(against the minimum of 3: challenge PUT, signed PUT, one GET), exit codes (a device that gives
up exits non-zero), and the CPU the agents, the swtpms and the emulator used, with the whole
machine's busy share over the run: the rate, not the CPU, must be the bottleneck.

Usage: bench/fleet.py. Writes build/bench/fleet.json (BENCH_OUT) and prints its path.
"""
import base64
import os
import shutil
import subprocess
import threading
import time
from urllib.parse import unquote

import benchlib as b

DEVICES = int(os.environ.get("FLEET_DEVICES", "200"))
RATE = float(os.environ.get("FLEET_RATE", "3"))
RETRY_AFTER = os.environ.get("FLEET_RETRY_AFTER", "1")
DEADLINE = 1800
DEVICE_KINDS = ("put_challenge", "put_auth", "get")


def regid(i):
    return "fleet-%04d" % i


def enroll_all(emu, ek, n):
    """Individual enrollments in bulk calls of 10 (the service API's limit)."""
    ek64 = base64.b64encode(ek).decode()
    for start in range(0, n, 10):
        rows = [{"registrationId": regid(i),
                 "attestation": {"type": "tpm", "tpm": {"endorsementKey": ek64}}}
                for i in range(start, min(n, start + 10))]
        r = emu.service("POST", "/enrollments", {"mode": "create", "enrollments": rows})
        if r.status != 200 or not r.json().get("isSuccessful"):
            raise RuntimeError("bulk enrollment failed: %d %s" % (r.status, r.body[:300]))


class Agent:
    """One device's `register`, reaped by its own thread so its finish time is exact. It
    starts as a shell waiting for one line on the start pipe, then execs the agent: starting
    200 processes takes seconds, and the fleet must boot at once."""

    def __init__(self, device, logpath, start_pipe):
        self.device = device
        self.log = open(logpath, "wb")
        self.proc = subprocess.Popen(["/bin/sh", "-c", 'read _ <"$0"; exec "$@"', start_pipe,
                                      *device.argv("register")], env=device.env(),
                                     stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        self.end = None
        self.cpu = 0.0
        self.rc = None
        self.thread = threading.Thread(target=self._reap, daemon=True)
        self.thread.start()

    def _reap(self):
        _, status, ru = os.wait4(self.proc.pid, 0)
        self.end = time.monotonic()
        self.cpu = ru.ru_utime + ru.ru_stime
        self.rc = os.waitstatus_to_exitcode(status)
        self.proc.returncode = self.rc
        self.log.close()


def waiting_on_pipe(pid):
    """Whether the process sleeps in a pipe read (its wchan), i.e. waits at the start line."""
    try:
        with open("/proc/%d/wchan" % pid) as f:
            return "pipe" in f.read()
    except OSError:
        return False


def wait_at_start(agents, timeout=120):
    """Until every agent's shell waits on the start pipe (or timeout); how many do."""
    deadline = time.monotonic() + timeout
    while True:
        n = sum(1 for a in agents if waiting_on_pipe(a.proc.pid))
        if n == len(agents) or time.monotonic() > deadline:
            return n
        time.sleep(0.05)


def per_device(log):
    """The device API requests of each registration ID, in order."""
    out = {}
    for e in log:
        if e["kind"] not in DEVICE_KINDS:
            continue
        parts = unquote(e["path"]).split("/")
        if len(parts) > 3 and parts[2] == "registrations":
            out.setdefault(parts[3], []).append(e)
    return out


def main():
    work = b.workdir("fleet")
    tpms, emu = [], None
    try:
        template = b.owned_template(work)
        emu = b.Emulator(args=["--polls", "0"])
        emu.start()
        devices = []
        t_setup = time.monotonic()
        for i in range(DEVICES):
            d = os.path.join(work, "dev-%04d" % i)
            t = b.CopySwtpm(d, template)
            tpms.append(t)
            devices.append(b.Device(d, t, emu, registration_id=regid(i)))
        setup_seconds = time.monotonic() - t_setup
        enroll_all(emu, devices[0].ek_public(), DEVICES)
        emu.clear_log()
        emu.set_faults({"rate_limit": {"value": 2 * RATE, "retry_after": RETRY_AFTER}})

        fifo = os.path.join(work, "start")
        os.mkfifo(fifo)
        # Read-write, so the shells' open() does not wait for a writer and none can miss
        # the start by opening late.
        pipe_fd = os.open(fifo, os.O_RDWR)
        t_spawn = time.monotonic()
        agents = [Agent(dev, os.path.join(dev.dir, "register.log"), fifo) for dev in devices]
        spawn_seconds = time.monotonic() - t_spawn
        waiting = wait_at_start(agents)

        busy0, total0 = b.cpu_busy_snapshot()
        load0 = b.loadavg()
        side0 = sum(b.proc_cpu_seconds(t.proc.pid) for t in tpms)
        emu0 = b.proc_cpu_seconds(emu.proc.pid)
        t0 = time.monotonic()
        os.write(pipe_fd, b"\n" * len(agents))
        for a in agents:
            a.thread.join(max(1, DEADLINE - (time.monotonic() - t0)))
        t1 = time.monotonic()
        busy1, total1 = b.cpu_busy_snapshot()
        side1 = sum(b.proc_cpu_seconds(t.proc.pid) for t in tpms)
        emu1 = b.proc_cpu_seconds(emu.proc.pid)
        load1 = b.loadavg()
        unfinished = [a for a in agents if a.end is None]
        for a in unfinished:
            a.proc.kill()

        log = emu.log()
        by_dev = per_device(log)
        finishes = [a.end - t0 for a in agents if a.end is not None]
        requests = [len(by_dev.get(regid(i), [])) for i in range(DEVICES)]
        conns = [len({e["conn"] for e in by_dev.get(regid(i), [])}) for i in range(DEVICES)]
        throttled = [sum(1 for e in by_dev.get(regid(i), []) if e["status"] == 429)
                     for i in range(DEVICES)]
        assigned = sum(1 for i in range(DEVICES)
                       if any(e["kind"] == "get" and e["status"] == 200
                              for e in by_dev.get(regid(i), [])))
        total = max(finishes) if finishes else None
        ideal = DEVICES / RATE
        failed = [{"device": regid(i), "exit_code": a.rc} for i, a in enumerate(agents)
                  if a.rc is not None and a.rc != 0]
        agent_cpu = sum(a.cpu for a in agents)
        out = {
            "devices": DEVICES, "rate_registrations_per_s": RATE,
            "rate_limit_puts_per_s": 2 * RATE, "retry_after": RETRY_AFTER, "polls": 0,
            "setup_seconds": setup_seconds, "spawn_seconds": spawn_seconds,
            "waiting_at_start": waiting,
            "total_seconds": total, "ideal_seconds": ideal,
            "total_over_ideal": total / ideal if total else None,
            "finish": {"min": min(finishes), "median": b.stats(finishes)["median"],
                       "p95": b.pct(finishes, 95), "max": max(finishes)} if finishes else {},
            "requests_per_device": dict(b.stats(requests), mean=sum(requests) / DEVICES,
                                        p95=b.pct(requests, 95)),
            "min_requests_per_device": 3,
            "mean_requests_over_min": sum(requests) / DEVICES / 3,
            "throttled_per_device": dict(b.stats(throttled), mean=sum(throttled) / DEVICES),
            "requests_total": sum(requests), "throttled_total": sum(throttled),
            "tls_connections_per_device": dict(b.stats(conns), mean=sum(conns) / DEVICES),
            "assigned": assigned, "exit_nonzero": failed, "unfinished": len(unfinished),
            "cpu_seconds": {"agents": agent_cpu, "swtpm": side1 - side0,
                            "emulator": emu1 - emu0},
            "machine_busy_share": (busy1 - busy0) / max(1, total1 - total0),
            "fleet_cpu_share": (agent_cpu + side1 - side0 + emu1 - emu0)
                               / ((t1 - t0) * (os.cpu_count() or 1)),
            "loadavg_before": load0, "loadavg_after": load1, "machine": b.machine(),
        }
    finally:
        if emu is not None:
            emu.close()
        for t in tpms:
            t.stop(clean=False)
        shutil.rmtree(work, ignore_errors=True)
    # The same fleet in a model (bench/fleet_model.py), for what other retry rules would cost.
    # Its rate and Retry-After are fixed; say so when this run used others.
    import fleet_model
    out["model"] = {"devices": DEVICES, "rate": fleet_model.CAP / 2,
                    "retry_after": fleet_model.RA, "rules": fleet_model.model(DEVICES)}
    print(b.save("fleet", out))


if __name__ == "__main__":
    main()
