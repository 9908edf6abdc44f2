"""Independent computations and TPM inspections for tests: tpm2-tools and Python only, never
the agent's code, so that a mistake in the agent is not repeated here."""
import base64
import hashlib
import os
import re

from cryptography import x509

EK = 0x81010001
SRK = 0x81000001
STATE_INDEX = 0x01000100
EK_CERT_INDEX = 0x01C00002


def registration_id(tpm2b_public):
    """DPS's registration ID: lowercase, unpadded base32 of SHA-256 over the bytes."""
    digest = hashlib.sha256(tpm2b_public).digest()
    return base64.b32encode(digest).decode().lower().rstrip("=")


def read_public(tpm, handle, workdir):
    """The marshaled TPM2B_PUBLIC as tpm2_readpublic writes it (size prefix included)."""
    path = os.path.join(workdir, "pub-%08x.bin" % handle)
    tpm.tpm2("readpublic", "-c", "0x%08x" % handle, "-o", path)
    with open(path, "rb") as f:
        return f.read()


def nv_read(tpm, index, size=None, auth_handle=None, auth=None):
    args = ["nvread", "0x%08x" % index, "-C", auth_handle or "0x%08x" % index]
    if size is not None:
        args += ["-s", str(size)]
    if auth:
        args += ["-P", auth]
    out_path = os.path.join(tpm.dir, "nvread.bin")
    tpm.tpm2(*args, "-o", out_path)
    with open(out_path, "rb") as f:
        return f.read()


def ek_cert(tpm):
    """The RSA EK certificate and its DER bytes (the index may be padded past the DER)."""
    der = _der_prefix(nv_read(tpm, EK_CERT_INDEX))
    return x509.load_der_x509_certificate(der), der


def _der_prefix(data):
    # DER SEQUENCE with a long-form length: 0x30 0x82 hi lo
    assert data[0] == 0x30 and data[1] == 0x82
    return data[:4 + (data[2] << 8 | data[3])]


def rsa_modulus_of_public(tpm2b_public):
    """unique.rsa of an RSA TPMT_PUBLIC with an empty authPolicy or a 32-byte one."""
    body = tpm2b_public[2:]
    policy_len = int.from_bytes(body[8:10], "big")
    params = 10 + policy_len
    # symmetric (6) + scheme (2) + keyBits (2) + exponent (4), then TPM2B unique
    off = params + 14
    n_len = int.from_bytes(body[off:off + 2], "big")
    return int.from_bytes(body[off + 2:off + 2 + n_len], "big")


def variable_property(tpm, name):
    out = tpm.tpm2("getcap", "properties-variable")
    m = re.search(name + r":\s*(0x[0-9a-fA-F]+|\d+)", out)
    if m:
        return int(m.group(1), 0)
    # tpm2_getcap 5.4 prints "TPM2_PT_LOCKOUT_COUNTER: 0x0"
    m = re.search(name + r":\s*\n?\s*(?:raw:\s*)?(0x[0-9a-fA-F]+)", out)
    return int(m.group(1), 0)


def lockout_counter(tpm):
    """The dictionary-attack failure count (TPM2_PT_LOCKOUT_COUNTER)."""
    return variable_property(tpm, "TPM2_PT_LOCKOUT_COUNTER")


def assert_no_leftovers(tpm):
    """No transient object or session may outlive an agent process (field case B11)."""
    assert tpm.transient_handles() == [], "transient objects left in the TPM"
    assert tpm.sessions() == [], "sessions left in the TPM"
