"""Local Smart Flows emulator (aiohttp) for tests, demos and offline development.

It imports nothing from the provider's other modules, so it is a second, independent
reading of the Smart Flows wire format.
"""

from __future__ import annotations

from airflow_provider_smartflows.emulator.scenario import (
    DEFAULT_ADMIN_KEY,
    DEFAULT_REVOKED_KEY,
    DEFAULT_USER_KEY,
    ScenarioError,
)
from airflow_provider_smartflows.emulator.server import EmulatorServer

__all__ = ["DEFAULT_ADMIN_KEY", "DEFAULT_REVOKED_KEY", "DEFAULT_USER_KEY", "EmulatorServer", "ScenarioError"]
