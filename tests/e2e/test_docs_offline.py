"""`/docs` and `/redoc` through a real API process work without internet: every script and stylesheet they load
is served by the API itself (FastAPI's own pages load them from a CDN, and stay blank offline)."""

from __future__ import annotations

from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
import requests

from dispatcher.redis_server import free_port
from tests.support import Proc, wait_http

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]


class Assets(HTMLParser):
    """The URLs of the scripts, stylesheets and icons a page loads."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str] = []
        self.styles: list[str] = []
        self.icons: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "script" and found.get("src"):
            self.scripts.append(str(found["src"]))
        elif tag == "link" and found.get("rel") == "stylesheet":
            self.styles.append(str(found["href"]))
        elif tag == "link" and found.get("rel") in ("icon", "shortcut icon"):
            self.icons.append(str(found["href"]))


def _assets(page: str) -> Assets:
    parser = Assets()
    parser.feed(page)
    return parser


@pytest.fixture
def api(redis_url: str, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = {"COMFY_DISPATCH_REDIS_URL": redis_url, "COMFY_DISPATCH_OUTPUT_DIR": str(tmp_path / "outputs")}
    proc = Proc(["api", "--port", str(port)], tmp_path / "api.log", env).start()
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.stop()


@pytest.mark.parametrize(("page", "styled"), [("/docs", True), ("/redoc", False)])
def test_docs_pages_load_their_files_from_the_api(api: str, page: str, styled: bool) -> None:
    reply = requests.get(api + page, timeout=10)  # no API key: the docs are open
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/html")
    assets = _assets(reply.text)
    assert assets.scripts and (assets.styles or not styled), reply.text
    for url in [*assets.scripts, *assets.styles, *assets.icons]:
        assert url.startswith("/") and not url.startswith("//"), f"{page} loads {url} from elsewhere"
    assert "cdn" not in reply.text and "fonts.googleapis" not in reply.text
    for url in assets.scripts:
        served = requests.get(api + url, timeout=10)
        assert served.status_code == 200 and "javascript" in served.headers["content-type"], url
        assert len(served.content) > 100_000  # the whole bundle, not a stub
    for url in assets.styles:
        served = requests.get(api + url, timeout=10)
        assert served.status_code == 200 and served.headers["content-type"].startswith("text/css"), url
    for url in assets.icons:
        assert requests.get(api + url, timeout=10).status_code == 200, url
    assert requests.get(api + "/openapi.json", timeout=10).json()["openapi"].startswith("3.1")  # Swagger UI 5 reads it


def test_swagger_ui_oauth2_redirect_is_served(api: str) -> None:
    reply = requests.get(api + "/docs/oauth2-redirect", timeout=10)
    assert reply.status_code == 200 and "oauth2" in reply.text.lower()
