"""Throw-away PostgreSQL and Redis servers for the production-shaped stack (tests/deployment).

Both listen on 127.0.0.1 only, on a free port, in a temporary directory, each in its own process
group, and are stopped by PID. PostgreSQL refuses to run as root: when the tests run as root the
server runs as the unprivileged ``postgres`` user (Debian's package creates it) and its directory
is owned by that user. Persistence is off where the tests do not need it (fsync, Redis snapshots).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from tests.support.processes import free_port, stop_group, wait_listening
from tests.support.waits import wait_until

INSTALL_HINT = "install them (Debian: apt-get install -y postgresql redis-server) or run scripts/test_deployment.sh as root"


def postgres_bindir() -> Path | None:
    """The directory of ``initdb`` and ``postgres``: ``pg_config --bindir``, Debian's layout, or PATH."""
    candidates: list[Path] = []
    if pg_config := shutil.which("pg_config"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10)
            candidates.append(Path(out.stdout.strip()))
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name))
    candidates += [Path(p) for p in reversed(versions)]
    if initdb := shutil.which("initdb"):
        candidates.append(Path(initdb).parent)
    return next((d for d in candidates if (d / "initdb").is_file() and (d / "postgres").is_file()), None)


def missing_servers() -> list[str]:
    """What is missing to start the deployment's backing services (empty when all is there)."""
    missing = [] if postgres_bindir() else ["PostgreSQL server binaries (initdb, postgres)"]
    if not shutil.which("redis-server"):
        missing.append("redis-server")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            missing.append("the unprivileged 'postgres' user (PostgreSQL cannot run as root)")
    return missing


class PostgresServer:
    """A PostgreSQL cluster made by ``initdb`` (trust auth on loopback, no fsync), database ``airflow``."""

    database = "airflow"
    user = "airflow"

    def __init__(self) -> None:
        bindir = postgres_bindir()
        if bindir is None:
            raise RuntimeError(f"PostgreSQL server binaries not found: {INSTALL_HINT}")
        self.bindir = bindir
        # Not under pytest's root-only (0700) temporary tree: the postgres user must reach it.
        self.dir = Path(tempfile.mkdtemp(prefix="smartflows-pg-"))
        self.data = self.dir / "data"
        self.log_path = self.dir / "postgres.log"
        self.port = free_port()
        self._as_user: dict[str, Any] = {}
        if os.geteuid() == 0:
            account = pwd.getpwnam("postgres")
            os.chown(self.dir, account.pw_uid, account.pw_gid)
            self._as_user = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
        self.proc: subprocess.Popen[Any] | None = None
        self.outages: list[float] = []

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://{self.user}@127.0.0.1:{self.port}/{self.database}"

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user={self.user} dbname={self.database}"

    def init(self) -> None:
        args = [str(self.bindir / "initdb"), "-D", str(self.data), "-U", self.user, "-A", "trust"]
        args += ["-E", "UTF8", "--no-sync"]
        done = subprocess.run(
            args, capture_output=True, text=True, timeout=120, cwd=self.dir, **self._as_user
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"initdb failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
            )
        self.start()
        import psycopg2

        conn = psycopg2.connect(f"host=127.0.0.1 port={self.port} user={self.user} dbname=postgres")
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f"CREATE DATABASE {self.database}")
        finally:
            conn.close()

    def start(self) -> None:
        args = [str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port)]
        for setting in (
            "listen_addresses=127.0.0.1",
            "unix_socket_directories=",
            "fsync=off",
            "synchronous_commit=off",
            "full_page_writes=off",
            "max_connections=300",
        ):
            args += ["-c", setting]
        log = self.log_path.open("a")
        self.proc = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.dir, **self._as_user
        )
        log.close()
        wait_listening(self.port, self.proc, "PostgreSQL", log=self.log_path)
        self._wait_until_accepting()

    def _wait_until_accepting(self, timeout: float = 60) -> None:
        """The port listens before recovery ends ("the database system is starting up")."""
        import psycopg2

        def accepting() -> bool:
            try:
                psycopg2.connect(f"host=127.0.0.1 port={self.port} user={self.user} dbname=postgres").close()
            except psycopg2.OperationalError:
                return False
            return True

        wait_until(accepting, timeout, interval=0.1, message="PostgreSQL to accept connections")

    def stop(self) -> None:
        """Fast shutdown (SIGINT: clients disconnected, no wait for them), SIGKILL after 20 s."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=20)
        stop_group(proc, grace=5)

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        import psycopg2

        conn = psycopg2.connect(self.dsn, connect_timeout=10)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return list(cur.fetchall())
        finally:
            conn.close()

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisServer:
    """``redis-server`` on a free loopback port, no snapshots, no append-only file."""

    def __init__(self, log_dir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(f"redis-server not found: {INSTALL_HINT}")
        self.port = free_port()
        self.log_path = log_dir / "redis.log"
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        args += ["--daemonize", "no", "--dir", str(log_dir)]
        log = self.log_path.open("w")
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        wait_listening(self.port, self.proc, "redis-server", log=self.log_path)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        stop_group(self.proc, grace=10)
