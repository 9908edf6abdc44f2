"""DPS device API (protocol doc §1, §5.5) and the hub check, with software keys."""
import base64
import concurrent.futures
import email.utils
import http.client
import socket
import ssl
import time
from urllib.parse import quote

import pytest

import client
from dps_testing import ID_SCOPE, SoftDevice, split_fields


def test_challenge_answer(make_device):
    dev = make_device()
    r = dev.challenge()
    assert r.status == 401
    assert r.headers["content-type"] == "application/json; charset=utf-8"
    assert r.headers["x-ms-request-id"]
    assert abs(email.utils.parsedate_to_datetime(r.headers["date"]).timestamp()
               - time.time()) < 5
    body = r.json()
    assert set(body) == {"authenticationKey", "keyName", "message"}
    assert body["keyName"] == "registration"
    fields = split_fields(base64.b64decode(body["authenticationKey"]))
    # §3.4 HMAC key public area: KEYEDHASH, SHA-256, 0x00040440, PolicyCommandCode(Duplicate)
    assert fields[4][:10].hex() == "00500008000b00040440"
    assert fields[4][10:44].hex() == "0020bef56b8c1cc84e11edd717528d2cd99356bd2bbf8f015209" \
                                     "c3f84aeeaba8e8a2"
    assert fields[4][44:50].hex() == "0005000b0020"
    assert len(fields[5]) == 152


def test_api_versions(make_device):
    dev = make_device()
    assert dev.challenge(api_version="2019-03-31").status == 401
    for version in ("2018-09-01-preview", "2021-10-01", ""):
        r = dev.challenge(api_version=version)
        assert r.status == 400, version
        assert r.json()["errorCode"] == 400004
        assert r.json()["message"].startswith("Unsupported API version")


def test_unknown_scope_is_404(emu, make_device):
    dev = make_device()
    r = emu.request("PUT", emu.register_path(dev.regid, scope="0ne99999999"), dev.body())
    assert r.status == 404 and r.json()["errorCode"] // 1000 == 404
    # the scope is matched case-insensitively
    r = emu.request("PUT", emu.register_path(dev.regid, scope=ID_SCOPE.lower()), dev.body())
    assert r.status == 401 and "authenticationKey" in r.json()


def test_unknown_enrollment_is_401_without_challenge(emu, soft_keys):
    body = {"registrationId": "nobody", "tpm": {
        "endorsementKey": base64.b64encode(soft_keys[0]).decode(),
        "storageRootKey": base64.b64encode(soft_keys[1]).decode()}}
    r = emu.request("PUT", emu.register_path("nobody"), body)
    assert r.status == 401
    assert r.json()["errorCode"] == 401002 and "authenticationKey" not in r.json()


def test_unknown_enrollment_can_be_404(soft_keys):
    with client.Emulator(args=["--unknown-enrollment", "404"]) as emu404:
        body = {"tpm": {"endorsementKey": base64.b64encode(soft_keys[0]).decode(),
                        "storageRootKey": base64.b64encode(soft_keys[1]).decode()}}
        r = emu404.request("PUT", emu404.register_path("nobody"), body)
        assert r.status == 404 and r.json()["errorCode"] == 404201


def test_registration_id_is_matched_exactly(emu, make_device):
    dev = make_device()
    r = emu.request("PUT", emu.register_path(dev.regid.upper()), dev.body() | {
        "registrationId": dev.regid.upper()})
    assert r.status == 401 and "authenticationKey" not in r.json()


def test_request_ek_must_match_enrollment(emu, make_device, soft_keys):
    dev = make_device()
    body = dev.body()
    body["tpm"]["endorsementKey"] = body["tpm"]["storageRootKey"]
    r = emu.request("PUT", emu.register_path(dev.regid), body)
    assert r.status == 401 and r.json()["errorCode"] == 401002
    assert "authenticationKey" not in r.json()


def test_enrolled_srk_must_match(emu, soft_keys):
    ek, srk = soft_keys
    dev = SoftDevice(emu, ek, srk, "srk-pinned", srk=ek)     # enrolled SRK != device SRK
    r = dev.challenge()
    assert r.status == 401 and "authenticationKey" not in r.json()


@pytest.mark.parametrize("change", ["no_srk", "no_tpm", "bad_ek", "regid_mismatch",
                                    "not_json", "json_list"])
def test_bad_challenge_requests_are_400(emu, make_device, change):
    dev = make_device()
    body = dev.body()
    if change == "no_srk":
        del body["tpm"]["storageRootKey"]
    elif change == "no_tpm":
        del body["tpm"]
    elif change == "bad_ek":
        body["tpm"]["endorsementKey"] = base64.b64encode(b"\x01\x3a" + b"\0" * 20).decode()
    elif change == "regid_mismatch":
        body["registrationId"] = "someone-else"
    elif change == "not_json":
        body = b"{not json"
    elif change == "json_list":
        body = [1, 2]
    r = emu.request("PUT", emu.register_path(dev.regid), body)
    assert r.status == 400, r
    assert r.json()["errorCode"] // 1000 == 400


def test_full_assignment(emu, make_device):
    dev = make_device(deviceId="pump-7", iotHubHostName="hub-a.azure-devices.net")
    assert dev.challenge().status == 401
    auth = dev.auth()
    r = dev.put_auth(auth, payload={"model": "p7", "n": [1, 2]})
    assert r.status == 202
    assert r.json() == {"operationId": r.json()["operationId"], "status": "assigning"}
    op_id = r.json()["operationId"]
    assert r.headers["retry-after"] == "1"
    assert r.headers["location"].endswith(
        "/%s/registrations/%s/operations/%s?api-version=2021-06-01"
        % (ID_SCOPE, dev.regid, quote(op_id, safe="")))

    r = dev.poll(op_id, auth)
    assert r.status == 202 and r.headers["retry-after"] == "1"
    assert r.json() == {"operationId": op_id, "status": "assigning",
                        "registrationState": {"registrationId": dev.regid,
                                              "status": "assigning"}}
    r = dev.poll(op_id, auth)
    assert r.status == 200
    result = r.json()
    state = result["registrationState"]
    assert result["status"] == "assigned" and result["operationId"] == op_id
    assert state["registrationId"] == dev.regid
    assert state["assignedHub"] == "hub-a.azure-devices.net"
    assert state["deviceId"] == "pump-7"
    assert state["status"] == "assigned" and state["substatus"] == "initialAssignment"
    assert state["payload"] == {"model": "p7", "n": [1, 2]}
    for field in ("createdDateTimeUtc", "lastUpdatedDateTimeUtc", "etag"):
        assert state[field]
    assert len(split_fields(base64.b64decode(state["tpm"]["authenticationKey"]))) == 6
    k1, k2 = emu.keys(dev.regid)
    assert k2 and k2 != k1
    # A repeated poll returns the same outcome (same key, same etag).
    again = dev.poll(op_id, auth).json()["registrationState"]
    assert again["etag"] == state["etag"] and emu.keys(dev.regid)[1] == k2


def test_no_payload_no_echo_and_ais_style_second_put(make_device):
    dev = make_device()
    dev.challenge()
    auth = dev.auth()
    r = dev.put_auth(auth, tpm=False)           # AIS sends no tpm on the second PUT (§1.7)
    assert r.status == 202
    op_id = r.json()["operationId"]
    dev.poll(op_id, auth)
    state = dev.poll(op_id, auth).json()["registrationState"]
    assert "payload" not in state and state["deviceId"] == dev.regid


def test_second_put_with_other_ek_is_refused(make_device, soft_keys):
    dev = make_device()
    dev.challenge()
    dev.ek = soft_keys[1]
    r = dev.put_auth(dev.auth())
    assert r.status == 401 and r.json()["errorCode"] == 401002


def test_unknown_operation_is_404(make_device):
    dev = make_device()
    dev.challenge()
    r = dev.poll("5.0000.nothing", dev.auth())
    assert r.status == 404


def test_b29_disabled_enrollment_then_enabled(emu, make_device):
    dev = make_device()
    emu.set_enrollment(dev.regid, provisioningStatus="disabled")
    r = dev.register()
    assert r.status == 200
    assert r.json()["status"] == "disabled"
    assert r.json()["registrationState"]["status"] == "disabled"
    assert "tpm" not in r.json()["registrationState"]
    assert emu.service("GET", "/enrollments/" + dev.regid).json()["provisioningStatus"] \
        == "disabled"
    emu.set_enrollment(dev.regid, provisioningStatus="enabled")
    assert dev.register().json()["status"] == "assigned"


def test_enrollment_failure_setting(emu, make_device):
    dev = make_device()
    emu.set_enrollment(dev.regid, failure={"errorCode": 400208, "errorMessage": "no hub"})
    r = dev.register().json()
    assert r["status"] == "failed"
    assert r["registrationState"]["errorCode"] == 400208
    assert r["registrationState"]["errorMessage"] == "no hub"
    emu.set_enrollment(dev.regid, failure=None)
    assert dev.register().json()["status"] == "assigned"


def hub_status(emu, regid, key, hub, device_id=None):
    device_id = device_id or regid
    se = str(int(time.time()) + 60)
    sr = quote(emu.hub_resource(device_id, hub), safe="")
    return emu.hub_check(device_id, client.sign(key, sr, se), se, hub=hub).status


def test_b29_reprovisioning_substatus(emu, make_device, soft_keys):
    hub_a, hub_b, hub_c = ("hub-%s.azure-devices.net" % x for x in "abc")
    dev = make_device(iotHubHostName=hub_a)
    s = dev.register().json()["registrationState"]
    assert (s["assignedHub"], s["substatus"]) == (hub_a, "initialAssignment")
    assert hub_status(emu, dev.regid, emu.keys(dev.regid)[1], hub_a) == 200

    def reenroll(hub, **policy):
        doc = {"registrationId": dev.regid, "iotHubHostName": hub,
               "attestation": {"type": "tpm", "tpm": {
                   "endorsementKey": base64.b64encode(soft_keys[0]).decode()}}}
        if policy:
            doc["reprovisionPolicy"] = policy
        assert emu.service("PUT", "/enrollments/" + dev.regid, doc).status == 200

    reenroll(hub_b)
    s = dev.register().json()["registrationState"]
    assert (s["assignedHub"], s["substatus"]) == (hub_b, "deviceDataMigrated")
    k2 = emu.keys(dev.regid)[1]
    assert hub_status(emu, dev.regid, k2, hub_b) == 200
    assert hub_status(emu, dev.regid, k2, hub_a) == 401      # hub-A still has the old key

    reenroll(hub_c, updateHubAssignment=True, migrateDeviceData=False)
    s = dev.register().json()["registrationState"]
    assert (s["assignedHub"], s["substatus"]) == (hub_c, "deviceDataReset")

    reenroll(hub_a, updateHubAssignment=False)
    s = dev.register().json()["registrationState"]
    assert (s["assignedHub"], s["substatus"]) == (hub_c, "reprovisionedToInitialAssignment")

    emu.set_enrollment(dev.regid, substatus="deviceDataMigrated")
    s = dev.register().json()["registrationState"]
    assert s["substatus"] == "deviceDataMigrated"


def test_keep_alive_one_tls_connection_for_the_whole_flow(emu, make_device):
    dev = make_device()
    conn = emu.connection()
    try:
        assert dev.register(conn=conn).json()["status"] == "assigned"
    finally:
        conn.close()
    dev.register()                                   # a new connection per request
    device_entries = [e for e in emu.log() if e["kind"] in ("put_challenge", "put_auth", "get")]
    first, second = device_entries[:4], device_entries[4:]
    assert [e["kind"] for e in first] == ["put_challenge", "put_auth", "get", "get"]
    assert len({e["conn"] for e in first}) == 1
    assert len({e["conn"] for e in second}) == len(second) == 4
    assert not {e["conn"] for e in first} & {e["conn"] for e in second}


def test_log_lines_and_no_secrets(emu, make_device):
    dev = make_device()
    r = dev.register()
    k1, k2 = emu.keys(dev.regid)
    se = str(int(time.time()) + 60)
    sr = quote(emu.hub_resource(dev.regid), safe="")
    sig = client.sign(k2, sr, se)
    assert emu.hub_check(dev.regid, sig, se).status == 200
    with open(emu.state_dir + "/requests.log") as f:
        text = f.read()
    secrets = [k1.hex(), k2.hex(), base64.b64encode(k1).decode(),
               base64.b64encode(k2).decode(), sig, quote(sig, safe=""),
               r.json()["registrationState"]["tpm"]["authenticationKey"][:40],
               "SharedAccessSignature", "sig="]
    for s in secrets:
        assert s not in text
    entries = emu.log()
    assert len(entries) == 6                 # enrollment PUT, 2 register PUTs, 2 GETs, hub
    for e in entries:
        assert {"time", "method", "path", "query", "host", "status", "duration_ms", "conn",
                "auth", "kind"} <= set(e)
    assert [e["auth"] for e in entries] == [True, False, True, True, True, True]
    assert entries[-1]["kind"] == "hub" and entries[-1]["host"] == emu.hub_host


def test_hub_check_refusals(emu, make_device):
    dev = make_device()
    dev.register()
    k2 = emu.keys(dev.regid)[1]
    hub = emu.hub_host
    se = str(int(time.time()) + 60)
    sr = quote(emu.hub_resource(dev.regid), safe="")
    assert emu.hub_check(dev.regid, client.sign(k2, sr, se), se).status == 200
    assert emu.hub_check(dev.regid, client.sign(k2, sr, se), se, method="POST").status == 204
    old = str(int(time.time()) - 3600)
    assert emu.hub_check(dev.regid, client.sign(k2, sr, old), old).status == 401
    other_sr = quote(emu.hub_resource("other-device"), safe="")
    assert emu.hub_check(dev.regid, client.sign(k2, other_sr, se), se,
                         sr=other_sr).status == 401
    assert emu.hub_check("unknown-device", client.sign(k2, sr, se), se).status == 401
    # a token with skn is a policy token, not a device token
    auth = client.sas_header(sr, client.sign(k2, sr, se), se, skn="registration")
    r = emu.request("GET", "/devices/%s?api-version=2021-04-12" % dev.regid, None,
                    {"Authorization": auth}, host=hub)
    assert r.status == 401
    # the hub host is chosen by the Host header; the port part is ignored
    r = emu.request("GET", "/devices/%s" % dev.regid, None, {"Authorization": client.sas_header(
        sr, client.sign(k2, sr, se), se)}, host="%s:%d" % (hub.upper(), emu.port))
    assert r.status == 200


def test_server_certificate_names_and_ipv6(emu):
    from cryptography import x509
    with open(emu.state_dir + "/server.pem", "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names = set(san.get_values_for_type(x509.DNSName))
    ips = {str(a) for a in san.get_values_for_type(x509.IPAddress)}
    assert {"localhost", emu.hub_host, emu.service_host} <= names
    assert ips == {"127.0.0.1", "::1"}
    ctx = ssl.create_default_context(cafile=emu.ca)
    for name in (emu.hub_host, emu.service_host, "localhost"):
        with socket.create_connection(("127.0.0.1", emu.port), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname=name):
                pass


def test_default_binds_include_ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    with client.Emulator(binds=None) as e:
        ctx = ssl.create_default_context(cafile=e.ca)
        conn = http.client.HTTPSConnection("::1", e.port, context=ctx, timeout=10)
        try:
            conn.request("GET", "/__emulator/health")
            assert conn.getresponse().status == 200
        finally:
            conn.close()


def test_concurrent_devices_all_get_their_own_keys(emu, make_device):
    """A small fleet registering at once, one thread and one keep-alive connection each."""
    devices = [make_device() for _ in range(16)]

    def run(dev):
        conn = emu.connection()
        try:
            return dev.register(conn=conn).json()["status"]
        finally:
            conn.close()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert list(pool.map(run, devices)) == ["assigned"] * 16
    hub_keys = {emu.keys(d.regid)[1] for d in devices}
    assert len(hub_keys) == 16
    per_conn = {}
    for e in emu.log():
        if e["kind"] in ("put_challenge", "put_auth", "get"):
            per_conn.setdefault(e["conn"], []).append(e["status"])
    assert sorted(per_conn.values()) == [[401, 202, 202, 200]] * 16
