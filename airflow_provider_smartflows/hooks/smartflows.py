"""The sync ``SmartFlowsHook`` (an ``HttpHook``): every Smart Flows REST call, streaming downloads.

The connection, its extras and the retry policy are described in :mod:`.common`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import ssl
import uuid
from collections.abc import Callable, Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import requests
import tenacity
from airflow.providers.common.compat.sdk import ObjectStoragePath, mask_secret
from airflow.providers.http.hooks.http import HttpHook

from airflow_provider_smartflows.exceptions import (
    SmartFlowsApiError,
    SmartFlowsConnectionError,
    SmartFlowsDownloadError,
    SmartFlowsError,
    SmartFlowsInputError,
    SmartFlowsNotFoundError,
)
from airflow_provider_smartflows.hooks.common import (
    API_PREFIX,
    CANCEL_PATHS,
    DEFAULT_CONN_ID,
    NOT_ACTED_STATUSES,
    TLS_UNTRUSTED,
    ConnectionSettings,
    SmartFlowsHookOptions,
    body_excerpt,
    caused_by,
    connection_error,
    error_from_status,
    may_have_started_error,
    prepare_start_body,
    retry_arguments,
    validate_id,
    validate_wait_seconds,
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


class SmartFlowsHook(SmartFlowsHookOptions, HttpHook):
    """
    Call the Smart Flows REST API (sync).

    :param smartflows_conn_id: a ``smartflows`` connection (see :mod:`.common`).
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
                raise connection_error(settings, method, path, request_sent=sent, reason=reason) from exc
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
