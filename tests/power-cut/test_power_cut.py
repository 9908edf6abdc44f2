"""Power cuts and killed agents at every TPM command of a whole first boot: `own`, then
`register` against the DPS emulator (issue 7; DESIGN.md: "a power cut at any TPM command
leaves a device that converges on the next run").

For every N from 1 to the number of TPM commands a clean first boot sends:
  after   the TPM executes command N, then loses power before its answer is delivered;
  before  the TPM loses power as command N arrives (it never runs);
  kill    the agent is SIGKILLed while command N is under way; the TPM keeps running and,
          as the kernel's resource manager would, the dead process's objects are flushed.
Then the device boots again (own, register) until both succeed, and must end exactly as a
clean first boot: assigned, the hub accepts its token, only the documented handles, nothing
transient, the lockout counter untouched, at most one extra registration's worth of DPS
requests.
"""
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.parse

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
sys.path.insert(0, os.path.join(HERE, "..", "emulator"))
from agent import AGENT  # noqa: E402
from client import Emulator  # noqa: E402
from swtpm import TemplateSwtpm  # noqa: E402
from tpmcheck import EK, SRK, STATE_INDEX, assert_no_leftovers, variable_property  # noqa: E402
from tpmproxy import TpmProxy  # noqa: E402

IDENTITY = 0x81000100
# One poll, asked after 1 s: registrations stay short.
EMULATOR_ARGS = ["--polls", "1", "--retry-after", "1"]


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    d = tmp_path_factory.mktemp("emu")
    e = Emulator(state_dir=str(d), args=EMULATOR_ARGS)
    e.start()
    yield e
    e.close()


class Boot:
    """One device built from the template TPM, with a proxy in front of its TPM."""

    def __init__(self, workdir, emu):
        self.workdir = str(workdir)
        self.emu = emu
        self.tpm = TemplateSwtpm(self.workdir)
        self.proxy = TpmProxy(self.tpm, os.path.join(self.workdir, "proxy.sock")).start()
        conf = os.path.join(self.workdir, "tpm-provision.conf")
        with open(conf, "w") as f:
            f.write("[Provisioning]\nIdScope=%s\nGlobalEndpoint=%s\nCABundle=%s\n"
                    "TimeoutSec=60\n" % (emu.id_scope, emu.url, emu.ca))
        self.env = dict(os.environ, TPM_PROVISION_TCTI=self.proxy.tcti,
                        TPM_PROVISION_CONFIG=conf, TPM_PROVISION_CMDLINE=os.devnull,
                        RUNTIME_DIRECTORY=os.path.join(self.workdir, "run"), TSS2_LOG="all+none")

    def start(self, *args):
        return subprocess.Popen([AGENT, *args], env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def run(self, *args):
        p = self.start(*args)
        out, err = p.communicate(timeout=120)
        return p.returncode, out, err

    def first_boot(self):
        """own then register, as the two boot phases run them; stops at the first failure."""
        results = []
        for cmd in ("own", "register"):
            results.append((cmd,) + self.run(cmd))
            if results[-1][1] != 0:
                break
        return results

    def close(self):
        self.proxy.close()
        self.tpm.close()


def device_requests(emu):
    return [e for e in emu.log() if e.get("kind") in ("put_challenge", "put_auth", "get")
            or "/registrations/" in e.get("path", "")]


_CLEAN = {}


def clean_boot(tmp_path_factory, emu):
    """The TPM commands and DPS requests of one clean first boot, measured once."""
    if not _CLEAN:
        b = Boot(tmp_path_factory.mktemp("clean"), emu)
        try:
            enroll(b, emu)
            b.proxy.reset_log()
            before = len(device_requests(emu))
            results = b.first_boot()
            assert all(r[1] == 0 for r in results), results
            _CLEAN["commands"] = len(b.proxy.log)
            _CLEAN["requests"] = len(device_requests(emu)) - before
            _CLEAN["persistent"] = b.tpm.persistent_handles()
            _CLEAN["nv"] = b.tpm.nv_indices()
        finally:
            b.close()
    return _CLEAN


def enroll(b, emu):
    rc, out, err = b.run("ek", "--json")
    assert rc == 0, err
    ek = json.loads(out)
    regid = ek["registrationId"]
    if emu.service("GET", "/enrollments/" + regid).status != 200:
        emu.create_enrollment(base64.b64decode(ek["endorsementKey"]))
    return regid


def hub_accepts(b, emu):
    rc, token, err = b.run("sas")
    assert rc == 0, err
    fields = dict(p.split("=", 1) for p in token.strip().split(" ", 1)[1].split("&"))
    with open(os.path.join(b.workdir, "run", "identity.json")) as f:
        ident = json.load(f)
    return emu.hub_check(ident["deviceId"], urllib.parse.unquote(fields["sig"]), fields["se"],
                         hub=ident["assignedHub"], sr=fields["sr"]).status == 200


def hub_of(b):
    rc, out, err = b.run("status", "--json")
    assert rc == 0, err
    return json.loads(out)["state"].get("assignedHub")


HUB_B = "hub-b.azure-devices.net"


def pytest_generate_tests(metafunc):
    # The numbers of commands are measured at collection time, with a throwaway emulator.
    if "cut" in metafunc.fixturenames:
        metafunc.parametrize("cut", range(1, _count_commands() + 1))
    if "recut" in metafunc.fixturenames:
        metafunc.parametrize("recut", range(1, _count_commands("reregister") + 1))


_COUNT = {}


def _count_commands(what="first"):
    """TPM commands of one clean first boot (own + register), or of a re-registration to
    another hub (register --force), measured with a throwaway emulator when the tests are
    collected."""
    if what not in _COUNT:
        d = tempfile.mkdtemp(prefix="tpmprov-powercut-count-")
        os.makedirs(os.path.join(d, "emu"))
        os.makedirs(os.path.join(d, "dev"))
        e = Emulator(state_dir=os.path.join(d, "emu"), args=EMULATOR_ARGS)
        e.start()
        try:
            b = Boot(os.path.join(d, "dev"), e)
            try:
                enroll(b, e)
                b.proxy.reset_log()
                results = b.first_boot()
                assert all(r[1] == 0 for r in results), results
                _COUNT["first"] = len(b.proxy.log)
                move_to_hub_b(b, e)
                b.proxy.reset_log()
                rc, _, err = b.run("register", "--force")
                assert rc == 0, err
                _COUNT["reregister"] = len(b.proxy.log)
            finally:
                b.close()
        finally:
            e.close()
            shutil.rmtree(d, ignore_errors=True)
    return _COUNT[what]


def move_to_hub_b(b, emu):
    """The enrollment now allocates hub B (a reassignment, field case B29 d)."""
    rc, out, err = b.run("ek", "--json")
    assert rc == 0, err
    emu.create_enrollment(base64.b64decode(json.loads(out)["endorsementKey"]),
                          iotHubHostName=HUB_B)


def interrupt(b, mode, n, runs):
    """Runs the agent commands `runs` (argument tuples) in order, as a boot does, and cuts the
    TPM's power after or before TPM command n, or kills the agent at it; stops at the first
    command that fails. Returns with the TPM powered again and no session of the dead agent
    left, as the kernel's resource manager would leave it."""
    if mode == "kill":
        held = b.proxy.pause("after", n=n)
        for args in runs:
            p = b.start(*args)
            while p.poll() is None and not held.reached.is_set():
                held.reached.wait(0.05)
            if held.reached.is_set():
                p.kill()
                p.wait()
                held.release()
                p.communicate()
                break
            _, err = p.communicate()
            assert p.returncode == 0, err
        # What the kernel's resource manager does for a process that died.
        b.proxy.wait_idle()
        b.tpm.tpm2("flushcontext", "-t")
        b.tpm.tpm2("flushcontext", "-l")
    else:
        (b.proxy.cut_after if mode == "after" else b.proxy.cut_before)(n=n)
        for args in runs:
            if b.run(*args)[0] != 0:
                break
        assert b.proxy.cut_event.is_set(), "the cut point was never reached"
        b.tpm.start()  # power comes back: swtpm's next start follows an unclean stop


def boot_until_up(b):
    """Boots again (own, then register) until both phases succeed: at most two more boots."""
    for attempt in range(2):
        results = b.first_boot()
        if all(r[1] == 0 for r in results) and len(results) == 2:
            return
    assert all(r[1] == 0 for r in results) and len(results) == 2, results


@pytest.mark.parametrize("mode", ["after", "before", "kill"])
def test_power_cut_or_kill_at_every_command_of_a_first_boot(mode, cut, tmp_path,
                                                             tmp_path_factory, emu):
    clean = clean_boot(tmp_path_factory, emu)
    b = Boot(tmp_path, emu)
    try:
        enroll(b, emu)
        da_before = variable_property(b.tpm, "TPM2_PT_LOCKOUT_COUNTER")
        requests_before = len(device_requests(emu))
        b.proxy.reset_log()

        interrupt(b, mode, cut, [("own",), ("register",)])
        boot_until_up(b)

        status = json.loads(b.run("status", "--json")[1])
        assert status["state"]["state"] == "assigned"
        assert hub_accepts(b, emu)
        assert b.tpm.persistent_handles() == clean["persistent"]
        assert b.tpm.nv_indices() == clean["nv"]
        assert {EK, SRK, IDENTITY} <= set(b.tpm.persistent_handles())
        assert STATE_INDEX in b.tpm.nv_indices()
        assert_no_leftovers(b.tpm)
        assert variable_property(b.tpm, "TPM2_PT_LOCKOUT_COUNTER") <= da_before
        # At most one registration's worth of extra DPS requests for the cut.
        spent = len(device_requests(emu)) - requests_before
        assert spent <= 2 * clean["requests"], spent
    finally:
        b.close()


@pytest.mark.parametrize("mode", ["after", "before", "kill"])
def test_power_cut_or_kill_at_every_command_of_a_reregistration_to_another_hub(mode, recut,
                                                                               tmp_path, emu):
    """A provisioned device re-registers (register --force) after its enrollment moved to hub
    B, and the power goes (or the agent is killed) at command N of it. The next boots must end
    on hub B with a key hub B accepts: never on the old hub with the new key, which the fast
    path would keep for good."""
    b = Boot(tmp_path, emu)
    try:
        enroll(b, emu)
        assert all(r[1] == 0 for r in b.first_boot())
        move_to_hub_b(b, emu)
        b.proxy.reset_log()

        interrupt(b, mode, recut, [("register", "--force")])
        boot_until_up(b)   # own, then register (no --force: what a boot runs)
        if hub_of(b) != HUB_B:
            # The cut came before DPS answered: the old assignment stands, whole and working.
            assert hub_accepts(b, emu)
            rc, _, err = b.run("register", "--force")
            assert rc == 0, err
        assert hub_of(b) == HUB_B
        assert hub_accepts(b, emu)
        assert {EK, SRK, IDENTITY} <= set(b.tpm.persistent_handles())
        assert_no_leftovers(b.tpm)
    finally:
        b.close()
