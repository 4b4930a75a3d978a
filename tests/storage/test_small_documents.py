"""Many small documents through ``transfer.download_all`` (the download operator's and the batch's
path): the target is exact, so the store is asked nothing before the write; one create-only request
per document (S3 ``PutObject`` with ``If-None-Match: *``, Azure ``Put Blob`` with the same, GCS
``ifGenerationMatch=0``, a local ``link``) refuses an existing object, with the probe's error."""

from __future__ import annotations

import hashlib
import threading
import uuid
from typing import TYPE_CHECKING, Any

import pytest
from yarl import URL

from airflow_provider_smartflows.exceptions import SmartFlowsDownloadError, SmartFlowsInputError
from airflow_provider_smartflows.storage import check_destination
from airflow_provider_smartflows.transfer import HookPool, download_all

if TYPE_CHECKING:
    from airflow_provider_smartflows.hooks.smartflows import SmartFlowsHook
    from tests.storage.stores import Store

KB = 1000
#: What the write of one small object is, per store (GCS: a multipart-related upload is a POST).
PUT_METHOD = {"s3": "PUT", "azure": "PUT", "gcs": "POST"}
GCS_IGNORES_GENERATION_MATCH = (
    "the GCS emulator (gcp-storage-emulator) ignores ifGenerationMatch=0 and overwrites; real GCS "
    "refuses the upload with 412"
)


@pytest.fixture
def store_requests(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int | None]]:
    """(method, port) of every request sent through aiohttp, the transport of s3fs, adlfs and gcsfs
    (the hook's own requests to Smart Flows go through ``requests``), as the B5 benchmark counts."""
    import aiohttp

    sent: list[tuple[str, int | None]] = []
    lock = threading.Lock()
    request = aiohttp.ClientSession._request

    async def counted(session: Any, method: str, url: Any, *args: Any, **kwargs: Any) -> Any:
        with lock:
            sent.append((method.upper(), URL(str(url)).port))
        return await request(session, method, url, *args, **kwargs)

    monkeypatch.setattr(aiohttp.ClientSession, "_request", counted)
    return sent


def generate(emulator: Any, hook: SmartFlowsHook, sizes: list[int]) -> list[str]:
    """The ids of documents of ``sizes`` bytes made by one execution."""
    from tests.support.waits import progress_until

    flow_id = emulator.add_flow(
        {
            "id": f"t-{uuid.uuid4().hex[:8]}",
            "steps": [{"message": "Rendering", "percentage": 50, "seconds": 0.1}],
            "documents": [
                {"displayName": f"Invoice {i}", "contentType": "application/pdf", "size": size}
                for i, size in enumerate(sizes)
            ],
        }
    )
    execution_id = hook.start_execution(flow_id).id
    progress_until(hook, execution_id, timeout=60)
    return [ref.id for ref in hook.list_documents(execution_id)]


def jobs_for(store: Store, document_ids: list[str]) -> list[tuple[str, Any]]:
    jobs = [(document_id, store.path(f"inbox/doc-{i}.pdf")) for i, document_id in enumerate(document_ids)]
    check_destination(jobs[0][1])  # the bucket probe (remembered for a minute) out of the count
    return jobs


def refuses_existing(store: Store) -> None:
    if store.kind == "gcs":
        pytest.skip(GCS_IGNORES_GENERATION_MATCH)


def test_one_store_request_per_small_document(
    store: Store, smartflows_emulator: Any, hook: SmartFlowsHook, store_requests: list
) -> None:
    if store.kind == "file":
        pytest.skip("local files are written with system calls, not requests")
    document_ids = generate(smartflows_emulator, hook, [200 * KB, 60 * KB, 1_900 * KB, 170 * KB])
    jobs = jobs_for(store, document_ids)
    store_requests.clear()
    with HookPool(hook) as hooks:
        results = download_all(jobs, hooks, concurrency=2, conn_id=store.conn_id)
    assert sorted(store_requests) == [(PUT_METHOD[store.kind], store_requests[0][1])] * len(jobs)
    for i, (document_id, result) in enumerate(zip(document_ids, results, strict=True)):
        data = store.read(f"inbox/doc-{i}.pdf")
        assert (len(data), hashlib.sha256(data).hexdigest()) == (result.size, result.sha256)
        assert result.sha256 == smartflows_emulator.document_sha256(document_id)


def test_an_existing_object_is_refused_at_the_write_and_kept(
    store: Store, smartflows_emulator: Any, hook: SmartFlowsHook, store_requests: list
) -> None:
    """No probe first: the create-only write itself is refused (local files: the ``link``)."""
    refuses_existing(store)
    (document_id,) = generate(smartflows_emulator, hook, [200 * KB])
    (job,) = jobs_for(store, [document_id])
    job[1].parent.mkdir(parents=True, exist_ok=True)
    job[1].write_bytes(b"precious")
    store_requests.clear()
    with (
        HookPool(hook) as hooks,
        pytest.raises(SmartFlowsDownloadError, match=r"doc-0.pdf already exists\. .*pass overwrite=True"),
    ):
        download_all([job], hooks, concurrency=1, conn_id=store.conn_id)
    if store.kind != "file":
        assert [method for method, _ in store_requests] == [PUT_METHOD[store.kind]]
    assert store.read("inbox/doc-0.pdf") == b"precious"
    assert store.keys() == ["inbox/doc-0.pdf"]  # no temporary object or file left beside it


def test_overwrite_replaces_in_one_request(
    store: Store, smartflows_emulator: Any, hook: SmartFlowsHook, store_requests: list
) -> None:
    (document_id,) = generate(smartflows_emulator, hook, [200 * KB])
    (job,) = jobs_for(store, [document_id])
    job[1].parent.mkdir(parents=True, exist_ok=True)
    job[1].write_bytes(b"older")
    store_requests.clear()
    with HookPool(hook) as hooks:
        (result,) = download_all([job], hooks, concurrency=1, conn_id=store.conn_id, overwrite=True)
    data = store.read("inbox/doc-0.pdf")
    assert (len(data), hashlib.sha256(data).hexdigest()) == (200 * KB, result.sha256)
    assert result.sha256 == smartflows_emulator.document_sha256(document_id)
    assert store.keys() == ["inbox/doc-0.pdf"]
    if store.kind != "file":
        assert [method for method, _ in store_requests] == [PUT_METHOD[store.kind]]


def test_a_failed_call_removes_only_what_it_wrote(
    store: Store, smartflows_emulator: Any, hook: SmartFlowsHook
) -> None:
    """Refused at the commit, the existing object is not among what the call removes."""
    refuses_existing(store)
    document_ids = generate(smartflows_emulator, hook, [100 * KB, 100 * KB])
    first, second = jobs_for(store, document_ids)
    second[1].parent.mkdir(parents=True, exist_ok=True)
    second[1].write_bytes(b"precious")
    with HookPool(hook) as hooks, pytest.raises(SmartFlowsDownloadError, match="already exists"):
        download_all([first, second], hooks, concurrency=1, conn_id=store.conn_id)
    assert store.keys() == ["inbox/doc-1.pdf"]
    assert store.read("inbox/doc-1.pdf") == b"precious"


def test_an_exact_target_ending_with_a_slash_is_refused(
    store: Store, smartflows_emulator: Any, hook: SmartFlowsHook
) -> None:
    if store.kind != "file":
        pytest.skip("the check is on the URI, before any store is reached")
    (document_id,) = generate(smartflows_emulator, hook, [10 * KB])
    with pytest.raises(SmartFlowsInputError, match=r"exact_target=True but .* names a folder"):
        hook.download_document(document_id, store.uri("inbox/"), exact_target=True)
    assert store.keys() == []
