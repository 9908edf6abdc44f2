"""What the boot tests boot, built once and cached (tests/boot/README.md):

    kernel   Debian 12's linux-image deb (apt-get download + dpkg -x), keyed by its file name
    base     a debootstrap'ed Debian 12 root with the agent's runtime libraries, dracut-core and
             initramfs-tools-core, the kernel's modules, keyed by everything that goes into it
    image    the base plus `make install DESTDIR=...`, the test configuration and the DPS
             emulator's CA, an initrd from the project's dracut module and one from its
             initramfs-tools hook (both built inside the chroot), and an ext4 disk image;
             keyed by the content of every input file

Every build step runs as root: debootstrap, chroot, mount. Nothing is installed on the host
but what tests/boot/deps.sh lists: dracut and initramfs-tools conflict, so both run only in
the chroot.
"""
import glob
import hashlib
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SUITE = "bookworm"
# The runtime libraries of build/tpm-provision, plus what the images are built with.
PACKAGES = [
    "systemd", "systemd-sysv", "udev", "kmod", "cpio", "busybox", "dracut-core",
    "initramfs-tools-core", "libtss2-esys-3.0.2-0", "libtss2-tcti-device0", "libtss2-mu0",
    "libtss2-rc0", "libtss2-tctildr0", "libcurl4", "libjson-c5", "libsystemd0",
    "ca-certificates",
]
# Module trees the VM does not need; dropping them keeps the disk image small.
PRUNE_MODULES = [
    "drivers/gpu", "drivers/media", "drivers/net/wireless", "drivers/net/ethernet",
    "drivers/infiniband", "drivers/staging", "drivers/scsi", "drivers/usb", "drivers/hid",
    "drivers/input", "drivers/bluetooth", "drivers/isdn", "drivers/iio", "drivers/md",
    "sound", "net/bluetooth", "net/mac80211", "net/wireless", "fs/btrfs", "fs/xfs",
    "fs/ocfs2", "fs/gfs2", "fs/nfs", "fs/nfsd", "fs/ceph", "fs/smb", "fs/cifs", "fs/f2fs",
    "fs/ntfs3", "fs/jfs", "fs/reiserfs", "fs/ubifs", "fs/nilfs2",
]
DRACUT_MODULES = ("systemd systemd-initrd dracut-systemd udev-rules base fs-lib rootfs-block "
                  "kernel-modules tpm-provision")
DRACUT_DRIVERS = "virtio_blk virtio_pci ext4"
BASE_VERSION = "2"      # bump when the base recipe below changes in a way no key sees
DPS_NAME = "emulated-dps.azure-devices-provisioning.net"
DPS_GUEST_IP = "10.0.2.100"


def log(msg):
    print("boot: " + msg, flush=True)


def run(cmd, **kw):
    kw.setdefault("check", True)
    return subprocess.run(cmd, **kw)


def sha(*parts):
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else str(p).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def file_digest(paths):
    h = hashlib.sha256()
    for p in sorted(paths):
        # Relative names: a clone elsewhere (CI) must find the same cache entries.
        h.update(os.path.relpath(p, ROOT).encode() + b"\0")
        with open(p, "rb") as f:
            h.update(f.read())
    return h.hexdigest()[:16]


def cache_dir():
    d = os.environ.get("BOOT_CACHE")
    if not d:
        d = "/var/cache/tpm-provision-boot" if os.geteuid() == 0 else os.path.join(
            ROOT, "build", "boot-cache")
    os.makedirs(d, exist_ok=True)
    return d


def apt_mirror():
    """The Debian mirror this host's apt uses (debootstrap must take packages from there)."""
    for path in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*")):
        try:
            text = open(path).read()
        except OSError:
            continue
        for line in text.splitlines():
            words = line.split()
            if path.endswith(".sources") and line.startswith("URIs:"):
                for uri in words[1:]:
                    if uri.rstrip("/").endswith("/debian"):
                        return uri
            elif words[:1] == ["deb"]:
                for uri in words[1:]:
                    if uri.startswith("http") and uri.rstrip("/").endswith("/debian"):
                        return uri
    return "http://deb.debian.org/debian"


def kernel_package():
    """linux-image-6.1.0-N-amd64, the one linux-image-amd64 depends on now."""
    out = run(["apt-cache", "depends", "linux-image-amd64"], capture_output=True,
              text=True).stdout
    for line in out.splitlines():
        word = line.split(":", 1)[-1].strip()
        if line.strip().startswith("Depends:") and word.startswith("linux-image-6.1"):
            return word
    raise RuntimeError("no linux-image-6.1.0-*-amd64 in apt's lists; run apt-get update")


def kernel(cache):
    """(deb path, kernel version, vmlinuz path), downloaded and unpacked once."""
    pkg = kernel_package()
    kver = pkg[len("linux-image-"):]
    kdir = os.path.join(cache, "kernel")
    os.makedirs(kdir, exist_ok=True)
    debs = glob.glob(os.path.join(kdir, pkg + "_*.deb"))
    if not debs:
        log("downloading " + pkg)
        # apt's _apt user cannot write root's cache directory: it says so and downloads as root.
        res = run(["apt-get", "download", "-q", pkg], cwd=kdir, capture_output=True, text=True,
                  check=False)
        if res.returncode != 0:
            raise RuntimeError("apt-get download %s failed: %s" % (pkg, res.stderr))
        debs = glob.glob(os.path.join(kdir, pkg + "_*.deb"))
    deb = sorted(debs)[-1]
    vmlinuz = os.path.join(kdir, "vmlinuz-" + kver)
    if not os.path.exists(vmlinuz):
        tmp = os.path.join(kdir, "x")
        shutil.rmtree(tmp, ignore_errors=True)
        run(["dpkg-deb", "-x", deb, tmp])
        shutil.copy(os.path.join(tmp, "boot", "vmlinuz-" + kver), vmlinuz)
        shutil.rmtree(tmp)
    return deb, kver, vmlinuz


class Chroot:
    """proc, sys and dev mounted in a root for the commands run inside; unmounted on exit."""

    def __init__(self, root):
        self.root = root
        self.mounts = []

    def __enter__(self):
        for src, dst, args in (("proc", "proc", ["-t", "proc"]), ("sys", "sys", ["-t", "sysfs"]),
                               ("/dev", "dev", ["--bind"])):
            path = os.path.join(self.root, dst)
            run(["mount", *args, src, path])
            self.mounts.append(path)
        return self

    def run(self, *cmd, **kw):
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root"}
        return run(["chroot", self.root, *cmd], env=env, **kw)

    def __exit__(self, *exc):
        for path in reversed(self.mounts):
            subprocess.run(["umount", "-l", path])


def _write(path, text, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def base_root(cache, deb, kver):
    mirror = apt_mirror()
    key = sha(BASE_VERSION, SUITE, mirror, " ".join(PACKAGES), os.path.basename(deb),
              " ".join(PRUNE_MODULES), file_digest(glob.glob(os.path.join(HERE, "guest", "*"))))
    base = os.path.join(cache, "base-" + key)
    root = os.path.join(base, "root")
    if os.path.exists(os.path.join(base, "complete")):
        return key, root
    for old in glob.glob(os.path.join(cache, "base-*")):
        shutil.rmtree(old, ignore_errors=True)
    os.makedirs(base)
    log("debootstrap %s from %s (once; cached in %s)" % (SUITE, mirror, base))
    t = time.monotonic()
    with open(os.path.join(base, "debootstrap.log"), "w") as out:
        run(["debootstrap", "--variant=minbase", "--include=" + ",".join(PACKAGES), SUITE, root,
             mirror], stdout=out, stderr=subprocess.STDOUT)
    log("debootstrap took %.0f s" % (time.monotonic() - t))

    # The kernel's modules: the deb ships /lib/modules, the root has merged /usr, and
    # dpkg -x would replace the /lib symbolic link with a directory.
    tmp = os.path.join(base, "kernel")
    run(["dpkg-deb", "-x", deb, tmp])
    shutil.move(os.path.join(tmp, "lib", "modules", kver),
                os.path.join(root, "usr", "lib", "modules", kver))
    for name in ("config-", "System.map-"):     # mkinitramfs reads the kernel's config
        shutil.copy(os.path.join(tmp, "boot", name + kver), os.path.join(root, "boot"))
    shutil.rmtree(tmp)
    mods = os.path.join(root, "usr", "lib", "modules", kver, "kernel")
    for sub in PRUNE_MODULES:
        shutil.rmtree(os.path.join(mods, sub), ignore_errors=True)

    _write(os.path.join(root, "etc", "fstab"), "/dev/vda / ext4 defaults 0 0\n")
    _write(os.path.join(root, "etc", "hostname"), "tpm-provision-vm\n")
    with open(os.path.join(root, "etc", "hosts"), "a") as f:
        f.write("%s %s\n" % (DPS_GUEST_IP, DPS_NAME))
    guest = os.path.join(HERE, "guest")
    shutil.copy(os.path.join(guest, "10-dhcp.network"),
                os.path.join(root, "etc", "systemd", "network", "10-dhcp.network"))
    shutil.copy(os.path.join(guest, "boottest-report"),
                os.path.join(root, "usr", "local", "sbin", "boottest-report"))
    os.chmod(os.path.join(root, "usr", "local", "sbin", "boottest-report"), 0o755)
    shutil.copy(os.path.join(guest, "boottest-report.service"),
                os.path.join(root, "etc", "systemd", "system", "boottest-report.service"))
    with Chroot(root) as c:
        c.run("depmod", "-a", kver)
        c.run("systemctl", "enable", "-q", "systemd-networkd.service",
              "systemd-networkd-wait-online.service", "boottest-report.service")
        c.run("passwd", "-d", "root", stdout=subprocess.DEVNULL)
    for d in ("usr/share/doc", "usr/share/man", "usr/share/locale", "var/cache/apt/archives"):
        for p in glob.glob(os.path.join(root, d, "*")):
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p, ignore_errors=True)
            elif os.path.isfile(p):
                os.unlink(p)
    open(os.path.join(base, "complete"), "w").close()
    return key, root


def image_inputs():
    """Every file the image is made from, for its key."""
    pats = ["build/tpm-provision", "Makefile", "units/*", "udev/*", "initramfs/*/*",
            "initramfs/*/*/*", "initramfs/*/*/*/*", "tests/boot/bootimage.py"]
    files = set()
    for p in pats:
        files.update(f for f in glob.glob(os.path.join(ROOT, p)) if os.path.isfile(f))
    return sorted(files)


def agent_config(scope):
    return ("[Provisioning]\nIdScope=%s\nGlobalEndpoint=https://%s\n"
            "CABundle=/etc/tpm-provision/dps-ca.pem\n" % (scope, DPS_NAME))


class Image:
    """Paths of one built image: kernel, initrds, disk, and what was recorded at build."""

    def __init__(self, d, kver, vmlinuz):
        self.dir = d
        self.kver = kver
        self.vmlinuz = vmlinuz
        self.disk = os.path.join(d, "root.img")
        self.initrd_dracut = os.path.join(d, "initrd-dracut.img")
        self.initrd_irt = os.path.join(d, "initrd-initramfs-tools.img")
        self.lsinitramfs = os.path.join(d, "lsinitramfs.txt")
        self.lsinitrd = os.path.join(d, "lsinitrd.txt")
        self.verify = os.path.join(d, "verify.txt")
        self.security = os.path.join(d, "security.txt")


def build(dps_ca, scope):
    """The image for the current tree; cached by the content of its inputs."""
    cache = cache_dir()
    deb, kver, vmlinuz = kernel(cache)
    base_key, base = base_root(cache, deb, kver)
    with open(dps_ca, "rb") as f:
        ca = f.read()
    key = sha(base_key, file_digest(image_inputs()), ca, scope)
    d = os.path.join(cache, "image-" + key)
    img = Image(d, kver, vmlinuz)
    if os.path.exists(os.path.join(d, "complete")):
        log("image cached: " + d)
        return img
    for old in glob.glob(os.path.join(cache, "image-*")):
        shutil.rmtree(old, ignore_errors=True)
    os.makedirs(d)
    t = time.monotonic()
    root = os.path.join(d, "root")
    run(["cp", "-a", "--reflink=auto", base, root])
    run(["make", "-s", "-C", ROOT, "install", "DESTDIR=" + root], stdout=subprocess.DEVNULL)
    _write(os.path.join(root, "etc", "tpm-provision", "tpm-provision.conf"), agent_config(scope))
    _write(os.path.join(root, "etc", "tpm-provision", "dps-ca.pem"), ca.decode())

    with Chroot(root) as c:
        c.run("dracut", "--no-hostonly", "--force", "--kver", kver, "-m", DRACUT_MODULES,
              "--drivers", DRACUT_DRIVERS, "/boot/initrd-dracut.img",
              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        c.run("mkinitramfs", "-o", "/boot/initrd-initramfs-tools.img", kver,
              stdout=subprocess.DEVNULL)
        with open(img.lsinitrd, "w") as out:
            c.run("lsinitrd", "/boot/initrd-dracut.img", stdout=out)
        with open(img.lsinitramfs, "w") as out:
            c.run("lsinitramfs", "/boot/initrd-initramfs-tools.img", stdout=out)
    for name in ("initrd-dracut.img", "initrd-initramfs-tools.img"):
        shutil.move(os.path.join(root, "boot", name), os.path.join(d, name))
    record_unit_checks(root, img)

    # The disk: ext4 made straight from the directory (mke2fs -d), no loop device.
    used = int(run(["du", "-sm", root], capture_output=True, text=True).stdout.split()[0])
    with open(img.disk, "wb") as f:
        f.truncate((used + 512) * 1024 * 1024)
    run(["mke2fs", "-q", "-F", "-t", "ext4", "-L", "root", "-d", root, img.disk])
    shutil.rmtree(root)
    open(os.path.join(d, "complete"), "w").close()
    log("image built in %.0f s: %s" % (time.monotonic() - t, d))
    return img


UNITS = [
    "lib/systemd/system/tpm-provision-tpm.service",
    "lib/systemd/system/tpm-provision-register.service",
    "usr/lib/dracut/modules.d/91tpm-provision/tpm-provision-initrd.service",
    "usr/lib/dracut/modules.d/91tpm-provision/tpm-provision-initrd-register.service",
]


def record_unit_checks(root, img):
    """systemd-analyze verify and security of each unit, in the image's root (whose systemd,
    252, is the one that runs them). The initrd units are checked from a scratch unit dir."""
    scratch = os.path.join(root, "etc", "systemd", "system")
    copies = []
    for u in UNITS[2:]:
        dst = os.path.join(scratch, os.path.basename(u))
        shutil.copy(os.path.join(root, u), dst)
        copies.append(dst)
    with open(img.verify, "w") as v, open(img.security, "w") as s:
        for u in UNITS:
            name = os.path.basename(u)
            res = subprocess.run(["systemd-analyze", "verify", "--man=no", "--root=" + root,
                                  "/etc/systemd/system/" + name if u in UNITS[2:] else "/" + u],
                                 capture_output=True, text=True)
            v.write("== %s rc=%d\n%s%s" % (name, res.returncode, res.stdout, res.stderr))
            res = subprocess.run(["systemd-analyze", "security", "--offline=yes",
                                  "--root=" + root, name], capture_output=True, text=True)
            s.write("== %s rc=%d\n%s%s" % (name, res.returncode, res.stdout, res.stderr))
    for c in copies:
        os.unlink(c)


if __name__ == "__main__":
    img = build(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "0ne00000001")
    print(img.dir)
