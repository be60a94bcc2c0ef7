"""Every Redis key and channel name Comfy Dispatch uses, built in one place."""

from __future__ import annotations

NS = "cd"


def run(run_id: str) -> str:
    """Hash: the run record (see :mod:`dispatcher.runs`)."""
    return f"{NS}:run:{run_id}"


def run_graph(run_id: str) -> str:
    """String: the bound ComfyUI graph of a run, as JSON."""
    return f"{NS}:run:{run_id}:graph"


def run_lease(run_id: str) -> str:
    """String ``<worker>|<attempt>`` with a TTL: who may execute and complete the run now."""
    return f"{NS}:run:{run_id}:lease"


# The Lua scripts of dispatcher/scheduling/dispatch.py build these same names from NS (they visit tenants they
# cannot know in advance): change a name here and there together.


def backlog(tenant: str, priority: str) -> str:
    """Sorted set: a tenant's queued run ids of one priority, scored by the time each may run
    (its creation time; for a retry, when its backoff ends)."""
    return f"{NS}:backlog:{tenant}:{priority}"


def rotation(priority: str) -> str:
    """List: tenants with runs queued at ``priority``, in round-robin order (the head goes next)."""
    return f"{NS}:rr:{priority}"


INFLIGHT = f"{NS}:inflight"
"""Sorted set: runs handed to RQ or running, scored by when; what the reaper watches."""


def tenant_inflight(tenant: str) -> str:
    """Set: a tenant's runs handed to RQ or running (its --max-running)."""
    return f"{NS}:tenant:{tenant}:inflight"


DELAYED = f"{NS}:delayed"
"""Sorted set: runs waiting out a retry backoff, scored by when they may run (the scheduler's alarm clock)."""

DEAD_LETTER = f"{NS}:dead-letter"
"""Sorted set: runs that failed with every attempt used, scored by when they failed."""

SCHEDULER_WAKE = f"{NS}:scheduler:wake"
"""Pub/sub channel: something changed that may let the scheduler dispatch (a submission, a free worker)."""

CANCEL = f"{NS}:cancel"
"""Pub/sub channel: the id of a running run someone canceled; its worker interrupts ComfyUI."""

RELEASE = f"{NS}:release"
"""Pub/sub channel: the id of a run that waits in one ComfyUI's queue while another worker idles; its worker
hands it back unless ComfyUI has started it (dispatcher.scheduling.rebalance)."""


def tenant(name: str) -> str:
    """Hash: a tenant's limits (fields absent: the defaults from settings)."""
    return f"{NS}:tenant:{name}"


TENANTS = f"{NS}:tenants"
"""Set: tenant names."""


def api_key(key_id: str) -> str:
    """Hash: one API key (tenant, scopes, sha256 of the secret, created_at); never the key itself."""
    return f"{NS}:apikey:{key_id}"


API_KEYS = f"{NS}:apikeys"
"""Set: API key ids."""


def access_token(token_id: str) -> str:
    """Hash, expiring with the token: an access token's key id, the sha256 of the token, when it expires."""
    return f"{NS}:token:{token_id}"


def batch(batch_id: str) -> str:
    """Hash: one batch submission (tenant, created_at, total, left, sealed, on_done_url, fired)."""
    return f"{NS}:batch:{batch_id}"


def batch_runs(batch_id: str) -> str:
    """List: the ids of a batch's runs, in the order of its items."""
    return f"{NS}:batch:{batch_id}:runs"


def tenant_runs(tenant: str) -> str:
    """Sorted set: a tenant's run ids by creation time (``GET /v1/runs``); trimmed to the runs' lifetime."""
    return f"{NS}:tenant:{tenant}:runs"


WORKFLOW_SECONDS = f"{NS}:stats:workflow-seconds"
"""Hash: workflow id -> a moving average of its runs' GPU-seconds (what a queued run's ETA is made of)."""

API_KEYS_CHANGED = f"{NS}:apikeys:changed"
"""Pub/sub channel: the id of an API key just revoked (API processes drop what they remember of it)."""


def bucket(kind: str, ident: str) -> str:
    """Hash: a leaky bucket's level and last update (kind: submit per API key, dispatch per tenant)."""
    return f"{NS}:bucket:{kind}:{ident}"


def usage(tenant: str, day: str) -> str:
    """Hash: a tenant's runs ended and GPU-seconds spent on one UTC day (``YYYY-MM-DD``); expires after ~13 months."""
    return f"{NS}:usage:{tenant}:{day}"


def run_events(run_id: str) -> str:
    """Stream: the run's events (dispatcher.events), capped, expiring with the run."""
    return f"{NS}:run:{run_id}:events"


def run_done_channel(run_id: str) -> str:
    """Pub/sub channel: a message when the run reaches a terminal status."""
    return f"{NS}:run:{run_id}:done"


def capabilities(digest: str) -> str:
    """A capability set (dispatcher.routing): node classes and model files, shared by the workers that have it."""
    return f"{NS}:capabilities:{digest}"


def worker(name: str) -> str:
    """Hash with a TTL: a worker's last reported state."""
    return f"{NS}:worker:{name}"


WORKERS = f"{NS}:workers"
"""Sorted set: worker names scored by their last heartbeat."""


RECENT_RUNS = f"{NS}:recent-runs"
"""List: ids of accepted runs, newest first, capped at ``RECENT_RUNS_MAX`` (the Flask seed's /api/history)."""

RECENT_RUNS_MAX = 1000

WEBHOOK_EVENTS = f"{NS}:webhook:events"
"""Stream: (run, event id, type) of every event of a run that has callbacks; the webhook sender's input."""

WEBHOOK_GROUP = "webhooks"
"""The consumer group of ``WEBHOOK_EVENTS`` every ``comfy-dispatch webhooks`` process reads in."""


def run_deliveries(run_id: str) -> str:
    """List: every webhook delivery attempt of the run (JSON), oldest first, capped, expiring with the run."""
    return f"{NS}:run:{run_id}:deliveries"


def webhook_message(webhook_id: str) -> str:
    """Hash with a TTL: one webhook message's state (pending, delivered, gave_up) and attempts made so far."""
    return f"{NS}:webhook:msg:{webhook_id}"


def upload(tenant: str, ident: str) -> str:
    """Hash with a TTL: one input image upload of a tenant (name, content type, size, store key)."""
    return f"{NS}:upload:{tenant}:{ident}"


WORKFLOWS = f"{NS}:workflows"
"""Hash: workflow id -> its latest version number; negative (``-N``) once retired (``DELETE``)."""


def workflow_graphs(workflow_id: str) -> str:
    """Hash: version number -> that version's graph and manifest, as JSON (never changed once written)."""
    return f"{NS}:workflow:{workflow_id}:graphs"


def workflow_versions(workflow_id: str) -> str:
    """Hash: version number -> what is known of that version (when, by whom, from where, its digest), as JSON."""
    return f"{NS}:workflow:{workflow_id}:versions"
