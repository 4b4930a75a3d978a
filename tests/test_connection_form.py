"""The ``smartflows`` connection form as Airflow's UI builds it from the provider's ``conn-fields``.

Airflow >= 3.2 turns each field's JSON Schema into a widget (``default`` → initial value, ``enum``
→ drop-down, ``boolean`` → switch, a type without ``null`` → a required field) and saves every
field into the connection's extra, an empty one as ``null``. The tests below read the form the way
the UI gets it (``/ui/connections/hook_meta``, built in-process by Airflow's own service) and check
that what the form saves is a connection the hooks accept, over real HTTP to the emulator.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_provider_smartflows.get_provider_info import get_provider_info
from airflow_provider_smartflows.hooks.smartflows import SmartFlowsHook


def _conn_fields() -> dict[str, Any]:
    (conn_type,) = get_provider_info()["connection-types"]
    return dict(conn_type["conn-fields"])


def _schema(name: str) -> dict[str, Any]:
    return dict(_conn_fields()[name]["schema"])


def _form_controlled(settings: Any) -> dict[str, Any]:
    """The settings the form's extras decide (``ca_bundle`` ends up in ``verify``)."""
    names = ("verify", "timeout", "proxies", "cancel_path", "execution_url_template", "base_url")
    return {name: getattr(settings, name) for name in names}


@pytest.fixture(scope="module")
def form_fields() -> dict[str, Any]:
    """The extra fields of the smartflows form, as the UI's hook_meta endpoint serves them."""
    services = pytest.importorskip("airflow.api_fastapi.core_api.services.ui.connections")
    (meta,) = [m for m in services.HookMetaService.hook_meta_data() if m.connection_type == "smartflows"]
    return dict(meta.model_dump(mode="json")["extra_fields"])


@pytest.fixture
def default_settings(set_form_conn: Any) -> Any:
    """Settings of a connection with no extras at all: what the form's defaults must match."""
    hook = SmartFlowsHook(set_form_conn("sf_no_extras"))
    try:
        return hook.settings
    finally:
        hook.close()


@pytest.fixture
def set_form_conn(smartflows_emulator: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    def define(conn_id: str, *, port: int | None = None, **extra: Any) -> str:
        conn = json.loads(smartflows_emulator.connection_json(None, **extra))
        if port is not None:
            conn["port"] = port
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
        return conn_id

    return define


def test_cancel_path_is_a_drop_down_starting_at_progress_with_no_null_choice() -> None:
    schema = _schema("cancel_path")
    assert schema["enum"] == ["progress", "execution"]
    assert schema["default"] == "progress"


def test_verify_is_a_switch_that_starts_on_and_ca_bundle_an_optional_path() -> None:
    assert _schema("verify") == {"type": ["boolean", "null"], "default": True}
    assert _schema("ca_bundle") == {"type": ["string", "null"]}
    assert _conn_fields()["ca_bundle"]["label"] == "CA bundle"


def test_every_field_is_optional_in_the_form() -> None:
    """A schema type without "null" makes the UI refuse to save the form while the field is empty."""
    required = [name for name, field in _conn_fields().items() if "null" not in field["schema"]["type"]]
    assert required == []


def test_form_defaults_are_the_hooks_defaults(default_settings: Any) -> None:
    assert _schema("cancel_path")["default"] == default_settings.cancel_path
    assert _schema("verify")["default"] is default_settings.verify
    assert _schema("timeout")["default"] == default_settings.timeout
    assert _schema("execution_url_template")["default"] == default_settings.execution_url_template


@pytest.mark.airflow_version(min="3.2", reason="the UI builds the form from conn-fields since 3.2")
def test_hook_meta_serves_the_form_with_its_initial_values(form_fields: dict[str, Any]) -> None:
    assert set(form_fields) == set(_conn_fields())
    values = {name: field["value"] for name, field in form_fields.items()}
    assert values == {
        "verify": True,
        "ca_bundle": None,
        "timeout": 60,
        "proxies": None,
        "cancel_path": "progress",
        "execution_url_template": "{base_url}/executions/{execution_id}",
    }
    assert form_fields["cancel_path"]["schema"]["enum"] == ["progress", "execution"]
    assert form_fields["verify"]["schema"]["title"] == "Verify TLS"


@pytest.mark.airflow_version(min="3.2", reason="the UI builds the form from conn-fields since 3.2")
def test_connection_saved_from_an_untouched_form_passes_the_test(
    form_fields: dict[str, Any], set_form_conn: Any, default_settings: Any
) -> None:
    """The extra an untouched form saves (initial values, null for the empty fields) is accepted,
    means the same as no extras, and the connection test succeeds against the server."""
    extra = {name: field["value"] for name, field in form_fields.items()}
    hook = SmartFlowsHook(set_form_conn("sf_from_form", **extra))
    try:
        assert _form_controlled(hook.settings) == _form_controlled(default_settings)
        ok, message = hook.test_connection()
        assert ok, message
    finally:
        hook.close()


def test_port_zero_from_the_ui_test_button_is_ignored(set_form_conn: Any, smartflows_emulator: Any) -> None:
    """The UI's Test button sends port 0 for an empty Port field (``Number(null)``); on a connection
    not yet saved Airflow passes it to the hook, which must not append ``:0`` to the base URL."""
    hook = SmartFlowsHook(set_form_conn("sf_port_zero", port=0))
    try:
        assert hook.settings.base_url == smartflows_emulator.base_url
        ok, message = hook.test_connection()
        assert ok, message
    finally:
        hook.close()
