"""The production-shaped deployment, started once for the session and always stopped.

PostgreSQL (throw-away cluster) + Redis + the emulator + Airflow with CeleryExecutor: scheduler,
dag-processor, api-server, two Celery workers (2 slots each) and two triggerers. These tests run
only when asked for by path (``pytest tests/deployment``, ``scripts/test_deployment.sh``): a plain
``pytest`` (``make test``) does not collect them, so it needs neither PostgreSQL nor Redis.

Settings lowered for the tests (each named in the README's "Running at scale"):
``[triggerer] triggerer_health_check_threshold`` 10 s (default 30) so that the surviving triggerer
adopts a dead one's triggers within the test; ``[triggerer] job_heartbeat_sec`` 1 s (default 5);
``[scheduler] task_instance_heartbeat_timeout`` 20 s (default 300) so that a task of a killed
worker is failed and retried within the test.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.support.airflow_stack import AirflowStack, EmulatorProcess
from tests.system.backing import INSTALL_HINT, PostgresServer, RedisServer, missing_servers

if TYPE_CHECKING:
    from collections.abc import Generator, Iterator

HERE = Path(__file__).parent
DAGS_FOLDER = HERE / "dags"
SCENARIO = HERE / "scenario.json"
TRIGGERERS = ("triggerer-1", "triggerer-2")
HEALTH_CHECK_THRESHOLD = 10
WORKER_CONCURRENCY = 2
HEARTBEAT_TIMEOUT = 20
LOWERED_SETTINGS = {
    "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": str(HEALTH_CHECK_THRESHOLD),
    "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
}


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Collect these tests only when a command-line argument points into this folder."""
    for arg in config.args:
        target = Path(arg.split("::")[0]).resolve()
        if target == HERE or HERE in target.parents:
            return None
    return True


class Deployment:
    """Everything the scenarios touch: the stack, its database and broker, the emulator, and the
    TriggererJob id of each triggerer process."""

    def __init__(
        self, stack: AirflowStack, postgres: PostgresServer, redis: RedisServer, emulator: EmulatorProcess
    ) -> None:
        self.stack = stack
        self.postgres = postgres
        self.redis = redis
        self.emulator = emulator
        self.triggerer_jobs: dict[str, int] = {}
        # Outside an injected failure no service may exit: a wait fails at once, with the logs.
        stack.fail_on_exit = True

    def running_triggerer_jobs(self) -> list[int]:
        rows = self.postgres.query(
            "SELECT id FROM job WHERE job_type = 'TriggererJob' AND state = 'running' ORDER BY id"
        )
        return [row[0] for row in rows]

    def start(self) -> None:
        """Every service; the triggerers one after the other, so each job id is known to be its own."""
        self.stack.migrate()
        for name in self.stack.services:
            if name not in TRIGGERERS:
                self.stack.start(name)
        for name in TRIGGERERS:
            self.start_triggerer(name)
        self.stack.wait_for(self.stack._api_up, timeout=120, what="api-server to answer")

    def start_triggerer(self, name: str) -> int:
        """Start one triggerer and return the id of the TriggererJob it registers."""
        known = set(self.triggerer_jobs.values())
        self.stack.start(name)
        (self.triggerer_jobs[name],) = self.stack.wait_for(
            lambda: [job for job in self.running_triggerer_jobs() if job not in known],
            timeout=120,
            what=f"{name} to register its TriggererJob",
        )
        return self.triggerer_jobs[name]

    def dump(self) -> str:
        return self.stack.dump()


@pytest.fixture(scope="session")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    if missing := missing_servers():
        pytest.fail(f"deployment tests need {', '.join(missing)}: {INSTALL_HINT}", pytrace=False)
    started = time.monotonic()
    logs = tmp_path_factory.mktemp("deployment-logs")
    postgres = PostgresServer()
    redis: RedisServer | None = None
    emulator: EmulatorProcess | None = None
    stack: AirflowStack | None = None
    try:
        postgres.init()
        redis = RedisServer(logs)
        emulator = EmulatorProcess(logs, scenario=SCENARIO, speedup=1.0)
        stack = AirflowStack.celery(
            tmp_path_factory.mktemp("airflow-home"),
            DAGS_FOLDER,
            {"AIRFLOW_CONN_SMARTFLOWS_DEFAULT": json.dumps(emulator.connection()), **LOWERED_SETTINGS},
            extra_logs=[emulator.log_path, redis.log_path, postgres.log_path],
            database_url=postgres.url,
            broker_url=redis.url,
            workers=2,
            triggerers=len(TRIGGERERS),
            worker_concurrency=WORKER_CONCURRENCY,
        )
        deployment = Deployment(stack, postgres, redis, emulator)
        deployment.start()
        print(
            f"\ndeployment up in {time.monotonic() - started:.0f} s: triggerer jobs {deployment.triggerer_jobs}"
        )
        yield deployment
    finally:
        if stack is not None:
            stack.stop_all()
        if emulator is not None:
            emulator.stop()
        if redis is not None:
            redis.stop()
        postgres.destroy()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, None, None]:
    """Attach the services' log tails to every failure that does not carry them already."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    deployment = getattr(item, "funcargs", {}).get("deployment")
    if (
        report.failed
        and isinstance(deployment, Deployment)
        and "===== scheduler.log" not in str(report.longrepr)
    ):
        report.sections.append(
            ("Airflow services, emulator, Redis, PostgreSQL (log tails)", deployment.dump())
        )
