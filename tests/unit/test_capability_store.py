"""Capability sets in Redis (fakeredis): publishing, reading, and what the fleet alive can run."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from api.problems import KINDS, extensions_of
from dispatcher import keys
from dispatcher.connections import Connections
from dispatcher.errors import NoCapableWorker
from dispatcher.fleet import WorkerInfo
from dispatcher.routing.capabilities import Capabilities, Needs
from dispatcher.routing.store import CapabilityStore, FleetCapabilities

TTL = 30
SDXL = Capabilities(
    nodes=frozenset({"KSampler", "CheckpointLoaderSimple", "SaveImage"}),
    models={"checkpoints": frozenset({"sdxl.safetensors"})},
    loaders={"CheckpointLoaderSimple": {"ckpt_name": "checkpoints"}},
)
SD15 = Capabilities(
    nodes=frozenset({"KSampler", "CheckpointLoaderSimple", "SaveImage", "ImageBlur"}),
    models={"checkpoints": frozenset({"sd15.safetensors"}), "loras": frozenset({"detail.safetensors"})},
    loaders={"CheckpointLoaderSimple": {"ckpt_name": "checkpoints"}, "LoraLoader": {"lora_name": "loras"}},
)


def worker(name: str, caps: str, *, state: str = "idle", healthy: bool = True) -> WorkerInfo:
    return WorkerInfo(name, f"http://{name}:8188", healthy, state, "", 0.0, caps=caps)


def needs(nodes: set[str], models: Iterable[tuple[str, str]] = ()) -> Needs:
    return Needs(frozenset(nodes), frozenset(models))


@pytest.fixture
def store(fake_conns: Connections) -> CapabilityStore:
    return CapabilityStore(fake_conns.text, ttl_seconds=TTL)


def test_a_published_set_is_read_back_by_its_digest(store: CapabilityStore, fake_conns: Connections) -> None:
    digest = store.publish(SD15)
    assert digest == SD15.digest()
    assert 0 < fake_conns.text.ttl(keys.capabilities(digest)) <= TTL
    other = CapabilityStore(fake_conns.text, ttl_seconds=TTL)  # another process: nothing in memory
    found = other.get_many([digest, "", "unknown"])
    assert list(found) == [digest]
    assert found[digest].to_json() == SD15.to_json()


def test_publishing_the_same_set_again_keeps_one_record(store: CapabilityStore, fake_conns: Connections) -> None:
    first = store.publish(SD15)
    fake_conns.text.expire(keys.capabilities(first), 5)
    assert CapabilityStore(fake_conns.text, ttl_seconds=TTL).publish(SD15) == first  # a second worker, same set
    assert fake_conns.text.ttl(keys.capabilities(first)) > 5  # renewed
    assert set(store.get_many([first, store.publish(SDXL)])) == {SD15.digest(), SDXL.digest()}


def test_a_set_read_once_is_kept_in_memory(store: CapabilityStore, fake_conns: Connections) -> None:
    digest = CapabilityStore(fake_conns.text, ttl_seconds=TTL).publish(SDXL)
    assert digest in store.get_many([digest])
    fake_conns.text.delete(keys.capabilities(digest))
    assert digest in store.get_many([digest])  # a digest's content never changes: no need to read it again
    assert CapabilityStore(fake_conns.text, ttl_seconds=TTL).get_many([digest]) == {}


# --- the fleet ------------------------------------------------------------------------------------------


@pytest.fixture
def fleet(store: CapabilityStore) -> FleetCapabilities:
    workers = [
        worker("a", store.publish(SDXL)),
        worker("b", store.publish(SD15)),
        worker("c", SD15.digest(), state="paused", healthy=False),
        worker("d", ""),  # has not read its ComfyUI yet
    ]
    return FleetCapabilities(store, lambda: workers)


@pytest.mark.parametrize(
    ("wanted", "capable"),
    [
        (needs({"KSampler"}), ["a", "b", "c"]),
        (needs({"KSampler"}, {("checkpoints", "sdxl.safetensors")}), ["a"]),
        (needs({"ImageBlur"}, {("loras", "detail.safetensors")}), ["b", "c"]),
        (needs({"KSampler"}, {("checkpoints", "flux.safetensors")}), []),
        (needs({"Unknown"}), []),
    ],
)
def test_capable_workers_are_those_whose_set_covers_the_needs(
    fleet: FleetCapabilities, wanted: Needs, capable: list[str]
) -> None:
    assert [w.name for w in fleet.capable(wanted)] == capable


@pytest.mark.parametrize(
    "wanted",
    [
        needs({"KSampler", "SaveImage"}),
        needs({"CheckpointLoaderSimple"}, {("checkpoints", "sdxl.safetensors")}),
        needs({"ImageBlur"}, {("checkpoints", "sd15.safetensors"), ("loras", "detail.safetensors")}),
    ],
)
def test_needs_one_set_covers_pass_the_check(fleet: FleetCapabilities, wanted: Needs) -> None:
    fleet.check("txt2img", wanted)


@pytest.mark.parametrize(
    ("wanted", "gaps"),
    [
        # SD15's set lacks one thing (the checkpoint), SDXL's two: the nearest set's gaps are named.
        (
            needs({"ImageBlur"}, {("checkpoints", "sdxl.safetensors"), ("loras", "detail.safetensors")}),
            [("sdxl.safetensors", "checkpoints")],
        ),
        (needs({"KSampler", "Upscale"}), [("Upscale", "")]),
        (
            needs({"Zeta"}, {("vae", "ae.safetensors")}),
            [("Zeta", ""), ("ae.safetensors", "vae")],
        ),
    ],
)
def test_needs_no_set_covers_are_refused_naming_the_nearest_sets_gaps(
    fleet: FleetCapabilities, wanted: Needs, gaps: list[tuple[str, str]]
) -> None:
    with pytest.raises(NoCapableWorker) as caught:
        fleet.check("txt2img", wanted)
    assert caught.value.missing == gaps
    assert KINDS[NoCapableWorker].status == 422
    assert extensions_of(caught.value) == {"missing": [{"name": n, "folder": f or None} for n, f in gaps]}
    assert all(name in str(caught.value) for name, _ in gaps)


def test_a_fleet_that_published_no_set_refuses_nothing(store: CapabilityStore) -> None:
    workers = [worker("a", ""), worker("b", "gone-digest")]
    fleet = FleetCapabilities(store, lambda: workers)
    fleet.check("txt2img", needs({"Anything"}, {("checkpoints", "x.safetensors")}))
    assert fleet.sets() == {}
    assert fleet.capable(needs({"Anything"})) == []


def test_offline_workers_sets_do_not_count(store: CapabilityStore) -> None:
    workers = [worker("a", store.publish(SDXL), state="offline"), worker("b", store.publish(SD15))]
    fleet = FleetCapabilities(store, lambda: workers)
    assert set(fleet.sets()) == {SD15.digest()}
    with pytest.raises(NoCapableWorker):
        fleet.check("txt2img", needs({"KSampler"}, {("checkpoints", "sdxl.safetensors")}))


def test_the_fleets_loaders_add_its_sets_to_comfyuis_own(store: CapabilityStore) -> None:
    custom = Capabilities(frozenset({"MyLoader"}), {"things": frozenset({"t.bin"})}, {"MyLoader": {"thing": "things"}})
    workers = [worker("a", store.publish(custom))]
    loaders = FleetCapabilities(store, lambda: workers).loaders()
    assert loaders["MyLoader"] == {"thing": "things"}
    assert loaders["CheckpointLoaderSimple"] == {"ckpt_name": "checkpoints"}
