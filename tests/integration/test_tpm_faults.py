"""TPM faults between the agent and its TPM, injected by tests/lib/tpmproxy.py.

Field cases: B17 (transient warnings RETRY/TESTING/INITIALIZE), B18 (failure mode, interrupted
field upgrade), B11 (a killed agent leaves nothing behind), and the DESIGN.md rule that a power
cut at any TPM command of `own` converges on the next run (also for the A/B state record).

Each test gets its own swtpm. To keep the power-cut matrix fast, one TPM is manufactured per
session by swtpm_setup (EK certificate in NV, EK not persisted, as real TPMs usually come) and
its state directory copied for every test (swtpm state is the files in that directory).
The number of commands M a full `own` sends is measured at collection time through the proxy,
so every cut point 1..M is a visible test: test_power_cut_every_command_of_own_{after,before}[N].
"""
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "lib"))

from swtpm import Swtpm, TemplateSwtpm  # noqa: E402
from tpmproxy import (CC, MUTATING_CC, TPM_RC_FAILURE, TPM_RC_INITIALIZE,  # noqa: E402
                      TPM_RC_NV_RATE, TPM_RC_NV_UNAVAILABLE, TPM_RC_RETRY, TPM_RC_SUCCESS,
                      TPM_RC_TESTING, TPM_RC_UPGRADE, TPM_RC_YIELDED, TpmProxy, cc_name,
                      rc_name)

AGENT = os.environ.get("TPM_PROVISION_BIN", os.path.join(ROOT, "build", "tpm-provision"))

EK = 0x81010001
SRK = 0x81000001
STATE_INDEX = 0x01000100
SLOT_SIZE = 512

EXIT_TPM_REFUSED = 4
EXIT_TEMPORARY = 5
EXIT_TPM_UNUSABLE = 7

# The agent's documented bound for transient answers is about 30 s (tpm.c); the test allows
# a margin for a loaded CI machine.
RETRY_BOUND_S = 45


# --- helpers ------------------------------------------------------------------------------

def agent_env(tcti):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TPM_PROVISION_", "CREDENTIALS_DIRECTORY"))}
    env["TPM_PROVISION_TCTI"] = tcti
    return env


def run_agent(tcti, *args, timeout=120):
    """Runs the agent; returns the CompletedProcess with .elapsed added."""
    t0 = time.monotonic()
    try:
        res = subprocess.run([AGENT, *args], env=agent_env(tcti), capture_output=True,
                             text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        pytest.fail("tpm-provision %s still running after %d s\n%s" % (
            " ".join(args), timeout, e.stderr.decode(errors="replace") if e.stderr else ""))
    res.elapsed = time.monotonic() - t0
    return res


def status_json(tcti):
    res = run_agent(tcti, "status", "--json")
    assert res.returncode == 0, "status failed: %s" % res.stderr
    return json.loads(res.stdout)


def lockout_counter(tpm):
    out = tpm.tpm2("getcap", "properties-variable")
    m = re.search(r"TPM2_PT_LOCKOUT_COUNTER:\s*(0x[0-9a-fA-F]+|\d+)", out)
    assert m, out
    return int(m.group(1), 0)


def nv_image(tpm, workdir):
    path = os.path.join(workdir, "nv-image.bin")
    tpm.tpm2("nvread", "0x%08x" % STATE_INDEX, "-C", "0x%08x" % STATE_INDEX, "-s", "1024",
             "-o", path)
    with open(path, "rb") as f:
        return f.read()


def nv_write(tcti, workdir, offset, data):
    """tpm2_nvwrite -C o at offset, through the given TCTI; returns the CompletedProcess."""
    path = os.path.join(workdir, "nv-write.bin")
    with open(path, "wb") as f:
        f.write(data)
    env = dict(os.environ, TPM2TOOLS_TCTI=tcti, TSS2_LOG="all+none")
    return subprocess.run(["tpm2_nvwrite", "0x%08x" % STATE_INDEX, "-C", "o", "-i", path,
                           "--offset", str(offset)], env=env, capture_output=True, text=True,
                          timeout=60)


# The state record slot, as docs and agent/state/record.c describe it, decoded here without
# the agent's code: u32 magic "TPPS", u8 version, u8 0, u16 payload length L, u32 sequence,
# L bytes payload, SHA-256 over everything before it; zeros after.
def slot_decode(slot):
    if slot[:4] != b"TPPS":
        return None
    length = int.from_bytes(slot[6:8], "big")
    body = slot[:12 + length]
    if hashlib.sha256(body).digest() != slot[12 + length:12 + length + 32]:
        return None
    return {"version": slot[4], "sequence": int.from_bytes(slot[8:12], "big"),
            "state": slot[12]}


def slot_with_sequence(slot, sequence):
    """A valid copy of a record slot with another sequence number (digest recomputed)."""
    length = int.from_bytes(slot[6:8], "big")
    body = bytearray(slot[:12 + length])
    body[8:12] = sequence.to_bytes(4, "big")
    out = bytes(body) + hashlib.sha256(bytes(body)).digest()
    return out + bytes(SLOT_SIZE - len(out))


# --- a manufactured TPM, copied per test (tests/lib/swtpm.py TemplateSwtpm) ----------------


class Rig:
    """One test's TPM and the proxy in front of it."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.tpm = TemplateSwtpm(workdir)
        self.proxy = TpmProxy(self.tpm, os.path.join(workdir, "proxy.sock")).start()

    def own(self, *args, **kw):
        return run_agent(self.proxy.tcti, *args, "own", **kw)

    def close(self):
        self.proxy.close()
        self.tpm.stop(clean=False)


@pytest.fixture
def rig(tmp_path):
    r = Rig(str(tmp_path))
    yield r
    r.close()


def explain(rig, res=None):
    text = "proxy log:\n" + rig.proxy.format_log()
    if res is not None:
        text += "\nexit %d\nstderr:\n%s" % (res.returncode, res.stderr)
    return text


def bursts(entries, gap=0.015):
    """Groups commands sent back to back. ESAPI itself resubmits a command answered RETRY,
    TESTING or YIELDED up to 5 times without waiting (_ESYS_MAX_SUBMISSIONS); the agent's own
    backoff shows as the gaps between such bursts."""
    groups = []
    for e in entries:
        if groups and e.t - groups[-1][-1].t < gap:
            groups[-1].append(e)
        else:
            groups.append([e])
    return groups


def assert_backoff(entries):
    """Attempts come in bursts of at most 5 (ESAPI's own resubmissions), and the agent waits
    longer between the last attempts than between the first ones."""
    groups = bursts(entries)
    waits = [b[0].t - a[-1].t for a, b in zip(groups, groups[1:])]
    assert max(len(g) for g in groups) <= 5, [len(g) for g in groups]
    if len(waits) >= 3:
        assert waits[-1] > 2 * waits[0], ["%.3f" % w for w in waits]
    return groups, waits


def assert_no_leftovers(tpm):
    snap = tpm.snapshot()
    assert snap["transient"] == [], "transient objects left: %s" % snap
    assert snap["sessions"] == [], "sessions left: %s" % snap


def assert_owned(rig, base):
    """The invariants of a converged `own` on a TPM whose handles were `base` before."""
    status = status_json(rig.tpm.tcti)
    assert status["ek"]["present"] and status["srk"]["present"], status
    assert status["state"]["record"] == "valid", status
    assert status["state"]["state"] == "owned", status
    snap = rig.tpm.snapshot()
    assert snap["persistent"] == sorted(set(base["persistent"]) | {EK, SRK}), snap
    assert snap["nv"] == sorted(set(base["nv"]) | {STATE_INDEX}), snap
    assert snap["transient"] == [] and snap["sessions"] == [], snap
    return status


# --- B17: transient warnings ---------------------------------------------------------------

def test_b17_transient_retry_first_createprimary_and_first_nv_write(rig):
    """0x922 RETRY to the first CreatePrimary and the first NV_Write: own repeats them."""
    base = rig.tpm.snapshot()
    cp = rig.proxy.inject(TPM_RC_RETRY, CC["CreatePrimary"], nth=1)
    nw = rig.proxy.inject(TPM_RC_RETRY, CC["NV_Write"], nth=1)

    res = rig.own()

    assert res.returncode == 0, explain(rig, res)
    assert cp.fired == 1 and nw.fired == 1, explain(rig, res)
    log = rig.proxy.log
    for cc in (CC["CreatePrimary"], CC["NV_Write"]):
        first = next(i for i, e in enumerate(log) if e.cc == cc)
        assert log[first].rc == TPM_RC_RETRY and log[first].action == "injected"
        # The very next command is the same one again, byte for byte, and it succeeds.
        again = log[first + 1]
        assert again.cc == cc and again.command == log[first].command, explain(rig, res)
        assert again.rc == TPM_RC_SUCCESS and again.action == "forwarded", explain(rig, res)
    # EK and SRK: two CreatePrimary executed, one repeated; one record write, repeated once.
    assert rig.proxy.count(CC["CreatePrimary"]) == 3, explain(rig, res)
    assert rig.proxy.count(CC["NV_Write"]) == 2, explain(rig, res)
    assert_owned(rig, base)


@pytest.mark.parametrize("code", [TPM_RC_RETRY, TPM_RC_YIELDED, TPM_RC_NV_RATE,
                                  TPM_RC_NV_UNAVAILABLE], ids=rc_name)
def test_b17_transient_retry_six_times_on_nv_write(rig, code):
    """Six warnings in a row on the record's NV_Write. ESAPI resubmits RETRY/TESTING/YIELDED
    up to 5 times on its own and never NV_RATE/NV_UNAVAILABLE, so this needs the agent's
    own retry (TPM_CALL)."""
    base = rig.tpm.snapshot()
    rule = rig.proxy.inject(code, CC["NV_Write"], nth=range(1, 7))

    res = rig.own()

    assert res.returncode == 0, explain(rig, res)
    assert rule.fired == 6
    writes = [e for e in rig.proxy.log if e.cc == CC["NV_Write"]]
    assert [e.rc for e in writes] == [code] * 6 + [TPM_RC_SUCCESS], explain(rig, res)
    assert len({e.command for e in writes}) == 1
    assert_owned(rig, base)


def test_b17_transient_retry_testing_for_two_seconds_after_start(rig):
    """0x90a TESTING to everything for 2 s: the agent's bounded backoff waits it out."""
    base = rig.tpm.snapshot()
    window = rig.proxy.inject_for(TPM_RC_TESTING, 2.0)

    res = rig.own()

    assert res.returncode == 0, explain(rig, res)
    log = rig.proxy.log
    testing = [e for e in log if e.rc == TPM_RC_TESTING]
    assert len(testing) == window.fired >= 2, explain(rig, res)
    # Backoff, not a busy loop: a handful of attempts over the 2 s, further and further apart.
    groups, waits = assert_backoff(testing)
    assert 2 <= len(groups) <= 15, explain(rig, res)
    assert log[0].rc == TPM_RC_TESTING
    # Only the first command was repeated; the first real answer is to that same command.
    first_real = log[len(testing)]
    assert {e.cc for e in testing} == {first_real.cc}, explain(rig, res)
    assert first_real.t - log[0].t >= 2.0
    assert res.elapsed < 10, "own took %.1f s after a 2 s self-test" % res.elapsed
    assert_owned(rig, base)


def test_b17_transient_retry_initialize_until_startup(rig):
    """0x100 INITIALIZE until TPM2_Startup: the agent sends one Startup(CLEAR) and goes on."""
    base = rig.tpm.snapshot()
    rule = rig.proxy.inject_until(TPM_RC_INITIALIZE, until_cc=CC["Startup"],
                                  reply=TPM_RC_SUCCESS)

    res = rig.own()

    assert res.returncode == 0, explain(rig, res)
    log = rig.proxy.log
    startups = [e for e in log if e.cc == CC["Startup"]]
    assert len(startups) == 1, explain(rig, res)
    assert startups[0].command[10:12] == b"\x00\x00", "not TPM_SU_CLEAR: %s" % \
        startups[0].command.hex()
    i = log.index(startups[0])
    assert i >= 1 and all(e.rc == TPM_RC_INITIALIZE for e in log[:i]), explain(rig, res)
    # Nothing that changes the TPM was tried before it was started.
    assert not any(e.cc in MUTATING_CC for e in log[:i])
    assert rule.done and all(e.rc != TPM_RC_INITIALIZE for e in log[i + 1:])
    assert_owned(rig, base)


def test_b17_transient_retry_forever_gives_up_within_bound(rig):
    """0x922 RETRY to every command forever: a clear error and exit 5 within the bound."""
    before = rig.tpm.snapshot()
    lock_before = lockout_counter(rig.tpm)
    rig.proxy.inject_all(TPM_RC_RETRY)

    res = rig.own(timeout=RETRY_BOUND_S + 30)

    print("RETRY forever: exit %d after %.1f s, %d commands" % (
        res.returncode, res.elapsed, len(rig.proxy.log)))
    assert res.returncode == EXIT_TEMPORARY, explain(rig, res)
    assert res.elapsed < RETRY_BOUND_S, "gave up only after %.1f s" % res.elapsed
    # It did wait (bounded backoff), rather than failing on the first warning.
    assert res.elapsed > 5, "gave up after %.1f s" % res.elapsed
    groups, waits = assert_backoff(rig.proxy.log)
    print("attempts (bursts): %d, waits: %s" % (len(groups), ["%.2f" % w for w in waits]))
    assert 5 <= len(groups) <= 40, explain(rig, res)
    assert max(waits) <= 5, "waited %.1f s between two attempts" % max(waits)
    # Gave up on the first command and sent nothing else.
    assert len({e.cc for e in rig.proxy.log}) == 1, explain(rig, res)
    assert re.search(r"0x922|RETRY|retry", res.stderr), res.stderr
    assert rig.tpm.snapshot() == before
    assert lockout_counter(rig.tpm) == lock_before


# --- B18: failure mode ---------------------------------------------------------------------



def test_b18_failure_mode(rig):
    """0x101 FAILURE to all but GetCapability/GetTestResult: exit 7 at once, nothing changed."""
    before = rig.tpm.snapshot()
    rig.proxy.failure_mode()

    res = rig.own()

    assert res.returncode == EXIT_TPM_UNUSABLE, explain(rig, res)
    assert res.elapsed < 5, "took %.1f s" % res.elapsed
    log = rig.proxy.log
    failed = [e for e in log if e.rc == TPM_RC_FAILURE]
    # Detected once: no command repeated after a FAILURE answer, no loop.
    assert len(failed) == 1, explain(rig, res)
    assert len(log) <= 6, explain(rig, res)
    assert not any(e.cc in MUTATING_CC for e in log), explain(rig, res)
    rig.proxy.clear_faults()
    assert rig.tpm.snapshot() == before


def test_b18_failure_mode_logs_get_test_result(rig):
    """B18 expects the agent to log the GetTestResult output once it sees failure mode."""
    rig.proxy.failure_mode()
    res = rig.own()
    assert res.returncode == EXIT_TPM_UNUSABLE, explain(rig, res)
    assert rig.proxy.count(CC["GetTestResult"]) == 1, explain(rig, res)
    assert re.search(r"(?i)test ?result|failure mode", res.stderr), res.stderr
    assert "0x101" in res.stderr and "deadbeef" in res.stderr  # what GetTestResult said


def test_b18_failure_answer_contradicted_by_the_self_test_is_no_failure_mode(rig):
    """FAILURE to one command while GetTestResult reports success (libtpms does this for an
    ActivateCredential made for another EK): a refusal of that command, not exit 7."""
    rig.proxy.inject(TPM_RC_FAILURE, CC["CreatePrimary"], nth=1)
    res = rig.own()
    assert res.returncode not in (0, EXIT_TPM_UNUSABLE), explain(rig, res)
    assert "failure mode" not in res.stderr
    assert rig.proxy.count(CC["GetTestResult"]) == 1, explain(rig, res)


def test_b18_failure_mode_status(rig):
    rig.proxy.failure_mode()
    res = run_agent(rig.proxy.tcti, "status", "--json")
    assert res.returncode == EXIT_TPM_UNUSABLE, res.stdout + res.stderr


def test_b18_interrupted_field_upgrade(rig):
    """0x12d UPGRADE to every command, Startup and GetCapability included: exit 7 at once."""
    before = rig.tpm.snapshot()
    rig.proxy.inject_all(TPM_RC_UPGRADE)

    res = rig.own()

    assert res.returncode == EXIT_TPM_UNUSABLE, explain(rig, res)
    assert res.elapsed < 5
    assert len(rig.proxy.log) <= 3, explain(rig, res)
    rig.proxy.clear_faults()
    assert rig.tpm.snapshot() == before


# --- power cut at every command of own ------------------------------------------------------

_OWN_SEQUENCE = {}


def own_sequence():
    """The commands a full `own` sends to a fresh TPM (EK not persisted), through the proxy.
    Measured once; (list of command codes, error text or None)."""
    if "ccs" not in _OWN_SEQUENCE:
        d = tempfile.mkdtemp(prefix="tpmfaults-measure-")
        try:
            r = Rig(d)
            try:
                res = r.own()
                if res.returncode != 0:
                    raise RuntimeError("own failed: %s" % res.stderr)
                _OWN_SEQUENCE["ccs"] = r.proxy.ccs()
                _OWN_SEQUENCE["error"] = None
            finally:
                r.close()
        except Exception as e:  # reported by the tests, not at collection
            _OWN_SEQUENCE["ccs"] = []
            _OWN_SEQUENCE["error"] = "cannot measure own: %r" % e
        finally:
            shutil.rmtree(d, ignore_errors=True)
    return _OWN_SEQUENCE["ccs"], _OWN_SEQUENCE["error"]


def pytest_generate_tests(metafunc):
    if "cut_n" in metafunc.fixturenames:
        ccs, _ = own_sequence()
        points = range(1, len(ccs) + 1) if ccs else [0]
        metafunc.parametrize("cut_n", points, ids=[str(n) for n in points])


_COVERAGE = {"after": {}, "before": {}}


class _PowerCutReport:
    """Prints, in pytest's terminal summary, how many cut points were covered."""

    def pytest_terminal_summary(self, terminalreporter):
        ccs, _ = own_sequence()
        for when in ("after", "before"):
            done = _COVERAGE[when]
            if not done:
                continue
            exits = sorted({v["first_exit"] for v in done.values()})
            reruns = sorted({v["reruns"] for v in done.values()})
            lock = sorted({(v["lockout_before"], v["lockout_after"]) for v in done.values()})
            terminalreporter.write_line(
                "power cut %s command N of own: %d of %d cut points converged (exit codes of "
                "the cut run: %s; own runs to converge: %s; lockout counter before/after: %s)"
                % (when, len(done), len(ccs), exits, reruns, lock))


@pytest.fixture(scope="module", autouse=True)
def _power_cut_report(request):
    pm = request.config.pluginmanager
    if not pm.has_plugin("tpm-faults-power-cut-report"):
        pm.register(_PowerCutReport(), "tpm-faults-power-cut-report")
    yield


def test_power_cut_own_command_sequence():
    """The measured sequence M is what own must do on a fresh TPM (sanity for the matrix)."""
    ccs, err = own_sequence()
    assert err is None, err
    print("own sends %d commands: %s" % (len(ccs), " ".join(cc_name(c) for c in ccs)))
    assert ccs.count(CC["CreatePrimary"]) == 2      # EK and SRK
    assert ccs.count(CC["EvictControl"]) == 2
    assert ccs.count(CC["NV_DefineSpace"]) == 1
    assert ccs.count(CC["NV_Write"]) >= 1
    assert ccs.index(CC["NV_DefineSpace"]) < ccs.index(CC["NV_Write"])


def _power_cut_case(tmp_path, cut_n, when):
    ccs, err = own_sequence()
    assert err is None, err
    r = Rig(str(tmp_path))
    try:
        base = r.tpm.snapshot()
        lock_before = lockout_counter(r.tpm)
        (r.proxy.cut_after if when == "after" else r.proxy.cut_before)(cut_n)

        res = r.own()

        assert r.proxy.cut_event.is_set(), "own ended before command %d\n%s" % (
            cut_n, explain(r, res))
        cut = r.proxy.cuts[0]
        assert cut.cc == ccs[cut_n - 1], "own sent another sequence:\n" + explain(r, res)
        # The agent lost its TPM in the middle: it must not report success.
        assert res.returncode != 0, explain(r, res)

        r.tpm.start()
        # The record is written only after what it records took effect (DESIGN.md): after the
        # cut, a record that says "owned" means EK and SRK are there.
        cut_status = status_json(r.tpm.tcti)
        if cut_status["state"]["record"] == "valid":
            assert cut_status["ek"]["present"] and cut_status["srk"]["present"], cut_status
        r.proxy.reset_log()
        reruns = 0
        for reruns in (1, 2):
            again = r.own()
            if again.returncode == 0:
                break
        assert again.returncode == 0, "own did not converge in 2 runs after a cut %s %s " \
            "(%s)\n%s" % (when, cut_n, cc_name(cut.cc), explain(r, again))

        assert_owned(r, base)
        lock_after = lockout_counter(r.tpm)
        assert lock_after <= lock_before, "lockout counter %d -> %d" % (lock_before, lock_after)

        # Converged: one more own changes nothing.
        r.proxy.reset_log()
        last = r.own()
        assert last.returncode == 0, explain(r, last)
        changing = [cc_name(c) for c in r.proxy.ccs() if c in MUTATING_CC]
        assert changing == [], "own after convergence sent %s" % changing
        _COVERAGE[when][cut_n] = {"reruns": reruns, "lockout_before": lock_before,
                                  "lockout_after": lock_after, "first_exit": res.returncode}
    finally:
        r.close()


def test_power_cut_every_command_of_own_after(tmp_path, cut_n):
    """Power cut right after swtpm executed command N of own (its answer is lost)."""
    _power_cut_case(tmp_path, cut_n, "after")


def test_power_cut_every_command_of_own_before(tmp_path, cut_n):
    """Power cut when command N of own is about to reach the TPM."""
    _power_cut_case(tmp_path, cut_n, "before")


def test_power_cut_state_record_second_write(rig, tmp_path):
    """A/B state record: a torn second write leaves the first record readable; two damaged
    slots are reported as damaged and own writes a fresh record."""
    work = str(tmp_path)
    res = rig.own()
    assert res.returncode == 0, explain(rig, res)
    status = status_json(rig.tpm.tcti)["state"]
    assert (status["record"], status["sequence"]) == ("valid", 1), status
    image = nv_image(rig.tpm, work)
    slot0, slot1 = image[:SLOT_SIZE], image[SLOT_SIZE:]
    assert slot_decode(slot0) == {"version": 1, "sequence": 1, "state": 1}
    assert set(slot1) <= {0} or set(slot1) <= {0xff}, "slot 1 written by the first own"

    # The second record write goes to slot 1; the power fails when half a slot is in NV and
    # only the start of that is the new record (its header and part of the payload, no
    # digest): the rest is garbage.
    second = slot_with_sequence(slot0, 2)
    garbage = hashlib.sha256(b"torn").digest() * (SLOT_SIZE // 2 // 32)
    torn_bytes = second[:24] + garbage[24:SLOT_SIZE // 2]
    rig.proxy.reset_log()
    rig.proxy.cut_after(cc=CC["NV_Write"])
    torn = nv_write(rig.proxy.tcti, work, SLOT_SIZE, torn_bytes)
    assert rig.proxy.cut_event.is_set(), rig.proxy.format_log() + torn.stderr
    assert torn.returncode != 0
    rig.tpm.start()
    image = nv_image(rig.tpm, work)
    assert image[SLOT_SIZE:SLOT_SIZE + SLOT_SIZE // 2] == torn_bytes
    assert image[:SLOT_SIZE] == slot0
    assert image[SLOT_SIZE:SLOT_SIZE + 12] == second[:12]   # magic, version, length, seq 2
    assert slot_decode(image[SLOT_SIZE:]) is None

    status = status_json(rig.tpm.tcti)["state"]
    assert (status["record"], status["state"], status["sequence"]) == ("valid", "owned", 1), \
        status

    # Slot 0 goes bad too (one flipped payload byte): both slots damaged.
    flipped = bytes([slot0[20] ^ 0x01])
    assert nv_write(rig.tpm.tcti, work, 20, flipped).returncode == 0
    status = status_json(rig.tpm.tcti)["state"]
    assert status["record"] == "damaged", status

    res = run_agent(rig.tpm.tcti, "own")
    assert res.returncode == 0, res.stderr
    assert re.search(r"<4>.*damaged", res.stderr), res.stderr
    status = status_json(rig.tpm.tcti)["state"]
    assert (status["record"], status["state"]) == ("valid", "owned"), status
    image = nv_image(rig.tpm, work)
    assert slot_decode(image[:SLOT_SIZE]) is not None or slot_decode(image[SLOT_SIZE:]) \
        is not None

    # Control: a whole, valid newer record in slot 1 is the one status reports, so the
    # checks above could tell the slots apart.
    current = slot_decode(image[:SLOT_SIZE])
    assert current is not None, "fresh record not in slot 0"
    newer = slot_with_sequence(image[:SLOT_SIZE], current["sequence"] + 1)
    assert nv_write(rig.tpm.tcti, work, SLOT_SIZE, newer).returncode == 0
    status = status_json(rig.tpm.tcti)["state"]
    assert status["sequence"] == current["sequence"] + 1, status
    assert_no_leftovers(rig.tpm)


# --- B11: a killed agent leaves nothing behind ----------------------------------------------

# (when, command, occurrence in that run, transient objects the kill leaves until a reset).
# The TPM keeps its progress from kill to kill, so later points are later in the sequence.
B11_KILL_POINTS = [
    ("after", "GetCapability", 1, 0),
    ("after", "ReadPublic", 1, 0),
    ("after", "CreatePrimary", 1, 1),     # EK created, not persisted
    ("before", "EvictControl", 1, 1),
    ("after", "EvictControl", 1, 1),      # EK persisted, transient copy not yet flushed
    ("after", "CreatePrimary", 1, 1),     # now the SRK
    ("after", "EvictControl", 1, 1),      # SRK persisted
    ("after", "NV_ReadPublic", 1, 0),     # state index looked up
    ("after", "NV_DefineSpace", 1, 0),
    ("before", "NV_Write", 1, 0),
]


def test_b11_killed_agent_ten_times_then_own_succeeds(rig):
    base = rig.tpm.snapshot()
    seen = []
    for i, (when, name, nth, leaked) in enumerate(B11_KILL_POINTS, 1):
        rig.proxy.reset_log()
        pause = rig.proxy.pause(when, cc=CC[name], nth=nth)
        proc = subprocess.Popen([AGENT, "own"], env=agent_env(rig.proxy.tcti),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while not pause.reached.is_set() and proc.poll() is None \
                and time.monotonic() < deadline:
            pause.wait(0.05)
        if not pause.reached.is_set():
            proc.kill()
            _, err = proc.communicate()
            rig.proxy.clear_faults()
            pytest.fail("kill %d: own never reached %s %s #%d\n%s\n%s" % (
                i, when, name, nth, rig.proxy.format_log(), err))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
        pause.release()
        assert rig.proxy.wait_idle(), "proxy still busy after the kill"
        snap = rig.tpm.snapshot()
        # With a raw swtpm socket (no resource manager) what the process had loaded stays
        # until a TPM reset: this proves the kill landed where intended.
        assert len(snap["transient"]) == leaked, "kill %d (%s %s): %s\n%s" % (
            i, when, name, snap, rig.proxy.format_log())
        seen.append((i, when, name, len(snap["transient"])))
        rig.tpm.restart(clean=True)          # the reboot
        assert_no_leftovers(rig.tpm)
    print("kills:", seen)

    rig.proxy.reset_log()
    res = rig.own()
    assert res.returncode == 0, explain(rig, res)
    assert_owned(rig, base)
    assert_no_leftovers(rig.tpm)


def test_b11_killed_agent_no_command_leaves_objects_or_sessions(rig, tmp_path):
    """Without a kill, no agent command leaves a transient object or session (no resource
    manager between agent and swtpm, so a leak would show)."""
    tpm = rig.tpm
    tcti = rig.proxy.tcti
    cases = []

    def check(name, args, expect_exit, changes_allowed):
        before = tpm.snapshot()
        res = run_agent(tcti, *args)
        assert res.returncode == expect_exit, "%s: exit %d\n%s" % (name, res.returncode,
                                                                    res.stderr)
        after = tpm.snapshot()
        assert after["transient"] == [] and after["sessions"] == [], "%s left %s" % (name,
                                                                                    after)
        if not changes_allowed:
            assert after == before, "%s changed the TPM: %s -> %s" % (name, before, after)
        cases.append(name)
        return res

    check("ek, EK not persisted", ["ek", "--json"], 0, False)
    check("status, not owned", ["status", "--json"], 0, False)
    # A wrong owner password: the EK is created (endorsement auth is empty) and persisting it
    # fails on the owner authorization; the transient EK must be flushed on that error path.
    tpm.tpm2("changeauth", "-c", "o", "OWNER_X")
    wrong = os.path.join(str(tmp_path), "wrong-owner")
    with open(wrong, "w") as f:
        f.write("WRONG")
    os.chmod(wrong, 0o600)
    rig.proxy.reset_log()
    res = check("own, wrong owner password", ["--owner-auth=" + wrong, "own"],
                EXIT_TPM_REFUSED, False)
    assert CC["EvictControl"] in rig.proxy.ccs(), "the error path under test was not taken"
    assert "0x9a2" in res.stderr and "owner" in res.stderr, res.stderr
    right = os.path.join(str(tmp_path), "owner")
    with open(right, "w") as f:
        f.write("OWNER_X")
    os.chmod(right, 0o600)
    check("own", ["--owner-auth=" + right, "own"], 0, True)
    check("own again", ["--owner-auth=" + right, "own"], 0, False)
    check("status, owned", ["status", "--json"], 0, False)
    check("ek, EK persisted", ["ek"], 0, False)
    check("ek --csv", ["ek", "--csv"], 0, False)
    print("no leftovers after:", cases)


# --- the proxy itself -----------------------------------------------------------------------

def test_tpmproxy_one_connection_many_commands_and_control_channel(rig):
    """The proxy serves a client that keeps one connection (the swtpm TCTI opens one per
    command) and forwards the control channel the TCTI uses at start (CMD_SET_LOCALITY)."""
    get_cap = struct.pack(">HIIIII", 0x8001, 22, CC["GetCapability"], 6, 0x100, 1)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(rig.proxy.path)
        for _ in range(3):
            s.sendall(get_cap)
            head = s.recv(10, socket.MSG_WAITALL)
            tag, size, rc = struct.unpack(">HII", head)
            assert rc == 0
            s.recv(size - 10, socket.MSG_WAITALL)
    assert rig.proxy.commands == [(CC["GetCapability"], 0)] * 3
    assert len({e.conn for e in rig.proxy.log}) == 1

    rig.proxy.reset_log()
    res = run_agent(rig.proxy.tcti, "status")
    assert res.returncode == 0, res.stderr
    assert 5 in rig.proxy.ctrl_commands            # CMD_SET_LOCALITY
    assert len({e.conn for e in rig.proxy.log}) == len(rig.proxy.log)  # one per command
