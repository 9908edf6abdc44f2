"""A TPM command proxy for tests: sits between a TPM client and a `Swtpm` instance.

The client (the agent, or tpm2-tools) connects with the TCTI string `proxy.tcti`
(`swtpm:path=<proxy socket>`); the proxy forwards every TPM 2.0 command to the swtpm's data
socket, logs it, and can answer, hold or drop it instead: inject a response code, pause, or cut
the TPM's power.

How the tpm2-tss `swtpm` TCTI (libtss2-tcti-swtpm 3.2.1) talks, as seen with strace:
  - at initialisation it connects to the data socket and closes it again without sending
    anything (a probe), then connects to `<path>.ctrl` and sends CMD_SET_LOCALITY
    (00 00 00 05 00, answer 00 00 00 00);
  - every TPM command gets a connection of its own on the data socket: connect, write the
    command (TPM header: u16 tag, u32 size, u32 command code, big-endian), read the response
    (header: u16 tag, u32 size, u32 response code), close.
The proxy handles a client that keeps one connection for many commands as well: each client
data connection gets one upstream connection, opened on the first forwarded command and kept
until the client closes. The control channel is forwarded byte for byte (one upstream control
connection per client control connection); the u32 command code at the start of each write
is logged best-effort in `ctrl_commands`.

It runs in background threads inside the test process (the client is a subprocess, so the GIL
does not slow it down), which lets a test read the log and arm faults directly:

    with TpmProxy(swtpm, os.path.join(workdir, "proxy.sock")) as proxy:
        proxy.inject(TPM_RC_RETRY, CC["CreatePrimary"], nth=1)
        run_agent("--tcti=" + proxy.tcti, "own")
        assert proxy.ccs()[:2] == [CC[...], ...]

Faults (all counted from the moment they are armed; `clear_faults()` removes them all):
  inject(rc, cc, nth=1)                 the nth occurrence of cc (int, iterable of ints or ALL)
  inject_all(rc, except_cc=())          every command, forever
  inject_for(rc, seconds, except_cc=()) every command for `seconds` from the first command seen
  inject_until(rc, until_cc=Startup, reply=0)
                                        every command until until_cc arrives; that one is
                                        answered with `reply` (or forwarded when reply is None)
  Injected answers are 10-byte responses (tag 0x8001, size 10, rc); the swtpm never sees the
  command.
  cut_after(n=None, cc=None, nth=1) / cut_before(...)
                                        power cut at the nth command (or the nth occurrence of
                                        cc): after swtpm answered it (the answer is not
                                        delivered) or before it is sent. The swtpm is SIGKILLed
                                        (`swtpm.stop(clean=False)`), then the client's
                                        connection closed; `cut_event` is set and `cuts` holds
                                        the log entry. Commands that arrive while the TPM is
                                        down are logged as no-tpm and their connection closed.
                                        The test restarts it with `swtpm.start()`; later
                                        commands go to the new instance. One-shot.
  pause(when, n=None, cc=None, nth=1)   hold the nth command (or the nth occurrence of cc)
                                        "before" forwarding it or "after" swtpm answered it;
                                        returns a Pause with `.reached` (an Event) and
                                        `.release()`. When the client has gone by the time it is
                                        released, a held command is dropped (never forwarded)
                                        and a held answer discarded.
  wait_idle(timeout)                    until no client connection is open (the swtpm serves
                                        one connection at a time, so tpm2-tools wait for that)

The log: `commands` ([(cc, rc)], rc None when the client got no answer), `log` (Entry: n, cc,
rc, action, conn, t, command bytes), `ccs()`, `count(cc)`, `format_log()`, `reset_log()`.
`cc_name()`/`CC` name command codes, `MUTATING_CC` lists the ones that change what a TPM keeps.
"""
import os
import select
import socket
import struct
import threading
import time
from collections import namedtuple

# TPM 2.0 Part 2, 6.5.2. Only the ones tests name; cc_name() prints others as hex.
CC = {
    "NV_UndefineSpaceSpecial": 0x11f,
    "EvictControl": 0x120,
    "HierarchyControl": 0x121,
    "NV_UndefineSpace": 0x122,
    "ChangeEPS": 0x124,
    "ChangePPS": 0x125,
    "Clear": 0x126,
    "ClearControl": 0x127,
    "HierarchyChangeAuth": 0x129,
    "NV_DefineSpace": 0x12a,
    "PCR_Allocate": 0x12b,
    "SetPrimaryPolicy": 0x12e,
    "CreatePrimary": 0x131,
    "NV_GlobalWriteLock": 0x132,
    "NV_Increment": 0x134,
    "NV_SetBits": 0x135,
    "NV_Extend": 0x136,
    "NV_Write": 0x137,
    "NV_WriteLock": 0x138,
    "DictionaryAttackLockReset": 0x139,
    "DictionaryAttackParameters": 0x13a,
    "NV_ChangeAuth": 0x13b,
    "PCR_Event": 0x13c,
    "PCR_Reset": 0x13d,
    "SelfTest": 0x143,
    "Startup": 0x144,
    "Shutdown": 0x145,
    "StirRandom": 0x146,
    "ActivateCredential": 0x147,
    "Certify": 0x148,
    "PolicyNV": 0x149,
    "Import": 0x156,
    "Load": 0x157,
    "Quote": 0x158,
    "Create": 0x153,
    "HMAC": 0x155,
    "Sign": 0x15d,
    "Unseal": 0x15e,
    "PolicySecret": 0x151,
    "ContextLoad": 0x161,
    "ContextSave": 0x162,
    "FlushContext": 0x165,
    "LoadExternal": 0x167,
    "NV_ReadPublic": 0x169,
    "NV_Read": 0x14e,
    "PolicyCommandCode": 0x16c,
    "PolicyGetDigest": 0x189,
    "ReadPublic": 0x173,
    "StartAuthSession": 0x176,
    "GetCapability": 0x17a,
    "GetRandom": 0x17b,
    "GetTestResult": 0x17c,
    "PCR_Read": 0x17e,
    "PolicyRestart": 0x180,
    "ReadClock": 0x181,
    "PCR_Extend": 0x182,
    "TestParms": 0x18a,
    "CreateLoaded": 0x191,
}
CC_NAMES = {v: k for k, v in CC.items()}

# Commands that change what a TPM keeps across a reset (objects, NV, hierarchy auth).
MUTATING_CC = frozenset(CC[n] for n in (
    "CreatePrimary", "EvictControl", "NV_DefineSpace", "NV_UndefineSpace",
    "NV_UndefineSpaceSpecial", "NV_Write", "NV_Increment", "NV_SetBits", "NV_Extend",
    "NV_WriteLock", "NV_GlobalWriteLock", "NV_ChangeAuth", "HierarchyChangeAuth",
    "HierarchyControl", "Clear", "ClearControl", "ChangeEPS", "ChangePPS", "SetPrimaryPolicy",
    "DictionaryAttackLockReset", "DictionaryAttackParameters", "PCR_Allocate"))

TPM_RC_SUCCESS = 0x000
TPM_RC_INITIALIZE = 0x100
TPM_RC_FAILURE = 0x101
TPM_RC_UPGRADE = 0x12d
TPM_RC_TESTING = 0x90a
TPM_RC_YIELDED = 0x908
TPM_RC_NV_RATE = 0x920
TPM_RC_RETRY = 0x922
TPM_RC_NV_UNAVAILABLE = 0x923
RC_NAMES = {0x000: "SUCCESS", 0x100: "INITIALIZE", 0x101: "FAILURE", 0x12d: "UPGRADE",
            0x18b: "HANDLE(1)", 0x901: "CONTEXT_GAP", 0x902: "OBJECT_MEMORY",
            0x908: "YIELDED", 0x90a: "TESTING", 0x920: "NV_RATE", 0x922: "RETRY",
            0x923: "NV_UNAVAILABLE", 0x9a2: "BAD_AUTH(1)", 0x14a: "NV_UNINITIALIZED"}

TPM_ST_NO_SESSIONS = 0x8001
HEADER = struct.Struct(">HII")
MAX_FRAME = 1 << 16
ALL = "all"


def cc_name(cc):
    return CC_NAMES.get(cc, "0x%03x" % cc)


def rc_name(rc):
    if rc is None:
        return "-"
    return "0x%03x" % rc + ("(%s)" % RC_NAMES[rc] if rc in RC_NAMES else "")


def response(rc):
    """The 10-byte answer a TPM gives to a command it does not execute."""
    return HEADER.pack(TPM_ST_NO_SESSIONS, HEADER.size, rc)


class Entry(namedtuple("Entry", "n cc rc action conn t command")):
    """One command the proxy received. n: 1-based order; rc: the code the client was sent
    (None when it got no answer); action: forwarded, injected, cut-before, cut-after,
    dropped (client gone during a pause), no-tpm (swtpm unreachable); conn: connection number;
    t: time.monotonic() when it arrived; command: its bytes."""

    def __str__(self):
        return "#%d %s -> %s [%s]" % (self.n, cc_name(self.cc), rc_name(self.rc), self.action)


class _Rule:
    """An injection. decide() is called, under the proxy lock, for every command in order."""

    def __init__(self, rc, cc=None, nth=ALL, except_cc=(), seconds=None, until_cc=None,
                 reply=None):
        self.rc = rc
        self.cc = cc
        self.nth = nth if nth == ALL or not isinstance(nth, int) else (nth,)
        if self.nth != ALL:
            self.nth = frozenset(self.nth)
        self.except_cc = frozenset(except_cc)
        self.seconds = seconds
        self.until_cc = until_cc
        self.reply = reply
        self.seen = 0          # occurrences of cc since armed (cc rules)
        self.start = None      # first command seen (window rules)
        self.done = False      # until rules: the awaited command arrived
        self.fired = 0         # how many answers this rule gave

    def decide(self, cc, now):
        """Returns (True, rc) to answer with rc, (True, None) to forward explicitly,
        or (False, None) when the rule does not apply."""
        if self.until_cc is not None:
            if self.done:
                return False, None
            if cc == self.until_cc:
                self.done = True
                if self.reply is None:
                    return True, None
                self.fired += 1
                return True, self.reply
            self.fired += 1
            return True, self.rc
        if cc in self.except_cc:
            return False, None
        if self.seconds is not None:
            if self.start is None:
                self.start = now
            if now - self.start >= self.seconds:
                return False, None
            self.fired += 1
            return True, self.rc
        if self.cc is not None:
            if cc != self.cc:
                return False, None
            self.seen += 1
            if self.nth != ALL and self.seen not in self.nth:
                return False, None
        self.fired += 1
        return True, self.rc


class Pause:
    """A command held by the proxy until release()."""

    def __init__(self, when, n=None, cc=None, nth=1):
        assert when in ("before", "after")
        assert (n is None) != (cc is None), "give n or cc"
        self.when, self.n, self.cc, self.nth = when, n, cc, nth
        self.reached = threading.Event()
        self._released = threading.Event()
        self.entry_n = None    # the log number of the held command
        self.client_gone = None

    def release(self):
        self._released.set()

    def wait(self, timeout=None):
        return self.reached.wait(timeout)


class _Trigger:
    def __init__(self, kind, when, n=None, cc=None, nth=1, pause=None):
        self.kind, self.when, self.n, self.cc, self.nth = kind, when, n, cc, nth
        self.pause = pause
        self.count = 0   # commands (or occurrences of cc) seen since armed

    def matches(self, cc):
        if self.cc is None:
            self.count += 1
            return self.count == self.n
        if cc == self.cc:
            self.count += 1
            return self.count == self.nth
        return False


class TpmProxy:
    def __init__(self, swtpm, path):
        """swtpm: a tests/lib/swtpm.Swtpm (or anything with .sock and .stop(clean=False)).
        path: where the proxy's data socket goes; the control socket is path + '.ctrl'."""
        self.swtpm = swtpm
        self.path = path
        self.tcti = "swtpm:path=" + path
        self.log = []
        self.ctrl_commands = []
        self.cuts = []            # Entry of each power cut
        self.cut_event = threading.Event()
        self._lock = threading.Lock()
        self._rules = []
        self._triggers = []
        self._n = 0
        self._conn_n = 0
        self._stop = False
        self._clients = set()
        self._threads = []
        self._listeners = []
        self._wake_r, self._wake_w = os.pipe()
        self._accept_thread = None

    # --- life cycle ----------------------------------------------------------------------

    def start(self):
        for p in (self.path, self.path + ".ctrl"):
            if os.path.exists(p):
                os.unlink(p)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind(p)
            s.listen(16)
            self._listeners.append(s)
        self._accept_thread = threading.Thread(target=self._accept_loop, daemon=True,
                                               name="tpmproxy-accept")
        self._accept_thread.start()
        return self

    def close(self):
        self._stop = True
        for p in self._pauses():
            p.release()
        os.write(self._wake_w, b"x")
        if self._accept_thread:
            self._accept_thread.join(5)
        with self._lock:
            clients = list(self._clients)
        for c in clients:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in list(self._threads):
            t.join(5)
        for s in self._listeners:
            s.close()
        self._listeners = []
        for p in (self.path, self.path + ".ctrl"):
            if os.path.exists(p):
                os.unlink(p)
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    # --- the log -------------------------------------------------------------------------

    @property
    def commands(self):
        """[(cc, rc)] in order; rc is None for a command the client got no answer to."""
        with self._lock:
            return [(e.cc, e.rc) for e in self.log]

    def ccs(self):
        with self._lock:
            return [e.cc for e in self.log]

    def count(self, cc):
        return sum(1 for c in self.ccs() if c == cc)

    def reset_log(self):
        with self._lock:
            self.log = []
            self.ctrl_commands = []
            self._n = 0

    def format_log(self):
        with self._lock:
            return "\n".join(str(e) for e in self.log)

    # --- faults --------------------------------------------------------------------------

    def _add_rule(self, rule):
        with self._lock:
            self._rules.append(rule)
        return rule

    def inject(self, rc, cc, nth=1):
        """Answer rc to the nth occurrence of cc (nth: int, iterable of ints, or ALL)."""
        return self._add_rule(_Rule(rc, cc=cc, nth=nth))

    def inject_all(self, rc, except_cc=()):
        return self._add_rule(_Rule(rc, except_cc=except_cc))

    def failure_mode(self, test_result=0x101):
        """A TPM in failure mode (TPM 2.0 Part 1, 12.4): FAILURE to every command but
        GetCapability and GetTestResult, and GetTestResult answering with `test_result`. A
        simulation that let GetTestResult reach the healthy swtpm would contradict itself."""
        body = struct.pack(">H", 4) + b"\xde\xad\xbe\xef" + struct.pack(">I", test_result)
        answer = struct.pack(">HII", 0x8001, 10 + len(body), TPM_RC_SUCCESS) + body
        self._add_rule(_Rule(answer, cc=CC["GetTestResult"]))
        return self.inject_all(0x101, except_cc=(CC["GetCapability"], CC["GetTestResult"]))

    def inject_for(self, rc, seconds, except_cc=()):
        """Answer rc to every command for `seconds`, counted from the first command seen."""
        return self._add_rule(_Rule(rc, except_cc=except_cc, seconds=seconds))

    def inject_until(self, rc, until_cc=CC["Startup"], reply=TPM_RC_SUCCESS):
        """Answer rc to every command until until_cc arrives. That command is answered with
        `reply` by the proxy, or forwarded when reply is None. (A Swtpm started with
        startup-clear would answer a second Startup with 0x100; replying SUCCESS is what a
        TPM that was really waiting for Startup does.)"""
        return self._add_rule(_Rule(rc, until_cc=until_cc, reply=reply))

    def cut_after(self, n=None, cc=None, nth=1):
        """Power cut once the nth command counted from now (or the nth occurrence of cc) has
        been executed by swtpm; its answer is not delivered."""
        assert (n is None) != (cc is None), "give n or cc"
        with self._lock:
            self._triggers.append(_Trigger("cut", "after", n=n, cc=cc, nth=nth))

    def cut_before(self, n=None, cc=None, nth=1):
        """Power cut when the nth command counted from now (or the nth occurrence of cc)
        arrives, before it is forwarded."""
        assert (n is None) != (cc is None), "give n or cc"
        with self._lock:
            self._triggers.append(_Trigger("cut", "before", n=n, cc=cc, nth=nth))

    def wait_idle(self, timeout=10):
        """Waits until no client connection is open (so the swtpm is free for tpm2-tools)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._clients:
                    return True
            time.sleep(0.005)
        return False

    def pause(self, when, n=None, cc=None, nth=1):
        p = Pause(when, n=n, cc=cc, nth=nth)
        with self._lock:
            self._triggers.append(_Trigger("pause", when, n=n, cc=cc, nth=nth, pause=p))
        return p

    def clear_faults(self):
        with self._lock:
            pauses = [t.pause for t in self._triggers if t.pause]
            self._rules = []
            self._triggers = []
        for p in pauses:
            p.release()

    def _pauses(self):
        with self._lock:
            return [t.pause for t in self._triggers if t.pause]

    # --- serving -------------------------------------------------------------------------

    def _accept_loop(self):
        data_l, ctrl_l = self._listeners
        while not self._stop:
            try:
                ready, _, _ = select.select([data_l, ctrl_l, self._wake_r], [], [])
            except (OSError, ValueError):
                return
            if self._stop:
                return
            for s in ready:
                if s is self._wake_r:
                    continue
                try:
                    client, _ = s.accept()
                except OSError:
                    continue
                with self._lock:
                    self._clients.add(client)
                    self._conn_n += 1
                    conn_n = self._conn_n
                target = self._serve_data if s is data_l else self._serve_ctrl
                t = threading.Thread(target=target, args=(client, conn_n), daemon=True,
                                     name="tpmproxy-conn%d" % conn_n)
                self._threads = [x for x in self._threads if x.is_alive()]
                self._threads.append(t)
                t.start()

    def _forget(self, client):
        with self._lock:
            self._clients.discard(client)
        try:
            client.close()
        except OSError:
            pass

    @staticmethod
    def _recv_exact(sock, n):
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return buf

    @classmethod
    def _recv_frame(cls, sock):
        """One TPM command or response; None on EOF (or a broken frame)."""
        try:
            head = cls._recv_exact(sock, HEADER.size)
            if head is None:
                return None
            _, size, _ = HEADER.unpack(head)
            if size < HEADER.size or size > MAX_FRAME:
                return None
            body = cls._recv_exact(sock, size - HEADER.size) if size > HEADER.size else b""
            if body is None:
                return None
            return head + body
        except OSError:
            return None

    @staticmethod
    def _peer_gone(sock):
        """True when the client closed its end (or died)."""
        try:
            r, _, _ = select.select([sock], [], [], 0)
            if not r:
                return False
            return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except (OSError, BlockingIOError):
            return True

    def _log(self, n, cc, rc, action, conn, t, command):
        e = Entry(n, cc, rc, action, conn, t, command)
        with self._lock:
            self.log.append(e)
        return e

    def _power_cut(self, entry):
        self.swtpm.stop(clean=False)
        with self._lock:
            self.cuts.append(entry)
        self.cut_event.set()

    def _decide(self, cc, now):
        """Under the lock: (n, trigger or None, inject_rc or None)."""
        with self._lock:
            self._n += 1
            n = self._n
            trigger = None
            for t in self._triggers:
                if t.matches(cc) and trigger is None:
                    trigger = t
            if trigger:
                self._triggers.remove(trigger)
            inject = None
            if not (trigger and trigger.kind == "cut" and trigger.when == "before"):
                for rule in self._rules:
                    applies, rc = rule.decide(cc, now)
                    if applies:
                        inject = rc
                        break
            return n, trigger, inject

    def _hold(self, trigger, n, client):
        p = trigger.pause
        p.entry_n = n
        p.reached.set()
        p._released.wait()
        p.client_gone = self._peer_gone(client)
        return p.client_gone

    def _serve_data(self, client, conn):
        upstream = None
        try:
            while not self._stop:
                cmd = self._recv_frame(client)
                if cmd is None:
                    return
                now = time.monotonic()
                cc = HEADER.unpack_from(cmd)[2]
                n, trigger, inject = self._decide(cc, now)

                if trigger and trigger.when == "before":
                    if trigger.kind == "cut":
                        self._power_cut(self._log(n, cc, None, "cut-before", conn, now, cmd))
                        return
                    if self._hold(trigger, n, client):
                        self._log(n, cc, None, "dropped", conn, now, cmd)
                        return

                if inject is not None:
                    # An rc, or a whole answer (bytes) for commands whose output matters.
                    answer = inject if isinstance(inject, bytes) else response(inject)
                    self._log(n, cc, HEADER.unpack_from(answer)[2], "injected", conn, now, cmd)
                    client.sendall(answer)
                    continue

                if upstream is None:
                    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    try:
                        upstream.connect(self.swtpm.sock)
                    except OSError:
                        self._log(n, cc, None, "no-tpm", conn, now, cmd)
                        return
                try:
                    upstream.sendall(cmd)
                except OSError:
                    self._log(n, cc, None, "no-tpm", conn, now, cmd)
                    return
                resp = self._recv_frame(upstream)
                if resp is None:
                    self._log(n, cc, None, "no-tpm", conn, now, cmd)
                    return
                rc = HEADER.unpack_from(resp)[2]

                if trigger and trigger.when == "after":
                    if trigger.kind == "cut":
                        self._power_cut(self._log(n, cc, None, "cut-after", conn, now, cmd))
                        return
                    if self._hold(trigger, n, client):
                        self._log(n, cc, None, "dropped", conn, now, cmd)
                        return
                self._log(n, cc, rc, "forwarded", conn, now, cmd)
                client.sendall(resp)
        except OSError:
            return
        finally:
            if upstream is not None:
                upstream.close()
            self._forget(client)

    def _serve_ctrl(self, client, conn):
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            upstream.connect(self.swtpm.sock + ".ctrl")
        except OSError:
            upstream.close()
            self._forget(client)
            return
        try:
            while not self._stop:
                r, _, _ = select.select([client, upstream], [], [])
                if client in r:
                    data = client.recv(65536)
                    if not data:
                        return
                    if len(data) >= 4:
                        with self._lock:
                            self.ctrl_commands.append(struct.unpack_from(">I", data)[0])
                    upstream.sendall(data)
                if upstream in r:
                    data = upstream.recv(65536)
                    if not data:
                        return
                    client.sendall(data)
        except OSError:
            return
        finally:
            upstream.close()
            self._forget(client)
