"""Fixtures for integration tests: the real agent binary against a private swtpm."""
import base64
import json
import os
import sys
import urllib.parse

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "lib"))

from swtpm import Swtpm  # noqa: E402

from agent import AGENT, Agent  # noqa: E402,F401


@pytest.fixture
def tpm(tmp_path):
    t = Swtpm(str(tmp_path))
    yield t
    t.close()


@pytest.fixture
def tpm_no_ek(tmp_path):
    """A TPM as real ones usually come: an EK certificate in NV, no persisted EK."""
    t = Swtpm(str(tmp_path), persist_ek=False)
    yield t
    t.close()


@pytest.fixture
def agent_for(tmp_path):
    def make(t):
        return Agent(t.tcti, str(tmp_path))
    return make


sys.path.insert(0, os.path.join(ROOT, "tests", "emulator"))
from client import Emulator  # noqa: E402


@pytest.fixture
def emulator():
    """A DPS emulator on a free loopback port, with its own state directory."""
    emu = Emulator()
    emu.start()
    yield emu
    emu.close()


class Device:
    """One device: a TPM, the agent with its own configuration file and runtime directory,
    and the DPS emulator it registers with."""

    def __init__(self, tpm, agent, emu, workdir):
        self.tpm, self.agent, self.emu = tpm, agent, emu
        self.workdir = workdir
        self.runtime_dir = os.path.join(workdir, "run")
        self.config_path = os.path.join(workdir, "tpm-provision.conf")
        self.extra_env = {}
        self.write_config()

    def write_config(self, provisioning=None, tpm=None):
        """[Provisioning] IdScope, GlobalEndpoint and CABundle pointing at the emulator,
        plus any keys given (None as a value drops a key)."""
        prov = {"IdScope": self.emu.id_scope, "GlobalEndpoint": self.emu.url,
                "CABundle": self.emu.ca}
        prov.update(provisioning or {})
        lines = ["[Provisioning]"] + ["%s=%s" % kv for kv in prov.items() if kv[1] is not None]
        if tpm:
            lines += ["[TPM]"] + ["%s=%s" % kv for kv in tpm.items() if kv[1] is not None]
        with open(self.config_path, "w") as f:
            f.write("\n".join(lines) + "\n")

    def env(self):
        env = {"RUNTIME_DIRECTORY": self.runtime_dir, "TPM_PROVISION_CONFIG": self.config_path,
               "TPM_PROVISION_CMDLINE": os.devnull}
        env.update(self.extra_env)
        return env

    def run(self, *args, env=None, **kw):
        full = self.env()
        full.update(env or {})
        return self.agent.run(*args, env=full, **kw)

    def ek(self):
        return json.loads(self.run("ek", "--json", check=0).stdout)

    def enroll(self, **fields):
        """Creates the individual enrollment for this TPM's EK; returns the registration ID."""
        ek = base64.b64decode(self.ek()["endorsementKey"])
        return self.emu.create_enrollment(ek, **fields)

    def identity(self):
        with open(os.path.join(self.runtime_dir, "identity.json")) as f:
            return json.load(f)

    def hub_check(self, token=None):
        """Asks the emulator's hub whether a token from `tpm-provision sas` is good.
        Returns the HTTP status (200 accepted, 401 refused)."""
        token = token or self.run("sas", check=0).stdout.strip()
        fields = dict(p.split("=", 1) for p in token[len("SharedAccessSignature "):].split("&"))
        ident = self.identity()
        sig = urllib.parse.unquote(fields["sig"])
        return self.emu.hub_check(ident["deviceId"], sig, fields["se"], hub=ident["assignedHub"],
                                  sr=fields["sr"]).status


@pytest.fixture
def device(tpm_no_ek, agent_for, emulator, tmp_path):
    """An owned device whose EK is enrolled in the emulator; not registered yet."""
    d = Device(tpm_no_ek, agent_for(tpm_no_ek), emulator, str(tmp_path))
    d.run("own", check=0)
    d.registration_id = d.enroll()
    return d
