"""Extra link from a task to its Smart Flows execution."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseOperatorLink, XCom

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import BaseOperator, TaskInstanceKey

#: XCom key under which the run operator and the sensor push the execution's id.
XCOM_EXECUTION_ID = "execution_id"
#: XCom key under which the operators push the execution's UI link. The URL itself is built by the
#: hook from the connection extra ``execution_url_template`` (default
#: ``{base_url}/executions/{execution_id}``).
XCOM_EXECUTION_URL = "execution_url"
#: Attribute under which the task remembers, in the worker's process, the URL it pushed.
_PUSHED_URL_ATTRIBUTE = "_smartflows_pushed_execution_url"


def remember_execution_url(task: Any, url: str) -> None:
    """Record on the task object that this process pushed ``url`` as ``execution_url``."""
    setattr(task, _PUSHED_URL_ATTRIBUTE, url)


def _never_written(operator: Any, ti_key: Any) -> bool:
    """True when the task runner asks for the link of a try that never pushed the URL.

    Airflow 3's task runner calls ``get_link`` at the end of every try with its running task
    instance, and looking up an absent XCom logs ``[error] XCom not found``: under a failure before
    the start that second error misleads. The XComs of a try are cleared when it starts, except
    when it resumes from a deferral; so a try that did not push the URL in this process, and did not
    resume from a deferral, never wrote it.
    """
    server_context = getattr(ti_key, "_ti_context_from_server", None)
    if server_context is None:  # the UI / webserver with a TaskInstanceKey: look it up
        return False
    if getattr(operator, _PUSHED_URL_ATTRIBUTE, None) is not None:
        return False
    return not getattr(server_context, "next_method", None)


class SmartFlowsExecutionLink(BaseOperatorLink):
    """The "Smart Flows execution" button: the URL pushed to XCom as ``execution_url``."""

    name = "Smart Flows execution"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        pushed = getattr(operator, _PUSHED_URL_ATTRIBUTE, None)
        if isinstance(pushed, str):
            return pushed
        if _never_written(operator, ti_key):
            return ""
        url = XCom.get_value(key=XCOM_EXECUTION_URL, ti_key=ti_key)
        return url if isinstance(url, str) else ""
