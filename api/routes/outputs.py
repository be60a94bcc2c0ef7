"""``/v1/runs/{id}/outputs/{filename}``: the bytes of a run's output, streamed from the output store.

A small file (most images) is read whole in one thread hop and sent in one response; a larger one is
streamed in chunks, so it is never held whole in memory. A very small one on local disk is read on the event
loop: the worker has just written it, so it is in the page cache, and the read costs less than the hop.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO
from urllib.parse import quote

import anyio.to_thread
from fastapi import APIRouter
from fastapi.responses import Response, StreamingResponse
from starlette.background import BackgroundTask

from api import operations
from api.auth import CanRead
from api.services import ServicesDep
from dispatcher.runs import Output
from dispatcher.storage import LocalStore, OutputStore

router = APIRouter(tags=["runs"])

CHUNK_BYTES = 256 * 1024
WHOLE_BYTES = 1024 * 1024  # up to this size a file is read whole and sent in one response
ON_LOOP_BYTES = 64 * 1024  # up to this size a local file is read without a thread hop
BINARY = {"type": "string", "format": "binary"}


@router.get(
    "/v1/runs/{run_id}/outputs/{filename}",
    response_class=StreamingResponse,
    responses={
        200: {
            # The type ComfyUI gave the file: image/png for most workflows, another image type or a video for some.
            "content": {"image/png": {"schema": BINARY}, "*/*": {"schema": BINARY}},
            "description": "the file, with its content type as the run's outputs list it",
            "headers": {
                "Content-Disposition": {"description": "inline, with the file name", "schema": {"type": "string"}},
            },
        }
    },
)
async def get_output(run_id: str, filename: str, svc: ServicesDep, who: CanRead) -> Response:
    """Download one output file of a run, as listed in the run's ``outputs``; 404 otherwise."""
    output = operations.find_output(await operations.get_run_async(svc, run_id, who, ended=True), filename)
    headers = {
        # RFC 6266/5987 form: any file name fits, with no quoting or latin-1 trouble in the header.
        "Content-Disposition": f"inline; filename*=UTF-8''{quote(output.filename, safe='')}",
    }
    if output.size <= ON_LOOP_BYTES and isinstance(svc.store, LocalStore):
        data = _read_whole(svc.store, output, ON_LOOP_BYTES)
        if data is not None:
            return Response(data, media_type=output.content_type, headers=headers)
    if output.size <= WHOLE_BYTES:
        data = await anyio.to_thread.run_sync(_read_whole, svc.store, output)
        if data is not None:
            return Response(data, media_type=output.content_type, headers=headers)
    stream = await anyio.to_thread.run_sync(svc.store.open, output.key)
    headers["Content-Length"] = str(_size(stream, output))
    # close() runs after the last chunk; the generator closes it too if the client leaves early.
    return StreamingResponse(
        _chunks(stream), media_type=output.content_type, headers=headers, background=BackgroundTask(stream.close)
    )


def _read_whole(store: OutputStore, output: Output, limit: int = WHOLE_BYTES) -> bytes | None:
    """The file's bytes, or None if it turned out larger than its record said (over ``limit``: then it is read
    another way)."""
    with store.open(output.key) as stream:
        data = stream.read(limit + 1)
    return data if len(data) <= limit else None


def _size(stream: BinaryIO, output: Output) -> int:
    # The store's bytes are the truth: a wrong Content-Length would break the response mid-way.
    if stream.seekable():
        size = stream.seek(0, 2)
        stream.seek(0)
        return size
    return output.size


def _chunks(stream: BinaryIO) -> Iterator[bytes]:
    try:
        while chunk := stream.read(CHUNK_BYTES):
            yield chunk
    finally:
        stream.close()
