"""store_output: a failed store or a broken download is tried again; what keeps failing is a transient error."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import pytest
from urllib3.exceptions import ProtocolError

from dispatcher.comfyui.client import ComfyClient
from dispatcher.errors import ComfyUIError, OutputNotStored, StorageError
from dispatcher.outputs import TEXT_CONTENT_TYPE as TEXT
from dispatcher.outputs import OutputFile
from dispatcher.storage import MemoryStore
from worker.storing import saved_file, store_output

FILE = OutputFile(node="9", filename="a.png", subfolder="", type="output", ui_key="images")


class Response:
    def __init__(self, data: bytes, *, broken: bool = False) -> None:
        self.data = data
        self.broken = broken

    def chunks(self) -> Iterator[bytes]:
        yield self.data[:2]
        if self.broken:
            raise ProtocolError("reset mid-file")
        yield self.data[2:]


class Client:
    """ComfyUI's /view, each call answering with the next of ``responses``."""

    def __init__(self, *responses: Response) -> None:
        self.responses = list(responses)
        self.views = 0

    @contextmanager
    def view(self, filename: str, subfolder: str, folder_type: str) -> Iterator[Iterator[bytes]]:
        self.views += 1
        yield self.responses.pop(0).chunks()


class FlakyStore(MemoryStore):
    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def put(self, key: str, chunks: Iterable[bytes], content_type: str) -> int:
        data = b"".join(chunks)  # the download is consumed, as a real upload would
        if self.failures:
            self.failures -= 1
            raise StorageError("S3 answered 503")
        return super().put(key, [data], content_type)


def call(client: Client, store: MemoryStore, sleeps: list[float], **kwargs: Any) -> int:
    return store_output(cast(ComfyClient, client), store, FILE, "r/1/a.png", "image/png", sleep=sleeps.append, **kwargs)


def test_a_store_failure_is_retried_with_a_fresh_download() -> None:
    client, store = Client(*(Response(b"abcd") for _ in range(3))), FlakyStore(failures=2)
    sleeps: list[float] = []
    assert call(client, store, sleeps) == 4
    assert store.files["r/1/a.png"] == (b"abcd", "image/png")
    assert client.views == 3 and len(sleeps) == 2 and all(0 <= s <= 1.0 for s in sleeps)


def test_a_broken_download_is_retried() -> None:
    client, store = Client(Response(b"abcd", broken=True), Response(b"abcd")), MemoryStore()
    sleeps: list[float] = []
    assert call(client, store, sleeps) == 4
    assert client.views == 2 and len(sleeps) == 1


def test_what_keeps_failing_is_transient() -> None:
    client, store = Client(*(Response(b"abcd") for _ in range(3))), FlakyStore(failures=5)
    sleeps: list[float] = []
    with pytest.raises(OutputNotStored) as info:
        call(client, store, sleeps)
    assert info.value.transient and isinstance(info.value, ComfyUIError)
    assert isinstance(info.value.__cause__, StorageError)
    assert client.views == 3 and "r/1/a.png" not in store.files


def test_comfyui_refusing_the_file_is_not_retried() -> None:
    class Refusing(Client):
        @contextmanager
        def view(self, filename: str, subfolder: str, folder_type: str) -> Iterator[Iterator[bytes]]:
            self.views += 1
            raise ComfyUIError("GET /view: HTTP 404")
            yield iter(())  # pragma: no cover

    client = Refusing()
    sleeps: list[float] = []
    with pytest.raises(ComfyUIError) as info:
        call(client, MemoryStore(), sleeps)
    assert not isinstance(info.value, OutputNotStored) and client.views == 1 and sleeps == []


def test_a_text_output_is_stored_from_its_string_without_asking_comfyui() -> None:
    text = OutputFile("7", "text-7.txt", "", "output", "text", "a lighthouse — 灯塔")
    client, store = Client(), FlakyStore(failures=1)  # no response queued: a /view call would fail the test
    sleeps: list[float] = []
    size = store_output(cast(ComfyClient, client), store, text, "r/1/text-7.txt", TEXT, sleep=sleeps.append)
    assert size == len("a lighthouse — 灯塔".encode()) and client.views == 0 and len(sleeps) == 1
    assert store.files["r/1/text-7.txt"] == ("a lighthouse — 灯塔".encode(), TEXT)


@pytest.mark.parametrize(
    ("filename", "subfolder", "kind", "expected"),
    [
        ("a.png", "", "output", "a.png"),
        ("a.png", "anims/day1", "output", "anims/day1/a.png"),
        ("a.png", "", "temp", None),  # a preview: not in the output folder
        ("a.png", "../secrets", "output", None),  # would leave the folder
        ("../a.png", "", "output", None),
        ("", "", "output", None),
    ],
    ids=["plain", "subfolder", "temp", "subfolder-escapes", "name-escapes", "no-name"],
)
def test_where_comfyui_saved_an_output(
    tmp_path: Path, filename: str, subfolder: str, kind: str, expected: str | None
) -> None:
    file = OutputFile(node="9", filename=filename, subfolder=subfolder, type=kind, ui_key="images")
    assert saved_file(tmp_path, file) == (tmp_path / expected if expected is not None else None)


def test_an_output_in_comfyuis_folder_is_read_from_it_not_downloaded(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.png").write_bytes(b"local bytes" * 50_000)  # several chunks
    client, store = Client(Response(b"downloaded")), MemoryStore()
    local = OutputFile(node="9", filename="a.png", subfolder="sub", type="output", ui_key="images")
    size = store_output(cast(ComfyClient, client), store, local, "r/1/a.png", "image/png", local_dir=tmp_path)
    assert size == 550_000 and store.files["r/1/a.png"][0] == b"local bytes" * 50_000 and client.views == 0
    # Not there (another host's folder): downloaded over /view as ever.
    size = store_output(cast(ComfyClient, client), store, FILE, "r/1/b.png", "image/png", local_dir=tmp_path)
    assert store.files["r/1/b.png"][0] == b"downloaded" and client.views == 1
