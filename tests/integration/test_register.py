"""`tpm-provision register`, `sas` and `reset` against swtpm and the DPS emulator over TLS.

Issue 4's acceptance list: the happy path ends with the emulator's hub accepting a token from
`tpm-provision sas`, with exactly the expected requests on one TLS connection; a second run
sends nothing; 429 twice, 503 with an HTTP-date, a dropped connection, malformed JSON, a
corrupted authenticationKey (and the previous identity surviving it), a disabled enrollment,
a failed assignment, an unknown CA, a wrong host name and a clock years behind.

What the tests look at is computed here, never taken from the agent: the state record is
parsed from the NV bytes (docs/state-record.md), key Names come from tpm2_readpublic,
token signatures are checked with the keys the emulator issued.
The field cases (B02, B23, ...) live in test_register_field_cases.py.
"""
import base64
import datetime
import hashlib
import hmac
import json
import os
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import threading
import time
import urllib.parse

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from tpmcheck import EK, SRK, STATE_INDEX, assert_no_leftovers, nv_read  # noqa: E402

IDENTITY = 0x81000100
DEVICE_KINDS = ("put_challenge", "put_auth", "get")

EXIT_USAGE, EXIT_TPM_REFUSED, EXIT_TEMPORARY, EXIT_DPS_REFUSED, EXIT_TPM_UNUSABLE = 2, 4, 5, 6, 7


# -- helpers ---------------------------------------------------------------------------------

def register(device, *args, check=None, env=None):
    """Runs `register`, returns (result, seconds)."""
    t0 = time.monotonic()
    res = device.run("register", *args, check=check, env=env)
    return res, time.monotonic() - t0


def device_requests(emu):
    """The device API requests in the emulator's log (enrollment setup and admin excluded)."""
    return [e for e in emu.log() if e["kind"] in DEVICE_KINDS]


def shape(entries):
    return [(e["kind"], e["status"], e["auth"]) for e in entries]


def when(entry):
    return datetime.datetime.fromisoformat(entry["time"])


def gap(a, b):
    return (when(b) - when(a)).total_seconds()


def newest_record(tpm):
    """The newest valid slot of the state index, parsed independently of the agent."""
    nv = nv_read(tpm, STATE_INDEX)
    best = None
    for off in (0, 512):
        slot = nv[off:off + 512]
        if slot[:4] != b"TPPS":
            continue
        length = int.from_bytes(slot[6:8], "big")
        if hashlib.sha256(slot[:12 + length]).digest() != slot[12 + length:44 + length]:
            continue
        seq = int.from_bytes(slot[8:12], "big")
        p = slot[12:12 + length]
        rec = {"seq": seq, "state": {1: "owned", 2: "assigned", 3: "disabled",
                                     4: "failed"}.get(p[0], p[0]),
               "identity_handle": int.from_bytes(p[2:6], "big"),
               "changed_at": int.from_bytes(p[6:14], "big"),
               "dps_error": int.from_bytes(p[14:18], "big", signed=True), "flags": p[1]}
        pos = 18
        for field in ("id_scope", "registration_id", "hub", "device_id", "identity_name"):
            n = p[pos]
            rec[field] = p[pos + 1:pos + 1 + n]
            pos += 1 + n
        for field in ("id_scope", "registration_id", "hub", "device_id"):
            rec[field] = rec[field].decode()
        if best is None or (seq - best["seq"]) % 2**32 < 2**31:
            best = rec
    assert best is not None, "no valid record in the state index"
    return best


def key_name(tpm, handle, workdir):
    path = os.path.join(workdir, "name-%08x.bin" % handle)
    tpm.tpm2("readpublic", "-c", "0x%08x" % handle, "-n", path)
    with open(path, "rb") as f:
        return f.read()


def token_fields(token):
    assert token.startswith("SharedAccessSignature "), token
    return dict(p.split("=", 1) for p in token[len("SharedAccessSignature "):].split("&"))


def signed_with(token, key):
    """Whether the token's sig is HMAC-SHA256(key, raw sr + '\\n' + raw se)."""
    f = token_fields(token)
    mac = hmac.new(key, ("%s\n%s" % (f["sr"], f["se"])).encode(), hashlib.sha256).digest()
    return hmac.compare_digest(mac, base64.b64decode(urllib.parse.unquote(f["sig"])))


def sas(device, **kw):
    res = device.run("sas", check=0, **kw)
    return res.stdout.strip()


def tpm_state(device):
    """Everything a failed or refused run must leave as it was."""
    return {"snapshot": device.tpm.snapshot(), "nv": nv_read(device.tpm, STATE_INDEX)}


def handoff_path(device):
    return os.path.join(device.runtime_dir, "identity.json")


def provisioned(device):
    """A registered device, with the emulator log emptied afterwards."""
    register(device, check=0)
    device.emu.clear_log()
    return device


# -- 1. happy path ---------------------------------------------------------------------------

def test_register_provisions_over_one_tls_connection_and_the_hub_accepts_its_token(device):
    emu, tpm = device.emu, device.tpm
    emu.clear_log()
    before = tpm.snapshot()

    old_umask = os.umask(0o077)         # the hand-off file's mode must not depend on the umask
    try:
        res, _ = register(device, check=0)
    finally:
        os.umask(old_umask)

    # Exactly: challenge PUT, signed PUT, polls until 200; all on one TLS connection.
    log = [e for e in emu.log() if e["kind"] != "service"]
    assert [e["kind"] for e in log[:2]] == ["put_challenge", "put_auth"], shape(log)
    assert shape(log[:2]) == [("put_challenge", 401, False), ("put_auth", 202, True)]
    polls = log[2:]
    assert polls and all(e["kind"] == "get" and e["auth"] for e in polls), shape(log)
    assert [e["status"] for e in polls] == [202] * (len(polls) - 1) + [200], shape(log)
    assert len({e["conn"] for e in log}) == 1, [e["conn"] for e in log]
    regid = device.registration_id
    for e in log[:2]:
        assert e["method"] == "PUT"
        assert urllib.parse.unquote(e["path"]) == "/%s/registrations/%s/register" % (
            emu.id_scope, regid)
    op_paths = {e["path"] for e in polls}
    assert len(op_paths) == 1
    assert urllib.parse.unquote(op_paths.pop()).startswith(
        "/%s/registrations/%s/operations/" % (emu.id_scope, regid))

    # The hub accepts the token the TPM signs, and not a tampered one.
    reg = emu.registration(regid)
    token = sas(device)
    assert signed_with(token, emu.keys(regid)[1])
    assert device.hub_check(token) == 200
    f = token_fields(token)
    tampered = token.replace("se=" + f["se"], "se=%d" % (int(f["se"]) + 1))
    assert device.hub_check(tampered) == 401

    status = json.loads(device.run("status", "--json", check=0).stdout)["state"]
    assert status["state"] == "assigned"
    assert status["assignedHub"] == reg["assignedHub"]
    assert status["deviceId"] == reg["deviceId"]
    assert status["registrationId"] == regid

    ident = device.identity()
    assert ident["assignedHub"] == reg["assignedHub"]
    assert ident["deviceId"] == reg["deviceId"]
    assert ident["registrationId"] == regid
    assert ident["idScope"] == emu.id_scope
    assert int(ident["identityHandle"], 16) == IDENTITY
    at = datetime.datetime.strptime(ident["provisionedAt"], "%Y-%m-%dT%H:%M:%SZ")
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    assert abs((at - now).total_seconds()) < 300
    assert stat.S_IMODE(os.stat(handoff_path(device)).st_mode) == 0o644

    # The identity key is persisted, named in the record, and nothing else is left behind.
    after = tpm.snapshot()
    assert after["persistent"] == sorted(before["persistent"] + [IDENTITY])
    assert after["nv"] == before["nv"]
    rec = newest_record(tpm)
    assert rec["state"] == "assigned" and rec["identity_handle"] == IDENTITY
    assert rec["identity_name"] == key_name(tpm, IDENTITY, device.workdir)
    assert (rec["hub"], rec["device_id"], rec["registration_id"]) == (
        reg["assignedHub"], reg["deviceId"], regid)
    assert "Provisioned" in res.stderr
    assert_no_leftovers(tpm)


def test_polls_wait_for_the_retry_after_of_every_202(device):
    """Protocol doc 1.12 step 5: the signed PUT's 202 carries retry-after; honour it."""
    emu = device.emu
    emu.args = list(emu.args) + ["--retry-after", "2"]
    emu.restart()
    emu.clear_log()

    register(device, check=0)

    log = device_requests(emu)
    assert shape(log) == [("put_challenge", 401, False), ("put_auth", 202, True),
                          ("get", 202, True), ("get", 200, True)]
    assert gap(log[2], log[3]) >= 1.9          # after the poll's 202: honoured
    assert gap(log[1], log[2]) >= 1.9          # after the signed PUT's 202


# -- 2. the boot fast path -------------------------------------------------------------------

def test_second_register_sends_nothing_writes_nothing_and_rewrites_the_handoff(device):
    provisioned(device)
    tpm = device.tpm
    state = tpm_state(device)
    ident = device.identity()

    res, _ = register(device, check=0)

    assert device.emu.log() == []
    assert tpm_state(device) == state
    assert "No request sent" in res.stderr
    assert device.identity() == ident

    # A fresh /run at boot: the hand-off file comes back, still without a request or a write.
    shutil.rmtree(device.runtime_dir)
    res, _ = register(device, check=0)

    assert device.emu.log() == []
    assert tpm_state(device) == state
    assert "No request sent" in res.stderr
    assert device.identity() == ident
    assert stat.S_IMODE(os.stat(handoff_path(device)).st_mode) == 0o644
    assert device.hub_check() == 200
    assert_no_leftovers(tpm)


def notify_messages(device, *args):
    """Runs `register` as systemd runs a Type=notify unit, with NOTIFY_SOCKET pointing at a
    datagram socket of the test's; returns the messages it received."""
    path = os.path.join(device.workdir, "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    try:
        register(device, *args, check=0, env={"NOTIFY_SOCKET": path})
        sock.setblocking(False)
        messages = []
        while True:
            try:
                messages.append(sock.recv(4096).decode())
            except BlockingIOError:
                return messages
    finally:
        sock.close()
        os.unlink(path)


def test_register_tells_a_notify_unit_ready_after_registering_and_on_the_fast_path(device):
    # A Type=notify unit whose process exits 0 without READY=1 fails with Result=protocol
    # and is restarted: both the registering run and the boot fast path must send it.
    first = notify_messages(device)
    assert any("STATUS=Registering with DPS" in m for m in first), first
    assert any("READY=1" in m.split("\n") for m in first), first

    device.emu.clear_log()
    later = notify_messages(device)
    assert device.emu.log() == []
    assert [m for m in later if "READY=1" in m.split("\n")], later
    assert any("STATUS=Already provisioned" in m for m in later), later


@pytest.mark.parametrize("rc, exit_code", [(0x12d, EXIT_TPM_UNUSABLE), (0x909, 1)],
                         ids=["upgrade", "canceled"])
def test_a_tpm_error_reading_the_identity_key_on_the_fast_path_is_not_a_missing_key(
        device, tmp_path, rc, exit_code):
    """The fast path's key check (ReadPublic of the identity handle) answered with an error,
    not with "no such handle": the device must not go to DPS and replace a working identity
    over a read error, and the next boot with a TPM that answers takes the fast path."""
    from tpmproxy import CC, TpmProxy

    provisioned(device)
    state = tpm_state(device)
    with TpmProxy(device.tpm, str(tmp_path / "proxy.sock")) as proxy:
        proxy.inject(rc, CC["ReadPublic"], nth=1)
        res, _ = register(device, env={"TPM_PROVISION_TCTI": proxy.tcti})
    assert res.returncode == exit_code, res.stderr
    assert "Cannot read the identity key at 0x81000100" in res.stderr
    assert "; registering again" not in res.stderr
    assert device_requests(device.emu) == []
    assert tpm_state(device) == state

    res, _ = register(device, check=0)
    assert "No request sent" in res.stderr
    assert device_requests(device.emu) == []
    assert device.hub_check() == 200


@pytest.mark.parametrize("cc, nth", [("NV_Write", 2), ("EvictControl", 2)],
                         ids=["old-key-evicted", "record-names-the-new-key"])
def test_sas_while_a_re_registration_replaces_the_key_says_try_later(device, tmp_path, cc, nth):
    """`sas` asked for a token while `register --force` is between its steps (the old key
    evicted and the record not yet rewritten; the record naming the new key, not yet
    persisted): that is a registration under way, exit 5 with "try again", not advice to
    register. Once it finishes, sas signs with the new key."""
    from agent import AGENT
    from tpmproxy import CC, TpmProxy

    provisioned(device)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TPM_PROVISION_", "CREDENTIALS_DIRECTORY"))}
    env.update(device.env())
    with TpmProxy(device.tpm, str(tmp_path / "proxy.sock")) as proxy:
        env["TPM_PROVISION_TCTI"] = proxy.tcti
        held = proxy.pause("before", cc=CC[cc], nth=nth)
        p = subprocess.Popen([AGENT, "register", "--force"], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        try:
            assert held.reached.wait(60), "register never reached %s #%d" % (cc, nth)
            res = device.run("sas")
        finally:
            held.release()
            out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert res.returncode == EXIT_TEMPORARY, res.stderr
    assert "try again once it is assigned" in res.stderr and "--force" not in res.stderr
    assert res.stdout == ""
    assert device.hub_check() == 200


# -- 3. --force ------------------------------------------------------------------------------

def test_register_force_replaces_the_hub_key(device):
    provisioned(device)
    emu, tpm, regid = device.emu, device.tpm, device.registration_id
    k2_old = emu.keys(regid)[1]
    old_token = sas(device)
    old_name = key_name(tpm, IDENTITY, device.workdir)
    handles = tpm.persistent_handles()
    assert device.hub_check(old_token) == 200

    register(device, "--force", check=0)

    k2_new = emu.keys(regid)[1]
    assert k2_new != k2_old
    assert [e["kind"] for e in device_requests(emu)][:2] == ["put_challenge", "put_auth"]
    assert device.hub_check(old_token) == 401
    new_token = sas(device)
    assert signed_with(new_token, k2_new) and not signed_with(new_token, k2_old)
    assert device.hub_check(new_token) == 200
    new_name = key_name(tpm, IDENTITY, device.workdir)
    assert new_name != old_name
    assert newest_record(tpm)["identity_name"] == new_name
    assert tpm.persistent_handles() == handles      # the same single object at 0x81000100
    assert_no_leftovers(tpm)


# -- 4. DPS and network faults ---------------------------------------------------------------

def test_429_with_retry_after_twice_on_the_first_put_then_success(device):
    emu = device.emu
    emu.clear_log()
    emu.set_fault("put_429", count=2, on="put_challenge", retry_after="3")

    register(device, check=0)

    log = device_requests(emu)
    assert shape(log[:4]) == [("put_challenge", 429, False), ("put_challenge", 429, False),
                              ("put_challenge", 401, False), ("put_auth", 202, True)]
    assert [e["faults"] for e in log[:3]] == [["put_429"], ["put_429"], []]
    assert len([e for e in log if e["kind"] == "put_challenge"]) == 3
    # The first backoff step is at most 2 s, so only honouring retry-after waits 3 s.
    assert gap(log[0], log[1]) >= 2.9 and gap(log[1], log[2]) >= 2.9
    assert len({e["conn"] for e in log}) == 1
    assert device.hub_check() == 200


def test_503_with_an_http_date_retry_after_on_a_poll_then_success(device):
    emu = device.emu
    emu.clear_log()
    emu.set_fault("get_503", count=1, retry_after="date:4")

    register(device, check=0)

    log = device_requests(emu)
    i = [e["status"] for e in log].index(503)
    assert log[i]["kind"] == "get" and log[i]["faults"] == ["get_503"]
    # An HTTP-date has whole seconds: 4 s ahead is at least 3 s; the backoff alone is <= 2 s.
    assert gap(log[i], log[i + 1]) >= 2.9
    assert log[-1]["kind"] == "get" and log[-1]["status"] == 200
    assert device.hub_check() == 200


def test_dropped_connection_mid_poll_then_success(device):
    emu = device.emu
    emu.clear_log()
    emu.set_fault("drop", count=1, on="get")

    register(device, check=0)

    log = device_requests(emu)
    assert shape(log[:3]) == [("put_challenge", 401, False), ("put_auth", 202, True),
                              ("get", 0, True)]
    assert log[2]["faults"] == ["drop"]
    assert log[-1]["kind"] == "get" and log[-1]["status"] == 200
    # A new connection after the drop, and only one.
    assert log[3]["conn"] != log[2]["conn"]
    assert len({e["conn"] for e in log}) == 2
    assert device.hub_check() == 200
    assert_no_leftovers(device.tpm)


def test_malformed_json_on_a_poll_then_success(device):
    emu = device.emu
    emu.clear_log()
    emu.set_fault("malformed_json", count=1, on="get")

    res, _ = register(device, check=0)

    log = device_requests(emu)
    bad = [e for e in log if e["faults"] == ["malformed_json"]]
    assert len(bad) == 1 and bad[0]["kind"] == "get"
    assert log[-1]["kind"] == "get" and log[-1]["status"] == 200 and log[-1] is not bad[0]
    assert "JSON" in res.stderr
    assert device.hub_check() == 200


@pytest.mark.parametrize("status", ["none", "Wobbling"])
def test_b23_operation_status_it_does_not_know_is_asked_again_with_backoff_not_at_once(device,
                                                                                    status):
    """A poll answer without a status, or with a word DPS never uses: no request storm (field
    case B23). Twice, then the real status: provisioned. Always: a handful of polls, with
    backoff, until the deadline."""
    emu = device.emu
    emu.clear_log()
    emu.set_fault("status_unknown", count=2, status=status)

    res, _ = register(device, check=0)

    assert "no status this agent knows" in res.stderr
    assert device.hub_check() == 200

    device.write_config(provisioning={"TimeoutSec": "20"})
    emu.set_fault("status_unknown", status=status)
    emu.clear_log()
    res, took = register(device, "--force")

    assert res.returncode == EXIT_TEMPORARY, res.stderr
    gets = [e for e in device_requests(emu) if e["kind"] == "get"]
    assert 1 <= len(gets) <= 12, "%d polls in %.0f s" % (len(gets), took)
    assert took < 40


@pytest.mark.parametrize("fault,on,words", [
    ("oversize_body", "get", ("larger than",)),
    ("oversize_body", "put_challenge", ("larger than",)),
    # The body is still DPS's JSON: a wrong Content-Type alone is no reason to fail.
    ("wrong_content_type", "get", ()),
    ("truncated_json", "put_auth", ("not the JSON", "trying again in")),
    ("truncated_json", "get", ("operation status is not the JSON it should be",)),
    # A 401 that is not JSON at all says nothing about the enrollment (not exit 6).
    ("malformed_json", "put_challenge", ("challenge is not the JSON it should be",)),
    ("truncated_json", "put_challenge", ("challenge is not the JSON it should be",)),
    ("drop", "put_challenge", ("PUT register",)),
])
def test_hostile_answer_once_is_survived_and_named(device, fault, on, words):
    """One hostile answer (a 10 MiB body, HTML instead of JSON, a body cut short, a dropped
    connection) on one request: the agent names what was wrong, retries, and ends
    provisioned with at most one more registration's worth of requests."""
    emu = device.emu
    emu.clear_log()
    emu.set_fault(fault, count=1, on=on)

    res, _ = register(device, check=0)

    log = device_requests(emu)
    assert [e for e in log if e["faults"] == [fault]], "the fault never fired"
    assert len(log) <= 2 * 3, shape(log)
    for w in words:
        assert w.lower() in res.stderr.lower(), res.stderr
    assert device.hub_check() == 200


@pytest.mark.parametrize("fault,on,said", [
    ("truncated_json", "put_auth", "is not the JSON it should be"),
    ("drop", "put_challenge", "PUT register"),
])
def test_a_retry_is_one_line_saying_what_and_when(device, fault, on, said):
    emu = device.emu
    emu.set_fault(fault, count=1, on=on)

    res, _ = register(device, check=0)

    assert res.returncode == 0, res.stderr
    lines = [line for line in res.stderr.splitlines() if said in line]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("<4>") and "; trying again in " in lines[0], lines


@pytest.mark.parametrize("fault,settings,words", [
    ("auth_key_truncated", {}, ("challenge key", "malformed")),
    ("auth_key_corrupt", {}, ("ActivateCredential",)),
    ("auth_key_corrupt", {"offset": 318}, ("import",)),
], ids=["truncated", "corrupt-credential", "corrupt-duplicate"])
def test_corrupted_authentication_key_in_the_challenge_is_a_clear_error(device, fault,
                                                                       settings, words):
    emu = device.emu
    emu.clear_log()
    state = tpm_state(device)
    emu.set_fault(fault, count=1, on="put_challenge", **settings)

    res, _ = register(device)

    assert res.returncode not in (0, EXIT_TPM_UNUSABLE), res.stderr
    err = res.stderr.lower()
    assert all(w.lower() in err for w in words), res.stderr
    # Nothing after the bad challenge: no signed PUT with a key that is not there.
    assert shape(device_requests(emu)) == [("put_challenge", 401, False)]
    assert tpm_state(device) == state
    assert not os.path.exists(handoff_path(device))
    assert_no_leftovers(device.tpm)


@pytest.mark.parametrize("fault,settings", [
    ("auth_key_truncated", {}),
    ("auth_key_corrupt", {"offset": 318}),
], ids=["truncated", "corrupt-duplicate"])
def test_corrupted_hub_key_on_force_keeps_the_previous_identity(device, fault, settings):
    """The previous identity still works: the TPM's key, the record and the hand-off file are
    untouched and `sas` still signs with the previous hub key K2. (The emulator's hub has
    meanwhile taken the new K2 it issued, so its hub check says 401 to both; what the device
    still holds is checked against the old K2 itself.)"""
    provisioned(device)
    emu, tpm, regid = device.emu, device.tpm, device.registration_id
    k2_old = emu.keys(regid)[1]
    snapshot = tpm.snapshot()
    before = newest_record(tpm)
    name = key_name(tpm, IDENTITY, device.workdir)
    ident = device.identity()
    assert signed_with(sas(device), k2_old)
    emu.set_fault(fault, count=1, on="get", **settings)

    res, _ = register(device, "--force")

    assert res.returncode != 0
    assert "hub key" in res.stderr or "import" in res.stderr.lower(), res.stderr
    assert [e["faults"] for e in device_requests(emu)][-1] == [fault]
    assert emu.keys(regid)[1] != k2_old           # DPS did assign a new key, which was bad
    assert tpm.snapshot() == snapshot
    after = newest_record(tpm)
    # The record is the same assignment, marked as a registration that did not finish
    # (RECORD_FLAG_REGISTERING): DPS has moved on, so the next boot must ask again.
    assert after["flags"] == 1 and before["flags"] == 0
    assert {k: v for k, v in after.items() if k not in ("seq", "flags")} == \
        {k: v for k, v in before.items() if k not in ("seq", "flags")}
    assert key_name(tpm, IDENTITY, device.workdir) == name
    assert device.identity() == ident
    token = sas(device)
    assert signed_with(token, k2_old)
    assert json.loads(device.run("status", "--json", check=0).stdout)["state"]["state"] == \
        "assigned"
    assert_no_leftovers(tpm)

    # The next boot (no --force) registers again and the hub takes the new key.
    emu.clear_log()
    res, _ = register(device, check=0)
    assert "did not finish" in res.stderr
    assert device.hub_check() == 200
    assert newest_record(tpm)["flags"] == 0


def test_key_for_another_device_is_refused_by_activate_credential(device):
    emu = device.emu
    emu.clear_log()
    state = tpm_state(device)
    emu.set_fault("auth_key_wrong_device", count=1, on="put_challenge")

    res, _ = register(device)

    assert res.returncode != 0
    assert "ActivateCredential" in res.stderr
    assert shape(device_requests(emu)) == [("put_challenge", 401, False)]
    assert tpm_state(device) == state
    assert_no_leftovers(device.tpm)
    # The TPM is fine: the next attempt provisions.
    register(device, check=0)
    assert device.hub_check() == 200
    # ... so it must not have been reported as a TPM in failure mode.
    assert "failure mode" not in res.stderr, res.stderr
    assert res.returncode != EXIT_TPM_UNUSABLE, res.stderr


def test_disabled_enrollment_ends_with_exit_6_and_is_recorded(device):
    emu = device.emu
    emu.set_enrollment(device.registration_id, provisioningStatus="disabled")
    emu.clear_log()
    before = device.tpm.snapshot()

    res, _ = register(device)

    assert res.returncode == EXIT_DPS_REFUSED, res.stderr
    assert "disabled" in res.stderr
    log = device_requests(emu)
    assert log[-1]["kind"] == "get" and log[-1]["status"] == 200
    assert len([e for e in log if e["kind"] == "put_challenge"]) == 1     # not retried
    status = json.loads(device.run("status", "--json", check=0).stdout)["state"]
    assert status["state"] == "disabled"
    assert newest_record(device.tpm)["state"] == "disabled"
    assert device.tpm.snapshot()["persistent"] == before["persistent"]
    assert not os.path.exists(handoff_path(device))
    assert device.run("sas").returncode != 0
    assert_no_leftovers(device.tpm)


def test_failed_assignment_ends_with_exit_6_and_the_dps_error(device):
    emu = device.emu
    emu.clear_log()
    message = "Allocation webhook said no to this device"
    emu.set_fault("assign_failed", count=1, error_code=400299, error_message=message)

    res, _ = register(device)

    assert res.returncode == EXIT_DPS_REFUSED, res.stderr
    assert "400299" in res.stderr and message in res.stderr
    log = device_requests(emu)
    assert log[-1]["faults"] == ["assign_failed"]
    assert len([e for e in log if e["kind"] == "put_challenge"]) == 1
    rec = newest_record(device.tpm)
    assert rec["state"] == "failed" and rec["dps_error"] == 400299
    assert json.loads(device.run("status", "--json", check=0).stdout)["state"]["state"] == \
        "failed"
    assert IDENTITY not in device.tpm.persistent_handles()
    assert not os.path.exists(handoff_path(device))


# -- TLS ---------------------------------------------------------------------------------------

def hashed_dir(path, *certs):
    """A trust-store directory as update-ca-certificates leaves one: each certificate under
    its subject hash (openssl-rehash(1))."""
    os.makedirs(path, exist_ok=True)
    for pem in certs:
        h = subprocess.run(["openssl", "x509", "-hash", "-noout", "-in", pem], check=True,
                           capture_output=True, text=True).stdout.strip()
        shutil.copy(pem, os.path.join(path, h + ".0"))
    return path


def with_system_certs(path):
    """A prefix for Agent.run: the agent in a mount namespace of its own, where path is
    /etc/ssl/certs. The machine's own store is not touched."""
    return ("unshare", "--mount", "--propagation", "private", "sh", "-c",
            'mount --bind "$0" /etc/ssl/certs && exec "$@"', path)


def test_without_cabundle_the_systems_bundle_file_and_directory_are_both_trusted(device,
                                                                                tmp_path):
    """Without CABundle= libcurl's defaults stand: a CA appended to ca-certificates.crt by hand
    (behind a TLS-inspecting proxy, say) is trusted though /etc/ssl/certs is a hashed directory
    that lacks it, and one only in the directory is trusted too. Found by a review of a change
    that read the directory alone."""
    emu = device.emu
    other = os.path.join(emu.state_dir, "other-ca.pem")
    device.write_config(provisioning={"CABundle": None, "TimeoutSec": "30"})

    appended = hashed_dir(str(tmp_path / "appended"), other)
    with open(os.path.join(appended, "ca-certificates.crt"), "w") as f:
        f.write(open(other).read() + open(emu.ca).read())
    res = device.run("register", prefix=with_system_certs(appended))
    assert res.returncode == 0, res.stderr

    device.run("reset", "--yes", check=0)
    only_hashed = hashed_dir(str(tmp_path / "hashed"), emu.ca)
    shutil.copy(other, os.path.join(only_hashed, "ca-certificates.crt"))
    res = device.run("register", prefix=with_system_certs(only_hashed))
    assert res.returncode == 0, res.stderr
    assert device.hub_check() == 200


def test_a_cabundle_that_cannot_work_is_refused_before_any_request(device, tmp_path):
    """A directory of PEM files not named by subject hash, a missing path, a directory that
    cannot be searched: each named with its real reason and the fix, exit 2, no request."""
    emu = device.emu
    plain = tmp_path / "plain"
    plain.mkdir()
    shutil.copy(emu.ca, str(plain / "emulator.pem"))
    for bundle, said in ((str(plain), "run 'openssl rehash %s'" % plain),
                         (str(tmp_path / "absent.pem"), "No such file or directory")):
        device.write_config(provisioning={"CABundle": bundle})
        res = device.run("register")
        assert res.returncode == EXIT_USAGE, res.stderr
        assert said in res.stderr and "Invalid argument" not in res.stderr, res.stderr
        res = device.run("enroll", "--list=/dev/null", "--ca-bundle=" + bundle,
                         "--endpoint=" + emu.url, "--connection-string-file=/dev/null")
        assert res.returncode == EXIT_USAGE, res.stderr
    assert device_requests(emu) == []


@pytest.mark.parametrize("kind", ["file", "directory"])
def test_b27_cabundle_is_the_whole_trust_store_not_added_to_the_systems(device, tmp_path, kind):
    """CABundle= replaces the system's store, as tpm-provision.conf(5) says: a device that
    pins its DPS roots (field case B27) must not also trust whatever the system holds. The
    system's store here holds the emulator's CA; CABundle= names another CA only."""
    emu = device.emu
    other = os.path.join(emu.state_dir, "other-ca.pem")
    store = hashed_dir(str(tmp_path / "system"), emu.ca)
    pinned = other if kind == "file" else hashed_dir(str(tmp_path / "pinned"), other)
    device.write_config(provisioning={"CABundle": pinned, "TimeoutSec": "30"})

    res = device.run("register", prefix=with_system_certs(store))

    assert res.returncode == EXIT_USAGE, res.stderr
    assert "not trusted" in res.stderr and "trust store now: %s" % pinned in res.stderr, \
        res.stderr
    assert device_requests(emu) == []

    # The same directory with the emulator's CA in it is a store that works.
    if kind == "directory":
        hashed_dir(pinned, emu.ca)
        res = device.run("register", prefix=with_system_certs(store))
        assert res.returncode == 0, res.stderr


@pytest.mark.parametrize("bundle", ["other-ca", "system"])
def test_server_certificate_from_an_unknown_ca_is_refused_at_once(device, bundle):
    emu = device.emu
    path = os.path.join(emu.state_dir, "other-ca.pem") if bundle == "other-ca" \
        else "/etc/ssl/certs/ca-certificates.crt"
    if not os.path.exists(path):
        pytest.skip("no " + path)
    device.write_config(provisioning={"CABundle": path, "TimeoutSec": "60"})
    emu.clear_log()
    state = tpm_state(device)

    res, elapsed = register(device)

    assert res.returncode == EXIT_USAGE, res.stderr
    assert "not trusted" in res.stderr and "CABundle" in res.stderr, res.stderr
    assert "trying again" not in res.stderr
    assert elapsed < 5
    assert device_requests(emu) == []          # no HTTP request got through the handshake
    assert tpm_state(device) == state


class Relay:
    """A plain TCP relay from 127.0.0.2:<port> to the emulator: the same server and
    certificate, reached under a name (127.0.0.2) that the certificate does not carry."""

    def __init__(self, port):
        self.target = ("127.0.0.1", port)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.2", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stop.is_set():
            try:
                client, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            client.settimeout(30)
            upstream = socket.create_connection(self.target, timeout=30)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.stop.set()
        self.thread.join(2)
        self.sock.close()


def test_wrong_host_name_is_refused(device):
    emu = device.emu
    relay = Relay(emu.port)
    try:
        # Control: through the relay, TLS to a name the certificate has works.
        ctx = ssl.create_default_context(cafile=emu.ca)
        with socket.create_connection(("127.0.0.2", relay.port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"GET /__emulator/health HTTP/1.1\r\nHost: localhost\r\n"
                            b"Connection: close\r\n\r\n")
                assert tls.recv(64).startswith(b"HTTP/1.1 200")
        device.write_config(provisioning={
            "GlobalEndpoint": "https://127.0.0.2:%d" % relay.port, "TimeoutSec": "60"})
        emu.clear_log()
        state = tpm_state(device)

        res, elapsed = register(device)
    finally:
        relay.close()

    assert res.returncode == EXIT_USAGE, res.stderr
    assert "127.0.0.2" in res.stderr and "not trusted" in res.stderr, res.stderr
    assert "trying again" not in res.stderr and elapsed < 5
    assert device_requests(emu) == []
    assert tpm_state(device) == state


# -- the clock ---------------------------------------------------------------------------------

CLOCK_SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>
static long offset(void) {
    const char *s = getenv("TEST_CLOCK_OFFSET");
    return s ? atol(s) : 0;
}
int clock_gettime(clockid_t c, struct timespec *ts) {
    static int (*real)(clockid_t, struct timespec *);
    if (!real)
        real = (int (*)(clockid_t, struct timespec *))dlsym(RTLD_NEXT, "clock_gettime");
    int r = real(c, ts);
    if (r == 0 && (c == CLOCK_REALTIME || c == CLOCK_REALTIME_COARSE))
        ts->tv_sec += offset();
    return r;
}
time_t time(time_t *t) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (t)
        *t = ts.tv_sec;
    return ts.tv_sec;
}
int gettimeofday(struct timeval *tv, void *tz) {
    struct timespec ts;
    (void)tz;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (tv) {
        tv->tv_sec = ts.tv_sec;
        tv->tv_usec = ts.tv_nsec / 1000;
    }
    return 0;
}
"""


@pytest.fixture(scope="module")
def clock_shim(tmp_path_factory):
    """An LD_PRELOAD library that moves the wall clock (not the monotonic one) by
    $TEST_CLOCK_OFFSET seconds: a libfaketime in 30 lines, so no package is needed."""
    d = tmp_path_factory.mktemp("clock")
    src, lib = d / "shim.c", d / "shim.so"
    src.write_text(CLOCK_SHIM)
    subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", str(lib), str(src), "-ldl"],
                   check=True)
    out = subprocess.run(["date", "+%s"], env=dict(os.environ, LD_PRELOAD=str(lib),
                                                   TEST_CLOCK_OFFSET="-1000000"),
                         capture_output=True, text=True, check=True).stdout
    assert abs(int(out) + 1000000 - time.time()) < 60, "the clock shim does not work"
    return str(lib)


def cert_not_before(path):
    from cryptography import x509
    with open(path, "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    nb = getattr(cert, "not_valid_before_utc", None)
    return (nb or cert.not_valid_before.replace(tzinfo=datetime.timezone.utc)).timestamp()


def test_clock_years_behind_still_provisions_and_sas_refuses_to_sign(device, clock_shim):
    emu = device.emu
    device.write_config(provisioning={"TimeoutSec": "15"})
    emu.clear_log()
    behind = {"LD_PRELOAD": clock_shim, "TEST_CLOCK_OFFSET": str(-5 * 365 * 86400)}

    res, _ = register(device, env=behind)

    if res.returncode != 0 and "not valid at the current time" in res.stderr:
        # The agent checks the server certificate at its build time when the clock is
        # earlier; the emulator's certificate dates from 400 days ago. A build older than that
        # cannot pass, and that is the environment, not the agent: sas refuses to sign only
        # below the build time, which tells where it is.
        at_cert = int(cert_not_before(os.path.join(emu.state_dir, "server.pem")) + 60)
        probe = device.run("sas", env={"LD_PRELOAD": clock_shim,
                                       "TEST_CLOCK_OFFSET": str(at_cert - int(time.time()))})
        if probe.returncode != EXIT_TEMPORARY:
            pytest.skip("the agent binary was built before the emulator's certificate was "
                        "issued (400 days ago): rebuild it to test the clock floor")
    assert res.returncode == 0, res.stderr
    assert "clock" in res.stderr                    # it says what it works around
    log = device_requests(emu)
    # The signed requests passed the emulator's expiry check (5 min skew): the token's expiry
    # came from DPS's Date, not from a clock five years behind. No 401 after the challenge.
    assert shape(log[:2]) == [("put_challenge", 401, False), ("put_auth", 202, True)]
    assert all(e["status"] != 401 for e in log[1:]), shape(log)
    assert log[-1]["status"] == 200

    wrong = device.run("sas", env=behind)
    assert wrong.returncode == EXIT_TEMPORARY, wrong.stderr
    assert wrong.stdout.strip() == ""
    assert "clock" in wrong.stderr
    assert device.hub_check() == 200                # with the right clock
    assert_no_leftovers(device.tpm)


# -- 5. reset --------------------------------------------------------------------------------

def test_reset_needs_yes_then_removes_only_what_register_made(device):
    provisioned(device)
    tpm = device.tpm
    # Someone else's key at another persistent handle.
    ctx = os.path.join(device.workdir, "other.ctx")
    tpm.tpm2("createprimary", "-C", "o", "-G", "ecc", "-c", ctx)
    tpm.tpm2("evictcontrol", "-C", "o", "-c", ctx, "0x81000200")
    tpm.tpm2("flushcontext", "-t")
    other_name = key_name(tpm, 0x81000200, device.workdir)
    ek_srk = [key_name(tpm, h, device.workdir) for h in (EK, SRK)]
    state = tpm_state(device)

    res = device.run("reset")
    assert res.returncode == EXIT_USAGE
    assert "--yes" in res.stderr
    assert tpm_state(device) == state
    assert os.path.exists(handoff_path(device))

    device.run("reset", "--yes", check=0)

    after = tpm.snapshot()
    assert after["persistent"] == [h for h in state["snapshot"]["persistent"] if h != IDENTITY]
    assert after["nv"] == state["snapshot"]["nv"]
    assert key_name(tpm, 0x81000200, device.workdir) == other_name
    assert [key_name(tpm, h, device.workdir) for h in (EK, SRK)] == ek_srk
    rec = newest_record(tpm)
    assert rec["state"] == "owned" and rec["hub"] == "" and rec["device_id"] == ""
    assert not os.path.exists(handoff_path(device))
    assert device.run("sas").returncode != 0
    assert_no_leftovers(tpm)

    device.emu.clear_log()
    register(device, check=0)
    assert [e["kind"] for e in device_requests(device.emu)][:2] == ["put_challenge", "put_auth"]
    assert device.hub_check() == 200
    assert key_name(tpm, 0x81000200, device.workdir) == other_name


def test_reset_of_a_device_never_registered_changes_nothing(device):
    tpm = device.tpm
    state = tpm_state(device)

    res = device.run("reset", "--yes", check=0)

    assert "The device is not registered: nothing to reset." in res.stderr, res.stderr
    assert tpm_state(device) == state
    assert not os.path.exists(handoff_path(device))
    assert_no_leftovers(tpm)


def test_reset_leaves_a_key_that_replaced_the_identity_key(device):
    """Someone evicted the identity key and persisted their own at the handle after
    registration: reset returns the record to unprovisioned and leaves their key."""
    provisioned(device)
    tpm = device.tpm
    tpm.tpm2("evictcontrol", "-C", "o", "-c", "0x%08x" % IDENTITY)
    ctx = os.path.join(device.workdir, "theirs.ctx")
    tpm.tpm2("createprimary", "-C", "o", "-G", "ecc", "-c", ctx)
    tpm.tpm2("evictcontrol", "-C", "o", "-c", ctx, "0x%08x" % IDENTITY)
    tpm.tpm2("flushcontext", "-t")
    theirs = key_name(tpm, IDENTITY, device.workdir)

    res = device.run("reset", "--yes", check=0)

    assert "did not create; left alone" in res.stderr, res.stderr
    assert key_name(tpm, IDENTITY, device.workdir) == theirs
    assert newest_record(tpm)["state"] == "owned"
    assert_no_leftovers(tpm)


def test_sas_for_another_resource_and_without_the_identity_key(device):
    provisioned(device)
    ident = device.identity()
    resource = "%s/devices/%s/modules/telemetry" % (ident["assignedHub"], ident["deviceId"])

    token = device.run("sas", "--resource=" + resource, "--expiry=600", check=0).stdout.strip()

    fields = dict(p.split("=", 1) for p in token[len("SharedAccessSignature "):].split("&"))
    assert urllib.parse.unquote(fields["sr"]) == resource
    assert 590 <= int(fields["se"]) - time.time() <= 610
    assert len(base64.b64decode(urllib.parse.unquote(fields["sig"]))) == 32

    device.tpm.tpm2("evictcontrol", "-C", "o", "-c", "0x%08x" % IDENTITY)
    res = device.run("sas")
    assert res.returncode != 0 and res.stdout == ""
    assert "register --force" in res.stderr


def test_sas_lifetime_comes_from_the_configuration_and_a_useless_expiry_is_refused(device):
    provisioned(device)
    device.write_config(provisioning={"SasTokenLifetimeSec": "120"})

    token = device.run("sas", check=0).stdout.strip()
    se = int(dict(p.split("=", 1) for p in token.split(" ", 1)[1].split("&"))["se"])
    assert 110 <= se - time.time() <= 130
    assert device.hub_check(token) == 200

    for expiry in ("@1000", "0", "59", "@%d" % int(time.time() + 10)):
        res = device.run("sas", "--expiry=" + expiry)
        assert res.returncode == EXIT_USAGE, (expiry, res.stderr)
        assert res.stdout == "" and "--expiry" in res.stderr


def test_missing_ca_bundle_is_a_configuration_error_before_any_request(device):
    missing = os.path.join(device.workdir, "no-such-bundle.pem")
    device.write_config(provisioning={"CABundle": missing})
    device.emu.clear_log()

    res, _ = register(device)

    assert res.returncode == EXIT_USAGE, res.stderr
    assert "Cannot use the CA bundle %s (CABundle=, --ca-bundle=): No such file" % missing \
        in res.stderr, res.stderr
    assert "not trusted" not in res.stderr
    assert device.emu.log() == []


# -- 6. a foreign key at the identity handle -------------------------------------------------

def test_foreign_key_at_the_identity_handle_is_left_alone(device):
    emu, tpm = device.emu, device.tpm
    ctx = os.path.join(device.workdir, "foreign.ctx")
    tpm.tpm2("createprimary", "-C", "o", "-G", "ecc", "-c", ctx)
    tpm.tpm2("evictcontrol", "-C", "o", "-c", ctx, "0x%08x" % IDENTITY)
    tpm.tpm2("flushcontext", "-t")
    foreign = key_name(tpm, IDENTITY, device.workdir)
    emu.clear_log()
    state = tpm_state(device)

    res, _ = register(device)

    assert res.returncode == EXIT_TPM_REFUSED, res.stderr
    assert "IdentityHandle=" in res.stderr and "0x81000100" in res.stderr
    assert emu.log() == []
    assert tpm_state(device) == state

    device.write_config(tpm={"IdentityHandle": "0x81000101"})
    register(device, check=0)

    assert key_name(tpm, IDENTITY, device.workdir) == foreign
    assert 0x81000101 in tpm.persistent_handles()
    assert int(device.identity()["identityHandle"], 16) == 0x81000101
    rec = newest_record(tpm)
    assert rec["identity_handle"] == 0x81000101
    assert rec["identity_name"] == key_name(tpm, 0x81000101, device.workdir)
    assert device.hub_check() == 200
    assert_no_leftovers(tpm)


def test_a_changed_identity_handle_moves_the_identity_and_leaves_no_key_behind(device):
    """IdentityHandle= changed on a provisioned device (say, another tool needs the old
    handle): the next run registers again, the new key goes to the new handle, and the
    agent's own key at the old handle is removed, not left to clutter the TPM."""
    provisioned(device)
    tpm = device.tpm
    others = [h for h in tpm.persistent_handles() if h != IDENTITY]
    device.write_config(tpm={"IdentityHandle": "0x81000101"})

    res, _ = register(device, check=0)

    assert "IdentityHandle= changed from 0x81000100 to 0x81000101" in res.stderr, res.stderr
    assert sorted(tpm.persistent_handles()) == sorted(others + [0x81000101])
    assert newest_record(tpm)["identity_handle"] == 0x81000101
    assert int(device.identity()["identityHandle"], 16) == 0x81000101
    assert device.hub_check() == 200
    res, _ = register(device, check=0)
    assert "No request sent" in res.stderr
    assert_no_leftovers(tpm)


# -- 7. registration ID override -------------------------------------------------------------

def test_registration_id_override(device):
    emu = device.emu
    ek = base64.b64decode(device.ek()["endorsementKey"])
    custom = "line-7_dev.01:a"
    emu.create_enrollment(ek, regid=custom)
    device.write_config(provisioning={"RegistrationId": custom})
    emu.clear_log()

    register(device, check=0)

    log = device_requests(emu)
    assert log and all(
        urllib.parse.unquote(e["path"]).startswith("/%s/registrations/%s/" % (emu.id_scope,
                                                                              custom))
        for e in log), [e["path"] for e in log]
    assert emu.registration(custom)["assignments"] == 1
    assert device.identity()["registrationId"] == custom
    assert newest_record(device.tpm)["registration_id"] == custom
    assert device.hub_check() == 200


def test_invalid_registration_id_is_refused_before_any_request(device):
    device.write_config(provisioning={"RegistrationId": "Device_01"})
    device.emu.clear_log()
    state = tpm_state(device)

    res, _ = register(device)

    assert res.returncode == EXIT_USAGE, res.stderr
    assert "Device_01" in res.stderr
    assert device.emu.log() == []
    assert tpm_state(device) == state


# -- 8. payload ------------------------------------------------------------------------------

def emulator_operations(emu, regid):
    """The operations the emulator stored for a registration (README: State directory)."""
    path = os.path.join(emu.state_dir, "registrations",
                        "r-" + urllib.parse.quote(regid, safe="-_.:") + ".json")
    with open(path) as f:
        return json.load(f)["operations"]


def test_payload_file_is_sent_as_json(device):
    payload = {"modelId": "dtmi:example:thermostat;1", "site": "B7", "slots": [1, 2, 3],
               "nested": {"ok": True, "none": None}}
    path = os.path.join(device.workdir, "payload.json")
    with open(path, "w") as f:
        json.dump(payload, f)
    device.write_config(provisioning={"PayloadFile": path})

    register(device, check=0)

    ops = list(emulator_operations(device.emu, device.registration_id).values())
    assert len(ops) == 1
    assert ops[0]["hasPayload"] is True
    assert ops[0]["payload"] == payload           # a JSON value, not a string
    assert device.hub_check() == 200


def test_payload_file_that_is_not_json_is_refused_before_any_request(device):
    path = os.path.join(device.workdir, "payload.json")
    with open(path, "w") as f:
        f.write('{"modelId": "dtmi:x;1",')
    device.write_config(provisioning={"PayloadFile": path})
    device.emu.clear_log()
    state = tpm_state(device)

    res, _ = register(device)

    assert res.returncode == EXIT_USAGE, res.stderr
    assert "payload.json" in res.stderr and "JSON" in res.stderr
    assert device.emu.log() == []
    assert tpm_state(device) == state


# -- 9. configuration ------------------------------------------------------------------------

def test_missing_id_scope_is_a_configuration_error(device):
    device.write_config(provisioning={"IdScope": None})
    device.emu.clear_log()
    state = tpm_state(device)

    res, _ = register(device)

    assert res.returncode == EXIT_USAGE, res.stderr
    assert "IdScope" in res.stderr
    assert device.emu.log() == []
    assert tpm_state(device) == state


# -- 10. the overall deadline ----------------------------------------------------------------

def test_deadline_ends_retries_against_a_dps_that_always_answers_503(device):
    device.write_config(provisioning={"TimeoutSec": "5"})
    device.emu.set_fault("put_503", retry_after="1")
    device.emu.clear_log()

    res, elapsed = register(device)

    assert res.returncode == EXIT_TEMPORARY, res.stderr
    assert "TimeoutSec" in res.stderr
    assert 3 <= elapsed <= 10, elapsed
    log = device_requests(device.emu)
    assert len(log) >= 2 and all(e["status"] == 503 for e in log)
    assert IDENTITY not in device.tpm.persistent_handles()
    assert_no_leftovers(device.tpm)


def test_deadline_also_bounds_a_request_that_hangs(device):
    """TimeoutSec is 'the time limit of a whole registration' (tpm-provision.conf(5))."""
    device.write_config(provisioning={"TimeoutSec": "3"})      # RequestTimeoutSec: 30
    device.emu.set_fault("delay", count=1, on="put_challenge", seconds=8)

    res, elapsed = register(device)

    assert res.returncode == EXIT_TEMPORARY, res.stderr
    assert elapsed < 6.5, elapsed


# -- 6. a state record damaged beyond its two slots --------------------------------------------

def damage_both_slots(tpm):
    nv = nv_read(tpm, STATE_INDEX)
    for off in (20, 512 + 20):
        if nv[off - 20:off - 16] != b"TPPS":
            continue
        tpm.tpm2("nvwrite", "0x%08x" % STATE_INDEX, "-C", "o", "--offset", str(off), "-i", "-",
                 input=bytes([nv[off] ^ 0x01]))


def test_both_record_slots_damaged_the_device_registers_again_over_its_own_key(device):
    """Both slots of the state record fail their checksum (outside interference: a power
    cut cannot do it). `own` writes a fresh record; the Name of the agent's own key at the
    identity handle is lost with the old one. The DPS identity key there is taken for the
    agent's own, so `register` re-registers and replaces it instead of stopping for ever
    with "a key tpm-provision did not create"."""
    provisioned(device)
    tpm = device.tpm
    old_name = key_name(tpm, IDENTITY, device.workdir)
    handles = tpm.persistent_handles()
    damage_both_slots(tpm)
    assert json.loads(device.run("status", "--json", check=0).stdout)["state"]["record"] \
        == "damaged"

    res = device.run("own", check=0)
    assert "damaged" in res.stderr
    res, _ = register(device, check=0)

    assert "rebuilt after damage" in res.stderr
    assert tpm.persistent_handles() == handles
    assert key_name(tpm, IDENTITY, device.workdir) != old_name
    assert newest_record(tpm)["state"] == "assigned"
    assert device.hub_check() == 200
    res, _ = register(device, check=0)
    assert "No request sent" in res.stderr
    assert_no_leftovers(tpm)


def test_after_damage_a_key_that_is_not_a_dps_key_is_still_someone_elses(device):
    """The same damage with someone else's key (an ECC primary, not a DPS HMAC key) at
    the identity handle: it is left alone and register stops with exit 4."""
    tpm = device.tpm
    ctx = os.path.join(device.workdir, "other.ctx")
    tpm.tpm2("createprimary", "-C", "o", "-G", "ecc", "-c", ctx)
    tpm.tpm2("evictcontrol", "-C", "o", "-c", ctx, "0x%08x" % IDENTITY)
    tpm.tpm2("flushcontext", "-t")
    other = key_name(tpm, IDENTITY, device.workdir)
    damage_both_slots(tpm)
    device.run("own", check=0)

    res, _ = register(device, check=EXIT_TPM_REFUSED)

    assert "did not create" in res.stderr
    assert key_name(tpm, IDENTITY, device.workdir) == other
    assert device_requests(device.emu) == []
