"""Test CA and server certificates for the emulator, kept in its state directory.

Created on first start, reused afterwards; the server certificate is re-issued when the set of
names it must carry changes (for example another --hub-host).  Keys are ECDSA P-256, which
is quick to generate and accepted by OpenSSL-based clients (libcurl, Python ssl).
"""
import datetime
import ipaddress
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _write(path, data, mode=0o644):
    tmp = "%s.tmp.%d" % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _key_pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _load(cert_path, key_path):
    if not (os.path.exists(cert_path) and os.path.exists(key_path)):
        return None, None
    with open(cert_path, "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    with open(key_path, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), None)
    return cert, key


def _validity():
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    # Backdated like a real CA issues ahead of use, so a device build older than this test run
    # (the agent checks certificates at its build time when its clock is earlier) still passes.
    return now - datetime.timedelta(days=400), now + datetime.timedelta(days=3650)


def ensure_ca(directory, stem, common_name):
    """Load or create `stem`.pem / `stem`.key.  Returns (cert, key)."""
    cert_path = os.path.join(directory, stem + ".pem")
    key_path = os.path.join(directory, stem + ".key")
    cert, key = _load(cert_path, key_path)
    if cert is not None:
        return cert, key
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    not_before, not_after = _validity()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256()))
    _write(key_path, _key_pem(key), 0o600)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def _sans(cert):
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return ({("dns", n.lower()) for n in ext.get_values_for_type(x509.DNSName)}
            | {("ip", str(a)) for a in ext.get_values_for_type(x509.IPAddress)})


def ensure_server(directory, stem, ca_cert, ca_key, dns_names, ips):
    """Load or (re)issue `stem`.pem / `stem`.key for the given names, signed by the CA.
    Returns (cert_path, key_path)."""
    cert_path = os.path.join(directory, stem + ".pem")
    key_path = os.path.join(directory, stem + ".key")
    wanted = ({("dns", n.lower()) for n in dns_names}
              | {("ip", str(ipaddress.ip_address(a))) for a in ips})
    cert, key = _load(cert_path, key_path)
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    if (cert is not None and _sans(cert) == wanted and cert.issuer == ca_cert.subject
            and cert.not_valid_after > now + datetime.timedelta(days=1)):
        return cert_path, key_path
    key = ec.generate_private_key(ec.SECP256R1())
    not_before, not_after = _validity()
    san = x509.SubjectAlternativeName(
        [x509.DNSName(n) for n in dns_names]
        + [x509.IPAddress(ipaddress.ip_address(a)) for a in ips])
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0])]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(san, critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=True, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_cert.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    _write(key_path, _key_pem(key), 0o600)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path
