"""The errors the hooks raise for an answer or a missing answer: class, fields, actionable text.

Messages name the connection by ``ConnectionSettings.label`` and never contain the API key.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

from airflow_provider_smartflows.exceptions import (
    SmartFlowsApiError,
    SmartFlowsAuthError,
    SmartFlowsConnectionError,
    SmartFlowsNotFoundError,
)
from airflow_provider_smartflows.hooks.connection import API_PREFIX
from airflow_provider_smartflows.hooks.retry import is_retryable, parse_retry_after

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow_provider_smartflows.hooks.connection import ConnectionSettings

BODY_EXCERPT_CHARS = 300

#: Reason of a TLS handshake that failed for another cause than the certificate (both hooks).
TLS_HANDSHAKE_FAILED = "TLS error"
#: Reason of a failed TLS certificate check (both hooks): says what to change.
TLS_UNTRUSTED = (
    "TLS certificate verification failed (the server's certificate is not trusted: set the "
    "connection extra 'ca_bundle' to the path of the CA bundle that signed it)"
)


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


def _redirect_advice(settings: ConnectionSettings, path: str, location: str | None) -> str:
    """Where a 3xx points (no query string: it may carry tokens) and the Host to set instead."""
    if not location:
        return (
            "a redirect without a Location header. Set the connection's Host to the base URL of the "
            "Smart Flows server itself"
        )
    parts = urlsplit(urljoin(settings.url(path), location.strip()))
    target = f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}{parts.path}"
    base = target.split(API_PREFIX, 1)[0] if API_PREFIX in parts.path else target
    return (
        f"a redirect to {target}. The hooks do not follow redirects (the API key must not travel to "
        f"another address): set the connection's Host to the URL the server redirects to, {base}"
    )


def _error_text(
    settings: ConnectionSettings,
    method: str,
    path: str,
    status_code: int,
    detail: str,
    subject: str | None,
    location: str | None,
) -> tuple[type[SmartFlowsApiError], str]:
    """The error class and what to say for a redirect or error status (>= 300)."""
    what = f"{method} {path}"
    conn = settings.label
    if status_code < 400:
        return SmartFlowsApiError, (
            f"Smart Flows {what} answered {status_code} ({conn}), "
            f"{_redirect_advice(settings, path, location)}."
        )
    if status_code == 401:
        return SmartFlowsAuthError, (
            f"Smart Flows refused the API key of {conn} ({what} answered 401){detail}. "
            "The key is wrong or was removed: put a valid key in the connection's API key field."
        )
    if status_code == 403:
        return SmartFlowsAuthError, (
            f"The API key of {conn} lacks the rights for {what} (403){detail}. "
            "Use the key of a Smart Flows user allowed to do this."
        )
    if status_code == 404:
        purge = (
            ""  # a flow is not purged: the id is wrong or the key cannot see it
            if subject and subject.startswith("Flow ")
            else "; executions and documents may also have been purged by the server's clean-up"
        )
        return SmartFlowsNotFoundError, (
            f"{subject or 'The resource'} was not found on Smart Flows ({conn}, {what} answered 404)"
            f"{detail}. Check the id{purge}."
        )
    then = (
        "It will be retried."
        if is_retryable(method, status_code)
        else "Check the Smart Flows server and its logs."
    )
    return SmartFlowsApiError, f"Smart Flows {what} answered {status_code} ({conn}){detail}. {then}"


def closest_flows(flows: Sequence[Any], flow_id: str, count: int = 5) -> str:
    """`` The closest flows this API key can see: 'a' (A), ...`` for an unknown flow id (closest by
    id and display name; the first few when none is close)."""
    labels: dict[str, str] = {}  # flow id -> how the message names it
    texts: dict[str, str] = {}  # lower-cased id or display name -> flow id
    for flow in flows:
        if not isinstance(flow, Mapping) or flow.get("id") in (None, ""):
            continue
        found, name = str(flow["id"]), flow.get("displayName")
        labels[found] = repr(found) + (f" ({name})" if name else "")
        texts.setdefault(found.lower(), found)
        if name:
            texts.setdefault(str(name).lower(), found)
    if not labels:
        return " The API key sees no flow at all: check the rights of its user."
    matches = difflib.get_close_matches(flow_id.lower(), list(texts), n=count * 2, cutoff=0.3)
    chosen = list(dict.fromkeys(texts[match] for match in matches))[:count]
    if chosen:
        return f" The closest flows this API key can see: {', '.join(labels[i] for i in chosen)}."
    shown = sorted(labels)[:count]
    more = f" and {len(labels) - len(shown)} more" if len(labels) > len(shown) else ""
    return f" The flows this API key can see: {', '.join(labels[i] for i in shown)}{more}."


def error_from_status(
    settings: ConnectionSettings,
    method: str,
    path: str,
    status_code: int,
    *,
    body: bytes | str | None,
    headers: Mapping[str, str],
    subject: str | None = None,
    hint: str | None = None,
) -> SmartFlowsApiError:
    """The typed error of a redirect or error answer (>= 300); ``hint`` is appended to its message."""
    excerpt = body_excerpt(body, settings.api_key)
    detail = f": {excerpt}" if excerpt else ""
    cls, message = _error_text(settings, method, path, status_code, detail, subject, headers.get("Location"))
    return cls(
        f"{message} {hint}" if hint else message,
        status_code=status_code,
        method=method,
        path=path,
        body_excerpt=excerpt,
        conn_id=settings.conn_id,
        retryable=is_retryable(method, status_code),
        retry_after=parse_retry_after(headers.get("Retry-After")),
        reason=f"HTTP {status_code}",
    )


def not_json_error(
    settings: ConnectionSettings, method: str, path: str, status_code: int, body: bytes, err: Exception
) -> SmartFlowsApiError:
    """The error for a success answer whose body is not the JSON the call expects."""
    return SmartFlowsApiError(
        f"Smart Flows {method} {path} answered {status_code} with a body that is not the expected "
        f"JSON ({settings.label}): {err}. Is the Host the Smart Flows server and not a proxy or "
        "login page?",
        status_code=status_code,
        method=method,
        path=path,
        body_excerpt=body_excerpt(body, settings.api_key),
        conn_id=settings.conn_id,
    )


def connection_error(
    settings: ConnectionSettings, method: str, path: str, *, request_sent: bool, reason: str
) -> SmartFlowsConnectionError:
    """The error for a request that got no HTTP answer (refused, reset, timeout, TLS)."""
    advice = "Check that the server is up and reachable from Airflow (host, port, proxies, ca_bundle)."
    if reason == TLS_HANDSHAKE_FAILED and settings.base_url.startswith("https://"):
        # The usual cause: a plain-HTTP server (the emulator) named by a Host without a scheme.
        advice = (
            "A Host without a scheme means https: if the server speaks plain HTTP (the emulator, "
            "a local server), write http:// in the connection's Host, e.g. http://127.0.0.1:8099. " + advice
        )
    return SmartFlowsConnectionError(
        f"Could not complete {method} {path} on Smart Flows at {settings.base_url} "
        f"({settings.label}): {reason}. {advice}",
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
