"""pytest fixtures for testing against the Smart Flows emulator (entry point ``pytest11``).

Installing the provider registers this plugin in every environment it is installed in, so it
imports only pytest at load time: the emulator (and aiohttp) load inside the fixtures, when a
test asks for one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow_provider_smartflows.emulator.server import EmulatorServer


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("smartflows", "Smart Flows emulator")
    group.addoption(
        "--smartflows-speedup",
        type=float,
        default=50.0,
        help="speed-up factor of the emulator fixtures' flows (default 50)",
    )


def _fail_on_errors(server: EmulatorServer, when: str) -> None:
    """Fail the current test (setup / teardown) with the emulator's recorded tracebacks."""
    from airflow_provider_smartflows.emulator.server import EmulatorInternalError

    try:
        server.check_errors()
    except EmulatorInternalError as exc:
        pytest.fail(f"{when}:\n{exc}", pytrace=False)


@pytest.fixture(scope="session")
def smartflows_emulator_session(request: pytest.FixtureRequest) -> Iterator[EmulatorServer]:
    """One emulator for the session, on 127.0.0.1 and a free port."""
    from airflow_provider_smartflows.emulator.server import EmulatorServer

    server = EmulatorServer(
        host="127.0.0.1", port=0, speedup=request.config.getoption("--smartflows-speedup")
    )
    server.start()
    try:
        yield server
        _fail_on_errors(server, "the emulator failed during tests that used the session fixture directly")
    finally:
        server.stop()


@pytest.fixture
def smartflows_emulator(smartflows_emulator_session: EmulatorServer) -> Iterator[EmulatorServer]:
    """The session emulator, reset (executions, log, faults, flows, speed-up) for this test.

    At teardown the test fails if a handler of the emulator raised meanwhile (an emulator bug
    that the client saw only as a 500), with the recorded tracebacks.
    """
    server = smartflows_emulator_session
    _fail_on_errors(server, "the emulator failed before this test (in a test that did not check it)")
    server.reset()
    yield server
    _fail_on_errors(server, "the emulator failed during this test")


@pytest.fixture
def smartflows_conn(smartflows_emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """``AIRFLOW_CONN_SMARTFLOWS_DEFAULT`` pointing at the emulator; returns the conn id."""
    monkeypatch.setenv("AIRFLOW_CONN_SMARTFLOWS_DEFAULT", smartflows_emulator.connection_json())
    return "smartflows_default"
