"""`facial-r1 serve` in a child process on loopback, started as a user starts it, its memory readable:
a server for the tests or the benchmarks to measure."""

import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

from facial_r1.errors import FacialR1Error


class ServerURL(str):
    """A served URL that also knows its server's process id (to read its memory)."""

    pid: int


def peak_rss_bytes(pid: int) -> tuple[int, int]:
    """(current, peak) resident set size of a process, from /proc (Linux)."""
    fields = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status").read().splitlines() if ":" in line)
    return tuple(int(fields[k].split()[0]) * 1024 for k in ("VmRSS", "VmHWM"))


@contextmanager
def subprocess_server(*args: str, timeout: float = 120.0) -> Iterator[ServerURL]:
    """`facial-r1 serve ARGS` in a child process on a free loopback port, as a user starts it; yields
    its URL (with `.pid`) once /healthz answers, stops it on exit."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # The server's log goes to a file: a pipe nobody reads fills up and blocks the server's logging.
    log_file = tempfile.TemporaryFile("w+")
    proc = subprocess.Popen([sys.executable, "-m", "facial_r1.cli", "serve", *args, "--port", str(port)],
                            stdout=log_file, stderr=subprocess.STDOUT, text=True)
    url, deadline = ServerURL(f"http://127.0.0.1:{port}"), time.monotonic() + timeout
    url.pid = proc.pid
    try:
        while True:
            try:
                urllib.request.urlopen(url + "/healthz", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    proc.wait()
                    log_file.seek(0)
                    raise FacialR1Error(f"facial-r1 serve did not start:\n{log_file.read()}") from None
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log_file.close()
