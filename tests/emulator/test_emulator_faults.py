"""Each fault setting, shown to produce what it promises (field cases B23, B25, B26, B28,
B29, B31 name the scenarios the agent must survive)."""
import base64
import email.utils
import http.client
import json
import os
import socket
import ssl
import subprocess
import time

import pytest

import client
from dps_testing import split_fields


def fired(emu, kind=None):
    return [(e["kind"], e["status"], e["faults"]) for e in emu.log()
            if kind is None or e["kind"] == kind]


def test_b23_throttled_put_and_get_with_retry_after(emu, make_device):
    """B23 repro: PUT -> 429 Retry-After 3 (twice), PUT -> 202, GET -> 429 Retry-After 2,
    GET -> 200 assigned.  The challenge PUT is left alone here (on=put_auth)."""
    dev = make_device()
    emu.set_faults({"put_429": {"count": 2, "retry_after": 3, "on": "put_auth"},
                    "get_429": {"count": 1, "retry_after": 2}, "polls": 0})
    assert dev.challenge().status == 401
    auth = dev.auth()
    for _ in range(2):
        r = dev.put_auth(auth)
        assert r.status == 429 and r.headers["retry-after"] == "3"
        assert r.json()["errorCode"] // 1000 == 429
    r = dev.put_auth(auth)
    assert r.status == 202
    op_id = r.json()["operationId"]
    r = dev.poll(op_id, auth)
    assert r.status == 429 and r.headers["retry-after"] == "2"
    r = dev.poll(op_id, auth)
    assert r.status == 200 and r.json()["status"] == "assigned"
    assert emu.get_faults()["put_429"]["count"] == 0
    assert [f for _, _, f in fired(emu) if f] == [["put_429"], ["put_429"], ["get_429"]]


def test_put_503_with_http_date_retry_after(emu, make_device):
    dev = make_device()
    emu.set_fault("put_503", 1, retry_after="date:120")
    r = dev.challenge()
    assert r.status == 503
    when = email.utils.parsedate_to_datetime(r.headers["retry-after"]).timestamp()
    date = email.utils.parsedate_to_datetime(r.headers["date"]).timestamp()
    assert 118 <= when - date <= 122
    assert dev.challenge().status == 401


def test_get_503_without_retry_after(emu, make_device):
    dev = make_device()
    dev.challenge()
    auth = dev.auth()
    op_id = dev.put_auth(auth).json()["operationId"]
    emu.set_fault("get_503", "always", retry_after="none")
    for _ in range(3):
        r = dev.poll(op_id, auth)
        assert r.status == 503 and "retry-after" not in r.headers
    emu.clear_faults("get_503")
    assert dev.poll(op_id, auth).status == 202


def test_put_429_hits_the_challenge_by_default(emu, make_device):
    dev = make_device()
    emu.set_fault("put_429", 1)
    assert dev.challenge().status == 429
    assert dev.challenge().status == 401


def test_b28_delay_and_a_server_that_does_not_answer_in_time(emu, make_device):
    dev = make_device()
    emu.set_fault("delay", 1, seconds=1)
    t = time.monotonic()
    assert dev.challenge().status == 401
    assert time.monotonic() - t >= 1.0
    # B28: TCP accepted, no answer within the client's timeout
    emu.set_fault("delay", 1, seconds=3, on="put_challenge")
    with pytest.raises((socket.timeout, TimeoutError)):
        emu.request("PUT", emu.register_path(dev.regid), dev.body(), timeout=0.5)
    assert dev.challenge().status == 401
    first = [e for e in emu.log() if e["kind"] == "put_challenge"][0]
    assert first["faults"] == ["delay"] and first["duration_ms"] >= 1000


DISCONNECT = (http.client.RemoteDisconnected, http.client.IncompleteRead, ssl.SSLError,
              ConnectionError)


def test_drop_closes_without_answer_at_the_chosen_request_kind(emu, make_device):
    dev = make_device()
    emu.set_fault("drop", 1, on="get")
    conn = emu.connection()
    try:
        assert dev.challenge(conn=conn).status == 401
        auth = dev.auth()
        op_id = dev.put_auth(auth, conn=conn).json()["operationId"]
        with pytest.raises(DISCONNECT):
            dev.poll(op_id, auth, conn=conn)
    finally:
        conn.close()
    assert dev.poll(op_id, auth).status == 202
    log = fired(emu)
    assert ("get", 0, ["drop"]) in log


def test_status_unknown_drops_or_replaces_the_status(emu, make_device):
    dev = make_device()
    assert dev.challenge().status == 401
    auth = dev.auth()
    op_id = dev.put_auth(auth).json()["operationId"]
    emu.set_fault("status_unknown", 1)
    r = dev.poll(op_id, auth)
    assert r.status in (200, 202) and "status" not in r.json() and r.json()["operationId"]
    assert "status" not in r.json().get("registrationState", {})
    emu.set_fault("status_unknown", 1, status="Wobbling")
    assert dev.poll(op_id, auth).json()["status"] == "Wobbling"
    assert dev.poll(op_id, auth).json()["status"] in ("assigning", "assigned")


def test_malformed_json(emu, make_device):
    dev = make_device()
    emu.set_fault("malformed_json", 1)
    r = dev.challenge()
    assert r.status == 401
    assert r.headers["content-type"].startswith("application/json")
    with pytest.raises(ValueError):
        json.loads(r.body)
    assert dev.challenge().json()["keyName"] == "registration"


def test_truncated_json_body_and_wire(emu, make_device):
    dev = make_device()
    emu.set_fault("truncated_json", 1)
    r = dev.challenge()
    assert r.status == 401 and int(r.headers["content-length"]) == len(r.body)
    assert r.body.startswith(b'{"authenticationKey": "')
    with pytest.raises(ValueError):
        json.loads(r.body)
    emu.set_fault("truncated_json", 1, mode="wire")
    with pytest.raises(DISCONNECT):
        dev.challenge()
    assert dev.challenge().status == 401


def test_auth_key_truncated_in_challenge_and_in_assigned_response(emu, make_device):
    dev = make_device()
    emu.set_fault("auth_key_truncated", 1, on="put_challenge")
    key = base64.b64decode(dev.challenge().json()["authenticationKey"])
    with pytest.raises(ValueError):
        split_fields(key)
    assert len(key) < 500
    emu.set_fault("auth_key_truncated", 1, on="get")
    state = dev.register().json()["registrationState"]
    with pytest.raises(ValueError):
        split_fields(base64.b64decode(state["tpm"]["authenticationKey"]))
    # the challenge in register() was intact
    assert fired(emu, "put_challenge")[-1][2] == []


def test_auth_key_corrupt_and_wrong_device_keep_the_shape(emu, make_device):
    """Field sizes stay those of §2.1; test_emulator_tpm_blob.py shows a TPM rejects them."""
    dev = make_device()
    for fault in ("auth_key_corrupt", "auth_key_wrong_device"):
        emu.set_fault(fault, 1)
        key = base64.b64decode(dev.challenge().json()["authenticationKey"])
        assert [len(f) for f in split_fields(key)] == [54, 258, 144, 258, 82, 152]
        assert fired(emu)[-1][2] == [fault]


def test_missing_keyname(emu, make_device):
    dev = make_device()
    emu.set_fault("missing_keyname", 1)
    body = dev.challenge().json()
    assert "keyName" not in body and "authenticationKey" in body
    assert dev.challenge().json()["keyName"] == "registration"


def test_wrong_content_type(emu, make_device):
    dev = make_device()
    emu.set_fault("wrong_content_type", 1)
    assert dev.challenge().headers["content-type"] == "text/html; charset=utf-8"
    emu.set_fault("wrong_content_type", 1, value="none")
    assert "content-type" not in dev.challenge().headers
    assert dev.challenge().headers["content-type"] == "application/json; charset=utf-8"


def test_oversize_body(emu, make_device):
    dev = make_device()
    emu.set_fault("oversize_body", 1)
    r = dev.challenge()
    assert r.status == 401
    assert len(r.body) >= 10 * 1024 * 1024
    assert int(r.headers["content-length"]) == len(r.body)
    emu.set_fault("oversize_body", 1, bytes=2000)
    assert 2000 <= len(dev.challenge().body) < 5000


def test_b25_unsupported_api_version_for_any_version(emu, make_device):
    dev = make_device()
    emu.set_fault("unsupported_api_version", 2)
    for version in ("2021-06-01", "2019-03-31"):
        r = dev.challenge(api_version=version)
        assert r.status == 400
        assert r.json()["errorCode"] == 400004
        assert r.json()["message"] == "Unsupported API version %s." % version
    assert dev.challenge().status == 401


def test_assign_failed(emu, make_device):
    dev = make_device()
    emu.set_fault("assign_failed", 1)
    r = dev.register().json()
    assert r["status"] == "failed"
    assert r["registrationState"]["errorCode"] == 400209
    assert r["registrationState"]["errorMessage"]
    assert "tpm" not in r["registrationState"]
    emu.set_fault("assign_failed", 1, error_code=500000, error_message="boom")
    r = dev.register().json()["registrationState"]
    assert (r["errorCode"], r["errorMessage"]) == (500000, "boom")
    assert dev.register().json()["status"] == "assigned"


def test_operation_lost(emu, make_device):
    """A poll answered 404 404203 as if DPS had lost the operation; the next poll is
    answered as usual."""
    dev = make_device()
    emu.set_faults({"operation_lost": 1, "polls": 0})
    assert dev.challenge().status == 401
    auth = dev.auth()
    op_id = dev.put_auth(auth).json()["operationId"]
    lost = dev.poll(op_id, auth)
    assert lost.status == 404
    assert lost.json()["errorCode"] == 404203
    assert fired(emu, "get")[-1][2] == ["operation_lost"]
    assert dev.poll(op_id, auth).json()["status"] == "assigned"


def test_assignment_rewritten(emu, make_device):
    dev = make_device()
    emu.set_faults({"assignment_rewritten": {"count": 1, "device_id": "a/b&c"}, "polls": 0})
    state = dev.register().json()["registrationState"]
    assert state["deviceId"] == "a/b&c"
    assert state["assignedHub"] == emu.hub_host and state["tpm"]["authenticationKey"]
    assert dev.register().json()["registrationState"]["deviceId"] != "a/b&c"


def test_b29_hub_401(emu, make_device):
    dev = make_device()
    dev.register()
    k2 = emu.keys(dev.regid)[1]
    se = str(int(time.time()) + 60)
    sr = client.quote(emu.hub_resource(dev.regid), safe="")
    emu.set_fault("hub_401", 1)
    assert emu.hub_check(dev.regid, client.sign(k2, sr, se), se).status == 401
    assert emu.hub_check(dev.regid, client.sign(k2, sr, se), se).status == 200


def test_rate_limit_across_devices(emu, make_device):
    devices = [make_device() for _ in range(6)]
    emu.set_fault("rate_limit", 3, retry_after=2)
    conn = emu.connection()
    try:
        answers = [d.challenge(conn=conn) for d in devices]
    finally:
        conn.close()
    statuses = [r.status for r in answers]
    assert statuses.count(401) == 3 and statuses.count(429) == 3, statuses
    assert all(r.headers["retry-after"] == "2" for r in answers if r.status == 429)
    time.sleep(1.1)
    assert devices[5].challenge().status == 401
    # the service API is not rate limited (on=put by default)
    assert emu.service("GET", "/enrollments/" + devices[0].regid).status == 200


def test_b26_clock_offset_moves_date_and_sas_expiry(emu, make_device):
    dev = make_device()
    dev.challenge()
    emu.set_clock_offset(3600)
    r = dev.challenge()
    date = email.utils.parsedate_to_datetime(r.headers["date"]).timestamp()
    assert 3590 < date - time.time() < 3610
    # a token good for 10 minutes by the device's clock is expired by the server's
    r = dev.put_auth(dev.auth(ttl=600))
    assert r.status == 401 and r.json()["errorCode"] == 401002
    # a device whose clock is an hour behind builds a token the server accepts
    assert dev.put_auth(dev.auth(ttl=600, now=time.time() + 3600)).status == 202
    emu.set_fault("clock_offset", -7200)
    assert emu.admin("GET", "clock")["offset"] == -7200
    emu.clear_faults()
    assert abs(emu.admin("GET", "clock")["offset"]) == 0
    assert dev.put_auth(dev.auth(ttl=600)).status == 202


def test_polls_setting(emu, make_device):
    dev = make_device()
    emu.set_fault("polls", 3)
    dev.challenge()
    auth = dev.auth()
    op_id = dev.put_auth(auth).json()["operationId"]
    assert [dev.poll(op_id, auth).status for _ in range(4)] == [202, 202, 202, 200]
    emu.set_fault("polls", 0)
    dev.challenge()
    auth = dev.auth()
    op_id = dev.put_auth(auth).json()["operationId"]
    assert dev.poll(op_id, auth).status == 200


def tls_connect(emu, cafile, timeout=5):
    ctx = ssl.create_default_context(cafile=cafile)
    with socket.create_connection(("127.0.0.1", emu.port), timeout=timeout) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            return s.version()


def test_b31_tls_wrong_ca(emu):
    emu.set_fault("tls_wrong_ca", 1)
    with pytest.raises(ssl.SSLCertVerificationError):
        tls_connect(emu, emu.ca)
    emu.set_fault("tls_wrong_ca", 1)
    assert tls_connect(emu, os.path.join(emu.state_dir, "other-ca.pem"))
    assert tls_connect(emu, emu.ca)


def test_b31_tls_plain_http(emu):
    emu.set_fault("tls_plain_http", 1)
    with pytest.raises(ssl.SSLError):
        tls_connect(emu, emu.ca)
    emu.set_fault("tls_plain_http", 1)
    with socket.create_connection(("127.0.0.1", emu.port), timeout=5) as raw:
        raw.sendall(b"\x16\x03\x01\x00\x05hello")
        assert raw.recv(100).startswith(b"HTTP/1.1 400")
    assert tls_connect(emu, emu.ca)
    assert [e["faults"] for e in emu.log() if e["kind"] == "connection"] == \
        [["tls_plain_http"], ["tls_plain_http"]]


def test_b28_tls_stall(emu):
    emu.set_fault("tls_stall", 1, seconds=2)
    with pytest.raises((socket.timeout, TimeoutError)):
        tls_connect(emu, emu.ca, timeout=0.5)
    assert tls_connect(emu, emu.ca)


def test_faults_from_the_command_line(soft_keys):
    with client.Emulator(faults=["put_429=1,retry_after=7", "polls=2",
                                 "wrong_content_type=always,on=get"]) as e:
        faults = e.get_faults()
        assert faults["put_429"]["count"] == 1 and faults["polls"]["value"] == 2
        regid = e.create_enrollment(soft_keys[0])
        body = {"tpm": {"endorsementKey": base64.b64encode(soft_keys[0]).decode(),
                        "storageRootKey": base64.b64encode(soft_keys[1]).decode()}}
        r = e.request("PUT", e.register_path(regid), body)
        assert r.status == 429 and r.headers["retry-after"] == "7"
        assert e.request("PUT", e.register_path(regid), body).status == 401


def test_bad_fault_on_command_line_is_refused(tmp_path):
    r = subprocess.run([client.PYTHON, client.EMULATOR, "--port", "0", "--state-dir",
                        str(tmp_path), "--fault", "no_such_fault=1"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 2 and "no_such_fault" in r.stderr


def test_admin_fault_api(emu):
    emu.set_faults({"drop": 2, "delay": {"count": "always", "seconds": 0.01, "on": "hub"}})
    faults = emu.get_faults()
    assert faults["drop"] == {"kind": "count", "count": 2, "on": "device"}
    assert faults["delay"]["count"] == "always" and faults["delay"]["on"] == "hub"
    emu.clear_faults("drop")
    assert set(emu.get_faults()) == {"delay"}
    for bad in ({"nope": 1}, {"drop": {"count": "x"}}, {"drop": {"on": "moon"}},
                {"delay": {"sekonds": 1}}, {"clock_offset": "abc"},
                {"delay": {"seconds": "soon"}}, {"put_429": {"retry_after": "later"}},
                {"truncated_json": {"mode": "half"}}, {"oversize_body": {"bytes": -1}}):
        r = emu.request("POST", "/__emulator/faults", bad)
        assert r.status == 400, bad
    assert set(emu.get_faults()) == {"delay"}
    emu.clear_faults()
    assert emu.get_faults() == {}
