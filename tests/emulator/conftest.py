"""Fixtures for the DPS emulator's own tests."""
import base64
import hashlib
import hmac
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "lib"))

import client  # noqa: E402
import tpm2_blob  # noqa: E402

# An ID scope with letters, so that case-insensitive matching is actually exercised.
ID_SCOPE = "0ne00ABC123"


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
    return tpm2_blob.software_rsa_public("ek"), tpm2_blob.software_rsa_public("srk")


class SoftDevice:
    """A device whose keys are software stand-ins.  It cannot open the blob, so it asks the
    emulator's admin API for the challenge key: these tests are about HTTP and SAS
    behaviour; the blob itself is proven against a TPM in test_tpm_blob.py."""

    def __init__(self, emu, ek, device_srk, regid, **enrollment):
        self.emu = emu
        self.ek = ek
        self.srk = device_srk
        self.regid = emu.create_enrollment(ek, regid, **enrollment)

    def body(self, tpm=True, payload=None):
        out = {"registrationId": self.regid}
        if tpm:
            out["tpm"] = {"endorsementKey": base64.b64encode(self.ek).decode(),
                          "storageRootKey": base64.b64encode(self.srk).decode()}
        if payload is not None:
            out["payload"] = payload
        return out

    def challenge(self, conn=None, api_version=client.DEVICE_API):
        return self.emu.request("PUT", self.emu.register_path(self.regid, api_version),
                                self.body(), conn=conn)

    def key(self):
        return self.emu.keys(self.regid)[0]

    def auth(self, key=None, ttl=3600, now=None):
        key = key or self.key()
        return self.emu.device_auth(self.regid,
                                    lambda m: hmac.new(key, m, hashlib.sha256).digest(),
                                    ttl=ttl, now=now)

    def put_auth(self, auth, conn=None, tpm=True, payload=None):
        return self.emu.request("PUT", self.emu.register_path(self.regid),
                                self.body(tpm, payload), {"Authorization": auth}, conn=conn)

    def poll(self, op_id, auth, conn=None):
        return self.emu.request("GET", self.emu.operation_path(self.regid, op_id), None,
                                {"Authorization": auth}, conn=conn)

    def register(self, payload=None, conn=None):
        """Challenge, authenticated PUT, polls until not 202.  Returns the final response."""
        r = self.challenge(conn)
        assert r.status == 401, r
        auth = self.auth()
        r = self.put_auth(auth, conn, payload=payload)
        assert r.status == 202, r
        op_id = r.json()["operationId"]
        for _ in range(20):
            r = self.poll(op_id, auth, conn)
            if r.status != 202:
                return r
        raise AssertionError("operation never finished")


@pytest.fixture
def make_device(emu, soft_keys):
    counter = [0]

    def make(name=None, **enrollment):
        counter[0] += 1
        regid = name or "dev-%s-%d" % (os.urandom(3).hex(), counter[0])
        return SoftDevice(emu, soft_keys[0], soft_keys[1], regid, **enrollment)
    return make
