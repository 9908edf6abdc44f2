#!/usr/bin/python3
"""Writes bench/RESULTS.md from the figures the benchmarks left in build/bench/*.json and the
hand-written bench/METHOD.md. No figure is typed in here: every number comes from those files.

Usage: bench/report.py (bench/run.py calls it after the parts it ran).
"""
import collections
import json
import os
import re
import textwrap

import benchlib as b

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "RESULTS.md")
MIB = 1024 * 1024

# The targets (issue 9), each with how it is read from the figures.
FAST_PATH_MAX_COMMANDS = 3
FAST_PATH_MAX_MS = 20.0
RSS_MAX_KIB = 8 * 1024
FLEET_MAX_TIME_RATIO = 1.25
FLEET_MAX_REQUEST_RATIO = 1.5

CASE_TITLES = collections.OrderedDict([
    ("own_fresh_ek_persisted", "`own`, fresh TPM, EK persisted at manufacture"),
    ("own_fresh_ek_computed", "`own`, fresh TPM, EK not persisted"),
    ("own_owned", "`own`, already owned"),
    ("register", "`register` end to end (--polls 0)"),
    ("register_fast_path", "`register`, assigned device (boot fast path)"),
    ("sas", "`sas`"),
    ("status", "`status` (reference)"),
    ("ek", "`ek` (reference)"),
])

HTTP_TITLES = {
    "happy_polls_0": "happy path, --polls 0",
    "happy_polls_1": "happy path, --polls 1 (the emulator's default)",
    "throttled_b23": "throttled as in field case B23, --polls 0",
    "throttled_429_x3_put": "three 429s on the first PUT, --polls 0",
    "unavailable_503_signed_put": "a 503 on the signed PUT, --polls 0",
    "dropped_connection_get": "the connection dropped at the GET, --polls 0",
}

# Why the agent sends a command more often than the minimum: read from agent/ (tpm/tpm.c,
# tpm/keys.c, state/nvstate.c, cmd/register.c, cmd/sas.c) when this text was written.
WHY_EXTRA = {
    "GetCapability": "TPM properties (hierarchy authorization flags, lockout counter, NV "
                     "buffer size): `own` warns about a lockout and every step checks that it "
                     "may use a hierarchy before it tries; the agent asks from the first fixed "
                     "property on, and swtpm answers that in two parts",
    "ReadPublic": "ESAPI opens a persistent handle with `Esys_TR_FromTPMPublic` (one "
                  "ReadPublic) before `Esys_ReadPublic` reads the public again; `register` also "
                  "opens the EK and SRK again for each of its two imports and checks the "
                  "identity handle twice; `sas` checks the identity key, then opens it",
    "NV_ReadPublic": "ESAPI opens an NV index with `Esys_TR_FromTPMPublic` (one NV_ReadPublic); "
                     "`own` then reads the public again to check that the index is its own; "
                     "`register` reads the state index twice (the fast-path check, then again "
                     "before registering)",
    "NV_Read": "`register` reads the state record twice (see NV_ReadPublic)",
    "NV_Write": "`register` marks the record \"registering\" before the signed request "
                "(docs/state-record.md): DPS may re-assign the device as soon as it has that "
                "request, so a cut after it must send the next boot to DPS again, not down the "
                "fast path",
    "HMAC": "`register` signs once with the hub key before it persists it: a key whose "
            "authorization the TPM refuses (which DPS never sends) is then never kept, where "
            "each later `sas` could count towards dictionary-attack lockout",
}


def load(name):
    try:
        with open(os.path.join(b.OUT_DIR, name + ".json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def ms(seconds):
    return "%.1f ms" % (seconds * 1000.0)


def spread_ms(st):
    return "%s (%s - %s)" % (ms(st["median"]), ms(st["min"]), ms(st["max"]))


def kib(n):
    return "%.1f MiB" % (n / 1024.0) if n >= 1024 else "%d KiB" % n


def size(n):
    return "%.2f MiB (%d bytes)" % (n / MIB, n) if n >= MIB else "%.1f KiB (%d bytes)" % (
        n / 1024.0, n)


def compact(commands):
    """NV_Read, ReadPublic, ReadPublic -> 'NV_Read, ReadPublic x2'."""
    out = []
    for c in commands:
        if out and out[-1][0] == c:
            out[-1][1] += 1
        else:
            out.append([c, 1])
    return ", ".join(c if n == 1 else "%s x%d" % (c, n) for c, n in out)


def extra(agent, minimal):
    a, m = collections.Counter(agent), collections.Counter(minimal)
    more = {c: a[c] - m[c] for c in a if a[c] > m[c]}
    fewer = {c: m[c] - a[c] for c in m if m[c] > a[c]}
    return more, fewer


def fault_text(name, spec):
    """put_429 {count 2, retry_after 3} -> 'put_429 x2, Retry-After 3 s'."""
    if not isinstance(spec, dict):
        return "%s %s" % (name, spec)
    text = name + (" x%s" % spec["count"] if "count" in spec else "")
    if "on" in spec:
        text += " on %s" % spec["on"]
    if "retry_after" in spec:
        text += ", Retry-After %s s" % spec["retry_after"]
    return text


def yes(ok):
    return "**met**" if ok else "**missed**"


class Report:
    def __init__(self):
        self.meta = load("meta") or {"parts": {}}
        self.tpm, self.http = load("tpm"), load("http")
        self.fp, self.fleet, self.mfg = load("footprint"), load("fleet"), load("manufacturing")
        self.lines = []

    def w(self, *lines):
        self.lines.extend(lines)

    def part_note(self, name):
        p = self.meta["parts"].get(name)
        if not p:
            return "Not measured in any run yet."
        note = "Measured %s, %.0f s; load average %s before, %s after." % (
            p["started"], p["seconds"], " ".join("%.2f" % x for x in p["loadavg_before"]),
            " ".join("%.2f" % x for x in p["loadavg_after"]))
        if p["exit_code"] != 0:
            note += " **The script failed (exit %d); figures may be from an earlier run.**" % (
                p["exit_code"])
        return note

    # -- header and targets -----------------------------------------------------------------

    def header(self):
        build = self.meta.get("build", {})
        m = self.meta.get("machine", {})
        v = build.get("versions", {})
        self.w("# Benchmarks: results",
               "",
               "Written by `bench/report.py` from what `make bench` (`bench/run.py`) measured; "
               "do not edit by hand. The method is below the results.",
               "",
               "- Build: `%s` (commit %s%s), `%s`%s, sha256 %s..." % (
                   build.get("describe"), build.get("commit"),
                   (", built with uncommitted changes to %s" % ", ".join(
                       build["uncommitted_build_inputs"]))
                   if build.get("uncommitted_build_inputs") else
                   (", uncommitted changes elsewhere in the tree" if build.get("tree_dirty")
                    else ""),
                   build.get("binary"),
                   " (a copy of `build/tpm-provision` taken when the run started)"
                   if str(build.get("binary")).endswith("bench/tpm-provision") else "",
                   build.get("binary_sha256")),
               "- Machine: %s cores (%s), Linux %s; swtpm %s; tpm2-tools %s; libtss2-esys %s; "
               "libcurl %s; OpenSSL %s; Python %s (emulator)." % (
                   m.get("cores"), m.get("cpu"), v.get("kernel"), v.get("swtpm"),
                   v.get("tpm2-tools"), v.get("libtss2-esys"), v.get("libcurl"),
                   v.get("openssl"), v.get("python")))
        shas = {p.get("binary_sha256") for p in self.meta["parts"].values()}
        if len(shas) > 1:
            self.w("- **The parts were measured on different builds** (sha256 %s)." %
                   ", ".join(sorted(s for s in shas if s)))
        if self.tpm:
            self.w("- Timings are medians of %d runs after %d warm-up run(s), each a whole "
                   "process; min - max in brackets. The machine is shared with other "
                   "CPU-heavy work: see each part's load average." % (
                       self.tpm["runs"], self.tpm["warmup"]))
        self.w("")

    def targets(self):
        rows = []
        if self.tpm:
            fp = self.tpm["cases"]["register_fast_path"]
            n, t = fp["agent"]["count"], fp["time"]["wall"]["median"] * 1000
            reqs = self.tpm["fast_path_requests"]
            rows += [
                ("Already-provisioned boot: no network", "0 requests",
                 "%d requests in %d runs" % (reqs, fp["time"]["runs"] + self.tpm["warmup"] + 1),
                 yes(reqs == 0), "-"),
                ("Already-provisioned boot: TPM commands", "<= %d" % FAST_PATH_MAX_COMMANDS,
                 "%d (%s)" % (n, compact(fp["agent"]["commands"])),
                 yes(n <= FAST_PATH_MAX_COMMANDS),
                 "%+d commands (protocol minimum %d)" % (n - FAST_PATH_MAX_COMMANDS,
                                                        fp["minimal"]["count"])),
                ("Already-provisioned boot: wall time on swtpm", "<= %.0f ms" % FAST_PATH_MAX_MS,
                 "%.1f ms median (%d runs; its own CPU %.1f ms)" % (
                     t, fp["time"]["runs"], fp["time"]["cpu"]["median"] * 1000),
                 yes(t <= FAST_PATH_MAX_MS),
                 "%.1f ms %s (%.2fx the target)" % (abs(FAST_PATH_MAX_MS - t),
                                                   "under" if t <= FAST_PATH_MAX_MS else "over",
                                                   t / FAST_PATH_MAX_MS)),
            ]
        if self.http:
            for name in ("happy_polls_0", "happy_polls_1"):
                c = self.http["cases"][name]
                rows.append(("Registration, happy path (polls %d): requests" % c["polls"],
                             "minimum, %d" % c["min_requests"], "%d" % c["requests"],
                             yes(c["requests"] <= c["min_requests"]),
                             "%+d" % (c["requests"] - c["min_requests"])))
                rows.append(("Registration, happy path (polls %d): TLS handshakes" % c["polls"],
                             "1", "%d" % c["handshakes"], yes(c["handshakes"] == 1),
                             "%+d" % (c["handshakes"] - 1)))
        if self.fp:
            worst = max(self.fp["rss"].items(), key=lambda kv: kv[1]["max"])
            rows.append(("Peak RSS of any subcommand", "< %s" % kib(RSS_MAX_KIB),
                         "%s (%s)" % (kib(worst[1]["max"]), worst[0]),
                         yes(worst[1]["max"] < RSS_MAX_KIB),
                         "%s %s (%.2fx the target)" % (
                             kib(abs(worst[1]["max"] - RSS_MAX_KIB)),
                             "under" if worst[1]["max"] < RSS_MAX_KIB else "over",
                             worst[1]["max"] / RSS_MAX_KIB)))
        if self.fleet:
            f = self.fleet
            rows += [
                ("Fleet (%d devices, %g registrations/s): total time" % (
                    f["devices"], f["rate_registrations_per_s"]),
                 "<= %.2fx ideal (%.0f s)" % (FLEET_MAX_TIME_RATIO, f["ideal_seconds"]),
                 "%.1f s = %.2fx ideal" % (f["total_seconds"], f["total_over_ideal"]),
                 yes(f["total_over_ideal"] <= FLEET_MAX_TIME_RATIO),
                 "%.2fx %s the allowed %.2fx" % (
                     abs(f["total_over_ideal"] - FLEET_MAX_TIME_RATIO),
                     "under" if f["total_over_ideal"] <= FLEET_MAX_TIME_RATIO else "over",
                     FLEET_MAX_TIME_RATIO)),
                ("Fleet: requests per device", "<= %.1fx minimum (%d)" % (
                    FLEET_MAX_REQUEST_RATIO, f["min_requests_per_device"]),
                 "%.1f mean = %.2fx minimum" % (f["requests_per_device"]["mean"],
                                                f["mean_requests_over_min"]),
                 yes(f["mean_requests_over_min"] <= FLEET_MAX_REQUEST_RATIO),
                 "%.1f requests a device %s the allowed %.1f (%.1fx)" % (
                     abs(f["requests_per_device"]["mean"] - FLEET_MAX_REQUEST_RATIO * 3),
                     "under" if f["mean_requests_over_min"] <= FLEET_MAX_REQUEST_RATIO
                     else "over", FLEET_MAX_REQUEST_RATIO * 3,
                     f["mean_requests_over_min"] / FLEET_MAX_REQUEST_RATIO)),
                ("Fleet: no device gives up", "all exit 0",
                 "%d of %d exit 0, %d assigned" % (
                     f["devices"] - len(f["exit_nonzero"]) - f["unfinished"], f["devices"],
                     f["assigned"]),
                 yes(not f["exit_nonzero"] and not f["unfinished"]), "-"),
            ]
        self.w("## Targets", "",
               "| target | wanted | measured | | how far |", "|---|---|---|---|---|")
        for r in rows:
            self.w("| %s |" % " | ".join(r))
        self.w("")

    # -- part 1 -------------------------------------------------------------------------------

    def part_tpm(self):
        t = self.tpm
        self.w("## 1. TPM commands and wall time on swtpm", "", self.part_note("tpm"), "")
        if not t:
            return
        self.w("Commands counted through the TPM proxy in one run; the minimum is the shortest "
               "sequence the protocol allows (listed below with its reasons). Wall and CPU: "
               "medians of %d runs straight on swtpm." % t["runs"], "",
               "| case | commands (agent / minimum) | changing the TPM (agent / minimum) | wall "
               "median (min - max) | CPU median |", "|---|---|---|---|---|")
        for name, title in CASE_TITLES.items():
            c = t["cases"].get(name)
            if not c:
                continue
            mn = c["minimal"]
            self.w("| %s | %d / %s | %d / %s | %s | %s |" % (
                title, c["agent"]["count"], mn["count"] if mn else "-", c["agent"]["mutating"],
                mn["mutating"] if mn else "-", spread_ms(c["time"]["wall"]),
                ms(c["time"]["cpu"]["median"])))
        self.w("")
        for name, title in CASE_TITLES.items():
            c = t["cases"].get(name)
            if not c:
                continue
            self.w("**%s.** Agent (%d): %s." % (title, c["agent"]["count"],
                                              compact(c["agent"]["commands"])))
            if c.get("note"):
                self.w("%s." % (c["note"][0].upper() + c["note"][1:]))
            mn = c["minimal"]
            if mn:
                self.w("", "Minimum (%d):" % mn["count"], "")
                for i, (cmd, why) in enumerate(zip(mn["commands"], mn["reasons"]), 1):
                    self.w("%d. %s: %s" % (i, cmd, why))
                more, fewer = extra(c["agent"]["commands"], mn["commands"])
                if more or fewer:
                    self.w("", "Beyond the minimum: %s." % "; ".join(
                        ["+%d %s" % (n, cmd) for cmd, n in sorted(more.items())] +
                        ["-%d %s" % (n, cmd) for cmd, n in sorted(fewer.items())]))
            self.w("")
        if any(extra(c["agent"]["commands"], c["minimal"]["commands"])[0]
               for c in t["cases"].values() if c["minimal"]):
            self.w("Where the extra commands come from:", "")
            for cmd, why in WHY_EXTRA.items():
                self.w("- %s: %s." % (cmd, why))
            self.w("")

        self.w("### `own` against the same steps in tpm2-tools", "",
               "`bench/own-tpm2-tools.sh` on a fresh TPM, counted through the same proxy; "
               "agent and script run in turn, each on its own fresh TPM (a pair's two TPMs "
               "are copies of the same one; the pairs go round %s TPMs), and the ratio is "
               "taken pair by pair (%d pairs)." % (t.get("seeds", 1), t["runs"]), "",
               "| case | commands (agent / tpm2-tools) | wall, agent | wall, tpm2-tools | "
               "agent / tpm2-tools (min - max) | `own` after the script changes | same SRK |",
               "|---|---|---|---|---|---|---|")
        for name in ("own_fresh_ek_persisted", "own_fresh_ek_computed"):
            tt = t["tpm2_tools"].get(name)
            if not tt:
                continue
            r = tt["agent_over_tools"]["ratio_wall"]
            self.w("| %s | %d / %d | %s | %s | %.2f (%.2f - %.2f) | %d commands | %s |" % (
                CASE_TITLES[name], t["cases"][name]["agent"]["count"], tt["tools"]["count"],
                ms(t["cases"][name]["time"]["wall"]["median"]),
                ms(tt["time"]["wall"]["median"]), r["median"], r["min"], r["max"],
                tt["own_after_tools_mutating"], "yes" if tt["same_srk_as_agent"] else "no"))
        self.w("")
        for name in ("own_fresh_ek_persisted", "own_fresh_ek_computed"):
            tt = t["tpm2_tools"].get(name)
            if tt:
                self.w("tpm2-tools, %s (%d): %s." % (CASE_TITLES[name], tt["tools"]["count"],
                                                     compact(tt["tools"]["commands"])), "")

    # -- part 2 -------------------------------------------------------------------------------

    def part_http(self):
        self.w("## 2. HTTP requests and TLS handshakes per registration", "",
               self.part_note("http"), "")
        h = self.http
        if not h:
            return
        self.w("From the emulator's request log (one line per request, with its TCP "
               "connection). The minimum: challenge PUT, signed PUT, one GET per 202 the "
               "emulator gives plus the final one, and one repeat per 429/503 or dropped "
               "connection; a new TLS connection only after a dropped one.", "",
               "| case | emulator faults | requests (min) | TLS handshakes (min) | waits after "
               "429/503: asked -> waited | exit | wall |", "|---|---|---|---|---|---|---|")
        order = h.get("order") or list(h["cases"])
        for name in order:
            c = h["cases"][name]
            faults = ", ".join(fault_text(k, v) for k, v in sorted(c["faults"].items())) \
                or "none"
            waits = ", ".join("%d: %gs -> %.2fs" % (x["status"], x["retry_after"], x["waited"])
                              for x in c["waits"] if x["retry_after"] is not None) or "-"
            self.w("| %s | %s | %d (%d) | %d (%d) | %s | %d | %.2f s |" % (
                HTTP_TITLES.get(name, name), faults, c["requests"], c["min_requests"],
                c["handshakes"], c["min_handshakes"], waits, c["exit_code"], c["wall"]))
        self.w("")
        for name in order:
            c = h["cases"][name]
            self.w("- %s: %s" % (HTTP_TITLES.get(name, name), ", ".join(
                "%s %s" % (k, s) for k, s in c["sequence"])))
        self.w("")

    # -- part 3 -------------------------------------------------------------------------------

    def part_footprint(self):
        self.w("## 3. Footprint", "", self.part_note("footprint"), "")
        f = self.fp
        if not f:
            return
        bi = f["binary"]
        self.w("| binary | file | text | data | bss |", "|---|---|---|---|---|")
        for k in ("unstripped", "stripped"):
            s = bi[k]
            self.w("| %s | %s | %d | %d | %d |" % (
                "as built (-O2 -g)" if k == "unstripped" else "strip --strip-all",
                size(s["file"]), s["text"], s["data"], s["bss"]))
        libs = bi["libraries"]
        self.w("", "Shared libraries: %d named by the binary (NEEDED: %s); %d mapped in all "
               "(`ldd`), %s on disk together:" % (
                   len(libs["needed"]), ", ".join(libs["needed"]), len(libs["ldd"]),
                   size(libs["ldd_bytes"])),
               "", ", ".join(x["name"] for x in libs["ldd"]) + ".", "")
        for n, only in libs["only_through"].items():
            if len(only) > 2:
                self.w("- %d of them come only through %s: %s." % (len(only), n,
                                                                    ", ".join(only)))
        dlopened = libs.get("dlopened") or {}
        for n, extra in dlopened.items():
            self.w("- Loaded with `dlopen` only when the first request is about to be made "
                   "(`register`, `enroll`; `agent/dps/curl-api.h`): %s and the %d libraries it "
                   "needs that are not mapped already, %s." % (n, len(extra) - 1,
                                                            ", ".join(extra)))
        self.w("", "Peak RSS (GNU time `%M`), the largest of each subcommand's runs:", "",
               "| subcommand | peak RSS | median | runs | exit codes |", "|---|---|---|---|---|")
        for name, r in sorted(f["rss"].items(), key=lambda kv: -kv[1]["max"]):
            self.w("| %s | %s | %s | %d | %s |" % (name, kib(r["max"]), kib(r["median"]),
                                                  len(r["kib"]),
                                                  ",".join(str(x) for x in sorted(
                                                      set(r["exit_codes"])))))
        self.w("")
        br = f.get("rss_breakdown") or {}
        curl_only = set(dlopened.get("libcurl.so.4") or
                        libs["only_through"].get("libcurl.so.4", []))
        sd_only = set(libs["only_through"].get("libsystemd.so.0", []))
        mini = f.get("minimal_libcurl") or {}
        rows = dict(br)
        if mini.get("breakdown"):
            rows["register (end to end), libcurl for DPS alone"] = mini["breakdown"]
        if rows:
            self.w("Where it is, from `/proc/PID/smaps` while the agent is held at one TPM "
                   "command. Private is what no other process maps (Private_Clean + "
                   "Private_Dirty), the memory this run alone costs the machine; the rest of "
                   "the resident pages are shared libraries' pages that every process using "
                   "them shares:", "",
                   "| run, held at | resident | private | shared libraries | libraries only "
                   "libcurl brings | only libsystemd brings | heap | binary | largest mappings |",
                   "|---|---|---|---|---|---|---|---|---|")
            for name, x in rows.items():
                at = ", ".join("%s %s" % kv for kv in x["at"].items())
                top = ", ".join("%s %s" % (k, kib(v)) for k, v in sorted(
                    x["maps"].items(), key=lambda kv: -kv[1])[:5])
                self.w("| %s, %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                    name, at, kib(x["total_kib"]),
                    kib(x["private_kib"]) if "private_kib" in x else "-",
                    kib(x["libraries_kib"]),
                    kib(sum(v for k, v in x["maps"].items() if k in curl_only)),
                    kib(sum(v for k, v in x["maps"].items() if k in sd_only)),
                    kib(x["heap_kib"]), kib(x["binary_kib"]), top))
            self.w("")
        ts = f.get("trust_stores") or {}
        if "skipped" in ts:
            self.w("Trust stores: not measured: %s." % ts["skipped"], "")
        elif ts:
            self.w("`register` end to end with three trust stores (CABundle=), %d runs each: "
                   "the emulator's CA alone, as the rows above; the system's certificates with "
                   "the emulator's added, as one bundle file (libcurl reads the system's "
                   "bundle file by default, when CABundle= is unset); and the same as a hashed "
                   "directory, which `CABundle=/etc/ssl/certs` makes the agent read alone "
                   "(tpm-provision.conf(5)):" % (
                       len(next(iter(ts.values()))["kib"])), "",
                   "| trust store | certificates | peak RSS | CPU median (min - max) | exit codes "
                   "|", "|---|---|---|---|---|")
            for name, r in ts.items():
                self.w("| %s | %d | %s | %s (%s - %s) | %s |" % (
                    name, r["certificates"], kib(r["max"]), ms(r["median_cpu"]),
                    ms(min(r["cpu"])), ms(max(r["cpu"])),
                    ",".join(str(x) for x in sorted(set(r["exit_codes"])))))
            self.w("")
        if "skipped" in mini:
            self.w("A libcurl for DPS alone: not measured: %s." % mini["skipped"], "")
        elif mini.get("rss"):
            self.w("The same with a libcurl that has only what DPS needs: Debian's own curl "
                   "source package, built by `bench/minimal-libcurl.sh` as a Yocto image builds "
                   "it (OpenSSL, zlib, the threaded resolver, proxies; no LDAP, RTMP, SSH, "
                   "GSS-API, PSL, IDN, HTTP/2, brotli or zstd), loaded through LD_LIBRARY_PATH. "
                   "It needs %s; the table's last row is a registration with it." % (
                       ", ".join(mini["needs"])), "",
                   "| subcommand, libcurl for DPS alone | peak RSS | median | runs | exit codes "
                   "| with Debian's libcurl4 |", "|---|---|---|---|---|---|")
            for name, r in sorted(mini["rss"].items(), key=lambda kv: -kv[1]["max"]):
                self.w("| %s | %s | %s | %d | %s | %s |" % (
                    name, kib(r["max"]), kib(r["median"]), len(r["kib"]),
                    ",".join(str(x) for x in sorted(set(r["exit_codes"]))),
                    kib(f["rss"][name]["max"]) if name in f["rss"] else "-"))
            self.w("")
        worst = max(r["max"] for r in f["rss"].values())
        e2e = br.get("register (end to end)")
        if worst >= RSS_MAX_KIB and dlopened:
            over = sorted(n for n, r in f["rss"].items() if r["max"] >= RSS_MAX_KIB)
            under = [r["max"] for r in f["rss"].values() if r["max"] < RSS_MAX_KIB]
            fast_rss = f["rss"].get("register (assigned: fast path)")
            self.w("Why the RSS target is missed: only runs that talk to DPS exceed it (%s). "
                   "They load libcurl and the %d libraries it brings when the first request is "
                   "about to be made%s. Every run that sends no request stays under %s: the boot "
                   "fast path peaks at %s, the largest of them at %s. Debian's libcurl4 is built "
                   "with LDAP, RTMP (which brings GnuTLS), SSH, GSS-API, PSL, IDN and HTTP/2, "
                   "none of which DPS needs." % (
                       ", ".join(over), len(curl_only) - 1,
                       "; held at its EvictControl, `register` has %s of those libraries "
                       "resident, of its %s" % (
                           kib(sum(v for k, v in e2e["maps"].items() if k in curl_only)),
                           kib(e2e["total_kib"])) if e2e else "",
                       kib(RSS_MAX_KIB), kib(fast_rss["max"]) if fast_rss else "-",
                       kib(max(under)) if under else "-"), "")
            reg = (mini.get("rss") or {}).get("register (end to end)")
            mb = mini.get("breakdown")
            if reg and mb:
                m = mb["maps"]
                base = m.get("libcrypto.so.3", 0) + m.get("libc.so.6", 0)
                self.w("A libcurl without them is not enough for `register`: with it `register` "
                       "still peaks at %s, %s over the target, while `enroll` (%s) gets under "
                       "it. Held at its EvictControl, `register` has %s resident. libcrypto (%s) "
                       "and libc (%s), which every run maps, the fast path too, are %s of it "
                       "alone, %.0f%% of the target (libcrypto is %s on the fast path, which hashes "
                       "for ESAPI but makes no TLS handshake). Then libssl %s and libcurl %s for TLS and HTTP, and %s of "
                       "heap. Only %s of the %s is private to the run; the rest are pages of "
                       "shared libraries, which every process that uses them shares." % (
                           kib(reg["max"]), kib(reg["max"] - RSS_MAX_KIB),
                           kib(mini["rss"]["enroll (1 row)"]["max"])
                           if "enroll (1 row)" in mini["rss"] else "-",
                           kib(mb["total_kib"]), kib(m.get("libcrypto.so.3", 0)),
                           kib(m.get("libc.so.6", 0)), kib(base), 100.0 * base / RSS_MAX_KIB,
                           kib((br.get("register (assigned: fast path)") or {}).get(
                               "maps", {}).get("libcrypto.so.3", 0)),
                           kib(m.get("libssl.so.3", 0)),
                           kib(sum(v for k, v in m.items() if k.startswith("libcurl.so"))),
                           kib(mb["heap_kib"]), kib(mb["private_kib"]),
                           kib(mb["total_kib"])), "")
        ir = f.get("initrd") or {}
        if "skipped" in ir:
            self.w("Initrd: skipped: %s." % ir["skipped"], "")
        elif ir:
            self.w("Initrd sizes, built in a copy of `%s` for kernel %s (installed into the "
                   "copy first: %s); dracut `%s`, modules `%s`. The binary is installed "
                   "stripped, as a Debian package installs it; the configuration names no "
                   "CABundle=, so the module takes the system's CA bundle along:" % (
                       ir["base"], ir["kernel"], ", ".join(ir.get("installed_into_root") or [])
                       or "nothing", ir["dracut_options"], ir["dracut_modules"]), "",
                "| initrd | compressed, with | without | added | uncompressed files, with | "
                "without | files added (bytes) |", "|---|---|---|---|---|---|---|")
            for key, title in (("dracut", "dracut, module 91tpm-provision"),
                               ("initramfs_tools", "initramfs-tools, hook and script")):
                d = ir[key]
                self.w("| %s | %s | %s | **%s** | %s | %s | %d (%s) |" % (
                    title, size(d["compressed_with"]), size(d["compressed_without"]),
                    size(d["compressed_added"]), size(d["uncompressed_with"]),
                    size(d["uncompressed_without"]), d["files_added"], size(d["bytes_added"])))
            self.w("")
            for key in ("dracut", "initramfs_tools"):
                d = ir[key]
                if d["largest_added"]:
                    self.w("- Largest files the %s adds: %s." % (
                        "dracut module" if key == "dracut" else "initramfs-tools hook",
                        ", ".join("%s %s" % (os.path.basename(p), kib(s // 1024))
                                  for p, s in d["largest_added"][:8])))
            self.w("")

    # -- part 4 -------------------------------------------------------------------------------

    def part_fleet(self):
        self.w("## 4. A fleet booting at once against a rate-limited DPS", "",
               self.part_note("fleet"), "")
        f = self.fleet
        if not f:
            return
        fin = f["finish"]
        rq = f["requests_per_device"]
        th = f["throttled_per_device"]
        cpu = f["cpu_seconds"]
        self.w("%d devices, each its own swtpm and agent process, let go at once; the "
               "emulator lets %g registration PUTs a second through (%g registrations a "
               "second) and answers the rest 429 with Retry-After %s s; --polls %d." % (
                   f["devices"], f["rate_limit_puts_per_s"], f["rate_registrations_per_s"],
                   f["retry_after"], f["polls"]), "",
               "| figure | measured | against |", "|---|---|---|",
               "| total time (start to last device done; %d of %d waiting at the start "
               "line) | %.1f s | ideal %.1f s (devices / rate): %.2fx |" % (
                   f.get("waiting_at_start", 0), f["devices"], f["total_seconds"],
                   f["ideal_seconds"], f["total_over_ideal"]),
               "| finish times: min / median / p95 / max | %.1f / %.1f / %.1f / %.1f s | |" % (
                   fin["min"], fin["median"], fin["p95"], fin["max"]),
               "| requests per device: mean (min - max), p95 | %.1f (%d - %d), %d | minimum "
               "%d: %.2fx |" % (rq["mean"], rq["min"], rq["max"], rq["p95"],
                                 f["min_requests_per_device"], f["mean_requests_over_min"]),
               "| 429 answers per device: mean (min - max); all | %.1f (%d - %d); %d of %d "
               "requests | |" % (th["mean"], th["min"], th["max"], f["throttled_total"],
                                 f["requests_total"]),
               "| TLS connections per device: mean (max) | %.2f (%d) | 1 |" % (
                   f["tls_connections_per_device"]["mean"],
                   f["tls_connections_per_device"]["max"]),
               "| devices assigned; exit codes other than 0; not finished | %d; %d; %d | %d "
               "devices |" % (f["assigned"], len(f["exit_nonzero"]), f["unfinished"],
                              f["devices"]),
               "| CPU used: agents / swtpms / emulator | %.1f / %.1f / %.1f s | %.0f%% of the "
               "machine over the run; the machine as a whole was %.0f%% busy |" % (
                   cpu["agents"], cpu["swtpm"], cpu["emulator"], 100 * f["fleet_cpu_share"],
                   100 * f["machine_busy_share"]),
               "")
        self.w("The fleet's own processes used %.0f%% of the machine's CPU over the run%s." % (
            100 * f["fleet_cpu_share"],
            ": DPS's rate, not this machine, set the pace" if f["fleet_cpu_share"] < 0.5 else
            ", so the machine, not only DPS's rate, may have set the pace"), "")
        model = f.get("model")
        if model:
            self.w("The same fleet in a model (`bench/fleet_model.py`: a discrete-event "
                   "simulation of devices starting within 0.3 s, %g registrations/s, Retry-After "
                   "%g s, four seeds), for what other retry rules would cost, the two "
                   "alternatives' among them, and at other fleet sizes:" % (
                       model["rate"], model["retry_after"]), "",
                   "| rule | devices | total time / ideal (worst) | requests / minimum | "
                   "devices that gave up |", "|---|---|---|---|---|")
            for r in model["rules"]:
                self.w("| %s | %d | %.2fx (%.2fx) | %.2fx | %g |" % (
                    r["rule"], r.get("devices", model["devices"]), r["time"], r["time_worst"],
                    r["requests"], r.get("gave_up", 0)))
            self.w("")
        if f["mean_requests_over_min"] > FLEET_MAX_REQUEST_RATIO:
            self.w("Why the requests per device miss: DPS's Retry-After (%s s here) is the "
                   "same for every throttled device and says nothing about how long the queue "
                   "is, so no device can know when its turn comes. The agent waits at least the "
                   "Retry-After and adds a random share above it, up to 2, 4, then 8 times the "
                   "value for consecutive refusals (`dps_retry_after_delay_ms` in "
                   "`agent/dps/wire.c`), which spreads the fleet out instead of bringing it "
                   "back in lock step every Retry-After (the rule before, and azure-iot-sdk-c's: "
                   "13.6x in the model). Waiting longer cuts requests but leaves DPS idle while "
                   "devices sleep, which costs total time: iot-identity-service's fixed 60 s "
                   "and more reaches 1.85x the requests at about 11x the ideal time. Even a rule "
                   "told the fleet's size, whose first retry lands anywhere in the time the "
                   "whole fleet needs, meets neither target (the model's last rows): random "
                   "retries that fill DPS's rate collide often enough that the last device is "
                   "late, and the same rule is 10x the ideal time for a fleet of 20. Both 1.5x "
                   "and 1.25x together need each device to be given its own time, which is a "
                   "DPS whose Retry-After follows its backlog; DPS does not document one "
                   "(`../shared/docs/dps-tpm-protocol.md` 1.11)." % f["retry_after"], "")

    def part_manufacturing(self):
        self.w("## Manufacturing line (bench/manufacturing.py)", "", self.part_note(
            "manufacturing"), "")
        m = self.mfg
        if not m:
            return
        p, c, e = (m["ek_seconds_per_device_persisted"], m["ek_seconds_per_device_computed"],
                   m["enroll_rows_per_second"])
        self.w("Method in `bench/manufacturing.md`.", "",
               "| what | median | runs |", "|---|---|---|",
               "| `ek --append`, EK persisted | %s per device | %d |" % (
                   ms(p["median"]), len(p["runs"])),
               "| `ek --append`, EK computed (CreatePrimary on swtpm) | %s per device | %d |" % (
                   ms(c["median"]), len(c["runs"])),
               "| `enroll`, %d rows against the emulator | %.0f rows/s | %d |" % (
                   e["rows"], e["median"], len(e["runs"])), "")

    @staticmethod
    def wrapped(line):
        """Prose at 100 columns (list items keep their indent); tables and headings as they
        are."""
        if len(line) <= 100 or line.startswith(("|", "#")):
            return line
        m = re.match(r"(- |\d+\. )", line)
        indent = " " * len(m.group(1)) if m else ""
        return textwrap.fill(line, width=100, subsequent_indent=indent,
                             break_long_words=False, break_on_hyphens=False)

    def write(self):
        self.header()
        self.targets()
        self.part_tpm()
        self.part_http()
        self.part_footprint()
        self.part_fleet()
        self.part_manufacturing()
        with open(os.path.join(HERE, "METHOD.md")) as f:
            self.w(f.read().rstrip("\n"))
        text = "\n".join(self.wrapped(x) for x in self.lines) + "\n"
        with open(RESULTS + ".tmp", "w") as f:
            f.write(text)
        os.rename(RESULTS + ".tmp", RESULTS)
        return RESULTS


def write():
    return Report().write()


if __name__ == "__main__":
    print(write())
