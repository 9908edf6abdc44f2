"""DPS service API (protocol doc §6): individual enrollments, bulk, policies, ETags."""
import base64
import json
import os
import struct
import time
from urllib.parse import quote

import client
import dps_tpm2


def b64(data):
    return base64.b64encode(data).decode()


def enrollment(regid, ek, **fields):
    doc = {"registrationId": regid, "attestation": {"type": "tpm",
                                                     "tpm": {"endorsementKey": b64(ek)}}}
    doc.update(fields)
    return doc


def new_id(prefix="svc"):
    return "%s-%s" % (prefix, os.urandom(4).hex())


def test_create_get_delete(emu, soft_keys):
    ek, srk = soft_keys
    regid = new_id()
    doc = enrollment(regid, ek, deviceId="Device-01", iotHubHostName="hub-a.azure-devices.net",
                     provisioningStatus="enabled", initialTwin={"tags": {"line": 3}})
    doc["attestation"]["tpm"]["storageRootKey"] = b64(srk)
    r = emu.service("PUT", "/enrollments/" + regid, doc)
    assert r.status == 200, r
    created = r.json()
    assert created["registrationId"] == regid and created["deviceId"] == "Device-01"
    assert created["attestation"]["tpm"]["endorsementKey"] == b64(ek)
    assert created["initialTwin"] == {"tags": {"line": 3}}
    assert created["etag"] and r.headers["etag"] == '"%s"' % created["etag"]
    assert created["createdDateTimeUtc"].endswith("Z")

    r = emu.service("GET", "/enrollments/" + regid)
    assert r.status == 200 and r.json() == created

    r = emu.service("DELETE", "/enrollments/" + regid)
    assert r.status == 204 and r.body == b""
    r = emu.service("GET", "/enrollments/" + regid)
    assert r.status == 404 and r.json()["errorCode"] == 404201
    assert emu.service("DELETE", "/enrollments/" + regid).status == 404


def test_older_service_api_version_and_unknown_version(emu, soft_keys):
    regid = new_id()
    r = emu.service("PUT", "/enrollments/" + regid, enrollment(regid, soft_keys[0]),
                    api_version="2018-04-01")
    assert r.status == 200
    r = emu.service("GET", "/enrollments/" + regid, api_version="2017-01-01")
    assert r.status == 400 and r.json()["errorCode"] == 400004
    assert "Unsupported API version" in r.json()["message"]


def test_invalid_registration_ids_are_refused(emu, soft_keys):
    for regid in ("Upper-Case", "a" * 129, "space here", "slash%2fx", "ümlaut"):
        r = emu.service("PUT", "/enrollments/" + quote(regid, safe=""),
                        enrollment(regid, soft_keys[0]))
        assert r.status == 400, (regid, r)
    ok = "a" * 128
    assert emu.service("PUT", "/enrollments/" + ok, enrollment(ok, soft_keys[0])).status == 200
    odd = "x-1.2_3:4"
    assert emu.service("PUT", "/enrollments/" + odd, enrollment(odd, soft_keys[0])).status == 200


def test_body_registration_id_must_match_url(emu, soft_keys):
    r = emu.service("PUT", "/enrollments/" + new_id(), enrollment(new_id(), soft_keys[0]))
    assert r.status == 400


def struct_dump(ek):
    """B04: an older tool's little-endian, padded in-memory dump instead of the marshaled
    form: starts 3a 01 00 00 01 00 0b 00 b2 00 03 00."""
    tpmt = ek[2:]
    return (struct.pack("<HH", len(tpmt), 0) + struct.pack("<HH", 0x0001, 0x000B)
            + struct.pack("<I", 0x000300B2) + tpmt[8:])


def test_b04_malformed_endorsement_keys_are_refused_with_400004(emu, soft_keys):
    ek = soft_keys[0]
    ecc = bytearray(ek)
    ecc[2:4] = b"\x00\x23"
    cases = {
        "struct_dump": b64(struct_dump(ek)),
        "size_prefix_too_big": b64(ek[:-1]),
        "size_prefix_too_small": b64(ek + b"\0"),
        "no_size_prefix": b64(ek[2:]),
        "ecc": b64(bytes(ecc)),
        "modulus_only": b64(ek[-256:]),
        "not_base64": "!!not base64!!",
        "empty": "",
    }
    assert struct_dump(ek)[:12].hex() == "3a0100000100" "0b00b2000300"
    for name, value in cases.items():
        regid = new_id("b04")
        doc = enrollment(regid, ek)
        doc["attestation"]["tpm"]["endorsementKey"] = value
        r = emu.service("PUT", "/enrollments/" + regid, doc)
        assert r.status == 400, (name, r)
        assert r.json()["errorCode"] == 400004, name
        assert emu.service("GET", "/enrollments/" + regid).status == 404
    regid = new_id("b04")
    assert emu.service("PUT", "/enrollments/" + regid, enrollment(regid, ek)).status == 200


def test_bulk_mixed_rows(emu, soft_keys):
    ek = soft_keys[0]
    good = [new_id("bulk") for _ in range(3)]
    bad_ek = new_id("bulk")
    rows = [enrollment(r, ek) for r in good]
    rows.insert(1, enrollment(bad_ek, ek[:-1]))
    rows.append(enrollment("Bad Id", ek))
    r = emu.service("POST", "/enrollments", {"mode": "create", "enrollments": rows})
    assert r.status == 200, r
    result = r.json()
    assert result["isSuccessful"] is False
    errors = {e["registrationId"]: e for e in result["errors"]}
    assert set(errors) == {bad_ek, "Bad Id"}
    assert errors[bad_ek]["errorCode"] == 400004
    assert all(isinstance(e["errorStatus"], str) for e in result["errors"])
    for regid in good:
        assert emu.service("GET", "/enrollments/" + regid).status == 200
    assert emu.service("GET", "/enrollments/" + bad_ek).status == 404

    # create again: each row conflicts; update: fine
    r = emu.service("POST", "/enrollments", {"mode": "create",
                                              "enrollments": [enrollment(good[0], ek)]})
    assert r.json()["isSuccessful"] is False and r.json()["errors"][0]["errorCode"] == 409201
    r = emu.service("POST", "/enrollments", {
        "mode": "update", "enrollments": [enrollment(good[0], ek, deviceId="renamed")]})
    assert r.json() == {"isSuccessful": True, "errors": []}
    assert emu.service("GET", "/enrollments/" + good[0]).json()["deviceId"] == "renamed"

    # updateIfMatchETag with a stale etag fails for that row only
    etag = emu.service("GET", "/enrollments/" + good[1]).json()["etag"]
    r = emu.service("POST", "/enrollments", {"mode": "updateIfMatchETag", "enrollments": [
        enrollment(good[1], ek, deviceId="x", etag="stale"),
        enrollment(good[2], ek, deviceId="y")]})
    assert [e["registrationId"] for e in r.json()["errors"]] == [good[1]]
    assert r.json()["errors"][0]["errorCode"] == 412002
    assert emu.service("GET", "/enrollments/" + good[1]).json()["etag"] == etag
    r = emu.service("POST", "/enrollments", {"mode": "updateIfMatchETag", "enrollments": [
        enrollment(good[1], ek, deviceId="x", etag=etag)]})
    assert r.json()["isSuccessful"] is True

    # delete mode: a missing row is an error, the others go
    r = emu.service("POST", "/enrollments", {"mode": "delete", "enrollments": [
        {"registrationId": good[0]}, {"registrationId": "never-was"}]})
    assert [e["registrationId"] for e in r.json()["errors"]] == ["never-was"]
    assert emu.service("GET", "/enrollments/" + good[0]).status == 404


def test_bulk_more_than_ten_is_refused_and_nothing_is_created(emu, soft_keys):
    ids = [new_id("many") for _ in range(11)]
    r = emu.service("POST", "/enrollments", {
        "mode": "create", "enrollments": [enrollment(i, soft_keys[0]) for i in ids]})
    assert r.status == 400, r
    assert "errorCode" in r.json()
    assert all(emu.service("GET", "/enrollments/" + i).status == 404 for i in ids)
    r = emu.service("POST", "/enrollments", {
        "mode": "create", "enrollments": [enrollment(i, soft_keys[0]) for i in ids[:10]]})
    assert r.status == 200 and r.json()["isSuccessful"] is True


def test_bulk_bad_mode_is_refused(emu, soft_keys):
    r = emu.service("POST", "/enrollments", {"mode": "upsert", "enrollments": [
        enrollment(new_id(), soft_keys[0])]})
    assert r.status == 400


def test_read_only_policy_can_read_but_not_write(emu, soft_keys):
    regid = new_id("ro")
    assert emu.service("PUT", "/enrollments/" + regid,
                       enrollment(regid, soft_keys[0])).status == 200
    ro = client.READ_POLICY
    assert emu.service("GET", "/enrollments/" + regid, policy=ro).status == 200
    for method, path, body in (
            ("PUT", "/enrollments/" + regid, enrollment(regid, soft_keys[0], deviceId="z")),
            ("DELETE", "/enrollments/" + regid, None),
            ("POST", "/enrollments", {"mode": "delete",
                                      "enrollments": [{"registrationId": regid}]})):
        r = emu.service(method, path, body, policy=ro)
        assert r.status == 401, (method, r)
        assert r.json()["errorCode"] == 401002
        assert "EnrollmentWrite" in r.json()["message"]
    got = emu.service("GET", "/enrollments/" + regid).json()
    assert "deviceId" not in got


def test_etag_rules(emu, soft_keys):
    regid = new_id("etag")
    doc = enrollment(regid, soft_keys[0])
    path = "/enrollments/" + regid
    # If-Match on a missing enrollment cannot match
    assert emu.service("PUT", path, doc, headers={"If-Match": '"abc"'}).status == 412
    first = emu.service("PUT", path, doc).json()["etag"]
    r = emu.service("PUT", path, dict(doc, deviceId="a"), headers={"If-Match": '"nope"'})
    assert r.status == 412 and r.json()["errorCode"] == 412002
    r = emu.service("PUT", path, dict(doc, deviceId="a"), headers={"If-Match": '"%s"' % first})
    assert r.status == 200
    second = r.json()["etag"]
    assert second != first
    assert emu.service("DELETE", path, headers={"If-Match": first}).status == 412
    assert emu.service("PUT", path, dict(doc, deviceId="b"),
                       headers={"If-Match": "*"}).status == 200
    third = emu.service("GET", path).json()["etag"]
    assert emu.service("DELETE", path, headers={"If-Match": third}).status == 204


def test_service_sas_checks(emu, soft_keys):
    regid = new_id("auth")
    assert emu.service("PUT", "/enrollments/" + regid,
                       enrollment(regid, soft_keys[0])).status == 200
    path = "/enrollments/" + regid
    key = emu.policy_key()
    host = emu.service_host
    se = str(int(time.time()) + 600)

    def token(sr, k=key, skn=client.OWNER_POLICY, exp=se):
        return client.sas_header(sr, client.sign(k, sr, exp), exp, skn=skn)

    good = {
        "plain_host": token(host),
        "upper_case_host": token(host.upper()),
        "encoded_host": token(quote(host + "/", safe="")),
        "path_under_host": token(quote(host + "/enrollments", safe="")),
        "secondary_key": None,
    }
    with open(os.path.join(emu.state_dir, "policies.json")) as f:
        owner = {p["keyName"]: p for p in json.load(f)["policies"]}[client.OWNER_POLICY]
    good["secondary_key"] = token(host, base64.b64decode(owner["secondaryKey"]))
    for name, auth in good.items():
        assert emu.service("GET", path, auth=auth).status == 200, name

    old = str(int(time.time()) - 3600)
    bad = {
        "wrong_key": token(host, b"k" * 32),
        "other_host": token("other.azure-devices-provisioning.net"),
        "expired": token(host, exp=old),
        "unknown_policy": token(host, skn="nosuchpolicy"),
        "no_skn": client.sas_header(host, client.sign(key, host, se), se),
        "path_elsewhere": token(quote(host + "/registrations", safe="")),
        "no_header": "",
    }
    for name, auth in bad.items():
        r = emu.request("GET", path + "?api-version=2021-10-01", None,
                        {"Authorization": auth} if auth else {})
        assert r.status == 401, (name, r)
        assert r.json()["errorCode"] == 401002, name


def test_policies_and_connection_strings_files(emu):
    with open(os.path.join(emu.state_dir, "policies.json")) as f:
        policies = {p["keyName"]: p for p in json.load(f)["policies"]}
    assert set(policies) == {"provisioningserviceowner", "enrollmentread"}
    assert "EnrollmentWrite" in policies["provisioningserviceowner"]["rights"]
    assert policies["enrollmentread"]["rights"] == ["EnrollmentRead"]
    for p in policies.values():
        assert len(base64.b64decode(p["primaryKey"])) == 32
    with open(os.path.join(emu.state_dir, "connection-strings.json")) as f:
        cs = json.load(f)
    assert cs["enrollmentread"] == ("HostName=%s;SharedAccessKeyName=enrollmentread;"
                                    "SharedAccessKey=%s" % (emu.service_host,
                                                            policies["enrollmentread"]
                                                            ["primaryKey"]))


def test_query_pages_through_enrollments(emu, soft_keys):
    for i in range(3):
        regid = "q-%d-%s" % (i, os.urandom(2).hex())
        emu.service("PUT", "/enrollments/" + regid, enrollment(regid, soft_keys[0]))
    seen, token = [], None
    for _ in range(100):
        hdrs = {"x-ms-max-item-count": "2"}
        if token:
            hdrs["x-ms-continuation"] = token
        r = emu.service("POST", "/enrollments/query", {"query": "SELECT * FROM enrollments"},
                        headers=hdrs)
        assert r.status == 200 and r.headers["x-ms-item-type"] == "Enrollment"
        assert len(r.json()) <= 2
        seen += [e["registrationId"] for e in r.json()]
        token = r.headers.get("x-ms-continuation")
        if not token:
            break
    assert len(seen) == len(set(seen)) and len([s for s in seen if s.startswith("q-")]) >= 3
    r = emu.service("POST", "/enrollments/query", {"query": "*"}, policy=client.READ_POLICY)
    assert r.status == 200


def test_enrollments_and_registrations_survive_restart(soft_keys, make_device, emu):
    dev = make_device()
    assert dev.register().json()["status"] == "assigned"
    k1, k2 = emu.keys(dev.regid)
    before = emu.service("GET", "/enrollments/" + dev.regid).json()
    files = {}
    for name in ("ca.pem", "server.pem", "policies.json"):
        with open(os.path.join(emu.state_dir, name)) as f:
            files[name] = f.read()
    emu.restart()
    for name, text in files.items():
        with open(os.path.join(emu.state_dir, name)) as f:
            assert f.read() == text, name
    assert emu.service("GET", "/enrollments/" + dev.regid).json() == before
    assert emu.keys(dev.regid) == (k1, k2)
    assert before["registrationState"]["status"] == "assigned"
    r = emu.service("GET", "/registrations/" + dev.regid)
    assert r.status == 200 and r.json()["assignedHub"] == emu.hub_host
    se = str(int(time.time()) + 60)
    sr = quote(emu.hub_resource(dev.regid), safe="")
    assert emu.hub_check(dev.regid, client.sign(k2, sr, se), se).status == 200


def test_registration_state_read_and_delete_rights(emu, make_device):
    dev = make_device()
    dev.register()
    path = "/registrations/" + dev.regid
    assert emu.service("GET", path, policy=client.READ_POLICY).status == 401
    assert emu.service("DELETE", path).status == 204
    assert emu.service("GET", path).status == 404


def test_other_attestation_types_are_refused(emu):
    regid = new_id()
    r = emu.service("PUT", "/enrollments/" + regid, {
        "registrationId": regid, "attestation": {"type": "symmetricKey"}})
    assert r.status == 400


def test_storage_root_key_in_enrollment_is_validated(emu, soft_keys):
    regid = new_id()
    doc = enrollment(regid, soft_keys[0])
    doc["attestation"]["tpm"]["storageRootKey"] = b64(soft_keys[1][:-3])
    r = emu.service("PUT", "/enrollments/" + regid, doc)
    assert r.status == 400 and r.json()["errorCode"] == 400004
    assert dps_tpm2.parse_rsa_public(soft_keys[1])
