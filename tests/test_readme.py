"""The README and the documentation pages: their examples are exercised, so they cannot rot, and
the README stays a front page (the checkout's two commands, then the pip user's quick start, which
tests/distribution/test_quickstart.py runs verbatim)."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

from benchmarks.readme_figures import block, render

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").rglob("*.md"))]
BLOCKS = [
    (page, block)
    for page in PAGES
    for block in re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)
]
DAG_BLOCKS = [(page, block) for page, block in BLOCKS if "with DAG(" in block]
DAG_ID = re.compile(r'DAG\("(\w+)"')


def test_readme_has_the_two_commands_first() -> None:
    head = README.read_text().splitlines()[:8]
    assert any(line.startswith("make demo") for line in head)
    assert any(line.startswith("make test") for line in head)


def test_readme_is_a_front_page() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines: move the detail into docs/"
    headings = [line for line in lines if line.startswith("## ")]
    assert headings[0].startswith("## Quick start"), headings


def test_readme_figures_are_rendered_from_the_results_file() -> None:
    """The README's measured figures come from benchmarks/results.json, never copied by hand."""
    results = json.loads((ROOT / "benchmarks" / "results.json").read_text())["results"]
    assert block(README.read_text()) == render(results), (
        "the README's figures differ from benchmarks/results.json: run python -m benchmarks.readme_figures"
    )


def test_readme_figures_name_each_missed_target() -> None:
    results = json.loads((ROOT / "benchmarks" / "results.json").read_text())["results"]
    met = copy.deepcopy(results)
    for row in met["b5"]["rows"]:
        row["docs_per_s"] = 100.0  # ours and the reference alike: 100 %
    assert "met on every store" in render(met)
    slow = copy.deepcopy(met)
    for row in slow["b5"]["rows"]:
        if (row["store"], row["concurrency"], row["how"]) == ("s3", 16, "ours"):
            row["docs_per_s"] = 79.0
    assert "missed on s3 x16." in render(slow)
    assert "B6 (asset events): not run." in render({"b5": results["b5"]})


def test_readme_b3_figures_name_each_missed_target() -> None:
    results = json.loads((ROOT / "benchmarks" / "results.json").read_text())["results"]
    b3 = copy.deepcopy(results["b3"])
    assert "table" in b3, "results.json has no B3 run to render"
    for cell in b3["table"].values():
        cell["mb_per_s"]["median"] = 100.0  # ours and every plain client alike: 100 %
    line = render({"b3": b3}).splitlines()[3]
    assert line.startswith("- **One big document to storage (B3)**")
    assert "met on every store" in line
    b3["table"]["1 GiB/s3/ours"]["mb_per_s"]["median"] = 79.0
    assert "missed on s3 1 GiB (" in render({"b3": b3})


def test_readme_links_point_at_files_that_exist() -> None:
    targets = re.findall(r"\]\((?!https?://|#)([^)#\s]+)", README.read_text())
    assert "docs/index.md" in targets
    missing = [target for target in targets if not (ROOT / target).exists()]
    assert not missing


@pytest.mark.parametrize(
    "block",
    [block for _, block in DAG_BLOCKS],
    ids=[f"{page.name}:{DAG_ID.findall(block)[0]}" for page, block in DAG_BLOCKS],
)
def test_dag_example_parses(block: str, tmp_path: Path) -> None:
    from airflow_provider_smartflows.version_compat import AIRFLOW_V_3_3_PLUS

    if "SmartFlowsExecutionEventTrigger" in block and not AIRFLOW_V_3_3_PLUS:
        pytest.skip("the event trigger needs Airflow >= 3.3 (the asset state store)")
    try:
        from airflow.dag_processing.dagbag import DagBag  # Airflow >= 3.1
    except ImportError:
        from airflow.models.dagbag import DagBag

    (tmp_path / "example.py").write_text(block)
    bag = DagBag(dag_folder=str(tmp_path))
    assert bag.import_errors == {}
    (dag_id,) = DAG_ID.findall(block)
    assert dag_id in bag.dags


def test_every_dag_example_is_checked() -> None:
    assert {page.name for page, _ in DAG_BLOCKS} >= {
        "README.md",
        "running-a-flow.md",
        "waiting.md",
        "batch.md",
    }


def _exec_block(marker: str) -> dict[str, Any]:
    ((page, block),) = [(page, b) for page, b in BLOCKS if marker in b]
    namespace: dict[str, Any] = {}
    exec(compile(block, str(page), "exec"), namespace)
    return namespace


def test_hook_task_example_runs(smartflows_emulator: Any, smartflows_conn: str) -> None:
    latest_flows = _exec_block("def latest_flows")["latest_flows"]
    assert "hello" in latest_flows.function()


def test_pytest_fixture_example_runs(smartflows_emulator: Any, smartflows_conn: str) -> None:
    example = _exec_block("def test_my_dag_generates_one_invoice")["test_my_dag_generates_one_invoice"]
    example(smartflows_emulator, smartflows_conn)
    assert smartflows_emulator.executions_started("invoice") == 1
