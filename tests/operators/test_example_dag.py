"""The example DAG runs end to end against the emulator."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow  # a dag.test() run

EXAMPLE = Path(__file__).resolve().parents[2] / "dags_examples" / "smartflows_generate_document.py"


@pytest.mark.usefixtures("smartflows_conn")
def test_generate_document_example(run_dag: Any, smartflows_emulator: Any, tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("smartflows_generate_document", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    result = run_dag(module.dag, run_conf={"output": f"file://{tmp_path}/"})

    assert result.states == {"generate": "success", "download": "success"}
    (document_id,) = result.xcom("generate")["document_ids"]
    pdf = tmp_path / "Hello.pdf"
    assert result.xcom("download") == [f"file://{pdf}"]
    assert hashlib.sha256(pdf.read_bytes()).hexdigest() == smartflows_emulator.document_sha256(document_id)
