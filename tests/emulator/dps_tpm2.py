"""Server-side TPM 2.0 math of the DPS emulator: parse TPM2B_PUBLIC, build authenticationKey.

Written from docs/dps-tpm-protocol.md (shared docs) sections 2.1, 3.4, 5.1 and 5.2 only; it
shares no code with the agent, so that a mistake in one is caught by the other.

All integers on the wire are big-endian.  Section numbers below refer to that document.
"""
import hashlib
import hmac
import os
import struct

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

TPM_ALG_RSA = 0x0001
TPM_ALG_KEYEDHASH = 0x0008
TPM_ALG_SHA256 = 0x000B
TPM_ALG_HMAC = 0x0005
TPM_ALG_AES = 0x0006
TPM_ALG_CFB = 0x0043
TPM_ALG_NULL = 0x0010
TPM_ALG_ECC = 0x0023

# §3.4: sign | userWithAuth | noDA; no fixedTPM/fixedParent, which Import requires.
HMAC_KEY_ATTRIBUTES = 0x00040440
TPMA_OBJECT_NO_DA = 0x00000400
# §3.4: PolicyCommandCode(TPM_CC_Duplicate), so a server-side TPM could duplicate the key.
HMAC_KEY_POLICY = bytes.fromhex(
    "bef56b8c1cc84e11edd717528d2cd99356bd2bbf8f015209c3f84aeeaba8e8a2")

INNER_KEY_BYTES = 16        # §2.2 step 5: Import symmetricAlg is AES-128-CFB
HMAC_KEY_BYTES = 32
SEED_BYTES = 32             # §5.1: digest size of the target's nameAlg (SHA-256)
DEFAULT_FIELD6_BYTES = 150  # §2.1: the real DPS seems to send about 150 bytes


class TpmFormatError(ValueError):
    """A byte string is not the well-formed TPM structure it claims to be."""


class _Reader:
    def __init__(self, data):
        self.data = data
        self.pos = 0

    def take(self, n, what):
        if self.pos + n > len(self.data):
            raise TpmFormatError("%s: need %d bytes at offset %d, only %d left"
                                 % (what, n, self.pos, len(self.data) - self.pos))
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def u16(self, what):
        return struct.unpack(">H", self.take(2, what))[0]

    def u32(self, what):
        return struct.unpack(">I", self.take(4, what))[0]

    def tpm2b(self, what):
        return self.take(self.u16(what + " size"), what)

    def left(self):
        return len(self.data) - self.pos


class RsaPublic:
    """An RSA TPMT_PUBLIC, parsed from its marshaled TPM2B_PUBLIC form (§1.4, §3.1)."""

    def __init__(self, tpm2b, tpmt, attributes, auth_policy, sym_bits, n, e):
        self.tpm2b = tpm2b            # exact bytes received, with the u16 size prefix
        self.tpmt = tpmt              # the same without the size prefix
        self.attributes = attributes
        self.auth_policy = auth_policy
        self.sym_bits = sym_bits      # symmetric.keyBits (§5.1: the AES key size for KDFa)
        self.n = n
        self.e = e

    @property
    def name(self):
        """§5.1: u16 nameAlg ‖ SHA-256(TPMT_PUBLIC without its size)."""
        return struct.pack(">H", TPM_ALG_SHA256) + hashlib.sha256(self.tpmt).digest()

    def oaep_encrypt(self, secret, label):
        """§5.1: RSA-OAEP with SHA-256 for hash and MGF1; label includes its NUL."""
        key = rsa.RSAPublicNumbers(self.e, self.n).public_key()
        return key.encrypt(secret, padding.OAEP(mgf=padding.MGF1(hashes.SHA256()),
                                                algorithm=hashes.SHA256(), label=label))


def parse_rsa_public(blob):
    """Strictly parse a marshaled RSA TPM2B_PUBLIC with nameAlg SHA-256 and an AES-CFB
    symmetric (EK and SRK templates, §3.1, §3.2).  Raises TpmFormatError with the reason.

    The size prefix must equal the remaining length (field case B04: a little-endian struct
    dump starts `3a 01 00 00` and is refused here)."""
    if not isinstance(blob, (bytes, bytearray)):
        raise TpmFormatError("not bytes")
    blob = bytes(blob)
    r = _Reader(blob)
    size = r.u16("TPM2B_PUBLIC size")
    if size != r.left():
        raise TpmFormatError("TPM2B_PUBLIC size prefix %d but %d bytes follow"
                             % (size, r.left()))
    alg = r.u16("type")
    if alg == TPM_ALG_ECC:
        raise TpmFormatError("ECC keys are not supported (only RSA)")
    if alg != TPM_ALG_RSA:
        raise TpmFormatError("type 0x%04x is not RSA" % alg)
    name_alg = r.u16("nameAlg")
    if name_alg != TPM_ALG_SHA256:
        raise TpmFormatError("nameAlg 0x%04x is not SHA-256" % name_alg)
    attributes = r.u32("objectAttributes")
    auth_policy = r.tpm2b("authPolicy")
    if len(auth_policy) not in (0, 32):
        raise TpmFormatError("authPolicy of %d bytes" % len(auth_policy))
    sym = r.u16("symmetric.algorithm")
    if sym != TPM_ALG_AES:
        raise TpmFormatError("symmetric algorithm 0x%04x is not AES" % sym)
    sym_bits = r.u16("symmetric.keyBits")
    if sym_bits not in (128, 192, 256):
        raise TpmFormatError("symmetric keyBits %d" % sym_bits)
    mode = r.u16("symmetric.mode")
    if mode != TPM_ALG_CFB:
        raise TpmFormatError("symmetric mode 0x%04x is not CFB" % mode)
    scheme = r.u16("scheme")
    if scheme != TPM_ALG_NULL:
        r.u16("scheme.hashAlg")
    key_bits = r.u16("keyBits")
    if key_bits not in (1024, 2048, 3072, 4096):
        raise TpmFormatError("keyBits %d" % key_bits)
    exponent = r.u32("exponent") or 65537
    modulus = r.tpm2b("unique.rsa")
    if len(modulus) != key_bits // 8:
        raise TpmFormatError("modulus of %d bytes for keyBits %d" % (len(modulus), key_bits))
    if r.left():
        raise TpmFormatError("%d trailing bytes" % r.left())
    n = int.from_bytes(modulus, "big")
    if n.bit_length() != key_bits:
        raise TpmFormatError("modulus is not %d bits long" % key_bits)
    return RsaPublic(blob, blob[2:], attributes, auth_policy, sym_bits, n, exponent)


def kdfa(key, label, context_u, context_v, bits):
    """§5.1 KDFa with SHA-256; the label is followed by its terminating NUL."""
    out = b""
    counter = 1
    while len(out) * 8 < bits:
        out += hmac.new(key, struct.pack(">I", counter) + label + b"\0" + context_u
                        + context_v + struct.pack(">I", bits), hashlib.sha256).digest()
        counter += 1
    return out[:bits // 8]


def aes_cfb(key, data):
    """§5.1: CFB with 128-bit segments, all-zero IV, no padding."""
    enc = Cipher(algorithms.AES(key), modes.CFB(b"\0" * 16)).encryptor()
    return enc.update(data) + enc.finalize()


def _u16(n):
    return struct.pack(">H", n)


def _tpm2b(data):
    return _u16(len(data)) + data


def hmac_key_public(seed, key, attributes=HMAC_KEY_ATTRIBUTES):
    """§3.4 KEYEDHASH TPMT_PUBLIC for the HMAC key; unique = SHA-256(seed ‖ key)."""
    return (_u16(TPM_ALG_KEYEDHASH) + _u16(TPM_ALG_SHA256)
            + struct.pack(">I", attributes) + _tpm2b(HMAC_KEY_POLICY)
            + _u16(TPM_ALG_HMAC) + _u16(TPM_ALG_SHA256)
            + _tpm2b(hashlib.sha256(seed + key).digest()))


def make_credential(ek, credential, object_name):
    """§5.2 F: TPM2_MakeCredential done in software.  Returns (field1, field2)."""
    seed = os.urandom(SEED_BYTES)
    secret = ek.oaep_encrypt(seed, b"IDENTITY\0")
    sym_key = kdfa(seed, b"STORAGE", object_name, b"", ek.sym_bits)
    enc_identity = aes_cfb(sym_key, _tpm2b(credential))
    hmac_key = kdfa(seed, b"INTEGRITY", b"", b"", 256)
    integrity = hmac.new(hmac_key, enc_identity + object_name, hashlib.sha256).digest()
    return _tpm2b(_tpm2b(integrity) + enc_identity), _tpm2b(secret)


def duplicate_hmac_key(srk, key, inner_key, attributes=HMAC_KEY_ATTRIBUTES, auth_value=b""):
    """§5.2 B-E: wrap the HMAC key to the SRK with an inner AES-CFB wrapper (inner_key) and
    an outer wrapper from a fresh seed.  Returns (field3, field4, field5).  DPS's keys have
    the §3.4 attributes and an empty authValue; other values make a key DPS never sends."""
    obfuscation = os.urandom(SEED_BYTES)
    public = hmac_key_public(obfuscation, key, attributes)
    id_name = _u16(TPM_ALG_SHA256) + hashlib.sha256(public).digest()
    sensitive = (_u16(TPM_ALG_KEYEDHASH) + _tpm2b(auth_value) + _tpm2b(obfuscation)
                 + _tpm2b(key))
    s2b = _tpm2b(sensitive)
    inner_integrity = hashlib.sha256(s2b + id_name).digest()
    enc_sensitive = aes_cfb(inner_key, _tpm2b(inner_integrity) + s2b)

    seed = os.urandom(SEED_BYTES)
    in_sym_seed = srk.oaep_encrypt(seed, b"DUPLICATE\0")
    sym_key = kdfa(seed, b"STORAGE", id_name, b"", srk.sym_bits)
    hmac_key = kdfa(seed, b"INTEGRITY", b"", b"", 256)
    dup_sensitive = aes_cfb(sym_key, enc_sensitive)
    outer_hmac = hmac.new(hmac_key, dup_sensitive + id_name, hashlib.sha256).digest()
    return (_tpm2b(_tpm2b(outer_hmac) + dup_sensitive), _tpm2b(in_sym_seed),
            _tpm2b(public))


def build_authentication_key(ek, srk, key, field6_bytes=DEFAULT_FIELD6_BYTES,
                             attributes=HMAC_KEY_ATTRIBUTES, auth_value=b""):
    """§5.2: the activation blob that lets the TPM holding `ek` import the HMAC key `key`
    under `srk`.  Fields in the §2.1 order; field 6 is field6_bytes of data encrypted
    under the inner key (the device ignores it)."""
    if len(key) != HMAC_KEY_BYTES:
        raise ValueError("HMAC key must be %d bytes" % HMAC_KEY_BYTES)
    inner_key = os.urandom(INNER_KEY_BYTES)
    field3, field4, field5 = duplicate_hmac_key(srk, key, inner_key, attributes, auth_value)
    field1, field2 = make_credential(ek, inner_key, srk.name)
    data = (b"emulated-dps:uri-data:" * (field6_bytes // 22 + 1))[:field6_bytes]
    field6 = _tpm2b(aes_cfb(inner_key, data) if data else b"")
    return field1 + field2 + field3 + field4 + field5 + field6


def split_authentication_key(blob):
    """Split a blob into its six §2.1 fields, each with its u16 size prefix (what
    tpm2-tools reads from files).  Raises TpmFormatError if it does not split exactly."""
    r = _Reader(bytes(blob))
    fields = []
    for i in range(6):
        start = r.pos
        r.tpm2b("field %d" % (i + 1))
        fields.append(r.data[start:r.pos])
    if r.left():
        raise TpmFormatError("%d trailing bytes" % r.left())
    return fields


EK_ATTRIBUTES = 0x000300B2    # §3.1
SRK_ATTRIBUTES = 0x00030472   # §3.2
EK_POLICY = bytes.fromhex("837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa")


def software_rsa_public(template="ek"):
    """Marshaled TPM2B_PUBLIC (bytes) of a fresh software RSA-2048 key with the §3.1 EK or
    §3.2 SRK header: a stand-in for a TPM's key where no TPM is needed, and the key that
    the 'built for another device' fault encrypts to."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    modulus = key.public_key().public_numbers().n.to_bytes(256, "big")
    attributes, policy = ((EK_ATTRIBUTES, EK_POLICY) if template == "ek"
                          else (SRK_ATTRIBUTES, b""))
    tpmt = (_u16(TPM_ALG_RSA) + _u16(TPM_ALG_SHA256) + struct.pack(">I", attributes)
            + _tpm2b(policy) + _u16(TPM_ALG_AES) + _u16(128) + _u16(TPM_ALG_CFB)
            + _u16(TPM_ALG_NULL) + _u16(2048) + struct.pack(">I", 0) + _tpm2b(modulus))
    return _tpm2b(tpmt)
