"""Every error class of the Smart Flows provider.

All classes take the message as their only positional argument and everything else as keyword
arguments with defaults, so that pickling and Airflow's ``serialize()`` round-trip them. Messages
are built by the hooks and never contain the API key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException

if TYPE_CHECKING:
    from collections.abc import Sequence


class SmartFlowsError(AirflowException):
    """Base class of every Smart Flows provider error."""

    def __init__(self, message: str = "", **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        for name, value in fields.items():
            setattr(self, name, value)
        self._fields = tuple(fields)

    def fields(self) -> dict[str, Any]:
        """Return the structured attributes of the error (everything but the message)."""
        return {name: getattr(self, name) for name in self._fields}

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self.fields()))

    def serialize(self) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
        cls = type(self)
        return f"{cls.__module__}.{cls.__name__}", (self.message,), self.fields()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


def _rebuild(cls: type[SmartFlowsError], message: str, fields: dict[str, Any]) -> SmartFlowsError:
    return cls(message, **fields)


class SmartFlowsApiError(SmartFlowsError):
    """The Smart Flows API answered with an error, an unusable body, or could not be reached."""

    status_code: int | None  # type: ignore[assignment]
    method: str | None
    path: str | None
    body_excerpt: str | None
    retryable: bool
    conn_id: str | None
    retry_after: float | None
    #: A start POST that may have created an execution (no usable answer): never resend it blindly.
    may_have_started: bool = False
    #: Executions that may be that start's, when reconciling could not tell: ``{"id", "createdAt"}``.
    candidates: list[dict[str, str]] | None = None

    def __init__(
        self,
        message: str = "",
        *,
        status_code: int | None = None,
        method: str | None = None,
        path: str | None = None,
        body_excerpt: str | None = None,
        retryable: bool = False,
        conn_id: str | None = None,
        retry_after: float | None = None,
        **fields: Any,
    ) -> None:
        super().__init__(
            message,
            status_code=status_code,
            method=method,
            path=path,
            body_excerpt=body_excerpt,
            retryable=retryable,
            conn_id=conn_id,
            retry_after=retry_after,
            **fields,
        )


class SmartFlowsConnectionError(SmartFlowsApiError):
    """The server could not be reached or dropped the connection (refused, reset, timeout)."""

    request_sent: bool

    def __init__(self, message: str = "", *, request_sent: bool = True, **fields: Any) -> None:
        super().__init__(message, request_sent=request_sent, **fields)


class SmartFlowsStartUnknownError(SmartFlowsApiError, AirflowFailException):
    """A start request may have created an execution: the task fails without Airflow retries."""


class SmartFlowsBatchError(SmartFlowsError, AirflowFailException):
    """A batch ended with more failed records than allowed: its manifest lists them."""


class SmartFlowsAuthError(SmartFlowsApiError):
    """The API key was refused (401) or lacks the rights for the call (403)."""


class SmartFlowsNotFoundError(SmartFlowsApiError):
    """The execution, document or flow does not exist (404), or was purged by the server."""


class SmartFlowsExecutionError(SmartFlowsError):
    """A flow execution finished without success (Error, Canceled, Interrupted, ...)."""

    execution_id: str | None
    status: str | None
    messages: list[str]
    url: str | None

    def __init__(
        self,
        message: str | None = None,
        *,
        execution_id: str | None = None,
        status: str | None = None,
        messages: Sequence[str] = (),
        url: str | None = None,
        **fields: Any,
    ) -> None:
        messages = list(messages)
        if message is None:
            detail = "; ".join(messages) if messages else "the server gave no error details"
            message = f"Smart Flows execution {execution_id} ended with status {status}: {detail}."
            if url:
                message += f" See {url}"
        super().__init__(
            message, execution_id=execution_id, status=status, messages=messages, url=url, **fields
        )


class SmartFlowsTimeoutError(SmartFlowsError):
    """A flow execution did not reach a final status within the allowed time."""


class SmartFlowsInputError(SmartFlowsError, ValueError):
    """An argument or connection setting is invalid; raised before any request is sent."""


class SmartFlowsDownloadError(SmartFlowsError):
    """A document download failed (truncated body, size mismatch, target already exists)."""
