"""Fixtures of the emulator tests (the server itself comes from the package's pytest plugin)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from .helpers import Api

if TYPE_CHECKING:
    from airflow_provider_smartflows.emulator import EmulatorServer


@pytest.fixture
def emu(smartflows_emulator: EmulatorServer) -> EmulatorServer:
    return smartflows_emulator


@pytest.fixture
def api(emu: EmulatorServer) -> Api:
    return Api(emu, emu.api_key)


@pytest.fixture
def user_api(emu: EmulatorServer) -> Api:
    return Api(emu, emu.user_key)
