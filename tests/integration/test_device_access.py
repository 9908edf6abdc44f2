"""The TPM device node: missing, or not accessible to the agent's user (field case B13), and
bad command lines. These need no TPM: the agent must stop before talking to one."""
import os
import shutil
import stat
import subprocess
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from agent import AGENT, Agent  # noqa: E402


@pytest.fixture
def public_dir():
    """A directory every user can reach (pytest's tmp_path sits under a 0700 directory)."""
    d = tempfile.mkdtemp(prefix="tpmprov-dev-")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_missing_device_node_exits_no_tpm(tmp_path):
    agent = Agent("device:" + str(tmp_path / "tpmrm0"), str(tmp_path))
    res = agent.run("status", check=3)
    assert "No TPM 2.0 device" in res.stderr and str(tmp_path / "tpmrm0") in res.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the agent as another user")
def test_b13_permission_denied_names_node_owner_mode_and_group(public_dir):
    node = os.path.join(public_dir, "tpmrm0")
    open(node, "wb").close()
    os.chmod(node, 0o600)
    agent = Agent("device:" + node, public_dir)

    res = agent.run("own", user="nobody", check=4)

    assert "Permission denied on " + node in res.stderr
    assert "owner root:root" in res.stderr and "mode 0600" in res.stderr
    assert "tss" in res.stderr
    assert res.stderr.count("\n") == 1, "exactly one error line: " + res.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the agent as another user")
def test_b13_group_access_gets_past_the_permission_check(public_dir):
    """Mode 0660 root:<group> with the user in that group: the permission check passes and
    the agent goes on to the TCTI (which then fails here only because a file is no TPM)."""
    node = os.path.join(public_dir, "tpmrm0")
    open(node, "wb").close()
    os.chown(node, 0, 65534)  # group nogroup
    os.chmod(node, 0o660)
    res = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--init-groups",
                          AGENT, "--tcti=device:" + node, "status"],
                         capture_output=True, text=True)
    assert "Permission denied" not in res.stderr
    assert res.returncode not in (0, 4)


@pytest.mark.parametrize("args,needle", [
    (["frobnicate"], "Unknown command 'frobnicate'"),
    (["own", "--json"], "'own' does not take --json"),
    (["status", "--csv"], "'status' does not take --csv"),
    (["status", "extra"], "Unexpected argument 'extra'"),
    (["--ek-handle=0x01000000", "own"], "Invalid --ek-handle '0x01000000'"),
    (["--state-index=banana", "own"], "Invalid --state-index 'banana'"),
    (["status", "--set-lockout-auth=/x"], "--set-lockout-auth goes with 'own' only"),
    (["--no-such-option"], "Try 'tpm-provision --help'"),
])
def test_bad_command_lines_exit_2_with_the_reason(tmp_path, args, needle):
    res = Agent("device:" + str(tmp_path / "none"), str(tmp_path)).run(*args, check=2)
    assert needle in res.stderr


def test_help_for_every_command_and_version(tmp_path):
    agent = Agent("device:" + str(tmp_path / "none"), str(tmp_path))
    out = agent.run("--help", check=0).stdout
    for cmd in ("own", "status", "ek"):
        assert cmd in out
        sub = agent.run(cmd, "--help", check=0).stdout
        assert sub.startswith("Usage: tpm-provision [OPTIONS] " + cmd)
    assert "Exit status" in out
    assert agent.run("--version", check=0).stdout.startswith("tpm-provision ")
    assert agent.run(check=2).stderr.startswith("Usage:")


def test_tcti_option_beats_environment(tmp_path):
    agent = Agent("device:" + str(tmp_path / "from-env"), str(tmp_path))
    res = agent.run("--tcti=device:" + str(tmp_path / "from-option"), "status", check=3)
    assert "from-option" in res.stderr and "from-env" not in res.stderr
    assert stat.S_ISDIR(os.stat(tmp_path).st_mode)


@pytest.mark.parametrize("tcti", ["swtpmm:path=/run/x.sock", "bogus", "swtpm:path"])
def test_tcti_typo_is_a_configuration_error_that_shows_the_forms(tmp_path, tcti):
    res = Agent("device:" + str(tmp_path / "none"), str(tmp_path)).run(
        "--tcti=" + tcti, "status", check=2)
    assert "The TCTI '%s' cannot be used" % tcti in res.stderr
    assert "swtpm:path=/run/swtpm.sock" in res.stderr and "device:/dev/tpmrm0" in res.stderr


def test_simulator_not_running_is_no_tpm_with_a_hint(tmp_path):
    res = Agent("swtpm:path=" + str(tmp_path / "absent.sock"), str(tmp_path)).run(
        "status", check=3)
    assert "absent.sock" in res.stderr and "simulator running" in res.stderr


def test_config_file_named_on_the_command_line_must_exist(tmp_path):
    missing = str(tmp_path / "dev.conf")
    res = Agent("device:" + str(tmp_path / "none"), str(tmp_path)).run(
        "--config=" + missing, "status", check=2)
    assert "Cannot read the configuration file --config=" + missing in res.stderr


CONNECTION_STRING = ("HostName=dps-x.azure-devices-provisioning.net;"
                     "SharedAccessKeyName=provisioningserviceowner;"
                     "SharedAccessKey=c2VjcmV0LWtleS1Ob3RTaG93bg==")


@pytest.mark.parametrize("args", [
    ["enroll", "--list=batch.csv", CONNECTION_STRING],
    ["enroll", "--list=" + CONNECTION_STRING, "--dry-run"],
    ["enroll", "--list=batch.csv", "--previous=" + CONNECTION_STRING, "--dry-run"],
], ids=["as-argument", "as-list", "as-previous"])
def test_connection_string_in_the_wrong_place_is_never_repeated(tmp_path, args):
    (tmp_path / "batch.csv").write_text("")
    res = Agent("device:" + str(tmp_path / "none"), str(tmp_path)).run(
        *[a.replace("batch.csv", str(tmp_path / "batch.csv")) for a in args])
    assert res.returncode != 0
    out = res.stdout + res.stderr
    assert "c2VjcmV0LWtleS1Ob3RTaG93bg" not in out and "SharedAccessKey=" not in out, out
    assert "not shown" in out
