#!/usr/bin/python3
"""HTTP requests and TLS handshakes per registration (bench/METHOD.md, part 2).

One owned, enrolled device registers once per case against the DPS emulator; between cases
`reset --yes` makes it unregistered again. What is counted comes from the emulator's request
log, never from the agent: one line per request with the TCP connection it came on (`conn`),
so distinct `conn` values are TLS handshakes. The minimum for each case is the protocol's:
challenge PUT, signed PUT, one GET per 202 the emulator is set to give plus the final one, and
one repeat for each answer that says "later" (429, 503) or each connection dropped; a new TLS
connection is needed only after a dropped one.

The waits are checked against the answers too: for each 429/503 with a Retry-After, the time
from that answer to the next request's start.

Usage: bench/http_requests.py. Writes build/bench/http.json (BENCH_OUT) and prints its path.
"""
import datetime
import os
import shutil

import benchlib as b

# name, emulator --polls, faults (admin API form), extra minimum requests, extra handshakes
CASES = [
    ("happy_polls_0", 0, {}, 0, 0),
    ("happy_polls_1", 1, {}, 0, 0),
    # Field case B23's repro: two 429s on the PUT (Retry-After 3), one on the GET (2).
    ("throttled_b23", 0, {"put_429": {"count": 2, "retry_after": "3"},
                          "get_429": {"count": 1, "retry_after": "2"}}, 3, 0),
    ("throttled_429_x3_put", 0, {"put_429": {"count": 3, "retry_after": "1"}}, 3, 0),
    ("unavailable_503_signed_put", 0, {"put_503": {"count": 1, "on": "put_auth",
                                                   "retry_after": "1"}}, 1, 0),
    ("dropped_connection_get", 0, {"drop": {"count": 1, "on": "get"}}, 1, 1),
]
DEVICE_KINDS = ("put_challenge", "put_auth", "get")


def when(entry):
    return datetime.datetime.fromisoformat(entry["time"]).timestamp()


def waits_after_later(log, faults):
    """For each 429/503 answer: (status, retry-after asked, seconds until the next request
    started). The log's time is when the answer was sent; duration_ms says when a request
    began."""
    out = []
    for cur, nxt in zip(log, log[1:]):
        if cur["status"] in (429, 503):
            ra = None
            for name in cur["faults"]:
                spec = faults.get(name, {})
                if isinstance(spec, dict) and "retry_after" in spec:
                    ra = float(spec["retry_after"])
            start_next = when(nxt) - nxt["duration_ms"] / 1000.0
            out.append({"status": cur["status"], "retry_after": ra,
                        "waited": round(start_next - when(cur), 3)})
    return out


def main():
    work = b.workdir("http")
    results = {}
    try:
        tpm = b.TemplateSwtpm(os.path.join(work, "dev"), persist_ek=False)
        os.makedirs(os.path.join(work, "emu"))
        for name, polls, faults, extra_requests, extra_conns in CASES:
            emu = b.Emulator(state_dir=os.path.join(work, "emu"), args=["--polls", str(polls)])
            emu.start()
            try:
                dev = b.Device(os.path.join(work, "dev"), tpm, emu)
                dev.run("own")
                if not results:
                    emu.create_enrollment(dev.ek_public())
                dev.run("reset", "--yes")
                if faults:
                    emu.set_faults(faults)
                emu.clear_log()
                s = b.run_measured(dev.argv("register"), dev.env())
                log = [e for e in emu.log() if e["kind"] in DEVICE_KINDS]
                results[name] = {
                    "polls": polls, "faults": faults, "exit_code": s["rc"],
                    "wall": s["wall"],
                    "requests": len(log),
                    "handshakes": len({e["conn"] for e in log}),
                    "min_requests": 3 + polls + extra_requests,
                    "min_handshakes": 1 + extra_conns,
                    "sequence": [[e["kind"], e["status"]] for e in log],
                    "waits": waits_after_later(log, faults),
                }
            finally:
                emu.stop()
        tpm.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(b.save("http", {"cases": results, "order": [c[0] for c in CASES],
                          "machine": b.machine()}))


if __name__ == "__main__":
    main()
