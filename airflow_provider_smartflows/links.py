"""Extra link from a task to its Smart Flows execution."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.providers.common.compat.sdk import BaseOperatorLink, XCom

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import BaseOperator, TaskInstanceKey

#: XCom key under which the run operator and the sensor push the execution's id.
XCOM_EXECUTION_ID = "execution_id"
#: XCom key under which the operators push the execution's UI link. The URL itself is built by the
#: hook from the connection extra ``execution_url_template`` (default
#: ``{base_url}/executions/{execution_id}``).
XCOM_EXECUTION_URL = "execution_url"


class SmartFlowsExecutionLink(BaseOperatorLink):
    """The "Smart Flows execution" button: the URL pushed to XCom as ``execution_url``."""

    name = "Smart Flows execution"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        url = XCom.get_value(key=XCOM_EXECUTION_URL, ti_key=ti_key)
        return url if isinstance(url, str) else ""
