from __future__ import annotations

import http.server
import ipaddress
import threading
from collections.abc import Iterator

import pytest

from dispatcher import safehttp
from dispatcher.addresses import AddressNotAllowed, AllowList, carried_ipv4, check_url


def resolver(*answers: str):  # type: ignore[no-untyped-def]
    return lambda host, port: list(answers)


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0",
     "::1", "fe80::1", "fd00::1", "::ffff:127.0.0.1", "224.0.0.1", "240.0.0.1"],
)  # fmt: skip
def test_internal_addresses_are_refused_by_default(address: str) -> None:
    with pytest.raises(AddressNotAllowed):
        check_url("https://hook.example.com/x", AllowList(), resolve=resolver(address))


def test_a_public_address_is_fine_and_pinned() -> None:
    target = check_url("https://hook.example.com:8443/x?y=1", AllowList(), resolve=resolver("93.184.216.34"))
    assert (target.host, target.port, target.ip) == ("hook.example.com", 8443, "93.184.216.34")


def test_one_bad_address_among_several_refuses_the_host() -> None:
    with pytest.raises(AddressNotAllowed):
        check_url("http://h.example/", AllowList(), resolve=resolver("93.184.216.34", "10.0.0.1"))


@pytest.mark.parametrize(
    ("allow", "address", "ok"),
    [
        ("loopback", "127.0.0.1", True),
        ("loopback", "10.0.0.1", False),
        ("private", "10.0.0.1", True),
        ("10.9.0.0/16", "10.9.1.1", True),
        ("10.9.0.0/16", "10.8.1.1", False),
        ("link-local", "169.254.169.254", True),
        ("all", "10.0.0.1", True),
    ],
)
def test_the_operator_widens_the_list(allow: str, address: str, ok: bool) -> None:
    if ok:
        check_url("http://h.example/", AllowList.parse(allow), resolve=resolver(address))
    else:
        with pytest.raises(AddressNotAllowed):
            check_url("http://h.example/", AllowList.parse(allow), resolve=resolver(address))


@pytest.mark.parametrize("url", ["ftp://h.example/x", "http:///x", "file:///etc/passwd", "http://u:p@h.example/"])
def test_malformed_urls(url: str) -> None:
    with pytest.raises(AddressNotAllowed):
        check_url(url, AllowList.parse("all"), resolve=resolver("93.184.216.34"))


# IPv6 addresses that lead to an IPv4 one, and that IPv4 address.
CARRIERS = [
    ("64:ff9b::7f00:1", "127.0.0.1"),  # NAT64 (RFC 6052 well-known prefix)
    ("64:ff9b::a9fe:a9fe", "169.254.169.254"),  # NAT64 of the cloud metadata service
    ("64:ff9b::a00:1", "10.0.0.1"),
    ("2002:7f00:1::", "127.0.0.1"),  # 6to4
    ("2002:a9fe:a9fe:1::5", "169.254.169.254"),
    ("::127.0.0.1", "127.0.0.1"),  # IPv4-compatible
    ("::ffff:0:7f00:1", "127.0.0.1"),  # IPv4-translated (SIIT)
    ("::ffff:127.0.0.1", "127.0.0.1"),  # IPv4-mapped
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", "127.0.0.1"),  # Teredo: the client is the last 32 bits, inverted
]


@pytest.mark.parametrize(("address", "ipv4"), CARRIERS)
def test_an_ipv6_address_carrying_an_internal_ipv4_is_refused(address: str, ipv4: str) -> None:
    assert ipaddress.IPv4Address(ipv4) in carried_ipv4(ipaddress.ip_address(address))
    for url, resolve in [(f"http://[{address}]:8188/x.png", resolver()), ("https://h.example/", resolver(address))]:
        with pytest.raises(AddressNotAllowed, match=f"IPv4 .*{ipv4}"):
            check_url(url, AllowList(), resolve=resolve)


@pytest.mark.parametrize(("address", "ipv4"), CARRIERS)
def test_an_allow_list_entry_for_the_ipv4_range_permits_its_ipv6_forms(address: str, ipv4: str) -> None:
    wide = ipaddress.ip_network(f"{ipv4}/8", strict=False)
    assert AllowList.parse(f"{wide}").permits(ipaddress.ip_address(address))
    assert AllowList.parse("all").permits(ipaddress.ip_address(address))
    assert not AllowList.parse("192.0.2.0/24, fc00::/7").permits(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "address",
    [
        "64:ff9b::808:808",
        "2002:808:808::1",
        "::ffff:8.8.8.8",
        "2001:0:4136:e378:8000:63bf:f7f7:f7f7",
        "2606:4700::1111",
    ],
)
def test_ipv6_forms_of_public_ipv4_addresses_stay_public(address: str) -> None:
    assert AllowList().permits(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    ("allow", "address", "ok"),
    [
        ("", "64:ff9b:1::a00:1", False),  # local-use NAT64: the IPv4 address may sit anywhere in it
        ("all", "64:ff9b:1::a00:1", True),
        ("", "::1", False),
        ("loopback", "::1", True),  # listed itself, though it also reads as IPv4 0.0.0.1
        ("", "::", False),
        ("2001::/32", "2001:0:4136:e378:8000:63bf:80ff:fffe", True),  # an IPv6 entry covering it counts as well
        ("loopback", "2001:0:a00:1:8000:63bf:80ff:fffe", False),  # a Teredo server inside the network
    ],
)
def test_other_ipv6_carriers(allow: str, address: str, ok: bool) -> None:
    assert AllowList.parse(allow).permits(ipaddress.ip_address(address)) is ok


@pytest.mark.parametrize("host", ["a" * 64 + ".example.com", "a..example.com", "\ud800.example.com"])
def test_a_host_name_idna_cannot_encode_is_refused(host: str) -> None:
    with pytest.raises(AddressNotAllowed, match="is not a valid host name"):
        check_url(f"https://{host}/hook", AllowList())


@pytest.fixture
def server() -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/redirect":
                self.send_response(302)
                self.send_header("Location", "/big")
                self.end_headers()
                return
            body = b"x" * (100 if self.path == "/small" else 10_000)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Host", self.headers["Host"])
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://localhost:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_fetch_connects_to_the_checked_address_with_the_host_name(server: str) -> None:
    fetched = safehttp.request("GET", server + "/small", allow=AllowList.parse("loopback"), timeout=5)
    assert fetched.status == 200 and fetched.content == b"x" * 100
    assert fetched.headers["X-Host"].startswith("localhost:")


def test_fetch_refuses_loopback_unless_allowed(server: str) -> None:
    with pytest.raises(AddressNotAllowed):
        safehttp.request("GET", server + "/small", allow=AllowList(), timeout=5)


def test_fetch_stops_at_the_size_limit_even_after_a_redirect(server: str) -> None:
    with pytest.raises(safehttp.ResponseTooLarge):
        safehttp.request(
            "GET", server + "/redirect", allow=AllowList.parse("loopback"), timeout=5, max_bytes=1000, max_redirects=3
        )
