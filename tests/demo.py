"""The main job, shown on a fresh software TPM made like a real one leaves the factory: an EK
certificate in NV and no persisted EK. Every command is the real binary; its log goes to the
terminal as it would to the journal."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "lib"))
from swtpm import Swtpm, new_workdir, remove_workdir  # noqa: E402

AGENT = os.path.join(ROOT, "build", "tpm-provision")


def step(title, *args):
    print("\n== " + title, flush=True)
    print("$ tpm-provision " + " ".join(args), flush=True)
    res = subprocess.run([AGENT, *args], env=dict(os.environ, TPM_PROVISION_TCTI=tpm.tcti))
    if res.returncode != 0:
        print("demo: tpm-provision %s exited %d" % (" ".join(args), res.returncode))
        sys.exit(1)


work = new_workdir("tpmprov-demo-")
print("== Manufacturing a software TPM (swtpm_setup, EK certificate, EK not persisted) in "
      + work, flush=True)
tpm = Swtpm(work, persist_ek=False)
try:
    step("What the new TPM looks like", "status")
    step("First boot, TPM phase: take ownership (EK, SRK, state NV index)", "own")
    step("Every later boot: the same command changes nothing", "own")
    step("The TPM after ownership", "status")
    step("What the manufacturing line records for the DPS enrolment", "ek", "--json")
    print("\ndemo: done.")
finally:
    tpm.close()
    remove_workdir(work)
