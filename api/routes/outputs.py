"""``/v1/runs/{id}/outputs/{filename}``: the bytes of a run's output, streamed from the output store."""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO
from urllib.parse import quote

from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from api import operations
from api.auth import CanRead
from api.services import ServicesDep
from dispatcher.runs import Output

router = APIRouter(tags=["runs"])

CHUNK_BYTES = 256 * 1024


@router.get(
    "/v1/runs/{run_id}/outputs/{filename}",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}, "description": "the file"}},
)
def get_output(run_id: str, filename: str, svc: ServicesDep, who: CanRead) -> StreamingResponse:
    """Download one output file of a run, as listed in the run's ``outputs``; 404 otherwise."""
    output = operations.find_output(operations.get_run(svc, run_id, who), filename)
    stream = svc.store.open(output.key)
    headers = {
        "Content-Length": str(_size(stream, output)),
        # RFC 6266/5987 form: any file name fits, with no quoting or latin-1 trouble in the header.
        "Content-Disposition": f"inline; filename*=UTF-8''{quote(output.filename, safe='')}",
    }
    # close() runs after the last chunk; the generator closes it too if the client leaves early.
    return StreamingResponse(
        _chunks(stream), media_type=output.content_type, headers=headers, background=BackgroundTask(stream.close)
    )


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
