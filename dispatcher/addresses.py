"""Which network addresses user-supplied URLs (callbacks, input images) may reach.

By default only public addresses: loopback, private, link-local, CGNAT,
multicast and reserved ranges are refused, so a run cannot make us call
into our own network (SSRF). The operator widens it with
``COMFY_DISPATCH_CALLBACK_ALLOW`` ("loopback", "private", "link-local",
CIDRs, or "all"). The check applies to every address the host resolves to,
at send time too (``dispatcher.safehttp`` connects to the address checked,
so DNS cannot answer differently in between).

An IPv6 address that carries an IPv4 address (IPv4-mapped and -compatible, SIIT's IPv4-translated,
NAT64's 64:ff9b::/96, 6to4, Teredo) reaches that IPv4 address through a translator or tunnel, so it
is judged as that address: ``64:ff9b::7f00:1`` is loopback, and an allow-list entry for 127.0.0.0/8
permits it.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from dispatcher.errors import DispatchError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Sequence[str]]

KEYWORDS: dict[str, tuple[str, ...]] = {
    "loopback": ("127.0.0.0/8", "::1/128"),
    "private": ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"),
    "link-local": ("169.254.0.0/16", "fe80::/10"),
    "all": ("0.0.0.0/0", "::/0"),
}


# Prefixes whose last 32 bits are an IPv4 address: IPv4-compatible (RFC 4291), IPv4-translated (RFC 2765),
# NAT64's well-known prefix (RFC 6052); :: and ::1 too, as 0.0.0.0 and 0.0.0.1, neither of them public.
# IPv4-mapped, 6to4 and Teredo addresses have properties of their own.
_LAST_32_BITS = tuple(ipaddress.IPv6Network(n) for n in ("::/96", "::ffff:0:0:0/96", "64:ff9b::/96"))
# RFC 8215's local-use NAT64 prefix: the network chooses where in it the IPv4 address sits, so it cannot be
# judged by one; it is never public (older Pythons call it global).
_LOCAL_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")


def carried_ipv4(ip: IPAddress) -> tuple[ipaddress.IPv4Address, ...]:
    """The IPv4 addresses an IPv6 address leads to (Teredo: its server and its client); () for any other."""
    if isinstance(ip, ipaddress.IPv4Address):
        return ()
    if ip.ipv4_mapped is not None:
        return (ip.ipv4_mapped,)
    if ip.sixtofour is not None:
        return (ip.sixtofour,)
    if ip.teredo is not None:
        return ip.teredo
    if any(ip in net for net in _LAST_32_BITS):
        return (ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF),)
    return ()


class AddressNotAllowed(DispatchError):
    """Raised when a URL is malformed or its host resolves to an address we may not reach."""


@dataclass(frozen=True)
class AllowList:
    networks: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, text: str) -> AllowList:
        """``"loopback, private, 203.0.113.0/24"``; raises ValueError on a bad entry."""
        networks: list[Network] = []
        for raw in text.split(","):
            item = raw.strip().lower()
            if not item:
                continue
            for cidr in KEYWORDS.get(item, (item,)):
                networks.append(ipaddress.ip_network(cidr, strict=False))
        return cls(tuple(networks))

    def permits(self, ip: IPAddress) -> bool:
        """Allowed if listed itself (``::1`` under "loopback"), else if every IPv4 address it carries is
        allowed, else if it is a public unicast address."""
        if any(ip in net for net in self.networks if net.version == ip.version):
            return True
        carried = carried_ipv4(ip)
        if carried:
            return all(self.permits(inner) for inner in carried)
        if ip in _LOCAL_NAT64:
            return False
        return ip.is_global and not ip.is_multicast


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


@dataclass(frozen=True)
class Target:
    """A URL whose host was resolved and every address checked; connect to ``ip`` only."""

    url: str
    scheme: str
    host: str
    port: int
    ip: str


def check_url(url: str, allow: AllowList, *, resolve: Resolver = system_resolver) -> Target:
    """Resolve ``url``'s host and check every address; raises AddressNotAllowed naming why."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise AddressNotAllowed(f"{url!r} is not an http(s) URL with a host")
    if parts.username or parts.password:
        raise AddressNotAllowed("URLs with credentials are not accepted")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise AddressNotAllowed(f"bad port in {url!r}") from exc
    try:
        literal: IPAddress | None = ipaddress.ip_address(parts.hostname)
    except ValueError:
        literal = None
    try:
        found = [str(literal)] if literal is not None else list(dict.fromkeys(resolve(parts.hostname, port)))
    except UnicodeError as exc:  # the idna codec: an empty or over-long label, a character no host name has
        raise AddressNotAllowed(f"{parts.hostname!r} is not a valid host name: {exc}") from exc
    except OSError as exc:
        raise AddressNotAllowed(f"cannot resolve {parts.hostname!r}: {exc}") from exc
    if not found:
        raise AddressNotAllowed(f"{parts.hostname!r} has no address")
    for address in found:
        ip = ipaddress.ip_address(address.split("%")[0])
        if not allow.permits(ip):
            carried = ", ".join(map(str, carried_ipv4(ip)))
            raise AddressNotAllowed(
                f"{parts.hostname!r} resolves to {address}{f' (IPv4 {carried})' if carried else ''}, "
                "which is not a public address (the operator may allow it with COMFY_DISPATCH_CALLBACK_ALLOW)"
            )
    return Target(url, parts.scheme, parts.hostname, port, found[0])
