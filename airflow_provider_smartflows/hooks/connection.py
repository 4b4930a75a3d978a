"""The ``smartflows`` connection: its default id, its extras and their validation. No I/O here.

Connection ``smartflows``: Host is the base URL (``https://acme.smartflows.xpertdoc.com``; a
bare host means https), Port optional, Password (labelled "API key" in the form) the API key.
Extras (anything else is refused; empty values, as UI forms store them, are ignored):

- ``verify``: true / false / path of a CA bundle (default true).
- ``ca_bundle``: path of the CA bundle that signed the server's certificate; verify against it.
  Set it or ``verify``: false, not both.
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
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

from airflow_provider_smartflows import __version__
from airflow_provider_smartflows.exceptions import SmartFlowsInputError
from airflow_provider_smartflows.validation import check_number

DEFAULT_CONN_ID = "smartflows_default"
API_PREFIX = "/api/v1"
DEFAULT_TIMEOUT = 60.0
USER_AGENT = f"airflow-provider-smartflows/{__version__}"
CANCEL_PATHS = ("progress", "execution")
DEFAULT_CANCEL_PATH = "progress"
DEFAULT_EXECUTION_URL_TEMPLATE = "{base_url}/executions/{execution_id}"
ALLOWED_EXTRAS = ("verify", "timeout", "proxies", "cancel_path", "execution_url_template", "ca_bundle")
_EXTRA_PREFIX = "extra__smartflows__"  # how older Airflow UIs store custom form fields


def _parse_verify(value: object, label: str) -> bool | str:
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
        f"{_capital(label)}: extra 'verify' must be true, false or a CA bundle path, not {value!r}."
    )


def _tls_verify(extras: Mapping[str, Any], label: str) -> bool | str:
    """What to verify the server's certificate with: ``ca_bundle`` if set, else ``verify``."""
    verify = _parse_verify(extras["verify"], label) if "verify" in extras else True
    if "ca_bundle" not in extras:
        return verify
    bundle = extras["ca_bundle"]
    if not isinstance(bundle, str) or not bundle.strip():
        raise SmartFlowsInputError(
            f"{_capital(label)}: extra 'ca_bundle' must be the path of a CA bundle file, not {bundle!r}."
        )
    bundle = bundle.strip()
    if verify is False or (isinstance(verify, str) and verify != bundle):
        raise SmartFlowsInputError(
            f"{_capital(label)} sets both 'ca_bundle' ({bundle!r}) and 'verify' ({extras['verify']!r}): "
            "choose one. Keep 'ca_bundle' to check the server's certificate against that CA, or "
            "remove it to turn certificate checks off with 'verify': false."
        )
    return bundle


def _parse_timeout(value: object, label: str) -> float:
    """A number of seconds > 0, as a number or as text (forms store extras as text)."""
    try:
        return float(check_number("timeout", float(value) if isinstance(value, str) else value, above=0))
    except ValueError:  # SmartFlowsInputError is one too
        raise SmartFlowsInputError(
            f"{_capital(label)}: extra 'timeout' must be a positive number of seconds, not {value!r}."
        ) from None


def _parse_proxies(value: object, label: str) -> dict[str, str]:
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
        f"{_capital(label)}: extra 'proxies' must be a proxy URL or a JSON object such as "
        '{"https": "http://proxy:3128"}.'
    )


def _parse_cancel_path(extras: Mapping[str, Any], label: str) -> str:
    cancel_path = str(extras.get("cancel_path", DEFAULT_CANCEL_PATH)).strip().lower()
    if cancel_path not in CANCEL_PATHS:
        raise SmartFlowsInputError(
            f"{_capital(label)}: extra 'cancel_path' must be one of {', '.join(CANCEL_PATHS)}, "
            f"not {extras['cancel_path']!r}."
        )
    return cancel_path


def _parse_url_template(extras: Mapping[str, Any], label: str) -> str:
    template = str(extras.get("execution_url_template", DEFAULT_EXECUTION_URL_TEMPLATE))
    try:
        template.format(base_url="https://x", execution_id="x")
    except (KeyError, IndexError, ValueError) as err:
        raise SmartFlowsInputError(
            f"{_capital(label)}: extra 'execution_url_template' may only use "
            f"{{base_url}} and {{execution_id}} ({err!r})."
        ) from None
    return template


def _known_extras(extra: Mapping[str, Any] | None, label: str) -> dict[str, Any]:
    """The set extras by their short names; an unknown one raises SmartFlowsInputError."""
    extras: dict[str, Any] = {}
    for key, value in (extra or {}).items():
        name = key[len(_EXTRA_PREFIX) :] if key.startswith(_EXTRA_PREFIX) else key
        if name not in ALLOWED_EXTRAS:
            raise SmartFlowsInputError(
                f"{_capital(label)} has an unknown extra {key!r}. Allowed extras: {', '.join(ALLOWED_EXTRAS)}."
            )
        if value is not None and value != "":  # UI forms store empty fields
            extras[name] = value
    return extras


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def build_base_url(host: str | None, port: int | None, conn_id: str, *, label: str | None = None) -> str:
    """Base URL from the connection's Host (scheme optional, https by default) and Port."""
    label = label or f"connection {conn_id!r}"
    host = (host or "").strip()
    if not host:
        raise SmartFlowsInputError(
            f"{_capital(label)} has no Host: set it to the Smart Flows base URL, "
            "e.g. https://acme.smartflows.xpertdoc.com."
        )
    if "://" not in host:
        host = f"https://{host}"
    parts = urlsplit(host)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SmartFlowsInputError(
            f"{_capital(label)}: Host {host!r} is not an http(s) URL of a Smart Flows server."
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
    """Everything a hook needs from a ``smartflows`` connection, validated.

    ``label`` is how messages name the connection: ``connection '<id>'`` unless the caller
    says otherwise (a connection test runs under a temporary id the user never chose).
    """

    conn_id: str
    base_url: str
    api_key: str = field(repr=False)
    verify: bool | str = True
    timeout: float = DEFAULT_TIMEOUT
    proxies: dict[str, str] = field(default_factory=dict)
    cancel_path: str = DEFAULT_CANCEL_PATH
    execution_url_template: str = DEFAULT_EXECUTION_URL_TEMPLATE
    label: str = ""

    def __post_init__(self) -> None:
        if not self.label:
            object.__setattr__(self, "label", f"connection {self.conn_id!r}")

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
        label: str | None = None,
    ) -> ConnectionSettings:
        """Validate a connection; an unknown extra or a missing key raises SmartFlowsInputError."""
        label = label or f"connection {conn_id!r}"
        extras = _known_extras(extra, label)
        if not password:
            raise SmartFlowsInputError(
                f"{_capital(label)} has no API key: put the key of a Smart Flows user in its API key field."
            )
        if timeout is None:
            timeout = _parse_timeout(extras["timeout"], label) if "timeout" in extras else DEFAULT_TIMEOUT
        return cls(
            conn_id=conn_id,
            base_url=build_base_url(host, port, conn_id, label=label),
            api_key=password,
            verify=_tls_verify(extras, label),
            timeout=timeout,
            proxies=_parse_proxies(extras["proxies"], label) if "proxies" in extras else {},
            cancel_path=_parse_cancel_path(extras, label),
            execution_url_template=_parse_url_template(extras, label),
            label=label,
        )

    @property
    def headers(self) -> dict[str, str]:
        return {"X-API-Key": self.api_key, "Accept": "application/json", "User-Agent": USER_AGENT}

    def url(self, path: str) -> str:
        """The absolute URL of an API path such as ``/flows``."""
        return f"{self.base_url}{API_PREFIX}{path}"

    def execution_url(self, execution_id: str) -> str:
        return self.execution_url_template.format(
            base_url=self.base_url, execution_id=quote(execution_id, safe="")
        )


def ui_field_behaviour() -> dict[str, Any]:
    """The connection form's field behaviour for Airflow < 3.2 (newer versions read the provider info)."""
    from airflow_provider_smartflows.get_provider_info import get_provider_info

    behaviour = get_provider_info()["connection-types"][0]["ui-field-behaviour"]
    return {
        "hidden_fields": behaviour["hidden-fields"],
        "relabeling": behaviour["relabeling"],
        "placeholders": behaviour["placeholders"],
    }


def connection_form_widgets() -> dict[str, Any]:
    """The connection form's extra fields for Airflow < 3.2 (plain text fields)."""
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
