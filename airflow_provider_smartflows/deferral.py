"""Airflow's own timeout (``execution_timeout``) of a task that waits deferred.

Airflow 2 folds ``execution_timeout`` into the deferral's timeout; Airflow 3 does so only for a
task that starts in the triggerer: a deferral made on the worker waits past it (the execution API
leaves it "to handle later"). Every deferral of this provider therefore passes what is left of
``execution_timeout`` as its own timeout (:func:`airflow_timeout_left`), so the limit holds on every
line. When it passes, Airflow resumes the task only to fail it (``next_method="__fail__"``):
neither ``execute_complete`` nor ``on_kill`` runs, so the tasks override ``resume_execution`` and
recognise that resume with :func:`is_deferral_timeout` (then cancel their executions). Airflow 2
never calls ``resume_execution`` for it once ``execution_timeout`` has passed (it raises
``AirflowTaskTimeout`` first), but it calls ``pre_execute`` before, with the task instance's
``next_method`` at hand: :func:`resume_timed_out_deferral` hands that resume over there.
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

#: The ``next_method`` Airflow resumes a deferred task with when its trigger failed or timed out.
TRIGGER_FAIL = "__fail__"


def is_deferral_timeout(next_method: str, next_kwargs: Mapping[str, Any] | None) -> bool:
    """Whether Airflow resumes a deferred task only to fail it at its timeout: ``error`` is
    ``"Trigger timeout"`` on Airflow 3 and ``"Trigger/execution timeout"`` on Airflow 2."""
    if next_method != TRIGGER_FAIL:
        return False
    return "timeout" in str((next_kwargs or {}).get("error", "")).lower()


def airflow_timeout_text(task: Any) -> str:
    """``execution_timeout=0:00:05`` (what Airflow's timeout of a deferred task was)."""
    limit = getattr(task, "execution_timeout", None)
    return f"execution_timeout={limit}" if limit else "the deferral's timeout"


def airflow_timeout_left(task: Any, context: Mapping[str, Any]) -> datetime.timedelta | None:
    """What is left of the task's ``execution_timeout`` (counted from the task instance's start,
    which a resume from a deferral keeps), at least one second; None without one."""
    limit = getattr(task, "execution_timeout", None)
    if not isinstance(limit, datetime.timedelta):
        return None
    started = getattr(context.get("ti"), "start_date", None)
    if not isinstance(started, datetime.datetime):
        return limit
    if started.tzinfo is None:
        started = started.replace(tzinfo=datetime.timezone.utc)
    left = started + limit - datetime.datetime.now(datetime.timezone.utc)
    return max(left, datetime.timedelta(seconds=1))


def resume_timed_out_deferral(task: Any, context: Mapping[str, Any]) -> None:
    """From ``pre_execute``: a resume that only fails the task at Airflow's timeout goes to the
    task's ``resume_execution`` now (it raises). Airflow 2 would otherwise fail the task with a
    bare ``AirflowTaskTimeout`` before any of the task's code ran; on Airflow 3 the task instance
    carries no ``next_method`` here and ``resume_execution`` is called as usual."""
    ti = context.get("ti")
    next_method = getattr(ti, "next_method", None)
    next_kwargs = getattr(ti, "next_kwargs", None)
    if isinstance(next_method, str) and is_deferral_timeout(next_method, next_kwargs):
        task.resume_execution(next_method, next_kwargs, context)
