"""Downloading many documents at once: a hook (and HTTP session) per thread, results in order,
and the first failure starts no more.

- :class:`HookPool` gives each worker thread a hook of its own (``requests.Session`` is not
  documented as thread-safe), made in the calling thread so the connection is read there;
- :func:`in_parallel` runs any ``work(hook, item)`` on those threads (the batch downloads a
  record's documents with it);
- :func:`read_document_infos` reads every document's metadata (to select and order them);
- :func:`document_targets` names a folder's objects (the documents' safe file names, numbered
  ``(2)``, ``(3)``... when they would collide) before any download starts;
- :func:`download_all` downloads (document -> target) jobs and, when one fails, removes what the
  call wrote (without ``overwrite`` none of it existed before), so that a retry starts clean.

The target checks and the atomic, verified writes are the hook's ``download_document`` and
:mod:`airflow_provider_smartflows.storage`'s; nothing here talks HTTP itself.
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any, TypeVar

from airflow_provider_smartflows.hooks.download import document_gone
from airflow_provider_smartflows.hooks.smartflows import SmartFlowsHook
from airflow_provider_smartflows.storage import unique_names

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from types import TracebackType

    from airflow.providers.common.compat.sdk import ObjectStoragePath

    from airflow_provider_smartflows.models import DocumentInfo, DownloadedDocument

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger(__name__)


class HookPool:
    """
    Hooks for worker threads: the caller's own ``hook`` first, then hooks made by ``factory``
    (default: a ``SmartFlowsHook`` of the same connection) on demand and kept for the next call.

    Use as a context manager, or call :meth:`close`: it closes the hooks the pool made (the
    caller's own stays open).
    """

    def __init__(self, hook: SmartFlowsHook, factory: Callable[[], SmartFlowsHook] | None = None) -> None:
        self.hook = hook
        self.factory = factory or (lambda: SmartFlowsHook(hook.smartflows_conn_id))
        self._made: list[SmartFlowsHook] = []

    def take(self, count: int) -> list[SmartFlowsHook]:
        """``count`` hooks (at least one), each for one thread."""
        while len(self._made) < count - 1:
            extra = self.factory()
            extra.settings  # noqa: B018 - the connection is read here, in the task's own thread
            self._made.append(extra)
        return [self.hook, *self._made[: max(count - 1, 0)]]

    def close(self) -> None:
        """Close the hooks this pool made (their HTTP sessions)."""
        made, self._made = self._made, []
        for extra in made:
            extra.close()

    def __enter__(self) -> HookPool:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def in_parallel(
    items: Sequence[T],
    work: Callable[[SmartFlowsHook, T], R],
    hooks: HookPool,
    *,
    concurrency: int,
    thread_name_prefix: str = "smartflows-download",
    done: dict[int, R] | None = None,
) -> list[R]:
    """
    ``work(hook, item)`` for every item on up to ``concurrency`` threads, each with a hook of its
    own from ``hooks``. Results in the items' order (also in ``done``, by index, as they finish).

    The first failure cancels what has not started, waits for what has, and is raised (also on
    an exception in the calling thread, e.g. the task being killed: what has not started never
    starts).
    """
    if not items:
        return []
    done = {} if done is None else done
    workers = max(1, min(concurrency, len(items)))
    idle: queue.SimpleQueue[SmartFlowsHook] = queue.SimpleQueue()
    for hook in hooks.take(workers):
        idle.put(hook)

    failed = threading.Event()
    errors: list[BaseException] = []  # in the order they happened

    def run(index: int, item: T) -> None:
        if failed.is_set():  # set by the failing thread itself, before the pool is shut down
            return
        hook = idle.get()
        try:
            done[index] = work(hook, item)
        except BaseException as err:
            errors.append(err)
            failed.set()
            raise
        finally:
            idle.put(hook)

    pool = ThreadPoolExecutor(workers, thread_name_prefix=thread_name_prefix)
    try:
        futures = [pool.submit(run, index, item) for index, item in enumerate(items)]
        wait(futures, return_when=FIRST_EXCEPTION)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    if errors:
        raise errors[0]
    return [done[index] for index in range(len(items))]


def document_targets(
    document_ids: Sequence[str],
    folder: ObjectStoragePath,
    hooks: HookPool,
    *,
    concurrency: int,
    thread_name_prefix: str = "smartflows-download",
) -> list[ObjectStoragePath]:
    """The target of each document in ``folder``: its safe file name (display name and the
    content type's extension, see ``DocumentInfo.file_name``), made unique within the call in
    the documents' order. Every name is decided before any download starts."""
    names = in_parallel(
        document_ids,
        lambda hook, document_id: hook.get_document(document_id).file_name,
        hooks,
        concurrency=concurrency,
        thread_name_prefix=thread_name_prefix,
    )
    return [folder / name for name in unique_names(names)]


def read_document_infos(
    document_ids: Sequence[str],
    hooks: HookPool,
    *,
    concurrency: int,
    thread_name_prefix: str = "smartflows-download",
) -> list[DocumentInfo]:
    """Every document's metadata (one ``GET /documents/{id}`` each, in parallel), in the ids' order;
    a purged one raises ``SmartFlowsDocumentGoneError``."""

    def read(hook: SmartFlowsHook, document_id: str) -> DocumentInfo:
        with document_gone(document_id, "its target"):
            return hook.get_document(document_id)

    return in_parallel(
        document_ids, read, hooks, concurrency=concurrency, thread_name_prefix=thread_name_prefix
    )


def download_all(
    jobs: Sequence[tuple[str, ObjectStoragePath]],
    hooks: HookPool,
    *,
    concurrency: int,
    conn_id: str | None = None,
    overwrite: bool = False,
    execution_id: str | None = None,
    block_size: int | None = None,
    thread_name_prefix: str = "smartflows-download",
    logger: Any = None,
) -> list[DownloadedDocument]:
    """
    Download every (document id, target) job with :func:`in_parallel`; results in the jobs' order.

    On the first failure no more start; without ``overwrite`` what this call already wrote is
    removed (none of it existed before: the writer refused existing targets), each removal
    logged, a removal that fails only warned about; then that first failure is raised.

    :param jobs: (document id, exact target) pairs.
    :param hooks: the hooks, one per thread.
    :param concurrency: documents downloaded at the same time.
    :param conn_id: the storage connection (named in errors).
    :param overwrite: replace existing objects (atomically) instead of failing.
    :param execution_id: stored as object metadata.
    :param block_size: bytes per upload request (default: per store).
    :param thread_name_prefix: names the worker threads (the task's id, say).
    :param logger: where the removals are logged (the task's log; default: this module's logger).
    """

    def download(hook: SmartFlowsHook, job: tuple[str, ObjectStoragePath]) -> DownloadedDocument:
        document_id, target = job
        return hook.download_document(
            document_id,
            target,
            conn_id=conn_id,
            overwrite=overwrite,
            execution_id=execution_id,
            block_size=block_size,
            exact_target=True,  # no probes: the create-only write refuses an existing target
        )

    done: dict[int, DownloadedDocument] = {}
    try:
        saved = in_parallel(
            jobs, download, hooks, concurrency=concurrency, thread_name_prefix=thread_name_prefix, done=done
        )
    except BaseException:
        if not overwrite:
            for index in sorted(done):
                _remove_quietly(jobs[index][1], logger or log)
        raise
    if saved:  # one line for the call (each document's own line is at debug level)
        _log_saved(saved, logger or log)
    return saved


def _log_saved(saved: Sequence[DownloadedDocument], logger: Any) -> None:
    logger.info(
        "Saved %d Smart Flows documents, %d bytes (first %s, last %s)",
        len(saved),
        sum(document.size for document in saved),
        saved[0].uri,
        saved[-1].uri,
    )


def _remove_quietly(target: ObjectStoragePath, logger: Any) -> None:
    try:
        target.unlink()
        logger.info("Removed %s: another document of the same call failed", target)
    except Exception:  # the download's own error matters more
        logger.warning("Could not remove %s after the failed call", target, exc_info=True)
