"""SharedAccessSignature parsing and checking, server side (protocol doc §1.6 and §6).

The signature is computed over the `sr` text exactly as the client sent it (no re-encoding),
"\\n", and the `se` text as sent.  The decoded `sr` is compared case-insensitively with the
expected resource.  That is what lets every client's encoding variant work (§1.6).
"""
import base64
import binascii
import hashlib
import hmac
from urllib.parse import unquote, unquote_plus

SCHEME = "sharedaccesssignature"


class SasError(Exception):
    """The token is missing, malformed or does not verify.  str() is safe to log: it never
    contains the signature or a key."""


class SasToken:
    def __init__(self, raw_sr, raw_se, sig, skn, fields):
        self.raw_sr = raw_sr     # as sent, still percent-encoded
        self.raw_se = raw_se
        self.sig = sig           # decoded bytes
        self.skn = skn           # decoded, or None
        self.fields = fields     # every raw field, for diagnostics (names only are logged)

    @property
    def resource(self):
        """The decoded sr.  `+` stands for a space in form encoding (C# WebUtility)."""
        return unquote_plus(self.raw_sr)

    @property
    def expiry(self):
        text = unquote(self.raw_se)
        if not text.isdigit() or len(text) > 12:
            raise SasError("se is not a decimal number of seconds")
        return int(text)

    def string_to_sign(self):
        return (self.raw_sr + "\n" + self.raw_se).encode("utf-8")

    def verify(self, key):
        """Constant-time check of HMAC-SHA256(key, raw sr ‖ '\\n' ‖ raw se)."""
        mac = hmac.new(key, self.string_to_sign(), hashlib.sha256).digest()
        return hmac.compare_digest(mac, self.sig)


def parse(header):
    """Parse an Authorization header value.  Fields may come in any order; each value is
    kept raw and decoded only where needed."""
    if header is None:
        raise SasError("no Authorization header")
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() != SCHEME or not rest.strip():
        raise SasError("Authorization is not a SharedAccessSignature")
    fields = {}
    for part in rest.strip().split("&"):
        name, eq, value = part.partition("=")
        name = name.strip()
        if not eq or not name:
            raise SasError("malformed SAS field")
        if name in fields:
            raise SasError("duplicate SAS field %s" % name)
        fields[name] = value
    for required in ("sr", "sig", "se"):
        if required not in fields:
            raise SasError("SAS field %s missing" % required)
    # base64 never contains a space, so a `+` turned into a space by a form decoder upstream
    # is put back; percent-escapes of either case are undone.
    sig_text = unquote(fields["sig"]).replace(" ", "+")
    try:
        sig = base64.b64decode(sig_text, validate=True)
    except (binascii.Error, ValueError):
        raise SasError("sig is not base64") from None
    skn = unquote_plus(fields["skn"]) if "skn" in fields else None
    return SasToken(fields["sr"], fields["se"], sig, skn, fields)


def check(header, key, expected_resource, now, skew, skn=None, resource_match=None):
    """Verify a token for `expected_resource`.  `skn`: required key name, or None to require
    that there is no skn (a device token for IoT Hub).  `resource_match(decoded_sr)` may
    replace the exact case-insensitive comparison.  Raises SasError; returns the token."""
    return check_token(parse(header), key, expected_resource, now, skew, skn, resource_match)


def check_token(token, key, expected_resource, now, skew, skn=None, resource_match=None):
    """check() for a token already parsed (the service API picks the key by its skn)."""
    if skn is None and token.skn is not None:
        raise SasError("unexpected skn")
    if skn is not None and token.skn != skn:
        raise SasError("skn does not name the expected key")
    resource = token.resource
    if resource_match is not None:
        ok = resource_match(resource)
    else:
        ok = resource.lower() == expected_resource.lower()
    if not ok:
        raise SasError("sr does not match the requested resource")
    if token.expiry + skew < now:
        raise SasError("token expired")
    if not token.verify(key):
        raise SasError("signature does not verify")
    return token
