"""Local Smart Flows emulator (aiohttp) for tests, demos and offline development.

It imports nothing from the provider's other modules, so it is a second, independent
reading of the Smart Flows wire format. The names below load on first use: importing a
submodule (the pytest plugin) must not pull in aiohttp.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_smartflows.emulator.scenario import (
        DEFAULT_ADMIN_KEY,
        DEFAULT_REVOKED_KEY,
        DEFAULT_USER_KEY,
        ScenarioError,
    )
    from airflow_provider_smartflows.emulator.server import EmulatorInternalError, EmulatorServer

_WHERE = {
    "DEFAULT_ADMIN_KEY": "scenario",
    "DEFAULT_REVOKED_KEY": "scenario",
    "DEFAULT_USER_KEY": "scenario",
    "ScenarioError": "scenario",
    "EmulatorInternalError": "server",
    "EmulatorServer": "server",
}

__all__ = [
    "DEFAULT_ADMIN_KEY",
    "DEFAULT_REVOKED_KEY",
    "DEFAULT_USER_KEY",
    "EmulatorInternalError",
    "EmulatorServer",
    "ScenarioError",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value
    return value
