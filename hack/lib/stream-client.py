#!/usr/bin/env python3
"""Timing helpers of hack/bench-stream.sh (the client side: crictl is run and timed from here, so
that the timer is not a shell's fork).

  stream-client.py rtt N -- CMD...        run CMD N times (stdout/stderr discarded; each must exit 0)
  stream-client.py ttfb N -- CMD...       N times: CMD under a pseudo-terminal (80x24), time from
                                          the spawn to its first output byte, then "exit\\n" to it
  stream-client.py pipe SIZE -- CMD...    CMD's stdout read to EOF: must be SIZE bytes; time from
                                          the spawn to EOF and exit
  stream-client.py read PORT SIZE         connect to 127.0.0.1:PORT and read to EOF: must be SIZE
                                          bytes; time from connect to EOF
  stream-client.py free-port              print a free TCP port on 127.0.0.1

Prints one line of key=value pairs (ms, MB = 10^6 bytes); on failure a message on stderr and
exit 1. Every wait has a deadline (--timeout S per run, default 120): a client that hangs is
killed, never waited for forever.
"""

import fcntl
import os
import pty
import select
import signal
import socket
import struct
import subprocess
import sys
import termios
import time

TIMEOUT = 120.0


def fail(msg):
    print(f"stream-client: {msg}", file=sys.stderr)
    sys.exit(1)


def quantiles(ms):
    s = sorted(ms)
    # Nearest rank: p90 of 10 values is the 9th.
    med = s[(len(s) - 1) // 2] if len(s) % 2 else (s[len(s) // 2 - 1] + s[len(s) // 2]) / 2
    p90 = s[max(0, -(-9 * len(s) // 10) - 1)]
    return f"n={len(s)} median_ms={med:.2f} p90_ms={p90:.2f} min_ms={s[0]:.2f} max_ms={s[-1]:.2f}"


def reap(proc, what):
    try:
        return proc.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        fail(f"{what}: no exit after {TIMEOUT:.0f} s (killed)")


def rtt(n, cmd):
    ms = []
    for i in range(n):
        t0 = time.monotonic()
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            _, err = p.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            fail(f"run {i + 1}: {' '.join(cmd)}: no exit after {TIMEOUT:.0f} s (killed)")
        t1 = time.monotonic()
        if p.returncode != 0:
            fail(f"run {i + 1}: {' '.join(cmd)}: exit {p.returncode}: {err.decode(errors='replace').strip()}")
        ms.append((t1 - t0) * 1000)
    print(quantiles(ms))


def read_until(fd, deadline):
    """Reads what fd has until EOF/EIO or the deadline; returns (bytes, eof)."""
    out = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return out, False
        r, _, _ = select.select([fd], [], [], left)
        if not r:
            return out, False
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the slave side is closed
            return out, True
        if not chunk:
            return out, True
        out += chunk


def ttfb(n, cmd):
    ms = []
    for i in range(n):
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        t0 = time.monotonic()
        p = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                             preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
        os.close(slave)
        r, _, _ = select.select([master], [], [], TIMEOUT)
        t1 = time.monotonic()
        first = b""
        if r:
            try:
                first = os.read(master, 65536)
            except OSError:
                first = b""
        if not first:
            p.kill()
            p.wait()
            os.close(master)
            fail(f"run {i + 1}: {' '.join(cmd)}: no output within {TIMEOUT:.0f} s")
        os.write(master, b"exit\n")
        rest, eof = read_until(master, time.monotonic() + 30)
        if not eof:
            os.killpg(p.pid, signal.SIGKILL)
        rc = reap(p, f"run {i + 1}")
        os.close(master)
        if rc != 0:
            fail(f"run {i + 1}: {' '.join(cmd)}: exit {rc}: {(first + rest).decode(errors='replace').strip()}")
        ms.append((t1 - t0) * 1000)
    print(quantiles(ms) + f" first={first[:20]!r}")


def rate(size, secs):
    return f"bytes={size} secs={secs:.3f} mb_s={size / secs / 1e6:.1f}"


def pipe(size, cmd):
    buf = bytearray(1 << 20)
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    fd = p.stdout.fileno()
    got = 0
    deadline = t0 + TIMEOUT
    while True:
        left = deadline - time.monotonic()
        r, _, _ = select.select([fd], [], [], max(left, 0))
        if not r:
            p.kill()
            p.wait()
            fail(f"{' '.join(cmd)}: stalled after {got} bytes ({TIMEOUT:.0f} s; killed)")
        k = os.readv(fd, [buf])
        if k == 0:
            break
        got += k
    rc = reap(p, " ".join(cmd))
    t1 = time.monotonic()
    err = p.stderr.read().decode(errors="replace").strip()
    if rc != 0 or got != size:
        fail(f"{' '.join(cmd)}: exit {rc}, {got} bytes of {size}: {err}")
    print(rate(size, t1 - t0))


def read_port(port, size):
    buf = bytearray(1 << 20)
    t0 = time.monotonic()
    s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    got = 0
    try:
        while True:
            k = s.recv_into(buf)
            if k == 0:
                break
            got += k
    except socket.timeout:
        fail(f"127.0.0.1:{port}: stalled after {got} bytes ({TIMEOUT:.0f} s)")
    t1 = time.monotonic()
    s.close()
    if got != size:
        fail(f"127.0.0.1:{port}: {got} bytes of {size}")
    print(rate(size, t1 - t0))


def main():
    global TIMEOUT
    args = sys.argv[1:]
    if len(args) >= 2 and args[0] == "--timeout":
        TIMEOUT = float(args[1])
        args = args[2:]
    if not args:
        fail(__doc__)
    what, rest = args[0], args[1:]
    if what in ("rtt", "ttfb", "pipe"):
        if len(rest) < 3 or rest[1] != "--":
            fail(f"usage: {what} N -- CMD...")
        {"rtt": rtt, "ttfb": ttfb, "pipe": pipe}[what](int(rest[0]), rest[2:])
    elif what == "read" and len(rest) == 2:
        read_port(int(rest[0]), int(rest[1]))
    elif what == "free-port":
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        print(s.getsockname()[1])
    else:
        fail(__doc__)


if __name__ == "__main__":
    main()
