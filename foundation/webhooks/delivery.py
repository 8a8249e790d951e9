"""Delivering a webhook: `WebhookPolicy.attempt` checks where it may go (foundation/webhooks/destinations.py) and
makes one POST, or says why it failed; the sender keeps the attempts and their backoff.

The POST goes to addresses already checked. It connects to those addresses
itself, never resolving the host again, and speaks HTTP/1.1 over the socket: the Host header and, for https, the TLS
server name and certificate check are the URL's host. One deadline covers the whole exchange (connect, TLS, request,
answer), of which only the status line is read, at most MAX_ANSWER_BYTES: a receiver cannot hold a delivery longer
or make it read more. Nothing is followed (a redirect is an answer like any other) and no proxy is used."""

from __future__ import annotations

import re
import socket
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from foundation.webhooks.destinations import (
    Destinations,
    Forbidden,
    InvalidWebhookUrl,
    IPAddress,
    Resolver,
    Target,
    parse_url,
    system_resolver,
)

MAX_ANSWER_BYTES = 4096
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([1-5][0-9][0-9])(?: |\r\n)")


class DeliveryFailed(Exception):
    """No HTTP answer within the deadline: the connection, TLS, or the exchange failed."""


@dataclass(frozen=True)
class WebhookPolicy:
    """Where deliveries may go and how long and how often they are tried (each service's `webhook_*` settings)."""

    destinations: Destinations = Destinations()
    timeout_s: float = 5.0
    max_attempts: int = 8
    backoff_s: float = 30.0
    backoff_max_s: float = 3600.0

    def retry_in(self, attempt: int) -> float:
        """The wait after failed attempt number `attempt` (from 1): doubling from `backoff_s`, capped."""
        return min(self.backoff_s * 2.0 ** (attempt - 1), self.backoff_max_s)

    def attempt(self, url: str, body: bytes, headers: Mapping[str, str], resolve: Resolver = system_resolver,
                tls: ssl.SSLContext | None = None) -> str | None:
        """One POST of `body` to `url` if the allow-list lets it reach the addresses it resolves to: None when it
        was answered 2xx, else why not (refused, unreachable, or the answer's status)."""
        try:
            target = parse_url(url)  # checked when it was given too; a row from before that check may not pass
            status = post(target, self.destinations.checked_addresses(target, resolve), body, headers,
                          self.timeout_s, tls)
        except Forbidden as exc:
            return f"refused: {exc}"
        except (InvalidWebhookUrl, DeliveryFailed) as exc:
            return str(exc)
        if 200 <= status < 300:
            return None
        return f"answered HTTP {status}" + (" (redirects are not followed)" if 300 <= status < 400 else "")


def post(target: Target, addresses: Sequence[IPAddress], body: bytes, headers: Mapping[str, str],
         timeout_s: float, tls: ssl.SSLContext | None = None) -> int:
    """POST `body` to the target at the first of `addresses` that accepts a connection; the answer's status."""
    deadline = time.monotonic() + timeout_s
    sock = _connect(addresses, target.port, deadline)
    try:
        if target.scheme == "https":
            sock.settimeout(_left(deadline))
            context = tls or ssl.create_default_context()
            sock = context.wrap_socket(sock, server_hostname=target.host)
        _send(sock, _request(target, body, headers), deadline)
        return _status(sock, deadline)
    except ssl.SSLError as exc:
        reason = getattr(exc, "verify_message", None) or exc.reason or exc
        raise DeliveryFailed(f"TLS with {target.host} failed: {reason}") from None
    except TimeoutError:
        raise DeliveryFailed(f"no answer within {timeout_s:g}s") from None
    except OSError as exc:
        raise DeliveryFailed(f"the connection failed: {exc.strerror or exc}") from None
    finally:
        sock.close()


def _connect(addresses: Sequence[IPAddress], port: int, deadline: float) -> socket.socket:
    failures = []
    for address in addresses:
        try:
            # An address, not a name: nothing is resolved here.
            return socket.create_connection((str(address), port), timeout=_left(deadline))
        except OSError as exc:
            failures.append(f"{address}: {exc.strerror or exc}")
    raise DeliveryFailed("could not connect (" + "; ".join(failures) + ")")


def _request(target: Target, body: bytes, headers: Mapping[str, str]) -> bytes:
    # The URL's parts were checked to be printable ASCII without spaces, and the headers are this service's own.
    lines = [f"POST {target.path} HTTP/1.1", f"Host: {target.host_header}", "User-Agent: dsv4-webhooks",
             "Content-Type: application/json", f"Content-Length: {len(body)}", "Connection: close",
             *(f"{name}: {value}" for name, value in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body


def _send(sock: socket.socket, data: bytes, deadline: float) -> None:
    view = memoryview(data)
    while view:
        sock.settimeout(_left(deadline))
        view = view[sock.send(view):]


def _status(sock: socket.socket, deadline: float) -> int:
    answer = b""
    while b"\r\n" not in answer and len(answer) < MAX_ANSWER_BYTES:
        sock.settimeout(_left(deadline))
        chunk = sock.recv(MAX_ANSWER_BYTES - len(answer))
        if not chunk:
            break
        answer += chunk
    match = _STATUS_LINE.match(answer)
    if match is None:
        raise DeliveryFailed("the answer is not HTTP/1.x")
    return int(match.group(1))


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("out of time")
    return left
