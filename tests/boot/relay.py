"""qemu's guestfwd `cmd:` target: one guest connection on stdin/stdout, relayed to the DPS
emulator on the host's loopback. qemu starts one per connection; when nothing listens (the
emulator is down), it exits and the guest sees the connection close, as with a refused one.

    relay.py PORT [LOG]

With LOG, each connection appends one line to it: "refused" or "connected".
"""
import os
import select
import socket
import sys


def note(log, what):
    if log:
        with open(log, "a") as f:
            f.write(what + "\n")


def main():
    port = int(sys.argv[1])
    log = sys.argv[2] if len(sys.argv) > 2 else None
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
    except OSError:
        note(log, "refused")
        return 1
    note(log, "connected")
    s.settimeout(None)
    fds = [0, s.fileno()]
    while fds:
        ready, _, _ = select.select(fds, [], [], 300)
        if not ready:
            break
        for fd in ready:
            if fd == 0:
                data = os.read(0, 65536)
                if not data:
                    s.shutdown(socket.SHUT_WR)
                    fds.remove(0)
                else:
                    s.sendall(data)
            else:
                data = s.recv(65536)
                if not data:
                    return 0
                os.write(1, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
