"""`airflow dags test` in a subprocess (throw-away AIRFLOW_HOME, `airflow db migrate`), like `make demo`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.examples.example_helpers import EXAMPLES

if TYPE_CHECKING:
    from airflow_provider_smartflows.emulator import EmulatorServer

# slow, serial: `airflow db migrate` and `airflow dags test` subprocesses, CPU-bound (make test runs
# them alone, after the parallel pass)
pytestmark = [pytest.mark.slow, pytest.mark.serial]

BIN = Path(sys.executable).parent
RECORDS = ["cli-1", "cli-2"]


def airflow(args: list[str], env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """Run the airflow CLI in its own process group; on timeout the group is killed by its PID."""
    process = subprocess.Popen(
        [str(BIN / "airflow"), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        raise AssertionError(f"airflow {' '.join(args)} timed out:\n{output[-5000:]}") from None
    return subprocess.CompletedProcess(process.args, process.returncode, output, None)


def test_dynamics_records_with_airflow_dags_test(smartflows_emulator: EmulatorServer, tmp_path: Path) -> None:
    home = tmp_path / "airflow-home"
    output = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.lstrip("_").startswith("AIRFLOW")}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(EXAMPLES),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW_CONN_SMARTFLOWS_DEFAULT=smartflows_emulator.connection_json(),
    )
    migrate = airflow(["db", "migrate"], env)
    assert migrate.returncode == 0, migrate.stdout[-5000:]

    conf = {"record_ids": RECORDS, "destination": f"file://{output}/"}
    run = airflow(
        ["dags", "test", "smartflows_dynamics_records", "2024-08-09", "--conf", json.dumps(conf)], env
    )

    assert run.returncode == 0, run.stdout[-5000:]
    assert sorted(e["input_data"]["id"][0] for e in smartflows_emulator.executions) == RECORDS
    assert sorted(p.relative_to(output).as_posix() for p in output.rglob("*.pdf")) == [
        f"2024-08-09/Invoice {record}.pdf" for record in RECORDS
    ]
