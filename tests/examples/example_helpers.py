"""Helpers of the example-DAG tests: load a file of ``dags_examples/``, run it, read what it left."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

EXAMPLES = Path(__file__).resolve().parents[2] / "dags_examples"
#: The AWS connection and bucket of the ``s3_client`` fixture (moto server). The conn id is not
#: shared with other test folders: ObjectStoragePath caches one filesystem per conn id per process.
S3_CONN_ID = "aws_examples"
S3_BUCKET = "letters"

_loaded = 0


def load_example(name: str) -> Any:
    """Import ``dags_examples/<name>.py`` afresh (new operator and callback objects) as a module."""
    global _loaded
    _loaded += 1
    spec = importlib.util.spec_from_file_location(f"example_{name}_{_loaded}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class ExampleRun:
    """One ``dag.test()`` run of an example, and what the emulator recorded right after it."""

    dag_run: Any
    states: dict[str, str]
    tries: dict[str, int]
    executions: list[dict[str, Any]]
    requests: list[dict[str, Any]]
    errors: dict[str, list[BaseException]] = field(default_factory=dict)

    def xcom(self, task_id: str, key: str = "return_value", map_index: int = -1) -> Any:
        from airflow.utils.session import create_session
        from sqlalchemy import select

        from airflow_provider_smartflows.version_compat import AIRFLOW_VERSION

        airflow_3 = int(AIRFLOW_VERSION.split(".")[0]) >= 3

        if not airflow_3:
            from airflow.models.xcom import XCom

            return XCom.get_one(
                dag_id=self.dag_run.dag_id,
                run_id=self.dag_run.run_id,
                task_id=task_id,
                key=key,
                map_index=map_index,
            )
        from airflow.models.xcom import XComModel

        with create_session() as session:
            row = session.scalars(
                select(XComModel).where(
                    XComModel.dag_id == self.dag_run.dag_id,
                    XComModel.run_id == self.dag_run.run_id,
                    XComModel.task_id == task_id,
                    XComModel.map_index == map_index,
                    XComModel.key == key,
                )
            ).one_or_none()
            return None if row is None else XComModel.deserialize_value(row)

    def error(self, task_id: str) -> BaseException:
        """The exception of the task's last failed try."""
        errors = self.errors.get(task_id)
        assert errors, f"task {task_id} raised nothing (state {self.states.get(task_id)})"
        return errors[-1]


def _ti_key(ti: Any) -> str:
    return ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"


def _with(existing: Any, extra: Callable[[Any], None]) -> list[Any]:
    if not existing:
        return [extra]
    return [*existing, extra] if isinstance(existing, list) else [existing, extra]


def run_example(dag: Any, emulator: Any, **test_kwargs: Any) -> ExampleRun:
    """
    Run ``dag`` with ``dag.test()`` (the ``airflow_db`` fixture must be active).

    Unlike ``tests.support.dag_runs.run_dag``, the DAG's own callbacks stay in place (a recorder
    of exceptions is appended), so the examples' alerting callbacks run for real. A mapped task's
    instances are keyed ``task_id[map_index]``.
    """
    from airflow_provider_smartflows.version_compat import AIRFLOW_VERSION
    from tests.support.dag_runs import ErrorRecorder, _register, listening

    airflow_3 = int(AIRFLOW_VERSION.split(".")[0]) >= 3

    recorder = ErrorRecorder()
    for task in dag.tasks:
        task.on_failure_callback = _with(task.on_failure_callback, recorder.callback)
        task.on_retry_callback = _with(task.on_retry_callback, recorder.callback)
    emulator.reset()
    _register(dag)
    if not airflow_3 and "logical_date" in test_kwargs:
        test_kwargs["execution_date"] = test_kwargs.pop("logical_date")  # Airflow 2's name
    with listening(recorder):
        dag_run = dag.test(**test_kwargs)
    tis = dag_run.get_task_instances()
    return ExampleRun(
        dag_run=dag_run,
        states={_ti_key(ti): str(ti.state) for ti in tis},
        tries={_ti_key(ti): ti.try_number for ti in tis},
        executions=list(emulator.executions),
        requests=list(emulator.requests),
        errors=recorder.errors(),
    )
