"""``/v1/usage``: runs and GPU-seconds per UTC day, for the caller's tenant (an admin key may name another)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from api.auth import CanRead
from api.models import DayUsageView, UsageTotalView, UsageView
from api.services import ServicesDep
from dispatcher.tenants import NAME_RE, check_name
from dispatcher.usage import day_range, read_usage

router = APIRouter(tags=["system"])

# What day_range and check_name take, for /docs only: they check the values themselves (422 naming the parameter).
DAY = {"format": "date"}


@router.get("/v1/usage", response_model=UsageView)
async def usage(
    svc: ServicesDep,
    who: CanRead,
    start: Annotated[
        str | None,
        Query(alias="from", description="first UTC day, YYYY-MM-DD (default: to - 29 days)", json_schema_extra=DAY),
    ] = None,
    end: Annotated[
        str | None, Query(alias="to", description="last UTC day, YYYY-MM-DD (default: today)", json_schema_extra=DAY)
    ] = None,
    tenant: Annotated[
        str | None,
        Query(
            description="another tenant's usage (scope admin); default: the key's own",
            max_length=64,
            json_schema_extra={"pattern": NAME_RE.pattern},
        ),
    ] = None,
) -> UsageView:
    """How many runs ended and how many seconds ComfyUI spent executing them, per UTC day of the range (at most
    366 days, 30 by default), and in total.

    A run counts on the day it ended, if it ever reached a worker (a result-cache hit or a run canceled while
    queued used no GPU); its GPU time counts on the day each attempt ended, from ComfyUI's own timestamps.
    """
    if tenant is not None and tenant != who.tenant:
        who.require("admin")
        check_name(tenant, "tenant")
    days = day_range(start, end, today=datetime.now(UTC).date())
    found = await run_in_threadpool(read_usage, svc.conns.text, tenant or who.tenant, days)
    return UsageView(
        tenant=found.tenant,
        days=[DayUsageView(date=d.date, runs=d.runs, gpu_seconds=d.gpu_seconds) for d in found.days],
        total=UsageTotalView(runs=found.runs, gpu_seconds=found.gpu_seconds),
    )
