"""The pytest plugin loads in every environment the provider is installed in: it stays light."""

from __future__ import annotations

import subprocess
import sys

import pytest

from airflow_provider_smartflows.emulator.content import extension_for

pytestmark = pytest.mark.airflow_agnostic  # the emulator's own behaviour, the same on every Airflow line


def test_loading_the_plugin_imports_neither_the_emulator_nor_aiohttp() -> None:
    code = (
        "import sys, airflow_provider_smartflows.emulator.pytest_plugin\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] == 'aiohttp'"
        " or m.startswith('airflow_provider_smartflows.emulator.') and not m.endswith('.pytest_plugin'))\n"
        "print(heavy)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert run.stdout.strip() == "[]"


def test_the_package_names_still_load_on_first_use() -> None:
    import airflow_provider_smartflows.emulator as emulator

    assert emulator.EmulatorServer.__name__ == "EmulatorServer"
    assert emulator.DEFAULT_ADMIN_KEY
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        emulator.Nope  # noqa: B018


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("application/pdf", ".pdf"),
        ("Application/PDF; charset=binary", ".pdf"),
        ("application/vnd.openxmlformats-officedocument.wordprocessingml.document", ".docx"),
        ("image/gif", ".gif"),
        ("application/x-unheard-of", ""),
        ("", ""),
        (None, ""),
    ],
)
def test_extension_for_has_the_providers_contract(content_type: str | None, expected: str) -> None:
    assert extension_for(content_type) == expected
