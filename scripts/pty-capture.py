#!/usr/bin/env python3
"""Runs a command under a pseudo-terminal (200x50) for SECONDS, then interrupts it as Ctrl-C would,
and writes everything it printed, raw, to stdout. The `nodewright avail --watch` test uses it to see
what a terminal sees (colours, in-place redraws).

usage: pty-capture.py SECONDS COMMAND [ARG...]
"""
import fcntl
import os
import pty
import select
import signal
import struct
import sys
import termios
import time


def main() -> int:
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    seconds = float(sys.argv[1])
    command = sys.argv[2:]
    pid, fd = pty.fork()
    if pid == 0:
        # A shell that starts jobs in the background makes them ignore SIGINT, and ignored signals
        # survive exec: give the command the default, so Ctrl-C ends it as on a real terminal.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.execvp(command[0], command)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
    out = bytearray()
    deadline = time.monotonic() + seconds
    exited = False
    while time.monotonic() < deadline and not exited:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                data = os.read(fd, 65536)
            except OSError:
                exited = True
                break
            if not data:
                exited = True
            out += data
    if not exited:
        os.kill(pid, signal.SIGINT)
    # Keep reading until the command has gone: one blocked writing to a full terminal must be able
    # to finish its write and see the interrupt. If it does not end, it is killed.
    stop = time.monotonic() + 10
    while True:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > stop:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            break
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                data = os.read(fd, 65536)
            except OSError:
                data = b""
            out += data
    sys.stdout.buffer.write(bytes(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
