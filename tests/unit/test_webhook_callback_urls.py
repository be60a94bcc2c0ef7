"""Callback URLs are checked at submit time: one reaching a refused address is a 422 before anything is queued."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from dispatcher.addresses import AllowList
from dispatcher.connections import Connections
from dispatcher.errors import ParameterError
from dispatcher.run_options import parse_callbacks
from tests.unit.dispatch_helpers import Bench

PUBLIC_ONLY = AllowList.parse("")


def resolver(answers: dict[str, list[str]]) -> object:
    def resolve(host: str, port: int) -> Sequence[str]:
        if host not in answers:
            raise OSError("Name or service not known")
        return answers[host]

    return resolve


RESOLVE = resolver({"hooks.example.com": ["93.184.215.14"], "evil.example.com": ["93.184.215.14", "127.0.0.1"]})


@pytest.mark.parametrize(
    ("url", "allow"),
    [
        ("https://hooks.example.com/result", ""),
        ("http://93.184.215.14:8080/x", ""),
        ("http://127.0.0.1:9000/hook", "loopback"),
        ("http://10.1.2.3/hook", "private"),
        ("https://not-resolvable.example.com/hook", ""),  # checked again when sending
    ],
)
def test_accepted(url: str, allow: str) -> None:
    value = {"on_result_url": url}
    assert parse_callbacks(value, AllowList.parse(allow), resolve=RESOLVE) == value  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "url"),
    [
        ("on_result_url", "http://127.0.0.1:9000/hook"),
        ("on_result_url", "http://[::1]/hook"),
        ("on_progress_event_url", "http://169.254.169.254/latest/meta-data"),
        ("on_progress_event_url", "http://10.1.2.3/hook"),
        ("on_result_url", "https://evil.example.com/hook"),  # one refused address is enough
        ("on_result_url", "http://user:pw@hooks.example.com/hook"),
    ],
)
def test_refused(name: str, url: str) -> None:
    with pytest.raises(ParameterError) as info:
        parse_callbacks({name: url}, PUBLIC_ONLY, resolve=RESOLVE)  # type: ignore[arg-type]
    assert info.value.param == f"callback_urls.{name}"


def test_without_an_allow_list_only_the_shape_is_checked() -> None:
    assert parse_callbacks({"on_result_url": "http://127.0.0.1/x"}) == {"on_result_url": "http://127.0.0.1/x"}


@pytest.mark.parametrize(("allow", "accepted"), [("", False), ("loopback", True)])
def test_the_submitter_uses_the_operators_allow_list(fake_conns: Connections, allow: str, accepted: bool) -> None:
    bench = Bench.build(fake_conns, callback_allow=allow)
    body = {"params": {}, "callback_urls": {"on_result_url": "http://127.0.0.1:9/hook"}}
    if accepted:
        assert bench.submitter.submit("invert", body).callbacks == body["callback_urls"]
    else:
        with pytest.raises(ParameterError, match="callback_urls.on_result_url"):
            bench.submitter.submit("invert", body)
        assert fake_conns.text.dbsize() == 0  # nothing stored
