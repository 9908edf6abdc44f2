"""`tpm-provision ek` output against an independent computation from tpm2-tools output
(field cases B04, B05, B06), and EK certificates that are hard to read (B21)."""
import base64
import hashlib
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from swtpm import Swtpm  # noqa: E402
from tpmcheck import (EK, EK_CERT_INDEX, assert_no_leftovers, ek_cert, read_public,  # noqa: E402
                      registration_id)

OWNER_X = "owner-secret-Xq7"


def expected_cert(tpm):
    cert, der = ek_cert(tpm)
    n = cert.serial_number
    return {"present": True, "readable": True,
            "serial": n.to_bytes(max(1, (n.bit_length() + 7) // 8), "big").hex(),
            "sha256": hashlib.sha256(der).hexdigest()}


def test_ek_json_equals_independent_computation(tpm, agent_for, tmp_path):
    agent = agent_for(tpm)
    ek = read_public(tpm, EK, str(tmp_path))

    out = agent.json("ek")

    assert out["endorsementKey"] == base64.b64encode(ek).decode()
    assert out["registrationId"] == registration_id(ek)
    assert out["ekCertificate"] == expected_cert(tpm)
    assert out["ekPersisted"] is True
    assert_no_leftovers(tpm)


def test_b04_exported_ek_is_the_marshaled_tpm2b_public(tpm, agent_for):
    out = agent_for(tpm).json("ek")
    raw = base64.b64decode(out["endorsementKey"])
    assert len(raw) == 316
    assert raw[:10] == bytes.fromhex("013a0001000b000300b2")
    assert int.from_bytes(raw[:2], "big") == len(raw) - 2


def test_b05_registration_id_is_over_the_size_prefixed_bytes(tpm, agent_for):
    out = agent_for(tpm).json("ek")
    raw = base64.b64decode(out["endorsementKey"])
    assert out["registrationId"] == registration_id(raw)
    assert out["registrationId"] != registration_id(raw[2:])
    assert out["registrationId"] != registration_id(out["endorsementKey"].encode())
    assert len(out["registrationId"]) == 52 and out["registrationId"].islower()


def test_ek_not_persisted_is_computed_and_left_unpersisted(tpm_no_ek, agent_for, tmp_path):
    tpm = tpm_no_ek
    agent = agent_for(tpm)
    before = tpm.snapshot()

    out = agent.json("ek")

    assert out["ekPersisted"] is False
    assert tpm.snapshot() == before
    # The same key `own` persists later: same registration ID before and after.
    agent.run("own", check=0)
    assert agent.json("ek")["registrationId"] == out["registrationId"]
    assert registration_id(read_public(tpm, EK, str(tmp_path))) == out["registrationId"]


def test_ek_csv_and_text(tpm, agent_for):
    agent = agent_for(tpm)
    j = agent.json("ek")
    csv = agent.run("ek", "--csv", check=0).stdout.splitlines()
    assert csv[0] == "registrationId,endorsementKey,ekCertSerial,ekCertSha256"
    assert csv[1].split(",") == [j["registrationId"], j["endorsementKey"],
                                 j["ekCertificate"]["serial"], j["ekCertificate"]["sha256"]]
    text = agent.run("ek", check=0).stdout
    assert j["registrationId"] in text and j["ekCertificate"]["sha256"] in text


def test_b06_each_run_reads_the_tpm_it_is_given(tmp_path, agent_for):
    """No cached EK: two TPMs give two identities, and the first TPM its own again."""
    a = Swtpm(str(tmp_path / "a"))
    b = Swtpm(str(tmp_path / "b"))
    try:
        first = agent_for(a).json("ek")
        second = agent_for(b).json("ek")
        again = agent_for(a).json("ek")
        assert first["registrationId"] != second["registrationId"]
        assert first["endorsementKey"] != second["endorsementKey"]
        assert again == first
    finally:
        a.close()
        b.close()


def replace_cert_index(tpm, attributes):
    """Redefines the EK certificate index with other attributes, keeping the certificate."""
    _, der = ek_cert(tpm)
    tpm.tpm2("nvundefine", "-C", "p", "0x%08x" % EK_CERT_INDEX)
    tpm.tpm2("nvdefine", "0x%08x" % EK_CERT_INDEX, "-C", "p", "-s", str(len(der)),
             "-a", attributes)
    tpm.tpm2("nvwrite", "0x%08x" % EK_CERT_INDEX, "-C", "p", "-i", "-", input=der)
    return der


def test_b21_cert_read_with_its_own_auth_after_owner_auth_set(tpm, agent_for):
    agent = agent_for(tpm)
    expected = expected_cert(tpm)
    tpm.tpm2("changeauth", "-c", "o", OWNER_X)

    out = agent.json("ek")

    assert out["ekCertificate"] == expected


def test_b21_cert_without_ownerread_read_with_its_own_auth(tpm, agent_for):
    agent = agent_for(tpm)
    der = replace_cert_index(tpm, "ppwrite|ppread|authread|no_da|platformcreate")
    tpm.tpm2("changeauth", "-c", "o", OWNER_X)

    out = agent.json("ek")

    assert out["ekCertificate"]["sha256"] == hashlib.sha256(der).hexdigest()


def test_b21_cert_only_ownerread_needs_the_owner_value(tpm, agent_for):
    agent = agent_for(tpm)
    der = replace_cert_index(tpm, "ppwrite|ppread|ownerread|no_da|platformcreate")
    tpm.tpm2("changeauth", "-c", "o", OWNER_X)

    out = agent.json("ek")
    # Unreadable without the value: recorded, and the EK export still succeeds.
    assert out["ekCertificate"]["present"] is True
    assert out["ekCertificate"]["readable"] is False
    assert out["registrationId"]

    owner = agent.secret_file("owner", OWNER_X)
    out = agent.json("ek", "--owner-auth=" + owner)
    assert out["ekCertificate"]["sha256"] == hashlib.sha256(der).hexdigest()
    assert_no_leftovers(tpm)


def test_b21_no_cert_index_does_not_block_the_export(tpm, agent_for):
    agent = agent_for(tpm)
    tpm.tpm2("nvundefine", "-C", "p", "0x%08x" % EK_CERT_INDEX)

    out = agent.json("ek")

    assert out["ekCertificate"] is None
    assert "EK certificate:   none" in agent.run("ek", check=0).stdout


def test_b21_own_without_cert_index_creates_and_persists_the_ek(tpm_no_ek, agent_for):
    tpm = tpm_no_ek
    agent = agent_for(tpm)
    tpm.tpm2("nvundefine", "-C", "p", "0x%08x" % EK_CERT_INDEX)
    res = agent.run("own", check=0)
    assert "Persisted the EK" in res.stderr and "matches" not in res.stderr
