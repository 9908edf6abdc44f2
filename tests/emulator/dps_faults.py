"""Fault settings of the DPS emulator: what exists, how it is written, when it fires.

A fault is a name plus settings.  Count faults fire on matching requests (or connections)
while their count lasts ("always" never runs out).  Value faults are settings that hold
until cleared (clock offset, rate limit, number of polls).

Written on the command line as  NAME=VALUE[,key=value...]  and over the admin API as JSON
{"NAME": VALUE} or {"NAME": {"count"|"value": VALUE, "key": value, ...}}.
"""
import threading

# Request kinds the emulator tells apart; `on=` takes one, a group, or several joined by "|".
KINDS = ("put_challenge", "put_auth", "get", "service", "hub", "other")
GROUPS = {
    "put": ("put_challenge", "put_auth"),
    "device": ("put_challenge", "put_auth", "get"),
    "any": KINDS,
}

_RETRY = {"retry_after": "1"}

# name -> (kind: "count" | "value" | "connection", default on, default params)
SPECS = {
    "put_429": ("count", "put", _RETRY),
    "put_503": ("count", "put", _RETRY),
    "get_429": ("count", "get", _RETRY),
    "get_503": ("count", "get", _RETRY),
    "delay": ("count", "device", {"seconds": "5"}),
    "drop": ("count", "device", {}),
    "malformed_json": ("count", "device", {}),
    # A JSON answer whose "status" is left out ("none") or a word DPS never uses.
    "status_unknown": ("count", "get", {"status": "none"}),
    "truncated_json": ("count", "device", {"mode": "body"}),
    "auth_key_truncated": ("count", "device", {}),
    "auth_key_corrupt": ("count", "device", {"offset": "10"}),
    "auth_key_wrong_device": ("count", "device", {}),
    # A key DPS never makes: an authValue the device cannot know and no noDA.
    "auth_key_hostile": ("count", "device", {}),
    # The assigned answer with another hub and/or device ID (empty: left as it is).
    "assignment_rewritten": ("count", "get", {"hub": "", "device_id": ""}),
    # A poll answered 404 "operation not found", as after DPS lost the operation.
    "operation_lost": ("count", "get", {}),
    "missing_keyname": ("count", "put_challenge", {}),
    "wrong_content_type": ("count", "device", {"value": "text/html; charset=utf-8"}),
    "oversize_body": ("count", "device", {"bytes": str(10 * 1024 * 1024)}),
    "unsupported_api_version": ("count", "device", {}),
    "assign_failed": ("count", "get", {"error_code": "400209",
                                       "error_message": "Custom allocation failed "
                                                        "(emulated failure)"}),
    "hub_401": ("count", "hub", {}),
    "tls_wrong_ca": ("connection", None, {}),
    "tls_plain_http": ("connection", None, {}),
    "tls_stall": ("connection", None, {"seconds": "30"}),
    "rate_limit": ("value", "put", _RETRY),
    "clock_offset": ("value", None, {}),
    "polls": ("value", None, {}),
}


class FaultError(ValueError):
    pass


def _kinds(on):
    out = set()
    for part in str(on).split("|"):
        part = part.strip()
        if part in GROUPS:
            out.update(GROUPS[part])
        elif part in KINDS:
            out.add(part)
        else:
            raise FaultError("unknown request kind %r in on=" % part)
    return frozenset(out)


def _number(text, integer=False):
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        return None
    return value if value >= 0 else None


def _check_param(name, key, value):
    """Refuse a setting the emulator could not act on, when it is set, not when it fires."""
    ok = True
    if key == "retry_after":
        ok = value == "none" or _number(value[5:] if value.startswith("date:") else value,
                                        integer=not value.startswith("date:")) is not None
    elif key in ("seconds",):
        ok = _number(value) is not None
    elif key in ("offset", "bytes", "error_code"):
        ok = _number(value, integer=True) is not None
    elif key == "mode":
        ok = value in ("body", "wire")
    if not ok:
        raise FaultError("%s: bad value %r for %s" % (name, value, key))


class Fault:
    def __init__(self, name, spec):
        if name not in SPECS:
            raise FaultError("unknown fault %r" % name)
        kind, default_on, defaults = SPECS[name]
        self.name = name
        self.kind = kind
        if not isinstance(spec, dict):
            spec = {"value" if kind == "value" else "count": spec}
        spec = dict(spec)
        self.params = {k: str(v) for k, v in defaults.items()}
        self.count = None
        self.value = None
        if kind == "value":
            if "value" not in spec:
                raise FaultError("%s needs a value" % name)
            try:
                self.value = float(spec.pop("value"))
            except (TypeError, ValueError):
                raise FaultError("%s value must be a number" % name) from None
        else:
            count = spec.pop("count", "always")
            if str(count) == "always":
                self.count = None
            else:
                try:
                    self.count = int(count)
                except (TypeError, ValueError):
                    raise FaultError("%s count must be an integer or 'always'" % name) \
                        from None
                if self.count < 0:
                    raise FaultError("%s count must not be negative" % name)
        on = spec.pop("on", default_on)
        self.on = _kinds(on) if on is not None else None
        self.on_text = on
        for key, value in spec.items():
            if key not in defaults:
                raise FaultError("%s has no setting %r (has: %s)"
                                 % (name, key, ", ".join(sorted(defaults)) or "none"))
            self.params[key] = str(value)
        for key, value in self.params.items():
            _check_param(name, key, value)

    def describe(self):
        out = {"kind": self.kind, **self.params}
        if self.kind == "value":
            out["value"] = self.value
        else:
            out["count"] = "always" if self.count is None else self.count
        if self.on_text is not None:
            out["on"] = self.on_text
        return out


def parse_cli(text):
    """NAME=VALUE[,key=value...] -> (name, spec dict)."""
    name, eq, rest = text.partition("=")
    if not eq:
        raise FaultError("fault %r: expected NAME=VALUE" % text)
    parts = rest.split(",")
    kind = SPECS.get(name.strip(), ("count",))[0]
    spec = {"value" if kind == "value" else "count": parts[0]}
    for part in parts[1:]:
        key, eq, value = part.partition("=")
        if not eq:
            raise FaultError("fault %r: expected key=value after the comma" % text)
        spec[key.strip()] = value
    return name.strip(), spec


class FaultSet:
    """The active faults.  Thread safe: take() decrements atomically."""

    def __init__(self):
        self._lock = threading.Lock()
        self._faults = {}

    def set(self, name, spec):
        fault = Fault(name, spec)
        with self._lock:
            self._faults[name] = fault
        return fault

    def clear(self, name=None):
        with self._lock:
            if name is None:
                self._faults.clear()
            else:
                self._faults.pop(name, None)

    def describe(self):
        with self._lock:
            return {name: f.describe() for name, f in sorted(self._faults.items())}

    def value(self, name, default=None):
        with self._lock:
            f = self._faults.get(name)
            return default if f is None else f.value

    def get(self, name):
        with self._lock:
            return self._faults.get(name)

    def take(self, name, kind=None, fired=None):
        """If fault `name` is active and applies to `kind`, use one count of it, note its
        name in the list `fired` and return its params; else None."""
        with self._lock:
            f = self._faults.get(name)
            if f is None or f.kind == "value":
                return None
            if kind is not None and f.on is not None and kind not in f.on:
                return None
            if f.count is not None:
                if f.count <= 0:
                    return None
                f.count -= 1
        if fired is not None:
            fired.append(name)
        return dict(f.params)
