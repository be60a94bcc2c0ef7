from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from dispatcher import storage
from dispatcher.errors import OutputNotFound, StorageError
from dispatcher.storage import LocalStore, MemoryStore, OutputStore


@pytest.fixture(params=["local", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> OutputStore:
    return LocalStore(tmp_path) if request.param == "local" else MemoryStore()


def test_put_then_open(store: OutputStore) -> None:
    size = store.put("run1/1/a.png", [b"ab", b"cd"], "image/png")
    assert size == 4
    with store.open("run1/1/a.png") as fh:
        assert fh.read() == b"abcd"
    assert store.url("run1/1/a.png") is None


def test_missing_output(store: OutputStore) -> None:
    with pytest.raises(OutputNotFound):
        store.open("run1/1/none.png")


@pytest.mark.parametrize("key", ["", "/etc/passwd", "run/../../x", "run//x", "./x"])
def test_keys_cannot_escape(store: OutputStore, key: str) -> None:
    with pytest.raises(StorageError):
        store.put(key, [b"x"], "text/plain")


@pytest.mark.parametrize("key", ["", "/etc", "run/../..", "run//1"])
def test_prepare_cannot_escape_either(store: OutputStore, key: str) -> None:
    with pytest.raises(StorageError):
        store.prepare(key)


@pytest.mark.parametrize("prepared", [True, False])
def test_put_works_whether_or_not_prepared(store: OutputStore, prepared: bool) -> None:
    if prepared:
        store.prepare("run1/2")
        store.prepare("run1/2")  # twice: a second worker's attempt, say
    assert store.put("run1/2/a.png", [b"ab"], "image/png") == 2
    with store.open("run1/2/a.png") as fh:
        assert fh.read() == b"ab"


def test_local_prepare_makes_the_attempts_folder(tmp_path: Path) -> None:
    LocalStore(tmp_path).prepare("run1/1")
    assert (tmp_path / "run1" / "1").is_dir() and list((tmp_path / "run1" / "1").iterdir()) == []


def test_local_unprepare_takes_away_only_empty_folders(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.prepare("gone/1")
    store.unprepare("gone/1")  # the attempt's folder, then the run's: both empty
    assert list(tmp_path.iterdir()) == []
    store.put("kept/1/a.png", [b"a"], "image/png")
    store.prepare("kept/2")
    store.unprepare("kept/2")  # the run's folder holds the first attempt's file: it stays
    assert [p.name for p in (tmp_path / "kept").iterdir()] == ["1"]
    store.prepare("kept/3")
    store.put("kept/3/b.png", [b"b"], "image/png")
    store.unprepare("kept/3")  # not empty: nothing taken
    assert (tmp_path / "kept" / "3" / "b.png").is_file()
    store.unprepare("never/1")  # never prepared: nothing to do


def test_local_store_leaves_no_partial_file(tmp_path: Path) -> None:
    def failing() -> Iterator[bytes]:
        yield b"partial"
        raise OSError("connection reset")

    store = LocalStore(tmp_path)
    with pytest.raises(OSError):
        store.put("r/1/a.png", failing(), "image/png")
    assert list((tmp_path / "r" / "1").iterdir()) == []


def test_local_put_makes_its_folders_again_when_taken_away_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalStore(tmp_path)
    opened: list[str] = []

    def open_after_unprepare(path: Path, mode: str) -> BinaryIO:
        if not opened:  # between making the folders and opening the file: another attempt's unprepare
            store.unprepare("r/1")
        opened.append(str(path))
        return open(path, mode)  # noqa: SIM115  # what put closes

    monkeypatch.setattr(storage, "open", open_after_unprepare, raising=False)
    assert store.put("r/1/a.png", [b"ab"], "image/png") == 2
    assert len(opened) == 2 and (tmp_path / "r" / "1" / "a.png").read_bytes() == b"ab"
