"""The TPM device and the TPM itself as the field finds them (issue 7): B14 (node missing,
late, renumbered, TPM 1.2 only), B16 (tpm2-abrmd defaults, a busy raw device, no room for
objects without a resource manager) and B30 (RSA key generation that takes seconds).

B14 and B16's device tests run the agent in a private mount namespace whose /sys/class/tpm
and /dev say what the case needs (root only): the host's own TPM, if it has one, is never
reached. The TPM tests use swtpm through tests/lib/tpmproxy.py.
"""
import os
import re
import subprocess
import sys
import threading
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "lib"))
from agent import AGENT  # noqa: E402
from swtpm import TemplateSwtpm  # noqa: E402
from tpmcheck import EK, SRK, assert_no_leftovers  # noqa: E402
from tpmproxy import ALL, CC, TpmProxy  # noqa: E402

EXIT_NO_TPM, EXIT_TEMPORARY = 3, 5
TPM_RC_OBJECT_MEMORY = 0x902

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mount namespaces need root")

# Inside `unshare -m`: a tmpfs over /sys/class with only the TPMs asked for, and a tmpfs /dev
# with /dev/null and the nodes asked for (empty files: enough to be found, never a TPM).
FAKE_MACHINE = r'''set -e
keep=$1; shift
mount -t tmpfs none /sys/class
mkdir /sys/class/tpm
for spec in $FAKE_SYSFS; do
    mkdir "/sys/class/tpm/${spec%%=*}"
    echo "${spec#*=}" >"/sys/class/tpm/${spec%%=*}/tpm_version_major"
done
: >"$keep/null"
mount --bind /dev/null "$keep/null"
mount -t tmpfs none /dev
: >/dev/null
mount --bind "$keep/null" /dev/null
for node in $FAKE_DEV; do : >"/dev/$node"; done
exec "$@"
'''


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TPM_PROVISION_", "TPM2TOOLS_", "TSS2_TCTI", "TCTI"))}
    env.update(TPM_PROVISION_CONFIG=os.devnull, TPM_PROVISION_CMDLINE=os.devnull)
    env.update(extra)
    return env


def on_fake_machine(tmp_path, sysfs, dev, *args, env=None):
    """Runs the agent where /sys/class/tpm holds `sysfs` ({"tpm0": 1}: major versions) and
    /dev holds `dev`. Returns (result, seconds)."""
    full = clean_env(**(env or {}))
    full.update(FAKE_SYSFS=" ".join("%s=%d" % kv for kv in sysfs.items()),
                FAKE_DEV=" ".join(dev))
    t0 = time.monotonic()
    res = subprocess.run(["unshare", "-m", "sh", "-c", FAKE_MACHINE, "sh", str(tmp_path),
                          AGENT, *args], env=full, capture_output=True, text=True, timeout=60)
    return res, time.monotonic() - t0


# ------------------------------------------------------------------------------------ B14


@needs_root
def test_b14_no_tpm_at_all_exits_3_at_once(tmp_path):
    res, took = on_fake_machine(tmp_path, {}, [], "own")
    assert res.returncode == EXIT_NO_TPM, res.stderr
    assert "No TPM 2.0 device: /dev/tpmrm0 does not exist." in res.stderr
    assert took < 2, "no wait for a device that will not come"


@needs_root
def test_b14_only_a_tpm_1_2_is_no_tpm_2_by_default_and_by_name(tmp_path):
    res, took = on_fake_machine(tmp_path, {"tpm0": 1}, ["tpm0"], "own")
    assert res.returncode == EXIT_NO_TPM, res.stderr
    assert "only a TPM 1.2" in res.stderr and took < 2

    res, _ = on_fake_machine(tmp_path, {"tpm0": 1}, ["tpm0"], "--tcti=device:/dev/tpm0", "own")
    assert res.returncode == EXIT_NO_TPM, res.stderr
    assert "/dev/tpm0 is a TPM 1.2; tpm-provision needs a TPM 2.0." in res.stderr


@needs_root
def test_b14_tpm_2_numbered_1_is_found_when_the_default_node_is_missing(tmp_path):
    # A TPM 1.2 as tpm0 and the TPM 2.0 as tpm1: the agent says which node it takes and
    # then talks to it (here an empty file, so the talk fails, naming that node).
    res, _ = on_fake_machine(tmp_path, {"tpm0": 1, "tpm1": 2}, ["tpm0", "tpm1", "tpmrm1"],
                             "status")
    assert "/dev/tpmrm0 does not exist; using /dev/tpmrm1, this machine's TPM 2.0." \
        in res.stderr, res.stderr
    assert "device:/dev/tpmrm1" in res.stderr
    assert res.returncode != 0


@needs_root
def test_b14_two_tpm_2_devices_and_no_default_ask_for_a_choice(tmp_path):
    res, _ = on_fake_machine(tmp_path, {"tpm1": 2, "tpm2": 2}, ["tpmrm1", "tpmrm2"], "own")
    assert res.returncode == EXIT_NO_TPM, res.stderr
    assert "has 2 TPM 2.0 devices" in res.stderr and "--tcti=device:/dev/tpmrmN" in res.stderr


@needs_root
def test_b14_an_explicit_tcti_is_never_replaced(tmp_path):
    res, _ = on_fake_machine(tmp_path, {"tpm1": 2}, ["tpmrm1"], "--tcti=device:/dev/tpmrm0",
                             "own")
    assert res.returncode == EXIT_NO_TPM, res.stderr
    assert "using /dev/tpmrm1" not in res.stderr


def test_b14_udev_pulls_the_units_for_any_tpmrm_node():
    """The device event starts the agent, whichever number the TPM 2.0 got; the units do
    not insist on tpmrm0 (field case B14, renumbered)."""
    with open(os.path.join(ROOT, "udev", "70-tpm-provision.rules")) as f:
        rule = [line for line in f if "SYSTEMD_WANTS" in line][0]
    assert 'KERNEL=="tpmrm[0-9]*"' in rule
    for unit in ("units/tpm-provision-tpm.service.in", "units/tpm-provision-register.service.in"):
        with open(os.path.join(ROOT, unit)) as f:
            text = f.read()
        assert "ConditionPathExists=/dev/tpmrm0" not in text, unit
        assert "ConditionPathExistsGlob=/dev/tpmrm*" in text, unit
        assert "DeviceAllow=char-tpm rw" in text, unit


# ------------------------------------------------------------------------------------ B16


@needs_root
def test_b16_abrmd_defaults_in_the_environment_are_ignored(tmp_path):
    """TCTI defaults that name tpm2-abrmd (no D-Bus in the initrd) do not reach the agent:
    it goes for device:/dev/tpmrm0 and ends at once."""
    abrmd = {"TPM2TOOLS_TCTI": "tabrmd:bus_type=system", "TSS2_TCTI": "tabrmd",
             "TCTI": "tabrmd", "TPM2_PKCS11_TCTI": "tabrmd"}
    res, took = on_fake_machine(tmp_path, {}, [], "own", env=abrmd)
    assert res.returncode == EXIT_NO_TPM, res.stderr
    assert "/dev/tpmrm0" in res.stderr and "tabrmd" not in res.stderr
    assert took < 2


BUSY_SHIM = r'''
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
/* open() of $TEST_BUSY_PATH fails with EBUSY, as a raw /dev/tpm0 does while tpm2-abrmd holds
 * it; every other open goes through. */
static int busy(const char *p) {
    const char *b = getenv("TEST_BUSY_PATH");
    return b && p && strcmp(p, b) == 0;
}
#define WRAP(name, ...)                                                        \
    int name(__VA_ARGS__, int flags, ...) {                                    \
        static int (*real)();                                                  \
        va_list ap; mode_t mode;                                               \
        va_start(ap, flags); mode = va_arg(ap, mode_t); va_end(ap);            \
        if (!real) real = (int (*)())dlsym(RTLD_NEXT, #name);
WRAP(open, const char *path)
    if (busy(path)) { errno = EBUSY; return -1; }
    return real(path, flags, mode);
}
WRAP(open64, const char *path)
    if (busy(path)) { errno = EBUSY; return -1; }
    return real(path, flags, mode);
}
WRAP(openat, int dirfd, const char *path)
    if (busy(path)) { errno = EBUSY; return -1; }
    return real(dirfd, path, flags, mode);
}
'''


@pytest.fixture(scope="module")
def busy_shim(tmp_path_factory):
    d = tmp_path_factory.mktemp("busy")
    (d / "shim.c").write_text(BUSY_SHIM)
    subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", str(d / "shim.so"),
                    str(d / "shim.c"), "-ldl"], check=True)
    return str(d / "shim.so")


def test_b16_busy_raw_device_says_who_holds_it_and_what_to_use(tmp_path, busy_shim):
    node = str(tmp_path / "raw-tpm")
    open(node, "w").close()
    res = subprocess.run([AGENT, "--tcti=device:" + node, "own"], capture_output=True,
                         text=True, timeout=30,
                         env=clean_env(LD_PRELOAD=busy_shim, TEST_BUSY_PATH=node))
    assert res.returncode == EXIT_TEMPORARY, res.stderr
    assert "TPM device %s is busy" % node in res.stderr
    assert "tpm2-abrmd" in res.stderr and "--tcti=device:/dev/tpmrm0" in res.stderr
    assert res.stderr.count("<3>") == 1, "one error line: " + res.stderr


class Rig:
    def __init__(self, workdir):
        self.workdir = str(workdir)
        self.tpm = TemplateSwtpm(self.workdir)
        self.proxy = TpmProxy(self.tpm, os.path.join(self.workdir, "proxy.sock")).start()

    def run(self, *args):
        env = clean_env(TPM_PROVISION_TCTI=self.proxy.tcti, TSS2_LOG="all+none",
                        RUNTIME_DIRECTORY=os.path.join(self.workdir, "run"))
        return subprocess.run([AGENT, *args], env=env, capture_output=True, text=True,
                              timeout=180)

    def close(self):
        self.proxy.close()
        self.tpm.close()


@pytest.fixture
def rig(tmp_path):
    r = Rig(tmp_path)
    yield r
    r.close()


def test_b16_no_room_for_an_object_once_is_tried_again(rig):
    rig.proxy.inject(TPM_RC_OBJECT_MEMORY, CC["CreatePrimary"], nth=1)
    res = rig.run("own")
    assert res.returncode == 0, res.stderr
    assert rig.proxy.count(CC["CreatePrimary"]) == 3   # EK twice, SRK once
    assert {EK, SRK} <= set(rig.tpm.persistent_handles())
    assert_no_leftovers(rig.tpm)


def test_b16_no_room_for_an_object_ever_is_one_clear_error_after_one_more_try(rig):
    rig.proxy.inject(TPM_RC_OBJECT_MEMORY, CC["CreatePrimary"], nth=ALL)
    res = rig.run("own")
    assert res.returncode == EXIT_TEMPORARY, res.stderr
    assert rig.proxy.count(CC["CreatePrimary"]) == 2    # the first try and one more
    assert "no room for another object" in res.stderr and "/dev/tpmrm0" in res.stderr
    assert "0x902" in res.stderr
    assert_no_leftovers(rig.tpm)


# ------------------------------------------------------------------------------------ B30


def test_b30_slow_rsa_key_generation_is_waited_for_said_and_done_once(rig):
    """Each CreatePrimary(RSA-2048) answered after 15 s, as slow discrete TPMs do: `own`
    waits without a timeout or a second attempt, says why it is slow, and persists both keys
    so that no later boot generates them again."""
    delay = 15
    holds = [rig.proxy.pause("before", cc=CC["CreatePrimary"], nth=k) for k in (1, 2)]

    def release_late():
        for h in holds:
            if h.reached.wait(120):
                time.sleep(delay)
            h.release()
    threading.Thread(target=release_late, daemon=True).start()

    t0 = time.monotonic()
    res = rig.run("own")
    took = time.monotonic() - t0

    assert res.returncode == 0, res.stderr
    assert took >= 2 * delay
    assert rig.proxy.count(CC["CreatePrimary"]) == 2
    assert res.stderr.count("this can take several seconds") == 2
    assert {EK, SRK} <= set(rig.tpm.persistent_handles())

    rig.proxy.reset_log()
    res = rig.run("own")
    assert res.returncode == 0, res.stderr
    assert rig.proxy.count(CC["CreatePrimary"]) == 0
    assert_no_leftovers(rig.tpm)


def test_b30_units_give_the_tpm_phase_minutes_not_the_default_90_s():
    for unit in ("units/tpm-provision-tpm.service.in",
                 "initramfs/dracut/91tpm-provision/tpm-provision-initrd.service.in"):
        with open(os.path.join(ROOT, unit)) as f:
            m = re.search(r"^TimeoutStartSec=(\d+)min$", f.read(), re.M)
        assert m and int(m.group(1)) >= 3, unit
