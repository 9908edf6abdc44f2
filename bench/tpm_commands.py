#!/usr/bin/python3
"""TPM commands and wall time of the agent's TPM work (bench/METHOD.md, part 1).

For each case: the commands the agent sends, counted through tests/lib/tpmproxy.py (one run,
the count does not depend on load), against the shortest sequence the protocol allows (written
out below with its reasons), and the wall time of the whole process straight on swtpm (no
proxy), BENCH_RUNS runs after BENCH_WARMUP. `own` on a fresh TPM is also compared with
bench/own-tpm2-tools.sh, the same steps with tpm2-tools, counted through the same proxy and
timed in alternation with the agent.

Cases: own on a fresh TPM with the EK persisted at manufacture and without; own on an owned
TPM; register end to end (emulator --polls 0: challenge PUT, signed PUT, one GET); register on
an assigned device (the boot fast path); sas; status and ek for reference.

Usage: bench/tpm_commands.py. Writes build/bench/tpm.json (BENCH_OUT) and prints it.
"""
import os
import shutil
import subprocess

import benchlib as b

HERE = os.path.dirname(os.path.abspath(__file__))
TOOLS_SCRIPT = os.path.join(HERE, "own-tpm2-tools.sh")
SEEDS = int(os.environ.get("BENCH_SEEDS", "5"))

# The shortest command sequence each case allows, counted in TPM 2.0 commands as the TPM sees
# them (TPM 2.0 Part 3), with the reason for each. "Look before changing" is part of the
# minimum: the agent must never overwrite what it did not create and must be safe to run at
# every boot, so each object it may create is read once first. An ESAPI client sends one more
# ReadPublic or NV_ReadPublic for each handle it opens (Esys_TR_FromTPMPublic); the minimum
# counts what the protocol needs, not what ESAPI adds.
_SRK_CREATE = [
    ("ReadPublic", "0x81000001 answers TPM_RC_HANDLE: no SRK yet"),
    ("CreatePrimary", "SRK in TPM_RH_OWNER, TCG Provisioning Guidance template (protocol 3.2)"),
    ("EvictControl", "persist it at 0x81000001 (protocol 3.3: owner hierarchy)"),
    ("FlushContext", "EvictControl copies; the transient stays loaded until flushed (Part 3, "
                     "28.5), and a TPM without a resource manager has only a few slots"),
]
_STATE_CREATE = [
    ("NV_ReadPublic", "0x01000100 answers TPM_RC_HANDLE: the index is free"),
    ("NV_DefineSpace", "the state index, 1024 bytes, owner-written (docs/state-record.md)"),
    ("NV_Write", "one 512-byte slot: the 'owned' record"),
]
_IMPORT = [
    ("StartAuthSession", "policy session for the EK's PolicySecret (protocol 2.2 step 2)"),
    ("PolicySecret", "TPM_RH_ENDORSEMENT; the TPM flushes the session after its one use"),
    ("ActivateCredential", "SRK and EK recover the inner wrapper key (protocol 2.2 step 4)"),
    ("Import", "the HMAC key duplicated to the SRK (protocol 2.2 step 5)"),
    ("Load", "the imported key, transient (protocol 2.2 step 7)"),
]
MINIMAL = {
    "own_fresh_ek_persisted": [
        ("ReadPublic", "0x81010001: the EK the TPM maker persisted, used as it is (protocol 3.1)"),
        *_SRK_CREATE, *_STATE_CREATE],
    "own_fresh_ek_computed": [
        ("ReadPublic", "0x81010001 answers TPM_RC_HANDLE: no EK persisted"),
        ("NV_ReadPublic", "0x01C00004, the maker's EK template, absent (EK Credential Profile "
                          "2.2.1.5; the nonce index is read only when a template exists)"),
        ("CreatePrimary", "EK in TPM_RH_ENDORSEMENT from the TCG template (protocol 3.1)"),
        ("NV_ReadPublic", "0x01C00002, the EK certificate's size"),
        ("NV_Read", "the EK certificate (up to the TPM's NV buffer per read), to check the new "
                    "EK against it before persisting"),
        ("EvictControl", "persist the EK at 0x81010001 under TPM_RH_OWNER (protocol 3.3)"),
        ("FlushContext", "the transient EK"),
        *_SRK_CREATE, *_STATE_CREATE],
    "own_owned": [
        ("ReadPublic", "0x81010001: the EK is there and is a restricted decryption key"),
        ("ReadPublic", "0x81000001: the SRK is there and is an RSA-2048 storage key"),
        ("NV_ReadPublic", "0x01000100: the index is ours (attributes, size, no policy)"),
        ("NV_Read", "the record is valid, so there is nothing to write"),
    ],
    "register": [
        ("NV_Read", "the state record: not assigned yet (no fast path), and its sequence"),
        ("ReadPublic", "EK public for the first PUT (protocol 1.4)"),
        ("ReadPublic", "SRK public for the first PUT; its Name binds the credential (3.2)"),
        ("ReadPublic", "0x81000100: empty, or the key the record names (never a foreign one)"),
        *_IMPORT,
        ("HMAC", "the SAS token for the signed PUT; the GET reuses it (protocol 1.8, 2.3)"),
        *_IMPORT,
        ("NV_Write", "the new key's Name first, so a power cut before EvictControl leaves a "
                     "key the next run recognises as its own (docs/state-record.md)"),
        ("EvictControl", "persist the hub key at 0x81000100"),
        ("FlushContext", "the transient hub key"),
        ("NV_Write", "the record: assigned, hub, device ID"),
        ("FlushContext", "the transient challenge key"),
    ],
    "register_fast_path": [
        ("NV_Read", "the state record: assigned, same ID scope"),
        ("ReadPublic", "0x81000100: the identity key is there and its Name is the recorded one"),
    ],
    "sas": [
        ("NV_Read", "the state record: hub, device ID, identity handle"),
        ("HMAC", "sign the token with 0x81000100 (protocol 2.3)"),
    ],
}


def sequence(proxy):
    ccs = proxy.ccs()
    return {"commands": [b.cc_name(c) for c in ccs], "count": len(ccs),
            "mutating": sum(1 for c in ccs if c in b.MUTATING_CC)}


def minimal(name):
    steps = MINIMAL.get(name)
    if steps is None:
        return None
    return {"commands": [c for c, _ in steps], "reasons": [r for _, r in steps],
            "count": len(steps),
            "mutating": sum(1 for c, _ in steps if b.CC[c] in b.MUTATING_CC)}


def tools_argv(persisted, scratch):
    return [TOOLS_SCRIPT] + (["--ek-persisted"] if persisted else []) + [scratch]


def tools_env(tcti):
    return b.clean_env({"TPM2TOOLS_TCTI": tcti, "TSS2_LOG": "all+none"})


class Bench:
    def __init__(self):
        self.work = b.workdir("tpm")
        self.n = 0
        self.templates = {}
        self.out = {"cases": {}, "tpm2_tools": {}, "seeds": SEEDS}

    def template(self, persist_ek, i):
        """The state of the i-th of SEEDS TPMs manufactured for this run (EK persisted or not).
        swtpm derives a primary RSA key from the TPM's seed, and how long the prime search
        takes differs from seed to seed: timed runs go round several seeds."""
        key = (persist_ek, i % SEEDS)
        if key not in self.templates:
            d = os.path.join(self.work, "template-%d-%d" % key)
            t = b.Swtpm(d, ek_cert=True, persist_ek=persist_ek)
            t.stop(clean=True)
            self.templates[key] = t.state
        return self.templates[key]

    def fresh(self, persist_ek, i=0):
        self.n += 1
        d = os.path.join(self.work, "fresh-%d" % self.n)
        t = b.CopySwtpm(d, self.template(persist_ek, i))
        return b.Device(d, t), d

    def count(self, device, *args, check=True):
        with b.TpmProxy(device.tpm, os.path.join(device.dir, "proxy-%d.sock" % self.n)) as p:
            device.run(*args, tcti=p.tcti, check=check)
            return sequence(p)

    def case(self, name, counted, timing, note=""):
        self.out["cases"][name] = {"agent": counted, "minimal": minimal(name), "time": timing,
                                   "note": note}

    # -- own --------------------------------------------------------------------------------

    def own_fresh(self, persisted):
        name = "own_fresh_ek_persisted" if persisted else "own_fresh_ek_computed"
        dev, d = self.fresh(persisted)
        counted = self.count(dev, "own")
        dev.tpm.stop()
        shutil.rmtree(d, ignore_errors=True)

        tdev, d = self.fresh(persisted)
        with b.TpmProxy(tdev.tpm, os.path.join(d, "proxy.sock")) as p:
            subprocess.run(tools_argv(persisted, os.path.join(d, "scratch")),
                           env=tools_env(p.tcti), check=True, capture_output=True)
            tools = sequence(p)
            p.reset_log()
            # The script's result is what `own` makes: `own` afterwards changes nothing.
            tdev.run("own", tcti=p.tcti)
            after = sequence(p)
        tools_srk = tdev.tpm.tpm2("readpublic", "-c", "0x81000001")
        tdev.tpm.stop()
        shutil.rmtree(d, ignore_errors=True)

        adev, d = self.fresh(persisted)
        adev.run("own")
        same_srk = adev.tpm.tpm2("readpublic", "-c", "0x81000001") == tools_srk
        adev.tpm.stop()
        shutil.rmtree(d, ignore_errors=True)

        def prepare_agent(i):
            dev, d = self.fresh(persisted, i)
            return dev.argv("own"), dev.env(), lambda: (dev.tpm.stop(), shutil.rmtree(d, True))

        def prepare_tools(i):
            dev, d = self.fresh(persisted, i)
            return (tools_argv(persisted, os.path.join(d, "scratch")), tools_env(dev.tpm.tcti),
                    lambda: (dev.tpm.stop(), shutil.rmtree(d, True)))

        agent_t, tools_t, ratio = b.measure_pair(prepare_agent, prepare_tools)
        self.case(name, counted, agent_t)
        self.out["tpm2_tools"][name] = {
            "tools": tools, "time": tools_t, "agent_over_tools": ratio,
            "own_after_tools_mutating": after["mutating"], "same_srk_as_agent": same_srk}

    def own_owned(self):
        dev, _ = self.fresh(True)
        dev.run("own")
        counted = self.count(dev, "own")
        self.case("own_owned", counted,
                  b.measure(lambda i: (dev.argv("own"), dev.env(), None)))
        dev.tpm.stop()

    # -- register, fast path, sas -------------------------------------------------------------

    def registration(self):
        emu = b.Emulator(args=["--polls", "0"])
        emu.start()
        try:
            dev, _ = self.fresh(False)
            dev = b.Device(dev.dir, dev.tpm, emu)
            dev.run("own")
            emu.create_enrollment(dev.ek_public())

            counted = self.count(dev, "register")
            requests_one = len([e for e in emu.log() if e["kind"] != "service"])

            def prepare_register(i):
                dev.run("reset", "--yes")
                return dev.argv("register"), dev.env(), None
            timing = b.measure(prepare_register)
            self.case("register", counted, timing,
                      "emulator --polls 0 --retry-after 1: the agent waits the 202's "
                      "retry-after (1 s, its floor) before the one GET")

            # Registered now: the boot fast path.
            emu.clear_log()
            counted = self.count(dev, "register")
            timing = b.measure(lambda i: (dev.argv("register"), dev.env(), None))
            fast_requests = len(emu.log())
            self.case("register_fast_path", counted, timing,
                      "requests to DPS during these runs: %d" % fast_requests)
            self.out["fast_path_requests"] = fast_requests
            self.out["register_requests"] = requests_one

            for name, args in (("sas", ["sas"]), ("status", ["status"]), ("ek", ["ek"])):
                counted = self.count(dev, *args)
                self.case(name, counted,
                          b.measure(lambda i, a=args: (dev.argv(*a), dev.env(), None)))
            dev.tpm.stop()
        finally:
            emu.close()

    def run(self):
        before = b.machine()
        self.own_fresh(True)
        self.own_fresh(False)
        self.own_owned()
        self.registration()
        self.out["machine"] = {"before": before, "after": b.machine()}
        self.out["runs"], self.out["warmup"] = b.RUNS, b.WARMUP
        shutil.rmtree(self.work, ignore_errors=True)
        return self.out


def main():
    out = Bench().run()
    print(b.save("tpm", out))


if __name__ == "__main__":
    main()
