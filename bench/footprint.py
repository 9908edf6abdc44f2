#!/usr/bin/python3
"""Footprint (bench/METHOD.md, part 3): the binary's size stripped and not, the shared
libraries it pulls, the peak RSS of each subcommand (GNU time's %M, the kernel's ru_maxrss),
and what the dracut module (and the initramfs-tools hook) adds to an initrd.

The initrds are built in a copy of the Debian 12 root that `make check-boot` caches
(tests/boot/bootimage.py, /var/cache/tpm-provision-boot/base-*): what is missing of the
agent's runtime packages, dracut-core and initramfs-tools-core is installed into the copy with
apt-get, then `make install-boot` and the binary under test into it; dracut with the boot tests' options, once with the
module and once with the same module list less tpm-provision and `--omit tpm-provision`;
initramfs-tools once with the hook and script and once without. When no cached root exists
the initrd part is skipped and says so (run `make check-boot` once).

Peak RSS is measured again for `register` and `enroll` with a libcurl that has only what DPS
needs (bench/minimal-libcurl.sh, built once into build/bench/libcurl-minimal, or the one in
BENCH_LIBCURL_DIR), loaded through LD_LIBRARY_PATH: what Debian's libcurl4 costs, apart from
what the agent costs. Those runs are reported beside the target, not in it.

Usage: bench/footprint.py. Writes build/bench/footprint.json (BENCH_OUT), prints its path.
"""
import glob
import os
import re
import shutil
import subprocess
import sys

import benchlib as b

sys.path.insert(0, os.path.join(b.ROOT, "tests", "boot"))
import bootimage  # noqa: E402

TIME = "/usr/bin/time"
RSS_RUNS = int(os.environ.get("BENCH_RSS_RUNS", "3"))
TRUST_RUNS = int(os.environ.get("BENCH_TRUST_RUNS", "7"))


# -- the binary -----------------------------------------------------------------------------

def elf_sizes(path):
    out = subprocess.run(["size", path], capture_output=True, text=True, check=True).stdout
    text, data, bss = (int(x) for x in out.splitlines()[1].split()[:3])
    return {"file": os.path.getsize(path), "text": text, "data": data, "bss": bss}


def ldd(path):
    """[{name, file (the real file's name), path, bytes}] of what the loader maps for path."""
    out = subprocess.run(["ldd", path], capture_output=True, text=True, check=True).stdout
    libs = []
    for line in out.splitlines():
        m = re.match(r"\s*(\S+)(?: => (\S+))?", line)
        if not m or m.group(1).startswith("linux-vdso"):
            continue
        name, target = m.group(1), m.group(2) or m.group(1)
        real = os.path.realpath(target) if os.path.exists(target) else None
        libs.append({"name": os.path.basename(name), "path": real,
                     "file": os.path.basename(real) if real else None,
                     "bytes": os.path.getsize(real) if real else None})
    return libs


# Loaded with dlopen() by the agent itself, when it is about to make its first request
# (agent/dps/curl-api.h); ldd of the binary cannot see them.
DLOPENED = ("libcurl.so.4",)


def library_path(soname):
    """Where the loader finds soname (ldconfig's cache), or None."""
    out = subprocess.run(["/sbin/ldconfig", "-p"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        m = re.match(r"\s*(\S+) \(([^)]*)\) => (\S+)", line)
        if m and m.group(1) == soname and "x86-64" in m.group(2):
            return m.group(3)
    return None


def libraries(path):
    """Every shared library the loader maps (ldd), the ones named in the binary (NEEDED),
    for each NEEDED library the ones that come only through it, and for each library the agent
    dlopen()s the ones it adds to what is mapped already."""
    libs = ldd(path)
    dyn = subprocess.run(["readelf", "-d", path], capture_output=True, text=True,
                         check=True).stdout
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dyn)
    by_name = {x["name"]: x for x in libs}
    trees = {}
    for n in needed:
        lib = by_name.get(n)
        if lib and lib["path"]:
            trees[n] = {lib["file"]} | {x["file"] for x in ldd(lib["path"])}
    only = {}
    for n, tree in trees.items():
        others = set().union(*(t for m, t in trees.items() if m != n))
        only[n] = sorted(tree - others)
    mapped = {x["file"] for x in libs}
    dlopened = {}
    for n in DLOPENED:
        where = library_path(n)
        if where:
            tree = [os.path.basename(os.path.realpath(where))] + [x["file"] for x in ldd(where)
                                                                  if x["file"]]
            dlopened[n] = sorted(set(tree) - mapped)
    return {"ldd": [{k: x[k] for k in ("name", "file", "bytes")} for x in libs],
            "needed": needed, "ldd_bytes": sum(x["bytes"] or 0 for x in libs),
            "only_through": only, "dlopened": dlopened}


def binary():
    work = b.workdir("strip")
    try:
        stripped = os.path.join(work, "tpm-provision")
        subprocess.run(["strip", "--strip-all", "-o", stripped, b.AGENT], check=True)
        return {"unstripped": elf_sizes(b.AGENT), "stripped": elf_sizes(stripped),
                "libraries": libraries(b.AGENT)}
    finally:
        shutil.rmtree(work, ignore_errors=True)


# -- peak RSS -------------------------------------------------------------------------------

class Rss:
    """Each subcommand RSS_RUNS times under GNU time; the largest and the median %M."""

    def __init__(self, work):
        self.work = work
        self.n = 0
        self.rows = {}
        self.minimal = {}
        self.trust = {}

    def timed(self, name, device, *args, rows=None, env=None):
        self.n += 1
        out = os.path.join(self.work, "time-%d" % self.n)
        res = subprocess.run([TIME, "-f", "%M", "-o", out, b.AGENT, *args],
                             env=dict(device.env(), **(env or {})),
                             capture_output=True, text=True, timeout=600)
        with open(out) as f:
            kib = int(f.read().strip().splitlines()[-1])
        rows = self.rows if rows is None else rows
        row = rows.setdefault(name, {"args": list(args), "kib": [], "exit_codes": []})
        row["kib"].append(kib)
        row["exit_codes"].append(res.returncode)
        return res

    def fresh(self, persist_ek):
        self.n += 1
        d = os.path.join(self.work, "dev-%d" % self.n)
        return b.Device(d, b.TemplateSwtpm(d, persist_ek=persist_ek))

    def run(self):
        for _ in range(RSS_RUNS):
            for persisted, name in ((True, "own (fresh, EK persisted)"),
                                    (False, "own (fresh, EK computed)")):
                dev = self.fresh(persisted)
                self.timed(name, dev, "own")
                self.timed("own (owned)", dev, "own")
                dev.tpm.stop()

        emu = b.Emulator(args=["--polls", "0"])
        emu.start()
        try:
            dev = self.fresh(False)
            dev = b.Device(dev.dir, dev.tpm, emu)
            dev.run("own")
            emu.create_enrollment(dev.ek_public())
            listing = os.path.join(self.work, "ek.csv")
            cs = os.path.join(self.work, "connection-string")
            with open(cs, "w") as f:
                f.write(emu.connection_string())
            os.chmod(cs, 0o600)
            for i in range(RSS_RUNS):
                self.timed("register (end to end)", dev, "register")
                self.timed("register (assigned: fast path)", dev, "register")
                self.timed("sas", dev, "sas")
                self.timed("status", dev, "status")
                self.timed("ek", dev, "ek")
                if os.path.exists(listing):
                    os.unlink(listing)
                self.timed("ek --append", dev, "ek", "--csv", "--serial=SN-%d" % i,
                           "--append=" + listing)
                self.timed("enroll (1 row)", dev, "enroll", "--list=" + listing,
                           "--connection-string-file=" + cs, "--endpoint=" + emu.url,
                           "--ca-bundle=" + emu.ca)
                self.timed("reset --yes", dev, "reset", "--yes")
            # Where the memory is: a registration held at the hub key's EvictControl (both
            # HTTP exchanges done), then the fast path held at its last command.
            self.breakdown = {
                "register (end to end)": rss_breakdown(dev, ["register"],
                                                       cc=b.CC["EvictControl"]),
                "register (assigned: fast path)": rss_breakdown(dev, ["register"], n=3),
            }
            for _ in range(RSS_RUNS):
                self.timed("--help (the libraries loaded, nothing done)", dev, "--help")
            self.trust = trust_stores(dev, emu, self.work)
            self.minimal = self.with_minimal_libcurl(dev, emu, listing, cs)
            dev.tpm.stop()
        finally:
            emu.close()
        for row in list(self.rows.values()) + list(self.minimal.get("rss", {}).values()):
            row["max"] = max(row["kib"])
            row["median"] = b.stats(row["kib"])["median"]
        return self.rows

    def with_minimal_libcurl(self, dev, emu, listing, cs):
        """`register` and `enroll` again with a libcurl built for DPS alone."""
        lib = minimal_libcurl()
        if "skipped" in lib:
            return lib
        env = {"LD_LIBRARY_PATH": lib["dir"]}
        rows = {}
        for _ in range(RSS_RUNS):
            dev.run("reset", "--yes")
            self.timed("register (end to end)", dev, "register", rows=rows, env=env)
            self.timed("enroll (1 row)", dev, "enroll", "--list=" + listing,
                       "--connection-string-file=" + cs, "--endpoint=" + emu.url,
                       "--ca-bundle=" + emu.ca, rows=rows, env=env)
        dev.run("reset", "--yes")
        lib["rss"] = rows
        lib["breakdown"] = rss_breakdown(dev, ["register"], env=env, cc=b.CC["EvictControl"])
        # The loader took this libcurl, not the system's: none of what only the system's
        # libcurl needs is mapped.
        system_only = ({x["file"] for x in ldd(library_path("libcurl.so.4"))} -
                       {x["file"] for x in ldd(lib["libcurl"])} -
                       {x["file"] for x in ldd(b.AGENT)})
        stray = sorted(system_only & set(lib["breakdown"]["maps"]))
        if stray:
            raise RuntimeError("LD_LIBRARY_PATH=%s did not take: %s mapped" % (
                lib["dir"], ", ".join(stray)))
        return lib


SYSTEM_CA_DIR = "/etc/ssl/certs"
SYSTEM_CA_FILE = "/etc/ssl/certs/ca-certificates.crt"


def trust_stores(dev, emu, work):
    """`register` with the system's certificates and the emulator's CA as the trust store,
    once as one bundle file, once as a hashed directory (what a device without CABundle=
    reads), against the emulator's CA alone: {store: {certificates, kib, wall, cpu}}."""
    if not os.path.exists(SYSTEM_CA_FILE):
        return {"skipped": SYSTEM_CA_FILE + " is missing"}
    bundle = os.path.join(work, "system-and-emulator.pem")
    with open(bundle, "w") as out, open(SYSTEM_CA_FILE) as system, open(emu.ca) as ours:
        out.write(system.read() + ours.read())
    hashed = os.path.join(work, "system-and-emulator.d")
    os.mkdir(hashed)
    for name in os.listdir(SYSTEM_CA_DIR):
        if re.fullmatch(r"[0-9a-f]{8}\.[0-9]+", name):
            os.symlink(os.path.realpath(os.path.join(SYSTEM_CA_DIR, name)),
                       os.path.join(hashed, name))
    h = subprocess.run(["openssl", "x509", "-hash", "-noout", "-in", emu.ca], check=True,
                       capture_output=True, text=True).stdout.strip()
    n = 0
    while os.path.exists(os.path.join(hashed, "%s.%d" % (h, n))):
        n += 1
    shutil.copy(emu.ca, os.path.join(hashed, "%s.%d" % (h, n)))
    with open(bundle) as f:
        count = f.read().count("BEGIN CERTIFICATE")
    stores = [("the emulator's CA alone, a file", emu.ca, 1),
              ("the system's certificates and the emulator's, one file", bundle, count),
              ("the system's certificates and the emulator's, a hashed directory (as "
               "CABundle=/etc/ssl/certs reads them)", hashed,
               len(os.listdir(hashed)))]
    with open(dev.config) as f:
        config = f.read()
    out = {}
    try:
        for name, store, certs in stores:
            with open(dev.config, "w") as f:
                f.write(config.replace("CABundle=" + emu.ca, "CABundle=" + store))
            row = out[name] = {"certificates": certs, "kib": [], "wall": [], "cpu": [],
                               "exit_codes": []}
            for i in range(TRUST_RUNS):
                dev.run("reset", "--yes")
                t = os.path.join(work, "trust-time")
                # GNU time for the peak RSS; the kernel's accounting of GNU time, which holds
                # the agent's, for the CPU at microseconds.
                res = b.run_measured([TIME, "-f", "%M", "-o", t, b.AGENT, "register"],
                                     dev.env())
                with open(t) as f:
                    row["kib"].append(int(f.read().strip().splitlines()[-1]))
                row["wall"].append(res["wall"])
                row["cpu"].append(res["cpu"])
                row["exit_codes"].append(res["rc"])
            row["max"] = max(row["kib"])
            row["median_cpu"] = b.stats(row["cpu"])["median"]
            row["median_wall"] = b.stats(row["wall"])["median"]
    finally:
        with open(dev.config, "w") as f:
            f.write(config)
        dev.run("reset", "--yes")
    return out


def minimal_libcurl():
    """{dir, libcurl, needs} of the libcurl bench/minimal-libcurl.sh builds (once, kept in
    build/bench/libcurl-minimal), or BENCH_LIBCURL_DIR's; {skipped: why} when it cannot be
    had."""
    where = os.environ.get("BENCH_LIBCURL_DIR")
    if not where:
        where = os.path.join(b.OUT_DIR, "libcurl-minimal")
        if not os.path.exists(os.path.join(where, "lib", "libcurl.so.4")):
            res = subprocess.run([os.path.join(b.ROOT, "bench", "minimal-libcurl.sh"), where],
                                 capture_output=True, text=True, timeout=1800)
            if res.returncode != 0:
                return {"skipped": "bench/minimal-libcurl.sh failed: " +
                        (res.stderr.strip().splitlines() or ["no output"])[-1]}
    so = os.path.join(where, "lib", "libcurl.so.4")
    if not os.path.exists(so):
        return {"skipped": "%s is missing" % so}
    return {"dir": os.path.dirname(so), "libcurl": os.path.realpath(so),
            "needs": [x["name"] for x in ldd(so)]}


def smaps_by_mapping(pid):
    """Resident KiB per mapping of a live process (shared libraries and the binary by file
    name, [heap], [stack], anonymous memory), and the KiB of those pages that no other process
    maps (Private_Clean + Private_Dirty: what this process alone costs the machine)."""
    out, private, name = {}, 0, None
    with open("/proc/%d/smaps" % pid) as f:
        for line in f:
            head = line.split()
            if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                path = head[5] if len(head) > 5 else "[anonymous]"
                name = os.path.basename(path) if path.startswith("/") else path
            elif head and head[0] == "Rss:":
                out[name] = out.get(name, 0) + int(head[1])
            elif head and head[0] in ("Private_Clean:", "Private_Dirty:"):
                private += int(head[1])
    return out, private


def rss_breakdown(device, args, env=None, **pause_at):
    """The agent held at a TPM command (tests/lib/tpmproxy.py's pause) while its smaps are
    read; then let go. Returns the KiB per mapping."""
    with b.TpmProxy(device.tpm, os.path.join(device.dir, "rss-proxy.sock")) as p:
        pause = p.pause("before", **pause_at)
        proc = subprocess.Popen([b.AGENT, *args], env=dict(device.env(p.tcti), **(env or {})),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            if not pause.wait(120):
                raise RuntimeError("the agent never reached %r" % (pause_at,))
            maps, private = smaps_by_mapping(proc.pid)
        finally:
            pause.release()
            proc.wait()
    libs = {k: v for k, v in maps.items() if ".so" in k}
    return {"at": {k: (b.cc_name(v) if k == "cc" else v) for k, v in pause_at.items()},
            "total_kib": sum(maps.values()), "private_kib": private,
            "libraries_kib": sum(libs.values()),
            "binary_kib": maps.get(os.path.basename(b.AGENT), 0),
            "heap_kib": maps.get("[heap]", 0),
            "other_kib": sum(v for k, v in maps.items() if k not in libs and
                             k not in ("[heap]", os.path.basename(b.AGENT))),
            "maps": dict(sorted(maps.items(), key=lambda kv: -kv[1])),
            "exit_code": proc.returncode}


# -- initrds --------------------------------------------------------------------------------

def lsinitrd_files(text):
    """{path: size} from lsinitrd's ls -l lines."""
    files = {}
    for line in text.splitlines():
        parts = line.split(None, 8)
        if len(parts) == 9 and re.match(r"[-dlcbps][rwxsStT-]{9}", parts[0]):
            path = parts[8].split(" -> ")[0]
            files[path] = int(parts[4]) if parts[0][0] == "-" else 0
    return files


def lsinitramfs_files(chroot, image):
    out = chroot.run("lsinitramfs", "-l", image, capture_output=True, text=True).stdout
    return lsinitrd_files(out)


def cached_base():
    cache = os.environ.get("BOOT_CACHE") or bootimage.cache_dir()
    bases = [d for d in glob.glob(os.path.join(cache, "base-*"))
             if os.path.exists(os.path.join(d, "complete"))]
    if not bases:
        return None
    return max(bases, key=os.path.getmtime)


class Chroot:
    """proc, sys and dev mounted in a root while commands run in it."""

    def __init__(self, root):
        self.root = root
        self.mounts = []

    def __enter__(self):
        try:
            for src, dst, args in (("proc", "proc", ["-t", "proc"]),
                                   ("sysfs", "sys", ["-t", "sysfs"]),
                                   ("/dev", "dev", ["--bind"])):
                path = os.path.join(self.root, dst)
                subprocess.run(["mount", *args, src, path], check=True)
                self.mounts.append(path)
        except BaseException:
            self.__exit__()
            raise
        return self

    def run(self, *cmd, **kw):
        kw.setdefault("check", True)
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root",
               "DEBIAN_FRONTEND": "noninteractive"}
        return subprocess.run(["chroot", self.root, *cmd], env=env, **kw)

    def installed(self, package):
        res = self.run("dpkg-query", "-W", "-f=${Status}", package, check=False,
                       capture_output=True, text=True)
        return "install ok installed" in res.stdout

    def __exit__(self, *exc):
        for path in reversed(self.mounts):
            subprocess.run(["umount", "-l", path])
        self.mounts = []


def runtime_packages():
    """The Debian packages of the libraries the binary names, plus what is dlopen()ed (the
    TCTI by the TCTI loader, libcurl by the agent) and what builds the initrds."""
    pkgs = {"libtss2-tcti-device0", "libcurl4", "dracut-core", "initramfs-tools-core",
            "busybox", "cpio", "ca-certificates"}
    needed = libraries(b.AGENT)["needed"]
    for lib in ldd(b.AGENT):
        if lib["path"] and lib["name"] in needed:
            res = subprocess.run(["dpkg-query", "-S", lib["path"]], capture_output=True,
                                 text=True)
            if res.returncode != 0:     # merged /usr: dpkg knows the /lib path
                res = subprocess.run(["dpkg-query", "-S", lib["path"].replace("/usr/lib/",
                                                                              "/lib/", 1)],
                                     capture_output=True, text=True)
            if res.returncode == 0:
                pkgs.add(res.stdout.split(":")[0].strip())
    return sorted(pkgs)


def initrds():
    base = cached_base()
    if base is None:
        return {"skipped": "no cached Debian 12 root under /var/cache/tpm-provision-boot; "
                           "run `make check-boot` once"}
    work = b.workdir("initrd")
    root = os.path.join(work, "root")
    try:
        subprocess.run(["cp", "-a", "--reflink=auto", os.path.join(base, "root"), root],
                       check=True)
        packages = runtime_packages()
        with Chroot(root) as c:
            missing = [p for p in packages if not c.installed(p)]
            if missing:
                # From the Debian mirror the cached root's apt lists name.
                args = ["apt-get", "-q", "-y", "-o", "APT::Sandbox::User=root",
                        "--no-install-recommends", "install", *missing]
                quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
                if c.run(*args, check=False, **quiet).returncode != 0:
                    c.run("apt-get", "-q", "update", **quiet)
                    c.run(*args, stdout=subprocess.DEVNULL)
        # The boot files from the tree, the binary under test beside them (`make install`
        # would rebuild build/tpm-provision from whatever the tree holds now), stripped as a
        # Debian package installs it.
        subprocess.run(["make", "-s", "-C", b.ROOT, "install-boot", "DESTDIR=" + root],
                       check=True, stdout=subprocess.DEVNULL)
        binary = os.path.join(root, "usr", "sbin", "tpm-provision")
        os.makedirs(os.path.dirname(binary), exist_ok=True)
        subprocess.run(["strip", "--strip-all", "-o", binary, b.AGENT], check=True)
        os.chmod(binary, 0o755)
        etc = os.path.join(root, "etc", "tpm-provision")
        os.makedirs(etc, exist_ok=True)
        # An image builder's minimal configuration; no CABundle=, so the module takes the
        # system's CA bundle along.
        with open(os.path.join(etc, "tpm-provision.conf"), "w") as f:
            f.write("[Provisioning]\nIdScope=0ne00000001\n")
        kver = sorted(os.listdir(os.path.join(root, "usr", "lib", "modules")))[-1]
        # dracut refuses a module that -m asks for and --omit removes: without it, the same
        # list less tpm-provision (and --omit, so no other path brings it in).
        with_modules = bootimage.DRACUT_MODULES
        without_modules = " ".join(m for m in with_modules.split() if m != "tpm-provision")
        opts = ["--no-hostonly", "--force", "--kver", kver,
                "--drivers", bootimage.DRACUT_DRIVERS]
        out = {"base": os.path.basename(base), "kernel": kver,
               "dracut_options": " ".join(opts), "dracut_modules": with_modules,
               "installed_into_root": missing}
        irt = "/usr/share/initramfs-tools"
        irt_files = [irt + "/hooks/tpm-provision", irt + "/scripts/init-premount/tpm-provision"]
        with Chroot(root) as c:
            images = {}
            for name, extra in (("with", ["-m", with_modules]),
                                ("without", ["-m", without_modules, "--omit", "tpm-provision"])):
                img = "/boot/initrd-%s.img" % name
                c.run("dracut", *opts, *extra, img, stdout=subprocess.DEVNULL,
                      stderr=subprocess.DEVNULL)
                listing = c.run("lsinitrd", img, capture_output=True, text=True).stdout
                images[name] = (os.path.getsize(root + img), lsinitrd_files(listing))
            out["dracut"] = compare(images)

            images = {}
            c.run("mkinitramfs", "-o", "/boot/irt-with.img", kver, stdout=subprocess.DEVNULL)
            images["with"] = (os.path.getsize(root + "/boot/irt-with.img"),
                              lsinitramfs_files(c, "/boot/irt-with.img"))
            # Out of their directories: mkinitramfs runs every hook whose name is made of
            # letters, digits, '_', '.' and '-', so a renamed one would still run.
            for i, p in enumerate(irt_files):
                os.rename(root + p, os.path.join(root, "root", "irt-off-%d" % i))
            c.run("mkinitramfs", "-o", "/boot/irt-without.img", kver, stdout=subprocess.DEVNULL)
            images["without"] = (os.path.getsize(root + "/boot/irt-without.img"),
                                 lsinitramfs_files(c, "/boot/irt-without.img"))
            out["initramfs_tools"] = compare(images)
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def compare(images):
    (with_size, with_files), (without_size, without_files) = images["with"], images["without"]
    added = {p: s for p, s in with_files.items() if p not in without_files}
    biggest = sorted(added.items(), key=lambda kv: -kv[1])[:12]
    return {"compressed_with": with_size, "compressed_without": without_size,
            "compressed_added": with_size - without_size,
            "uncompressed_with": sum(with_files.values()),
            "uncompressed_without": sum(without_files.values()),
            "files_added": len(added), "bytes_added": sum(added.values()),
            "largest_added": biggest}


def main():
    if not os.path.exists(TIME):
        sys.exit("footprint: %s is missing: apt-get install time" % TIME)
    work = b.workdir("footprint")
    try:
        rss = Rss(work)
        out = {"binary": binary(), "rss": rss.run(), "rss_breakdown": rss.breakdown,
               "minimal_libcurl": rss.minimal, "trust_stores": rss.trust,
               "machine": b.machine()}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out["initrd"] = initrds()
    print(b.save("footprint", out))


if __name__ == "__main__":
    main()
