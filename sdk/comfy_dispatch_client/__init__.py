"""A Python client of the Comfy Dispatch API: submit runs and batches, follow them, fetch their outputs.

``Client`` blocks; ``AsyncClient`` is the same for asyncio. Both read ``COMFY_DISPATCH_API_URL`` and
``COMFY_DISPATCH_API_KEY`` when not given a URL and a key, retry what is safe to retry (a connection
refused or cut, 429, 503; a submission always carries an Idempotency-Key), and raise the errors of
:mod:`comfy_dispatch_client.errors`, all under :class:`DispatchError`.
"""

from comfy_dispatch_client import errors, models
from comfy_dispatch_client.async_client import AsyncClient
from comfy_dispatch_client.batching import RunRequest
from comfy_dispatch_client.client import Client
from comfy_dispatch_client.errors import (
    ApiError,
    BadRequest,
    ConfigError,
    Conflict,
    ConnectionFailed,
    DispatchError,
    DownloadFailed,
    Forbidden,
    InvalidRequest,
    NotFound,
    ProtocolError,
    RateLimited,
    RunFailed,
    ServerError,
    ServiceUnavailable,
    Unauthorized,
    WaitTimeout,
)
from comfy_dispatch_client.models import (
    Batch,
    BatchCounts,
    BatchItem,
    BatchSubmission,
    Event,
    Output,
    Run,
    RunPage,
    RunStatus,
    Workflow,
    WorkflowVersion,
)
from comfy_dispatch_client.retrying import RetryPolicy
from comfy_dispatch_client.transport import VERSION

__version__ = VERSION
__all__ = [
    "ApiError",
    "AsyncClient",
    "BadRequest",
    "Batch",
    "BatchCounts",
    "BatchItem",
    "BatchSubmission",
    "Client",
    "ConfigError",
    "Conflict",
    "ConnectionFailed",
    "DispatchError",
    "DownloadFailed",
    "Event",
    "Forbidden",
    "InvalidRequest",
    "NotFound",
    "Output",
    "ProtocolError",
    "RateLimited",
    "RetryPolicy",
    "Run",
    "RunFailed",
    "RunPage",
    "RunRequest",
    "RunStatus",
    "ServerError",
    "ServiceUnavailable",
    "Unauthorized",
    "WaitTimeout",
    "Workflow",
    "WorkflowVersion",
    "errors",
    "models",
]
