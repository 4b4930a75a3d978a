"""Smart Flows hooks: the connection type, the shared retry policy and the sync ``SmartFlowsHook``.

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
import hashlib
import json
import logging
import math
import re
import ssl
import time
import unicodedata
import uuid
import xml.parsers.expat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import requests
import tenacity
from airflow.providers.common.compat.sdk import ObjectStoragePath, mask_secret
from airflow.providers.http.hooks.http import HttpHook

from airflow_provider_smartflows import __version__
from airflow_provider_smartflows.exceptions import (
    SmartFlowsApiError,
    SmartFlowsAuthError,
    SmartFlowsConnectionError,
    SmartFlowsDownloadError,
    SmartFlowsError,
    SmartFlowsInputError,
    SmartFlowsNotFoundError,
)
from airflow_provider_smartflows.models import (
    DocumentInfo,
    DocumentRef,
    DownloadedDocument,
    Execution,
    ExecutionProgress,
)

if TYPE_CHECKING:
    from requests.adapters import HTTPAdapter

API_PREFIX = "/api/v1"
DEFAULT_CONN_ID = "smartflows_default"
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


def _network_reason(exc: requests.RequestException) -> tuple[bool, str]:
    """(request_sent, short reason) for a requests failure."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return False, "connect timeout"
    if isinstance(exc, requests.exceptions.SSLError):
        return False, TLS_UNTRUSTED if caused_by(exc, ssl.SSLCertVerificationError) else "TLS error"
    if isinstance(exc, requests.exceptions.ConnectionError):
        from urllib3.exceptions import NewConnectionError

        reason = getattr(exc.args[0], "reason", None) if exc.args else None
        if isinstance(reason, NewConnectionError) or (
            isinstance(exc, requests.exceptions.ProxyError) and isinstance(reason, Exception)
        ):
            return False, "connection refused"
        return True, "connection reset"
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return True, "read timeout"
    return True, type(exc).__name__


class _Session(requests.Session):
    """A session that drops the API key when a redirect leaves the Smart Flows host."""

    def rebuild_auth(self, prepared_request: requests.PreparedRequest, response: requests.Response) -> None:
        super().rebuild_auth(prepared_request, response)
        old_url, new_url = response.request.url, prepared_request.url
        if old_url and new_url and self.should_strip_auth(old_url, new_url):
            prepared_request.headers.pop("X-API-Key", None)


# --------------------------------------------------------------------------- sync hook


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


class SmartFlowsHook(SmartFlowsHookOptions, HttpHook):
    """
    Call the Smart Flows REST API (sync).

    :param smartflows_conn_id: a ``smartflows`` connection (see the module docstring).
    :param timeout: seconds per request; overrides the connection's ``timeout`` extra (default 60).
    :param retry_limit: retries after the first attempt (0: none); see :func:`is_retryable`.
    :param retry_delay: first backoff delay in seconds, doubled per retry, with jitter.
    :param max_retry_delay: cap of any delay, including a server's Retry-After.
    """

    def __init__(
        self,
        smartflows_conn_id: str = DEFAULT_CONN_ID,
        *,
        timeout: float | None = None,
        retry_limit: int = 3,
        retry_delay: float = 1.0,
        max_retry_delay: float = 60.0,
        adapter: HTTPAdapter | None = None,
    ) -> None:
        super().__init__(method="GET", http_conn_id=smartflows_conn_id, adapter=adapter)
        self._set_options(smartflows_conn_id, timeout, retry_limit, retry_delay, max_retry_delay)

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Connection form for Airflow < 3.2 (newer versions read get_provider_info)."""
        from airflow_provider_smartflows.get_provider_info import get_provider_info

        behaviour = get_provider_info()["connection-types"][0]["ui-field-behaviour"]
        return {
            "hidden_fields": behaviour["hidden-fields"],
            "relabeling": behaviour["relabeling"],
            "placeholders": behaviour["placeholders"],
        }

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """Extra fields of the connection form for Airflow < 3.2."""
        from flask_babel import lazy_gettext
        from wtforms import StringField

        from airflow_provider_smartflows.get_provider_info import get_provider_info

        fields = get_provider_info()["connection-types"][0]["conn-fields"]
        # Only an Airflow without conn-fields support (< 3.2) calls this: say what the form lacks.
        logging.getLogger(__name__).info(
            "Smart Flows connection form: this Airflow (< 3.2) ignores conn-fields, so the extras %s "
            "are plain text fields without type checks; the hook validates them when it loads the "
            "connection.",
            ", ".join(fields),
        )
        return {
            name: StringField(lazy_gettext(spec["label"]), description=spec["description"])
            for name, spec in fields.items()
        }

    # ----------------------------------------------------------------- connection

    @cached_property
    def settings(self) -> ConnectionSettings:
        """The validated connection (loaded once); the API key is registered with the secret masker."""
        conn = self.get_connection(self.smartflows_conn_id)
        if conn.password:
            mask_secret(conn.password)
        settings = ConnectionSettings.from_connection(
            self.smartflows_conn_id,
            host=conn.host,
            port=conn.port,
            password=conn.password,
            extra=conn.extra_dejson,
            timeout=self.timeout,
        )
        self.base_url = settings.base_url
        self._base_url_initialized = True
        return settings

    def get_conn(
        self, headers: dict[Any, Any] | None = None, extra_options: dict[str, Any] | None = None
    ) -> requests.Session:
        """The configured ``requests`` session (created once, reused for keep-alive)."""
        session = self._session
        if headers:
            session.headers.update(headers)
        return session

    @cached_property
    def _session(self) -> requests.Session:
        settings = self.settings
        session = _Session()
        session.headers.update(settings.headers)
        session.verify = settings.verify
        session.proxies.update(settings.proxies)
        return self._configure_session_from_mount_adapters(session)

    def close(self) -> None:
        """Close the HTTP session (connections are pooled between calls)."""
        if "_session" in self.__dict__:
            self.__dict__.pop("_session").close()

    def execution_url(self, execution_id: str) -> str:
        """Link to the execution in the Smart Flows UI (connection extra ``execution_url_template``)."""
        return self.settings.execution_url(validate_id(execution_id, "execution"))

    # ----------------------------------------------------------------- transport

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        stream: bool = False,
        extra_timeout: float = 0.0,
        subject: str | None = None,
    ) -> requests.Response:
        """One API call with the retry policy; raises the matching SmartFlowsApiError subclass."""
        settings = self.settings
        session = self.get_conn()
        url = f"{settings.base_url}{API_PREFIX}{path}"
        timeout = settings.timeout + extra_timeout

        def attempt() -> requests.Response:
            try:
                response = session.request(
                    method,
                    url,
                    params=params,
                    data=body,
                    headers=dict(headers or {}),
                    stream=stream,
                    timeout=(settings.timeout, timeout),
                    # Per request: requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE and *_proxy
                    # variables override the session's own verify and proxies (psf/requests#3829).
                    verify=settings.verify,
                    proxies=dict(settings.proxies),
                )
            except requests.RequestException as exc:
                sent, reason = _network_reason(exc)
                raise SmartFlowsConnectionError(
                    f"Could not complete {method} {path} on Smart Flows at {settings.base_url} "
                    f"(connection {settings.conn_id!r}): {reason}. Check that the server is up and "
                    "reachable from Airflow (host, port, proxies, verify).",
                    method=method,
                    path=path,
                    conn_id=settings.conn_id,
                    request_sent=sent,
                    retryable=is_retryable(method, None, request_sent=sent),
                    reason=reason,
                ) from exc
            if response.status_code >= 400:
                with response:
                    raw = response.raw.read(4096, decode_content=True) if stream else response.content
                raise error_from_status(
                    conn_id=settings.conn_id,
                    method=method,
                    path=path,
                    status_code=response.status_code,
                    body=raw,
                    retry_after_header=response.headers.get("Retry-After"),
                    api_key=settings.api_key,
                    subject=subject,
                )
            return response

        retrying = tenacity.Retrying(
            **retry_arguments(
                retry_limit=self.retry_limit,
                retry_delay=self.retry_delay,
                max_retry_delay=self.max_retry_delay,
                log=self.log,
            )
        )
        return retrying(attempt)

    def _json(
        self, method: str, path: str, *, parse: Callable[[Any], Any] | None = None, **kwargs: Any
    ) -> Any:
        response = self._request(method, path, **kwargs)
        try:
            data = response.json()
            return parse(data) if parse else data
        except (ValueError, RecursionError) as err:
            settings = self.settings
            raise SmartFlowsApiError(
                f"Smart Flows {method} {path} answered {response.status_code} with a body that is not "
                f"the expected JSON (connection {settings.conn_id!r}): {err}. Is the Host the Smart Flows "
                "server and not a proxy or login page?",
                status_code=response.status_code,
                method=method,
                path=path,
                body_excerpt=body_excerpt(response.content, settings.api_key),
                conn_id=settings.conn_id,
            ) from None

    # ----------------------------------------------------------------- executions

    def start_execution(
        self,
        flow_id: str | None = None,
        data: dict[str, Any] | str | bytes | None = None,
        *,
        dataset_id: str | None = None,
        priority: int | None = None,
    ) -> ExecutionProgress:
        """
        Start a flow execution (``POST /flows/executions``); never retried once the server may have acted.

        :param flow_id: the flow to run; None lets the user pick one (status SelectFlow).
        :param data: None (no input), a dict (Dynamics/Sugar JSON) or XML as str or bytes.
        :param dataset_id: the data set the XML belongs to.
        :param priority: execution priority, if the server supports it.
        """
        params: dict[str, Any] = {}
        if flow_id is not None:
            params["flowId"] = validate_id(flow_id, "flow")
        if dataset_id is not None:
            params["datasetId"] = validate_id(dataset_id, "dataset")
        if priority is not None:
            if isinstance(priority, bool) or not isinstance(priority, int):
                raise SmartFlowsInputError(f"priority must be an integer, not {priority!r}.")
            params["priority"] = priority
        body, headers = prepare_start_body(data, flow_id)
        try:
            progress = self._json(
                "POST",
                "/flows/executions",
                params=params,
                body=body,
                headers=headers,
                parse=ExecutionProgress.from_json,
                subject=f"Flow {flow_id!r}" if flow_id else None,
            )
        except SmartFlowsApiError as err:
            acted = err.status_code not in NOT_ACTED_STATUSES and (
                not isinstance(err, SmartFlowsConnectionError) or err.request_sent
            )
            if acted and err.status_code not in (400, 401, 403, 404, 409, 415, 422):
                raise may_have_started_error(err, flow_id) from err
            raise
        self.log.info(
            "Started Smart Flows execution %s of flow %s (%s)",
            progress.id,
            flow_id or "(to select)",
            progress.status,
        )
        return progress

    def get_progress(self, execution_id: str, *, wait_seconds: float | None = None) -> ExecutionProgress:
        """
        Progress of an execution; with ``wait_seconds`` a long-poll that answers early on change.

        :param execution_id: the execution.
        :param wait_seconds: how long the server may hold the request (request timeout grows by it).
        """
        execution_id = validate_id(execution_id, "execution")
        wait = validate_wait_seconds(wait_seconds)
        return self._json(
            "GET",
            f"/flows/executions/{quote(execution_id, safe='')}/progress",
            params={"timeout": wait} if wait is not None else None,
            extra_timeout=float(wait or 0),
            parse=ExecutionProgress.from_json,
            subject=f"Execution {execution_id!r}",
        )

    def get_execution(self, execution_id: str) -> Execution:
        """The full execution (status, flow, errors, warnings, documents)."""
        execution_id = validate_id(execution_id, "execution")
        return self._json(
            "GET",
            f"/flows/executions/{quote(execution_id, safe='')}",
            parse=Execution.from_json,
            subject=f"Execution {execution_id!r}",
        )

    def cancel_execution(self, execution_id: str) -> ExecutionProgress:
        """Cancel an execution (DELETE; the path is the connection extra ``cancel_path``)."""
        execution_id = validate_id(execution_id, "execution")
        settings = self.settings
        try:
            return self._json(
                "DELETE",
                settings.cancel_endpoint(execution_id),
                parse=ExecutionProgress.from_json,
                subject=f"Execution {execution_id!r}",
            )
        except SmartFlowsApiError as err:
            if err.status_code in (404, 405):
                other = next(name for name in CANCEL_PATHS if name != settings.cancel_path)
                err.message += (
                    f" If the execution exists, this server may cancel through the other path: "
                    f'set the extra "cancel_path": "{other}" on connection {settings.conn_id!r}.'
                )
                err.args = (err.message,)
            raise

    def answer_user_input(self, execution_id: str, answers: Mapping[str, Any]) -> ExecutionProgress:
        """Answer a UserInput form: ``answers`` maps form keys to values."""
        execution_id = validate_id(execution_id, "execution")
        if not isinstance(answers, Mapping) or not all(isinstance(key, str) for key in answers):
            raise SmartFlowsInputError(
                f"Answers for execution {execution_id!r} must be a dict of form keys to values."
            )
        try:
            body = json.dumps(dict(answers), allow_nan=False).encode("utf-8")
        except (TypeError, ValueError) as err:
            raise SmartFlowsInputError(
                f"Answers for execution {execution_id!r} are not JSON-serialisable: {err}"
            ) from None
        return self._json(
            "POST",
            f"/flows/executions/{quote(execution_id, safe='')}/progress",
            body=body,
            headers={"Content-Type": "application/json; charset=utf-8"},
            parse=ExecutionProgress.from_json,
            subject=f"Execution {execution_id!r}",
        )

    def list_flows(self) -> list[dict[str, Any]]:
        """The flows visible to the API key's user (raw Flow objects)."""

        def parse(data: Any) -> list[dict[str, Any]]:
            if not isinstance(data, list):
                raise ValueError("expected a JSON array of flows")
            return [flow for flow in data if isinstance(flow, dict)]

        return self._json("GET", "/flows", parse=parse)

    # ----------------------------------------------------------------- documents

    def get_document(self, document_id: str) -> DocumentInfo:
        """Document metadata; ``file_name`` is a safe local name with the content type's extension."""
        document_id = validate_id(document_id, "document")
        return self._json(
            "GET",
            f"/documents/{quote(document_id, safe='')}",
            parse=DocumentInfo.from_json,
            subject=f"Document {document_id!r}",
        )

    def list_documents(self, execution_id: str) -> list[DocumentRef]:
        """Documents of an execution: every ``type == "document"`` object in its output."""
        documents = list(self.get_execution(execution_id).documents)
        if not documents:
            documents = list(self.get_progress(execution_id).documents)
        return documents

    def download_document(
        self,
        document_id: str,
        destination: str | ObjectStoragePath,
        *,
        conn_id: str | None = None,
        overwrite: bool = False,
        chunk_size: int = 1024 * 1024,
    ) -> DownloadedDocument:
        """
        Stream a document's content to storage, atomically, with memory bounded by ``chunk_size``.

        :param document_id: the document.
        :param destination: ObjectStoragePath or URI. A folder (a string ending in "/", or an
            existing directory) receives ``<display name>.<extension of the content type>``,
            sanitised; anything else is the exact target file.
        :param conn_id: Airflow connection of the storage (for a string ``destination``).
        :param overwrite: replace an existing target instead of failing.
        :param chunk_size: bytes read and written at a time.
        """
        document_id = validate_id(document_id, "document")
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0:
            raise SmartFlowsInputError(f"chunk_size must be a positive integer, not {chunk_size!r}.")
        if isinstance(destination, str):
            is_folder = destination.endswith("/")
            # conn_id=None would hide a URI's own (s3://conn@bucket/) on Airflow 2: pass it only when set.
            path = ObjectStoragePath(destination, **({"conn_id": conn_id} if conn_id else {}))
        elif isinstance(destination, ObjectStoragePath):
            path = destination
            is_folder = str(destination).endswith("/") or path.is_dir()
        else:
            raise SmartFlowsInputError(
                f"destination must be an ObjectStoragePath or a URI string, not {type(destination).__name__}."
            )
        content_type: str | None = None
        if is_folder:
            info = self.get_document(document_id)
            content_type = info.content_type
            target = path / info.file_name
        else:
            target = path
        if not overwrite and target.exists():
            raise SmartFlowsDownloadError(
                f"Not downloading document {document_id!r}: {target} already exists. "
                "Remove it, choose another destination, or pass overwrite=True.",
                document_id=document_id,
                uri=str(target),
            )
        return self._stream_to(document_id, target, content_type, overwrite=overwrite, chunk_size=chunk_size)

    def _stream_to(
        self,
        document_id: str,
        target: ObjectStoragePath,
        content_type: str | None,
        *,
        overwrite: bool,
        chunk_size: int,
    ) -> DownloadedDocument:
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.parent / f".smartflows-{uuid.uuid4().hex}.part"
        response = self._request(
            "GET",
            f"/documents/{quote(document_id, safe='')}/content",
            # Identity encoding: the byte count is checked against Content-Length.
            headers={"Accept-Encoding": "identity"},
            stream=True,
            subject=f"Document {document_id!r}",
        )
        digest = hashlib.sha256()
        size = 0
        try:
            with response:
                expected = response.headers.get("Content-Length")
                content_type = content_type or response.headers.get("Content-Type")
                with temporary.open("wb") as sink:
                    for chunk in response.iter_content(chunk_size=chunk_size):
                        sink.write(chunk)
                        digest.update(chunk)
                        size += len(chunk)
            if expected is not None and expected.isdigit() and int(expected) != size:
                raise SmartFlowsDownloadError(
                    f"Document {document_id!r} arrived truncated: {size} of {expected} bytes. "
                    "Nothing was saved; run the download again.",
                    document_id=document_id,
                    uri=str(target),
                )
            if not overwrite and target.exists():
                raise SmartFlowsDownloadError(
                    f"Not saving document {document_id!r}: {target} appeared during the download.",
                    document_id=document_id,
                    uri=str(target),
                )
            temporary.fs.mv(temporary.path, target.path)
        except BaseException as err:
            _remove_quietly(temporary)
            if isinstance(err, SmartFlowsError):
                raise
            if isinstance(err, (requests.RequestException, OSError)):
                raise SmartFlowsDownloadError(
                    f"Downloading document {document_id!r} to {target} failed after {size} bytes "
                    f"({type(err).__name__}). Nothing was saved; run the download again.",
                    document_id=document_id,
                    uri=str(target),
                ) from err
            raise
        downloaded = DownloadedDocument(
            document_id=document_id,
            uri=str(target),
            size=size,
            sha256=digest.hexdigest(),
            content_type=content_type,
        )
        self.log.info(
            "Saved Smart Flows document %s to %s (%d bytes, sha256 %s)",
            document_id,
            downloaded.uri,
            size,
            downloaded.sha256,
        )
        return downloaded

    # ----------------------------------------------------------------- connection test

    def test_connection(self) -> tuple[bool, str]:
        """Check the URL and API key: ``(True, "Connected to Smart Flows <version> as <user>")``."""
        try:
            try:
                me = self._json("GET", "/users/me")
            except SmartFlowsNotFoundError:
                me = None
            try:
                info = self._json("GET", "/system/info")
            except SmartFlowsNotFoundError:
                info = None
            if me is None and info is None:
                return False, (
                    f"{self.settings.base_url} answered 404 for /api/v1/users/me and /api/v1/system/info: "
                    "is the Host the base URL of a Smart Flows server?"
                )
        except SmartFlowsError as err:
            return False, err.message
        user = _first_text(me, "displayName", "name", "username", "login", "email") or "an unnamed user"
        role = _first_text(me, "role") or _first_text(info, "role")
        version = _first_text(info, "version") or "(version unknown)"
        return True, f"Connected to Smart Flows {version} as {user}" + (f" ({role})" if role else "")


def _first_text(data: object, *keys: str) -> str | None:
    if not isinstance(data, Mapping):
        return None
    for key in keys:
        value = data.get(key)
        if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value):
            return str(value)
    return None


def _remove_quietly(path: ObjectStoragePath) -> None:
    try:
        if path.exists():
            path.unlink()
    except Exception:  # the original error matters more than a failed clean-up
        logging.getLogger(__name__).warning("Could not remove the temporary file %s", path)
