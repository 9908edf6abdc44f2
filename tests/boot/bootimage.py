"""What the boot tests boot, built once and cached (tests/boot/README.md):

    kernel   Debian 12's linux-image deb (apt-get download + dpkg -x), keyed by its file name
    base     a debootstrap'ed Debian 12 root (systemd, udev, busybox, ca-certificates) with the
             kernel's modules and the mirror's package lists, keyed by everything that goes
             into it
    image    the base plus the project's Debian packages from `make deb` (tpm-provision,
             tpm-provision-dracut, tpm-provision-initramfs-tools), installed with apt-get,
             which takes their dependencies from the mirror; a configuration drop-in and the
             DPS emulator's CA; an initrd from the packaged dracut module and one from the
             packaged initramfs-tools hook (both built inside the chroot), and an ext4 disk
             image; keyed by the content of the .debs, this recipe, the base, the CA and scope

Every build step runs as root: debootstrap, chroot, mount. Nothing is installed on the host
but what tests/boot/deps.sh lists. Debian's dracut package conflicts with initramfs-tools, but
tpm-provision-dracut depends only on dracut-core, which does not: all three packages install
into one root, and both initrds are built from it.
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
# The base system. The TSS libraries, libcurl4, tpm-udev, dracut-core and initramfs-tools are
# not in it: they come with the project's packages (their Depends), so a dependency missing
# there shows in the boot.
# busybox is a Recommends of initramfs-tools-core, which apt-get --no-install-recommends skips.
PACKAGES = [
    "systemd", "systemd-sysv", "udev", "kmod", "cpio", "busybox", "ca-certificates",
]
# The binary packages of `make deb` the image is made from (build/deb/NAME_VERSION_ARCH.deb).
DEB_PACKAGES = ["tpm-provision", "tpm-provision-dracut", "tpm-provision-initramfs-tools"]
DEB_DIR = os.path.join(ROOT, "build", "deb")
# The test's settings, as an image builder adds them: a drop-in next to the shipped conffile
# (tpm-provision.conf(5)), which stays as the package installed it.
DROPIN = "etc/tpm-provision/tpm-provision.conf.d/50-boot-test.conf"
DPS_CA = "etc/tpm-provision/dps-ca.pem"
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
BASE_VERSION = "3"      # bump when the base recipe below changes in a way no key sees
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

    def __init__(self, root, archives=None):
        self.root = root
        self.archives = archives
        self.mounts = []

    def __enter__(self):
        binds = [("proc", "proc", ["-t", "proc"]), ("sys", "sys", ["-t", "sysfs"]),
                 ("/dev", "dev", ["--bind"])]
        if self.archives:
            # apt's downloads, kept in the cache so that an image rebuild fetches nothing
            # the mirror has not changed.
            os.makedirs(os.path.join(self.archives, "partial"), exist_ok=True)
            binds.append((self.archives, "var/cache/apt/archives", ["--bind"]))
        try:
            for src, dst, args in binds:
                path = os.path.join(self.root, dst)
                os.makedirs(path, exist_ok=True)
                run(["mount", *args, src, path])
                self.mounts.append(path)
        except BaseException:
            self.__exit__()
            raise
        return self

    def run(self, *cmd, **kw):
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root",
               "DEBIAN_FRONTEND": "noninteractive"}
        return run(["chroot", self.root, *cmd], env=env, **kw)

    def apt(self, *args, **kw):
        # As root: apt's _apt user cannot write the archive directory bound from the cache.
        return self.run("apt-get", "-q", "-y", "-o", "APT::Sandbox::User=root", *args, **kw)

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


def make_debs():
    """`make deb` (packaging/build-deb.sh), then the three packages the image is made from, as
    {file name: content}. Read at once, so that a later `make deb` cannot change them under
    the image build. The packages build reproducibly (SOURCE_DATE_EPOCH from the changelog), so
    an unchanged tree gives the same bytes and the cached image."""
    t = time.monotonic()
    res = run(["make", "--no-print-directory", "-C", ROOT, "deb"], capture_output=True,
              text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError("make deb failed (exit %d):\n%s%s"
                           % (res.returncode, res.stdout[-3000:], res.stderr[-3000:]))
    debs = {}
    for name in DEB_PACKAGES:
        found = sorted(glob.glob(os.path.join(DEB_DIR, name + "_*_*.deb")))
        if len(found) != 1:
            raise RuntimeError("make deb left %d files for %s in %s: %s"
                               % (len(found), name, DEB_DIR, found))
        with open(found[0], "rb") as f:
            debs[os.path.basename(found[0])] = f.read()
    log("make deb took %.0f s: %s" % (time.monotonic() - t, " ".join(sorted(debs))))
    return debs


def debs_digest(debs):
    """The packages by name and content, for the image's key."""
    h = hashlib.sha256()
    for name in sorted(debs):
        h.update(name.encode() + b"\0" + hashlib.sha256(debs[name]).digest())
    return h.hexdigest()[:16]


def agent_config(scope):
    return ("# tests/boot: the boot test's DPS emulator (tests/boot/bootimage.py).\n"
            "[Provisioning]\nIdScope=%s\nGlobalEndpoint=https://%s\nCABundle=/%s\n"
            % (scope, DPS_NAME, DPS_CA))


def install_debs(c, debs, log_path):
    """apt-get install of the local .debs in the chroot; apt takes their dependencies from the
    base's package lists and the mirror. When those lists are older than the mirror (a
    point release), they are fetched again and the install is tried once more."""
    names = []
    os.makedirs(os.path.join(c.root, "tmp", "debs"), exist_ok=True)
    for name, data in sorted(debs.items()):
        with open(os.path.join(c.root, "tmp", "debs", name), "wb") as f:
            f.write(data)
        names.append("/tmp/debs/" + name)
    with open(log_path, "w") as out:
        args = ["install", "--no-install-recommends", *names]
        if c.apt(*args, stdout=out, stderr=subprocess.STDOUT, check=False).returncode != 0:
            log("apt-get install failed; updating the root's package lists and trying again")
            c.apt("update", stdout=out, stderr=subprocess.STDOUT)
            c.apt(*args, stdout=out, stderr=subprocess.STDOUT)
    shutil.rmtree(os.path.join(c.root, "tmp", "debs"))


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
    debs = make_debs()
    deb, kver, vmlinuz = kernel(cache)
    base_key, base = base_root(cache, deb, kver)
    with open(dps_ca, "rb") as f:
        ca = f.read()
    # The .debs carry everything of the project's that reaches the image; this recipe decides
    # what is done with them.
    recipe = file_digest([os.path.join(HERE, "bootimage.py")])
    key = sha(base_key, debs_digest(debs), recipe, ca, scope)
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

    with Chroot(root, archives=os.path.join(cache, "archives")) as c:
        install_debs(c, debs, os.path.join(d, "apt.log"))
        # The configuration goes in a drop-in; the shipped conffile stays untouched, which
        # dpkg --verify confirms for every file of the three packages.
        _write(os.path.join(root, DROPIN), agent_config(scope))
        _write(os.path.join(root, DPS_CA), ca.decode())
        changed = c.run("dpkg", "--verify", *DEB_PACKAGES, capture_output=True, text=True,
                        check=False)
        if changed.returncode != 0 or changed.stdout.strip():
            raise RuntimeError("dpkg --verify: the installed packages differ from the .debs:\n"
                               + changed.stdout + changed.stderr)
        # The units the test checks are the packages' files.
        for u in UNITS:
            c.run("dpkg-query", "-S", "/" + u, stdout=subprocess.DEVNULL)
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
    # apt's lists stay in the base for the next build; the guest never runs apt.
    for p in glob.glob(os.path.join(root, "var", "lib", "apt", "lists", "*")) + glob.glob(
            os.path.join(root, "var", "cache", "apt", "*.bin")):
        if os.path.isfile(p):
            os.unlink(p)
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


# Where the packages install the units: dh_installsystemd puts tpm-provision's in
# /lib/systemd/system (bookworm), tpm-provision-dracut ships the initrd's in its module.
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
