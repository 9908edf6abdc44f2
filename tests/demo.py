"""The main job end to end, on this machine: a fresh software TPM made like a real one leaves
the factory (EK certificate in NV, no persisted EK), the DPS emulator with an enrollment made
from that TPM's EK, then what a device does on first boot and on every later boot. Every
command is the real binary; its log goes to the terminal as it would to the journal."""
import base64
import json
import os
import subprocess
import sys
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "lib"))
sys.path.insert(0, os.path.join(ROOT, "tests", "emulator"))
from client import Emulator  # noqa: E402
from swtpm import Swtpm, new_workdir, remove_workdir  # noqa: E402

AGENT = os.path.join(ROOT, "build", "tpm-provision")


def step(title, *args, capture=False):
    print("\n== " + title, flush=True)
    print("$ tpm-provision " + " ".join(args), flush=True)
    res = subprocess.run([AGENT, *args], env=env, text=True,
                         stdout=subprocess.PIPE if capture else None)
    if res.returncode != 0:
        print("demo: tpm-provision %s exited %d" % (" ".join(args), res.returncode))
        sys.exit(1)
    if capture:
        print(res.stdout, end="", flush=True)
    return res.stdout


work = new_workdir("tpmprov-demo-")
print("== A software TPM, manufactured with an EK certificate and no persisted EK, in " + work,
      flush=True)
tpm = Swtpm(work, persist_ek=False)
os.makedirs(os.path.join(work, "dps"))
emu = Emulator(state_dir=os.path.join(work, "dps"))
try:
    emu.start()
    print("== The DPS emulator listens on " + emu.url + " (loopback only)", flush=True)
    config = os.path.join(work, "tpm-provision.conf")
    with open(config, "w") as f:
        f.write("[Provisioning]\nIdScope=%s\nGlobalEndpoint=%s\nCABundle=%s\n"
                % (emu.id_scope, emu.url, emu.ca))
    env = dict(os.environ, TPM_PROVISION_TCTI=tpm.tcti, TPM_PROVISION_CONFIG=config,
               TPM_PROVISION_CMDLINE=os.devnull, RUNTIME_DIRECTORY=os.path.join(work, "run"))

    ek = json.loads(step("Manufacturing line: read the EK for the enrollment list", "ek",
                         "--json", capture=True))
    regid = emu.create_enrollment(base64.b64decode(ek["endorsementKey"]))
    print("== Enrolled %s in DPS (individual enrollment, TPM attestation)" % regid, flush=True)

    step("First boot, TPM phase (initrd): take ownership", "own")
    step("First boot, network phase: register with DPS", "register")
    step("The device now", "status")
    print("\n== The hand-off file for the device's IoT client", flush=True)
    with open(os.path.join(work, "run", "identity.json")) as f:
        ident = json.load(f)
        print(json.dumps(ident, indent=2))
    token = step("The IoT client asks for a hub token, signed inside the TPM", "sas",
                 capture=True).strip()
    fields = dict(p.split("=", 1) for p in token.split(" ", 1)[1].split("&"))
    answer = emu.hub_check(ident["deviceId"], urllib.parse.unquote(fields["sig"]), fields["se"],
                           hub=ident["assignedHub"], sr=fields["sr"])
    print("== The emulated IoT hub says: HTTP %d %s" % (
        answer.status, "(token accepted)" if answer.status == 200 else "(token refused)"))
    if answer.status != 200:
        sys.exit(1)

    requests = len(emu.log())
    step("Every later boot, TPM phase", "own")
    step("Every later boot, network phase: the fast path", "register")
    print("== Requests to DPS on that boot: %d" % (len(emu.log()) - requests))
    print("\ndemo: done.")
finally:
    emu.close()
    tpm.close()
    remove_workdir(work)
