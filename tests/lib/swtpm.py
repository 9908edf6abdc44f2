"""A private software TPM for one test: manufactured by swtpm_setup, served on a unix socket.

Every test gets its own state directory and socket, so tests never share a TPM and never
touch the default TCP ports another swtpm on the host may hold.
"""
import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

TPM2_TOOLS_TIMEOUT = 60


class Swtpm:
    """One software TPM. `tcti` is the string the agent and tpm2-tools take."""

    def __init__(self, workdir, ek_cert=True, persist_ek=True):
        self.dir = os.path.join(workdir, "tpm")
        self.state = os.path.join(self.dir, "state")
        self.sock = os.path.join(self.dir, "tpm.sock")
        self.pidfile = os.path.join(self.dir, "swtpm.pid")
        self.log = os.path.join(self.dir, "swtpm.log")
        self.tcti = "swtpm:path=" + self.sock
        self.proc = None
        os.makedirs(self.state, exist_ok=True)
        self._manufacture(ek_cert)
        self.start()
        if not persist_ek:
            self.tpm2("evictcontrol", "-C", "o", "-c", "0x81010001")

    def _manufacture(self, ek_cert):
        # swtpm_setup writes its local CA under XDG_CONFIG_HOME when given one, so a test
        # needs neither root's /etc nor a shared CA directory.
        cfg = os.path.join(self.dir, "config")
        env = dict(os.environ, XDG_CONFIG_HOME=cfg)
        subprocess.run(["swtpm_setup", "--create-config-files", "root,skip-if-exist"],
                       env=env, check=True, capture_output=True)
        args = ["swtpm_setup", "--tpm2", "--tpmstate", self.state, "--createek",
                "--decryption", "--pcr-banks", "sha256", "--not-overwrite",
                "--config", os.path.join(cfg, "swtpm_setup.conf")]
        if ek_cert:
            args += ["--create-ek-cert"]
        res = subprocess.run(args, env=env, capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError("swtpm_setup failed: " + res.stdout + res.stderr)

    def start(self):
        if os.path.exists(self.sock):
            os.unlink(self.sock)
        self.proc = subprocess.Popen(
            ["swtpm", "socket", "--tpm2", "--tpmstate", "dir=" + self.state,
             "--server", "type=unixio,path=" + self.sock,
             "--ctrl", "type=unixio,path=" + self.sock + ".ctrl",
             "--flags", "not-need-init,startup-clear",
             "--log", "file=" + self.log, "--pid", "file=" + self.pidfile])
        # swtpm creates the socket file before it listens: wait until a connection is taken.
        deadline = time.monotonic() + 10
        while not self._accepts():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("swtpm did not start; see " + self.log)
            time.sleep(0.01)

    def _accepts(self):
        if not os.path.exists(self.sock):
            return False
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(self.sock)
            return True
        except OSError:
            return False
        finally:
            s.close()

    def stop(self, clean=True):
        """Stop the TPM. clean=False is a power cut: SIGKILL, no TPM2_Shutdown."""
        if self.proc is None:
            return
        if clean:
            subprocess.run(["swtpm_ioctl", "--unix", self.sock + ".ctrl", "-s"],
                           capture_output=True)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        else:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def restart(self, clean=True):
        self.stop(clean)
        self.start()

    def tpm2(self, *args, check=True, input=None):
        """Run one tpm2-tools command against this TPM; returns stdout as text."""
        env = dict(os.environ, TPM2TOOLS_TCTI=self.tcti, TSS2_LOG="all+none")
        res = subprocess.run(["tpm2_" + args[0], *args[1:]], env=env, capture_output=True,
                             input=input, timeout=TPM2_TOOLS_TIMEOUT)
        if check and res.returncode != 0:
            raise RuntimeError("tpm2_%s failed: %s" % (args[0], res.stderr.decode(errors="replace")))
        return res.stdout.decode(errors="replace") if input is None or isinstance(input, bytes) \
            else res.stdout

    def _handles(self, kind):
        out = self.tpm2("getcap", kind)
        return sorted(int(line.strip()[2:], 16) for line in out.splitlines()
                      if line.strip().startswith("- 0x"))

    def persistent_handles(self):
        return self._handles("handles-persistent")

    def nv_indices(self):
        return self._handles("handles-nv-index")

    def transient_handles(self):
        return self._handles("handles-transient")

    def sessions(self):
        return self._handles("handles-loaded-session") + self._handles("handles-saved-session")

    def snapshot(self):
        """What a test compares before and after a command: every handle the TPM lists."""
        return {"persistent": self.persistent_handles(), "nv": self.nv_indices(),
                "transient": self.transient_handles(), "sessions": self.sessions()}

    def close(self):
        self.stop(clean=True)


_TEMPLATES = {}


def template_state(persist_ek=False):
    """State directory of a TPM manufactured once per process (EK certificate; EK persisted or
    not): copying it is much faster than swtpm_setup. Every copy has the same EK."""
    if persist_ek not in _TEMPLATES:
        d = tempfile.mkdtemp(prefix="tpmprov-template-")
        atexit.register(shutil.rmtree, d, True)
        t = Swtpm(d, ek_cert=True, persist_ek=persist_ek)
        try:
            snapshot = t.snapshot()
        finally:
            t.stop(clean=True)
        _TEMPLATES[persist_ek] = (t.state, snapshot)
    return _TEMPLATES[persist_ek]


class TemplateSwtpm(Swtpm):
    """A Swtpm whose state is a copy of the process's manufactured TPM (no swtpm_setup)."""

    def __init__(self, workdir, persist_ek=False):
        self._template, self.template_snapshot = template_state(persist_ek)
        super().__init__(workdir, ek_cert=True, persist_ek=True)  # as the template has it

    def _manufacture(self, ek_cert):
        shutil.copytree(self._template, self.state, dirs_exist_ok=True)


def new_workdir(prefix="tpmprov-"):
    return tempfile.mkdtemp(prefix=prefix)


def remove_workdir(path):
    shutil.rmtree(path, ignore_errors=True)
