"""Where a webhook (a batch's, a turn's) may be sent. Its URL's form is checked when it is given; the addresses its host
resolves to are checked at every delivery, after resolving once, and the delivery connects to those very addresses,
so a name that re-resolves to an inside address later (DNS rebinding) cannot reach it.

Loopback, private (RFC 1918, unique local), link-local (cloud metadata at 169.254.169.254 among them), shared (CGNAT
100.64/10), unspecified, multicast, reserved, benchmarking and documentation addresses are refused, an IPv4 address
written inside IPv6 (mapped, NAT64, 6to4) judged as the IPv4 address it reaches, unless the operator's allow-list
(`webhook_allow_networks`) names its network or the URL's host. Any port may be used: a public host's ports are
open to anyone on the internet anyway."""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[IPAddress]]

MAX_URL_CHARS = 2048
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
# First match names the reason; more specific networks come before the ones holding them.
_FORBIDDEN = tuple((ipaddress.ip_network(network), reason) for network, reason in (
    ("0.0.0.0/8", "unspecified ('this network')"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "shared address space (CGNAT)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local (cloud metadata)"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "6to4 relay anycast"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved or broadcast"),
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::/96", "IPv4-compatible (deprecated)"),
    ("64:ff9b:1::/48", "local-use NAT64"),
    ("100::/64", "discard-only"),
    ("2001:db8::/32", "documentation"),
    ("2001::/23", "IETF protocol assignments (Teredo among them)"),
    ("fc00::/7", "unique local (private)"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local (deprecated)"),
    ("ff00::/8", "multicast"),
))
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class InvalidWebhookUrl(ValueError):
    """A webhook URL this service will not call (INVALID_ARGUMENT at submission)."""


class Forbidden(Exception):
    """The webhook's host resolves to an address it may not reach (a refused delivery attempt)."""


@dataclass(frozen=True)
class Target:
    """A checked webhook URL, in the parts a delivery uses."""

    scheme: str
    host: str  # lower case, IPv6 without brackets
    port: int
    path: str  # the request target: path and query
    literal: IPAddress | None  # the host, when it is an address

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if isinstance(self.literal, ipaddress.IPv6Address) else self.host
        return host if self.port == (443 if self.scheme == "https" else 80) else f"{host}:{self.port}"


def parse_url(url: str) -> Target:
    """The URL's parts if it is one a webhook may have: http or https, no user or password, at most MAX_URL_CHARS
    of printable ASCII (a delivery writes it into its request line as is), a host name or an address."""
    if not isinstance(url, str) or not 0 < len(url) <= MAX_URL_CHARS:
        raise InvalidWebhookUrl(f"webhook_url: 1 to {MAX_URL_CHARS} characters")
    if not url.isascii() or any(c <= " " or c == "\x7f" for c in url):
        raise InvalidWebhookUrl("webhook_url: printable ASCII without spaces (percent-encode the rest, punycode a "
                                "host name)")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise InvalidWebhookUrl("webhook_url: an http or https URL")
    if "@" in parts.netloc:
        raise InvalidWebhookUrl("webhook_url: no user name or password in the URL")
    try:
        port = parts.port if parts.port is not None else 443 if parts.scheme == "https" else 80
    except ValueError:
        port = 0
    if not 0 < port < 65536:
        raise InvalidWebhookUrl("webhook_url: the port is 1 to 65535")
    host = (parts.hostname or "").rstrip(".")
    literal = _address(host)
    if literal is None and not _is_host_name(host):
        raise InvalidWebhookUrl(f"webhook_url: {host!r:.80} is neither a host name nor an IP address")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(parts.scheme, host, port, path, literal)


@dataclass(frozen=True)
class Destinations:
    """The operator's allow-list: inside networks, and host names whatever they resolve to, a webhook may reach."""

    networks: tuple[Network, ...] = ()
    hosts: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, entries: str) -> Destinations:
        """Comma-separated networks (`10.0.0.0/8`, `fd00::/8`), addresses (`127.0.0.1`) and host names."""
        networks, hosts = [], set()
        for entry in filter(None, (e.strip().lower() for e in entries.split(","))):
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                if not _is_host_name(entry.rstrip(".")):
                    raise ValueError(f"webhook allow-list: {entry!r} is neither a network nor a host name") from None
                hosts.add(entry.rstrip("."))
        return cls(tuple(networks), frozenset(hosts))

    def refusal(self, host: str, address: IPAddress) -> str | None:
        """What `address` (resolved from `host`) is that keeps it from being called ("loopback", "private (as
        10.0.0.1)"); None when it may be called."""
        if host in self.hosts:
            return None
        reached = _reached(address)
        if any(reached in network or address in network for network in self.networks):
            return None
        reason = _forbidden(reached) or _forbidden(address)
        return reason if reason is None or reached == address else f"{reason} (as {reached})"

    def check_submitted(self, url: str) -> Target:
        """A webhook URL as submitted: its form, and its host when that is an address or `localhost` (the rest is
        known only when it is resolved, at delivery)."""
        target = parse_url(url)
        loopback = target.host == "localhost" or target.host.endswith(".localhost")
        address = target.literal or (ipaddress.ip_address("127.0.0.1") if loopback else None)
        reason = None if address is None else self.refusal(target.host, address)
        if reason is not None:
            raise InvalidWebhookUrl(f"webhook_url: {target.host} is {reason}; webhooks reach such an address only "
                                    "when the operator's allow-list names it")
        return target

    def checked_addresses(self, target: Target, resolve: Resolver) -> list[IPAddress]:
        """The addresses to connect to: the host resolved once, every address allowed (a name mixing inside and
        outside addresses is refused whole). Raises Forbidden."""
        try:
            addresses = [target.literal] if target.literal is not None else resolve(target.host, target.port)
        except (OSError, UnicodeError) as exc:
            raise Forbidden(f"{target.host} does not resolve ({exc})") from None
        if not addresses:
            raise Forbidden(f"{target.host} does not resolve")
        for address in addresses:
            reason = self.refusal(target.host, address)
            if reason is not None:
                raise Forbidden(f"{address} is {reason}" if target.literal is not None
                                else f"{target.host} resolves to {address}, which is {reason}")
        return [_unmapped(address) for address in addresses]


def system_resolver(host: str, port: int) -> list[IPAddress]:
    """The host's addresses by the system's resolver, each once, in its order."""
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in found))


def _reached(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 one reaches through mapping, NAT64 or 6to4; else the address itself."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if address.sixtofour is not None:
            return address.sixtofour
    return address


def _unmapped(address: IPAddress) -> IPAddress:
    """An IPv4-mapped IPv6 address as the IPv4 one (connected to over IPv4, which every host has)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _forbidden(address: IPAddress) -> str | None:
    for network, reason in _FORBIDDEN:
        if address in network:
            return reason
    # Whatever else IANA lists as not globally reachable (the table above names the common ones).
    return None if address.is_global else "not globally reachable"


def _address(host: str) -> IPAddress | None:
    """The host as an address: standard forms, and the ones inet_aton also reads (`0x7f.1`, `2130706433`), which a
    resolver would turn into the same address."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def _is_host_name(host: str) -> bool:
    """DNS letters, digits and hyphens; the last label not all digits (which would make it an address)."""
    labels = host.split(".")
    return 0 < len(host) <= 253 and all(_LABEL.fullmatch(label) for label in labels) and not labels[-1].isdigit()
