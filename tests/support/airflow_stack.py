"""Real Airflow services (scheduler, triggerer, dag-processor, api-server) and the emulator.

Each service runs in its own process group in a temporary AIRFLOW_HOME on loopback ports chosen at
start, and is stopped by PID: SIGTERM to the group, then SIGKILL after a grace period (the scheduler
can hang on SIGTERM with LocalExecutor workers). Two shapes of the same stack:

- ``AirflowStack(...)``: SQLite, LocalExecutor with parallelism 2, one triggerer (tests/system);
- ``AirflowStack.celery(...)``: PostgreSQL, CeleryExecutor on Redis, N Celery workers and N
  triggerers (tests/deployment; the servers themselves are in ``tests/system/backing.py``).

``free_port`` and ``stop_group`` (from ``tests.support.processes``) stay importable from here.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests

from airflow_provider_smartflows.version_compat import AIRFLOW_VERSION
from tests.support.processes import free_port, start_group, stop_group
from tests.support.waits import wait_until

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

AIRFLOW_V_3_0_PLUS = int(AIRFLOW_VERSION.split(".")[0]) >= 3
BIN = Path(sys.executable).parent
# Airflow 2: the webserver serves REST API v1 (basic auth) and the scheduler parses the DAGs itself.
SERVICES = (
    ("scheduler", "triggerer", "dag-processor", "api-server")
    if AIRFLOW_V_3_0_PLUS
    else ("scheduler", "triggerer", "webserver")
)
API = "/api/v2" if AIRFLOW_V_3_0_PLUS else "/api/v1"
ADMIN = ("admin", "admin")  # Airflow 2's REST API user, created by migrate()
TERMINAL_TI_STATES = {"success", "failed", "upstream_failed", "skipped", "removed"}
# The triggerer's supervisor gives its trigger runner 10 s (escalation_delay) before it exits and
# marks its job ended; killed earlier, the job stays "running" and a new triggerer adopts the
# triggers only after [triggerer] triggerer_health_check_threshold (30 s).
STOP_GRACE = {"triggerer": 30.0, "celery-worker": 20.0}
# "triggerer-2" is the second instance of "triggerer"; "dag-processor" is no instance of anything.
INSTANCE = re.compile(r"^(triggerer|celery-worker)-(\d+)$")


def parent_pid(pid: int) -> int:
    """The parent of ``pid`` (Linux /proc), 0 if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    return int(stat.rsplit(")", 1)[1].split()[1])


def descendants(pid: int) -> list[int]:
    """Every living process under ``pid`` (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            children.setdefault(parent_pid(int(entry.name)), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class EmulatorProcess:
    """The Smart Flows emulator as a separate process (as a real server would be).

    :param quiet: ``--quiet`` (no per-request lines; benchmarks send many thousands).
    :param preexec_fn: run in the child before the emulator starts (e.g. to raise its fd limit).
    :param extra_args: more command-line arguments (e.g. ``--tls-cert``/``--tls-key``).
    """

    def __init__(
        self,
        log_dir: Path,
        *,
        scenario: Path | None = None,
        speedup: float = 1.0,
        quiet: bool = False,
        preexec_fn: Callable[[], None] | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / "emulator.log"
        self.port = free_port()
        args = [sys.executable, "-m", "airflow_provider_smartflows.emulator", *(["--quiet"] if quiet else [])]
        args += ["--host", "127.0.0.1", "--port", str(self.port), "--speedup", str(speedup)]
        if scenario is not None:
            args += ["--scenario", str(scenario)]
        args += extra_args
        self._log = self.log_path.open("w")
        self.proc = start_group(args, stdout=self._log, stderr=subprocess.STDOUT, preexec_fn=preexec_fn)
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.api_key = ""
        self.session = requests.Session()

        def started() -> str:
            if m := re.search(r"API key \(admin\): (\S+)", self.log_path.read_text()):
                return m.group(1)
            if self.proc.poll() is not None:
                raise RuntimeError(f"emulator exited at start: {self.log_path.read_text()[-2000:]}")
            return ""

        try:
            self.api_key = wait_until(started, 30, message="the emulator to print its API key")
        except (AssertionError, RuntimeError) as error:
            self.stop()
            raise RuntimeError(f"emulator did not start: {self.log_path.read_text()[-2000:]}") from error
        self.session.headers["X-API-Key"] = self.api_key

    def admin(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = self.session.request(method, self.base_url + path, timeout=120, **kwargs)
        resp.raise_for_status()
        return resp.json() if resp.content else None

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.admin(method, "/api/v1" + path, **kwargs)

    def connection(self) -> dict[str, Any]:
        """An Airflow connection (JSON form) to this emulator with its admin key."""
        return {"conn_type": "smartflows", "host": self.base_url, "password": self.api_key}

    def __enter__(self) -> EmulatorProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.session.close()
        stop_group(self.proc, grace=5)
        self._log.close()

    def executions(self, flow_id: str) -> list[dict[str, Any]]:
        """The emulator's view of every execution of ``flow_id``."""
        return [ex for ex in self.admin("GET", "/_emulator/executions") if ex["flow_id"] == flow_id]

    def requests_to(self, method: str, path_regex: str) -> list[dict[str, Any]]:
        """Recorded requests with this method whose path matches ``path_regex`` (re.search)."""
        return [
            req
            for req in self.admin("GET", "/_emulator/requests")
            if req["method"] == method and re.search(path_regex, req["path"])
        ]


def read_metadata_db(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Read a stack's SQLite metadata DB (read-only, retried while a writer holds it)."""
    for _ in range(50):
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=2) as conn:
                return conn.execute(sql, params).fetchall()
        except sqlite3.OperationalError as err:
            if "locked" not in str(err):
                raise
            time.sleep(0.05)
    raise RuntimeError(f"the metadata DB {db} stayed locked")


def _service_env(home: Path, dags_folder: Path, api_port: int) -> dict[str, str]:
    """The environment of every service: this process's minus its AIRFLOW_* settings, plus the
    stack's (loopback ports, LocalExecutor with parallelism 2, short heartbeats)."""
    base_url = f"http://127.0.0.1:{api_port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(dags_folder),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__EXECUTOR="LocalExecutor",
        AIRFLOW__CORE__PARALLELISM="2",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="True",
        AIRFLOW__API__HOST="127.0.0.1",
        AIRFLOW__API__PORT=str(api_port),
        AIRFLOW__API__BASE_URL=base_url,
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"{base_url}/execution/",
        AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5",
        AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC="1",
        AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT="300",
        # The task supervisor sometimes notices its task process's exit only when its select()
        # times out (this interval, default 5 s), holding the worker slot that long.
        AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL="1",
        AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(free_port()),
        AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT=str(free_port()),
        AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC="1",
        AIRFLOW__TRIGGERER__CAPACITY="100",
        # Tell the triggerer to stop at once on SIGTERM rather than drain for minutes.
        AIRFLOW__CORE__KILLED_TASK_CLEANUP_TIME="5",
    )
    if not AIRFLOW_V_3_0_PLUS:
        env.update(
            AIRFLOW__WEBSERVER__WEB_SERVER_HOST="127.0.0.1",
            AIRFLOW__WEBSERVER__WEB_SERVER_PORT=str(api_port),
            AIRFLOW__WEBSERVER__BASE_URL=base_url,
            AIRFLOW__WEBSERVER__WORKERS="1",
            # gunicorn's master gives up after 120 s without an answer: a loaded machine (stacks of
            # parallel system test files) starts slower than that; the stack's own wait bounds it.
            AIRFLOW__WEBSERVER__WEB_SERVER_MASTER_TIMEOUT="600",
            AIRFLOW__WEBSERVER__WEB_SERVER_WORKER_TIMEOUT="600",
            AIRFLOW__API__AUTH_BACKENDS="airflow.api.auth.backend.basic_auth",
            # The batch test reads its summary XCom as JSON (deserialize=True): off by default.
            AIRFLOW__API__ENABLE_XCOM_DESERIALIZE_SUPPORT="True",
            AIRFLOW__SCHEDULER__DAG_DIR_LIST_INTERVAL="5",
            AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL="5",
            # Airflow 2 refuses LocalExecutor on SQLite outside its own tests; two worker
            # slots and SQLite's busy timeout are enough for these few writers.
            _AIRFLOW__SKIP_DATABASE_EXECUTOR_COMPATIBILITY_CHECK="1",
        )
    return env


class AirflowStack:
    """Scheduler, triggerer(s), dag-processor, api-server (and Celery workers) in a temporary AIRFLOW_HOME.

    :param services: what ``start_all`` starts, in order; ``triggerer-<n>`` / ``celery-worker-<n>``
        are instances of one service with their own log file and ports.
    :param worker_concurrency: task slots of each Celery worker.
    """

    def __init__(
        self,
        home: Path,
        dags_folder: Path,
        extra_env: dict[str, str],
        extra_logs: list[Path] | None = None,
        *,
        services: tuple[str, ...] = SERVICES,
        worker_concurrency: int = 2,
    ) -> None:
        self.home = home
        self.extra_logs = list(extra_logs or [])
        self.services = services
        self.worker_concurrency = worker_concurrency
        self.api_port = free_port()
        self.base_url = f"http://127.0.0.1:{self.api_port}"
        self.env = _service_env(home, dags_folder, self.api_port)
        self.env.update(extra_env)
        self.procs: dict[str, subprocess.Popen[Any]] = {}
        self.fail_on_exit = False
        self.service_env = {
            name: {"AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port())}
            for name in services
            if name.startswith("triggerer-")
        }
        self.session = requests.Session()
        if not AIRFLOW_V_3_0_PLUS:
            self.session.auth = ADMIN
        # Last resort if the test process exits without its teardown (the fixture is the normal path).
        atexit.register(self.stop_all)

    @classmethod
    def celery(
        cls,
        home: Path,
        dags_folder: Path,
        extra_env: dict[str, str],
        extra_logs: list[Path] | None = None,
        *,
        database_url: str,
        broker_url: str,
        workers: int = 2,
        triggerers: int = 2,
        worker_concurrency: int = 2,
    ) -> AirflowStack:
        """The production shape: PostgreSQL metadata DB, CeleryExecutor on Redis, several workers and
        triggerers. ``extra_env`` is applied last (the tests' lowered thresholds go there)."""
        env = {
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database_url,
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            # Queued + running tasks the scheduler hands to Celery: exactly the workers' slots.
            "AIRFLOW__CORE__PARALLELISM": str(workers * worker_concurrency),
            "AIRFLOW__CELERY__BROKER_URL": broker_url,
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + database_url,
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(worker_concurrency),
            "AIRFLOW__CELERY__SYNC_PARALLELISM": "1",
            **extra_env,
        }
        services = ("scheduler", "dag-processor", "api-server")
        services += tuple(f"triggerer-{i}" for i in range(1, triggerers + 1))
        services += tuple(f"celery-worker-{i}" for i in range(1, workers + 1))
        return cls(
            home, dags_folder, env, extra_logs, services=services, worker_concurrency=worker_concurrency
        )

    # -- processes ---------------------------------------------------------------------------
    def migrate(self) -> None:
        done = subprocess.run(
            [str(BIN / "airflow"), "db", "migrate"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"airflow db migrate failed ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
            )
        if not AIRFLOW_V_3_0_PLUS:
            user, password = ADMIN
            args = ["users", "create", "--username", user, "--password", password, "--role", "Admin"]
            args += ["--email", "admin@example.com", "--firstname", "Admin", "--lastname", "User"]
            done = subprocess.run(
                [str(BIN / "airflow"), *args], env=self.env, capture_output=True, text=True, timeout=300
            )
            if done.returncode != 0:
                raise RuntimeError(
                    f"airflow users create failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
                )

    def command(self, name: str) -> list[str]:
        """The CLI of one service (``triggerer-2`` is ``airflow triggerer`` with its own log port)."""
        match = INSTANCE.match(name)
        base = match.group(1) if match else name
        if base == "celery-worker":
            # Logs are files under the shared AIRFLOW_HOME: no log server per worker needed.
            args = ["celery", "worker", "--celery-hostname", f"{name}@127.0.0.1"]
            return [
                str(BIN / "airflow"),
                *args,
                "--concurrency",
                str(self.worker_concurrency),
                "--skip-serve-logs",
            ]
        return [str(BIN / "airflow"), base]

    def start(self, name: str) -> None:
        args = self.command(name)
        if name == "api-server":
            args += ["--host", "127.0.0.1", "--port", str(self.api_port)]
        elif name == "webserver":
            args += ["--hostname", "127.0.0.1", "--port", str(self.api_port), "--workers", "1"]
        log = (self.home / f"{name}.log").open("a")
        self.procs[name] = start_group(
            args, env={**self.env, **self.service_env.get(name, {})}, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()

    def stop(self, name: str) -> bool:
        """Stop one service; True if it exited on SIGTERM within its grace period."""
        proc = self.procs.pop(name, None)
        if proc is None:
            return True
        match = INSTANCE.match(name)
        return stop_group(proc, grace=STOP_GRACE.get(match.group(1) if match else name, 10.0))

    def kill(self, name: str) -> list[int]:
        """SIGKILL the service and every process under it at once (a machine or container dying),
        also children that left its process group; returns their PIDs."""
        proc = self.procs.pop(name)
        victims = [proc.pid, *descendants(proc.pid)]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait()
        return victims

    def service_of(self, pid: int) -> str | None:
        """The service whose process is ``pid`` or one of its ancestors."""
        by_pid = {proc.pid: name for name, proc in self.procs.items()}
        while pid > 1:
            if pid in by_pid:
                return by_pid[pid]
            pid = parent_pid(pid)
        return None

    def exited(self) -> dict[str, int]:
        """Services whose process has exited (name -> return code)."""
        return {name: code for name, proc in self.procs.items() if (code := proc.poll()) is not None}

    def start_all(self) -> None:
        self.migrate()
        for name in self.services:
            self.start(name)
        self.wait_for(lambda: self._api_up(), timeout=120, what="api-server to answer")

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)

    def _api_up(self) -> bool:
        try:
            return self.session.get(f"{self.base_url}{API}/version", timeout=2).ok
        except requests.RequestException:
            return False

    # -- REST API ----------------------------------------------------------------------------
    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = self.session.request(method, f"{self.base_url}{API}{path}", timeout=30, **kwargs)
        if not resp.ok:
            raise AssertionError(f"{method} {path} -> {resp.status_code}: {resp.text[:500]}")
        return resp.json() if resp.content else None

    def wait_for_dag(self, dag_id: str, timeout: float = 120) -> None:
        def parsed() -> bool:
            resp = self.session.get(f"{self.base_url}{API}/dags/{dag_id}", timeout=5)
            return resp.ok

        self.wait_for(parsed, timeout=timeout, what=f"DAG {dag_id} to be parsed")

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        self.api("PATCH", f"/dags/{dag_id}", json={"is_paused": False})
        body: dict[str, Any] = {"conf": conf or {}}
        if AIRFLOW_V_3_0_PLUS:
            body["logical_date"] = None
        run = self.api("POST", f"/dags/{dag_id}/dagRuns", json=body)
        return str(run["dag_run_id"])

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        data = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 100})
        return list(data["task_instances"])

    def dag_run_state(self, dag_id: str, run_id: str) -> str:
        return str(self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}")["state"])

    def set_task_state(self, dag_id: str, run_id: str, task_id: str, state: str, map_index: int = -1) -> None:
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}"
        if map_index >= 0:
            path += f"/{map_index}"
        body: dict[str, Any] = {"new_state": state}
        if not AIRFLOW_V_3_0_PLUS:
            body["dry_run"] = False
        self.api("PATCH", path, json=body)

    def wait_for(
        self, check: Any, *, timeout: float, what: str, interval: float = 0.5, describe: Any = None
    ) -> Any:
        """Call ``check`` until it returns something truthy; on timeout fail with the service logs.

        ``describe`` (optional callable) adds the last observed state to the failure message. With
        ``fail_on_exit`` set, a service that exits meanwhile fails the wait at once.
        """

        def ready() -> Any:
            result = check()
            if not result and self.fail_on_exit and (exited := self.exited()):
                raise AssertionError(f"while waiting for {what}, services exited {exited}\n{self.dump()}")
            return result

        def failure() -> str:
            state = f"\nlast state: {describe()}" if describe is not None else ""
            return f"{what}{state}\n{self.dump()}"

        return wait_until(ready, timeout, interval=interval, message=failure)

    def logs(self, pattern: str = "**/*.log") -> dict[Path, str]:
        return {p: p.read_text(errors="replace") for p in self.home.glob(pattern) if p.is_file()}

    def dump(self) -> str:
        """Tail of every service log (and of the extra logs), for a failing test's report."""
        parts = []
        paths = [self.home / f"{name}.log" for name in self.services] + self.extra_logs
        for path in paths:
            if path.exists():
                parts.append(f"===== {path.name} =====\n" + path.read_text(errors="replace")[-4000:])
        return "\n".join(parts)


def write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data))
    return path
