"""Independence proof: a software TPM consumes the emulator's authenticationKey with
tpm2-tools only (protocol doc §2.2, §5.3, §5.4), and the keys it imports sign SAS tokens
that the emulator (device API) and its hub check accept.

One swtpm serves the whole module; every test leaves no transient object or session behind.
"""
import base64
import hashlib
import hmac
import os
import time
from urllib.parse import quote

import pytest

from dps_testing import split_fields
from swtpm import Swtpm, new_workdir, remove_workdir

EK_HANDLE = "0x81010001"
SRK_HANDLE = "0x81000001"
SRK_ATTRS = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda|restricted|decrypt"
CRED_HEADER = bytes.fromhex("badcc0de00000001")   # tpm2_makecredential file header, §5.4


class TpmDevice:
    """Device-side steps of §2.2 done with tpm2-tools against swtpm."""

    def __init__(self, tpm, workdir):
        self.tpm = tpm
        self.dir = workdir
        self.n = 0
        ek_pub = self.path("ek.pub")
        tpm.tpm2("readpublic", "-c", EK_HANDLE, "-o", ek_pub)
        with open(ek_pub, "rb") as f:
            self.ek = f.read()
        # §3.2 SRK (TCG storage template), persisted the way every client does it.
        srk_ctx = self.path("srk.ctx")
        tpm.tpm2("createprimary", "-C", "o", "-G", "rsa2048:null:aes128cfb", "-a", SRK_ATTRS,
                 "-c", srk_ctx)
        tpm.tpm2("evictcontrol", "-C", "o", "-c", srk_ctx, SRK_HANDLE)
        tpm.tpm2("flushcontext", "-t")
        srk_pub = self.path("srk.pub")
        tpm.tpm2("readpublic", "-c", SRK_HANDLE, "-o", srk_pub)
        with open(srk_pub, "rb") as f:
            self.srk = f.read()

    def path(self, name):
        return os.path.join(self.dir, name)

    def write(self, name, data):
        with open(self.path(name), "wb") as f:
            f.write(data)
        return self.path(name)

    def body(self, regid):
        return {"registrationId": regid,
                "tpm": {"endorsementKey": base64.b64encode(self.ek).decode(),
                        "storageRootKey": base64.b64encode(self.srk).decode()}}

    def activate(self, authentication_key_b64):
        """ActivateCredential + Import + Load.  Returns the key's context file."""
        self.n += 1
        t = "k%d-" % self.n
        f = split_fields(base64.b64decode(authentication_key_b64))
        cred = self.write(t + "cred", CRED_HEADER + f[0] + f[1])
        dup, seed, pub = (self.write(t + n, f[i]) for i, n in ((2, "dup"), (3, "seed"),
                                                               (4, "pub")))
        session = self.path(t + "session.ctx")
        inner = self.path(t + "inner")
        self.tpm.tpm2("startauthsession", "--policy-session", "-S", session)
        try:
            self.tpm.tpm2("policysecret", "-S", session, "-c", "e")
            self.tpm.tpm2("activatecredential", "-c", SRK_HANDLE, "-C", EK_HANDLE, "-i", cred,
                          "-o", inner, "-P", "session:" + session)
        finally:
            self.tpm.tpm2("flushcontext", session, check=False)
        priv = self.path(t + "priv")
        self.tpm.tpm2("import", "-C", SRK_HANDLE, "-u", pub, "-i", dup, "-s", seed,
                      "-k", inner, "-r", priv)
        ctx = self.path(t + "key.ctx")
        self.tpm.tpm2("load", "-C", SRK_HANDLE, "-u", pub, "-r", priv, "-c", ctx)
        self.tpm.tpm2("flushcontext", "-t")
        return ctx

    def hmac(self, key_ctx, data):
        """TPM2_HMAC with SHA-256 (§2.3)."""
        self.n += 1
        msg = self.write("m%d" % self.n, data)
        out = self.path("m%d.mac" % self.n)
        try:
            self.tpm.tpm2("hmac", "-c", key_ctx, "-g", "sha256", "-o", out, msg)
        finally:
            self.tpm.tpm2("flushcontext", "-t", check=False)
        with open(out, "rb") as f:
            return f.read()

    def clean(self):
        snap = self.tpm.snapshot()
        return snap["transient"] == [] and snap["sessions"] == []


@pytest.fixture(scope="module")
def tpmdev():
    workdir = new_workdir("dps-emu-tpm-")
    tpm = Swtpm(workdir, ek_cert=True, persist_ek=True)
    try:
        yield TpmDevice(tpm, workdir)
    finally:
        tpm.close()
        remove_workdir(workdir)


def challenge(emu, dev, regid):
    r = emu.request("PUT", emu.register_path(regid), dev.body(regid))
    assert r.status == 401, r
    return r.json()["authenticationKey"]


def tpm_device_auth(emu, dev, regid, key_ctx):
    return emu.device_auth(regid, lambda m: dev.hmac(key_ctx, m), ttl=600)


def assign(emu, dev, regid, auth):
    r = emu.request("PUT", emu.register_path(regid), dev.body(regid), {"Authorization": auth})
    assert r.status == 202, r
    op_id = r.json()["operationId"]
    for _ in range(10):
        r = emu.request("GET", emu.operation_path(regid, op_id), None, {"Authorization": auth})
        if r.status == 200:
            return r.json()
        assert r.status == 202, r
    raise AssertionError("not assigned")


def hub_sas_status(emu, dev, device_id, key_ctx):
    se = str(int(time.time()) + 600)
    sig = base64.b64encode(dev.hmac(key_ctx, emu.hub_string_to_sign(device_id, se))).decode()
    return emu.hub_check(device_id, sig, se).status


def test_tpm_activates_challenge_and_hub_keys_and_both_verify(emu, tpmdev):
    regid = emu.create_enrollment(tpmdev.ek)            # regid derived from the EK, §4
    blob_b64 = challenge(emu, tpmdev, regid)
    sizes = [len(f) for f in split_fields(base64.b64decode(blob_b64))]
    assert sizes == [54, 258, 144, 258, 82, 152]         # §2.1, field 6 = 2 + 150 bytes

    k1_ctx = tpmdev.activate(blob_b64)
    # The TPM holds the emulator's challenge key K1: its HMAC equals a software HMAC with K1.
    k1 = emu.keys(regid)[0]
    assert tpmdev.hmac(k1_ctx, b"x\n1") == hmac.new(k1, b"x\n1", hashlib.sha256).digest()

    result = assign(emu, tpmdev, regid, tpm_device_auth(emu, tpmdev, regid, k1_ctx))
    state = result["registrationState"]
    assert result["status"] == "assigned" and state["deviceId"] == regid
    k2_ctx = tpmdev.activate(state["tpm"]["authenticationKey"])

    assert hub_sas_status(emu, tpmdev, regid, k2_ctx) == 200
    assert hub_sas_status(emu, tpmdev, regid, k1_ctx) == 401   # the challenge key is not K2
    assert tpmdev.clean()


def test_tpm_reregistration_gets_new_keys_and_old_hub_key_stops(emu, tpmdev):
    regid = emu.create_enrollment(tpmdev.ek, "tpm-rereg")
    first = tpmdev.activate(challenge(emu, tpmdev, regid))
    s1 = assign(emu, tpmdev, regid, tpm_device_auth(emu, tpmdev, regid, first))
    old_hub_key = tpmdev.activate(s1["registrationState"]["tpm"]["authenticationKey"])
    k1_old, k2_old = emu.keys(regid)

    second = tpmdev.activate(challenge(emu, tpmdev, regid))
    s2 = assign(emu, tpmdev, regid, tpm_device_auth(emu, tpmdev, regid, second))
    new_hub_key = tpmdev.activate(s2["registrationState"]["tpm"]["authenticationKey"])
    k1_new, k2_new = emu.keys(regid)

    assert k1_new != k1_old and k2_new != k2_old
    assert s2["registrationState"]["substatus"] == "initialAssignment"
    assert hub_sas_status(emu, tpmdev, regid, new_hub_key) == 200
    assert hub_sas_status(emu, tpmdev, regid, old_hub_key) == 401
    assert tpmdev.clean()


@pytest.mark.parametrize("fault", ["auth_key_corrupt", "auth_key_wrong_device"])
def test_tpm_refuses_faulty_challenge_key(emu, tpmdev, fault):
    """The corrupted and wrong-device faults produce blobs a real TPM rejects at
    ActivateCredential; the next challenge (count 1 used up) is fine again."""
    regid = emu.create_enrollment(tpmdev.ek, "tpm-" + fault.replace("_", "-"))
    emu.set_fault(fault, 1, on="put_challenge")
    bad = challenge(emu, tpmdev, regid)
    with pytest.raises(RuntimeError, match="activatecredential"):
        tpmdev.activate(bad)
    assert split_fields(base64.b64decode(bad))           # still well-formed on the outside
    tpmdev.activate(challenge(emu, tpmdev, regid))
    assert tpmdev.clean()


def test_tpm_refuses_corrupted_hub_key_in_assigned_response(emu, tpmdev):
    """auth_key_corrupt aimed at the assigned response (on=get), inside field 3 (the
    duplicate's outer HMAC): ActivateCredential passes, Import fails."""
    regid = emu.create_enrollment(tpmdev.ek, "tpm-corrupt-get")
    emu.set_fault("auth_key_corrupt", 1, on="get", offset=54 + 258 + 6)
    k1_ctx = tpmdev.activate(challenge(emu, tpmdev, regid))
    state = assign(emu, tpmdev, regid, tpm_device_auth(emu, tpmdev, regid, k1_ctx))
    with pytest.raises(RuntimeError, match="import"):
        tpmdev.activate(state["registrationState"]["tpm"]["authenticationKey"])
    assert tpmdev.clean()


def test_hostile_key_imports_but_refuses_the_empty_password_and_counts(emu, tpmdev):
    """auth_key_hostile: a well-formed blob the TPM imports, for a key with an authValue
    and without noDA, so the empty-password HMAC every client uses fails and the TPM's
    dictionary-attack counter goes up by one. What the agent must stop after once."""
    from tpmcheck import variable_property

    regid = emu.create_enrollment(tpmdev.ek, "tpm-hostile")
    emu.set_fault("auth_key_hostile", 1, on="put_challenge")
    ctx = tpmdev.activate(challenge(emu, tpmdev, regid))
    before = variable_property(tpmdev.tpm, "TPM2_PT_LOCKOUT_COUNTER")
    with pytest.raises(RuntimeError, match="hmac"):
        tpmdev.hmac(ctx, b"empty password")
    assert variable_property(tpmdev.tpm, "TPM2_PT_LOCKOUT_COUNTER") == before + 1
    good = tpmdev.activate(challenge(emu, tpmdev, regid))
    tpmdev.hmac(good, b"the next challenge is DPS's again")
    assert variable_property(tpmdev.tpm, "TPM2_PT_LOCKOUT_COUNTER") == before + 1
    assert tpmdev.clean()


def test_tpm_signed_sas_in_ais_encoding_is_accepted(emu, tpmdev):
    """§1.6 AIS variant signed by the TPM: lowercased resource, literal '/'."""
    regid = emu.create_enrollment(tpmdev.ek, "tpm-ais")
    k1_ctx = tpmdev.activate(challenge(emu, tpmdev, regid))
    sr = emu.device_resource(regid).lower()
    se = str(int(time.time()) + 30)
    sig = base64.b64encode(tpmdev.hmac(k1_ctx, ("%s\n%s" % (sr, se)).encode())).decode()
    auth = "SharedAccessSignature sr=%s&sig=%s&se=%s&skn=registration" % (
        sr, quote(sig, safe=""), se)
    r = emu.request("PUT", emu.register_path(regid), {"registrationId": regid},
                    {"Authorization": auth})
    assert r.status == 202, r
    assert tpmdev.clean()
