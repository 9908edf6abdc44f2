#!/usr/bin/python3
"""A model of bench/fleet.py's run, to see what a retry rule costs before building it.

N devices start within 0.3 s; DPS takes at most CAP registration PUTs in any one-second
window and answers the others 429 with Retry-After RA; a device that gets through sends its
signed PUT 50 ms later (the TPM's work) and its one GET after the 202's 1 s. Each rule says how
long a device waits after its k-th refusal in a row. Printed: the total time against the ideal
(N / (CAP / 2)) and the mean requests per device against the minimum of 3, worst and mean of
four seeds. No network, no TPM: a discrete-event simulation, seconds to run.

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
    requests, refused, done = [0] * n, [0] * n, [0.0] * n
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
            heapq.heappush(events, (t + rule(refused[i] - 1, rnd), i, step))
            continue
        window.append(t)
        refused[i] = 0
        if step == "challenge":
            heapq.heappush(events, (t + TPM_S, i, "signed"))
        else:
            heapq.heappush(events, (t + POLL_S, i, "get"))
    return max(done) / (n / (CAP / 2)), statistics.mean(requests) / 3


def floor_and_window(first, cap):
    """Retry-After, plus a uniform share of first * 2^k * RA, at most cap * RA."""
    return lambda k, rnd: RA + rnd.uniform(0, RA * min(cap, first * 2 ** k))


RULES = [
    ("Retry-After exactly (the agent before)", lambda k, rnd: RA),
    ("+ share of 2,4,8,8.. x RA (the agent now)", floor_and_window(2, 8)),
    ("+ share of 2,4,8,12,12.. x RA", floor_and_window(2, 12)),
    ("+ share of 2,4,8,16,16.. x RA", floor_and_window(2, 16)),
    ("+ share doubling from 2 to 300 x RA", floor_and_window(2, 300)),
]


def model(n):
    """[{rule, time (mean ratio), time_worst, requests (mean ratio)}] over four seeds."""
    out = []
    for name, rule in RULES:
        res = [run(rule, n, seed) for seed in range(4)]
        times, reqs = [r[0] for r in res], [r[1] for r in res]
        out.append({"rule": name, "time": statistics.mean(times), "time_worst": max(times),
                    "requests": statistics.mean(reqs)})
    return out


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    print("%d devices, %d PUTs/s, Retry-After %g s" % (n, CAP, RA))
    print("%-44s %-22s %s" % ("rule", "time / ideal", "requests / minimum"))
    for r in model(n):
        print("%-44s %.2fx (worst %.2fx)     %.2fx" % (r["rule"], r["time"], r["time_worst"],
                                                     r["requests"]))


if __name__ == "__main__":
    main()
