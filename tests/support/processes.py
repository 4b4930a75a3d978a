"""Servers and children of the tests, each in its own process group on loopback, stopped by PID.

``start_group`` starts a process as the leader of a new group, ``wait_listening`` waits until it
accepts connections on its port (failing with its log tail if it exits first), ``stop_group``
sends SIGTERM to the group and SIGKILL after a grace period, ``serving`` is the three together
as a context manager. ``free_port`` picks a port for a server; ``nothing_listens_url`` is an
address where a connection is refused.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import signal
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.support.waits import wait_until

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

HOST = "127.0.0.1"


def _port_range() -> tuple[int, int]:
    """Ports below the kernel's ephemeral range: a client connection's local port (taken from
    that range) can never take a port chosen here between the choice and the server's bind."""
    try:
        first = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        first = 32768
    high = max(min(first, 32768), 12000)
    return high - 10000, high


_CLAIMS: list[int] = []  # lock files held for the life of this process, oldest first
_CLAIM_DIR = Path(tempfile.gettempdir()) / "smartflows-test-ports"


def _claim(port: int) -> bool:
    """Hold ``port`` against the other test processes (xdist workers, parallel runs) on this
    machine: an exclusive lock on a file named after it, kept until this process ends."""
    _CLAIM_DIR.mkdir(exist_ok=True)
    fd = os.open(_CLAIM_DIR / str(port), os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False
    _CLAIMS.append(fd)
    if len(_CLAIMS) > 400:  # the servers of the oldest claims stopped long ago
        os.close(_CLAIMS.pop(0))
    return True


def free_port() -> int:
    """A loopback port for a server: outside the ephemeral range, claimed against every other
    test process on the machine, and free right now (bound, then released for the server)."""
    low, high = _port_range()
    for _ in range(500):
        port = random.randrange(low, high)
        if not _claim(port):
            continue
        with socket.socket() as sock:
            try:
                sock.bind((HOST, port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free port in {low}-{high} after 500 tries")


def listens(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:``port``."""
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((HOST, port)) == 0


def nothing_listens_url() -> str:
    """``http://127.0.0.1:<port>`` where nothing listens: a connection there is refused."""
    port = free_port()
    assert not listens(port), f"something listens on {HOST}:{port}"
    return f"http://{HOST}:{port}"


def start_group(args: Sequence[str], **popen: Any) -> subprocess.Popen[Any]:
    """``args`` as the leader of a new process group (``stop_group`` stops it and its children);
    stdout and stderr go nowhere unless ``popen`` says where."""
    popen.setdefault("stdout", subprocess.DEVNULL)
    popen.setdefault("stderr", subprocess.DEVNULL)
    return subprocess.Popen(list(args), start_new_session=True, **popen)


def _tail(log: Path | None) -> str:
    if log is None or not log.exists():
        return ""
    return ":\n" + log.read_text(errors="replace")[-3000:]


def wait_listening(
    port: int, process: subprocess.Popen[Any], what: str, *, timeout: float = 60, log: Path | None = None
) -> None:
    """Until ``process`` listens on ``port``; RuntimeError (with ``log``'s tail) if it exits first,
    AssertionError after ``timeout`` seconds."""

    def up() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited ({process.returncode}) at start{_tail(log)}")
        return listens(port)

    wait_until(up, timeout, interval=0.05, message=lambda: f"{what} to listen on {HOST}:{port}{_tail(log)}")


def stop_group(proc: subprocess.Popen[Any], grace: float = 10.0) -> bool:
    """SIGTERM the process group, SIGKILL it after ``grace`` seconds; True if it exited in time."""
    graceful = True
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            graceful = False
        except ProcessLookupError:
            return True
    # Children of a stopped leader (task supervisors, workers) may linger in the group.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return graceful


@contextlib.contextmanager
def serving(
    what: str, args: Sequence[str], port: int, *, timeout: float = 60, grace: float = 10.0, **popen: Any
) -> Iterator[str]:
    """A server started with ``args`` (which make it listen on ``port``): its ``http://`` URL once it
    listens; stopped by PID on exit."""
    process = start_group(args, **popen)
    try:
        wait_listening(port, process, what, timeout=timeout)
        yield f"http://{HOST}:{port}"
    finally:
        stop_group(process, grace=grace)
