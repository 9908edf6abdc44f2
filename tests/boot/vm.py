"""One qemu VM for the boot tests: TCG (never KVM), inside `timeout`, a swtpm virtual TPM on a
private socket, user networking with restrict=on whose only way out is a guestfwd of
10.0.2.100:443 to the DPS emulator on the host's loopback. The first serial port is the
console (console.log), the second carries the guest's report (report.log)."""
import os
import shutil
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "lib"))
from swtpm import Swtpm  # noqa: E402


class Tpm:
    """A manufactured swtpm (EK certificate in NV, no persisted EK, as chips ship), served
    either on a unix socket for the host's tools or on a control socket for qemu."""

    def __init__(self, workdir):
        self.host = Swtpm(workdir, persist_ek=False)
        self.host.stop()
        self.state = self.host.state
        self.ctrl = os.path.join(self.host.dir, "qemu.ctrl")
        self.proc = None

    def for_host(self):
        """Serve on the unix socket; returns the tcti for the host's agent and tpm2-tools."""
        self.host.start()
        return self.host.tcti

    def stop_host(self):
        self.host.stop()

    def for_qemu(self):
        if os.path.exists(self.ctrl):
            os.unlink(self.ctrl)
        self.proc = subprocess.Popen(
            ["swtpm", "socket", "--tpm2", "--tpmstate", "dir=" + self.state,
             "--ctrl", "type=unixio,path=" + self.ctrl, "--terminate",
             "--log", "file=" + os.path.join(self.host.dir, "swtpm-qemu.log")])
        deadline = time.monotonic() + 10
        while not os.path.exists(self.ctrl):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("swtpm for qemu did not start")
            time.sleep(0.02)

    def stop_qemu(self):
        if self.proc is not None:
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


RUNNING = []


def kill_all():
    """Stop every VM still running (a failed or interrupted scenario), and its swtpm."""
    for vm in list(RUNNING):
        vm.proc.terminate()     # `timeout` passes it on to qemu
        try:
            vm.proc.wait(15)
        except subprocess.TimeoutExpired:
            vm.proc.kill()
        if vm.tpm.proc is not None:
            vm.tpm.proc.kill()
            vm.tpm.proc.wait()
            vm.tpm.proc = None
        RUNNING.remove(vm)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Vm:
    def __init__(self, workdir, image, initrd, tpm, dps_port, name):
        self.dir = os.path.join(workdir, name)
        os.makedirs(self.dir, exist_ok=True)
        self.image = image
        self.initrd = initrd
        self.tpm = tpm
        self.dps_port = dps_port
        self.disk = os.path.join(self.dir, "disk.qcow2")
        self.console = os.path.join(self.dir, "console.log")
        self.report_file = os.path.join(self.dir, "report.log")
        self.proc = None
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b",
                        image.disk, self.disk], check=True)

    def start(self, append="", timeout=600):
        for f in (self.console, self.report_file):
            if os.path.exists(f):
                os.unlink(f)
        self.tpm.for_qemu()
        self.connections = os.path.join(self.dir, "connections.log")
        relay = "/usr/bin/python3 %s %d %s" % (os.path.join(HERE, "relay.py"), self.dps_port,
                                              self.connections)
        cmdline = ("root=/dev/vda rw console=ttyS0,115200 panic=-1 net.ifnames=0 "
                   "systemd.show_status=1 " + append)
        cmd = ["timeout", "--kill-after=10", str(timeout),
               "qemu-system-x86_64", "-machine", "q35,accel=tcg", "-cpu", "qemu64",
               "-smp", "2", "-m", "1024", "-display", "none", "-no-reboot", "-nodefaults",
               "-kernel", self.image.vmlinuz, "-initrd", self.initrd, "-append", cmdline,
               "-drive", "file=%s,if=virtio,format=qcow2" % self.disk,
               "-chardev", "socket,id=chrtpm,path=" + self.tpm.ctrl,
               "-tpmdev", "emulator,id=tpm0,chardev=chrtpm", "-device", "tpm-tis,tpmdev=tpm0",
               "-netdev", "user,id=n0,restrict=on,guestfwd=tcp:10.0.2.100:443-cmd:" + relay,
               "-device", "virtio-net-pci,netdev=n0",
               "-serial", "file:" + self.console, "-serial", "file:" + self.report_file]
        self.started = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdout=open(os.path.join(self.dir, "qemu.out"), "w"),
                                     stderr=subprocess.STDOUT)
        RUNNING.append(self)
        return self

    def wait(self):
        rc = self.proc.wait()
        RUNNING.remove(self)
        self.tpm.stop_qemu()
        self.wall = time.monotonic() - self.started
        return rc

    def refused(self):
        """How many guest connections to DPS found nothing listening."""
        try:
            with open(self.connections) as f:
                return f.read().split().count("refused")
        except OSError:
            return 0

    def report(self):
        """The guest's report: {key: [lines]}."""
        out = {}
        if os.path.exists(self.report_file):
            with open(self.report_file, errors="replace") as f:
                for line in f:
                    line = line.rstrip("\r\n")
                    key, _, value = line.partition(" ")
                    out.setdefault(key, []).append(value.rstrip("\r"))
        return out

    def console_text(self):
        try:
            with open(self.console, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def tail(self, n=40):
        return "\n".join(self.console_text().splitlines()[-n:])

    def remove(self):
        shutil.rmtree(self.dir, ignore_errors=True)
