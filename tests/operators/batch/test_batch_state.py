"""The batch's checkpoint and manifest: resumes, retries, object storage, through real Airflow."""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
from typing import TYPE_CHECKING, Any

import pytest

from tests.operators.batch.batch_helpers import DYNAMICS, customers, manifest, run_batch, starts_by_account

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("smartflows_conn")]  # dag.test() runs


def test_records_manifest_and_documents_on_s3(
    run_dag: Any, smartflows_emulator: Any, tmp_path: Path, moto_bucket: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    with moto_bucket(monkeypatch, "aws_batch", "batch") as s3:
        records = customers(3)
        s3.put_object(
            Bucket="batch", Key="in/records.jsonl", Body="".join(json.dumps(r) + "\n" for r in records)
        )
        result = run_batch(
            run_dag,
            tmp_path,
            records_uri="s3://batch/in/records.jsonl",
            records_conn_id="aws_batch",
            record_key="customer_id",
            data_template=DYNAMICS,
            manifest_uri="s3://batch/out/manifest.jsonl",
            manifest_conn_id="aws_batch",
            destination="s3://batch/docs/{record[customer_id]}.pdf",
            destination_conn_id="aws_batch",
            deferrable=True,
        )
        assert result.states["batch"] == "success"
        keys = sorted(item["Key"] for item in s3.list_objects_v2(Bucket="batch")["Contents"])
        assert keys == [
            "docs/c001.pdf",
            "docs/c002.pdf",
            "docs/c003.pdf",
            "in/records.jsonl",
            "out/manifest.jsonl",
            "out/manifest.jsonl.checkpoint.json",
        ]
        body = s3.get_object(Bucket="batch", Key="out/manifest.jsonl")["Body"].read().decode()
        lines = [json.loads(line) for line in body.splitlines()]
        for line in lines:
            (document,) = line["documents"]
            data = s3.get_object(Bucket="batch", Key=f"docs/{line['key']}.pdf")["Body"].read()
            assert document["sha256"] == hashlib.sha256(data).hexdigest()
            assert document["uri"].endswith(f"batch/docs/{line['key']}.pdf")
    assert starts_by_account(smartflows_emulator) == {r["account"]: 1 for r in records}


def test_records_finishing_one_by_one_at_the_end_are_each_recorded_once(
    run_dag: Any, smartflows_emulator: Any, tmp_path: Path
) -> None:
    """The last executions finish at different times, with nothing left to start: every resume
    must keep what it recorded (the checkpoint is saved before each wait, not only by a wave)."""
    # 10-60 virtual s at the fixtures' speed-up of 50: 0.2-1.2 s each, spread over the records.
    smartflows_emulator.add_flow(
        {
            "id": "varied",
            "input": "any",
            "steps": [{"message": "Working", "percentage": 50, "seconds": [10, 60]}],
        }
    )
    result = run_batch(
        run_dag,
        tmp_path,
        flow_id="varied",
        records=customers(9),
        data_template=DYNAMICS,
        max_active=4,
        deferrable=True,
        timeout=120,  # a batch that kept reloading finished records would run until this ends it
    )
    assert result.states["batch"] == "success"
    assert starts_by_account(smartflows_emulator) == {f"acc-{n}": 1 for n in range(1, 10)}
    lines = manifest(tmp_path)
    assert sorted(line["line"] for line in lines) == list(range(1, 10))
    summary = result.xcom("batch")
    assert (summary["succeeded"], summary["executions"]) == (9, 9)
    # One resume per finishing wave at most: 9 executions cannot need more than 9 resumes.
    assert 1 <= summary["resumes"] <= 9, summary


@pytest.mark.airflow_version(
    not_line="3.0",
    reason="Airflow 3.0's dag.test() resumes a retried task from the previous try's deferral event",
)
def test_a_retry_resumes_from_the_checkpoint_and_starts_nothing_twice(
    run_dag: Any, smartflows_emulator: Any, tmp_path: Path
) -> None:
    # The key is refused on one progress poll mid-batch: the first try fails with records running.
    smartflows_emulator.add_fault("status", status=401, method="GET", path="/progress$", after=8, times=1)
    result = run_batch(
        run_dag,
        tmp_path,
        records=customers(10),
        data_template=DYNAMICS,
        max_active=3,
        deferrable=True,
        retries=1,
        retry_delay=datetime.timedelta(seconds=0),
    )
    assert result.states["batch"] == "success"
    assert result.tries["batch"] == 2
    assert "Waiting for the batch's executions failed" in str(result.errors["batch"][0])
    assert starts_by_account(smartflows_emulator) == {f"acc-{n}": 1 for n in range(1, 11)}
    assert sorted(line["line"] for line in manifest(tmp_path)) == list(range(1, 11))
    assert {line["status"] for line in manifest(tmp_path)} == {"succeeded"}


@pytest.mark.parametrize("store", ["file", "s3"])
def test_manifest_unique_per_run_with_run_id(
    run_dag: Any,
    smartflows_emulator: Any,
    tmp_path: Path,
    moto_bucket: Any,
    monkeypatch: pytest.MonkeyPatch,
    store: str,
) -> None:
    """The documented advice, ``{{ run_id }}`` in ``manifest_uri``: the rendered id (``:`` and ``+``
    in ``manual__2026-...T08:53:21+00:00``) is a valid object key on file:// and s3://, and each run
    gets its own manifest and checkpoint."""
    with contextlib.ExitStack() as stack:
        if store == "s3":
            s3 = stack.enter_context(moto_bucket(monkeypatch, "aws_batch", "batch"))
            base, conn = "s3://batch/manifests", {"manifest_conn_id": "aws_batch"}
        else:
            base, conn = f"file://{tmp_path}/manifests", {}
        for _ in range(2):
            result = run_batch(
                run_dag,
                tmp_path,
                records=customers(2),
                record_key="customer_id",
                data_template=DYNAMICS,
                manifest_uri=base + "/{{ run_id }}.jsonl",
                **conn,
            )
            assert result.states["batch"] == "success", result.errors
        if store == "s3":
            keys = [item["Key"] for item in s3.list_objects_v2(Bucket="batch")["Contents"]]
        else:
            keys = [p.name for p in (tmp_path / "manifests").iterdir()]
        manifests = [key for key in keys if key.endswith(".jsonl")]
        assert len(manifests) == 2
        assert all(":" in key and "+" in key for key in manifests)
