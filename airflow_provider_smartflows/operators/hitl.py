"""Smart Flows forms answered by a person in Airflow, importable from their historical path.

``user_input="ask"`` and :class:`AskInAirflow` are described in
:mod:`airflow_provider_smartflows.human_bridge`, where the worker side of a person's answer lives
(:class:`~airflow_provider_smartflows.human_bridge.HumanInputBridge`); this module re-exports it.
``SmartFlowsHumanInputMixin`` names the one worker-side wait mixin, which resumes from a person's
answer too.
"""

from __future__ import annotations

from airflow_provider_smartflows.human_bridge import (
    ASK,
    XCOM_REQUEST_FORM,
    AskInAirflow,
    HumanInputBridge,
    ask_settings,
    check_ask_available,
)
from airflow_provider_smartflows.worker_wait import SmartFlowsExecutionWaitMixin

#: The worker side of a person's answer is part of the one worker-side wait.
SmartFlowsHumanInputMixin = SmartFlowsExecutionWaitMixin

__all__ = [
    "ASK",
    "XCOM_REQUEST_FORM",
    "AskInAirflow",
    "HumanInputBridge",
    "SmartFlowsHumanInputMixin",
    "ask_settings",
    "check_ask_available",
]
