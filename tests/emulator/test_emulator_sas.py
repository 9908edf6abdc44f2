"""Device SAS checking (protocol doc §1.6): every client's encoding is accepted, and every
kind of bad token is refused with 401 / 401002 and no authenticationKey."""
import base64
import hashlib
import hmac
import time
from urllib.parse import quote, quote_plus

import pytest

from dps_testing import ID_SCOPE


def mac(key, sr, se):
    return base64.b64encode(hmac.new(key, ("%s\n%s" % (sr, se)).encode(),
                                     hashlib.sha256).digest()).decode()


def lower_hex(text):
    """c-shared-utility URL_EncodeString: only A-Z a-z 0-9 - _ . ! ( ) * stay, lowercase hex."""
    keep = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.!()*")
    return "".join(c if c in keep else "%%%02x" % ord(c) for c in text)


def node_encode(text):
    """encodeURIComponent: uppercase hex; keeps A-Z a-z 0-9 - _ . ! ~ * ' ( )."""
    return quote(text, safe="-_.!~*'()")


def webutility_encode(text):
    """C# WebUtility.UrlEncode: uppercase hex, space as '+', keeps - _ . ! * ( )."""
    return quote_plus(text, safe="-_.!*()")


def ais_encode(text):
    """AIS: lowercased resource; '/' literal; controls, space, quote, <>`#?{} and = encoded."""
    return "".join("%%%02X" % ord(c) if c in ' "<>`#?{}=' or ord(c) < 0x20 else c
                   for c in text.lower())


def embedded_c(scope, regid):
    return lower_hex(scope) + "%2fregistrations%2f" + lower_hex(regid)


# Each variant: how sr is written, how sig is encoded, and the order of the fields.
def variant_tokens(scope, regid, key, se):
    resource = "%s/registrations/%s" % (scope, regid)
    out = {}

    def token(sr, sig_enc, order=("sr", "sig", "se", "skn")):
        sig = sig_enc(mac(key, sr, se))
        fields = {"sr": sr, "sig": sig, "se": se, "skn": "registration"}
        return "SharedAccessSignature " + "&".join("%s=%s" % (k, fields[k]) for k in order)
    out["c_sdk"] = token(lower_hex(resource), lower_hex)
    out["embedded_c"] = token(embedded_c(scope, regid), lower_hex)
    out["ais"] = token(ais_encode(resource), lambda s: quote_plus(s))
    out["node"] = token(node_encode(resource), node_encode)
    out["csharp"] = token(webutility_encode(resource), webutility_encode)
    out["docs_order_quote_plus"] = token(quote_plus(resource), quote_plus,
                                         ("sig", "se", "skn", "sr"))
    out["docs_lowercase"] = token(quote_plus(resource.lower()), quote_plus)
    out["uppercase_resource"] = token(node_encode(resource.upper()), node_encode)
    out["sig_not_encoded"] = token(lower_hex(resource), lambda s: s)
    out["plain_sr"] = token(resource, node_encode, ("skn", "se", "sig", "sr"))
    return out


VARIANTS = ["c_sdk", "embedded_c", "ais", "node", "csharp", "docs_order_quote_plus",
            "docs_lowercase", "uppercase_resource", "sig_not_encoded", "plain_sr"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_each_client_encoding_is_accepted(make_device, variant):
    # The ':' in the registration ID makes the encoders differ (%3a, %3A, literal).
    dev = make_device("sas:%s.1" % variant.replace("_", "-"))
    assert dev.challenge().status == 401
    se = str(int(time.time()) + 600)
    auth = variant_tokens(ID_SCOPE, dev.regid, dev.key(), se)[variant]
    r = dev.put_auth(auth)
    assert r.status == 202, (variant, auth, r)
    # The same token also authorizes the polls (§1.8).
    assert dev.poll(r.json()["operationId"], auth).status in (200, 202)


def assert_refused(r):
    assert r.status == 401, r
    body = r.json()
    assert body["errorCode"] == 401002
    assert body["message"] == "Unauthorized"
    assert "trackingId" in body and "timestampUtc" in body
    assert "authenticationKey" not in body


def sas(sr, sig, se, skn="registration"):
    out = "SharedAccessSignature sr=%s&sig=%s&se=%s" % (sr, quote(sig, safe=""), se)
    return out + ("&skn=%s" % skn if skn is not None else "")


def flip(b64):
    raw = bytearray(base64.b64decode(b64))
    raw[0] ^= 1
    return base64.b64encode(bytes(raw)).decode()


def bad_tokens(emu, dev, key, other_key):
    now = int(time.time())
    skew = emu.config()["sasSkew"]
    sr = lower_hex(dev.emu.device_resource(dev.regid))
    se = str(now + 600)
    other_sr = lower_hex(dev.emu.device_resource(dev.regid + "x"))
    scope_sr = lower_hex("0ne99999999/registrations/" + dev.regid)
    old = str(now - skew - 60)
    return {
        "tampered_sig": sas(sr, flip(mac(key, sr, se)), se),
        "other_registration": sas(other_sr, mac(key, other_sr, se), se),
        "other_scope": sas(scope_sr, mac(key, scope_sr, se), se),
        "expired": sas(sr, mac(key, sr, old), old),
        "wrong_skn": sas(sr, mac(key, sr, se), se, skn="owner"),
        "no_skn": sas(sr, mac(key, sr, se), se, skn=None),
        "other_key": sas(sr, mac(other_key, sr, se), se),
        # Signed over one encoding, sent with another: the HMAC is over sr as sent.
        "reencoded_sr": sas(node_encode(dev.emu.device_resource(dev.regid)),
                            mac(key, sr, se), se),
        "se_changed_after_signing": sas(sr, mac(key, sr, se), str(now + 601)),
        "se_not_a_number": sas(sr, mac(key, sr, "soon"), "soon"),
        "not_sas": "Basic dXNlcjpwYXNz",
        "missing_sig": "SharedAccessSignature sr=%s&se=%s&skn=registration" % (sr, se),
    }


BAD = ["tampered_sig", "other_registration", "other_scope", "expired", "wrong_skn", "no_skn",
       "other_key", "reencoded_sr", "se_changed_after_signing", "se_not_a_number", "not_sas",
       "missing_sig"]


@pytest.mark.parametrize("case", BAD)
def test_bad_token_is_refused_with_401002(emu, make_device, case):
    dev = make_device()
    other = make_device()
    assert dev.challenge().status == 401 and other.challenge().status == 401
    auth = bad_tokens(emu, dev, dev.key(), other.key())[case]
    assert_refused(dev.put_auth(auth))
    # A good token still works afterwards: the refusal was about the token only.
    assert dev.put_auth(dev.auth()).status == 202


def test_poll_with_bad_token_is_refused(make_device):
    dev = make_device()
    dev.challenge()
    r = dev.put_auth(dev.auth())
    op_id = r.json()["operationId"]
    assert_refused(dev.poll(op_id, dev.auth(key=b"\0" * 32)))
    assert dev.poll(op_id, dev.auth()).status == 202


def test_expiry_skew_allowance(make_device, emu):
    """A token past its se by less than the skew passes; by more, it fails (§1.6, [UNK]
    tolerance; the emulator's is --sas-skew, 300 s by default)."""
    skew = emu.config()["sasSkew"]
    assert skew == 300
    dev = make_device()
    dev.challenge()
    assert dev.put_auth(dev.auth(ttl=-(skew - 30))).status == 202
    assert_refused(dev.put_auth(dev.auth(ttl=-(skew + 30))))


def test_token_signed_with_a_superseded_challenge_key_is_refused(make_device):
    """Each unauthenticated PUT issues a new challenge key; only the latest one counts."""
    dev = make_device()
    dev.challenge()
    old = dev.key()
    dev.challenge()
    assert dev.key() != old
    assert_refused(dev.put_auth(dev.auth(key=old)))
    assert dev.put_auth(dev.auth()).status == 202


def test_token_before_any_challenge_is_refused(make_device):
    dev = make_device()
    assert_refused(dev.put_auth(dev.auth(key=b"\1" * 32)))
