"""The emulator's own errors: recorded with their traceback, reported at teardown, never faults."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap
from typing import TYPE_CHECKING

import pytest
import requests

from airflow_provider_smartflows.emulator import EmulatorInternalError, EmulatorServer

if TYPE_CHECKING:
    from pathlib import Path

    from .helpers import Api

pytestmark = pytest.mark.airflow_agnostic  # the emulator's own behaviour, the same on every Airflow line


def crash(emu: EmulatorServer, message: str = "boom from the test") -> requests.Response:
    """A real exception inside a handler (the admin self-test route raises RuntimeError)."""
    return requests.post(
        emu.base_url + "/_emulator/crash",
        json={"message": message},
        headers={"X-API-Key": emu.api_key},
        timeout=10,
    )


def test_a_handler_exception_is_a_500_recorded_with_its_traceback(emu: EmulatorServer) -> None:
    r = crash(emu)
    assert r.status_code == 500
    assert r.json()["message"] == "Internal emulator error: RuntimeError"
    (error,) = emu.errors
    assert error["method"] == "POST"
    assert error["path"] == "/_emulator/crash"
    assert error["error"] == "RuntimeError: boom from the test"
    assert "Traceback (most recent call last)" in error["traceback"]
    assert "in admin_crash" in error["traceback"]
    emu.clear_errors()


def test_check_errors_raises_with_the_tracebacks_then_forgets_them(emu: EmulatorServer) -> None:
    crash(emu, "first")
    crash(emu, "second")
    with pytest.raises(EmulatorInternalError, match="2 unexpected exception") as info:
        emu.check_errors()
    text = str(info.value)
    assert "RuntimeError: first" in text
    assert "RuntimeError: second" in text
    assert "POST /_emulator/crash" in text
    assert [e["error"] for e in info.value.errors] == ["RuntimeError: first", "RuntimeError: second"]
    assert emu.errors == []
    emu.check_errors()  # nothing left: no raise


def test_reset_keeps_the_errors_for_whoever_reports_them(emu: EmulatorServer) -> None:
    crash(emu)
    emu.reset()
    assert len(emu.errors) == 1
    emu.clear_errors()


@pytest.mark.parametrize(
    ("kind", "kwargs"),
    [
        ("status", {"status": 500}),
        ("status", {"status": 500, "when": "after"}),
        ("reset", {}),
        ("html", {"status": 503}),
        ("invalid_json", {}),
        ("truncate", {}),
        ("unknown_status", {}),
    ],
    ids=["status", "status-after", "reset", "html", "invalid_json", "truncate", "unknown_status"],
)
def test_injected_faults_are_not_emulator_errors(
    emu: EmulatorServer, api: Api, kind: str, kwargs: dict[str, object]
) -> None:
    emu.add_fault(kind, path="/users/me", **kwargs)  # type: ignore[arg-type]
    # The reset and truncate faults cut the answer.
    with contextlib.suppress(requests.ConnectionError, requests.exceptions.ChunkedEncodingError):
        api.get("/users/me")
    assert emu.faults[0]["hits"] == 1
    assert emu.errors == []


def test_admin_routes_read_and_clear_the_errors(emu: EmulatorServer) -> None:
    crash(emu)
    headers = {"X-API-Key": emu.api_key}
    listed = requests.get(emu.base_url + "/_emulator/errors", headers=headers, timeout=10).json()
    assert [e["error"] for e in listed] == ["RuntimeError: boom from the test"]
    assert "Traceback" in listed[0]["traceback"]
    assert requests.delete(emu.base_url + "/_emulator/errors", headers=headers, timeout=10).status_code == 200
    assert emu.errors == []


def test_a_user_key_cannot_read_the_errors(emu: EmulatorServer) -> None:
    r = requests.get(emu.base_url + "/_emulator/errors", headers={"X-API-Key": emu.user_key}, timeout=10)
    assert r.status_code == 403


def test_the_fixture_fails_the_test_that_caused_an_emulator_error(tmp_path: Path) -> None:
    """A separate pytest run (the plugin comes from the entry point): the crashing test errors at
    teardown with the traceback, the next test passes, the other test file is not blamed."""
    (tmp_path / "test_crashing.py").write_text(
        textwrap.dedent(
            """
            import requests

            def test_crashes(smartflows_emulator):
                r = requests.post(
                    smartflows_emulator.base_url + "/_emulator/crash",
                    json={"message": "crash inside the emulator"},
                    headers={"X-API-Key": smartflows_emulator.api_key},
                    timeout=10,
                )
                assert r.status_code == 500  # the test itself passes: only teardown can catch it

            def test_next_one_is_clean(smartflows_emulator):
                assert smartflows_emulator.errors == []
            """
        )
    )
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rE", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    out = run.stdout
    assert run.returncode == 1, out + run.stderr
    assert "2 passed, 1 error" in out, out
    assert "ERROR at teardown of test_crashes" in out, out
    assert "the emulator failed during this test" in out
    assert "RuntimeError: crash inside the emulator" in out
    assert "Traceback (most recent call last)" in out
