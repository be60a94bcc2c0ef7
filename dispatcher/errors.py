"""The one error hierarchy of Comfy Dispatch.

Every error the project raises on purpose derives from :class:`DispatchError`.
The API maps these to RFC 9457 problem responses in one place
(``api/problems.py``); workers use :attr:`ComfyUIError.transient` to decide
whether a failed run may be retried.
"""

from __future__ import annotations

from typing import Any


class DispatchError(Exception):
    """Raised for any failure Comfy Dispatch knows how to describe."""


class ConfigError(DispatchError):
    """Raised when a setting is missing or invalid; the message names the setting."""

    def __init__(self, setting: str, detail: str) -> None:
        super().__init__(f"{setting}: {detail}")
        self.setting = setting
        self.detail = detail


class ManifestError(DispatchError):
    """Raised when a workflow's graph or manifest is invalid; the message names the file (or the request's
    field) and what is wrong."""

    def __init__(self, path: str, detail: str) -> None:
        super().__init__(f"{path}: {detail}")
        self.path = path
        self.detail = detail


class UIFormatError(ManifestError):
    """Raised when a graph in ComfyUI's UI format (as its editor saves it) cannot be converted to the API format:
    no node definitions to convert it with, a node class they lack, or a feature the conversion does not cover.
    The message says how to export the API format instead."""


class WorkflowNotFound(DispatchError):
    """Raised when a run names a workflow (or a version of one) the registry does not have."""

    def __init__(self, workflow_id: str, version: int | None = None) -> None:
        what = f"workflow {workflow_id!r} does not exist"
        if version is not None:
            what = f"workflow {workflow_id!r} has no version {version}"
        super().__init__(what)
        self.workflow_id = workflow_id
        self.version = version


class WorkflowRetired(WorkflowNotFound):
    """Raised when a run names a workflow that was retired (``DELETE /v1/workflows/{id}``); publishing it again
    brings it back."""

    def __init__(self, workflow_id: str) -> None:
        super().__init__(workflow_id)
        self.args = (f"workflow {workflow_id!r} was retired; publish it again to run it",)


class ParameterError(DispatchError):
    """Raised when a run's parameters do not fit the workflow; names the parameter."""

    def __init__(self, param: str, detail: str) -> None:
        super().__init__(f"{param}: {detail}")
        self.param = param
        self.detail = detail


class BadRequest(DispatchError):
    """Raised when a request body cannot be read at all (not JSON, wrong shape)."""


class PayloadTooLarge(BadRequest):
    """Raised when a request body is larger than ``settings.max_body_bytes``."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body is larger than {limit} bytes")
        self.limit = limit


class RunFailed(DispatchError):
    """Raised when a caller waited for a run (FlowAI's synchronous run) and it ended without success.

    Build it with :meth:`of`, which picks the subclass that says whose fault it was: the request's
    (:class:`RunRejected`, a 4xx: the same request would fail again), nobody's but the infrastructure's
    (:class:`RunNotDone`, a 5xx with Retry-After: worth trying again later), or a cancel (:class:`RunCanceled`
    is the worker's signal, so :class:`RunWasCanceled`).
    """

    # The error types (``to_dict()["type"]`` of ComfyUIError subclasses) that the request itself caused.
    REQUEST_FAULTS = frozenset({"validation_error", "input_error", "RunTimeout"})

    def __init__(self, run_id: str, status: str, error: dict[str, Any] | None) -> None:
        message = str((error or {}).get("message") or f"run ended with status {status}")
        super().__init__(message)
        self.run_id = run_id
        self.status = status
        self.error = error

    @classmethod
    def of(cls, run_id: str, status: str, error: dict[str, Any] | None) -> RunFailed:
        """The failure of a run that ended with ``status`` and ``error``, as the subclass its cause calls for."""
        if status == "canceled":
            return RunWasCanceled(run_id, status, error)
        kind = str((error or {}).get("type") or "")
        if kind in cls.REQUEST_FAULTS:
            return RunRejected(run_id, status, error)
        if (
            kind == "execution_error"
            and (error or {}).get("exception_type") not in ComfyUIExecutionError.TRANSIENT_TYPES
        ):
            return RunRejected(run_id, status, error)  # a node raised on this graph and these inputs
        return RunNotDone(run_id, status, error)  # out of memory, ComfyUI or storage down: every attempt used


class RunRejected(RunFailed):
    """A run that failed because of what was asked (a node error, a missing model, a bad input, its time limit)."""


class RunNotDone(RunFailed):
    """A run that failed for reasons of the infrastructure, after every attempt: try again later."""

    RETRY_AFTER_SECONDS = 30


class RunWasCanceled(RunFailed):
    """A run that was canceled (by its tenant, through the cancel route) before it finished."""


class NotAvailableYet(DispatchError):
    """Raised for a documented feature of a compatible API that Comfy Dispatch does not offer yet."""


class Unauthorized(DispatchError):
    """Raised when a request carries no API key, or one that is unknown or revoked."""


class Forbidden(DispatchError):
    """Raised when an API key lacks the scope a route needs."""

    def __init__(self, scope: str) -> None:
        super().__init__(f"this API key lacks the {scope!r} scope")
        self.scope = scope


class RateLimited(DispatchError):
    """Raised when a submission is over its API key's rate (or its tenant's queue is full); nothing was queued.

    ``retry_after`` is in seconds; ``headers`` are the RateLimit fields to send with the 429.
    """

    def __init__(self, detail: str, *, retry_after: float, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.retry_after = retry_after
        self.headers = headers or {}


class TooManyWaits(RateLimited):
    """Raised when a tenant already has its most requests waiting at once (``?wait=``, event streams) on an API
    process; nothing was changed. Waits hold no Redis connection, but streams do, and each holds the process's
    memory: one tenant must not be able to take them all."""

    def __init__(self, tenant: str, limit: int) -> None:
        super().__init__(f"tenant {tenant!r} already has {limit} requests waiting for runs here", retry_after=1.0)
        self.tenant = tenant
        self.limit = limit


class QueueFull(RateLimited):
    """Raised when a tenant already has ``max_queued`` runs queued; nothing was queued."""

    def __init__(self, tenant: str, max_queued: int) -> None:
        super().__init__(f"tenant {tenant!r} already has {max_queued} runs queued (its --max-queued)", retry_after=1.0)
        self.tenant = tenant
        self.max_queued = max_queued


class Conflict(DispatchError):
    """Raised when a request cannot apply to the resource's current state (e.g. cancel a finished run)."""


class RunNotFound(DispatchError):
    """Raised when a run id is unknown (or belongs to someone else)."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"run {run_id!r} does not exist")
        self.run_id = run_id


class BatchNotFound(DispatchError):
    """Raised when a batch id is unknown (or belongs to someone else)."""

    def __init__(self, batch_id: str) -> None:
        super().__init__(f"batch {batch_id!r} does not exist")
        self.batch_id = batch_id


class NoCapableWorker(DispatchError):
    """Raised at submit when no worker of the fleet has what a run needs (a node class, a model file)."""

    def __init__(self, workflow: str, missing: list[tuple[str, str]]) -> None:
        named = "; ".join(
            f"model {name!r} in {folder}" if folder else f"node class {name!r}" for name, folder in missing
        )
        super().__init__(f"no worker can run this {workflow!r} run: none has {named}")
        self.missing = missing  # (name, folder): folder '' for a node class


class OutputNotFound(DispatchError):
    """Raised when a run has no stored output of that name."""


class StorageError(DispatchError):
    """Raised when an output cannot be stored or read back."""


class RunCanceled(DispatchError):
    """Raised inside a worker when the run it executes was canceled; ComfyUI has been interrupted."""


class RunReleased(DispatchError):
    """Raised inside a worker that stops while a run it holds still waits in ComfyUI's queue: the prompt was
    deleted there, and the run goes back to its backlog for another worker (no attempt used)."""


class LeaseLost(DispatchError):
    """Raised when a worker no longer holds the lease of the run it executes.

    Another attempt has taken over (or the run was ended); the stale worker must
    stop and write nothing more to the run.
    """


class WorkerNameTaken(DispatchError):
    """Raised when a worker starts under a name a live worker holds (see ``worker/names.py``)."""

    def __init__(self, name: str, owner: str) -> None:
        super().__init__(f"worker name {name!r} is held by a live worker ({owner}): stop it, or choose another name")
        self.name = name
        self.owner = owner


class ComfyUIError(DispatchError):
    """Raised for anything that went wrong talking to, or inside, a ComfyUI.

    ``transient`` tells whether the same graph may succeed on another try.
    """

    transient: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"type": type(self).__name__, "message": str(self)}


class ComfyUIUnavailable(ComfyUIError):
    """Raised when ComfyUI is unreachable, answers 5xx, or drops the websocket mid-run."""

    transient = True


class ComfyUIValidationError(ComfyUIError):
    """Raised when ComfyUI rejects a graph with 400: never retried."""

    def __init__(self, error: dict[str, Any], node_errors: dict[str, Any]) -> None:
        message = str(error.get("message") or "prompt rejected by ComfyUI")
        super().__init__(message)
        self.error = error
        self.node_errors = node_errors

    def to_dict(self) -> dict[str, Any]:
        return {"type": "validation_error", "message": str(self), "error": self.error, "node_errors": self.node_errors}


class ComfyUIExecutionError(ComfyUIError):
    """Raised when a node raised during execution (``execution_error``).

    Out-of-memory and I/O errors are transient; anything else is the graph's fault.
    """

    TRANSIENT_TYPES = (
        "OutOfMemoryError",
        "torch.OutOfMemoryError",
        "torch.cuda.OutOfMemoryError",
        "OSError",
        "IOError",
    )

    def __init__(self, data: dict[str, Any]) -> None:
        self.node_id = str(data.get("node_id", ""))
        self.node_type = str(data.get("node_type", ""))
        self.exception_type = str(data.get("exception_type", ""))
        self.exception_message = str(data.get("exception_message", "")).strip()
        super().__init__(
            f"node {self.node_id} ({self.node_type}) raised {self.exception_type}: {self.exception_message}"
        )
        self.transient = self.exception_type in self.TRANSIENT_TYPES

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "execution_error",
            "message": str(self),
            "node_id": self.node_id,
            "node_type": self.node_type,
            "exception_type": self.exception_type,
            "exception_message": self.exception_message,
        }


class ComfyUIInterrupted(ComfyUIError):
    """Raised when a prompt ended with ``execution_interrupted``."""

    def __init__(self, data: dict[str, Any], *, requested: bool = False) -> None:
        super().__init__(f"interrupted at node {data.get('node_id')} ({data.get('node_type')})")
        # An interrupt nobody here asked for (someone used ComfyUI's UI) is worth retrying.
        self.transient = not requested
        self.requested = requested


class RunTimeout(ComfyUIError):
    """Raised when a run exceeded its timeout; the worker has interrupted ComfyUI.

    Not transient: the same graph would most likely time out again, holding a GPU as long.
    """

    transient = False


class InputImageError(ComfyUIError):
    """Raised by a worker when a run's input image cannot be used: gone, too large, not an image, refused address.

    A ComfyUIError so the run ends the way a graph ComfyUI refused does; never retried (the same input
    would fail again), unless the network was at fault (:class:`InputImageUnavailable`). Names the parameter.
    """

    def __init__(self, param: str, detail: str) -> None:
        super().__init__(f"{param}: {detail}")
        self.param = param
        self.detail = detail

    def to_dict(self) -> dict[str, Any]:
        return {"type": "input_error", "message": str(self), "param": self.param}


class InputImageUnavailable(InputImageError):
    """Raised by a worker when an input image could not be fetched for now (network error, 5xx, 429): retried."""

    transient = True


class OutputNotStored(ComfyUIError):
    """Raised when a run's output could not be stored after every try; transient, so the run is retried.

    A ComfyUIError because that is what a worker's run loop turns into a retry or a failure.
    """

    transient = True
