"""The README's examples are exercised, so they cannot rot."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.airflow_agnostic  # the README's text, the same on every Airflow line

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
DAG_BLOCKS = [block for block in BLOCKS if "with DAG(" in block]


def test_readme_has_the_two_commands_first() -> None:
    head = README.read_text().splitlines()[:8]
    assert any(line.startswith("make demo") for line in head)
    assert any(line.startswith("make test") for line in head)


@pytest.mark.parametrize("block", DAG_BLOCKS, ids=[re.search(r'DAG\("(\w+)"', b)[1] for b in DAG_BLOCKS])
def test_readme_dag_example_parses(block: str, tmp_path: Path) -> None:
    try:
        from airflow.dag_processing.dagbag import DagBag  # Airflow >= 3.1
    except ImportError:
        from airflow.models.dagbag import DagBag

    (tmp_path / "example.py").write_text(block)
    bag = DagBag(dag_folder=str(tmp_path))
    assert bag.import_errors == {}
    (dag_id,) = re.findall(r'DAG\("(\w+)"', block)
    assert dag_id in bag.dags


def _exec_block(marker: str) -> dict[str, Any]:
    (block,) = [b for b in BLOCKS if marker in b]
    namespace: dict[str, Any] = {}
    exec(compile(block, str(README), "exec"), namespace)
    return namespace


def test_readme_hook_task_example_runs(smartflows_emulator: Any, smartflows_conn: str) -> None:
    latest_flows = _exec_block("def latest_flows")["latest_flows"]
    assert "hello" in latest_flows.function()


def test_readme_pytest_fixture_example_runs(smartflows_emulator: Any, smartflows_conn: str) -> None:
    example = _exec_block("def test_my_dag_generates_one_invoice")["test_my_dag_generates_one_invoice"]
    example(smartflows_emulator, smartflows_conn)
    assert smartflows_emulator.executions_started("invoice") == 1
