"""Former home of what both hooks share; kept so that existing imports keep working.

New code imports from the modules that own each name: :mod:`.connection` (the connection and its
extras), :mod:`.inputs` (argument checks), :mod:`.retry` (the retry policy), :mod:`.errors` (error
building) and :mod:`.api` (routes, requests, answers).
"""

from __future__ import annotations

from airflow_provider_smartflows.hooks.connection import (
    ALLOWED_EXTRAS,
    API_PREFIX,
    DEFAULT_CONN_ID,
    DEFAULT_TIMEOUT,
    USER_AGENT,
    ConnectionSettings,
    build_base_url,
)
from airflow_provider_smartflows.hooks.errors import (
    TLS_UNTRUSTED,
    body_excerpt,
    caused_by,
    connection_error,
    error_from_status,
    may_have_started_error,
)
from airflow_provider_smartflows.hooks.inputs import (
    MAX_ID_LENGTH,
    MAX_WAIT_SECONDS,
    prepare_start_body,
    validate_id,
    validate_wait_seconds,
)
from airflow_provider_smartflows.hooks.options import SmartFlowsHookOptions
from airflow_provider_smartflows.hooks.retry import (
    IDEMPOTENT_METHODS,
    NOT_ACTED_STATUSES,
    RETRYABLE_STATUSES,
    RetryWait,
    check_retry_arguments,
    is_retryable,
    parse_retry_after,
    retry_arguments,
)

__all__ = [
    "ALLOWED_EXTRAS",
    "API_PREFIX",
    "DEFAULT_CONN_ID",
    "DEFAULT_TIMEOUT",
    "IDEMPOTENT_METHODS",
    "MAX_ID_LENGTH",
    "MAX_WAIT_SECONDS",
    "NOT_ACTED_STATUSES",
    "RETRYABLE_STATUSES",
    "TLS_UNTRUSTED",
    "USER_AGENT",
    "ConnectionSettings",
    "RetryWait",
    "SmartFlowsHookOptions",
    "body_excerpt",
    "build_base_url",
    "caused_by",
    "check_retry_arguments",
    "connection_error",
    "error_from_status",
    "is_retryable",
    "may_have_started_error",
    "parse_retry_after",
    "prepare_start_body",
    "retry_arguments",
    "validate_id",
    "validate_wait_seconds",
]
