"""Where HTTP side effects may go: the operator's allow-list, checked twice.

`http_request` checks a URL when the model proposes it (a refusal is a tool result the model
sees, and nothing is queued); the dispatcher checks it again just before sending, because the
allow-list may have shrunk since. Both checks parse the URL with httpx, the same parser that
sends the request, so the host that was checked is the host that is called (two URL parsers
disagreeing about `http://a\\@b/` is a classic way around an allow-list).

Entries are exact: `host` allows any port, `host:port` one port. There is no wildcard, so a
misconfiguration cannot open the whole internet.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

import httpx

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_DEFAULT_PORTS = {"http": 80, "https": 443}
EGRESS_DENIED = "egress_denied"
"""The stable code of a refused destination, on the step and on a failed outbox row."""


@dataclass(frozen=True, slots=True)
class AllowedHost:
    host: str
    """Lowercase name without a trailing dot, or an IP address in its canonical form."""
    port: int | None
    """None allows every port."""


def _canonical_host(host: str) -> str | None:
    host = host.lower().rstrip(".")
    try:
        return ipaddress.ip_address(host).compressed
    except ValueError:
        pass
    if len(host) > 253 or not all(_LABEL.match(label) for label in host.split(".")):
        return None
    return host


def parse_allowed_host(entry: str) -> AllowedHost:
    """`host`, `host:port`, `[v6]` or `[v6]:port`; a ValueError names what is wrong."""
    text = entry.strip()
    if "*" in text:
        raise ValueError(f"allow-list entry {entry!r}: wildcards are not allowed, name each host")
    host, port_text = text, ""
    if text.startswith("["):
        inner, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"allow-list entry {entry!r} is not host, host:port or [v6]:port")
        host, port_text = inner, rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    canonical = _canonical_host(host)
    if canonical is None:
        raise ValueError(f"allow-list entry {entry!r} is not a host name or an IP address")
    port: int | None = None
    if port_text or text.endswith(":"):
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise ValueError(f"allow-list entry {entry!r} has an invalid port")
        port = int(port_text)
    return AllowedHost(canonical, port)


class EgressPolicy:
    """The allow-list, parsed once; `refusal` says why a URL may not be called, or None."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.allowed = tuple(parse_allowed_host(e) for e in entries)

    def refusal(self, url: str) -> str | None:
        if any(ch <= " " or ch in "\x7f\\" for ch in url):
            return "the URL contains whitespace, control characters or backslashes"
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL as exc:
            return f"the URL is not valid: {exc}"
        if parsed.scheme not in _DEFAULT_PORTS:
            return f"scheme {parsed.scheme or '(none)'!r} is not allowed: http and https only"
        if parsed.userinfo:
            return "credentials in the URL are not allowed"
        host = _canonical_host(parsed.raw_host.decode("ascii", "replace"))
        if host is None:
            return "the URL has no valid host"
        port = parsed.port or _DEFAULT_PORTS[parsed.scheme]
        if not 1 <= port <= 65535:
            return f"port {port} is not valid"
        if not any(a.host == host and a.port in (None, port) for a in self.allowed):
            if not self.allowed:
                return "no host is allowed (GARRISON_HTTP_ALLOW_HOSTS is empty)"
            return f"host {host}:{port} is not on the allow-list (GARRISON_HTTP_ALLOW_HOSTS)"
        return None
