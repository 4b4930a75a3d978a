"""The one retry policy of both hooks: which failures are retried, and how long to wait."""

from __future__ import annotations

import email.utils
import time
from typing import Any

import tenacity

from airflow_provider_smartflows.exceptions import SmartFlowsApiError
from airflow_provider_smartflows.validation import check_int, check_number

#: Statuses worth another try: the server or a proxy in front of it was briefly unable to answer.
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
#: Statuses that prove the server did not act on the request (safe to resend a POST).
NOT_ACTED_STATUSES = frozenset({429, 503})
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE", "PUT"})


def is_retryable(method: str, status_code: int | None, *, request_sent: bool = True) -> bool:
    """The one retry decision of both hooks.

    Idempotent calls (GET, DELETE) are retried on network errors and 429/500/502/503/504. A POST
    is retried only when the server provably did not act on it: the connection was never
    established, or the answer was 429/503. Never after a timeout, reset or 500 once sent.
    """
    if method.upper() in IDEMPOTENT_METHODS:
        return status_code is None or status_code in RETRYABLE_STATUSES
    if status_code is None:
        return not request_sent
    return status_code in NOT_ACTED_STATUSES


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date); None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class RetryWait(tenacity.wait.wait_base):
    """Exponential backoff with jitter, or the server's Retry-After; capped by max_retry_delay."""

    def __init__(self, retry_delay: float, max_retry_delay: float) -> None:
        self.max_retry_delay = max_retry_delay
        # wait_exponential + wait_random rather than wait_exponential_jitter: its arguments changed
        # between the tenacity versions this provider supports.
        self.backoff = tenacity.wait_exponential(
            multiplier=retry_delay, max=max_retry_delay
        ) + tenacity.wait_random(0, retry_delay)

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        error = _failure(retry_state)
        if error is not None and error.retry_after is not None:
            return float(min(error.retry_after, self.max_retry_delay))
        return float(min(self.backoff(retry_state), self.max_retry_delay))


def _failure(retry_state: tenacity.RetryCallState) -> SmartFlowsApiError | None:
    """The failure being retried (only a :class:`SmartFlowsApiError` is: see :func:`_should_retry`)."""
    error = retry_state.outcome.exception() if retry_state.outcome else None
    return error if isinstance(error, SmartFlowsApiError) else None


def _should_retry(error: BaseException) -> bool:
    return isinstance(error, SmartFlowsApiError) and error.retryable


def retry_arguments(
    *, retry_limit: int, retry_delay: float, max_retry_delay: float, log: Any
) -> dict[str, Any]:
    """Keyword arguments for ``tenacity.Retrying`` / ``AsyncRetrying``, shared by both hooks."""

    def log_retry(retry_state: tenacity.RetryCallState) -> None:
        error = _failure(retry_state)
        sleep = retry_state.next_action.sleep if retry_state.next_action else 0.0
        log.warning(
            "Smart Flows %s %s failed (%s); retry %d of %d in %.2f s",
            error.method if error else "?",
            error.path if error else "?",
            (error.reason if error else None) or type(error).__name__,
            retry_state.attempt_number,
            retry_limit,
            sleep,
        )

    return {
        "stop": tenacity.stop_after_attempt(retry_limit + 1),
        "wait": RetryWait(retry_delay, max_retry_delay),
        "retry": tenacity.retry_if_exception(_should_retry),
        "before_sleep": log_retry,
        "reraise": True,
    }


def check_retry_arguments(retry_limit: int, retry_delay: float, max_retry_delay: float) -> None:
    check_int("retry_limit", retry_limit, minimum=0)
    check_number("retry_delay", retry_delay, minimum=0, unit="a number of seconds")
    check_number("max_retry_delay", max_retry_delay, minimum=0, unit="a number of seconds")
