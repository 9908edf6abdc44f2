"""`tpm-provision status`: reports without changing anything."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from tpmcheck import assert_no_leftovers  # noqa: E402


def test_status_of_a_fresh_tpm_changes_nothing(tpm_no_ek, agent_for):
    tpm = tpm_no_ek
    agent = agent_for(tpm)
    before = tpm.snapshot()

    s = agent.json("status")

    assert tpm.snapshot() == before
    assert s["ek"]["present"] is False and s["srk"]["present"] is False
    assert s["state"]["record"] == "none"
    assert s["tpm"]["manufacturer"].startswith("SW")
    assert s["dictionaryAttack"]["inLockout"] is False
    text = agent.run("status", check=0).stdout
    assert "State record:     none" in text
    assert_no_leftovers(tpm)


def test_status_reports_the_lockout_counter(tpm, agent_for):
    agent = agent_for(tpm)
    # An NV index with dictionary-attack protection, read with a wrong password: one failure.
    tpm.tpm2("nvdefine", "0x01000200", "-C", "o", "-s", "8", "-a", "authread|authwrite",
             "-p", "right")
    tpm.tpm2("nvread", "0x01000200", "-C", "0x01000200", "-P", "wrong", check=False)

    s = agent.json("status")

    assert s["dictionaryAttack"]["counter"] == 1
    assert "1 failures of" in agent.run("status", check=0).stdout
