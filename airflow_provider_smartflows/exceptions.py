"""Every error class of the Smart Flows provider, with its fields declared.

A field is a class-level annotation with a default: ``err.may_have_started`` and
``err.retryable`` can be read on any provider error, and a keyword that is not a declared field
is refused (a typo would otherwise create a field nobody reads). All classes take the message as
their only positional argument and the fields as keyword arguments, so that pickling and
Airflow's ``serialize()`` round-trip them. Messages are built by the hooks and never contain the
API key.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException

if TYPE_CHECKING:
    from collections.abc import Sequence


class SmartFlowsError(AirflowException):
    """Base class of every Smart Flows provider error."""

    #: Another attempt of the same call may succeed (the hooks' retry policy reads it).
    retryable: bool = False
    #: A start POST that may have created an execution (no usable answer): never resend it blindly.
    may_have_started: bool = False
    #: The names of the declared fields, set for each class when it is created.
    _field_names: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._field_names = _declared_fields(cls)

    def __init__(self, message: str = "", **fields: Any) -> None:
        unknown = sorted(set(fields) - set(self._field_names))
        if unknown:
            raise TypeError(f"{type(self).__name__} has no field {', '.join(map(repr, unknown))}")
        super().__init__(message)
        self.message = message
        for name, value in fields.items():
            setattr(self, name, value)

    def fields(self) -> dict[str, Any]:
        """Return the declared fields of the error (everything but the message) and their values."""
        return {name: getattr(self, name) for name in self._field_names}

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self.fields()))

    def serialize(self) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
        cls = type(self)
        return f"{cls.__module__}.{cls.__name__}", (self.message,), self.fields()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


def _declared_fields(cls: type[SmartFlowsError]) -> tuple[str, ...]:
    """The fields ``cls`` declares: its annotations and its Smart Flows bases', bases first."""
    names: dict[str, None] = {}
    for klass in reversed(cls.__mro__):
        if issubclass(klass, SmartFlowsError):
            names.update(dict.fromkeys(n for n in inspect.get_annotations(klass) if not n.startswith("_")))
    return tuple(names)


SmartFlowsError._field_names = _declared_fields(SmartFlowsError)


def _rebuild(cls: type[SmartFlowsError], message: str, fields: dict[str, Any]) -> SmartFlowsError:
    return cls(message, **fields)


class SmartFlowsApiError(SmartFlowsError):
    """The Smart Flows API answered with an error, an unusable body, or could not be reached."""

    status_code: int | None = None  # type: ignore[assignment]
    method: str | None = None
    path: str | None = None
    body_excerpt: str | None = None
    conn_id: str | None = None
    #: Seconds the server asked to wait (``Retry-After``).
    retry_after: float | None = None
    #: What went wrong, in a few words: ``"HTTP 500"``, ``"connection reset"``, ``"read timeout"``.
    reason: str | None = None
    #: Whether the request left this machine (False: refused or failed before it was sent).
    request_sent: bool = True
    #: Executions that may be that start's, when reconciling could not tell: ``{"id", "createdAt"}``.
    candidates: list[dict[str, str]] | None = None


class SmartFlowsConnectionError(SmartFlowsApiError):
    """The server could not be reached or dropped the connection (refused, reset, timeout)."""


class SmartFlowsStartUnknownError(SmartFlowsApiError, AirflowFailException):
    """A start request may have created an execution: the task fails without Airflow retries."""


class SmartFlowsBatchError(SmartFlowsError, AirflowFailException):
    """A batch ended with more failed records than allowed: its manifest lists them."""


class SmartFlowsAuthError(SmartFlowsApiError):
    """The API key was refused (401) or lacks the rights for the call (403)."""


class SmartFlowsNotFoundError(SmartFlowsApiError):
    """The execution, document or flow does not exist (404), or was purged by the server."""


class SmartFlowsExecutionGoneError(SmartFlowsNotFoundError):
    """An execution a task waits for no longer exists (404): purged by the server's clean-up, or deleted."""

    execution_id: str | None = None


class SmartFlowsExecutionError(SmartFlowsError):
    """A flow execution finished without success (Error, Canceled, Interrupted, ...)."""

    execution_id: str | None = None
    status: str | None = None
    messages: list[str]
    url: str | None = None

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


class SmartFlowsCallbackError(SmartFlowsError):
    """A callback could not resume an execution: unknown, not ``Waiting``, or the callback refused."""

    execution_id: str | None = None
    callback_id: str | None = None
    #: The execution's status when the callback was checked or sent.
    status: str | None = None
    #: The server's HTTP status when it refused the callback (or did not know the execution).
    http_status: int | None = None


class SmartFlowsTimeoutError(SmartFlowsError):
    """A flow execution did not reach a final status within the allowed time."""

    execution_id: str | None = None
    status: str | None = None


class SmartFlowsInputError(SmartFlowsError, ValueError):
    """An argument or connection setting is invalid; raised before any request is sent."""


class SmartFlowsFlowNameError(SmartFlowsInputError):
    """A ``flow_name`` names no flow, or several; raised before anything starts."""


class SmartFlowsDownloadError(SmartFlowsError):
    """A document download failed (truncated body, size mismatch, target already exists)."""

    document_id: str | None = None
    #: The target's URI.
    uri: str | None = None
    bucket: str | None = None
    conn_id: str | None = None


class SmartFlowsDocumentGoneError(SmartFlowsDownloadError, AirflowFailException):
    """The document to download no longer exists (404): purged by the server's clean-up, or deleted.

    Airflow does not retry it: the document does not come back (run the flow again for a new one).
    """


class SmartFlowsDocumentExpiredError(SmartFlowsDownloadError, AirflowFailException):
    """The document's ``expiration`` has passed: the server's clean-up removes it (never retried)."""

    #: The document's expiration, ISO 8601 (UTC).
    expiration: str | None = None


class SmartFlowsListingError(SmartFlowsError):
    """A paged listing could not be read to its end (too many pages, a server ignoring ``page``)."""

    #: The hook call and route, e.g. ``list_flows (GET /api/v1/flows)``.
    call: str | None = None
    pages: int | None = None
