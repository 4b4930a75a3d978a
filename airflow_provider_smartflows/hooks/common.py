"""What both Smart Flows hooks share: the ``smartflows`` connection, id and input checks, the
retry policy and error building. No I/O here.

Connection ``smartflows``: Host is the base URL (``https://acme.smartflows.xpertdoc.com``; a
bare host means https), Port optional, Password the API key. Extras (anything else is refused):

- ``verify``: true / false / path of a CA bundle (default true).
- ``timeout``: seconds per request (default 60). A long-poll waits ``wait_seconds`` more.
- ``proxies``: ``{"http": ..., "https": ...}`` or one URL for both.
- ``cancel_path``: ``"progress"`` (default) sends ``DELETE /flows/executions/{id}/progress``, the
  call of the vendor's generated SDK (built from the server's own Swagger spec);
  ``"execution"`` sends ``DELETE /flows/executions/{id}``, the variant of the prose docs. The
  default is the SDK's because that path names the progress resource (cancel returns a
  progress), whereas a DELETE on the execution itself may purge the record on some servers.
- ``execution_url_template``: link to an execution in the Smart Flows UI, with placeholders
  ``{base_url}`` and ``{execution_id}`` (default ``{base_url}/executions/{execution_id}``).
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import math
import re
import time
import unicodedata
import xml.parsers.expat
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import tenacity

from airflow_provider_smartflows import __version__
from airflow_provider_smartflows.exceptions import (
    SmartFlowsApiError,
    SmartFlowsAuthError,
    SmartFlowsConnectionError,
    SmartFlowsInputError,
    SmartFlowsNotFoundError,
)
from airflow_provider_smartflows.hooks.connection import DEFAULT_CONN_ID

API_PREFIX = "/api/v1"
DEFAULT_TIMEOUT = 60.0
MAX_WAIT_SECONDS = 3600
MAX_ID_LENGTH = 200
BODY_EXCERPT_CHARS = 300
USER_AGENT = f"airflow-provider-smartflows/{__version__}"
CANCEL_PATHS = {
    "progress": "/flows/executions/{execution_id}/progress",
    "execution": "/flows/executions/{execution_id}",
}
DEFAULT_CANCEL_PATH = "progress"
DEFAULT_EXECUTION_URL_TEMPLATE = "{base_url}/executions/{execution_id}"
ALLOWED_EXTRAS = ("verify", "timeout", "proxies", "cancel_path", "execution_url_template")
_EXTRA_PREFIX = "extra__smartflows__"  # how older Airflow UIs store custom form fields
#: Statuses worth another try: the server or a proxy in front of it was briefly unable to answer.
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
#: Statuses that prove the server did not act on the request (safe to resend a POST).
NOT_ACTED_STATUSES = frozenset({429, 503})
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE", "PUT"})


# --------------------------------------------------------------------------- connection settings


def _parse_bool_or_path(value: object, conn_id: str) -> bool | str:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "yes", "1", "on"):
            return True
        if lowered in ("false", "no", "0", "off"):
            return False
        return value.strip()
    raise SmartFlowsInputError(
        f"Connection {conn_id!r}: extra 'verify' must be true, false or a CA bundle path, not {value!r}."
    )


def _parse_timeout(value: object, conn_id: str) -> float:
    try:
        timeout = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        timeout = -1.0
    if isinstance(value, bool) or not timeout > 0:
        raise SmartFlowsInputError(
            f"Connection {conn_id!r}: extra 'timeout' must be a positive number of seconds, not {value!r}."
        )
    return timeout


def _parse_proxies(value: object, conn_id: str) -> dict[str, str]:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            with contextlib.suppress(ValueError):
                value = json.loads(text)
        else:
            return {"http": text, "https": text}
    if isinstance(value, Mapping) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        return dict(value)
    raise SmartFlowsInputError(
        f"Connection {conn_id!r}: extra 'proxies' must be a proxy URL or a JSON object such as "
        '{"https": "http://proxy:3128"}.'
    )


def build_base_url(host: str | None, port: int | None, conn_id: str) -> str:
    """Base URL from the connection's Host (scheme optional, https by default) and Port."""
    host = (host or "").strip()
    if not host:
        raise SmartFlowsInputError(
            f"Connection {conn_id!r} has no Host: set it to the Smart Flows base URL, "
            "e.g. https://acme.smartflows.xpertdoc.com."
        )
    if "://" not in host:
        host = f"https://{host}"
    parts = urlsplit(host)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SmartFlowsInputError(
            f"Connection {conn_id!r}: Host {host!r} is not an http(s) URL of a Smart Flows server."
        )
    netloc = parts.netloc.rsplit("@", 1)[-1]  # credentials never belong in the URL
    if port and parts.port is None:
        netloc = f"{netloc}:{port}"
    path = parts.path.rstrip("/")
    if path.endswith(API_PREFIX):
        path = path[: -len(API_PREFIX)]
    return f"{parts.scheme}://{netloc}{path}"


@dataclass(frozen=True)
class ConnectionSettings:
    """Everything a hook needs from a ``smartflows`` connection, validated."""

    conn_id: str
    base_url: str
    api_key: str = field(repr=False)
    verify: bool | str = True
    timeout: float = DEFAULT_TIMEOUT
    proxies: dict[str, str] = field(default_factory=dict)
    cancel_path: str = DEFAULT_CANCEL_PATH
    execution_url_template: str = DEFAULT_EXECUTION_URL_TEMPLATE

    @classmethod
    def from_connection(
        cls,
        conn_id: str,
        *,
        host: str | None,
        port: int | None,
        password: str | None,
        extra: Mapping[str, Any] | None,
        timeout: float | None = None,
    ) -> ConnectionSettings:
        """Validate a connection; an unknown extra or a missing key raises SmartFlowsInputError."""
        extras: dict[str, Any] = {}
        for key, value in (extra or {}).items():
            name = key[len(_EXTRA_PREFIX) :] if key.startswith(_EXTRA_PREFIX) else key
            if name not in ALLOWED_EXTRAS:
                raise SmartFlowsInputError(
                    f"Connection {conn_id!r} has an unknown extra {key!r}. "
                    f"Allowed extras: {', '.join(ALLOWED_EXTRAS)}."
                )
            if value is not None and value != "":  # UI forms store empty fields
                extras[name] = value
        if not password:
            raise SmartFlowsInputError(
                f"Connection {conn_id!r} has no API key: put the key of a Smart Flows user in its Password."
            )
        cancel_path = str(extras.get("cancel_path", DEFAULT_CANCEL_PATH)).strip().lower()
        if cancel_path not in CANCEL_PATHS:
            raise SmartFlowsInputError(
                f"Connection {conn_id!r}: extra 'cancel_path' must be one of {', '.join(CANCEL_PATHS)}, "
                f"not {extras['cancel_path']!r}."
            )
        template = str(extras.get("execution_url_template", DEFAULT_EXECUTION_URL_TEMPLATE))
        try:
            template.format(base_url="https://x", execution_id="x")
        except (KeyError, IndexError, ValueError) as err:
            raise SmartFlowsInputError(
                f"Connection {conn_id!r}: extra 'execution_url_template' may only use "
                f"{{base_url}} and {{execution_id}} ({err!r})."
            ) from None
        if timeout is None:
            timeout = _parse_timeout(extras["timeout"], conn_id) if "timeout" in extras else DEFAULT_TIMEOUT
        return cls(
            conn_id=conn_id,
            base_url=build_base_url(host, port, conn_id),
            api_key=password,
            verify=_parse_bool_or_path(extras["verify"], conn_id) if "verify" in extras else True,
            timeout=timeout,
            proxies=_parse_proxies(extras["proxies"], conn_id) if "proxies" in extras else {},
            cancel_path=cancel_path,
            execution_url_template=template,
        )

    @property
    def headers(self) -> dict[str, str]:
        return {"X-API-Key": self.api_key, "Accept": "application/json", "User-Agent": USER_AGENT}

    def execution_url(self, execution_id: str) -> str:
        return self.execution_url_template.format(
            base_url=self.base_url, execution_id=quote(execution_id, safe="")
        )

    def cancel_endpoint(self, execution_id: str) -> str:
        return CANCEL_PATHS[self.cancel_path].format(execution_id=quote(execution_id, safe=""))


# --------------------------------------------------------------------------- validation


_PLAIN_ID = re.compile(r"(?:[A-Za-z0-9_\-]|\.(?!\.))+")


def validate_id(value: object, kind: str) -> str:
    """Return ``value`` if it is a usable id of ``kind`` (execution, document, flow, dataset)."""
    if not isinstance(value, str) or not value:
        raise SmartFlowsInputError(f"The {kind} id must be a non-empty string, not {value!r}.")
    if len(value) > MAX_ID_LENGTH:
        raise SmartFlowsInputError(
            f"The {kind} id is {len(value)} characters long (at most {MAX_ID_LENGTH})."
        )
    # Plain ids (uuids, names) pass the cheap regex; others get the full check (unicode spaces,
    # control and format characters). This runs on every poll of every wait.
    bad = value == "." or (
        not _PLAIN_ID.fullmatch(value)
        and (
            "/" in value
            or "\\" in value
            or ".." in value
            or any(ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf") for ch in value)
        )
    )
    if bad:
        raise SmartFlowsInputError(
            f"The {kind} id {value!r} is not valid: ids contain no '/', '\\', '..', spaces or control characters."
        )
    return value


def validate_wait_seconds(wait_seconds: float | None) -> int | None:
    if wait_seconds is None:
        return None
    if isinstance(wait_seconds, bool) or not isinstance(wait_seconds, (int, float)):
        raise SmartFlowsInputError(f"wait_seconds must be a number of seconds, not {wait_seconds!r}.")
    if not 0 <= wait_seconds <= MAX_WAIT_SECONDS:
        raise SmartFlowsInputError(
            f"wait_seconds must be between 0 and {MAX_WAIT_SECONDS}, not {wait_seconds}."
        )
    # The API takes whole seconds and answers at once for 0: round up so a short wait still waits.
    return math.ceil(wait_seconds)


def _declared_xml_encoding(payload: bytes) -> str | None:
    match = re.match(rb"\s*<\?xml[^>]*encoding\s*=\s*[\"']([A-Za-z0-9._-]+)[\"']", payload)
    return match.group(1).decode("ascii").lower() if match else None


def prepare_start_body(data: object, flow_id: str | None) -> tuple[bytes | None, dict[str, str]]:
    """Body and Content-Type for starting an execution: none, Dynamics/Sugar JSON, or XML."""
    flow = repr(flow_id) if flow_id else "(no flow id)"
    if data is None:
        return None, {}
    if isinstance(data, Mapping):
        ids = data.get("id")
        if not (isinstance(ids, list) and ids and all(isinstance(i, str) and i for i in ids)):
            raise SmartFlowsInputError(
                f"Input for flow {flow}: a Dynamics/Sugar input needs 'id', a non-empty list of record ids."
            )
        if not isinstance(data.get("entity"), str) or not data["entity"]:
            raise SmartFlowsInputError(
                f"Input for flow {flow}: a Dynamics/Sugar input needs 'entity', the entity name."
            )
        try:
            body = json.dumps(data, allow_nan=False).encode("utf-8")
        except (TypeError, ValueError) as err:
            raise SmartFlowsInputError(f"Input for flow {flow} is not JSON-serialisable: {err}") from None
        return body, {"Content-Type": "application/json; charset=utf-8"}
    if isinstance(data, str):
        encoding = _declared_xml_encoding(data.encode("utf-8", errors="replace"))
        if encoding not in (None, "utf-8", "utf8"):
            raise SmartFlowsInputError(
                f"XML input for flow {flow} declares encoding {encoding!r}: pass it as bytes, "
                "or declare utf-8."
            )
        payload = data.encode("utf-8")
    elif isinstance(data, (bytes, bytearray)):
        payload = bytes(data)
    else:
        raise SmartFlowsInputError(
            f"Input for flow {flow} must be None, a dict (Dynamics/Sugar) or XML (str or bytes), "
            f"not {type(data).__name__}."
        )
    parser = xml.parsers.expat.ParserCreate()
    try:
        parser.Parse(payload, True)
    except xml.parsers.expat.ExpatError as err:
        raise SmartFlowsInputError(f"XML input for flow {flow} is not well-formed: {err}.") from None
    encoding = _declared_xml_encoding(payload)
    content_type = (
        "application/xml" if encoding not in (None, "utf-8", "utf8") else 'application/xml; charset="utf-8"'
    )
    return payload, {"Content-Type": content_type}


# --------------------------------------------------------------------------- retry policy


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
        error = retry_state.outcome.exception() if retry_state.outcome else None
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            return float(min(retry_after, self.max_retry_delay))
        return float(min(self.backoff(retry_state), self.max_retry_delay))


def _should_retry(error: BaseException) -> bool:
    return isinstance(error, SmartFlowsApiError) and error.retryable


def retry_arguments(
    *, retry_limit: int, retry_delay: float, max_retry_delay: float, log: Any
) -> dict[str, Any]:
    """Keyword arguments for ``tenacity.Retrying`` / ``AsyncRetrying``, shared by both hooks."""

    def log_retry(retry_state: tenacity.RetryCallState) -> None:
        error = retry_state.outcome.exception() if retry_state.outcome else None
        sleep = retry_state.next_action.sleep if retry_state.next_action else 0.0
        log.warning(
            "Smart Flows %s %s failed (%s); retry %d of %d in %.2f s",
            getattr(error, "method", "?"),
            getattr(error, "path", "?"),
            getattr(error, "reason", None) or type(error).__name__,
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
    if isinstance(retry_limit, bool) or not isinstance(retry_limit, int) or retry_limit < 0:
        raise SmartFlowsInputError(f"retry_limit must be an integer >= 0, not {retry_limit!r}.")
    if retry_delay < 0 or max_retry_delay < 0:
        raise SmartFlowsInputError("retry_delay and max_retry_delay must be >= 0.")


# --------------------------------------------------------------------------- errors


def body_excerpt(body: bytes | str | None, api_key: str | None) -> str:
    """A short single-line excerpt of an error body, with the API key blanked out."""
    if not body:
        return ""
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    try:
        parsed = json.loads(text)
    except (ValueError, RecursionError):
        parsed = None
    if isinstance(parsed, dict):
        for key in ("message", "error", "detail", "title"):
            if isinstance(parsed.get(key), str) and parsed[key]:
                text = parsed[key]
                break
    else:
        text = re.sub(r"<[^>]{0,200}>", " ", text)  # proxies answer with HTML pages
    if api_key:
        text = text.replace(api_key, "***")
    text = " ".join(text.split())
    return text[:BODY_EXCERPT_CHARS] + ("..." if len(text) > BODY_EXCERPT_CHARS else "")


def error_from_status(
    *,
    conn_id: str,
    method: str,
    path: str,
    status_code: int,
    body: bytes | str | None,
    retry_after_header: str | None,
    api_key: str | None,
    subject: str | None = None,
) -> SmartFlowsApiError:
    """The error class and an actionable message for an HTTP error answer."""
    excerpt = body_excerpt(body, api_key)
    what = f"{method} {path}"
    detail = f": {excerpt}" if excerpt else ""
    common: dict[str, Any] = {
        "status_code": status_code,
        "method": method,
        "path": path,
        "body_excerpt": excerpt,
        "conn_id": conn_id,
        "retryable": is_retryable(method, status_code),
        "retry_after": parse_retry_after(retry_after_header),
        "reason": f"HTTP {status_code}",
    }
    if status_code == 401:
        return SmartFlowsAuthError(
            f"Smart Flows refused the API key of connection {conn_id!r} ({what} answered 401){detail}. "
            "The key is wrong or was removed: put a valid key in the connection's Password.",
            **common,
        )
    if status_code == 403:
        return SmartFlowsAuthError(
            f"The API key of connection {conn_id!r} lacks the rights for {what} (403){detail}. "
            "Use the key of a Smart Flows user allowed to do this.",
            **common,
        )
    if status_code == 404:
        target = subject or "The resource"
        return SmartFlowsNotFoundError(
            f"{target} was not found on Smart Flows (connection {conn_id!r}, {what} answered 404){detail}. "
            "Check the id; executions and documents may also have been purged by the server's clean-up.",
            **common,
        )
    hint = " It will be retried." if common["retryable"] else " Check the Smart Flows server and its logs."
    return SmartFlowsApiError(
        f"Smart Flows {what} answered {status_code} (connection {conn_id!r}){detail}.{hint}", **common
    )


def connection_error(
    settings: ConnectionSettings, method: str, path: str, *, request_sent: bool, reason: str
) -> SmartFlowsConnectionError:
    """The error for a request that got no HTTP answer (refused, reset, timeout, TLS)."""
    return SmartFlowsConnectionError(
        f"Could not complete {method} {path} on Smart Flows at {settings.base_url} "
        f"(connection {settings.conn_id!r}): {reason}. Check that the server is up and "
        "reachable from Airflow (host, port, proxies, verify).",
        method=method,
        path=path,
        conn_id=settings.conn_id,
        request_sent=request_sent,
        retryable=is_retryable(method, None, request_sent=request_sent),
        reason=reason,
    )


def may_have_started_error(error: SmartFlowsApiError, flow_id: str | None) -> SmartFlowsApiError:
    """Re-word a failed start POST whose outcome is unknown: it must not be retried blindly."""
    flow = repr(flow_id) if flow_id else "(chosen by the user)"
    message = (
        f"Starting flow {flow} failed after the request reached Smart Flows (connection "
        f"{error.conn_id!r}): {error.message} An execution of the flow may have been started; "
        "it was not retried to avoid a duplicate run. Check the flow's executions on the server "
        "before running it again."
    )
    fields = error.fields()
    fields["retryable"] = False
    # Callers that would run the start again (an Airflow task retry) must know without parsing text.
    fields["may_have_started"] = True
    return type(error)(message, **fields)


#: Reason of a failed TLS certificate check (both hooks): says what to change.
TLS_UNTRUSTED = (
    "TLS certificate verification failed (the server's certificate is not trusted: set the "
    "connection extra 'verify' to the path of the CA bundle that signed it)"
)


def caused_by(exc: BaseException, cls: type[BaseException]) -> bool:
    """Whether ``exc`` or an exception it wraps (cause, context, args, ``reason``) is a ``cls``."""
    stack: list[object] = [exc]
    seen: set[int] = set()
    while stack:
        item = stack.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        if isinstance(item, cls):
            return True
        seen.add(id(item))
        stack.extend((item.__cause__, item.__context__, getattr(item, "reason", None), *item.args))
    return False


class SmartFlowsHookOptions:
    """What the sync and the async hook share: the connection type and the checked call options."""

    conn_name_attr = "smartflows_conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = "smartflows"
    hook_name = "Smart Flows"

    def _set_options(
        self,
        smartflows_conn_id: str,
        timeout: float | None,
        retry_limit: int,
        retry_delay: float,
        max_retry_delay: float,
    ) -> None:
        check_retry_arguments(retry_limit, retry_delay, max_retry_delay)
        if timeout is not None and not timeout > 0:
            raise SmartFlowsInputError(f"timeout must be a positive number of seconds, not {timeout!r}.")
        self.smartflows_conn_id = smartflows_conn_id
        self.timeout = timeout
        self.retry_limit = retry_limit
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay

    def __repr__(self) -> str:
        return f"{type(self).__name__}(smartflows_conn_id={self.smartflows_conn_id!r})"
