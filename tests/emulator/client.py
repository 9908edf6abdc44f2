"""Test helper for the DPS emulator: start it, drive its admin API, call it over HTTPS.

    from client import Emulator
    with Emulator(faults=["put_429=2,retry_after=3"]) as emu:
        regid = emu.create_enrollment(ek_bytes)
        r = emu.request("PUT", emu.register_path(regid), {"registrationId": regid, ...})

Everything goes to 127.0.0.1 only.  The helper never imports the agent.
"""
import base64
import hashlib
import hmac
import http.client
import json
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
from urllib.parse import quote

HERE = os.path.dirname(os.path.abspath(__file__))
EMULATOR = os.path.join(HERE, "dps_emulator.py")
PYTHON = "/usr/bin/python3"
DEVICE_API = "2021-06-01"
SERVICE_API = "2021-10-01"
OWNER_POLICY = "provisioningserviceowner"
READ_POLICY = "enrollmentread"


def registration_id(ek_bytes):
    """§4: lowercase unpadded base32 of SHA-256 over the marshaled EK TPM2B_PUBLIC."""
    return base64.b32encode(hashlib.sha256(ek_bytes).digest()).decode().lower().rstrip("=")


def sas_header(sr, sig_b64, se, skn=None, sig_encoded=None):
    """Assemble 'SharedAccessSignature sr=..&sig=..&se=..[&skn=..]' from parts as given:
    `sr` is put in as is (already encoded by the caller); sig is url-encoded unless
    `sig_encoded` gives its text."""
    sig = sig_encoded if sig_encoded is not None else quote(sig_b64, safe="")
    out = "SharedAccessSignature sr=%s&sig=%s&se=%s" % (sr, sig, se)
    if skn is not None:
        out += "&skn=%s" % skn
    return out


def sign(key, sr, se):
    """Software HMAC-SHA256 over sr + '\\n' + se, base64 (for tests that hold the key)."""
    return base64.b64encode(hmac.new(key, ("%s\n%s" % (sr, se)).encode(),
                                      hashlib.sha256).digest()).decode()


class HttpResponse:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = {k.lower(): v for k, v in headers}
        self.body = body

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self):
        return "<HTTP %d %s>" % (self.status, self.body[:200])


class EmulatorError(RuntimeError):
    pass


class Emulator:
    """One emulator process on 127.0.0.1 with its own state directory."""

    def __init__(self, state_dir=None, faults=(), args=(), id_scope="0ne00000001",
                 hub_host="emulated-hub.azure-devices.net",
                 service_host="emulated-dps.azure-devices-provisioning.net",
                 binds=("127.0.0.1",)):
        self._own_dir = state_dir is None
        self.state_dir = state_dir or tempfile.mkdtemp(prefix="dps-emu-")
        self.faults = list(faults)
        self.args = list(args)
        self.id_scope = id_scope
        self.hub_host = hub_host
        self.service_host = service_host
        self.binds = binds          # None: the emulator's default (127.0.0.1 and ::1)
        self.port = 0
        self.proc = None
        self._ssl = None

    # -- process ----------------------------------------------------------------------

    @property
    def ca(self):
        return os.path.join(self.state_dir, "ca.pem")

    @property
    def url(self):
        """Base URL to give a client (the certificate also covers `localhost` and `::1`;
        a client that sends Host: <hub host> reaches the hub check instead)."""
        return "https://127.0.0.1:%d" % self.port

    def start(self, timeout=20):
        ready = os.path.join(self.state_dir, "ready")
        if os.path.exists(ready):
            os.unlink(ready)
        cmd = [PYTHON, EMULATOR, "--port", str(self.port), "--state-dir", self.state_dir,
               "--id-scope", self.id_scope, "--hub-host", self.hub_host,
               "--service-host", self.service_host]
        for address in self.binds or ():
            cmd += ["--bind", address]
        for f in self.faults:
            cmd += ["--fault", f]
        cmd += self.args
        self._stderr = open(os.path.join(self.state_dir, "emulator.stderr"), "ab")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self._stderr)
        deadline = time.monotonic() + timeout
        while not os.path.exists(ready):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                with open(os.path.join(self.state_dir, "emulator.stderr"), "rb") as f:
                    raise EmulatorError("emulator did not start: "
                                        + f.read().decode(errors="replace")[-2000:])
            time.sleep(0.02)
        with open(os.path.join(self.state_dir, "port")) as f:
            self.port = int(f.read())
        self._ssl = ssl.create_default_context(cafile=self.ca)
        return self

    def stop(self):
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
            self._stderr.close()

    def restart(self, faults=None):
        """Stop and start again on the same port and state directory."""
        self.stop()
        if faults is not None:
            self.faults = list(faults)
        return self.start()

    def close(self):
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    # -- HTTP -------------------------------------------------------------------------

    def connection(self, timeout=30):
        """A new HTTPS connection to the emulator; reuse it for keep-alive."""
        return http.client.HTTPSConnection("127.0.0.1", self.port, context=self._ssl,
                                           timeout=timeout)

    def request(self, method, path, body=None, headers=None, host=None, conn=None,
                timeout=30):
        """One request.  `body` dict/list -> JSON; bytes as they are.  `host` sets the
        Host header (default: the DPS service host).  `conn`: reuse that connection."""
        hdrs = {"Host": host or self.service_host, "Accept": "application/json"}
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json; charset=utf-8"
        hdrs.update(headers or {})
        own = conn is None
        c = conn or self.connection(timeout)
        try:
            c.request(method, path, body=body, headers=hdrs)
            r = c.getresponse()
            return HttpResponse(r.status, r.getheaders(), r.read())
        finally:
            if own:
                c.close()

    def admin(self, method, path, body=None):
        r = self.request(method, "/__emulator/" + path.lstrip("/"), body)
        if r.status >= 300:
            raise EmulatorError("admin %s %s: %d %s" % (method, path, r.status, r.body))
        return r.json() if r.body else None

    # -- admin helpers ----------------------------------------------------------------

    def set_faults(self, faults):
        """faults: {"NAME": count|"always"|value|{...}} (README, Faults)."""
        return self.admin("POST", "faults", faults)["faults"]

    def set_fault(self, name, count="always", **params):
        spec = dict(params)
        if name in ("rate_limit", "clock_offset", "polls"):
            spec["value"] = count
        else:
            spec["count"] = count
        return self.set_faults({name: spec})

    def clear_faults(self, name=None):
        return self.admin("DELETE", "faults" + ("/" + name if name else ""))["faults"]

    def get_faults(self):
        return self.admin("GET", "faults")["faults"]

    def log(self):
        return self.admin("GET", "log")["entries"]

    def clear_log(self):
        self.admin("DELETE", "log")

    def set_enrollment(self, regid, **settings):
        """settings: provisioningStatus="enabled"|"disabled",
        failure={"errorCode": int, "errorMessage": str} or None, substatus=str or None."""
        return self.admin("POST", "enrollments/" + quote(regid, safe=""), settings)

    def registration(self, regid):
        return self.admin("GET", "registrations/" + quote(regid, safe=""))

    def keys(self, regid):
        """(challenge key K1, hub key K2) as bytes, None where not issued yet."""
        r = self.registration(regid)
        return tuple(bytes.fromhex(r[k]) if r[k] else None for k in ("challengeKey", "hubKey"))

    def set_clock_offset(self, seconds):
        return self.admin("POST", "clock", {"offset": seconds})

    def config(self):
        return self.admin("GET", "config")

    # -- service API ------------------------------------------------------------------

    def connection_string(self, policy=OWNER_POLICY):
        with open(os.path.join(self.state_dir, "connection-strings.json")) as f:
            return json.load(f)[policy]

    def policy_key(self, policy=OWNER_POLICY):
        parts = dict(p.split("=", 1) for p in self.connection_string(policy).split(";"))
        return base64.b64decode(parts["SharedAccessKey"])

    def service_auth(self, policy=OWNER_POLICY, ttl=3600, sr=None, now=None):
        """§6 service SAS: sr = host, HMAC with the base64-decoded policy key."""
        sr = quote(self.service_host, safe="") if sr is None else sr
        se = str(int((time.time() if now is None else now) + ttl))
        return sas_header(sr, sign(self.policy_key(policy), sr, se), se, skn=policy)

    def service(self, method, path, body=None, policy=OWNER_POLICY, headers=None,
                api_version=SERVICE_API, auth=None):
        hdrs = {"Authorization": auth or self.service_auth(policy)}
        hdrs.update(headers or {})
        sep = "&" if "?" in path else "?"
        return self.request(method, "%s%sapi-version=%s" % (path, sep, api_version), body,
                            hdrs)

    def create_enrollment(self, ek, regid=None, srk=None, **fields):
        """PUT /enrollments/{regid} for a TPM EK (bytes of its TPM2B_PUBLIC).  Extra
        IndividualEnrollment fields as keyword arguments.  Returns the registration ID."""
        regid = regid or registration_id(ek)
        tpm = {"endorsementKey": base64.b64encode(ek).decode()}
        if srk is not None:
            tpm["storageRootKey"] = base64.b64encode(srk).decode()
        doc = {"registrationId": regid, "attestation": {"type": "tpm", "tpm": tpm}}
        doc.update(fields)
        r = self.service("PUT", "/enrollments/" + quote(regid, safe=""), doc)
        if r.status != 200:
            raise EmulatorError("create enrollment: %d %s" % (r.status, r.body))
        return regid

    # -- device API -------------------------------------------------------------------

    def register_path(self, regid, api_version=DEVICE_API, scope=None):
        return "/%s/registrations/%s/register?api-version=%s" % (
            scope or self.id_scope, quote(regid, safe=""), api_version)

    def operation_path(self, regid, op_id, api_version=DEVICE_API, scope=None):
        return "/%s/registrations/%s/operations/%s?api-version=%s" % (
            scope or self.id_scope, quote(regid, safe=""), quote(op_id, safe=""), api_version)

    def device_resource(self, regid, scope=None):
        return "%s/registrations/%s" % (scope or self.id_scope, regid)

    def device_auth(self, regid, sign_fn, ttl=3600, now=None):
        """A device SAS the way the C SDK writes it (§1.6): sr lower-hex url-encoded,
        skn=registration.  sign_fn(bytes) -> 32-byte MAC (software or TPM)."""
        sr = quote(self.device_resource(regid), safe="").replace("%2F", "%2f")
        se = str(int((time.time() if now is None else now) + ttl))
        sig = base64.b64encode(sign_fn(("%s\n%s" % (sr, se)).encode())).decode()
        return sas_header(sr, sig, se, skn="registration")

    # -- hub check --------------------------------------------------------------------

    def hub_resource(self, device_id, hub=None):
        return "%s/devices/%s" % (hub or self.hub_host, device_id)

    def hub_check(self, device_id, sig_b64, se, hub=None, sr=None, method="GET"):
        """Call the hub check with a device SAS built from a given signature over
        `sr` + '\\n' + `se` (sr defaults to the url-encoded hub resource)."""
        hub = hub or self.hub_host
        sr = quote(self.hub_resource(device_id, hub), safe="") if sr is None else sr
        path = "/devices/%s" % quote(device_id, safe="")
        if method == "POST":
            path += "/messages/events"
        return self.request(method, path + "?api-version=2021-04-12",
                            b"{}" if method == "POST" else None,
                            {"Authorization": sas_header(sr, sig_b64, se)}, host=hub)

    def hub_string_to_sign(self, device_id, se, hub=None):
        sr = quote(self.hub_resource(device_id, hub), safe="")
        return ("%s\n%s" % (sr, se)).encode()
