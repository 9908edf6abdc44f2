"""Bad input the way a hurried person gives it: each is refused before anything is done, with
exit status 2 (tpm-provision(8): "fix it; retrying will not help") and a message that names the
input and the fix. Found by a new user's trial of the README and the man page."""
import os

import pytest

EXIT_USAGE = 2


@pytest.fixture
def agent(tpm, agent_for, tmp_path):
    a = agent_for(tpm)
    a.env = {"TPM_PROVISION_CONFIG": os.devnull, "TPM_PROVISION_CMDLINE": os.devnull,
             "RUNTIME_DIRECTORY": str(tmp_path / "run")}
    return a


def run(agent, *args, env=None):
    full = dict(agent.env)
    full.update(env or {})
    return agent.run(*args, env=full)


@pytest.mark.parametrize("args, said", [
    (["--srk-handle=0x81010001", "own"], "EKHandle= (--ek-handle) and SRKHandle= (--srk-handle) "
                                          "both name 0x81010001"),
    (["--identity-handle=0x81000001", "status"], "SRKHandle= (--srk-handle) and IdentityHandle= "
                                                  "(--identity-handle) both name 0x81000001"),
    (["ek", "--json", "--csv"], "--json and --csv exclude each other"),
    (["-q", "-v", "status"], "--verbose and --quiet exclude each other"),
    (["sas", "--resource="], "--resource= is empty"),
    (["sas", "--expiry=@9999999999"], "at most a year ahead"),
    (["--timeout=100000", "status"], "invalid --timeout=100000: it is out of range"),
    (["enroll", "--list=x.csv", "--endpoint=http://127.0.0.1:9"],
     "Invalid --endpoint=http://127.0.0.1:9: plain http:// is not accepted"),
])
def test_refused_at_once_with_exit_2(agent, args, said):
    res = run(agent, *args)
    assert res.returncode == EXIT_USAGE, res.stderr
    assert said in res.stderr, res.stderr
    assert res.stdout == ""


def test_timeout_takes_the_units_timeoutsec_takes(agent):
    assert run(agent, "--timeout=15min", "status").returncode == 0


def test_files_that_cannot_be_read_are_named_with_the_reason_exit_2(agent, tmp_path):
    missing = str(tmp_path / "no-such")
    res = run(agent, "--owner-auth=%s" % tmp_path, "status")
    assert res.returncode == EXIT_USAGE and "Is a directory" in res.stderr, res.stderr
    res = run(agent, "status", env={"TPM_PROVISION_CMDLINE": missing})
    assert res.returncode == EXIT_USAGE and missing in res.stderr, res.stderr

    listing = tmp_path / "l.csv"
    listing.write_text("registrationId,endorsementKey\n")
    base = ["enroll", "--list=%s" % listing, "--endpoint=https://127.0.0.1:9"]
    cs = tmp_path / "cs"
    cs.write_text("HostName=x.azure-devices-provisioning.net;SharedAccessKeyName=p;"
                  "SharedAccessKey=YWJj\n")
    os.chmod(cs, 0o600)
    for extra, said in (
            (["--connection-string-file=" + missing], "Cannot read the connection string from"),
            (["--connection-string-file=%s" % cs, "--initial-twin=" + missing],
             "Cannot open the initial twin"),
            (["--connection-string-file=%s" % cs, "--results=%s/dir/r.jsonl" % missing],
             "Cannot open the results file")):
        res = run(agent, *base, *extra)
        assert res.returncode == EXIT_USAGE, (extra, res.stderr)
        assert said in res.stderr and "No such file or directory" in res.stderr, res.stderr


def test_a_configuration_file_named_by_the_environment_that_is_missing_is_said(agent, tmp_path):
    res = run(agent, "status", env={"TPM_PROVISION_CONFIG": str(tmp_path / "tp.cnf")})
    assert res.returncode == 0
    assert "tp.cnf (TPM_PROVISION_CONFIG) does not exist" in res.stderr, res.stderr
