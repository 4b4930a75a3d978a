"""SmartFlowsRunFlowBatchOperator with real Airflow (``dag.test()``) against the emulator."""

from __future__ import annotations

import datetime
import hashlib
import json
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_smartflows.operators.batch import SmartFlowsRunFlowBatchOperator
from airflow_provider_smartflows.operators.batch_state import BatchStore

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.usefixtures("smartflows_conn")

from airflow_harness import make_dag  # noqa: E402  (put on sys.path by conftest.py)

MODES = pytest.mark.parametrize("deferrable", [False, True], ids=["sync", "deferrable"])


def customers(count: int) -> list[dict[str, Any]]:
    return [{"customer_id": f"c{n:03d}", "account": f"acc-{n}"} for n in range(1, count + 1)]


DYNAMICS = {"entity": "account", "id": ["{record[account]}"]}


def run_batch(run_dag: Any, tmp_path: Path, **kwargs: Any) -> Any:
    kwargs.setdefault("flow_id", "invoice")
    kwargs.setdefault("manifest_uri", f"file://{tmp_path}/out/manifest.jsonl")
    kwargs.setdefault("poll_interval", 2)
    kwargs.setdefault("gather_seconds", 0.1)
    dag = make_dag("batch", lambda: SmartFlowsRunFlowBatchOperator(task_id="batch", **kwargs))
    return run_dag(dag)


def manifest(tmp_path: Path) -> list[dict[str, Any]]:
    return BatchStore(f"file://{tmp_path}/out/manifest.jsonl", None).read_manifest()


def starts_by_account(emulator: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for execution in emulator.executions:
        account = execution["input_data"]["id"][0]
        counts[account] = counts.get(account, 0) + 1
    return counts


@MODES
def test_one_execution_per_record_with_documents_and_manifest(
    run_dag: Any, smartflows_emulator: Any, tmp_path: Path, deferrable: bool
) -> None:
    records = customers(7)
    result = run_batch(
        run_dag,
        tmp_path,
        records=records,
        record_key="customer_id",
        data_template=DYNAMICS,
        destination=f"file://{tmp_path}/docs/{{{{ ds }}}}/{{record[customer_id]}}.pdf",
        max_active=3,
        deferrable=deferrable,
    )
    assert result.states["batch"] == "success"
    assert starts_by_account(smartflows_emulator) == {r["account"]: 1 for r in records}
    summary = result.xcom("batch")
    assert {
        k: summary[k] for k in ("total", "succeeded", "failed", "unknown", "executions", "documents")
    } == {
        "total": 7,
        "succeeded": 7,
        "failed": 0,
        "unknown": 0,
        "executions": 7,
        "documents": 7,
    }
    assert summary["manifest"] == f"file://{tmp_path}/out/manifest.jsonl"
    lines = manifest(tmp_path)
    assert [line["key"] for line in sorted(lines, key=lambda x: x["line"])] == [
        r["customer_id"] for r in records
    ]
    by_id = {e["id"]: e for e in smartflows_emulator.executions}
    for line in lines:
        execution = by_id[line["execution_id"]]
        assert line["status"] == "succeeded"
        assert line["execution_status"] == "Success"
        assert execution["input_data"] == {"entity": "account", "id": [f"acc-{line['line']}"]}
        (document,) = line["documents"]
        assert document["document_id"] == execution["documents"][0]
        path = document["uri"].removeprefix("file://")
        assert path.endswith(f"/docs/{result.dag_run.logical_date:%Y-%m-%d}/{line['key']}.pdf")
        with open(path, "rb") as handle:
            data = handle.read()
        assert document["size"] == len(data)
        assert document["sha256"] == hashlib.sha256(data).hexdigest()
        assert document["sha256"] == smartflows_emulator.document_sha256(document["document_id"])


def test_records_from_an_xcom(run_dag: Any, smartflows_emulator: Any, tmp_path: Path) -> None:
    from airflow.providers.common.compat.sdk import task

    def build() -> None:
        @task
        def make_records() -> list[dict[str, Any]]:
            return customers(4)

        SmartFlowsRunFlowBatchOperator(
            task_id="batch",
            flow_id="invoice",
            records=make_records(),
            data_template=DYNAMICS,
            manifest_uri=f"file://{tmp_path}/out/manifest.jsonl",
            poll_interval=2,
            gather_seconds=0.1,
        )

    result = run_dag(make_dag("batch_xcom", build))
    assert result.states["batch"] == "success"
    assert starts_by_account(smartflows_emulator) == {f"acc-{n}": 1 for n in range(1, 5)}
    assert sorted(line["key"] for line in manifest(tmp_path)) == ["1", "2", "3", "4"]


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_records_streamed_from_a_local_object(
    run_dag: Any, smartflows_emulator: Any, tmp_path: Path, fmt: str
) -> None:
    records = customers(5)
    source = tmp_path / f"records.{fmt}"
    if fmt == "jsonl":
        source.write_text("".join(json.dumps(r) + "\n" for r in records) + "\n")  # a blank last line
    else:
        source.write_text(
            "customer_id,account\n" + "".join(f"{r['customer_id']},{r['account']}\n" for r in records)
        )
    result = run_batch(
        run_dag,
        tmp_path,
        records_uri=f"file://{source}",
        record_key="customer_id",
        data_template=DYNAMICS,
        max_active=2,
        deferrable=True,
    )
    assert result.states["batch"] == "success"
    assert starts_by_account(smartflows_emulator) == {r["account"]: 1 for r in records}
    first_line = 1 if fmt == "jsonl" else 2  # a CSV's header is line 1
    assert {line["key"]: line["line"] for line in manifest(tmp_path)} == {
        r["customer_id"]: n + first_line for n, r in enumerate(records)
    }


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


def test_concurrency_never_above_max_active(run_dag: Any, smartflows_emulator: Any, tmp_path: Path) -> None:
    # Each execution runs 0.5 s of emulated... 25 virtual s at the fixtures' speed-up of 50.
    smartflows_emulator.add_flow(
        {"id": "steady", "input": "any", "steps": [{"message": "Working", "percentage": 50, "seconds": 25}]}
    )
    result = run_batch(
        run_dag,
        tmp_path,
        flow_id="steady",
        records=customers(12),
        data_template=DYNAMICS,
        max_active=4,
        deferrable=True,
    )
    assert result.states["batch"] == "success"

    def parse(text: str) -> float:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()

    created = sorted(parse(e["created_at"]) for e in smartflows_emulator.executions)
    assert len(created) == 12
    # An execution runs 0.5 s: at each start, count those started less than 0.5 s before it.
    overlapping = [sum(1 for other in created if start - 0.5 < other <= start) for start in created]
    assert max(overlapping) == 4


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


@MODES
def test_failed_records_are_retried_then_reported(
    run_dag: Any, smartflows_emulator: Any, tmp_path: Path, deferrable: bool
) -> None:
    result = run_batch(
        run_dag,
        tmp_path,
        flow_id="error",
        records=customers(3),
        data_template=DYNAMICS,
        record_retries=1,
        deferrable=deferrable,
    )
    assert result.states["batch"] == "failed"
    error = result.error("batch")
    assert "3 of 3 records failed" in str(error)
    assert f"file://{tmp_path}/out/manifest.jsonl" in str(error)
    assert starts_by_account(smartflows_emulator) == {"acc-1": 2, "acc-2": 2, "acc-3": 2}
    assert result.tries["batch"] == 1  # not retried by Airflow: the verdict would not change
    for line in manifest(tmp_path):
        assert line["status"] == "failed"
        assert line["execution_status"] == "Error"
        assert line["attempts"] == 2
        assert "TemplateError: Field CustomerName missing in data set" in line["messages"][0]
        (previous,) = line["previous_attempts"]
        assert previous["execution_status"] == "Error"
        assert previous["execution_id"] != line["execution_id"]


def test_a_retried_record_succeeds_and_failures_within_the_limit_pass(
    run_dag: Any, smartflows_emulator: Any, tmp_path: Path
) -> None:
    # flaky: its first execution ends Error, later ones succeed.
    result = run_batch(
        run_dag,
        tmp_path,
        flow_id="flaky",
        records=customers(3),
        data_template=DYNAMICS,
        max_active=1,
        deferrable=True,
    )
    assert result.states["batch"] == "success"
    assert sorted(starts_by_account(smartflows_emulator).values()) == [1, 1, 2]
    lines = {line["key"]: line for line in manifest(tmp_path)}
    assert lines["1"]["attempts"] == 2
    assert lines["1"]["previous_attempts"][0]["messages"] == [
        "FlowExecutionError: Simulated failure (fail_first)"
    ]
    assert {line["status"] for line in lines.values()} == {"succeeded"}


def test_failures_within_max_failed_records_pass(
    run_dag: Any, smartflows_emulator: Any, tmp_path: Path
) -> None:
    result = run_batch(
        run_dag,
        tmp_path,
        flow_id="error",
        records=customers(2),
        data_template=DYNAMICS,
        record_retries=0,
        max_failed_records=1.0,
    )
    assert result.states["batch"] == "success"
    summary = result.xcom("batch")
    assert (summary["failed"], summary["succeeded"], summary["executions"]) == (2, 0, 2)


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


def test_a_completed_batch_runs_nothing_again(run_dag: Any, smartflows_emulator: Any, tmp_path: Path) -> None:
    from airflow_harness import make_dag

    def build() -> None:
        for task_id in ("first", "again"):
            SmartFlowsRunFlowBatchOperator(
                task_id=task_id,
                flow_id="invoice",
                records=customers(3),
                data_template=DYNAMICS,
                manifest_uri=f"file://{tmp_path}/out/manifest.jsonl",
                gather_seconds=0.1,
            )

    dag = make_dag("batch_twice", build)
    dag.get_task("first") >> dag.get_task("again")
    result = run_dag(dag)
    # The second task is another owner: it refuses the first one's checkpoint before starting anything.
    assert result.states == {"first": "success", "again": "failed"}
    assert "belongs to" in str(result.error("again"))
    assert len(smartflows_emulator.executions) == 3


AMBIGUOUS = {
    # The server creates the second record's execution, then the connection drops: adopted.
    "created-then-reset": {"kind": "reset", "when": "after"},
    "created-then-500": {"kind": "status", "status": 500, "when": "after"},
    # The connection drops before the server creates anything: the listing proves it, started again.
    "reset-before": {"kind": "reset", "when": "before"},
}


@pytest.mark.parametrize("fault", list(AMBIGUOUS.values()), ids=list(AMBIGUOUS))
@MODES
def test_an_ambiguous_start_is_reconciled_to_exactly_one_execution(
    run_dag: Any, smartflows_emulator: Any, tmp_path: Path, deferrable: bool, fault: dict[str, Any]
) -> None:
    fault = dict(fault)
    smartflows_emulator.add_fault(
        fault.pop("kind"), method="POST", path="/flows/executions$", after=1, times=1, **fault
    )
    result = run_batch(
        run_dag,
        tmp_path,
        records=customers(3),
        data_template=DYNAMICS,
        max_active=2,
        deferrable=deferrable,
        reconcile_settle_time=0.2,
    )
    assert result.states["batch"] == "success"
    assert starts_by_account(smartflows_emulator) == {"acc-1": 1, "acc-2": 1, "acc-3": 1}
    lines = {line["key"]: line for line in manifest(tmp_path)}
    assert {key: line["status"] for key, line in lines.items()} == dict.fromkeys("123", "succeeded")
    (execution,) = [e for e in smartflows_emulator.executions if e["input_data"]["id"] == ["acc-2"]]
    assert lines["2"]["execution_id"] == execution["id"]
    # Three POSTs answered, plus the ambiguous one.
    assert len(smartflows_emulator.requests_to("POST", "/flows/executions$")) == (
        3 if fault.get("when") == "after" else 4
    )


def test_an_ambiguous_start_that_cannot_be_told_is_unknown_and_not_started_again(
    run_dag: Any, smartflows_emulator: Any, tmp_path: Path
) -> None:
    smartflows_emulator.add_fault(
        "reset", method="POST", path="/flows/executions$", after=1, times=1, when="after"
    )
    # The key may not list the flow's executions: nothing can be proven.
    smartflows_emulator.add_fault(
        "status", status=403, method="GET", path="/flows/[^/]+/executions", times=10
    )
    result = run_batch(run_dag, tmp_path, records=customers(3), data_template=DYNAMICS, max_active=1)
    assert result.states["batch"] == "failed"
    assert "1 of them unknown" in str(result.error("batch"))
    assert starts_by_account(smartflows_emulator) == {"acc-1": 1, "acc-2": 1, "acc-3": 1}
    lines = {line["key"]: line for line in manifest(tmp_path)}
    assert (lines["2"]["status"], lines["2"]["execution_id"]) == ("unknown", None)
    assert "may have created an execution" in lines["2"]["messages"][0]
    assert "could not tell whether it was created" in lines["2"]["messages"][0]
    assert lines["1"]["status"] == lines["3"]["status"] == "succeeded"


def test_reconciliation_off_marks_an_ambiguous_start_unknown(
    run_dag: Any, smartflows_emulator: Any, tmp_path: Path
) -> None:
    smartflows_emulator.add_fault("reset", method="POST", path="/flows/executions$", after=1, times=1)
    result = run_batch(
        run_dag,
        tmp_path,
        records=customers(3),
        data_template=DYNAMICS,
        max_active=1,
        reconcile_ambiguous_start=False,
    )
    assert result.states["batch"] == "failed"
    lines = {line["key"]: line for line in manifest(tmp_path)}
    assert lines["2"]["status"] == "unknown"
    assert smartflows_emulator.requests_to("GET", "/flows/[^/]+/executions") == []
    assert starts_by_account(smartflows_emulator) == {"acc-1": 1, "acc-3": 1}


def test_a_second_ambiguous_start_of_a_record_is_unknown(
    run_dag: Any, smartflows_emulator: Any, tmp_path: Path
) -> None:
    # Both starts of record 2 reset before the server created anything: started again once, no third.
    smartflows_emulator.add_fault("reset", method="POST", path="/flows/executions$", after=1, times=2)
    result = run_batch(
        run_dag,
        tmp_path,
        records=customers(3),
        data_template=DYNAMICS,
        max_active=1,
        reconcile_settle_time=0.2,
    )
    assert result.states["batch"] == "failed"
    lines = {line["key"]: line for line in manifest(tmp_path)}
    assert lines["2"]["status"] == "unknown"
    assert "second start" in lines["2"]["messages"][0]
    assert len(smartflows_emulator.requests_to("POST", "/flows/executions$")) == 4
    assert starts_by_account(smartflows_emulator) == {"acc-1": 1, "acc-3": 1}


@pytest.mark.airflow_version(
    min="3.0",
    reason="Airflow 2's dag.test() lets a task's execution_timeout escape the run instead of retrying the task",
)
def test_a_record_caught_mid_start_by_a_crash_is_reconciled_on_resume(
    run_dag: Any, smartflows_emulator: Any, tmp_path: Path
) -> None:
    # The third start takes 5 s to answer; the try's execution_timeout (4 s) interrupts it after it was
    # sent. The retry finds it mid-start and looks for it; its settle time (2 s) outlasts the server.
    smartflows_emulator.add_fault(
        "latency", latency=5, method="POST", path="/flows/executions$", after=2, times=1
    )
    result = run_batch(
        run_dag,
        tmp_path,
        records=customers(4),
        data_template=DYNAMICS,
        max_active=4,
        execution_timeout=datetime.timedelta(seconds=4),
        retries=1,
        retry_delay=datetime.timedelta(seconds=0),
        cancel_on_kill=False,
        reconcile_settle_time=2,
    )
    assert result.tries["batch"] == 2
    assert result.states["batch"] == "success"
    smartflows_emulator.wait_deferred()  # a late creation of record 3's execution would count too
    lines = {line["key"]: line for line in manifest(tmp_path)}
    # Record 3 was adopted (or proven not created and started again); record 4 was not sent before
    # the interruption: the retry started it. Each record ran exactly once.
    assert {key: line["status"] for key, line in lines.items()} == dict.fromkeys("1234", "succeeded")
    assert starts_by_account(smartflows_emulator) == {"acc-1": 1, "acc-2": 1, "acc-3": 1, "acc-4": 1}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            '{"customer_id": "c1", "account": "a1"}\n{"customer_id": "c2", "account": "a2"}\n{"customer_id": oops}\n',
            "Line 3 of",
        ),
        (
            '{"customer_id": "c1", "account": "a1"}\n{"customer_id": "c2"}\n',
            "Line 2: data_template needs the field 'account'",
        ),
        (None, "Cannot read the records object"),
    ],
    ids=["malformed-line", "missing-template-field", "unreadable-object"],
)
def test_bad_input_fails_with_the_line_before_starting_anything(
    run_dag: Any, smartflows_emulator: Any, tmp_path: Path, source: str | None, expected: str
) -> None:
    path = tmp_path / "records.jsonl"
    if source is not None:
        path.write_text(source)
    result = run_batch(run_dag, tmp_path, records_uri=f"file://{path}", data_template=DYNAMICS)
    assert result.states["batch"] == "failed"
    assert expected in str(result.error("batch"))
    assert smartflows_emulator.executions == []


def test_two_records_with_one_key_fail_before_anything_starts(
    run_dag: Any, smartflows_emulator: Any, tmp_path: Path
) -> None:
    """Two records with one key would write one file (a document lost): refused, naming both lines."""
    records = [*customers(3), {"customer_id": "c002", "account": "acc-9"}]
    result = run_batch(
        run_dag,
        tmp_path,
        records=records,
        record_key="customer_id",
        data_template=DYNAMICS,
        destination=f"file://{tmp_path}/docs/{{record[customer_id]}}.pdf",
    )
    assert result.states["batch"] == "failed"
    error = str(result.error("batch"))
    assert "Line 4" in error
    assert "'c002'" in error
    assert "line 2" in error
    assert smartflows_emulator.executions == []


def test_xml_input_rendered_per_record_and_escaped(
    run_dag: Any, smartflows_emulator: Any, tmp_path: Path
) -> None:
    template = "<letter><to>{{ record.name }}</to><day>{{ ds }}</day><line>{{ line }}</line></letter>"
    records = [{"name": "Smith & Sons"}, {"name": "<Jones>"}]
    result = run_batch(run_dag, tmp_path, flow_id="xml-letter", records=records, xml_template=template)
    assert result.states["batch"] == "success"
    day = f"{result.dag_run.logical_date:%Y-%m-%d}"
    inputs = sorted(e["input_data"] for e in smartflows_emulator.executions)
    assert inputs == [
        f"<letter><to>&lt;Jones&gt;</to><day>{day}</day><line>2</line></letter>",
        f"<letter><to>Smith &amp; Sons</to><day>{day}</day><line>1</line></letter>",
    ]
    assert all(len(line["documents"]) == 2 for line in manifest(tmp_path))


def test_a_server_asking_to_slow_down_delays_starts_instead_of_failing(
    run_dag: Any, smartflows_emulator: Any, tmp_path: Path
) -> None:
    # Five 429s in a row: more than the hook's own retries (3) for the second start.
    smartflows_emulator.add_fault(
        "status", status=429, retry_after=0, method="POST", path="/flows/executions$", after=1, times=5
    )
    result = run_batch(run_dag, tmp_path, records=customers(3), data_template=DYNAMICS, deferrable=True)
    assert result.states["batch"] == "success"
    assert starts_by_account(smartflows_emulator) == {"acc-1": 1, "acc-2": 1, "acc-3": 1}
    assert len(smartflows_emulator.requests_to("POST", "/flows/executions$")) == 3 + 5
