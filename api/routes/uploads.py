"""``POST /v1/uploads``: store an input image once, then name it in runs as ``upload:<id>``."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from api.auth import CanSubmit
from api.services import Services, ServicesDep
from dispatcher.errors import BadRequest, ParameterError, PayloadTooLarge
from dispatcher.inputs import DataImage, check_image
from dispatcher.uploads import Upload, Uploads

router = APIRouter(tags=["uploads"])

FILE_FIELDS = ("file", "image")  # "image" is what ComfyUI's own /upload/image takes
# Headers, boundaries and other form fields around the file; a body beyond the image limit plus this is refused.
MULTIPART_SLACK_BYTES = 64 * 1024
MAX_PARTS = 16


class UploadView(BaseModel):
    id: str = Field(description='the upload id: pass "upload:<id>" (or the bare id) as an image parameter')
    name: str = Field(description="the file name sent (for display only)")
    content_type: str = Field(description="image/png, image/jpeg, image/webp or image/gif, from the bytes")
    size: int = Field(description="bytes")


UPLOAD_REQUEST_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary", "description": "the image"}},
                    "required": ["file"],
                }
            }
        },
    }
}


@router.post("/v1/uploads", status_code=201, response_model=UploadView, openapi_extra=UPLOAD_REQUEST_DOC)
async def create_upload(request: Request, svc: ServicesDep, who: CanSubmit) -> UploadView:
    """Upload an input image (multipart field ``file``, or ``image``): 201 with its id.

    A PNG, JPEG, WebP or GIF of at most ``COMFY_DISPATCH_INPUT_MAX_BYTES`` (5 MB); larger is a 413, anything
    else a 422 naming ``file``. It is kept 24 h (each run naming it restarts that), for this tenant only.
    """
    limit = svc.settings.input_max_bytes
    declared = request.headers.get("content-length", "")
    # The form parser spools a whole body before we see it: refuse what is too large (or unsized) up front.
    if not declared.isdigit():
        raise BadRequest("send the image as multipart/form-data with a Content-Length")
    if int(declared) > limit + MULTIPART_SLACK_BYTES:
        raise PayloadTooLarge(limit)
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise BadRequest("send the image as multipart/form-data, in a field named file")
    # A body python-multipart cannot read is Starlette's HTTPException(400): api.problems maps it.
    form = await request.form(max_files=MAX_PARTS, max_fields=MAX_PARTS)
    try:
        upload = next((form[f] for f in FILE_FIELDS if isinstance(form.get(f), UploadFile)), None)
        if not isinstance(upload, UploadFile):
            raise ParameterError("file", "is required: a multipart field named file (or image) holding the image")
        data = await upload.read(limit + 1)
        if len(data) > limit:
            raise PayloadTooLarge(limit)
        stored = await run_in_threadpool(_store, svc, who.tenant, upload.filename or "", data)
    finally:
        await form.close()
    return UploadView(id=stored.id, name=stored.name, content_type=stored.content_type, size=stored.size)


def _store(svc: Services, tenant: str, name: str, data: bytes) -> Upload:
    image = DataImage(data, check_image("file", data, max_bytes=svc.settings.input_max_bytes))
    return Uploads(svc.conns.text, svc.store).put(tenant, image, name)
