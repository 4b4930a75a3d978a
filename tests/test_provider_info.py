"""The provider registers the ``smartflows`` connection type with Airflow."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import airflow
import jsonschema
import pytest
from packaging.version import Version

from airflow_provider_smartflows import __version__
from airflow_provider_smartflows.get_provider_info import get_provider_info
from airflow_provider_smartflows.hooks.connection import ALLOWED_EXTRAS
from airflow_provider_smartflows.hooks.smartflows import SmartFlowsHook

HOOK_CLASS = "airflow_provider_smartflows.hooks.smartflows.SmartFlowsHook"


def test_provider_info_matches_airflow_schema():
    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    jsonschema.validate(get_provider_info(), schema)


def test_provider_info_declares_connection_type_and_version():
    info = get_provider_info()
    assert info["versions"] == [__version__]
    (conn_type,) = info["connection-types"]
    assert conn_type["connection-type"] == "smartflows"
    assert conn_type["hook-class-name"] == HOOK_CLASS
    assert set(conn_type["conn-fields"]) == set(ALLOWED_EXTRAS)
    assert conn_type["ui-field-behaviour"]["relabeling"]["password"] == "API key"


def test_hook_class_attributes_match_provider_info():
    assert (SmartFlowsHook.conn_type, SmartFlowsHook.conn_name_attr, SmartFlowsHook.default_conn_name) == (
        "smartflows",
        "smartflows_conn_id",
        "smartflows_default",
    )
    assert SmartFlowsHook.get_ui_field_behaviour()["hidden_fields"] == ["login", "schema"]


def test_providers_manager_registers_the_hook():
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    assert manager.providers["airflow-provider-smartflows"].version == __version__
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hook_info = manager.hooks["smartflows"]
    assert hook_info is not None
    assert hook_info.hook_class_name == HOOK_CLASS
    assert hook_info.connection_id_attribute_name == "smartflows_conn_id"
    assert hook_info.connection_testable


def _skip_without_form_libraries() -> None:
    missing = [name for name in ("wtforms", "flask_babel") if importlib.util.find_spec(name) is None]
    if Version(airflow.__version__) < Version("3.2") and missing:
        pytest.skip(
            f"Airflow < 3.2 builds connection forms with {', '.join(missing)}, which the FAB provider "
            "brings: without it Airflow registers no provider's form fields or labels"
        )


def test_providers_manager_loads_connection_form_fields():
    from airflow.providers_manager import ProvidersManager

    _skip_without_form_libraries()

    manager = ProvidersManager()
    assert manager.field_behaviours["smartflows"]["relabeling"]["host"] == "Base URL"
    widgets = {name for name in manager.connection_form_widgets if name.startswith("extra__smartflows__")}
    assert widgets == {f"extra__smartflows__{name}" for name in ALLOWED_EXTRAS}


@pytest.mark.airflow_version(below="3.2", reason="Airflow >= 3.2 builds the form from conn-fields")
def test_connection_form_before_conn_fields_says_its_extras_are_unchecked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    _skip_without_form_libraries()
    with caplog.at_level(logging.INFO, logger="airflow_provider_smartflows.hooks.smartflows"):
        widgets = SmartFlowsHook.get_connection_form_widgets()
    assert set(widgets) == set(ALLOWED_EXTRAS)
    assert "ignores conn-fields" in caplog.text
    assert "the hook validates them" in caplog.text


def test_task_runtime_providers_manager_registers_the_hook():
    runtime = pytest.importorskip("airflow.sdk.providers_manager_runtime")
    hook_info = runtime.ProvidersManagerTaskRuntime().hooks["smartflows"]
    assert hook_info is not None
    assert hook_info.hook_class_name == HOOK_CLASS


@pytest.mark.slow  # the airflow CLI
def test_airflow_providers_list_shows_the_provider(tmp_path):
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "airflow", "providers", "list", "--output", "json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    # Log lines (which start with "[" too) may come before the JSON list.
    start = ("\n" + result.stdout).index("\n[{")
    providers = {p["package_name"]: p for p in json.loads(result.stdout[start:])}
    assert providers["airflow-provider-smartflows"]["version"] == __version__


def test_provider_info_lists_importable_operators_sensors_triggers_and_links():
    import importlib

    info = get_provider_info()
    for section in ("hooks", "operators", "sensors", "triggers"):
        (entry,) = info[section]
        for module in entry["python-modules"]:
            assert importlib.import_module(module), module
    for link in info["extra-links"]:
        module, _, name = link.rpartition(".")
        assert getattr(importlib.import_module(module), name)().name == "Smart Flows execution"


def test_providers_manager_registers_the_extra_link():
    from airflow.providers_manager import ProvidersManager

    assert (
        "airflow_provider_smartflows.links.SmartFlowsExecutionLink"
        in ProvidersManager().extra_links_class_names
    )
