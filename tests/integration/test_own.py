"""`tpm-provision own` against swtpm: EK persisted or not, idempotence, foreign objects."""
import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from tpmcheck import (EK, SRK, STATE_INDEX, assert_no_leftovers, ek_cert, nv_read,  # noqa: E402
                      read_public, rsa_modulus_of_public, variable_property)


def test_own_with_ek_persisted_at_setup_keeps_that_ek(tpm, agent_for, tmp_path):
    agent = agent_for(tpm)
    before = tpm.snapshot()
    ek_before = read_public(tpm, EK, str(tmp_path))

    agent.run("own", check=0)

    assert read_public(tpm, EK, str(tmp_path)) == ek_before
    after = tpm.snapshot()
    assert after["persistent"] == sorted(before["persistent"] + [SRK])
    assert after["nv"] == sorted(before["nv"] + [STATE_INDEX])
    status = agent.json("status")
    assert status["state"]["record"] == "valid" and status["state"]["state"] == "owned"
    assert status["ek"]["present"] and status["srk"]["present"]
    assert_no_leftovers(tpm)


def test_own_with_ek_not_persisted_creates_the_ek_of_the_certificate(tpm_no_ek, agent_for,
                                                                    tmp_path):
    tpm = tpm_no_ek
    agent = agent_for(tpm)
    assert EK not in tpm.persistent_handles()

    res = agent.run("own", check=0)

    assert "matches the EK certificate" in res.stderr
    cert, _ = ek_cert(tpm)
    ek = read_public(tpm, EK, str(tmp_path))
    assert rsa_modulus_of_public(ek) == cert.public_key().public_numbers().n
    # TCG EK template L-1: attributes 0x000300b2, the PolicySecret(endorsement) policy.
    assert ek[2:10] == bytes.fromhex("0001000b000300b2")
    srk = read_public(tpm, SRK, str(tmp_path))
    assert srk[:10] == bytes.fromhex("011a0001000b00030472")
    assert_no_leftovers(tpm)


def test_own_twice_changes_nothing_the_second_time(tpm_no_ek, agent_for, tmp_path):
    tpm = tpm_no_ek
    agent = agent_for(tpm)
    agent.run("own", check=0)
    snap = tpm.snapshot()
    keys = [read_public(tpm, h, str(tmp_path)) for h in (EK, SRK)]
    record = nv_read(tpm, STATE_INDEX)

    res = agent.run("own", check=0)

    assert tpm.snapshot() == snap
    assert [read_public(tpm, h, str(tmp_path)) for h in (EK, SRK)] == keys
    assert nv_read(tpm, STATE_INDEX) == record
    assert "Persisted" not in res.stderr and "Wrote" not in res.stderr
    assert agent.json("status")["state"]["sequence"] == 1


def test_own_refuses_an_ecc_key_at_the_srk_handle_and_leaves_it(tpm, agent_for, tmp_path):
    agent = agent_for(tpm)
    ctx = str(tmp_path / "ecc.ctx")
    tpm.tpm2("createprimary", "-C", "o", "-G", "ecc256:null:aes128cfb", "-c", ctx,
             "-a", "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda|restricted|decrypt")
    tpm.tpm2("evictcontrol", "-C", "o", "-c", ctx, "0x%08x" % SRK)
    tpm.tpm2("flushcontext", "-t")
    ecc = read_public(tpm, SRK, str(tmp_path))

    res = agent.run("own", check=2)

    assert "--srk-handle" in res.stderr and "ECC" in res.stderr
    assert read_public(tpm, SRK, str(tmp_path)) == ecc
    assert STATE_INDEX not in tpm.nv_indices()
    agent.run("own", "--srk-handle=0x81000002", check=0)
    assert read_public(tpm, SRK, str(tmp_path)) == ecc
    assert 0x81000002 in tpm.persistent_handles()
    assert_no_leftovers(tpm)


def test_own_leaves_a_foreign_nv_index_at_the_state_handle(tpm, agent_for):
    agent = agent_for(tpm)
    tpm.tpm2("nvdefine", "0x%08x" % STATE_INDEX, "-C", "o", "-s", "32",
             "-a", "ownerwrite|ownerread|authread|authwrite")
    tpm.tpm2("nvwrite", "0x%08x" % STATE_INDEX, "-C", "o", "-i", "-", input=b"x" * 32)

    res = agent.run("own", check=4)

    assert "0x01000100" in res.stderr and "--state-index" in res.stderr
    assert nv_read(tpm, STATE_INDEX) == b"x" * 32
    agent.run("own", "--state-index=0x01000101", check=0)
    assert agent.json("status", "--state-index=0x01000101")["state"]["record"] == "valid"
    assert nv_read(tpm, STATE_INDEX) == b"x" * 32


def test_foreign_index_with_a_password_is_never_read_by_sas_or_the_fast_path(tpm, agent_for):
    """Someone else's index at the state handle, with its own password and without NO_DA
    (field cases B01/B21: state the agent did not create). Reading it with an empty
    authorization would count towards dictionary-attack lockout at every boot and every token;
    the agent must tell it is not its own from the Name alone and leave it unread."""
    agent = agent_for(tpm)
    tpm.tpm2("nvdefine", "0x%08x" % STATE_INDEX, "-C", "o", "-s", "1024",
             "-a", "authread|authwrite", "-p", "their-password")
    da_before = variable_property(tpm, "TPM2_PT_LOCKOUT_COUNTER")
    env = {"TPM_PROVISION_ID_SCOPE": "0ne00000001",
           "TPM_PROVISION_ENDPOINT": "https://127.0.0.1:9"}

    for _ in range(3):
        res = agent.run("sas")
        assert res.returncode == 4, res.stderr
        assert "was not defined by tpm-provision" in res.stderr
    res = agent.run("register", env=env)
    assert res.returncode == 4, res.stderr

    assert variable_property(tpm, "TPM2_PT_LOCKOUT_COUNTER") == da_before
    assert_no_leftovers(tpm)


@pytest.mark.parametrize("attributes", [
    "ppwrite|ppread|ownerread|authread|no_da|platformcreate",
    # Field case B21's kind: readable with the owner's authorization only.
    "ppwrite|ppread|ownerread|no_da|platformcreate",
], ids=["authread", "b21-ownerread-only"])
def test_ek_template_and_nonce_in_nv_are_honoured(tpm_no_ek, agent_for, tmp_path, attributes):
    """A TPM maker's EK template (0x01c00004) and nonce (0x01c00003): the EK is the one
    tpm2_createprimary makes from that template with the nonce as unique, zero-filled."""
    tpm = tpm_no_ek
    agent = agent_for(tpm)
    # The maker's certificate would be for the template-derived key; this one is not.
    tpm.tpm2("nvundefine", "-C", "p", "0x01c00002")
    template = bytes.fromhex("0001000b000300b20020") + bytes.fromhex(
        "837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa") + bytes.fromhex(
        "00060080004300100800000000000000")
    nonce = b"tpm-maker-nonce!"
    for index, data in ((0x01C00004, template), (0x01C00003, nonce)):
        tpm.tpm2("nvdefine", "0x%08x" % index, "-C", "p", "-s", str(len(data)),
                 "-a", attributes)
        tpm.tpm2("nvwrite", "0x%08x" % index, "-C", "p", "-i", "-", input=data)

    res = agent.run("own", check=0)
    assert "template the TPM maker stored" in res.stderr

    # Independent reference: tpm2_createprimary with the nonce, zero-filled to 256 bytes, as
    # unique. Fed on stdin: tpm2-tools 5.4 copies a -u FILE into the union in host byte order,
    # and its tpm2_createek -t copies the nonce pointer instead of the nonce.
    tpm.tpm2("createprimary", "-C", "e", "-g", "sha256", "-G", "rsa2048:null:aes128cfb",
             "-a", "fixedtpm|fixedparent|sensitivedataorigin|adminwithpolicy|restricted|decrypt",
             "-L", "837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa",
             "-u", "-", "-c", str(tmp_path / "ek.ctx"), "-o", str(tmp_path / "expected.pub"),
             input=nonce + b"\0" * (256 - len(nonce)))
    tpm.tpm2("flushcontext", "-t")
    expected = rsa_modulus_of_public((tmp_path / "expected.pub").read_bytes())
    assert rsa_modulus_of_public(read_public(tpm, EK, str(tmp_path))) == expected
    assert_no_leftovers(tpm)


def test_ek_that_does_not_match_the_certificate_is_not_persisted(tpm_no_ek, agent_for):
    tpm = tpm_no_ek
    agent = agent_for(tpm)
    nonce = b"another-nonce"
    template = bytes.fromhex("0001000b000300b20020"
                             "837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa"
                             "00060080004300100800000000000000")
    for index, data in ((0x01C00004, template), (0x01C00003, nonce)):
        tpm.tpm2("nvdefine", "0x%08x" % index, "-C", "p", "-s", str(len(data)),
                 "-a", "ppwrite|ppread|ownerread|authread|no_da|platformcreate")
        tpm.tpm2("nvwrite", "0x%08x" % index, "-C", "p", "-i", "-", input=data)
    before = tpm.snapshot()

    res = agent.run("own", check=4)

    assert "does not match the EK certificate" in res.stderr
    assert tpm.snapshot() == before


def test_b12_second_instance_waits_for_the_first(tpm_no_ek, tmp_path):
    """Two instances at once (udev-started and systemd-started): the second waits on the lock
    while the first is inside CreatePrimary, then finds everything done. One EK, one SRK."""
    import subprocess
    import time
    from agent import AGENT
    from tpmproxy import CC, TpmProxy
    tpm = tpm_no_ek
    env = dict(os.environ, RUNTIME_DIRECTORY=str(tmp_path / "run"),
               TPM_PROVISION_CONFIG=str(tmp_path / "none.conf"), TPM_PROVISION_CMDLINE=os.devnull)
    with TpmProxy(tpm, str(tmp_path / "proxy.sock")) as proxy:
        env["TPM_PROVISION_TCTI"] = proxy.tcti
        held = proxy.pause("after", cc=CC["CreatePrimary"])
        first = subprocess.Popen([AGENT, "own"], env=env, stderr=subprocess.PIPE, text=True)
        assert held.reached.wait(30)
        second = subprocess.Popen([AGENT, "own"], env=env, stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)
        assert second.poll() is None, "the second instance must wait, not run or fail"
        held.release()
        out1 = first.communicate(timeout=60)[1]
        out2 = second.communicate(timeout=60)[1]
    assert first.returncode == 0, out1
    assert second.returncode == 0, out2
    assert "Another tpm-provision is working on the TPM" in out2
    assert "Persisted the EK" in out1 and "Persisted" not in out2
    assert proxy.count(CC["CreatePrimary"]) == 2  # EK and SRK, once each
    assert_no_leftovers(tpm)
