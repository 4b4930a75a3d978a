"""The block uploads of :mod:`airflow_provider_smartflows.storage` for large documents, with the
next block filling while earlier ones are sent: S3 multipart parts and Azure blocks go up several
at once (:data:`IN_FLIGHT`), GCS resumable chunks (which must arrive in order) one at a time while
the next one fills. Same guarantees as the single-file writers: nothing is visible before the
store's own commit (S3 ``CompleteMultipartUpload`` and Azure ``Put Block List``, both with
``If-None-Match: *`` without overwrite; the final GCS chunk of an upload started with
``ifGenerationMatch=0``); a failed block, an exception or an abort stops the blocks in flight and
drops the upload (S3: ``AbortMultipartUpload``; GCS: the session is cancelled; Azure: staged blocks
stay uncommitted, invisible, until Azure drops them).

Memory: a writer holds at most ``IN_FLIGHT[kind] + 1`` blocks (those being sent, the one filling),
each allocated once and handed to the store's client without a copy. The requests run as
coroutines on the filesystem's own event loop (fsspec's I/O thread); the writer's thread waits only
when all its slots are busy.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import logging
import uuid
from typing import TYPE_CHECKING, Any

from fsspec.asyn import sync

from airflow_provider_smartflows.storage import SHA256_KEY, AtomicWriter, _split

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

log = logging.getLogger(__name__)

#: Blocks sent at once per store kind. The writer's memory is (this + 1) blocks plus what the
#: socket buffers hold. GCS resumable chunks must arrive in order: one at a time.
IN_FLIGHT = {"s3": 2, "azure": 4, "gcs": 1}


class _Flights:
    """Coroutines run on ``loop`` (another thread) from the writer's thread, at most ``limit`` at
    once; :attr:`peak` is the most seen running together."""

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int) -> None:
        self.loop = loop
        self.limit = limit
        self.peak = 0
        self._running: list[concurrent.futures.Future[Any]] = []
        self._tasks: set[asyncio.Task[Any]] = set()  # touched on the loop only

    def start(self, function: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
        """Run ``function(*args)`` once a slot is free (raises the failure of one that finished)."""
        while len(self._running) >= self.limit:
            self._wait(concurrent.futures.FIRST_COMPLETED)
        coroutine = self._tracked(function(*args))
        self._running.append(asyncio.run_coroutine_threadsafe(coroutine, self.loop))
        self.peak = max(self.peak, len(self._running))

    def finish(self) -> None:
        """Wait for every coroutine started; raise the first failure."""
        while self._running:
            self._wait(concurrent.futures.FIRST_EXCEPTION)

    def cancel(self) -> None:
        """Stop every coroutine started and wait until none runs any more."""
        for future in self._running:
            future.cancel()  # one not started yet never runs
        self._running.clear()
        sync(self.loop, self._cancel_tasks)

    def _wait(self, when: str) -> None:
        done, _ = concurrent.futures.wait(self._running, return_when=when)
        for future in done:
            self._running.remove(future)
        for future in done:
            future.result()

    async def _tracked(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            return await coroutine
        finally:
            self._tasks.discard(task)

    async def _cancel_tasks(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class BlockWriter(AtomicWriter):
    """Fills blocks of exactly ``block_size`` bytes (the last one shorter) and sends each through
    :meth:`_upload` as soon as it is full, ``in_flight`` at once; :meth:`_finish` commits."""

    in_flight = 1
    #: Whether the commit sends a final block even when it is empty (GCS: it finalises the upload).
    final_block_always = False
    _flights: _Flights | None = None

    @property
    def peak_in_flight(self) -> int:
        """The most blocks this writer had being sent at once."""
        return self._flights.peak if self._flights else 0

    def _start(self) -> None:
        self._fs = self.target.fs
        self._block = self._new_block()
        self._filled = 0
        self._sent = 0  # blocks handed to _upload
        self._offset = 0  # bytes handed to _upload
        self._flights = _Flights(self._fs.loop, self.in_flight)
        self._begin()

    def _new_block(self) -> io.BytesIO:
        # Sized once: growing write by write, it was reallocated (copied) five times per block.
        return io.BytesIO(bytes(self.block_size))

    def _write(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        while view:
            taken = view[: self.block_size - self._filled]
            self._block.write(taken)
            self._filled += len(taken)
            view = view[len(taken) :]
            if self._filled == self.block_size:
                self._send(final=False)

    def _send(self, *, final: bool) -> None:
        # A file object, not bytes: aiohttp streams it in 64 KiB pieces instead of copying the
        # whole block into the socket's send buffer (and, before Python 3.12.9, into one more
        # bytes joined with the headers), which doubled the memory of every block in flight.
        block = self._block
        block.truncate(self._filled)
        block.seek(0)
        self._sent += 1
        assert self._flights is not None
        try:
            self._flights.start(self._upload, self._sent, block, self._filled, self._offset, final)
        except BaseException:
            self.abort()  # a failed block ends the upload: the others stop, the store drops it
            raise
        self._offset += self._filled
        self._filled = 0
        self._block = self._new_block() if not final else io.BytesIO()  # once a slot is free

    def _commit(self, sha256: str) -> None:
        assert self._flights is not None
        if self._filled or not self._sent or self.final_block_always:
            self._send(final=True)
        self._flights.finish()
        self._finish(sha256)

    def _abort(self) -> None:
        if self._flights is not None:
            self._flights.cancel()
        self._block = io.BytesIO()
        self._drop()

    # Store-specific steps.
    def _begin(self) -> None:
        """Start the store's upload (in the writer's thread)."""
        raise NotImplementedError

    async def _upload(self, number: int, block: io.BytesIO, size: int, offset: int, final: bool) -> None:
        """Send block ``number`` (1-based) of ``size`` bytes (``offset`` precede it; ``final``: the last)."""
        raise NotImplementedError

    def _finish(self, sha256: str) -> None:
        """Commit the upload once every block arrived (create-only without overwrite)."""
        raise NotImplementedError

    def _drop(self) -> None:
        """Drop the upload after the blocks in flight stopped (never raises for a missing one)."""
        raise NotImplementedError


class S3PartsWriter(BlockWriter):
    """An S3 multipart upload, :data:`IN_FLIGHT` ``["s3"]`` parts at once; metadata and content
    type at its creation, the sha256 as the object tag ``sha256`` after the commit."""

    in_flight = IN_FLIGHT["s3"]
    _upload_id: str | None = None

    def _begin(self) -> None:
        self._bucket, self._key = _split(self.target)
        self._etags: dict[int, str] = {}
        options: dict[str, Any] = {"Metadata": self.metadata}
        if self.content_type:
            options["ContentType"] = self.content_type
        created = self._fs.call_s3("create_multipart_upload", Bucket=self._bucket, Key=self._key, **options)
        self._upload_id = created["UploadId"]

    async def _upload(self, number: int, block: io.BytesIO, size: int, offset: int, final: bool) -> None:
        sent = await self._fs._call_s3(
            "upload_part",
            Bucket=self._bucket,
            Key=self._key,
            UploadId=self._upload_id,
            PartNumber=number,
            Body=block,
        )
        self._etags[number] = sent["ETag"]

    def _finish(self, sha256: str) -> None:
        parts = [{"PartNumber": n, "ETag": self._etags[n]} for n in sorted(self._etags)]
        condition = {} if self.overwrite else {"IfNoneMatch": "*"}  # s3fs: a 412 is FileExistsError
        self._fs.call_s3(
            "complete_multipart_upload",
            Bucket=self._bucket,
            Key=self._key,
            UploadId=self._upload_id,
            MultipartUpload={"Parts": parts},
            **condition,
        )
        self._upload_id = None
        self._fs.invalidate_cache(str(self.target.path))

    def _after_commit(self, sha256: str) -> None:
        try:
            self._fs.call_s3(
                "put_object_tagging",
                Bucket=self._bucket,
                Key=self._key,
                Tagging={"TagSet": [{"Key": SHA256_KEY, "Value": sha256}]},
            )
        except Exception:
            log.warning("%s is saved, but its sha256 could not be attached to it", self.target, exc_info=True)

    def _drop(self) -> None:
        if self._upload_id is not None:
            upload_id, self._upload_id = self._upload_id, None
            self._fs.call_s3("abort_multipart_upload", Bucket=self._bucket, Key=self._key, UploadId=upload_id)


class AzureBlocksWriter(BlockWriter):
    """Azure block-blob blocks staged :data:`IN_FLIGHT` ``["azure"]`` at once; the block list is
    committed with the metadata (sha256 included) and content type."""

    in_flight = IN_FLIGHT["azure"]
    _client: Any = None

    def _begin(self) -> None:
        container, blob, _ = self._fs.split_path(str(self.target.path))
        self._client = self._fs.service_client.get_blob_client(container=container, blob=blob)
        self._ids: dict[int, str] = {}
        self._session = uuid.uuid4().hex  # block ids: one length, unique to this upload

    async def _upload(self, number: int, block: io.BytesIO, size: int, offset: int, final: bool) -> None:
        block_id = f"{self._session}-{number:06d}"
        await self._client.stage_block(block_id=block_id, data=block, length=size)
        self._ids[number] = block_id

    def _finish(self, sha256: str) -> None:
        sync(self._fs.loop, self._commit_blocks, sha256)
        self._fs.invalidate_cache(self._fs._parent(str(self.target.path)))

    async def _commit_blocks(self, sha256: str) -> None:
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError
        from azure.storage.blob import BlobBlock, ContentSettings

        blocks = [BlobBlock(block_id=self._ids[n]) for n in sorted(self._ids)]
        settings = ContentSettings(content_type=self.content_type) if self.content_type else None
        condition = {} if self.overwrite else {"match_condition": MatchConditions.IfMissing}
        metadata = {"is_directory": "false", **self.metadata, SHA256_KEY: sha256}
        try:
            await self._client.commit_block_list(
                blocks, metadata=metadata, content_settings=settings, **condition
            )
        except (ResourceExistsError, ResourceModifiedError) as err:  # If-None-Match: * refused
            raise FileExistsError(str(self.target.path)) from err
        finally:
            await self._client.close()

    def _drop(self) -> None:
        # Staged blocks cannot be deleted: they stay uncommitted (invisible) until Azure drops them.
        if self._client is not None:
            sync(self._fs.loop, self._client.close)


class GcsChunksWriter(BlockWriter):
    """A GCS resumable upload (``ifGenerationMatch=0`` without overwrite), each chunk sent while
    the next one fills; the last one finalises the object, then the sha256 joins its metadata."""

    in_flight = IN_FLIGHT["gcs"]  # a resumable upload takes its chunks in order
    final_block_always = True  # an empty last chunk announces the size
    _location: str | None = None

    def _begin(self) -> None:
        from gcsfs.core import initiate_upload

        bucket, key = _split(self.target)
        self._type = self.content_type or "application/octet-stream"
        mode = "overwrite" if self.overwrite else "create"
        self._location = sync(
            self._fs.loop, initiate_upload, self._fs, bucket, key, self._type, self.metadata, None, mode
        )

    async def _upload(self, number: int, block: io.BytesIO, size: int, offset: int, final: bool) -> None:
        from aiohttp.payload import BytesIOPayload

        total = str(offset + size) if final else "*"
        start = 0
        while True:
            span = (
                f"bytes {offset + start}-{offset + size - 1}/{total}" if size > start else f"bytes */{total}"
            )
            headers = {"Content-Range": span, "Content-Type": self._type, "Content-Length": str(size - start)}
            block.seek(start)
            # One payload for gcsfs's retries too: aiohttp seeks it back to `start` for each attempt.
            body = BytesIOPayload(block)
            answer, _ = await self._fs._call("POST", self._location, headers=headers, data=body)
            # GCS may keep fewer bytes than sent ("Range: bytes=0-<last kept>"): send the rest.
            kept = int(answer["Range"].split("-")[1]) + 1 - offset if "Range" in answer else size
            if kept >= size:  # the final chunk's answer has no Range: the object is complete
                return
            start = kept

    def _finish(self, sha256: str) -> None:
        self._location = None
        self._fs.invalidate_cache(str(self.target.path))

    def _after_commit(self, sha256: str) -> None:
        try:  # all keys again: GCS merges them, some emulators replace the whole set
            self._fs.setxattrs(str(self.target.path), **{**self.metadata, SHA256_KEY: sha256})
        except Exception:
            log.warning("%s is saved, but its sha256 could not be attached to it", self.target, exc_info=True)

    def _drop(self) -> None:
        if self._location is not None:
            location, self._location = self._location, None
            self._fs.call("DELETE", location.replace("&ifGenerationMatch=0", ""))
