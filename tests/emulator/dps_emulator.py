#!/usr/bin/python3
"""An HTTPS emulator of Azure IoT Hub DPS for TPM attestation, for tests only.

    /usr/bin/python3 tests/emulator/dps_emulator.py --port 0 --state-dir DIR \
        [--id-scope 0ne00000001] [--hub-host emulated-hub.azure-devices.net] \
        [--fault NAME=VALUE[,key=value...]] ...

It serves the DPS device API (register, operation status), the DPS service API
(individual enrollments), an IoT Hub device-token check, and test-control endpoints under
/__emulator/.  It listens on loopback only.  See README.md beside this file for every option,
fault and endpoint, and docs/dps-tpm-protocol.md (shared docs) for the protocol it follows;
"§" references below point into that document.
"""
import argparse
import base64
import binascii
import collections
import datetime
import email.utils
import http.server
import ipaddress
import json
import os
import re
import secrets
import signal
import socket
import ssl
import sys
import threading
import time
import uuid
from urllib.parse import quote, unquote, urlsplit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import dps_faults  # noqa: E402
import dps_sas  # noqa: E402
import dps_tls  # noqa: E402
import dps_tpm2  # noqa: E402

DEFAULT_ID_SCOPE = "0ne00000001"
DEFAULT_HUB_HOST = "emulated-hub.azure-devices.net"
DEFAULT_SERVICE_HOST = "emulated-dps.azure-devices-provisioning.net"
DEVICE_API_VERSIONS = ("2021-06-01", "2019-03-31")
SERVICE_API_VERSIONS = ("2021-10-01", "2018-04-01")
KEY_NAME = "registration"
REGISTRATION_ID_RE = re.compile(r"^[a-z0-9\-._:]{1,128}$")
DEVICE_ID_RE = re.compile(r"^[A-Za-z0-9\-:.+%_#*?!(),=@$']{1,128}$")
MAX_REQUEST_BODY = 4 * 1024 * 1024
MAX_BULK = 10
JSON_TYPE = "application/json; charset=utf-8"
ALL_RIGHTS = ["ServiceConfig", "EnrollmentRead", "EnrollmentWrite", "DeviceConnect",
              "RegistrationStatusRead", "RegistrationStatusWrite"]


class ApiError(Exception):
    """An error answer in DPS's ProvisioningServiceErrorDetails shape (§1.11)."""

    def __init__(self, status, code, message, headers=None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def unauthorized(reason):
    # §1.5: a genuine auth failure is 401 with errorCode 401002 and no authenticationKey.
    # The reason goes to the emulator's stderr only, never to the client.
    err = ApiError(401, 401002, "Unauthorized")
    err.reason = reason
    return err


class Response:
    def __init__(self, status, body=None, headers=None):
        self.status = status
        self.body = body            # JSON-able object, or None for no body
        self.headers = dict(headers or {})


# ---------------------------------------------------------------- persistent state


def atomic_write_json(path, obj):
    tmp = "%s.tmp.%d.%d" % (path, os.getpid(), threading.get_ident())
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def _file_name(key):
    # The "r-" prefix keeps "." and ".." registration IDs from naming directories.
    return "r-" + quote(key, safe="-_.:") + ".json"


class Collection:
    """A dict kept as one JSON file per entry in a directory, written atomically."""

    def __init__(self, directory):
        self.dir = directory
        os.makedirs(directory, exist_ok=True)
        self.items = {}
        for name in os.listdir(directory):
            if name.startswith("r-") and name.endswith(".json"):
                with open(os.path.join(directory, name)) as f:
                    self.items[unquote(name[2:-5])] = json.load(f)

    def get(self, key):
        return self.items.get(key)

    def put(self, key, value):
        self.items[key] = value
        atomic_write_json(os.path.join(self.dir, _file_name(key)), value)

    def delete(self, key):
        if self.items.pop(key, None) is None:
            return False
        try:
            os.unlink(os.path.join(self.dir, _file_name(key)))
        except FileNotFoundError:
            pass
        return True


# ---------------------------------------------------------------- the emulator


class Emulator:
    def __init__(self, args):
        self.args = args
        self.dir = os.path.abspath(args.state_dir)
        os.makedirs(self.dir, exist_ok=True)
        self.lock = threading.RLock()
        self.log_lock = threading.Lock()
        self.log_path = os.path.join(self.dir, "requests.log")
        self.boot = secrets.token_hex(3)
        self.conn_counter = 0
        self.hub_host = args.hub_host.lower()
        self.service_host = args.service_host.lower()
        self.enrollments = Collection(os.path.join(self.dir, "enrollments"))
        self.registrations = Collection(os.path.join(self.dir, "registrations"))
        self.hub_devices = Collection(os.path.join(self.dir, "hub-devices"))
        self.faults = dps_faults.FaultSet()
        for text in args.fault or []:
            self.faults.set(*dps_faults.parse_cli(text))
        self.rate_window = collections.deque()
        self._other_ek = None
        self._setup_policies()
        self._setup_tls()

    # -- clock, ids ---------------------------------------------------------------------

    def now(self):
        """Server time: real time plus the clock_offset fault (affects Date and SAS expiry)."""
        return time.time() + self.faults.value("clock_offset", 0.0)

    def iso(self, t=None):
        t = self.now() if t is None else t
        d = datetime.datetime.fromtimestamp(t, datetime.timezone.utc)
        return d.strftime("%Y-%m-%dT%H:%M:%S.") + "%06d0Z" % d.microsecond

    def next_conn(self):
        with self.lock:
            self.conn_counter += 1
            return "%s-%d" % (self.boot, self.conn_counter)

    @staticmethod
    def new_etag():
        return base64.b64encode(os.urandom(9)).decode()

    def polls(self):
        return int(self.faults.value("polls", self.args.polls))

    # -- setup ---------------------------------------------------------------------------

    def _setup_policies(self):
        path = os.path.join(self.dir, "policies.json")
        if not os.path.exists(path):
            def key():
                return base64.b64encode(os.urandom(32)).decode()
            atomic_write_json(path, {"policies": [
                {"keyName": "provisioningserviceowner", "primaryKey": key(),
                 "secondaryKey": key(), "rights": ALL_RIGHTS},
                {"keyName": "enrollmentread", "primaryKey": key(), "secondaryKey": key(),
                 "rights": ["EnrollmentRead"]}]})
        with open(path) as f:
            self.policies = {p["keyName"]: p for p in json.load(f)["policies"]}
        atomic_write_json(os.path.join(self.dir, "connection-strings.json"), {
            name: "HostName=%s;SharedAccessKeyName=%s;SharedAccessKey=%s"
                  % (self.args.service_host, name, p["primaryKey"])
            for name, p in self.policies.items()})

    def _setup_tls(self):
        names = ["localhost", self.args.service_host, self.args.hub_host,
                 "*.azure-devices.net", "*.azure-devices-provisioning.net"]
        names += self.args.extra_san or []
        names = list(dict.fromkeys(n.lower() for n in names))
        ips = ["127.0.0.1", "::1"]
        ca_cert, ca_key = dps_tls.ensure_ca(self.dir, "ca", "tpm-provision DPS emulator CA")
        cert, key = dps_tls.ensure_server(self.dir, "server", ca_cert, ca_key, names, ips)
        self.tls = self._context(cert, key)
        # A second, untrusted chain: what a TLS-inspecting proxy presents (field case B31).
        o_cert, o_key = dps_tls.ensure_ca(self.dir, "other-ca", "untrusted proxy CA")
        cert, key = dps_tls.ensure_server(self.dir, "other-server", o_cert, o_key, names, ips)
        self.tls_other = self._context(cert, key)

    @staticmethod
    def _context(cert, key):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(cert, key)
        return ctx

    def other_ek(self):
        with self.lock:
            if self._other_ek is None:
                self._other_ek = dps_tpm2.parse_rsa_public(
                    dps_tpm2.software_rsa_public("ek"))
            return self._other_ek

    # -- log -----------------------------------------------------------------------------

    def log(self, entry):
        """One JSON line per request.  Never a key, signature or token: only whether an
        Authorization header was present."""
        line = json.dumps(entry, sort_keys=True) + "\n"
        with self.log_lock:
            with open(self.log_path, "a") as f:
                f.write(line)
        if self.args.verbose:
            sys.stderr.write(line)

    def read_log(self):
        with self.log_lock:
            try:
                with open(self.log_path) as f:
                    return [json.loads(line) for line in f if line.strip()]
            except FileNotFoundError:
                return []

    def clear_log(self):
        with self.log_lock:
            with open(self.log_path, "w"):
                pass

    # -- hosts ---------------------------------------------------------------------------

    def hub_hosts(self):
        hosts = {self.hub_host}
        with self.lock:
            for rec in self.enrollments.items.values():
                e = rec["enrollment"]
                if e.get("iotHubHostName"):
                    hosts.add(e["iotHubHostName"].lower())
                hosts.update(h.lower() for h in e.get("iotHubs") or [])
            for dev in self.hub_devices.items.values():
                hosts.add(dev["hub"].lower())
        return hosts

    # -- rate limit ----------------------------------------------------------------------

    def rate_limited(self, kind):
        """The rate_limit fault: at most N requests of the covered kinds per second across
        all devices; returns the fault's params when this request is over the limit."""
        fault = self.faults.get("rate_limit")
        if fault is None or (fault.on is not None and kind not in fault.on):
            return None
        now = time.monotonic()
        with self.lock:
            while self.rate_window and self.rate_window[0] <= now - 1.0:
                self.rate_window.popleft()
            if len(self.rate_window) >= fault.value:
                return dict(fault.params)
            self.rate_window.append(now)
        return None

    # -- keys ----------------------------------------------------------------------------

    def build_blob(self, ek_bytes, srk_bytes, key, kind, fired):
        ek = dps_tpm2.parse_rsa_public(ek_bytes)
        srk = dps_tpm2.parse_rsa_public(srk_bytes)
        if self.faults.take("auth_key_hostile", kind, fired) is not None:
            # What only an impostor sends: an authValue the device cannot know, and no noDA,
            # so every try with the empty password counts towards lockout.
            return dps_tpm2.build_authentication_key(
                ek, srk, key, self.args.field6_bytes,
                attributes=dps_tpm2.HMAC_KEY_ATTRIBUTES & ~dps_tpm2.TPMA_OBJECT_NO_DA,
                auth_value=os.urandom(16))
        return dps_tpm2.build_authentication_key(ek, srk, key, self.args.field6_bytes)

    def present_blob(self, kind, blob, srk_bytes, key, fired):
        """Apply the authenticationKey faults to the blob this response carries."""
        if self.faults.take("auth_key_wrong_device", kind, fired) is not None:
            blob = dps_tpm2.build_authentication_key(
                self.other_ek(), dps_tpm2.parse_rsa_public(srk_bytes), key,
                self.args.field6_bytes)
        params = self.faults.take("auth_key_corrupt", kind, fired)
        if params is not None:
            offset = int(params["offset"]) % len(blob)
            blob = blob[:offset] + bytes([blob[offset] ^ 0x01]) + blob[offset + 1:]
        if self.faults.take("auth_key_truncated", kind, fired) is not None:
            blob = blob[:len(blob) // 2]
        return base64.b64encode(blob).decode()


# ---------------------------------------------------------------- request routing


def _segments(path):
    return [unquote(s) for s in path.split("/")[1:]]


def _b64decode(text):
    if not isinstance(text, str):
        raise ValueError("not a string")
    return base64.b64decode(text, validate=True)


def _error_body(emu, err):
    return {"errorCode": err.code, "trackingId": str(uuid.uuid4()), "message": err.message,
            "timestampUtc": emu.iso()}


def _retry_after(emu, spec):
    """retry-after header value from a fault setting: "N" seconds, "date:N" (HTTP-date N
    seconds ahead of the server clock) or "none" (header absent)."""
    spec = str(spec)
    if spec == "none":
        return {}
    if spec.startswith("date:"):
        when = emu.now() + float(spec[5:])
        return {"Retry-After": email.utils.formatdate(when, usegmt=True)}
    return {"Retry-After": spec}


class DeviceApi:
    """§1, §5.5: register and operation status."""

    def __init__(self, emu):
        self.emu = emu

    def check_scope(self, scope):
        # ID scopes are matched case-insensitively (AIS lowercases its SAS resource, and
        # configs carry upper-case scopes, §1.6, §7.4).
        if scope.lower() != self.emu.args.id_scope.lower():
            raise ApiError(404, 404001, "ID scope %s not found" % scope)

    def enrollment(self, regid):
        rec = self.emu.enrollments.get(regid)
        if rec is None:
            if self.emu.args.unknown_enrollment == "404":
                raise ApiError(404, 404201, "Enrollment not found")
            raise unauthorized("no enrollment for registration ID %r" % regid)
        return rec

    def check_device_sas(self, header, scope, regid, rec):
        challenge = (rec or {}).get("challenge")
        if challenge is None:
            raise unauthorized("no challenge issued to %r" % regid)
        try:
            dps_sas.check(header, bytes.fromhex(challenge["key"]),
                          "%s/registrations/%s" % (scope, regid), self.emu.now(),
                          self.emu.args.sas_skew, skn=KEY_NAME)
        except dps_sas.SasError as e:
            raise unauthorized(str(e)) from None

    def register(self, scope, regid, query, body, auth, host, fired):
        emu = self.emu
        self.check_scope(scope)
        try:
            doc = json.loads(body.decode("utf-8")) if body else {}
        except (UnicodeDecodeError, ValueError):
            raise ApiError(400, 400001, "The request body is not valid JSON") from None
        if not isinstance(doc, dict):
            raise ApiError(400, 400001, "The request body must be a JSON object")
        if "registrationId" in doc and doc["registrationId"] != regid:
            raise ApiError(400, 400001, "registrationId in the body does not match the URL")
        enrollment = self.enrollment(regid)
        enrolled_ek = _b64decode(enrollment["enrollment"]["attestation"]["tpm"]
                                 ["endorsementKey"])
        tpm = doc.get("tpm")
        if tpm is not None and not isinstance(tpm, dict):
            raise ApiError(400, 400001, "tpm must be an object")
        if auth is None:
            return self._challenge(scope, regid, enrollment, enrolled_ek, tpm, fired)

        with emu.lock:
            rec = emu.registrations.get(regid)
            self.check_device_sas(auth, scope, regid, rec)
            if tpm and tpm.get("endorsementKey") is not None:
                if self._decode_key(tpm, "endorsementKey") != enrolled_ek:
                    raise unauthorized("request EK differs from the enrollment's")
            op_id = "5.%s.%s" % (secrets.token_hex(8), uuid.uuid4())
            ops = rec.setdefault("operations", {})
            ops[op_id] = {"pollsLeft": emu.polls(), "createdUtc": emu.iso(),
                          "payload": doc.get("payload"), "hasPayload": "payload" in doc,
                          "result": None}
            for old in sorted(ops, key=lambda k: ops[k]["createdUtc"])[:-8]:
                del ops[old]
            emu.registrations.put(regid, rec)
        return Response(202, {"operationId": op_id, "status": "assigning"},
                        self._poll_headers(host, scope, regid, op_id, query))

    def _poll_headers(self, host, scope, regid, op_id, query):
        location = "https://%s/%s/registrations/%s/operations/%s?api-version=%s" % (
            host, quote(scope, safe=""), quote(regid, safe=""), quote(op_id, safe=""),
            quote(query.get("api-version", ""), safe=""))
        return {"Retry-After": str(self.emu.args.retry_after), "Location": location}

    @staticmethod
    def _decode_key(tpm, field):
        try:
            raw = _b64decode(tpm.get(field))
            dps_tpm2.parse_rsa_public(raw)
        except (binascii.Error, ValueError) as e:
            raise ApiError(400, 400004, "tpm.%s is invalid: %s" % (field, e)) from None
        return raw

    def _challenge(self, scope, regid, enrollment, enrolled_ek, tpm, fired):
        emu = self.emu
        if not tpm or tpm.get("endorsementKey") is None or tpm.get("storageRootKey") is None:
            raise ApiError(400, 400004, "TPM attestation requires tpm.endorsementKey and "
                                        "tpm.storageRootKey")
        ek = self._decode_key(tpm, "endorsementKey")
        srk = self._decode_key(tpm, "storageRootKey")
        if ek != enrolled_ek:
            # §9: the emulator uses the enrollment's EK and refuses a request EK that differs.
            raise unauthorized("request EK differs from the enrollment's")
        enrolled_srk = enrollment["enrollment"]["attestation"]["tpm"].get("storageRootKey")
        if enrolled_srk and _b64decode(enrolled_srk) != srk:
            raise unauthorized("request SRK differs from the enrollment's")
        key = os.urandom(dps_tpm2.HMAC_KEY_BYTES)
        blob = emu.build_blob(enrolled_ek, srk, key, "put_challenge", fired)
        with emu.lock:
            rec = emu.registrations.get(regid) or {"registrationId": regid}
            rec["challenge"] = {"key": key.hex(), "srk": base64.b64encode(srk).decode(),
                                "issuedUtc": emu.iso()}
            rec["challenges"] = rec.get("challenges", 0) + 1
            emu.registrations.put(regid, rec)
        body = {"authenticationKey": emu.present_blob("put_challenge", blob, srk, key, fired),
                "keyName": KEY_NAME,
                "message": "TPM attestation challenge: activate authenticationKey and sign "
                           "the SAS token with it"}
        if emu.faults.take("missing_keyname", "put_challenge", fired) is not None:
            del body["keyName"]
        return Response(401, body)

    def operation(self, scope, regid, op_id, query, auth, host, fired):
        emu = self.emu
        self.check_scope(scope)
        with emu.lock:
            rec = emu.registrations.get(regid)
            if rec is None:
                self.enrollment(regid)
            self.check_device_sas(auth, scope, regid, rec)
            op = rec.get("operations", {}).get(op_id)
            if op is None or emu.faults.take("operation_lost", "get", fired) is not None:
                raise ApiError(404, 404203, "Operation %s not found" % op_id)
            if op["result"] is None and op["pollsLeft"] > 0:
                op["pollsLeft"] -= 1
                emu.registrations.put(regid, rec)
                return Response(202, {"operationId": op_id, "status": "assigning",
                                      "registrationState": {"registrationId": regid,
                                                            "status": "assigning"}},
                                self._poll_headers(host, scope, regid, op_id, query))
            if op["result"] is None:
                op["result"] = self._finish(regid, rec, op, fired)
                emu.registrations.put(regid, rec)
            result = op["result"]
        state = dict(result["registrationState"])
        params = emu.faults.take("assignment_rewritten", "get", fired) \
            if result["status"] == "assigned" else None
        if params:
            # What an impostor can write there: the hub the device then trusts, and any text.
            state.update({k: v for k, v in (("assignedHub", params["hub"]),
                                            ("deviceId", params["device_id"])) if v})
        if result.get("blob"):
            blob = base64.b64decode(result["blob"])
            srk = base64.b64decode(rec["challenge"]["srk"])
            key = bytes.fromhex(result["hubKey"])
            state["tpm"] = {"authenticationKey": emu.present_blob("get", blob, srk, key, fired)}
        return Response(200, {"operationId": op_id, "status": result["status"],
                              "registrationState": state})

    def _finish(self, regid, rec, op, fired):
        """Decide the outcome of an operation on its last poll (§1.9, §1.10)."""
        emu = self.emu
        now = emu.iso()
        enrollment = emu.enrollments.get(regid)
        state = {"registrationId": regid, "createdDateTimeUtc": rec.get("createdUtc", now),
                 "lastUpdatedDateTimeUtc": now, "etag": emu.new_etag()}
        if enrollment is None:
            state.update(status="failed", errorCode=404201,
                         errorMessage="Enrollment not found")
            return {"status": "failed", "registrationState": state}
        e = enrollment["enrollment"]
        failure = enrollment.get("emulator", {}).get("failure")
        params = emu.faults.take("assign_failed", "get", fired)
        if params is not None:
            failure = {"errorCode": int(params["error_code"]),
                       "errorMessage": params["error_message"]}
        if failure:
            state.update(status="failed", errorCode=failure["errorCode"],
                         errorMessage=failure["errorMessage"])
            return {"status": "failed", "registrationState": state}
        if e.get("provisioningStatus", "enabled") == "disabled":
            state.update(status="disabled")
            return {"status": "disabled", "registrationState": state}

        hub, substatus = self._assignment(rec.get("assignment"), e)
        substatus = enrollment.get("emulator", {}).get("substatus") or substatus
        device_id = e.get("deviceId") or regid
        key = os.urandom(dps_tpm2.HMAC_KEY_BYTES)
        srk = base64.b64decode(rec["challenge"]["srk"])
        blob = emu.build_blob(_b64decode(e["attestation"]["tpm"]["endorsementKey"]), srk, key,
                              "get", fired)
        rec.setdefault("createdUtc", now)
        state.update(createdDateTimeUtc=rec["createdUtc"], assignedHub=hub, deviceId=device_id,
                     status="assigned", substatus=substatus)
        if op.get("hasPayload"):
            state["payload"] = op["payload"]
        rec["assignment"] = {"assignedHub": hub, "deviceId": device_id, "hubKey": key.hex(),
                             "substatus": substatus, "assignedUtc": now}
        rec["assignments"] = rec.get("assignments", 0) + 1
        emu.hub_devices.put("%s/%s" % (hub.lower(), device_id),
                            {"hub": hub, "deviceId": device_id, "key": key.hex(),
                             "registrationId": regid})
        return {"status": "assigned", "registrationState": state,
                "blob": base64.b64encode(blob).decode(), "hubKey": key.hex()}

    def _assignment(self, previous, e):
        """Hub and substatus.  The rules are this emulator's reading of §1.9 and §6.1
        (reprovisionPolicy); the real DPS's exact choice is not documented."""
        target = e.get("iotHubHostName") or (e.get("iotHubs") or [None])[0] \
            or self.emu.args.hub_host
        if previous is None or previous["assignedHub"].lower() == target.lower():
            return target, "initialAssignment"
        policy = e.get("reprovisionPolicy") or {}
        if not policy.get("updateHubAssignment", True):
            return previous["assignedHub"], "reprovisionedToInitialAssignment"
        if policy.get("migrateDeviceData", True):
            return target, "deviceDataMigrated"
        return target, "deviceDataReset"


class ServiceApi:
    """§6: individual enrollments, bulk operations, registration state."""

    def __init__(self, emu):
        self.emu = emu

    def authorize(self, auth, path, right):
        emu = self.emu
        try:
            token = dps_sas.parse(auth)
        except dps_sas.SasError as e:
            raise unauthorized(str(e)) from None
        policy = emu.policies.get(token.skn)
        if policy is None:
            raise unauthorized("no shared access policy named %r" % token.skn)
        resource = (emu.service_host + path).lower().rstrip("/")

        def matches(sr):
            # §6: sr is the host name; an sr naming a path under the host also covers it.
            sr = sr.lower().rstrip("/")
            return resource == sr or resource.startswith(sr + "/")
        last = None
        for name in ("primaryKey", "secondaryKey"):
            try:
                dps_sas.check_token(token, base64.b64decode(policy[name]), None, emu.now(),
                                    emu.args.sas_skew, skn=token.skn, resource_match=matches)
                break
            except dps_sas.SasError as e:
                last = e
        else:
            raise unauthorized(str(last))
        if right not in policy["rights"]:
            # §6 lists the permissions; the status for a missing one is this emulator's
            # choice (401, like every other authorization failure), see README.
            err = ApiError(401, 401002, "Unauthorized: policy %s lacks %s"
                           % (token.skn, right))
            err.reason = "policy %s lacks %s" % (token.skn, right)
            raise err

    def handle(self, method, path, segs, query, headers, body, auth):
        if query.get("api-version") not in self.emu.args.service_api_versions:
            raise unsupported_version(query.get("api-version"),
                                      self.emu.args.service_api_versions)
        root = segs[0].lower()
        if root == "enrollments" and len(segs) == 1:
            if method != "POST":
                raise ApiError(405, 405000, "Method not allowed")
            self.authorize(auth, path, "EnrollmentWrite")
            return self.bulk(self._json(body))
        if root == "enrollments" and len(segs) == 2 and segs[1] == "query":
            if method != "POST":
                raise ApiError(405, 405000, "Method not allowed")
            self.authorize(auth, path, "EnrollmentRead")
            return self.query(headers)
        if root == "enrollments" and len(segs) == 2:
            right = "EnrollmentRead" if method == "GET" else "EnrollmentWrite"
            if method not in ("GET", "PUT", "DELETE"):
                raise ApiError(405, 405000, "Method not allowed")
            self.authorize(auth, path, right)
            return self.enrollment(method, segs[1], headers, body)
        if root == "registrations" and len(segs) == 2:
            if method not in ("GET", "DELETE"):
                raise ApiError(405, 405000, "Method not allowed")
            right = "RegistrationStatusRead" if method == "GET" else "RegistrationStatusWrite"
            self.authorize(auth, path, right)
            return self.registration(method, segs[1])
        raise ApiError(404, 404000, "Not found (enrollment groups are not emulated)")

    @staticmethod
    def _json(body):
        try:
            doc = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise ApiError(400, 400001, "The request body is not valid JSON") from None
        if not isinstance(doc, dict):
            raise ApiError(400, 400001, "The request body must be a JSON object")
        return doc

    @staticmethod
    def _if_match(value):
        if value is None:
            return None
        value = value.strip()
        if value.startswith("W/"):
            value = value[2:]
        return value.strip('"')

    def _etag_ok(self, existing, wanted):
        if wanted is None:
            return True
        if existing is None:
            return False
        return wanted == "*" or wanted == existing["enrollment"]["etag"]

    def validate(self, regid, doc):
        """Check an IndividualEnrollment (§6.1).  Returns the stored form; raises ApiError
        with 400004 for a bad attestation (field case B04), 400001 otherwise."""
        if not isinstance(regid, str) or not REGISTRATION_ID_RE.match(regid):
            raise ApiError(400, 400001, "registrationId %r is invalid: lowercase "
                                        "alphanumerics and -._: only, at most 128" % (regid,))
        if doc.get("registrationId") != regid:
            raise ApiError(400, 400001, "registrationId in the body does not match")
        att = doc.get("attestation")
        if not isinstance(att, dict) or att.get("type") != "tpm" \
                or not isinstance(att.get("tpm"), dict):
            raise ApiError(400, 400004, "attestation must be of type tpm (the only one "
                                        "emulated)")
        tpm = {}
        for field in ("endorsementKey", "storageRootKey"):
            value = att["tpm"].get(field)
            if value is None or (field == "storageRootKey" and value == ""):
                continue
            try:
                dps_tpm2.parse_rsa_public(_b64decode(value))
            except (binascii.Error, ValueError) as e:
                raise ApiError(400, 400004, "The %s is invalid: %s" % (
                    "endorsement key" if field == "endorsementKey" else "storage root key",
                    e)) from None
            tpm[field] = value
        if "endorsementKey" not in tpm:
            raise ApiError(400, 400004, "The endorsement key is missing")
        out = {"registrationId": regid, "attestation": {"type": "tpm", "tpm": tpm}}
        status = doc.get("provisioningStatus", "enabled")
        if status not in ("enabled", "disabled"):
            raise ApiError(400, 400001, "provisioningStatus must be enabled or disabled")
        out["provisioningStatus"] = status
        if doc.get("deviceId") is not None:
            if not isinstance(doc["deviceId"], str) or not DEVICE_ID_RE.match(doc["deviceId"]):
                raise ApiError(400, 400001, "deviceId is invalid")
            out["deviceId"] = doc["deviceId"]
        if doc.get("iotHubHostName") is not None:
            if not isinstance(doc["iotHubHostName"], str):
                raise ApiError(400, 400001, "iotHubHostName must be a string")
            out["iotHubHostName"] = doc["iotHubHostName"]
        if doc.get("iotHubs") is not None:
            if not isinstance(doc["iotHubs"], list) or \
                    not all(isinstance(h, str) for h in doc["iotHubs"]):
                raise ApiError(400, 400001, "iotHubs must be a list of host names")
            out["iotHubs"] = doc["iotHubs"]
        policy = doc.get("reprovisionPolicy")
        if policy is not None:
            if not isinstance(policy, dict) or not all(
                    isinstance(policy.get(k, True), bool)
                    for k in ("updateHubAssignment", "migrateDeviceData")):
                raise ApiError(400, 400001, "reprovisionPolicy is invalid")
            out["reprovisionPolicy"] = {
                "updateHubAssignment": policy.get("updateHubAssignment", True),
                "migrateDeviceData": policy.get("migrateDeviceData", True)}
        for passthrough in ("initialTwin", "capabilities", "allocationPolicy",
                            "customAllocationDefinition", "optionalDeviceInformation"):
            if doc.get(passthrough) is not None:
                out[passthrough] = doc[passthrough]
        return out

    def _store(self, regid, clean, existing):
        emu = self.emu
        now = emu.iso()
        clean["createdDateTimeUtc"] = existing["enrollment"]["createdDateTimeUtc"] \
            if existing else now
        clean["lastUpdatedDateTimeUtc"] = now
        clean["etag"] = emu.new_etag()
        rec = {"enrollment": clean,
               "emulator": existing.get("emulator", {}) if existing else {}}
        emu.enrollments.put(regid, rec)
        return rec

    def public(self, rec):
        out = dict(rec["enrollment"])
        reg = self.emu.registrations.get(out["registrationId"])
        if reg and reg.get("assignment"):
            out["registrationState"] = self._registration_state(reg)
        return out

    @staticmethod
    def _registration_state(reg):
        a = reg["assignment"]
        return {"registrationId": reg["registrationId"],
                "createdDateTimeUtc": reg.get("createdUtc"),
                "assignedHub": a["assignedHub"], "deviceId": a["deviceId"],
                "status": "assigned", "substatus": a["substatus"],
                "lastUpdatedDateTimeUtc": a["assignedUtc"]}

    def enrollment(self, method, regid, headers, body):
        emu = self.emu
        wanted = self._if_match(headers.get("If-Match"))
        with emu.lock:
            existing = emu.enrollments.get(regid)
            if method == "GET":
                if existing is None:
                    raise ApiError(404, 404201, "Enrollment %s not found" % regid)
                return self._with_etag(200, self.public(existing))
            if method == "DELETE":
                if existing is None:
                    raise ApiError(404, 404201, "Enrollment %s not found" % regid)
                if not self._etag_ok(existing, wanted):
                    raise ApiError(412, 412002, "ETag does not match")
                emu.enrollments.delete(regid)
                return Response(204)
            clean = self.validate(regid, self._json(body))
            if not self._etag_ok(existing, wanted):
                raise ApiError(412, 412002, "ETag does not match")
            return self._with_etag(200, self.public(self._store(regid, clean, existing)))

    @staticmethod
    def _with_etag(status, body):
        return Response(status, body, {"ETag": '"%s"' % body["etag"]})

    def bulk(self, doc):
        """§6.2: at most 10 rows; each row succeeds or is reported in `errors`."""
        emu = self.emu
        mode = doc.get("mode")
        rows = doc.get("enrollments")
        if mode not in ("create", "update", "updateIfMatchETag", "delete"):
            raise ApiError(400, 400001, "mode must be create, update, updateIfMatchETag or "
                                        "delete")
        if not isinstance(rows, list) or not rows:
            raise ApiError(400, 400001, "enrollments must be a non-empty list")
        if len(rows) > MAX_BULK:
            raise ApiError(400, 400001, "At most %d enrollments per bulk operation, got %d"
                           % (MAX_BULK, len(rows)))
        errors = []
        with emu.lock:
            for row in rows:
                regid = row.get("registrationId") if isinstance(row, dict) else None
                try:
                    if not isinstance(row, dict):
                        raise ApiError(400, 400001, "not an object")
                    self._bulk_row(mode, regid, row)
                except ApiError as e:
                    errors.append({"registrationId": regid, "errorCode": e.code,
                                   "errorStatus": e.message})
        return Response(200, {"isSuccessful": not errors, "errors": errors})

    def _bulk_row(self, mode, regid, row):
        emu = self.emu
        existing = emu.enrollments.get(regid) if isinstance(regid, str) else None
        if mode == "delete":
            if existing is None:
                raise ApiError(404, 404201, "Enrollment not found")
            if row.get("etag") and not self._etag_ok(existing, row["etag"]):
                raise ApiError(412, 412002, "ETag does not match")
            emu.enrollments.delete(regid)
            return
        clean = self.validate(regid, row)
        if mode == "create" and existing is not None:
            raise ApiError(409, 409201, "Enrollment already exists")
        if mode == "updateIfMatchETag" and row.get("etag") is not None \
                and not self._etag_ok(existing, row["etag"]):
            raise ApiError(412, 412002, "ETag does not match")
        self._store(regid, clean, existing)

    def query(self, headers):
        emu = self.emu
        try:
            page = int(headers.get("x-ms-max-item-count") or 100)
            start = int(headers.get("x-ms-continuation") or 0)
        except ValueError:
            raise ApiError(400, 400001, "bad x-ms-max-item-count or x-ms-continuation") \
                from None
        with emu.lock:
            ids = sorted(emu.enrollments.items)
            items = [self.public(emu.enrollments.get(i)) for i in ids[start:start + page]]
        out = {"x-ms-item-type": "Enrollment"}
        if start + page < len(ids):
            out["x-ms-continuation"] = str(start + page)
        return Response(200, items, out)

    def registration(self, method, regid):
        emu = self.emu
        with emu.lock:
            reg = emu.registrations.get(regid)
            if reg is None or (method == "GET" and not reg.get("assignment")):
                raise ApiError(404, 404202, "Registration %s not found" % regid)
            if method == "DELETE":
                emu.registrations.delete(regid)
                return Response(204)
            return Response(200, self._registration_state(reg))


def unsupported_version(version, supported):
    """Field case B25: 400 / 400004, told apart from a bad EK (also 400004) by the message.
    `supported` empty: the bare message of the B25 repro (the unsupported_api_version
    fault)."""
    message = "Unsupported API version %s." % version
    if supported:
        message += " Supported api-versions: %s." % ", ".join(supported)
    return ApiError(400, 400004, message)


class HubApi:
    """A stand-in for IoT Hub that checks a device SAS against the device's current key
    (the K2 it received in its assigned response).  Paths: GET /devices/{id} and
    POST /devices/{id}/messages/events (the real device-to-cloud telemetry path)."""

    def __init__(self, emu):
        self.emu = emu

    def handle(self, method, host, segs, auth, fired):
        emu = self.emu
        if len(segs) < 2 or segs[0] != "devices":
            raise ApiError(404, 404000, "Not found")
        device_id = segs[1]
        if not ((method == "GET" and len(segs) == 2)
                or (method == "POST" and segs[2:] == ["messages", "events"])):
            raise ApiError(404, 404000, "Not found")
        if emu.faults.take("hub_401", "hub", fired) is not None:
            raise hub_unauthorized("hub_401 fault")
        device = emu.hub_devices.get("%s/%s" % (host, device_id))
        if device is None:
            raise hub_unauthorized("device %r not on hub %s" % (device_id, host))
        try:
            dps_sas.check(auth, bytes.fromhex(device["key"]),
                          "%s/devices/%s" % (host, device_id), emu.now(), emu.args.sas_skew,
                          skn=None)
        except dps_sas.SasError as e:
            raise hub_unauthorized(str(e)) from None
        if method == "POST":
            return Response(204)
        return Response(200, {"deviceId": device_id, "status": "enabled",
                              "authenticationType": "sas", "hub": device["hub"],
                              "registrationId": device["registrationId"]})


def hub_unauthorized(reason):
    err = ApiError(401, 401002, "ErrorCode:IotHubUnauthorizedAccess;Unauthorized")
    err.reason = reason
    return err


# ---------------------------------------------------------------- admin API


class AdminApi:
    """Test control, not part of DPS: /__emulator/..."""

    def __init__(self, emu):
        self.emu = emu

    def handle(self, method, segs, body):
        emu = self.emu
        doc = None
        if body:
            try:
                doc = json.loads(body.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                raise ApiError(400, 400001, "admin body is not JSON") from None
        what = segs[1] if len(segs) > 1 else ""
        rest = segs[2:]
        if what == "health" and method == "GET":
            return Response(200, {"ok": True})
        if what == "config" and method == "GET":
            a = emu.args
            return Response(200, {
                "idScope": a.id_scope, "hubHost": a.hub_host, "serviceHost": a.service_host,
                "sasSkew": a.sas_skew, "retryAfter": a.retry_after, "polls": emu.polls(),
                "deviceApiVersions": list(a.device_api_versions),
                "serviceApiVersions": list(a.service_api_versions),
                "unknownEnrollment": a.unknown_enrollment, "field6Bytes": a.field6_bytes,
                "stateDir": emu.dir, "ca": os.path.join(emu.dir, "ca.pem"), "boot": emu.boot})
        if what == "faults":
            return self.faults(method, rest, doc)
        if what == "log" and method == "GET":
            return Response(200, {"entries": emu.read_log()})
        if what == "log" and method == "DELETE":
            emu.clear_log()
            return Response(204)
        if what == "clock" and method == "GET":
            return Response(200, {"offset": emu.faults.value("clock_offset", 0.0),
                                  "now": emu.now(), "date": emu.iso()})
        if what == "clock" and method in ("POST", "PUT"):
            offset = (doc or {}).get("offset")
            if not isinstance(offset, (int, float)):
                raise ApiError(400, 400001, 'body must be {"offset": seconds}')
            emu.faults.set("clock_offset", {"value": offset})
            return Response(200, {"offset": float(offset), "now": emu.now()})
        if what == "enrollments" and len(rest) == 1 and method in ("POST", "PUT"):
            return self.enrollment_status(rest[0], doc or {})
        if what == "registrations" and len(rest) == 1 and method == "GET":
            return self.registration(rest[0])
        raise ApiError(404, 404000, "no such admin endpoint")

    def faults(self, method, rest, doc):
        emu = self.emu
        if method == "GET" and not rest:
            return Response(200, {"faults": emu.faults.describe()})
        if method == "DELETE":
            emu.faults.clear(rest[0] if rest else None)
            return Response(200, {"faults": emu.faults.describe()})
        if method in ("POST", "PUT") and not rest:
            if not isinstance(doc, dict):
                raise ApiError(400, 400001, 'body must be {"NAME": spec, ...}')
            try:
                parsed = [dps_faults.Fault(name, spec) for name, spec in doc.items()]
            except dps_faults.FaultError as e:
                raise ApiError(400, 400001, str(e)) from None
            for f in parsed:
                emu.faults.set(f.name, doc[f.name])
            return Response(200, {"faults": emu.faults.describe()})
        raise ApiError(405, 405000, "Method not allowed")

    def enrollment_status(self, regid, doc):
        emu = self.emu
        with emu.lock:
            rec = emu.enrollments.get(regid)
            if rec is None:
                raise ApiError(404, 404201, "Enrollment %s not found" % regid)
            if "provisioningStatus" in doc:
                if doc["provisioningStatus"] not in ("enabled", "disabled"):
                    raise ApiError(400, 400001, "provisioningStatus: enabled or disabled")
                rec["enrollment"]["provisioningStatus"] = doc["provisioningStatus"]
                rec["enrollment"]["etag"] = emu.new_etag()
                rec["enrollment"]["lastUpdatedDateTimeUtc"] = emu.iso()
            extra = rec.setdefault("emulator", {})
            if "failure" in doc:
                failure = doc["failure"]
                if failure is not None and not (
                        isinstance(failure, dict) and isinstance(failure.get("errorCode"), int)
                        and isinstance(failure.get("errorMessage"), str)):
                    raise ApiError(400, 400001, 'failure: {"errorCode": int, '
                                                '"errorMessage": str} or null')
                extra["failure"] = failure
            if "substatus" in doc:
                extra["substatus"] = doc["substatus"]
            emu.enrollments.put(regid, rec)
            return Response(200, {"enrollment": rec["enrollment"], "emulator": extra})

    def registration(self, regid):
        emu = self.emu
        with emu.lock:
            rec = emu.registrations.get(regid)
            if rec is None:
                raise ApiError(404, 404202, "no registration %s" % regid)
            a = rec.get("assignment") or {}
            ops = rec.get("operations", {})
            return Response(200, {
                "registrationId": regid,
                "challengeKey": (rec.get("challenge") or {}).get("key"),
                "hubKey": a.get("hubKey"), "assignedHub": a.get("assignedHub"),
                "deviceId": a.get("deviceId"), "substatus": a.get("substatus"),
                "challenges": rec.get("challenges", 0),
                "assignments": rec.get("assignments", 0),
                "operations": {k: {"pollsLeft": v["pollsLeft"],
                                   "status": (v["result"] or {}).get("status", "assigning")}
                               for k, v in ops.items()}})


# ---------------------------------------------------------------- HTTP plumbing


class DroppedConnection(Exception):
    pass


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "emulated-dps/1.0"
    sys_version = ""
    timeout = 120           # idle keep-alive connections are closed after this

    def version_string(self):
        return self.server_version

    def log_message(self, fmt, *args):
        if self.server.emu.args.verbose:
            sys.stderr.write("%s %s\n" % (self.conn_id, fmt % args))

    def date_time_string(self, timestamp=None):
        return email.utils.formatdate(self.server.emu.now(), usegmt=True)

    def do_GET(self):
        self.dispatch()

    do_PUT = do_POST = do_DELETE = do_PATCH = do_GET

    def _read_body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            body = b""
            while True:
                line = self.rfile.readline(1024)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024).strip():
                        pass
                    return body
                if len(body) + size > MAX_REQUEST_BODY:
                    raise ApiError(413, 413000, "request body too large")
                body += self.rfile.read(size)
                self.rfile.readline(8)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_REQUEST_BODY:
            raise ApiError(413, 413000, "request body too large")
        return self.rfile.read(length) if length > 0 else b""

    def _host(self):
        host = (self.headers.get("Host") or "").strip().lower()
        if host.startswith("["):
            return host[1:].split("]")[0]
        return host.rsplit(":", 1)[0] if host.count(":") == 1 else host

    def dispatch(self):
        emu = self.server.emu
        started = time.monotonic()
        url = urlsplit(self.path)
        query = {}
        for part in url.query.split("&"):
            if part:
                k, _, v = part.partition("=")
                query.setdefault(unquote(k), unquote(v))
        segs = _segments(url.path)
        host = self._host()
        auth = self.headers.get("Authorization")
        fired = []
        kind = "other"
        entry = {"method": self.command, "path": url.path, "query": url.query, "host": host,
                 "conn": self.conn_id, "auth": auth is not None}
        status = None
        try:
            try:
                body = self._read_body()
            except (ValueError, ApiError) as e:
                # The rest of the body may still be on the wire: do not reuse the connection.
                self.close_connection = True
                if isinstance(e, ApiError):
                    raise
                raise ApiError(400, 400001, "malformed request body framing") from None
            if segs and segs[0] == "__emulator":
                kind = "admin"
                self.send(AdminApi(emu).handle(self.command, segs, body), kind, fired)
                return
            kind = self.classify(host, segs)
            resp = self.route(kind, host, segs, query, body, auth, fired)
            status = self.send(resp, kind, fired)
        except DroppedConnection:
            status = 0
        except ApiError as e:
            if getattr(e, "reason", None) and emu.args.verbose:
                sys.stderr.write("%s 401: %s\n" % (self.conn_id, e.reason))
            status = self.send(Response(e.status, _error_body(emu, e),
                                        dict(e.headers, **{"x-ms-error-code": str(e.code)})),
                               kind, fired)
        except (ConnectionError, ssl.SSLError, socket.timeout):
            status = 0
            self.close_connection = True
        except Exception as e:  # an emulator bug: answer 500 rather than vanish
            sys.stderr.write("%s internal error: %r\n" % (self.conn_id, e))
            self.close_connection = True
            status = 500
            try:
                self.send(Response(500, _error_body(emu, ApiError(500, 500000, "Internal "
                                                                  "error"))), None, [])
            except (OSError, ssl.SSLError):
                status = 0
        finally:
            if kind != "admin":
                entry.update(time=datetime.datetime.now(datetime.timezone.utc).isoformat(),
                             kind=kind, status=status, faults=fired,
                             duration_ms=round((time.monotonic() - started) * 1000, 1))
                emu.log(entry)

    def classify(self, host, segs):
        if host in self.server.emu.hub_hosts():
            return "hub"
        if segs and segs[0].lower() in ("enrollments", "registrations", "enrollmentgroups"):
            return "service"
        if self.command == "PUT" and len(segs) == 4 and segs[1] == "registrations" \
                and segs[3] == "register":
            return "put_auth" if self.headers.get("Authorization") is not None \
                else "put_challenge"
        if self.command == "GET" and len(segs) == 5 and segs[1] == "registrations" \
                and segs[3] == "operations":
            return "get"
        return "other"

    def route(self, kind, host, segs, query, body, auth, fired):
        emu = self.server.emu
        # Faults that act before the request is looked at, in a fixed order.
        if emu.faults.take("drop", kind, fired) is not None:
            self.drop()
        params = emu.faults.take("delay", kind, fired)
        if params is not None:
            time.sleep(float(params["seconds"]))
        device = kind in ("put_challenge", "put_auth", "get")
        if device:
            version = query.get("api-version")
            if emu.faults.take("unsupported_api_version", kind, fired) is not None:
                raise unsupported_version(version, ())
            if version not in emu.args.device_api_versions:
                raise unsupported_version(version, emu.args.device_api_versions)
        params = emu.rate_limited(kind)
        if params is not None:
            fired.append("rate_limit")
            raise ApiError(429, 429001, "Too many requests (emulated rate limit)",
                           _retry_after(emu, params["retry_after"]))
        for name, status in (("put_429", 429), ("put_503", 503), ("get_429", 429),
                             ("get_503", 503)):
            params = emu.faults.take(name, kind, fired)
            if params is not None:
                raise ApiError(status, status * 1000 + 1,
                               "Too many requests" if status == 429 else "Service unavailable",
                               _retry_after(emu, params["retry_after"]))

        if kind == "hub":
            return HubApi(emu).handle(self.command, host, segs, auth, fired)
        if kind == "service":
            return ServiceApi(emu).handle(self.command, urlsplit(self.path).path, segs,
                                          query, self.headers, body, auth)
        if kind in ("put_challenge", "put_auth"):
            return DeviceApi(emu).register(segs[0], segs[2], query, body, auth,
                                           self.headers.get("Host") or host, fired)
        if kind == "get":
            return DeviceApi(emu).operation(segs[0], segs[2], segs[4], query, auth,
                                            self.headers.get("Host") or host, fired)
        raise ApiError(404, 404000, "Not found")

    def drop(self):
        """Close the TCP connection without an answer (and without a TLS close_notify)."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        raise DroppedConnection()

    def send(self, resp, kind, fired):
        """Write the response, applying the body/header faults.  Returns the status."""
        emu = self.server.emu

        def take(name):     # kind None or "admin": an answer no fault may touch
            return None if kind in (None, "admin") else emu.faults.take(name, kind, fired)
        body = b""
        if resp.body is not None:
            obj = resp.body
            params = take("status_unknown") if isinstance(obj, dict) else None
            if params is not None:
                # The status goes wherever DPS puts one: the top and registrationState.
                obj = {k: v for k, v in obj.items() if k != "status"}
                if isinstance(obj.get("registrationState"), dict):
                    obj["registrationState"] = {k: v for k, v in obj["registrationState"].items()
                                                if k != "status"}
                if params["status"] != "none":
                    obj["status"] = params["status"]
            params = take("oversize_body") if isinstance(obj, dict) else None
            if params is not None:
                obj = dict(obj, padding="x" * int(params["bytes"]))
            body = json.dumps(obj).encode("utf-8")
            if take("malformed_json") is not None:
                body = body[:-1] + b', "status": assigning}'
        wire_truncate = False
        params = take("truncated_json") if body else None
        if params is not None:
            if params["mode"] == "wire":
                wire_truncate = True
            else:
                body = body[:len(body) // 2]
        content_type = JSON_TYPE
        params = take("wrong_content_type")
        if params is not None:
            content_type = None if params["value"] == "none" else params["value"]

        self.send_response(resp.status)
        self.send_header("x-ms-request-id", str(uuid.uuid4()))
        if resp.body is not None and content_type is not None:
            self.send_header("Content-Type", content_type)
        for name, value in resp.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if wire_truncate:
            # Content-Length promised the whole body; half of it comes, then the socket closes.
            self.wfile.write(body[:len(body) // 2])
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return resp.status
        if body:
            self.wfile.write(body)
        return resp.status


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, address, family, emu):
        self.address_family = family
        self.emu = emu
        super().__init__(address, Handler)

    def server_bind(self):
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.address_family == socket.AF_INET6:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        socket.socket.bind(self.socket, self.server_address)
        self.server_address = self.socket.getsockname()
        self.server_port = self.server_address[1]

    def finish_request(self, sock, client_address):
        """Per connection, in its own thread: connection faults, then TLS, then HTTP."""
        emu = self.emu
        conn_id = emu.next_conn()
        for name in ("tls_plain_http", "tls_stall", "tls_wrong_ca"):
            params = emu.faults.take(name)
            if params is not None:
                emu.log({"time": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                         "kind": "connection", "conn": conn_id, "faults": [name],
                         "status": None})
                break
        else:
            name = None
        if name == "tls_plain_http":
            # What a misconfigured proxy does (B31): read the ClientHello, answer in clear.
            sock.settimeout(5)
            try:
                sock.recv(4096)
                sock.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n"
                             b"Content-Length: 23\r\nConnection: close\r\n\r\n"
                             b"plain HTTP, not TLS :-(")
            except OSError:
                pass
            return
        if name == "tls_stall":
            time.sleep(float(params["seconds"]))
        ctx = emu.tls_other if name == "tls_wrong_ca" else emu.tls
        # Headers and body leave in separate writes; without this, Nagle plus the client's
        # delayed ACK hold every answer back by ~40 ms.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(30)
        try:
            tls = ctx.wrap_socket(sock, server_side=True)
        except (ssl.SSLError, OSError):
            return
        try:
            tls.settimeout(None)
            handler = Handler.__new__(Handler)
            handler.conn_id = conn_id
            handler.__init__(tls, client_address, self)
        except (ssl.SSLError, OSError):
            pass
        finally:
            try:
                tls.close()
            except OSError:
                pass

    def handle_error(self, request, client_address):
        if self.emu.args.verbose:
            super().handle_error(request, client_address)


# ---------------------------------------------------------------- main


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, required=True, help="TCP port; 0 picks a free one")
    p.add_argument("--state-dir", required=True, help="directory for all state")
    p.add_argument("--bind", action="append",
                   help="loopback address to listen on (repeatable); default 127.0.0.1 "
                        "and ::1 if available")
    p.add_argument("--id-scope", default=DEFAULT_ID_SCOPE)
    p.add_argument("--hub-host", default=DEFAULT_HUB_HOST)
    p.add_argument("--service-host", default=DEFAULT_SERVICE_HOST)
    p.add_argument("--extra-san", action="append", help="more DNS names for the server cert")
    p.add_argument("--fault", action="append", help="NAME=VALUE[,key=value...] (repeatable)")
    p.add_argument("--sas-skew", type=int, default=300,
                   help="seconds a SAS may be past its se and still pass (default 300)")
    p.add_argument("--polls", type=int, default=1,
                   help="202 'assigning' answers before the operation completes (default 1)")
    p.add_argument("--retry-after", type=int, default=1,
                   help="retry-after seconds on 202 answers (default 1)")
    p.add_argument("--field6-bytes", type=int, default=dps_tpm2.DEFAULT_FIELD6_BYTES,
                   help="length of the encrypted data in blob field 6 (default 150)")
    p.add_argument("--unknown-enrollment", choices=("401", "404"), default="401",
                   help="answer to a register for an unknown registration ID (default 401)")
    p.add_argument("--device-api-versions", default=",".join(DEVICE_API_VERSIONS))
    p.add_argument("--service-api-versions", default=",".join(SERVICE_API_VERSIONS))
    p.add_argument("--verbose", action="store_true", help="requests and reasons on stderr")
    args = p.parse_args(argv)
    args.device_api_versions = tuple(v for v in args.device_api_versions.split(",") if v)
    args.service_api_versions = tuple(v for v in args.service_api_versions.split(",") if v)
    if not 0 <= args.field6_bytes <= 4096:
        p.error("--field6-bytes must be 0..4096")
    for text in args.fault or []:
        try:
            dps_faults.Fault(*dps_faults.parse_cli(text))
        except dps_faults.FaultError as e:
            p.error(str(e))
    return args


def make_servers(emu, port, binds):
    explicit = binds is not None
    binds = binds or ["127.0.0.1", "::1"]
    servers = []
    for address in binds:
        ip = ipaddress.ip_address(address)
        if not ip.is_loopback:
            raise SystemExit("refusing to listen on %s: loopback only" % address)
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        try:
            servers.append(Server((address, port), family, emu))
        except OSError:
            if explicit or not servers:
                raise
            continue        # ::1 unavailable, or its port taken: IPv4 alone will do
        port = servers[0].server_port
    return servers


def main(argv=None):
    args = parse_args(argv if argv is not None else sys.argv[1:])
    emu = Emulator(args)
    ready = os.path.join(emu.dir, "ready")
    if os.path.exists(ready):
        os.unlink(ready)
    servers = make_servers(emu, args.port, args.bind)
    port = servers[0].server_port
    with open(os.path.join(emu.dir, "port.tmp"), "w") as f:
        f.write("%d\n" % port)
    os.replace(os.path.join(emu.dir, "port.tmp"), os.path.join(emu.dir, "port"))
    threads = [threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.1},
                                daemon=True) for s in servers]
    for t in threads:
        t.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    with open(ready, "w") as f:
        f.write("%d\n" % port)
    sys.stderr.write("dps emulator listening on port %d (%s)\n"
                     % (port, ", ".join(s.server_address[0] for s in servers)))
    stop.wait()
    for s in servers:
        s.shutdown()
        s.server_close()
    try:
        os.unlink(ready)
    except FileNotFoundError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
