"""A small HTTP CONNECT proxy on 127.0.0.1 for tests of field case B31.

    proxy = ConnectProxy(user="PROXY_USER", password="PROXY_PASS").start()
    url = proxy.url(with_credentials=True)  # http://PROXY_USER:PROXY_PASS@127.0.0.1:<port>
    ...
    proxy.requests   # [{"method", "target", "credentials", "status"}, ...]
    proxy.close()

Modes:
  "tunnel"  CONNECT host:port opens a TCP connection to the target and relays bytes both ways
            (after a Basic credentials check when `user` is given: 407 if they are missing or
            wrong);
  "502"     answers every CONNECT with a plain HTTP 502, as a misconfigured proxy does;
  "407"     answers every CONNECT with 407 Proxy Authentication Required.

Only loopback targets are tunnelled (127.0.0.1, localhost, ::1); anything else gets 403, so a
test can never reach another address through it.  Threaded: one thread per client connection
plus one per relay direction.
"""
import base64
import socket
import threading

LOOPBACK = ("127.0.0.1", "localhost", "::1")
HEAD_MAX = 64 * 1024

_REASONS = {200: "Connection established", 400: "Bad Request", 403: "Forbidden",
            405: "Method Not Allowed", 407: "Proxy Authentication Required",
            502: "Bad Gateway"}


class ConnectProxy:
    def __init__(self, mode="tunnel", user=None, password=None):
        if mode not in ("tunnel", "502", "407"):
            raise ValueError("unknown mode %r" % mode)
        self.mode = mode
        self.user, self.password = user, password
        self.requests = []
        self._lock = threading.Lock()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self._closing = False
        self._sockets = set()
        self._threads = []

    # -- public -------------------------------------------------------------------------

    def url(self, with_credentials=True, user=None, password=None):
        user = self.user if user is None else user
        password = self.password if password is None else password
        cred = "%s:%s@" % (user, password) if with_credentials and user is not None else ""
        return "http://%s127.0.0.1:%d" % (cred, self.port)

    def start(self):
        t = threading.Thread(target=self._accept_loop, name="connect-proxy", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def connects(self):
        """The CONNECT requests seen so far."""
        with self._lock:
            return [r for r in self.requests if r["method"] == "CONNECT"]

    def close(self):
        self._closing = True
        try:
            self._listener.close()
        except OSError:
            pass
        with self._lock:
            socks = list(self._sockets)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass
        for t in self._threads:
            t.join(5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    # -- internals ----------------------------------------------------------------------

    def _track(self, s):
        with self._lock:
            self._sockets.add(s)

    def _untrack(self, s):
        with self._lock:
            self._sockets.discard(s)
        try:
            s.close()
        except OSError:
            pass

    def _accept_loop(self):
        while not self._closing:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self._track(conn)
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            t.start()
            with self._lock:
                self._threads.append(t)

    @staticmethod
    def _read_head(conn):
        data = b""
        conn.settimeout(10)
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                return None, b""
            data += chunk
            if len(data) > HEAD_MAX:
                return None, b""
        head, _, rest = data.partition(b"\r\n\r\n")
        return head.decode("latin-1"), rest

    def _answer(self, conn, status, extra=""):
        body = "" if status == 200 else "%d %s\n" % (status, _REASONS[status])
        msg = "HTTP/1.1 %d %s\r\n%s" % (status, _REASONS[status], extra)
        if status != 200:
            msg += "Content-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n" \
                % len(body)
        msg += "\r\n" + body
        conn.sendall(msg.encode("latin-1"))

    def _serve(self, conn):
        try:
            head, rest = self._read_head(conn)
        except OSError:
            head = None
        if head is None:
            self._untrack(conn)
            return
        lines = head.split("\r\n")
        parts = lines[0].split()
        method, target = (parts[0], parts[1]) if len(parts) >= 2 else ("", "")
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        credentials = None
        auth = headers.get("proxy-authorization", "")
        if auth.lower().startswith("basic "):
            try:
                credentials = base64.b64decode(auth[6:].strip()).decode("utf-8", "replace")
            except ValueError:
                credentials = "<undecodable>"

        host, _, port = target.rpartition(":")
        host = host.strip("[]")
        upstream = None
        if method != "CONNECT":
            status = 405
        elif self.mode == "502":
            status = 502
        elif self.mode == "407" or (self.user is not None and
                                    credentials != "%s:%s" % (self.user, self.password)):
            status = 407
        elif host not in LOOPBACK or not port.isdigit():
            status = 403
        else:
            try:
                upstream = socket.create_connection((host, int(port)), timeout=10)
                status = 200
            except OSError:
                status = 502
        with self._lock:
            self.requests.append({"method": method, "target": target,
                                  "credentials": credentials, "status": status})
        try:
            self._answer(conn, status, 'Proxy-Authenticate: Basic realm="test"\r\n'
                         if status == 407 else "")
        except OSError:
            status = 0
        if status != 200:
            if upstream is not None:
                upstream.close()
            self._untrack(conn)
            return

        self._track(upstream)
        conn.settimeout(None)
        upstream.settimeout(None)
        if rest:
            upstream.sendall(rest)
        back = threading.Thread(target=self._pipe, args=(upstream, conn), daemon=True)
        back.start()
        with self._lock:
            self._threads.append(back)
        self._pipe(conn, upstream)
        back.join(30)
        self._untrack(upstream)
        self._untrack(conn)

    @staticmethod
    def _pipe(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass
