#!/usr/bin/python3
"""A model of bench/fleet.py's run, to see what a retry rule costs before building it.

N devices start within 0.3 s; DPS takes at most CAP registration PUTs in any one-second
window and answers the others 429 with Retry-After RA; a device that gets through sends its
signed PUT 50 ms later (the TPM's work) and its one GET after the 202's 1 s. Each rule says how
long a device waits after its k-th refusal in a row, or that it gives up (None). Printed: the
total time against the ideal (N / (CAP / 2)) and the mean requests per device against the
minimum of 3, worst and mean of four seeds, and how many devices gave up. No network, no TPM: a
discrete-event simulation, seconds to run.

Besides the agent's rule it models the rules of the two alternatives
(../shared/docs/dps-tpm-protocol.md 1.8 and 7.5), and a rule that is told the fleet's size, to
show what the requests target costs when the fleet's size is not known.

    /usr/bin/python3 bench/fleet_model.py [N]

It matched the measured fleet for the rule the agent had before (Retry-After exactly: 1.01x
the ideal time, 13.6x the requests; measured 1.04x and 13.7x).
"""
import collections
import heapq
import random
import statistics
import sys

CAP, RA, TPM_S, POLL_S = 6, 1.0, 0.05, 1.0


def run(rule, n, seed):
    rnd = random.Random(seed)
    events, window = [], collections.deque()
    requests, refused, done, gave_up = [0] * n, [0] * n, [0.0] * n, 0
    for i in range(n):
        heapq.heappush(events, (rnd.uniform(0, 0.3), i, "challenge"))
    while events:
        t, i, step = heapq.heappop(events)
        requests[i] += 1
        if step == "get":
            done[i] = t
            continue
        while window and window[0] <= t - 1.0:
            window.popleft()
        if len(window) >= CAP:
            refused[i] += 1
            wait = rule(refused[i] - 1, rnd)
            if wait is None:
                gave_up += 1
                done[i] = t
                continue
            heapq.heappush(events, (t + wait, i, step))
            continue
        window.append(t)
        refused[i] = 0
        if step == "challenge":
            heapq.heappush(events, (t + TPM_S, i, "signed"))
        else:
            heapq.heappush(events, (t + POLL_S, i, "get"))
    return max(done) / (n / (CAP / 2)), statistics.mean(requests) / 3, gave_up


def floor_and_window(first, cap):
    """Retry-After, plus a uniform share of first * 2^k * RA, at most cap * RA."""
    return lambda k, rnd: RA + rnd.uniform(0, RA * min(cap, first * 2 ** k))


def identity_service(k, rnd):
    """iot-identity-service: 60 s + 0-10 s, 120 + 0-20, 180 + 0-30, 300 + 0-30, then it fails."""
    steps = ((60, 10), (120, 20), (180, 30), (300, 30))
    return None if k >= len(steps) else steps[k][0] + rnd.uniform(0, steps[k][1])


def told_the_fleet(size):
    """A rule that knows the fleet has `size` devices: its first retry lands anywhere in the
    time the whole fleet needs (size / rate), later ones as the agent's."""
    then = floor_and_window(2, 8)
    return lambda k, rnd: (RA + rnd.uniform(0, size / (CAP / 2)) if k == 0 else then(k - 1, rnd))


# (name, rule, fleet sizes it is run at; None: the fleet under test)
RULES = [
    ("Retry-After exactly (the agent before; azure-iot-sdk-c)", lambda k, rnd: RA, [None]),
    ("+ share of 2,4,8,8.. x RA (the agent now)", floor_and_window(2, 8), [None, 20, 2000]),
    ("+ share of 2,4,8,12,12.. x RA", floor_and_window(2, 12), [None]),
    ("+ share of 2,4,8,16,16.. x RA", floor_and_window(2, 16), [None]),
    ("+ share doubling from 2 to 300 x RA", floor_and_window(2, 300), [None]),
    ("iot-identity-service: 60, 120, 180, 300 s + jitter, then fail", identity_service, [None]),
    ("told the fleet is 200: first retry within 67 s", told_the_fleet(200), [200, 20, 2000]),
]


def model(n):
    """[{rule, devices, time (mean ratio), time_worst, requests (mean ratio), gave_up (mean)}]
    over four seeds."""
    out = []
    for name, rule, sizes in RULES:
        for size in sizes:
            size = size or n
            res = [run(rule, size, seed) for seed in range(4)]
            times, reqs = [r[0] for r in res], [r[1] for r in res]
            out.append({"rule": name, "devices": size, "time": statistics.mean(times),
                        "time_worst": max(times), "requests": statistics.mean(reqs),
                        "gave_up": statistics.mean(r[2] for r in res)})
    return out


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    print("%d devices, %d PUTs/s, Retry-After %g s" % (n, CAP, RA))
    print("%-62s %7s  %-22s %-10s %s" % ("rule", "devices", "time / ideal",
                                          "requests", "gave up"))
    for r in model(n):
        print("%-62s %7d  %.2fx (worst %.2fx)     %.2fx      %g" % (
            r["rule"], r["devices"], r["time"], r["time_worst"], r["requests"], r["gave_up"]))


if __name__ == "__main__":
    main()
