"""Hierarchy authorizations set by someone else (field cases B01, B02) and the ownership
policy's optional lockout authorization."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from agent import Agent  # noqa: E402
from tpmcheck import EK, SRK, STATE_INDEX, assert_no_leftovers, variable_property  # noqa: E402

OWNER_X = "owner-secret-Xq7"
ENDORSE_X = "endorse-secret-Zp2"
LOCKOUT_X = "lockout-secret-Wk9"


def set_foreign_auths(tpm):
    """What another tool (tpm2_changeauth) leaves behind before first boot."""
    tpm.tpm2("changeauth", "-c", "o", OWNER_X)
    tpm.tpm2("changeauth", "-c", "e", ENDORSE_X)
    tpm.tpm2("changeauth", "-c", "l", LOCKOUT_X)


def no_secret_in(res):
    for secret in (OWNER_X, ENDORSE_X, LOCKOUT_X):
        assert secret not in res.stdout and secret not in res.stderr


def test_b01_owner_auth_set_and_not_supplied_stops_before_changing_anything(tpm_no_ek, agent_for):
    tpm = tpm_no_ek
    agent = agent_for(tpm)
    set_foreign_auths(tpm)
    before = tpm.snapshot()
    da_before = variable_property(tpm, "TPM2_PT_LOCKOUT_COUNTER")

    res = agent.run("own", check=4)

    assert "owner hierarchy" in res.stderr and "--owner-auth" in res.stderr
    assert res.stderr.count("\n") <= 3, "one clear error, no retry loop: " + res.stderr
    assert tpm.snapshot() == before
    assert variable_property(tpm, "TPM2_PT_LOCKOUT_COUNTER") == da_before
    assert_no_leftovers(tpm)


def test_b01_right_values_from_files_provision_normally(tpm_no_ek, agent_for):
    tpm = tpm_no_ek
    agent = agent_for(tpm)
    set_foreign_auths(tpm)
    owner = agent.secret_file("owner", OWNER_X + "\n")  # as `echo` writes it
    endorse = agent.secret_file("endorse", ENDORSE_X)

    res = agent.run("own", "--owner-auth=" + owner, "--endorsement-auth=" + endorse, check=0)

    no_secret_in(res)
    assert {EK, SRK} <= set(tpm.persistent_handles())
    assert STATE_INDEX in tpm.nv_indices()
    status = agent.json("status")
    assert status["authorization"] == {"owner": True, "endorsement": True, "lockout": True}
    assert status["state"]["state"] == "owned"
    # Once everything is there, no authorization is needed any more: nothing to change.
    agent.run("own", check=0)
    assert_no_leftovers(tpm)


def test_b01_right_values_from_systemd_credentials(tpm_no_ek, agent_for, tmp_path):
    tpm = tpm_no_ek
    agent = agent_for(tpm)
    set_foreign_auths(tpm)
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "tpm-provision.owner-auth").write_text(OWNER_X)
    (creds / "tpm-provision.endorsement-auth").write_text(ENDORSE_X)

    res = agent.run("own", env={"CREDENTIALS_DIRECTORY": str(creds)}, check=0)

    no_secret_in(res)
    assert {EK, SRK} <= set(tpm.persistent_handles())


def test_b01_wrong_owner_value_is_a_clear_error_without_retry_or_lockout(tpm_no_ek, agent_for):
    tpm = tpm_no_ek
    agent = agent_for(tpm)
    set_foreign_auths(tpm)
    wrong = agent.secret_file("owner", "not-the-owner-value")
    endorse = agent.secret_file("endorse", ENDORSE_X)
    before = tpm.snapshot()
    da_before = variable_property(tpm, "TPM2_PT_LOCKOUT_COUNTER")

    res = agent.run("own", "--owner-auth=" + wrong, "--endorsement-auth=" + endorse, check=4)

    assert "rejected the owner hierarchy authorization from " + wrong in res.stderr
    assert "0x9a2" in res.stderr
    assert "not-the-owner-value" not in res.stderr
    no_secret_in(res)
    assert tpm.snapshot() == before
    assert variable_property(tpm, "TPM2_PT_LOCKOUT_COUNTER") == da_before
    assert_no_leftovers(tpm)


def test_b02_endorsement_auth_set_and_not_supplied_is_named(tpm_no_ek, agent_for):
    """The EK must be created under the endorsement hierarchy: without its value the agent
    says so before trying, instead of failing later inside ActivateCredential."""
    tpm = tpm_no_ek
    agent = agent_for(tpm)
    tpm.tpm2("changeauth", "-c", "e", ENDORSE_X)
    before = tpm.snapshot()

    res = agent.run("own", check=4)

    assert "endorsement hierarchy" in res.stderr and "--endorsement-auth" in res.stderr
    assert tpm.snapshot() == before


def test_b02_wrong_endorsement_value_named(tpm_no_ek, agent_for):
    tpm = tpm_no_ek
    agent = agent_for(tpm)
    tpm.tpm2("changeauth", "-c", "e", ENDORSE_X)
    wrong = agent.secret_file("endorse", "wrong")

    res = agent.run("own", "--endorsement-auth=" + wrong, check=4)

    assert "rejected the endorsement hierarchy authorization" in res.stderr
    assert_no_leftovers(tpm)


def test_already_owned_device_needs_no_authorization_after_someone_sets_it(tpm, agent_for):
    agent = agent_for(tpm)
    agent.run("own", check=0)
    set_foreign_auths(tpm)
    snap = tpm.snapshot()

    agent.run("own", check=0)

    assert tpm.snapshot() == snap


def test_too_long_auth_value_is_refused_naming_the_file(tpm, agent_for):
    agent = agent_for(tpm)
    path = agent.secret_file("owner", "x" * 65)

    res = agent.run("own", "--owner-auth=" + path, check=2)

    assert path in res.stderr and "longer than 64 bytes" in res.stderr


def test_missing_auth_file_is_named(tpm, agent_for, tmp_path):
    agent = agent_for(tpm)
    res = agent.run("own", "--owner-auth=" + str(tmp_path / "nope"), check=2)
    assert str(tmp_path / "nope") in res.stderr and "No such file" in res.stderr


def test_world_readable_auth_file_warns(tpm, agent_for):
    agent = agent_for(tpm)
    path = agent.secret_file("owner", "", mode=0o644)
    res = agent.run("own", "--owner-auth=" + path, check=0)
    assert "can be read by other users" in res.stderr


def test_set_lockout_auth_when_empty_then_leave_it(tpm, agent_for):
    agent = agent_for(tpm)
    new = agent.secret_file("lockout", LOCKOUT_X)

    res = agent.run("own", "--set-lockout-auth=" + new, check=0)

    no_secret_in(res)
    assert "Set the lockout authorization" in res.stderr
    assert agent.json("status")["authorization"]["lockout"] is True
    # The value took: the lockout hierarchy accepts it (and an empty one would fail).
    tpm.tpm2("dictionarylockout", "-c", "-p", LOCKOUT_X)

    other = agent.secret_file("lockout2", "something-else")
    res = agent.run("own", "--set-lockout-auth=" + other, check=0)
    assert "already set; left as it is" in res.stderr
    tpm.tpm2("dictionarylockout", "-c", "-p", LOCKOUT_X)


def test_owner_and_endorsement_stay_empty_by_default(tpm, agent_for):
    """The default ownership policy sets no owner or endorsement value, so systemd's SRK
    setup, systemd-cryptenroll and clevis keep working."""
    agent = agent_for(tpm)
    agent.run("own", check=0)
    assert agent.json("status")["authorization"] == {
        "owner": False, "endorsement": False, "lockout": False}


def test_lockout_answer_is_a_clear_error_without_retry(tpm_no_ek, agent_for, tmp_path):
    """A TPM in dictionary-attack lockout (0x921) refusing a command: one error naming the
    lockout and the decoded code, exit 4, the command not repeated."""
    from tpmproxy import CC, TpmProxy
    tpm = tpm_no_ek
    with TpmProxy(tpm, str(tmp_path / "proxy.sock")) as proxy:
        agent = Agent(proxy.tcti, str(tmp_path))
        proxy.inject(0x921, CC["EvictControl"], nth=1)

        res = agent.run("own", check=4)

        assert "dictionary-attack lockout" in res.stderr and "0x921" in res.stderr
        assert "persist the EK" in res.stderr
        assert proxy.count(CC["EvictControl"]) == 1
    assert_no_leftovers(tpm)
