"""Helpers shared by the emulator's tests (kept out of conftest.py so that test modules can
import them by a name no other test directory uses)."""
import base64
import hashlib
import hmac
import struct

import client

# An ID scope with letters, so that case-insensitive matching is actually exercised.
ID_SCOPE = "0ne00ABC123"


class SoftDevice:
    """A device whose keys are software stand-ins.  It cannot open the blob, so it asks the
    emulator's admin API for the challenge key: these tests are about HTTP and SAS
    behaviour; the blob itself is proven against a TPM in test_emulator_tpm_blob.py."""

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


def split_fields(blob):
    """The six u16-sized fields of §2.1, each with its size prefix.  Written here rather
    than imported from the emulator, so the tests read the blob on their own terms."""
    fields, pos = [], 0
    for _ in range(6):
        if pos + 2 > len(blob):
            raise ValueError("blob ends inside a size field")
        (size,) = struct.unpack(">H", blob[pos:pos + 2])
        if pos + 2 + size > len(blob):
            raise ValueError("blob ends inside a field")
        fields.append(blob[pos:pos + 2 + size])
        pos += 2 + size
    if pos != len(blob):
        raise ValueError("trailing bytes")
    return fields
