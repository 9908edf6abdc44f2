"""`tpm-provision register` against the field cases it must survive: B02 (endorsement auth
inside ActivateCredential), B23 (DPS throttling, fleets), B25 (unsupported api-version), B26
(clocks that disagree), B28 (network not ready, requests never answered), B29 (stale
assignments), B31 (proxies), and that no secret ever reaches the agent's output.

Every test runs the real binary against its own swtpm and the DPS emulator
(tests/emulator), on loopback only.  Waits and request counts are read from the emulator's
request log, whose entries carry the time an answer was sent and how long it took, so
`start = time - duration` and the client's wait between two requests is
`start(next) - time(previous)`.
"""
import base64
import concurrent.futures
import datetime
import hashlib
import hmac
import json
import os
import re
import sys
import time
import urllib.parse

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "emulator"))
from agent import Agent  # noqa: E402
from client import Emulator, sas_header  # noqa: E402
from connect_proxy import ConnectProxy  # noqa: E402
from swtpm import Swtpm  # noqa: E402

ENDORSE_X = "endorse-X-5c1d9e"
OWNER_X = "owner-X-77aa02"
PROXY_USER = "proxyuser-B31"
PROXY_PASS = "Pr0xyPass-9d4e1f"
HUB_B = "hub-b.azure-devices.net"
THREE_YEARS = 3 * 365 * 86400

DEVICE_KINDS = ("put_challenge", "put_auth", "get")
# The host's proxy variables must not leak into runs that test proxies (or that must not use
# one): libcurl reads them whenever Proxy= is not set.  An empty value counts as unset.
NO_PROXY_ENV = {k: "" for k in ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY",
                                "no_proxy", "NO_PROXY", "http_proxy")}
# Slack for timestamps taken on both sides of a loopback connection.
EPS = 0.15


# ------------------------------------------------------------------------------- fixtures


@pytest.fixture
def emulator(request):
    """The DPS emulator, with per-test arguments through indirect parametrization
    (overrides conftest's `emulator`, so `device` uses it).  Operations complete at the
    first poll (--polls 0) to keep the run short; polling itself is covered by
    test_register.py."""
    kw = dict(getattr(request, "param", {}))
    kw["args"] = ["--polls", "0"] + list(kw.get("args", ()))
    emu = Emulator(**kw)
    emu.start()
    yield emu
    emu.close()


@pytest.fixture
def dev(device):
    """conftest's `device` (owned, EK enrolled, not registered) without proxy variables from
    the host, and with an empty request log."""
    device.extra_env.update(NO_PROXY_ENV)
    device.emu.clear_log()
    return device


# -------------------------------------------------------------------------------- helpers


def device_log(emu):
    """The device API requests (challenge PUT, signed PUT, poll GET) the emulator saw."""
    return [e for e in emu.log() if e.get("kind") in DEVICE_KINDS]


def kinds(entries):
    return [(e["kind"], e["status"]) for e in entries]


def _end(e):
    return datetime.datetime.fromisoformat(e["time"]).timestamp()


def _start(e):
    return _end(e) - e["duration_ms"] / 1000.0


def wait_between(a, b):
    """Seconds the client let pass between the answer to `a` and sending `b`."""
    return _start(b) - _end(a)


def record(d):
    return json.loads(d.run("status", "--json", check=0).stdout)["state"]


def outputs(runs):
    return "\n".join(r.stdout + "\n" + r.stderr for r in runs)


def in_background(fn, *args, **kw):
    pool = concurrent.futures.ThreadPoolExecutor(1)
    fut = pool.submit(fn, *args, **kw)
    pool.shutdown(wait=False)
    return fut


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


def ek_bytes(d):
    return base64.b64decode(d.ek()["endorsementKey"])


# ------------------------------------------------------------------------------------ B02


def test_b02_endorsement_auth_needed_for_activate_credential(dev, tmp_path):
    """B02: with the endorsement hierarchy's value set, the EK policy's PolicySecret needs
    it.  Without it the agent says so before any DPS request; with a wrong one it names the
    endorsement hierarchy after one challenge and asks for no other; with the right one (file
    or systemd credential) registration completes."""
    d = dev
    first_run = len(d.agent.runs)
    d.tpm.tpm2("changeauth", "-c", "e", ENDORSE_X)

    # Not supplied: stops before the first request.
    res = d.run("register", check=4)
    assert "endorsement" in res.stderr and "--endorsement-auth" in res.stderr, res.stderr
    assert "tpm-provision.endorsement-auth" in res.stderr
    assert device_log(d.emu) == [], "no DPS request before the TPM can finish the job"
    assert record(d)["state"] == "owned"

    # Wrong value: the TPM refuses PolicySecret; one challenge, no loop, nothing recorded.
    wrong = d.agent.secret_file("endorse-wrong", "not-the-endorsement-value")
    res = d.run("--endorsement-auth=" + wrong, "register", check=4)
    assert "endorsement hierarchy" in res.stderr, res.stderr
    log = device_log(d.emu)
    assert [k for k, _ in kinds(log)].count("put_challenge") <= 1, kinds(log)
    assert all(e["kind"] == "put_challenge" for e in log), kinds(log)
    assert record(d)["state"] == "owned"
    assert not os.path.exists(os.path.join(d.runtime_dir, "identity.json"))

    # Right value from a file (with the newline `echo` leaves).
    d.emu.clear_log()
    good = d.agent.secret_file("endorse", ENDORSE_X + "\n")
    d.run("--endorsement-auth=" + good, "register", check=0)
    assert kinds(device_log(d.emu))[:2] == [("put_challenge", 401), ("put_auth", 202)]
    assert record(d)["state"] == "assigned"
    assert d.hub_check() == 200

    # Right value as the systemd credential, for a re-registration.
    creds = tmp_path / "credentials"
    creds.mkdir()
    cred = creds / "tpm-provision.endorsement-auth"
    cred.write_text(ENDORSE_X)
    cred.chmod(0o600)
    d.run("register", "--force", env={"CREDENTIALS_DIRECTORY": str(creds)}, check=0)
    assert d.hub_check() == 200

    assert ENDORSE_X not in outputs(d.agent.runs[first_run:])


# ------------------------------------------------------------------------------------ B23


def test_b23_retry_after_honoured_on_put_and_get_and_no_request_at_next_boot(dev):
    """B23: PUT -> 429 Retry-After 3, PUT -> 429 Retry-After 3, then the challenge; GET ->
    429 Retry-After 2, then 200.  The agent waits at least the given seconds each time, and
    at most a jittered share above them: up to 2 times the value after the first refusal in
    a row and 4 times after the second (so a throttled fleet does not come back in lock
    step). A later boot uses the stored assignment without calling DPS."""
    d, emu = dev, dev.emu
    emu.set_fault("put_429", count=2, retry_after=3)
    emu.set_fault("get_429", count=1, retry_after=2)

    res = d.run("register", check=0)

    log = device_log(emu)
    assert kinds(log) == [("put_challenge", 429), ("put_challenge", 429),
                          ("put_challenge", 401), ("put_auth", 202), ("get", 429),
                          ("get", 200)], kinds(log)
    waits = [wait_between(log[0], log[1]), wait_between(log[1], log[2]),
             wait_between(log[4], log[5])]
    print("waits after 429 (s):", ["%.2f" % w for w in waits])
    for got, want, window in zip(waits, (3, 3, 2), (6, 12, 4)):
        assert want - EPS <= got <= want + window + 0.5, (waits, res.stderr)
    assert res.stderr.count("throttled") >= 3, res.stderr
    assert d.hub_check() == 200

    emu.clear_faults()
    emu.clear_log()
    res = d.run("register", check=0)
    assert device_log(emu) == [], "a provisioned device must not call DPS at boot"
    assert "No request sent" in res.stderr


def test_b23_throttled_without_retry_after_backs_off_with_jitter(dev):
    """B23: 429 without Retry-After: exponential backoff with full jitter, each wait within
    its ceiling (2 s, 4 s, 8 s), not zero overall; the device still ends assigned."""
    d, emu = dev, dev.emu
    emu.set_fault("put_429", count=3, retry_after="none")

    res = d.run("register", check=0)

    log = device_log(emu)
    assert kinds(log)[:4] == [("put_challenge", 429)] * 3 + [("put_challenge", 401)], kinds(log)
    waits = [wait_between(log[i], log[i + 1]) for i in range(3)]
    print("backoff waits (s):", ["%.2f" % w for w in waits])
    for i, w in enumerate(waits):
        assert -EPS <= w <= 2 * 2 ** i + 1, (waits, res.stderr)
    assert sum(waits) > 0.05, waits
    assert res.stderr.count("trying again in") == 3, res.stderr
    assert record(d)["state"] == "assigned"


def test_b23_retry_after_http_date_is_read_against_dps_clock(dev):
    """B23 with B26: Retry-After as an HTTP-date 3 s ahead of DPS's clock, while DPS's clock
    is three years ahead of the device's: the agent waits at least about 3 s (DPS's Date is
    the reference) and at most its jittered share of 2 times that above it, neither nothing
    nor the 10-minute cap."""
    d, emu = dev, dev.emu
    emu.set_clock_offset(THREE_YEARS)
    emu.set_fault("put_429", count=1, retry_after="date:3")

    d.run("register", check=0)

    log = device_log(emu)
    assert kinds(log)[:2] == [("put_challenge", 429), ("put_challenge", 401)], kinds(log)
    wait = wait_between(log[0], log[1])
    # An HTTP-date has whole seconds: 3 s ahead is 2 to 3 s after truncation.
    assert 2 - EPS <= wait <= 3 + 6 + 0.5, wait


def test_b23_retry_after_beyond_the_deadline_gives_up_for_now(dev):
    """B23: the total is capped: a Retry-After that ends after TimeoutSec makes the agent
    stop at once with exit 5 (try later), not sleep past its deadline or ignore the
    header."""
    d, emu = dev, dev.emu
    d.write_config(provisioning={"TimeoutSec": "5"})
    emu.set_fault("put_429", count=1, retry_after=30)
    t0 = time.monotonic()

    res = d.run("register", check=5)

    assert time.monotonic() - t0 < 4
    assert kinds(device_log(emu)) == [("put_challenge", 429)]
    assert "TimeoutSec" in res.stderr, res.stderr


def test_b23_fleet_under_dps_rate_limit_all_assigned(dev, tmp_path):
    """B23 at fleet scale: 6 devices, each with its own TPM, boot at once against a DPS that
    takes 2 registration PUTs per second (12 PUTs to place, so most are throttled at first).
    All end assigned and none gives up."""
    Device = type(dev)
    emu = dev.emu

    tpms = []

    def make(i):
        workdir = str(tmp_path / ("fleet-%d" % i))
        t = Swtpm(workdir)
        tpms.append(t)
        d = Device(t, Agent(t.tcti, workdir), emu, workdir)
        d.extra_env.update(NO_PROXY_ENV)
        d.run("own", check=0)
        d.registration_id = d.enroll()
        return d

    fleet = [dev]
    try:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            fleet += list(pool.map(make, range(5)))
        emu.set_fault("rate_limit", 2, retry_after=1)
        emu.clear_log()
        t0 = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(len(fleet)) as pool:
            results = list(pool.map(lambda d: d.run("register", timeout=150), fleet))
        elapsed = time.monotonic() - t0

        log = device_log(emu)
        per_device = {}
        for d, res in zip(fleet, results):
            mine = [e for e in log if "/registrations/%s/" % d.registration_id in e["path"]]
            per_device[d.registration_id[:8]] = (len(mine), sum(e["status"] == 429 for e in mine))
        print("fleet of %d in %.1f s; requests (total, 429) per device: %s"
              % (len(fleet), elapsed, per_device))
        for d, res in zip(fleet, results):
            assert res.returncode == 0, res.stderr
            assert d.identity()["assignedHub"] == emu.hub_host
        assert sum(e["status"] == 429 for e in log) > 0, "the fleet was never throttled"
        assert all(n <= 30 for n, _ in per_device.values()), per_device
        for d in fleet[1:3]:
            assert d.hub_check() == 200
    finally:
        for t in tpms:
            t.close()


# ------------------------------------------------------------------------------------ B25


@pytest.mark.parametrize("emulator", [{"args": ["--device-api-versions", "2019-03-31"]}],
                         indirect=True, ids=["cloud-without-2021-06-01"])
def test_b25_unsupported_api_version_is_a_configuration_error(dev):
    """B25: a DPS that lacks the default api-version answers 400/400004.  That is a
    configuration error (exit 2) naming the api-version and ApiVersion=, after exactly one
    request and not as an EK problem; ApiVersion=2019-03-31 then works."""
    d, emu = dev, dev.emu

    res = d.run("register", check=2)

    log = device_log(emu)
    assert kinds(log) == [("put_challenge", 400)], kinds(log)
    assert "400004" in res.stderr and "2021-06-01" in res.stderr, res.stderr
    assert "ApiVersion=" in res.stderr, res.stderr
    assert "trying again" not in res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("<3>")]
    assert errors and not any("EK" in line or "endorsement" in line.lower()
                              for line in errors), errors
    assert record(d)["state"] == "owned"

    emu.clear_log()
    d.write_config(provisioning={"ApiVersion": "2019-03-31"})
    d.run("register", check=0)
    log = device_log(emu)
    assert log and all(e["query"] == "api-version=2019-03-31" for e in log), log
    assert d.hub_check() == 200


def test_b25_hint_names_the_configured_api_version(dev):
    """B25: the agent's own hint must name the api-version it sent, not rely on DPS's
    message to do so."""
    d, emu = dev, dev.emu
    emu.set_fault("unsupported_api_version", count=1)

    res = d.run("register", check=2)

    hint = [line for line in res.stderr.splitlines() if "ApiVersion=" in line]
    assert hint, res.stderr
    assert any("2021-06-01" in line for line in hint), hint


# ------------------------------------------------------------------------------------ B26


def test_b26_dps_clock_years_off_tokens_follow_dps_date(dev):
    """B26: DPS's clock years ahead of, then behind, the device's.  The agent signs its
    token against DPS's Date header, warns about the clock, and registers at the first
    signed PUT (no 401), both times."""
    d, emu = dev, dev.emu
    for n, offset in enumerate((THREE_YEARS, -THREE_YEARS)):
        emu.set_clock_offset(offset)
        emu.clear_log()
        res = d.run("register", *(["--force"] if n else []), check=0)
        assert "clock" in res.stderr.lower(), res.stderr
        log = device_log(emu)
        assert kinds(log)[:2] == [("put_challenge", 401), ("put_auth", 202)], kinds(log)
        assert kinds(log)[-1] == ("get", 200)
        assert record(d)["state"] == "assigned"
    emu.set_clock_offset(0)
    assert d.hub_check() == 200


def test_b26_clock_jump_before_signed_put_gets_one_fresh_challenge(dev):
    """B26: DPS's clock jumps two days while the agent waits out a 429 on its signed PUT,
    so the token it signed is expired for DPS (401).  The agent starts over with a fresh
    challenge once, signs against the new Date, and completes."""
    d, emu = dev, dev.emu
    emu.set_fault("put_429", count=1, on="put_auth", retry_after=3)

    run = in_background(d.run, "register")
    wait_for(lambda: any(e["kind"] == "put_auth" for e in device_log(emu)), 20,
             "the throttled signed PUT")
    emu.set_clock_offset(2 * 86400)
    res = run.result(timeout=60)

    assert res.returncode == 0, res.stderr
    log = kinds(device_log(emu))
    assert log[:5] == [("put_challenge", 401), ("put_auth", 429), ("put_auth", 401),
                       ("put_challenge", 401), ("put_auth", 202)], log
    assert [k for k, _ in log].count("put_challenge") == 2, log
    assert "401" in res.stderr
    emu.set_clock_offset(0)
    assert d.hub_check() == 200


# A negative skew allowance makes DPS treat any token living less than 30 min as expired;
# the service API's tokens (1 h) still pass, so the fixture can enroll the device.
@pytest.mark.parametrize("emulator", [{"args": ["--sas-skew=-1800"]}], indirect=True,
                         ids=["dps-refuses-every-token"])
def test_b26_signed_put_refused_twice_is_a_refusal_not_a_loop(dev):
    """B26: a DPS that refuses every token (here: each is expired by DPS's reckoning, as
    with a token lifetime too short for the clock skew) gets one fresh challenge after the
    first 401, then the agent stops with exit 6: two challenges and two signed PUTs,
    nothing recorded."""
    d, emu = dev, dev.emu
    d.write_config(provisioning={"SasTokenLifetimeSec": "60"})

    res = d.run("register", check=6)

    log = kinds(device_log(emu))
    assert log == [("put_challenge", 401), ("put_auth", 401)] * 2, log
    assert "401" in res.stderr and "clock" in res.stderr.lower(), res.stderr
    assert record(d)["state"] == "owned"
    assert not os.path.exists(os.path.join(d.runtime_dir, "identity.json"))


# ------------------------------------------------------------------------------------ B28


def test_b28_dps_unreachable_at_start_then_registers_without_restart(dev):
    """B28: nothing listens at DPS's address when the agent starts; DPS comes up 3 s later.
    The same agent process retries with backoff and registers, within a bounded time."""
    d, emu = dev, dev.emu
    d.write_config(provisioning={"RequestTimeoutSec": "5", "TimeoutSec": "120"})
    emu.stop()
    t0 = time.monotonic()
    run = in_background(d.run, "register", timeout=150)
    time.sleep(3)
    emu.start()  # same port, same state
    res = run.result(timeout=150)
    elapsed = time.monotonic() - t0

    print("registered %.1f s after start (DPS down for the first 3 s)" % elapsed)
    assert res.returncode == 0, res.stderr
    assert res.stderr.count("trying again in") >= 1, res.stderr
    assert elapsed < 60, res.stderr
    log = device_log(emu)
    assert kinds(log)[0] == ("put_challenge", 401)
    assert d.hub_check() == 200


@pytest.mark.parametrize("fault", ["tls_stall", "delay"])
def test_b28_first_request_never_answered_times_out_and_retry_succeeds(dev, fault):
    """B28: DPS accepts TCP but never answers the first request (the TLS handshake stalls,
    or the HTTP answer never comes).  With RequestTimeoutSec=3 the agent gives up on that
    request, retries on a new connection and registers, in bounded time."""
    d, emu = dev, dev.emu
    d.write_config(provisioning={"RequestTimeoutSec": "3"})
    # Connection faults count every TCP connection, the admin API's too: nothing between
    # setting it and the agent's run.
    if fault == "tls_stall":
        emu.set_fault("tls_stall", count=1, seconds=60)
    else:
        emu.set_fault("delay", count=1, on="put_challenge", seconds=60)
    t0 = time.monotonic()

    res = d.run("register", check=0)

    elapsed = time.monotonic() - t0
    print("%s: registered in %.1f s" % (fault, elapsed))
    assert elapsed < 20, res.stderr
    assert "trying again in" in res.stderr, res.stderr
    assert emu.get_faults()[fault]["count"] == 0, "the first request was the stalled one"
    if fault == "tls_stall":
        assert [e["kind"] for e in emu.log()][0] == "connection"
    # The stalled request is logged only when its 60 s are over: everything logged came
    # over the agent's second connection.
    log = device_log(emu)
    assert kinds(log)[0] == ("put_challenge", 401) and len({e["conn"] for e in log}) == 1
    assert d.hub_check() == 200


# ------------------------------------------------------------------------------------ B29


def test_b29a_id_scope_change_registers_again_under_the_new_scope(dev):
    """B29 (a): an assigned device whose configured ID scope changes registers again with
    the new DPS at the next run (the old one sees nothing), and the record and hand-off file
    hold the new scope and hub; the run after that takes the fast path again."""
    d, emu1 = dev, dev.emu
    d.run("register", check=0)
    assert d.identity()["idScope"] == emu1.id_scope

    with Emulator(id_scope="0ne0000B0B0", hub_host=HUB_B) as emu2:
        emu2.create_enrollment(ek_bytes(d))
        d.emu = emu2
        d.write_config()
        emu1.clear_log()

        res = d.run("register", check=0)

        assert "scope" in res.stderr.lower(), res.stderr
        assert device_log(emu1) == []
        assert kinds(device_log(emu2))[-1] == ("get", 200)
        ident = d.identity()
        assert ident["idScope"] == "0ne0000B0B0" and ident["assignedHub"] == HUB_B, ident
        assert record(d)["assignedHub"] == HUB_B
        assert d.hub_check() == 200

        emu2.clear_log()
        d.run("register", check=0)
        assert device_log(emu2) == []


def test_b29c_disabled_enrollment_recorded_then_provisions_once_enabled(dev):
    """B29 (c): DPS answers `disabled`: exit 6 and the record says disabled (no hand-off
    file).  Once the enrollment is enabled the next run provisions: the device is not
    stuck."""
    d, emu = dev, dev.emu
    emu.set_enrollment(d.registration_id, provisioningStatus="disabled")

    res = d.run("register", check=6)

    assert "disabled" in res.stderr, res.stderr
    assert record(d)["state"] == "disabled"
    assert not os.path.exists(os.path.join(d.runtime_dir, "identity.json"))
    assert d.run("sas", check=None).returncode != 0

    emu.set_enrollment(d.registration_id, provisioningStatus="enabled")
    emu.clear_log()
    d.run("register", check=0)
    assert kinds(device_log(emu))[-1] == ("get", 200)
    assert record(d)["state"] == "assigned"
    assert d.hub_check() == 200


def test_b29c_disabled_after_cached_assignment_is_recorded(dev):
    """B29 (c) as the case states it: cached assignment hub-A/device-X, then DPS answers
    `disabled`.  The refusal is recorded (status shows it), and once the enrollment is
    enabled the next run asks DPS again and provisions."""
    d, emu = dev, dev.emu
    d.run("register", check=0)
    emu.set_enrollment(d.registration_id, provisioningStatus="disabled")

    d.run("register", "--force", check=6)

    assert record(d)["state"] == "disabled"
    emu.set_enrollment(d.registration_id, provisioningStatus="enabled")
    emu.clear_log()
    d.run("register", check=0)
    assert kinds(device_log(emu))[-1] == ("get", 200)
    assert record(d)["state"] == "assigned"


def test_b29d_reassigned_to_hub_b_with_data_migrated(dev):
    """B29 (d): re-registration assigns hub-B with substatus deviceDataMigrated.  The
    record and identity.json name hub-B, and `sas` signs for hub-B (sr), which hub-B
    accepts."""
    d, emu = dev, dev.emu
    d.run("register", check=0)
    assert d.identity()["assignedHub"] == emu.hub_host
    emu.create_enrollment(ek_bytes(d), iotHubHostName=HUB_B)

    res = d.run("register", "--force", check=0)

    assert emu.registration(d.registration_id)["substatus"] == "deviceDataMigrated"
    assert "deviceDataMigrated" in res.stderr, res.stderr
    assert d.identity()["assignedHub"] == HUB_B
    assert record(d)["assignedHub"] == HUB_B
    token = d.run("sas", check=0).stdout.strip()
    fields = dict(p.split("=", 1) for p in token[len("SharedAccessSignature "):].split("&"))
    assert urllib.parse.unquote(fields["sr"]).lower().startswith(HUB_B + "/devices/"), token
    assert d.hub_check(token) == 200


def test_b29_failed_reregistration_keeps_the_working_identity_and_tries_again_next_boot(dev):
    """A transient `failed` from DPS on a re-registration takes nothing away: the hub still
    knows the device and its key, so sas goes on signing and identity.json stays; the next
    boot asks DPS again instead of taking the fast path."""
    d, emu = dev, dev.emu
    d.run("register", check=0)
    ident = d.identity()
    emu.set_fault("assign_failed", count=1, error_code=500000,
                  error_message="Internal allocation error (emulated)")
    emu.clear_log()

    res = d.run("register", "--force")

    assert res.returncode == 6, res.stderr
    assert "500000" in res.stderr and "stays in use" in res.stderr
    assert record(d)["state"] == "assigned" and d.identity() == ident
    assert d.hub_check() == 200

    emu.clear_log()
    res = d.run("register", check=0)           # the next boot: no --force
    assert "did not finish" in res.stderr, res.stderr
    assert [e["kind"] for e in device_log(emu)][:2] == ["put_challenge", "put_auth"]
    assert d.hub_check() == 200
    emu.clear_log()
    d.run("register", check=0)                 # and then the fast path again
    assert device_log(emu) == []


def test_b01_wrong_owner_authorization_is_found_before_dps_is_asked_to_assign(dev):
    """The owner authorization was changed by someone else after provisioning and the value
    given is wrong: the agent finds out with its first NV write, before the signed request,
    so DPS never re-assigns the device and the old identity keeps working."""
    d, emu = dev, dev.emu
    d.run("register", check=0)
    d.tpm.tpm2("changeauth", "-c", "o", OWNER_X)
    wrong = d.agent.secret_file("owner-wrong", "not-" + OWNER_X)
    emu.clear_log()

    res = d.run("--owner-auth=" + wrong, "register", "--force")

    assert res.returncode == 4, res.stderr
    assert "owner" in res.stderr
    assert "put_auth" not in [e["kind"] for e in device_log(emu)]
    assert record(d)["state"] == "assigned"
    assert d.hub_check() == 200


# ------------------------------------------------------------------------------------ B31


def test_b31_proxy_from_config_environment_and_kernel_cmdline_with_credentials(dev):
    """B31: Proxy=http://USER:PASS@127.0.0.1:P in the configuration, then https_proxy in the
    environment, then tpm_provision.proxy= on the kernel command line (the initramfs):
    registration goes through the CONNECT tunnel each time, with the credentials, and the
    password never appears in the output, even with -v -v."""
    d, emu = dev, dev.emu
    first_run = len(d.agent.runs)
    with ConnectProxy(user=PROXY_USER, password=PROXY_PASS) as proxy:
        d.write_config(provisioning={"Proxy": proxy.url()})
        d.run("-v", "-v", "register", check=0)
        seen = proxy.connects()
        assert seen, "the proxy saw no CONNECT"
        assert all(r["target"] == "127.0.0.1:%d" % emu.port and r["status"] == 200
                   and r["credentials"] == "%s:%s" % (PROXY_USER, PROXY_PASS)
                   for r in seen), seen
        assert d.hub_check() == 200

        proxy.requests.clear()
        d.write_config()
        d.extra_env["https_proxy"] = proxy.url()
        d.run("-v", "-v", "register", "--force", check=0)
        assert proxy.connects() and all(r["status"] == 200 for r in proxy.connects())
        assert d.hub_check() == 200

        # The initramfs: no configuration file proxy, no environment, only the kernel
        # command line.
        proxy.requests.clear()
        d.extra_env["https_proxy"] = ""
        cmdline = os.path.join(d.workdir, "cmdline")
        with open(cmdline, "w") as f:
            f.write("quiet tpm_provision.proxy=%s\n" % proxy.url())
        d.extra_env["TPM_PROVISION_CMDLINE"] = cmdline
        d.run("-v", "-v", "register", "--force", check=0)
        assert proxy.connects() and all(r["status"] == 200 for r in proxy.connects())
        assert d.hub_check() == 200

    text = outputs(d.agent.runs[first_run:])
    assert PROXY_PASS not in text
    assert base64.b64encode(("%s:%s" % (PROXY_USER, PROXY_PASS)).encode()).decode() not in text


@pytest.mark.parametrize("mode", ["407", "502"], ids=["wrong-credentials-407", "plain-502"])
def test_b31_proxy_refusal_is_a_proxy_error_with_backoff(dev, mode):
    """B31: a proxy that refuses the credentials (407) or answers CONNECT with a plain HTTP
    502.  Reported as a proxy error (not a DPS 401), retried with backoff, and given up for
    now (exit 5) within TimeoutSec instead of a crash loop; DPS never sees a request."""
    d, emu = dev, dev.emu
    first_run = len(d.agent.runs)
    if mode == "407":
        proxy = ConnectProxy(user=PROXY_USER, password=PROXY_PASS)
        url = proxy.url(password="wrong-" + PROXY_PASS)
    else:
        proxy = ConnectProxy(mode="502")
        url = proxy.url(with_credentials=False)
    with proxy:
        d.write_config(provisioning={"Proxy": url, "TimeoutSec": "6", "RequestTimeoutSec": "3"})
        t0 = time.monotonic()
        res = d.run("-v", "-v", "register", check=5)
        elapsed = time.monotonic() - t0
        attempts = len(proxy.connects())

    print("%s: gave up after %.1f s, %d CONNECTs" % (mode, elapsed, attempts))
    assert elapsed < 6 + 4, res.stderr
    assert 1 <= attempts <= 8, attempts
    assert "proxy" in res.stderr.lower() and mode in res.stderr, res.stderr
    assert "DPS answered HTTP" not in res.stderr
    assert "TimeoutSec" in res.stderr
    assert device_log(emu) == []
    assert record(d)["state"] == "owned"
    text = outputs(d.agent.runs[first_run:])
    assert PROXY_PASS not in text


def test_b31_no_proxy_bypasses_the_proxy(dev):
    """B31: NoProxy= covering 127.0.0.1 reaches DPS directly although Proxy= names a proxy
    (one that would fail every CONNECT)."""
    d = dev
    with ConnectProxy(mode="502") as proxy:
        d.write_config(provisioning={"Proxy": proxy.url(with_credentials=False),
                                     "NoProxy": "localhost,127.0.0.1"})
        d.run("register", check=0)
        assert proxy.requests == []
    assert d.hub_check() == 200


def test_b31_tls_inspecting_proxy_is_a_trust_error_until_its_ca_is_added(dev):
    """B31: behind a proxy whose TLS is re-signed by another CA (PROXY_CA), the failure is
    reported as a trust problem (exit 2, not retried, not a DPS 401); with that CA added
    through CABundle= the same path registers."""
    d, emu = dev, dev.emu
    with ConnectProxy() as proxy:
        d.write_config(provisioning={"Proxy": proxy.url(with_credentials=False)})
        emu.set_fault("tls_wrong_ca")  # every connection from now on

        res = d.run("register", check=2)

        assert "trusted" in res.stderr and "CABundle=" in res.stderr, res.stderr
        assert "401" not in res.stderr and "trying again" not in res.stderr
        assert len(proxy.connects()) == 1
        assert record(d)["state"] == "owned"

        bundle = os.path.join(d.workdir, "roots-and-proxy-ca.pem")
        with open(bundle, "w") as out:
            for pem in (emu.ca, os.path.join(emu.state_dir, "other-ca.pem")):
                with open(pem) as f:
                    out.write(f.read())
        d.write_config(provisioning={"Proxy": proxy.url(with_credentials=False),
                                     "CABundle": bundle})
        d.run("register", check=0)
        assert len(proxy.connects()) == 2
    assert record(d)["state"] == "assigned"


MALFORMED_PROXIES = ["http://%s:%s@127.0.0.1:99999" % (PROXY_USER, PROXY_PASS),
                     "htp://%s:%s@127.0.0.1:3128" % (PROXY_USER, PROXY_PASS)]


@pytest.mark.parametrize("url", MALFORMED_PROXIES, ids=["bad-port", "bad-scheme"])
def test_b31_malformed_proxy_url_never_shows_its_password(dev, url):
    """B31: proxy credentials never appear in logs, 'not even in error messages'
    (tpm-provision.conf(5)), including when the proxy URL itself is wrong."""
    d = dev
    d.write_config(provisioning={"Proxy": url, "TimeoutSec": "3"})

    res = d.run("register", check=None)

    assert res.returncode != 0
    assert "proxy" in res.stderr.lower(), res.stderr
    assert PROXY_PASS not in res.stdout + res.stderr, res.stderr


def test_b31_malformed_proxy_url_is_a_configuration_error(dev):
    """B31/B25 kind: a Proxy= value that can never work is a configuration error (exit 2,
    no retries), as a bad GlobalEndpoint= is, not a reason to back off and try again."""
    d = dev
    d.write_config(provisioning={"Proxy": MALFORMED_PROXIES[0], "TimeoutSec": "3"})

    res = d.run("register", check=None)

    assert res.returncode == 2, (res.returncode, res.stderr)
    assert "trying again" not in res.stderr


# ------------------------------------------------------------------------------- secrets


LONG_BASE64 = re.compile(r"[A-Za-z0-9+/]{60,}={0,2}")


# ------------------------------------------------------------------------------------ B27


def test_b27_bundle_with_only_the_old_root_is_a_trust_error_old_plus_new_provisions(dev):
    """A DPS that moved its certificate to a new root (the emulator's CA plays DigiCert
    Global Root G2) and a device bundle pinned to the old root (another CA plays Baltimore):
    one trust error naming CABundle, no retry as if the network had blipped, exit 2 so the
    unit does not restart; then a bundle carrying both roots provisions."""
    emu = dev.emu
    old_root = os.path.join(emu.state_dir, "other-ca.pem")
    dev.write_config(provisioning={"CABundle": old_root, "TimeoutSec": "60"})

    t0 = time.monotonic()
    res = dev.run("register")
    elapsed = time.monotonic() - t0

    assert res.returncode == 2, res.stderr
    assert "not trusted" in res.stderr and old_root in res.stderr, res.stderr
    assert "trying again" not in res.stderr
    assert elapsed < 5
    assert device_log(emu) == []
    assert record(dev)["state"] == "owned"

    both = os.path.join(dev.workdir, "old-and-new-roots.pem")
    with open(both, "w") as out:
        for path in (old_root, emu.ca):
            with open(path) as f:
                out.write(f.read())
    dev.write_config(provisioning={"CABundle": both})

    res = dev.run("register")

    assert res.returncode == 0, res.stderr
    assert record(dev)["state"] == "assigned"
    assert dev.hub_check() == 200


def test_b27_default_bundle_carries_the_current_azure_roots():
    """With no CABundle= the agent uses the system bundle (libcurl's default, and what the
    dracut module and the initramfs-tools hook copy into the initrd). On Debian 12 that
    bundle must hold the roots Azure's DPS and hubs chain to since the 2023 migration."""
    from cryptography import x509
    path = "/etc/ssl/certs/ca-certificates.crt"
    with open(path, "rb") as f:
        pems = f.read().split(b"-----END CERTIFICATE-----")
    subjects = {x509.load_pem_x509_certificate(p + b"-----END CERTIFICATE-----\n")
                .subject.rfc4514_string() for p in pems if b"BEGIN CERTIFICATE" in p}
    for cn in ("DigiCert Global Root G2", "Microsoft RSA Root Certificate Authority 2017"):
        assert any("CN=" + cn in s for s in subjects), cn + " missing from " + path


def _forms(raw):
    b64 = base64.b64encode(raw).decode()
    return {raw.hex(), raw.hex().upper(), b64, b64.rstrip("="),
            urllib.parse.quote(b64, safe=""), urllib.parse.quote(b64, safe="").lower()}


def test_no_secret_in_any_agent_output(dev):
    """Field cases B01/B02/B31 and the protocol's keys: a full registration with -v -v,
    owner and endorsement values set, through a proxy with credentials.  No output of any
    run (the token `sas` prints on stdout by design excepted) holds the hierarchy values,
    the proxy password, the challenge key K1 or hub key K2 (hex or base64), the signature of
    the DPS token or of the hub token, or any long base64 run such as an authenticationKey
    blob; no line is longer than 400 characters."""
    d, emu = dev, dev.emu
    first_run = len(d.agent.runs)
    d.tpm.tpm2("changeauth", "-c", "o", OWNER_X)
    d.tpm.tpm2("changeauth", "-c", "e", ENDORSE_X)
    owner = d.agent.secret_file("owner", OWNER_X)
    endorse = d.agent.secret_file("endorse", ENDORSE_X)
    auth = ("--owner-auth=" + owner, "--endorsement-auth=" + endorse)

    with ConnectProxy(user=PROXY_USER, password=PROXY_PASS) as proxy:
        d.write_config(provisioning={"Proxy": proxy.url()})
        t_before = int(time.time())
        d.run("-v", "-v", *auth, "register", check=0)
        t_after = int(time.time()) + 1
        assert proxy.connects()
    d.write_config()
    d.run("-v", "-v", *auth, "status", check=0)
    sas = d.run("-v", "-v", "sas", check=0)
    token = sas.stdout.strip()
    assert d.hub_check(token) == 200

    k1, k2 = emu.keys(d.registration_id)
    assert k1 and k2
    secrets = {OWNER_X, ENDORSE_X, PROXY_PASS} | _forms(k1) | _forms(k2)

    # The hub token's signature (printed by `sas` on stdout, nowhere else).
    hub_sig = urllib.parse.unquote(dict(p.split("=", 1) for p in
                                        token[len("SharedAccessSignature "):].split("&"))["sig"])
    secrets |= _forms(base64.b64decode(hub_sig))

    # The DPS token's signature: HMAC-SHA256(K1, sr + "\n" + se), se = DPS time + 3600 at
    # signing, so one of these candidates; one of them is shown to be the real one by
    # polling the operation with it.
    regid = d.registration_id
    sr = urllib.parse.quote("%s/registrations/%s" % (emu.id_scope, regid),
                            safe="").replace("%2F", "%2f")
    resource = "%s/registrations/%s" % (emu.id_scope, regid)
    sr_forms = {urllib.parse.quote(resource, safe="").replace("%2F", "%2f"),
                urllib.parse.quote(resource, safe=""), resource, resource.lower()}
    for sr in sr_forms:
        for se in range(t_before + 3600 - 5, t_after + 3600 + 5):
            secrets |= _forms(hmac.new(k1, ("%s\n%d" % (sr, se)).encode(),
                                       hashlib.sha256).digest())
    # The computation is DPS's own: such a token polls the operation successfully.
    sr, se = sorted(sr_forms)[0], t_after + 3600
    sig = base64.b64encode(hmac.new(k1, ("%s\n%d" % (sr, se)).encode(),
                                    hashlib.sha256).digest()).decode()
    op = next(iter(emu.registration(regid)["operations"]))
    assert emu.request("GET", emu.operation_path(regid, op), headers={
        "Authorization": sas_header(sr, sig, str(se), skn="registration")}).status == 200

    runs = d.agent.runs[first_run:]
    texts = [r.stderr for r in runs] + [r.stdout for r in runs if r is not sas]
    for text in texts:
        for s in secrets:
            assert s not in text, "a secret (%s...) in the output:\n%s" % (s[:6], text)
        for line in text.splitlines():
            assert len(line) <= 400, line
            assert not LONG_BASE64.search(line), line
    assert any("<7>" in t for t in texts), "the debug level was on"


# ------------------------------------------------------------- answers only an impostor sends
#
# A DPS impostor whose CA the device trusts (a TLS-inspecting proxy, B31's kind) can send
# anything. The promise: the TPM is never locked or cluttered, and the device says why.

IDENTITY = 0x81000100


from tpmcheck import lockout_counter  # noqa: E402


@pytest.mark.parametrize("on", ["put_challenge", "get"], ids=["challenge-key", "hub-key"])
def test_b31_key_with_an_unknown_authorization_is_tried_once_and_never_kept(dev, on):
    """A key with an authValue the device cannot know and without noDA: every HMAC with
    the empty password fails and counts towards dictionary-attack lockout. The agent tries
    it once, stops with exit 6 (the unit does not restart on it), keeps nothing of it, and
    registers normally once DPS's own keys come back."""
    from tpmcheck import assert_no_leftovers

    d, emu = dev, dev.emu
    emu.set_fault("auth_key_hostile", count=1, on=on)
    da_before = lockout_counter(d.tpm)
    handles = d.tpm.persistent_handles()

    res = d.run("register", check=6)

    assert "refused the empty authorization" in res.stderr, res.stderr
    assert "trying again" not in res.stderr
    assert lockout_counter(d.tpm) == da_before + 1
    assert d.tpm.persistent_handles() == handles
    assert IDENTITY not in handles
    log = kinds(device_log(emu))
    if on == "put_challenge":
        assert log == [("put_challenge", 401)], log   # no request signed with it
    else:
        assert log[-1] == ("get", 200), log
    assert record(d)["state"] == "owned"
    assert not os.path.exists(os.path.join(d.runtime_dir, "identity.json"))
    assert_no_leftovers(d.tpm)

    d.run("register", check=0)
    assert lockout_counter(d.tpm) == da_before + 1
    assert d.hub_check() == 200


def test_a_poll_answered_404_starts_the_registration_over_once(dev):
    """DPS answers a poll with 404 "operation not found" (it lost or expired the
    operation): not a configuration error. The agent starts over with a new challenge once
    and registers; when the new operation is lost too, it stops with exit 5 (try later)
    after exactly two rounds."""
    d, emu = dev, dev.emu
    emu.set_fault("operation_lost", count=1)

    res = d.run("register", check=0)

    log = kinds(device_log(emu))
    assert log == [("put_challenge", 401), ("put_auth", 202), ("get", 404),
                   ("put_challenge", 401), ("put_auth", 202), ("get", 200)], log
    assert "404" in res.stderr
    assert d.hub_check() == 200

    emu.clear_log()
    emu.set_fault("operation_lost")   # always
    res = d.run("register", "--force", check=5)
    log = kinds(device_log(emu))
    assert log == [("put_challenge", 401), ("put_auth", 202), ("get", 404)] * 2, log
    assert "lost the registration operation twice" in res.stderr
    emu.clear_faults()
    assert record(d)["state"] == "assigned"   # the identity that works stays
    assert d.hub_check() == 200


def test_challenge_key_is_out_of_the_tpm_before_the_hub_key_comes_in(dev, tmp_path):
    """On a TPM without a resource manager (here swtpm's own socket, as /dev/tpm0), with
    room for three objects and a stranger's object loaded, the hub key's
    ActivateCredential needs the EK and the SRK loaded: the challenge key must be gone by
    then. The stranger's object is left as it was."""
    d = dev
    ctx = str(tmp_path / "stranger.ctx")
    d.tpm.tpm2("createprimary", "-C", "o", "-G", "ecc", "-c", ctx)
    assert len(d.tpm.transient_handles()) == 1

    res = d.run("register")

    assert res.returncode == 0, res.stderr
    assert record(d)["state"] == "assigned"
    assert len(d.tpm.transient_handles()) == 1
    d.tpm.tpm2("flushcontext", "-t")
    assert d.hub_check() == 200


@pytest.mark.parametrize("fault, shown", [
    ({"device_id": "dev/../other&sig=x"}, "the device ID \"dev/../other&sig=x\""),
    ({"hub": "hub.example.net/devices/x"}, "the hub \"hub.example.net/devices/x\""),
    ({"hub": "hub\n.example.net"}, "the hub \"hub?.example.net\""),
], ids=["device-id", "hub", "hub-newline"])
def test_an_assignment_naming_what_iot_hub_never_gives_changes_nothing(dev, fault, shown):
    """An assigned hub that is not a host name, or a device ID with characters IoT Hub
    refuses (only an impostor sends them): both would go into the record, the hub SAS
    resource and the hand-off file. The agent changes nothing and says what it got,
    escaped (exit 5: the answer, not the device, is wrong); with a proper answer it
    registers."""
    d, emu = dev, dev.emu
    emu.set_fault("assignment_rewritten", count=1, **fault)
    handles = d.tpm.persistent_handles()

    res = d.run("register", check=5)

    assert shown in res.stderr, res.stderr
    assert "nothing was changed" in res.stderr
    assert d.tpm.persistent_handles() == handles
    assert record(d)["state"] == "owned"
    assert not os.path.exists(os.path.join(d.runtime_dir, "identity.json"))

    d.run("register", check=0)
    assert d.hub_check() == 200


def test_dps_text_cannot_forge_a_log_line(dev):
    """An impostor's errorMessage with a newline and a priority prefix: on stderr (the
    journal, under systemd) it stays inside the agent's one line and cannot pass for a
    message of the agent's own, such as "Provisioned"."""
    d, emu = dev, dev.emu
    emu.set_fault("assign_failed", count=1, error_code="400209",
                  error_message="nope\n<5>Provisioned: hub evil.azure-devices.net, device x.")

    res = d.run("register", check=6)

    assert not [l for l in res.stderr.splitlines() if l.startswith("<5>Provisioned")], res.stderr
    assert "nope?<5>Provisioned: hub evil" in res.stderr, res.stderr


@pytest.mark.parametrize("emulator", [{"args": ["--field6-bytes", "2600"]}], indirect=True,
                         ids=["field6-2600"])
def test_a_challenge_with_a_large_field_6_is_taken(dev):
    """The authenticationKey's field 6 (data the device ignores, up to 65535 bytes in the
    blob format) of 2600 bytes makes the key's text longer than 4 KiB: still a challenge,
    not "malformed JSON" asked for again until the deadline."""
    d = dev
    res = d.run("register", check=0)
    assert "not the JSON it should be" not in res.stderr
    assert d.hub_check() == 200
