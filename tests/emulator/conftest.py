"""Fixtures for the DPS emulator's own tests."""
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "lib"))

import client  # noqa: E402
import dps_tpm2  # noqa: E402
from dps_testing import ID_SCOPE, SoftDevice  # noqa: E402


@pytest.fixture(scope="module")
def emu_module():
    with client.Emulator(id_scope=ID_SCOPE) as emu:
        yield emu


@pytest.fixture
def emu(emu_module):
    """The module's emulator with no faults and an empty request log."""
    emu_module.clear_faults()
    emu_module.clear_log()
    yield emu_module
    emu_module.clear_faults()


@pytest.fixture(scope="session")
def soft_keys():
    """One software EK and SRK (TPM2B_PUBLIC bytes) for tests that need no TPM.  Tests make
    their enrollments distinct by registration ID instead of by key."""
    return dps_tpm2.software_rsa_public("ek"), dps_tpm2.software_rsa_public("srk")


@pytest.fixture
def make_device(emu, soft_keys):
    counter = [0]

    def make(name=None, **enrollment):
        counter[0] += 1
        regid = name or "dev-%s-%d" % (os.urandom(3).hex(), counter[0])
        return SoftDevice(emu, soft_keys[0], soft_keys[1], regid, **enrollment)
    return make
