"""Run DAGs with real Airflow (``dag.test()``) in the tests: a SQLite metadata DB per session.

``tests/conftest.py`` points ``AIRFLOW_HOME`` at a throw-away folder before Airflow is imported
(one per pytest process, so one per xdist worker); this module creates the metadata tables there
once (``initdb``: a create-all plus stamp, about a second) and registers each test's DAG in the
DB, which ``dag.test()`` needs. Deferred tasks run their trigger in-process (``dag.test()``'s
inline triggerer), task retries happen for real, and ``task_state_store`` (Airflow >= 3.3) is the
metadata DB's.

``tests/conftest.py`` loads this module as a plugin, so the ``airflow_db`` and ``run_dag``
fixtures are everywhere; a test that uses them runs ``dag.test()`` and is ``slow`` (marked in its
file; ``tests/conftest.py`` adds the mark where it was forgotten). ``make_dag`` builds the DAG."""

from __future__ import annotations

import contextlib
import datetime
import inspect
import logging
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest
from airflow.listeners import hookimpl

from airflow_provider_smartflows.version_compat import AIRFLOW_VERSION

AIRFLOW_V_3_0_PLUS = int(AIRFLOW_VERSION.split(".")[0]) >= 3

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator


@dataclass
class DagResult:
    """What a ``dag.test()`` run left behind."""

    dag_run: Any
    states: dict[str, str]
    tries: dict[str, int]
    errors: dict[str, list[BaseException]] = field(default_factory=dict)

    def xcom(self, task_id: str, key: str = "return_value") -> Any:
        from airflow.utils.session import create_session
        from sqlalchemy import select

        if not AIRFLOW_V_3_0_PLUS:
            from airflow.models.xcom import XCom

            return XCom.get_one(
                dag_id=self.dag_run.dag_id, run_id=self.dag_run.run_id, task_id=task_id, key=key
            )
        from airflow.models.xcom import XComModel

        with create_session() as session:
            row = session.scalars(
                select(XComModel)
                .where(
                    XComModel.dag_id == self.dag_run.dag_id,
                    XComModel.run_id == self.dag_run.run_id,
                    XComModel.task_id == task_id,
                    XComModel.key == key,
                )
                .order_by(XComModel.timestamp.desc())
            ).first()
            return None if row is None else XComModel.deserialize_value(row)

    def error(self, task_id: str) -> BaseException:
        """The exception of the task's last failed try."""
        errors = self.errors.get(task_id)
        assert errors, f"task {task_id} raised nothing (state {self.states.get(task_id)})"
        return errors[-1]


@pytest.fixture(scope="session")
def airflow_db(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Create the metadata tables once per session (AIRFLOW_HOME is a temp folder)."""
    import os

    dags_folder = tmp_path_factory.mktemp("dags")
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(dags_folder)
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    from airflow.utils import db

    # Airflow 2's migrations run alembic's fileConfig(), which replaces the root logger's handlers
    # (stderr, WARNING): keep Airflow's, so later tests still see log lines on stdout.
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    db.initdb()
    root.setLevel(level)
    root.handlers[:] = handlers


def _register(dag: Any) -> None:
    if not AIRFLOW_V_3_0_PLUS:
        # Airflow 2's dag.test() needs no serialized DAG: the DagModel and outlet dataset rows do.
        dag.sync_to_db()
        return
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.collection import update_dag_parsing_results_in_db
    from airflow.utils.session import create_session

    DagBundlesManager().sync_bundles_to_db()
    kwargs: dict[str, Any] = {"import_errors": {}, "warnings": set()}
    # Airflow >= 3.1 takes the parse duration (positional before `warnings`); 3.0 has none.
    if "parse_duration" in inspect.signature(update_dag_parsing_results_in_db).parameters:
        kwargs["parse_duration"] = None
    with create_session() as session:
        update_dag_parsing_results_in_db("dags-folder", None, [_serialized(dag)], session=session, **kwargs)


def _serialized(dag: Any) -> Any:
    """The DAG as the DAG processor hands it to the DB (``LazyDeserializedDAG``)."""
    from airflow.serialization.serialized_objects import LazyDeserializedDAG

    if hasattr(LazyDeserializedDAG, "from_dag"):
        return LazyDeserializedDAG.from_dag(dag)
    # Airflow 3.0: no from_dag; serializing needs the file's path relative to the bundle.
    from airflow.serialization.serialized_objects import SerializedDAG

    dag.relative_fileloc = os.path.basename(dag.fileloc)
    return LazyDeserializedDAG(data=SerializedDAG.to_dict(dag))


class ErrorRecorder:
    """Each task try's exception, from the failure/retry callbacks' context and, where the
    in-process run does not put ``exception`` in that context (Airflow 3.0's ``dag.test()``),
    from Airflow's task-instance listener. One entry per (task, map index, try)."""

    def __init__(self) -> None:
        self.by_try: dict[str, dict[tuple[int, int], BaseException]] = {}

    def add(self, ti: Any, error: Any) -> None:
        if isinstance(error, BaseException):
            key = (getattr(ti, "map_index", -1), ti.try_number)
            self.by_try.setdefault(ti.task_id, {}).setdefault(key, error)

    def callback(self, context: Any) -> None:
        self.add(context["ti"], context.get("exception"))

    @hookimpl
    def on_task_instance_failed(self, previous_state: Any, task_instance: Any, error: Any) -> None:
        self.add(task_instance, error)

    def errors(self) -> dict[str, list[BaseException]]:
        return {task: [tries[k] for k in sorted(tries)] for task, tries in self.by_try.items()}


@contextlib.contextmanager
def listening(recorder: ErrorRecorder) -> Iterator[None]:
    if not AIRFLOW_V_3_0_PLUS:
        yield
        return
    from airflow.listeners.listener import get_listener_manager

    manager = get_listener_manager()
    manager.add_listener(recorder)
    try:
        yield
    finally:
        manager.pm.unregister(recorder)


@pytest.fixture
def run_dag(airflow_db: None) -> Callable[..., DagResult]:
    """Run one DAG with ``dag.test()``; record each task's exceptions (``ErrorRecorder``)."""

    def run(dag: Any, **test_kwargs: Any) -> DagResult:
        recorder = ErrorRecorder()
        for task in dag.tasks:
            task.on_failure_callback = [recorder.callback]
            task.on_retry_callback = [recorder.callback]
        _register(dag)
        with listening(recorder):
            dag_run = dag.test(**test_kwargs)
        tis = dag_run.get_task_instances()
        return DagResult(
            dag_run=dag_run,
            states={ti.task_id: str(ti.state) for ti in tis},
            tries={ti.task_id: ti.try_number for ti in tis},
            errors=recorder.errors(),
        )

    return run


_counter = 0


def make_dag(dag_id_prefix: str, build: Callable[[], Any], **dag_kwargs: Any) -> Any:
    """A DAG with a unique id whose tasks ``build()`` creates inside the DAG context."""
    from airflow.providers.common.compat.sdk import DAG

    global _counter
    _counter += 1
    dag_id = f"{dag_id_prefix}_{_counter}"
    with DAG(
        dag_id,
        schedule=None,
        start_date=datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc),
        catchup=False,
        **dag_kwargs,
    ) as dag:
        build()
    return dag
