"""The early check that a destination's filesystem can be loaded: a missing ``s3fs`` / ``adlfs`` /
``gcsfs`` fails the download operator when the DAG is parsed and the batch before any request,
naming the extra to install.

Nothing is uninstalled: fsspec's registry is patched so the scheme's implementation names a module
that cannot be imported (the thing under test is the provider's error, not the store).
"""

from __future__ import annotations

import importlib
from typing import Any

import pytest

from airflow_provider_smartflows.exceptions import SmartFlowsInputError
from airflow_provider_smartflows.operators.batch import SmartFlowsRunFlowBatchOperator
from airflow_provider_smartflows.operators.smartflows import SmartFlowsDownloadDocumentsOperator
from airflow_provider_smartflows.storage import check_filesystem_available

fsspec_registry = importlib.import_module("fsspec.registry")


@pytest.fixture
def missing(monkeypatch: pytest.MonkeyPatch) -> Any:
    """``missing("s3")``: the scheme's fsspec implementation cannot be imported from now on."""

    def make_missing(*protocols: str) -> None:
        for protocol in protocols:
            monkeypatch.delitem(fsspec_registry._registry, protocol, raising=False)
            monkeypatch.setitem(
                fsspec_registry.known_implementations,
                protocol,
                {"class": "not_installed_fs_for_tests.FileSystem", "err": f"Install it to access {protocol}"},
            )

    return make_missing


@pytest.mark.airflow_agnostic
@pytest.mark.parametrize(
    ("uri", "extra"),
    [
        ("s3://bucket/invoices/", "amazon"),
        ("s3://aws_conn@bucket/x.pdf", "amazon"),
        ("abfs://container/x/", "azure"),
        ("az://container/x/", "azure"),
        ("abfss://container/x/", "azure"),
        ("gs://bucket/x/", "gcs"),
        ("gcs://bucket/x/", "gcs"),
    ],
)
def test_a_missing_filesystem_names_the_extra(missing: Any, uri: str, extra: str) -> None:
    missing(uri.split("://", 1)[0])
    with pytest.raises(SmartFlowsInputError) as raised:
        check_filesystem_available(uri)
    message = str(raised.value)
    assert f"pip install 'airflow-provider-smartflows[{extra}]'" in message
    assert uri in message


@pytest.mark.airflow_agnostic
@pytest.mark.parametrize(
    "uri", [None, "", "file:///tmp/x/", "/tmp/x/", "local:///tmp/x", "no-such-scheme://x/"]
)
def test_local_empty_and_unknown_uris_pass(uri: Any) -> None:
    check_filesystem_available(uri)  # the store itself reports an unknown scheme


def test_installed_filesystems_pass() -> None:
    check_filesystem_available("s3://bucket/key")  # s3fs is installed in the test environment


def test_download_fails_when_the_dag_is_parsed(missing: Any) -> None:
    """The download task runs after the flow did: the missing filesystem must stop the DAG sooner."""
    missing("s3")
    with pytest.raises(SmartFlowsInputError, match=r"airflow-provider-smartflows\[amazon\]"):
        SmartFlowsDownloadDocumentsOperator(
            task_id="download", execution_id="some-execution", destination="s3://bucket/invoices/"
        )


def test_download_with_a_templated_store_fails_before_any_request(
    smartflows_emulator: Any, smartflows_conn: str, missing: Any
) -> None:
    missing("s3")
    operator = SmartFlowsDownloadDocumentsOperator(
        task_id="download", execution_id="some-execution", destination="{{ params.store }}://bucket/x/"
    )  # the store is known only once rendered: the parse-time check cannot tell
    operator.render_template_fields({"params": {"store": "s3"}})  # type: ignore[arg-type]
    assert operator.destination == "s3://bucket/x/"
    with pytest.raises(SmartFlowsInputError, match=r"airflow-provider-smartflows\[amazon\]"):
        operator.execute({})  # type: ignore[arg-type]
    assert smartflows_emulator.requests == []


@pytest.mark.parametrize("field", ["manifest_uri", "records_uri", "destination"])
def test_batch_fails_before_any_request(
    smartflows_emulator: Any, smartflows_conn: str, missing: Any, tmp_path: Any, field: str
) -> None:
    missing("gs")
    uris = {
        "manifest_uri": f"file://{tmp_path}/manifest.jsonl",
        "records_uri": f"file://{tmp_path}/records.jsonl",
        "destination": f"file://{tmp_path}/docs/",
        field: "gs://bucket/batch/x.jsonl",
    }
    operator = SmartFlowsRunFlowBatchOperator(task_id="batch", flow_id="invoice", **uris)
    with pytest.raises(SmartFlowsInputError) as raised:
        operator.execute({})  # type: ignore[arg-type]
    assert f"The {field} gs://bucket/batch/x.jsonl" in str(raised.value)
    assert "airflow-provider-smartflows[gcs]" in str(raised.value)
    assert smartflows_emulator.requests == []
    assert not (tmp_path / "manifest.jsonl.checkpoint.json").exists()
