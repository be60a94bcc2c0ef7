"""Routing in the dispatch script (fakeredis): a run goes only to a route whose capability set has what it needs,
the one with the most free slots; a route's slots count its own runs in flight; every way out of flight frees
the slot; a run no ready set can run waits, queued, and the others go on."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from dispatcher import keys
from dispatcher.connections import Connections
from dispatcher.errors import NoCapableWorker
from dispatcher.fleet import WorkerInfo
from dispatcher.routing.capabilities import Capabilities, Needs, checkpoint_tag
from dispatcher.routing.lua import ANY, as_routes, encode_routes, route_queue
from dispatcher.routing.store import CapabilityStore, FleetCapabilities
from dispatcher.runs import Run
from dispatcher.submit import Submitter
from dispatcher.workflows import Registry
from tests.unit.dispatch_helpers import Bench

TXT2IMG_NODES = frozenset(
    {"KSampler", "CheckpointLoaderSimple", "EmptyLatentImage", "CLIPTextEncode", "VAEDecode", "SaveImage"}
)
INVERT_NODES = frozenset({"EmptyImage", "ImageInvert", "SaveImage"})


def holding(*checkpoints: str, nodes: frozenset[str] = TXT2IMG_NODES | INVERT_NODES) -> Capabilities:
    return Capabilities(nodes=nodes, models={"checkpoints": frozenset(checkpoints)})


def worker(name: str, caps: str, slots: int = 1, state: str = "idle") -> WorkerInfo:
    return WorkerInfo(name, "http://c", True, state, "", 0.0, slots=slots, caps=caps)


class Fleet:
    """Workers as the API's handout sees them, with capability sets published in (fake) Redis."""

    def __init__(self, conns: Connections) -> None:
        self.store = CapabilityStore(conns.text, ttl_seconds=60)
        self.workers: list[WorkerInfo] = []

    def add(self, name: str, capabilities: Capabilities, slots: int = 1) -> str:
        digest = self.store.publish(capabilities)
        self.workers = [*self.workers, worker(name, digest, slots)]
        return digest

    def view(self) -> FleetCapabilities:
        return FleetCapabilities(self.store, lambda: self.workers)


@pytest.fixture
def fleet(fake_conns: Connections) -> Fleet:
    return Fleet(fake_conns)


@pytest.fixture
def bench(fake_conns: Connections, fleet: Fleet) -> Bench:
    bench = Bench.build(fake_conns)
    bench.submitter = Submitter(
        fake_conns.text, Registry.load(bench.settings.workflows_dir), bench.settings, fleet=fleet.view()
    )
    return bench


def txt2img(bench: Bench, checkpoint: str, **body: Any) -> Run:
    return bench.submitter.submit("txt2img", {"params": {"prompt": "a cat", "checkpoint": checkpoint}, **body})


def take(bench: Bench, fleet: Fleet) -> list[tuple[str, str]]:
    """(run id, route) of each run taken now."""
    return [(d.run_id, d.route) for d in bench.dispatcher.take(encode_routes(fleet.workers)).runs]


def test_each_run_goes_to_a_set_that_holds_its_checkpoint(bench: Bench, fleet: Fleet) -> None:
    a = fleet.add("wa", holding("a.safetensors", "c.safetensors"), slots=4)
    b = fleet.add("wb", holding("b.safetensors", "c.safetensors"), slots=4)
    runs = {ckpt: txt2img(bench, ckpt).id for ckpt in ("a.safetensors", "b.safetensors")}
    taken = dict(take(bench, fleet))
    assert taken == {runs["a.safetensors"]: a, runs["b.safetensors"]: b}
    assert bench.run(runs["a.safetensors"]).checkpoint == "checkpoints/a.safetensors"


def test_a_common_checkpoint_goes_where_most_slots_are_free(bench: Bench, fleet: Fleet) -> None:
    a = fleet.add("wa", holding("a.safetensors", "c.safetensors"), slots=1)
    b = fleet.add("wb", holding("b.safetensors", "c.safetensors"), slots=3)
    ids = [txt2img(bench, "c.safetensors").id for _ in range(4)]
    assert [route for _, route in take(bench, fleet)] == [b, b, a, b]
    assert take(bench, fleet) == []  # every slot of both sets holds a run
    assert sorted(r for r, _ in take(bench, fleet)) == [] and {bench.run(i).status for i in ids} == {"queued"}


def test_a_run_whose_set_is_full_waits_and_others_pass_it(bench: Bench, fleet: Fleet) -> None:
    a = fleet.add("wa", holding("a.safetensors"), slots=1)
    b = fleet.add("wb", holding("b.safetensors"), slots=1)
    first_a = txt2img(bench, "a.safetensors", priority="high").id
    assert take(bench, fleet) == [(first_a, a)]
    second_a = txt2img(bench, "a.safetensors", priority="high").id  # its set is full: it waits
    other = bench.submitter.submit("txt2img", {"params": {"prompt": "x", "checkpoint": "b.safetensors"}}, tenant="t2")
    assert take(bench, fleet) == [(other.id, b)]
    assert bench.run(second_a).status == "queued"


@pytest.mark.parametrize("way_out", ["complete", "cancel_queued", "release", "requeue"])
def test_every_way_out_of_flight_frees_the_routes_slot(bench: Bench, fleet: Fleet, way_out: str) -> None:
    a = fleet.add("wa", holding("a.safetensors"), slots=1)
    first = txt2img(bench, "a.safetensors").id
    second = txt2img(bench, "a.safetensors").id
    assert take(bench, fleet) == [(first, a)]
    assert bench.conns.text.smembers(f"{keys.NS}:routed:{a}") == {first}
    run = bench.run(first)
    if way_out == "cancel_queued":
        from dispatcher.cancel import Canceller

        Canceller(bench.conns.text, run_ttl_seconds=60).cancel(run)
    else:
        claim = bench.leases.claim(first, "wa", 1)
        assert claim.lease is not None
        if way_out == "complete":
            bench.leases.complete(claim.lease, bench.run(first), "succeeded", outputs=[])
        elif way_out == "release":
            bench.leases.release(claim.lease, bench.run(first))
        else:
            bench.leases.requeue(claim.lease, bench.run(first), error={"type": "x"}, delay=3600)
    assert bench.conns.text.scard(f"{keys.NS}:routed:{a}") == 0
    assert "routed" not in bench.conns.text.hgetall(keys.run(first))
    taken = take(bench, fleet)
    expected = first if way_out == "release" else second  # a run handed back is first in line again
    assert taken == [(expected, a)]


def test_no_ready_set_that_can_run_it_keeps_it_queued(bench: Bench, fleet: Fleet) -> None:
    fleet.add("wa", holding("a.safetensors"), slots=2)
    bench.settings = bench.settings.model_copy(update={"unservable_runs": "queue"})
    bench.submitter.settings = bench.settings
    waiting = txt2img(bench, "z.safetensors").id  # accepted: queued until a worker holding z comes
    served = txt2img(bench, "a.safetensors").id
    assert [r for r, _ in take(bench, fleet)] == [served]
    z = fleet.add("wz", holding("z.safetensors"))
    assert take(bench, fleet) == [(waiting, z)]


def test_a_run_no_worker_can_run_is_refused_naming_the_nearest_gap(bench: Bench, fleet: Fleet) -> None:
    fleet.add("wa", holding("a.safetensors"))
    fleet.add("wb", holding("b.safetensors", nodes=INVERT_NODES))
    with pytest.raises(NoCapableWorker) as refused:
        txt2img(bench, "z.safetensors")
    assert refused.value.missing == [("z.safetensors", "checkpoints")]
    assert bench.conns.text.zcard(keys.backlog("default", "normal")) == 0  # nothing queued


def test_without_published_sets_every_worker_takes_anything(bench: Bench, fleet: Fleet) -> None:
    fleet.workers = [worker("old", "", slots=2)]
    ids = [txt2img(bench, "z.safetensors").id, bench.submit().id]
    assert take(bench, fleet) == [(ids[0], ANY), (ids[1], ANY)]


def test_invert_needs_no_model_and_goes_to_any_set_with_its_nodes(bench: Bench, fleet: Fleet) -> None:
    fleet.add("wt", holding("a.safetensors", nodes=TXT2IMG_NODES), slots=3)  # no ImageInvert
    i = fleet.add("wi", holding(nodes=INVERT_NODES), slots=1)
    run = bench.submit()
    assert Needs.from_text(bench.run(run.id).needs).models == frozenset()
    assert take(bench, fleet) == [(run.id, i)]


@pytest.mark.parametrize(
    ("workers", "expected"),
    [
        ([], ""),
        ([worker("w1", "d1", 2), worker("w2", "d1", 2), worker("w3", "d2", 1)], "0|d1 4 -,d2 1 -"),
        ([worker("w1", "", 2), worker("w2", "d2", 1, state="paused")], "0|- 2 -"),
        ([worker("w1", "d1", 2, state="draining"), worker("w2", "d1", 1, state="busy")], "0|d1 1 -"),
    ],
)
def test_encode_routes(workers: list[WorkerInfo], expected: str) -> None:
    assert encode_routes(workers) == expected


def test_encode_routes_with_affinity_names_each_worker_and_its_checkpoint() -> None:
    loaded = replace(worker("w1", "d1", 2), checkpoint="checkpoints/a.safetensors")
    workers = [loaded, worker("w2", "d1", 1), worker("old", "", 1)]
    tag = checkpoint_tag("checkpoints/a.safetensors")
    assert encode_routes(workers, affinity=True, affinity_wait=2.5) == f"2.5|- 1 -,d1@w1 2 {tag},d1@w2 1 -"


@pytest.mark.parametrize(("value", "expected"), [(3, "0|- 3 -"), (0, "0|- 0 -"), (-1, "0|- 0 -"), ("x", "x")])
def test_as_routes(value: int | str, expected: str) -> None:
    assert as_routes(value) == expected


@pytest.mark.parametrize(
    ("route", "expected"), [(ANY, "comfy-dispatch"), ("", "comfy-dispatch"), ("abc", "comfy-dispatch:caps:abc")]
)
def test_route_queue(route: str, expected: str) -> None:
    assert route_queue("comfy-dispatch", route) == expected


# -- model affinity --------------------------------------------------------------------------------------------------


def affine(bench: Bench, fleet: Fleet, wait: float = 10.0) -> list[tuple[str, str]]:
    """(run id, route) of each run taken now, routes per worker with their checkpoints (as the handout sends)."""
    routes = encode_routes(fleet.workers, affinity=True, affinity_wait=wait)
    return [(d.run_id, d.route) for d in bench.dispatcher.take(routes).runs]


def end(bench: Bench, run_id: str) -> None:
    claim = bench.leases.claim(run_id, "w", bench.run(run_id).dispatches)
    assert claim.lease is not None
    bench.leases.complete(claim.lease, bench.run(run_id), "succeeded", outputs=[])


def test_alternating_checkpoints_stay_on_the_worker_that_has_them_loaded(bench: Bench, fleet: Fleet) -> None:
    both = holding("a.safetensors", "b.safetensors")
    digest = fleet.add("w1", both)
    fleet.add("w2", both)
    w1, w2 = f"{digest}@w1", f"{digest}@w2"
    ids = [txt2img(bench, "ab"[i % 2] + ".safetensors").id for i in range(8)]
    # Nothing loaded yet: a to one worker, b to the other (a fresh worker before a switch).
    first = affine(bench, fleet)
    assert [r for r, _ in first] == ids[:2] and {route for _, route in first} == {w1, w2}
    on = dict(first)
    a_route, b_route = on[ids[0]], on[ids[1]]
    # From then on each checkpoint goes where it was loaded, whichever worker frees a slot first.
    route_of_run = {i: (a_route if n % 2 == 0 else b_route) for n, i in enumerate(ids)}
    for done, following in ((ids[0], ids[2]), (ids[1], ids[3]), (ids[3], ids[5]), (ids[2], ids[4])):
        end(bench, done)
        assert affine(bench, fleet) == [(following, route_of_run[following])]
    assert {a_route, b_route} == {w1, w2}


def test_a_run_waits_a_bounded_time_for_the_worker_with_its_checkpoint(bench: Bench, fleet: Fleet) -> None:
    both = holding("a.safetensors", "b.safetensors")
    fleet.add("w1", both)
    fleet.add("w2", both)
    first_a, first_b = txt2img(bench, "a.safetensors").id, txt2img(bench, "b.safetensors").id
    assert len(affine(bench, fleet)) == 2
    end(bench, first_b)  # the b worker is free, the a worker busy
    waiting = txt2img(bench, "a.safetensors").id
    taken = bench.dispatcher.take(encode_routes(fleet.workers, affinity=True, affinity_wait=10.0))
    assert taken.runs == [] and taken.wait is not None and 9.0 < taken.wait <= 10.0  # woken when the wait is up
    # Its wait is over (it was created long enough ago): it switches the free worker to a.
    bench.conns.text.hset(keys.run(waiting), "created_at", "1000")
    assert [r for r, _ in affine(bench, fleet)] == [waiting]
    assert first_a


def test_a_checkpoint_no_worker_has_loaded_goes_at_once(bench: Bench, fleet: Fleet) -> None:
    both = holding("a.safetensors", "b.safetensors", "c.safetensors")
    fleet.add("w1", both)
    fleet.add("w2", both)
    a, b = txt2img(bench, "a.safetensors").id, txt2img(bench, "b.safetensors").id
    assert len(affine(bench, fleet)) == 2
    end(bench, a)
    c = txt2img(bench, "c.safetensors").id
    assert [r for r, _ in affine(bench, fleet)] == [c]
    assert b


def test_each_run_taken_says_whether_its_checkpoint_was_loaded(bench: Bench, fleet: Fleet) -> None:
    both = holding("a.safetensors", "b.safetensors")
    fleet.add("w1", both)
    a1, a2, b1 = (txt2img(bench, c).id for c in ("a.safetensors", "a.safetensors", "b.safetensors"))
    routes = encode_routes(fleet.workers, affinity=True, affinity_wait=0)
    assert [(d.run_id, d.model) for d in bench.dispatcher.take(routes).runs] == [(a1, "none")]  # nothing loaded
    end(bench, a1)
    assert [(d.run_id, d.model) for d in bench.dispatcher.take(routes).runs] == [(a2, "hit")]
    end(bench, a2)
    assert [(d.run_id, d.model) for d in bench.dispatcher.take(routes).runs] == [(b1, "switch")]


def test_what_a_waiting_run_lacks_is_said_of_the_ready_workers(fleet: Fleet) -> None:
    fleet.add("wa", holding("a.safetensors"))
    needs = Needs(TXT2IMG_NODES, frozenset({("checkpoints", "z.safetensors")}))
    view = fleet.view()
    assert [(g.name, g.folder) for g in view.lacking(needs) or []] == [("z.safetensors", "checkpoints")]
    assert view.lacking(Needs(TXT2IMG_NODES, frozenset({("checkpoints", "a.safetensors")}))) is None
    fleet.workers = [replace(w, state="paused") for w in fleet.workers]
    assert FleetCapabilities(fleet.store, lambda: fleet.workers).lacking(needs) == []  # no worker is ready
    fleet.workers = [*fleet.workers, worker("old", "")]
    assert FleetCapabilities(fleet.store, lambda: fleet.workers).lacking(needs) is None  # takes anything


def test_queued_runs_no_ready_worker_can_run_are_counted(bench: Bench, fleet: Fleet) -> None:
    from dispatcher.routing.waiting import count_unservable

    fleet.add("wa", holding("a.safetensors"))
    bench.settings = bench.settings.model_copy(update={"unservable_runs": "queue"})
    bench.submitter.settings = bench.settings
    for checkpoint in ("z.safetensors", "z.safetensors", "y.safetensors", "a.safetensors"):
        txt2img(bench, checkpoint)
    counted = count_unservable(bench.conns.text, fleet.view())
    assert (counted.runs, counted.looked_at, counted.complete) == (3, 4, True)
    partial = count_unservable(bench.conns.text, fleet.view(), limit=2)
    assert partial.looked_at == 2 and not partial.complete
