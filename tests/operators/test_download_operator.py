"""SmartFlowsDownloadDocumentsOperator writing to file:// and to s3:// (moto server)."""

from __future__ import annotations

import datetime
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_smartflows.exceptions import SmartFlowsDownloadError, SmartFlowsInputError
from airflow_provider_smartflows.operators.smartflows import (
    SmartFlowsDownloadDocumentsOperator,
    SmartFlowsRunFlowOperator,
)
from airflow_provider_smartflows.storage import unique_names
from airflow_provider_smartflows.version_compat import AIRFLOW_VERSION
from tests.support.dag_runs import make_dag

AIRFLOW_V_3_0_PLUS = int(AIRFLOW_VERSION.split(".")[0]) >= 3

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.usefixtures("smartflows_conn")

EXECUTION_ID = "{{ ti.xcom_pull(task_ids='generate')['execution_id'] }}"


def generate_and_download(run_dag: Any, flow_id: str, **download_kwargs: Any) -> Any:
    def build() -> None:
        generate = SmartFlowsRunFlowOperator(task_id="generate", flow_id=flow_id, poll_interval=2)
        download_kwargs.setdefault("execution_id", EXECUTION_ID)
        download = SmartFlowsDownloadDocumentsOperator(task_id="download", **download_kwargs)
        generate >> download

    return run_dag(make_dag("download", build))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def local(uri: str) -> Path:
    assert uri.startswith("file://"), uri
    return Path(uri[len("file://") :])


@pytest.mark.slow  # a dag.test() run
def test_downloads_every_document_of_the_execution_to_a_folder(
    run_dag: Any, smartflows_emulator: Any, tmp_path: Path
) -> None:
    result = generate_and_download(run_dag, "multi-docs", destination=f"file://{tmp_path}/out/")
    assert result.states == {"generate": "success", "download": "success"}
    uris = result.xcom("download")
    document_ids = result.xcom("generate")["document_ids"]
    assert [local(uri).name for uri in uris] == ["Report.pdf", "Report (2).pdf", "Report.docx"]
    for uri, document_id in zip(uris, document_ids, strict=True):
        assert sha256(local(uri).read_bytes()) == smartflows_emulator.document_sha256(document_id)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(local(u).name for u in uris)


@pytest.mark.slow  # a dag.test() run
def test_document_ids_to_an_exact_file(run_dag: Any, smartflows_emulator: Any, tmp_path: Path) -> None:
    result = generate_and_download(
        run_dag,
        "hello",
        execution_id=None,
        document_ids="{{ ti.xcom_pull(task_ids='generate')['document_ids'] }}",
        destination=f"file://{tmp_path}/hello-copy.pdf",
    )
    assert result.states["download"] == "success"
    (uri,) = result.xcom("download")
    assert local(uri) == tmp_path / "hello-copy.pdf"
    (document_id,) = result.xcom("generate")["document_ids"]
    assert sha256(local(uri).read_bytes()) == smartflows_emulator.document_sha256(document_id)


@pytest.mark.slow  # a dag.test() run
def test_several_documents_need_a_folder(run_dag: Any, smartflows_emulator: Any, tmp_path: Path) -> None:
    result = generate_and_download(run_dag, "multi-docs", destination=f"file://{tmp_path}/one-file.pdf")
    assert isinstance(result.error("download"), SmartFlowsInputError)
    assert "end it with '/'" in str(result.error("download"))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow  # a dag.test() run
@pytest.mark.parametrize(
    ("overwrite", "state"), [(False, "failed"), (True, "success")], ids=["keep", "overwrite"]
)
def test_existing_file_is_kept_unless_overwrite(
    run_dag: Any, smartflows_emulator: Any, tmp_path: Path, overwrite: bool, state: str
) -> None:
    (tmp_path / "Hello.pdf").write_bytes(b"older")
    result = generate_and_download(run_dag, "hello", destination=f"file://{tmp_path}/", overwrite=overwrite)
    assert result.states["download"] == state
    if overwrite:
        assert (tmp_path / "Hello.pdf").read_bytes().startswith(b"%PDF")
    else:
        assert isinstance(result.error("download"), SmartFlowsDownloadError)
        assert (tmp_path / "Hello.pdf").read_bytes() == b"older"


def test_nothing_to_download_is_an_input_error() -> None:
    operator = SmartFlowsDownloadDocumentsOperator(task_id="d", destination="file:///tmp/x/")
    with pytest.raises(SmartFlowsInputError, match="execution_id or document_ids"):
        operator._document_ids()


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["a.pdf", "a.pdf", "a.pdf"], ["a.pdf", "a (2).pdf", "a (3).pdf"]),
        (["A.pdf", "a.pdf"], ["A.pdf", "a (2).pdf"]),
        (["a", "a"], ["a", "a (2)"]),
        (["a (2).pdf", "a.pdf", "a.pdf"], ["a (2).pdf", "a.pdf", "a (3).pdf"]),
    ],
    ids=["repeats", "case-insensitive", "no-extension", "suffix-taken"],
)
def test_unique_names(names: list[str], expected: list[str]) -> None:
    assert unique_names(names) == expected


# --------------------------------------------------------------------------- parallel downloads

LATENCY = 0.4  # seconds the emulator holds every content request


def many_documents_flow(emulator: Any, count: int) -> str:
    documents = [{"displayName": f"Letter {i:02d}"} for i in range(count)]
    steps = [{"message": "Generating", "percentage": 50, "seconds": 0.1}]
    return emulator.add_flow({"id": f"t-many-{count}", "steps": steps, "documents": documents})


def content_completions(emulator: Any) -> list[float]:
    """When each content request was answered (the log records a request when it is done)."""
    stamps = [r["ts"] for r in emulator.requests_to("GET", "/content$")]
    return sorted(datetime.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() for ts in stamps)


def proven_overlap(completions: list[float], latency: float) -> int:
    """A lower bound of how many content requests were in flight at once.

    Each request takes at least ``latency`` (the emulator sleeps that long before answering), so
    requests answered within less than ``latency`` of each other were all in flight just before
    the first of them was answered. Sequential requests are answered at least ``latency`` apart:
    the bound is then 1, however loaded the machine."""
    best = 1
    for first, start in enumerate(completions):
        inside = [t for t in completions[first:] if t - start < latency]
        best = max(best, len(inside))
    return best


@pytest.mark.slow  # a dag.test() run
def test_fifty_documents_download_in_parallel(run_dag: Any, smartflows_emulator: Any, tmp_path: Path) -> None:
    flow_id = many_documents_flow(smartflows_emulator, 50)
    smartflows_emulator.add_fault("latency", path="/content$", latency=LATENCY, times=1000)
    result = generate_and_download(run_dag, flow_id, destination=f"file://{tmp_path}/", max_concurrency=4)
    assert result.states["download"] == "success"
    uris = result.xcom("download")
    assert [local(uri).name for uri in uris] == [f"Letter {i:02d}.pdf" for i in range(50)]
    for uri, document_id in zip(uris, result.xcom("generate")["document_ids"], strict=True):
        assert sha256(local(uri).read_bytes()) == smartflows_emulator.document_sha256(document_id)
    completions = content_completions(smartflows_emulator)
    assert len(completions) == 50
    assert proven_overlap(completions, LATENCY) >= 3  # 4 workers; 1 would be sequential


@pytest.mark.slow  # a dag.test() run
def test_max_concurrency_one_is_sequential(run_dag: Any, smartflows_emulator: Any, tmp_path: Path) -> None:
    flow_id = many_documents_flow(smartflows_emulator, 6)
    smartflows_emulator.add_fault("latency", path="/content$", latency=LATENCY, times=1000)
    result = generate_and_download(run_dag, flow_id, destination=f"file://{tmp_path}/", max_concurrency=1)
    assert result.states["download"] == "success"
    assert proven_overlap(content_completions(smartflows_emulator), LATENCY) == 1


@pytest.mark.slow  # a dag.test() run
def test_first_failure_stops_the_rest_and_leaves_nothing(
    run_dag: Any, smartflows_emulator: Any, tmp_path: Path
) -> None:
    flow_id = many_documents_flow(smartflows_emulator, 20)
    # The first content request is cut short; every later one answers 2 s late, so none of the others
    # in flight can end (and free a slot for a fourth) before the operator has seen the failure.
    smartflows_emulator.add_fault("latency", path="/content$", latency=2.0, times=None, after=1)
    smartflows_emulator.add_fault("truncate", path="/content$", times=1)
    result = generate_and_download(run_dag, flow_id, destination=f"file://{tmp_path}/out/", max_concurrency=3)
    assert result.states["download"] == "failed"
    assert isinstance(result.error("download"), SmartFlowsDownloadError)
    assert "Nothing was saved" in str(result.error("download"))
    # Only what was in flight when the first failed had started; what finished was removed.
    assert len(smartflows_emulator.requests_to("GET", "/content$")) <= 3
    out = tmp_path / "out"  # made by the first write: none when every download failed or never started
    assert not out.exists() or list(out.iterdir()) == []


@pytest.mark.parametrize("value", [0, -1, True, 2.5], ids=["zero", "negative", "bool", "float"])
def test_max_concurrency_must_be_a_positive_integer(value: Any) -> None:
    with pytest.raises(SmartFlowsInputError, match="max_concurrency must be an integer >= 1"):
        SmartFlowsDownloadDocumentsOperator(task_id="d", destination="file:///tmp/x/", max_concurrency=value)


# --------------------------------------------------------------------------- s3 (moto server)


@pytest.fixture
def s3_bucket(moto_bucket: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The bucket ``docs`` on the moto server and the AWS connection ``aws_test`` to it."""
    with moto_bucket(monkeypatch, "aws_test", "docs") as s3:
        yield s3


@pytest.mark.slow  # a dag.test() run
def test_downloads_to_s3(run_dag: Any, smartflows_emulator: Any, s3_bucket: Any) -> None:
    result = generate_and_download(
        run_dag,
        "multi-docs",
        destination="s3://docs/{{ ds }}/",
        destination_conn_id="aws_test",
    )
    assert result.states == {"generate": "success", "download": "success"}
    uris = result.xcom("download")
    document_ids = result.xcom("generate")["document_ids"]
    assert len(uris) == 3
    # The URIs name the connection (s3://aws_test@docs/...), so ObjectStoragePath(uri) reopens them.
    assert all(uri.startswith("s3://aws_test@docs/") for uri in uris)
    uri_keys = [uri.split("@docs/", 1)[1] for uri in uris]
    keys = sorted(item["Key"] for item in s3_bucket.list_objects_v2(Bucket="docs")["Contents"])
    assert keys == sorted(uri_keys)
    for key, document_id in zip(uri_keys, document_ids, strict=True):
        body = s3_bucket.get_object(Bucket="docs", Key=key)["Body"].read()
        assert sha256(body) == smartflows_emulator.document_sha256(document_id)


@pytest.mark.slow  # a dag.test() run
def test_outlet_asset_event_lists_the_written_files(
    run_dag: Any, smartflows_emulator: Any, tmp_path: Path
) -> None:
    from airflow.providers.common.compat.sdk import Asset
    from airflow.utils.session import create_session
    from sqlalchemy import select

    if AIRFLOW_V_3_0_PLUS:
        from airflow.models.asset import AssetEvent
    else:  # Airflow 2 calls assets datasets
        from airflow.models.dataset import DatasetEvent as AssetEvent

    named = {"name": "smartflows_documents"} if AIRFLOW_V_3_0_PLUS else {}  # a Dataset has no name
    asset = Asset(uri=f"file://{tmp_path}/out/", **named)
    result = generate_and_download(run_dag, "hello", destination=f"file://{tmp_path}/out/", outlets=[asset])
    assert result.states["download"] == "success"
    with create_session() as session:
        events = session.scalars(
            select(AssetEvent).where(AssetEvent.source_run_id == result.dag_run.run_id)
        ).all()
        extras = [event.extra for event in events]
    assert extras == [{"uris": result.xcom("download")}]
