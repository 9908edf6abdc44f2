"""Bad input the way a hurried person gives it: each is refused before anything is done, with
exit status 2 (tpm-provision(8): "fix it; retrying will not help") and a message that names the
input and the fix. Found by a new user's trial of the README and the man page."""
import os
import pty
import subprocess

import pytest

from agent import AGENT

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
    # Options are read as their keys are, for every command (a review found them unchecked).
    (["--id-scope=bad!!", "status"], "invalid --id-scope=bad!!: it may hold only letters"),
    (["--api-version=a&b", "register"], "invalid --api-version=a&b: it may hold only letters"),
    (["--endpoint=http://x/y", "register"], "invalid --endpoint=http://x/y"),
    (["--endpoint=", "register"], "--endpoint= is empty: give a value, or leave the option out"),
    # The platform's persistent handles: EvictControl as owner fails there, after DPS.
    (["--identity-handle=0x81800001", "status"], "0x81000000 to 0x817fffff"),
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


def test_a_proxy_url_with_a_space_is_refused_not_retried(agent, tmp_path):
    conf = tmp_path / "tp.conf"
    conf.write_text("[Provisioning]\nIdScope=0ne00000001\nProxy=http://proxy .example:3128\n")
    res = run(agent, "register", env={"TPM_PROVISION_CONFIG": str(conf)})
    assert res.returncode == EXIT_USAGE, res.stderr
    assert "invalid Proxy=" in res.stderr and "a space" in res.stderr, res.stderr
    res = run(agent, "register", env={"https_proxy": "http://proxy .example:3128"})
    assert res.returncode == EXIT_USAGE, res.stderr
    assert "$https_proxy is not a valid proxy URL" in res.stderr, res.stderr
    # A no-break space pasted from a document is no better.
    conf.write_text("[Provisioning]\nIdScope=0ne00000001\nProxy=http://proxy\u00a0.example:3128\n")
    res = run(agent, "register", env={"TPM_PROVISION_CONFIG": str(conf)})
    assert res.returncode == EXIT_USAGE, res.stderr
    assert "non-ASCII" in res.stderr, res.stderr


def test_a_bad_provisioning_key_stops_only_the_commands_that_use_it(agent, tmp_path):
    conf = tmp_path / "tp.conf"
    conf.write_text("[Provisioning]\nIdScope=0ne-0001\n")
    env = {"TPM_PROVISION_CONFIG": str(conf)}
    for cmd in (["status"], ["ek"], ["own"]):
        res = run(agent, *cmd, env=env)
        assert res.returncode == 0, (cmd, res.stderr)
        assert "<4>%s:2: invalid IdScope=0ne-0001" % conf in res.stderr, res.stderr
        assert "does not use it" in res.stderr, res.stderr
    for cmd in (["register"], ["sas"]):
        res = run(agent, *cmd, env=env)
        assert res.returncode == EXIT_USAGE, (cmd, res.stderr)
        assert "<3>%s:2: invalid IdScope=0ne-0001" % conf in res.stderr, res.stderr


def stderr_on_a_terminal(argv, env):
    """What the agent writes to standard error when that is a terminal (a pty)."""
    primary, secondary = pty.openpty()
    try:
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=secondary)
        os.close(secondary)
        out = b""
        while True:
            try:
                chunk = os.read(primary, 4096)
            except OSError:  # EIO: the agent has closed its end
                break
            if not chunk:
                break
            out += chunk
        proc.wait(60)
        return proc.returncode, out.decode(errors="replace")
    finally:
        os.close(primary)


def test_a_terminal_reads_error_and_warning_not_priority_prefixes(agent, tmp_path):
    # The pipe (journald's view) keeps the <N> prefixes.
    env = dict(os.environ, **agent.env)
    env.update(TPM_PROVISION_TCTI=agent.tcti, TPM_PROVISION_CONFIG=str(tmp_path / "absent.conf"))
    piped = agent.run("--srk-handle=0x81010001", "status", env=env)
    assert "<3>" in piped.stderr and "<4>" in piped.stderr, piped.stderr
    rc, said = stderr_on_a_terminal([AGENT, "--srk-handle=0x81010001", "status"], env)
    assert rc == EXIT_USAGE, said
    assert "<" not in said.replace("<N>", ""), said
    assert "\nerror: " in "\n" + said and "warning: " in said, said


def test_a_configuration_file_named_by_the_environment_that_is_missing_is_said(agent, tmp_path):
    res = run(agent, "status", env={"TPM_PROVISION_CONFIG": str(tmp_path / "tp.cnf")})
    assert res.returncode == 0
    assert "tp.cnf (TPM_PROVISION_CONFIG) does not exist" in res.stderr, res.stderr


# -- TPM state another tool left: refused before it costs a dictionary-attack count ----------

from tpmcheck import lockout_counter  # noqa: E402


def test_b01_someone_elses_srk_without_noda_is_refused_before_any_use(tpm_no_ek, agent_for,
                                                                        tmp_path):
    """Field case B01's kind: another tool persisted its own storage key with a password and
    tpm2-tools' default attributes (no noDA) at the SRK handle. Every registration would use
    it with the empty password and each failure would count towards lockout: `own` and
    `register` refuse it at once (exit 2), and the counter does not move."""
    tpm = tpm_no_ek
    agent = agent_for(tpm)
    ctx = str(tmp_path / "theirs.ctx")
    tpm.tpm2("createprimary", "-C", "o", "-G", "rsa2048:aes128cfb", "-p", "their-secret",
             "-c", ctx)
    tpm.tpm2("evictcontrol", "-C", "o", "-c", ctx, "0x81000001")
    tpm.tpm2("flushcontext", "-t")
    before = lockout_counter(tpm)
    env = {"TPM_PROVISION_CONFIG": os.devnull, "TPM_PROVISION_CMDLINE": os.devnull,
           "RUNTIME_DIRECTORY": str(tmp_path / "run"), "TPM_PROVISION_ID_SCOPE": "0ne00000001",
           "TPM_PROVISION_ENDPOINT": "https://127.0.0.1:9"}

    for args in (["own"], ["register"], ["register"]):
        res = agent.run(*args, env=env)
        assert res.returncode == EXIT_USAGE, res.stderr
        assert "lacks noDA" in res.stderr and "--srk-handle" in res.stderr, res.stderr
        assert "127.0.0.1" not in res.stderr   # no request was tried
    assert lockout_counter(tpm) == before


def test_b21_an_ek_certificate_index_with_a_password_and_no_no_da_costs_no_count(tpm, agent_for):
    """Field case B21's kind: the EK certificate index is someone else's, with a password and
    without NO_DA. Reading it with its own (empty) authorization would count towards lockout
    at every `ek`: the agent does not try; the export still works."""
    agent = agent_for(tpm)
    tpm.tpm2("nvundefine", "-C", "p", "0x01c00002")
    tpm.tpm2("nvdefine", "0x01c00002", "-C", "o", "-s", "64", "-p", "idx-secret",
             "-a", "ownerwrite|authread|authwrite")
    before = lockout_counter(tpm)

    for _ in range(4):
        out = agent.json("ek")
        assert out["ekCertificate"]["present"] is True
        assert out["ekCertificate"]["readable"] is False
        assert out["registrationId"]
    assert lockout_counter(tpm) == before


def test_b06_a_storage_key_at_the_ek_handle_is_not_exported_as_the_ek(tpm_no_ek, agent_for,
                                                                       tmp_path):
    """Field case B06's kind: someone persisted an owner storage key (no EK policy) at
    0x81010001. Exported, it would be enrolled as this TPM's EK next to the real EK
    certificate: `ek` and `own` refuse it (exit 2) and name the handle."""
    tpm = tpm_no_ek
    agent = agent_for(tpm)
    ctx = str(tmp_path / "srk.ctx")
    tpm.tpm2("createprimary", "-C", "o", "-G", "rsa2048:aes128cfb", "-c", ctx)
    tpm.tpm2("evictcontrol", "-C", "o", "-c", ctx, "0x81010001")
    tpm.tpm2("flushcontext", "-t")

    for args in (["ek", "--json"], ["own"]):
        res = agent.run(*args, env={"TPM_PROVISION_CONFIG": os.devnull,
                                    "RUNTIME_DIRECTORY": str(tmp_path / "run")})
        assert res.returncode == EXIT_USAGE, res.stderr
        assert "0x81010001" in res.stderr and "no EK policy" in res.stderr, res.stderr
        assert res.stdout == ""
