"""Security checks of issue 7: TLS cannot be turned off by accident (an expired, a self-signed
and a wrong-host certificate, and a server that offers only TLS 1.0/1.1 are all refused, and
no request is ever sent to them); authorization values never reach the process's arguments or
environment, and the agent starts no children; the files it writes have the documented owner
and mode whatever the umask.

The TLS servers here are the test's own: Python's ssl on loopback, with certificates made
here (the emulator's CA signs the expired one, so only the date is wrong). They complete a
handshake when the client accepts it and count every byte of HTTP that arrives after it.
"""
import datetime
import ipaddress
import os
import socket
import ssl
import stat
import subprocess
import sys
import threading
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from agent import AGENT  # noqa: E402
from tpmproxy import CC, TpmProxy  # noqa: E402

EXIT_USAGE, EXIT_TEMPORARY = 2, 5


# ------------------------------------------------------------------------- certificates

def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_cert(path_prefix, issuer_cert=None, issuer_key=None, hosts=("127.0.0.1",),
              not_before=None, not_after=None):
    """A server certificate for `hosts`, signed by issuer (or self-signed). Writes
    PREFIX.pem and PREFIX.key; returns the cert path and key path."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    sans = [x509.IPAddress(ipaddress.ip_address(h)) for h in hosts]
    builder = (x509.CertificateBuilder()
               .subject_name(_name("tpm-provision test server"))
               .issuer_name(issuer_cert.subject if issuer_cert else _name("tpm-provision test server"))
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(not_before or now - datetime.timedelta(days=1))
               .not_valid_after(not_after or now + datetime.timedelta(days=30))
               .add_extension(x509.SubjectAlternativeName(sans), critical=False))
    cert = builder.sign(issuer_key or key, hashes.SHA256())
    with open(path_prefix + ".pem", "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(path_prefix + ".key", "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return path_prefix + ".pem", path_prefix + ".key"


def load_ca(state_dir):
    with open(os.path.join(state_dir, "ca.pem"), "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    with open(os.path.join(state_dir, "ca.key"), "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    return cert, key


class TlsServer:
    """Accepts TLS on 127.0.0.1 with the given context; counts completed handshakes and the
    bytes received after them (an HTTP request the client should never have sent)."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.url = "https://127.0.0.1:%d" % self.port
        self.handshakes = 0
        self.request_bytes = 0
        self.attempts = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            self.attempts += 1
            conn.settimeout(5)
            try:
                with self.ctx.wrap_socket(conn, server_side=True) as tls:
                    self.handshakes += 1
                    data = tls.recv(65536)
                    self.request_bytes += len(data)
            except (ssl.SSLError, OSError):
                conn.close()

    def close(self):
        self.stop.set()
        self.thread.join(5)
        self.sock.close()


def server_context(cert, key, tls_max=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    if tls_max:
        # Old protocol versions need the lowest security level of Debian's OpenSSL 3.
        ctx.set_ciphers("ALL:@SECLEVEL=0")
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = tls_max
    return ctx


def client_accepts(url_port, ca, tls_max=None):
    """Whether Python's own client, trusting `ca`, completes a handshake: proves the server
    offers what the test says it offers."""
    ctx = ssl.create_default_context(cafile=ca)
    if tls_max:
        ctx.set_ciphers("ALL:@SECLEVEL=0")
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = tls_max
    try:
        with socket.create_connection(("127.0.0.1", url_port), timeout=5) as s:
            with ctx.wrap_socket(s, server_hostname="127.0.0.1"):
                return True
    except (ssl.SSLError, OSError):
        return False


def register_against(device, url, ca, timeout_sec=6):
    device.write_config(provisioning={"GlobalEndpoint": url, "CABundle": ca,
                                      "TimeoutSec": str(timeout_sec)})
    t0 = time.monotonic()
    res = device.run("register")
    return res, time.monotonic() - t0


# ------------------------------------------------------------------------------------ TLS


def test_tls_expired_certificate_from_the_trusted_ca_is_never_accepted(device, tmp_path):
    ca_cert, ca_key = load_ca(device.emu.state_dir)
    now = datetime.datetime.now(datetime.timezone.utc)
    cert, key = make_cert(str(tmp_path / "expired"), ca_cert, ca_key,
                          not_before=now - datetime.timedelta(days=60),
                          not_after=now - datetime.timedelta(days=30))
    srv = TlsServer(server_context(cert, key))
    try:
        res, took = register_against(device, srv.url, device.emu.ca)
    finally:
        srv.close()
    assert res.returncode == EXIT_TEMPORARY, res.stderr
    assert "not valid at the current time" in res.stderr
    assert srv.attempts >= 1 and srv.request_bytes == 0, "a request went to an expired server"
    assert took < 20


def test_tls_self_signed_certificate_is_refused_at_once(device, tmp_path):
    cert, key = make_cert(str(tmp_path / "self"))
    srv = TlsServer(server_context(cert, key))
    try:
        res, took = register_against(device, srv.url, device.emu.ca)
    finally:
        srv.close()
    assert res.returncode == EXIT_USAGE, res.stderr
    assert "not trusted" in res.stderr and "Not retrying" in res.stderr
    assert srv.attempts == 1 and srv.request_bytes == 0
    assert took < 5


def test_tls_certificate_for_another_host_is_refused(device, tmp_path):
    ca_cert, ca_key = load_ca(device.emu.state_dir)
    cert, key = make_cert(str(tmp_path / "other-host"), ca_cert, ca_key, hosts=("127.0.0.9",))
    srv = TlsServer(server_context(cert, key))
    try:
        res, _ = register_against(device, srv.url, device.emu.ca)
    finally:
        srv.close()
    assert res.returncode != 0, res.stderr
    assert srv.request_bytes == 0
    assert "127.0.0.1" in res.stderr


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("version", ["TLSv1", "TLSv1_1"])
def test_tls_downgrade_to_an_old_protocol_is_refused(device, tmp_path, version):
    ca_cert, ca_key = load_ca(device.emu.state_dir)
    cert, key = make_cert(str(tmp_path / "old-tls"), ca_cert, ca_key)
    tls_max = getattr(ssl.TLSVersion, version)
    srv = TlsServer(server_context(cert, key, tls_max=tls_max))
    try:
        # The server really speaks the old version with a certificate the device trusts...
        assert client_accepts(srv.port, device.emu.ca, tls_max=tls_max), \
            "the test server does not offer " + version
        # The server counts the probe's handshake in its own thread, a moment later.
        deadline = time.monotonic() + 5
        while srv.handshakes < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        accepted_before = srv.handshakes
        assert accepted_before == 1
        # ...and the agent does not follow it there.
        res, _ = register_against(device, srv.url, device.emu.ca)
    finally:
        srv.close()
    assert res.returncode != 0, res.stderr
    assert srv.handshakes == accepted_before and srv.request_bytes == 0
    assert "SSL" in res.stderr or "TLS" in res.stderr


@pytest.mark.parametrize("key", ["Insecure", "VerifyPeer", "SslVerify"])
def test_no_configuration_key_or_variable_turns_verification_off(device, key):
    """What users try when TLS gets in the way is a configuration error, not 'insecure'; and
    the variables other tools read for it change nothing."""
    device.write_config(provisioning={key: "no", "TimeoutSec": "5"})
    device.emu.clear_log()
    env = {"CURL_CA_BUNDLE": "", "SSL_CERT_FILE": os.devnull, "CURLOPT_SSL_VERIFYPEER": "0",
           "GIT_SSL_NO_VERIFY": "1", "PYTHONHTTPSVERIFY": "0"}
    res = device.run("register", env=env)
    assert res.returncode == EXIT_USAGE, res.stderr
    assert "unknown key %s=" % key in res.stderr
    assert device.emu.log() == []

    device.write_config(provisioning={"TimeoutSec": "30"})
    res = device.run("register", env=env)
    assert res.returncode == 0, res.stderr   # the variables did not weaken or break TLS


# ------------------------------------------------------ secrets in arguments and environment


OWNER_SECRET = "owner-ARGV-9f3c1e"
ENDORSE_SECRET = "endorse-ENV-4b7a20"


def test_authorization_values_never_in_arguments_environment_or_children(tpm_no_ek, tmp_path):
    """While `own` is inside a command that uses the owner authorization, its command line
    and environment hold the file names only, and it has no child process."""
    tpm = tpm_no_ek
    tpm.tpm2("changeauth", "-c", "o", OWNER_SECRET)
    tpm.tpm2("changeauth", "-c", "e", ENDORSE_SECRET)
    owner = tmp_path / "owner"
    owner.write_text(OWNER_SECRET)
    endorse = tmp_path / "endorse"
    endorse.write_text(ENDORSE_SECRET)
    os.chmod(owner, 0o600)
    os.chmod(endorse, 0o600)
    with TpmProxy(tpm, str(tmp_path / "proxy.sock")) as proxy:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TPM_PROVISION_")}
        env.update(TPM_PROVISION_TCTI=proxy.tcti, TPM_PROVISION_CONFIG=os.devnull,
                   TPM_PROVISION_CMDLINE=os.devnull, RUNTIME_DIRECTORY=str(tmp_path / "run"))
        held = proxy.pause("before", cc=CC["EvictControl"])
        p = subprocess.Popen([AGENT, "--owner-auth=" + str(owner),
                              "--endorsement-auth=" + str(endorse), "own"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert held.reached.wait(60), "own never reached EvictControl"
            with open("/proc/%d/cmdline" % p.pid, "rb") as f:
                cmdline = f.read()
            with open("/proc/%d/environ" % p.pid, "rb") as f:
                environ = f.read()
            children = []
            for task in os.listdir("/proc/%d/task" % p.pid):
                with open("/proc/%d/task/%s/children" % (p.pid, task)) as f:
                    children += f.read().split()
        finally:
            held.release()
            out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    for secret in (OWNER_SECRET, ENDORSE_SECRET):
        assert secret.encode() not in cmdline
        assert secret.encode() not in environ
        assert secret not in out and secret not in err
    assert str(owner).encode() in cmdline
    assert children == [], "the agent started a child process"


# -------------------------------------------------------------------------- file modes


@pytest.mark.parametrize("umask", [0o000, 0o077])
def test_files_the_agent_writes_have_the_documented_owner_and_mode(device, umask):
    """tpm-provision(8) FILES: the run directory 0755, the hand-off file 0644 (it holds no
    secret and the IoT client must read it), the lock never writable by others; all owned by
    the user the agent runs as. A careless umask changes none of that."""
    old = os.umask(umask)
    try:
        res = device.run("register")
        sas = device.run("sas")
    finally:
        os.umask(old)
    assert res.returncode == 0, res.stderr
    assert sas.returncode == 0, sas.stderr
    run = device.runtime_dir
    expect = {run: 0o755, os.path.join(run, "identity.json"): 0o644}
    for path, mode in expect.items():
        st = os.stat(path)
        assert st.st_uid == os.geteuid(), path
        assert stat.S_IMODE(st.st_mode) == mode, (path, oct(st.st_mode))
    lock = os.stat(os.path.join(run, "lock"))
    assert lock.st_uid == os.geteuid()
    assert stat.S_IMODE(lock.st_mode) & 0o022 == 0, oct(lock.st_mode)
    for name in os.listdir(run):
        st = os.stat(os.path.join(run, name))
        assert stat.S_IMODE(st.st_mode) & 0o002 == 0, name
