"""Submitting and dispatching runs against fakeredis, for the dispatch, lease and recovery tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dispatcher.connections import Connections
from dispatcher.lease import Leases
from dispatcher.runs import Run, RunStore
from dispatcher.scheduling.dispatch import Dispatcher
from dispatcher.settings import Settings, load_settings
from dispatcher.submit import Submitter
from dispatcher.tenants import TenantStore
from dispatcher.workflows import Registry


@dataclass
class Bench:
    settings: Settings
    conns: Connections
    submitter: Submitter
    dispatcher: Dispatcher
    leases: Leases
    runs: RunStore
    tenants: TenantStore

    @classmethod
    def build(cls, conns: Connections, **overrides: Any) -> Bench:
        settings = load_settings({}, **({"lease_seconds": 5} | overrides))
        return cls(
            settings=settings,
            conns=conns,
            submitter=Submitter(conns.text, Registry.load(settings.workflows_dir), settings),
            dispatcher=Dispatcher(conns.text, dispatch_rate=settings.dispatch_rate, max_running=settings.max_running),
            leases=Leases(conns.text, ttl_seconds=settings.lease_seconds, run_ttl_seconds=settings.run_ttl_seconds),
            runs=RunStore(conns.text),
            tenants=TenantStore(conns.text, settings),
        )

    def submit(self, tenant: str = "default", priority: str = "normal", **params: Any) -> Run:
        body = {"params": {"width": 8, "height": 8, **params}, "priority": priority}
        return self.submitter.submit("invert", body, tenant=tenant)

    def take(self, slots: int) -> list[tuple[str, int]]:
        """(run id, dispatch number) of each run taken, given ``slots`` free pipeline slots in all."""
        return [(d.run_id, d.dispatch) for d in self.dispatcher.take(slots).runs]

    def run(self, run_id: str) -> Run:
        run = self.runs.get(run_id)
        assert run is not None
        return run
