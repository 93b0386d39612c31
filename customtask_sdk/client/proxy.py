"""Which proxy reaches a server, from ``HTTPS_PROXY``, ``HTTP_PROXY`` and ``NO_PROXY``.

The rules are those of Go's ``golang.org/x/net/http/httpproxy``, which client-go (and so
kubectl) applies: upper-case names first; a proxy without a scheme is ``http://``;
``localhost`` and loopback addresses are never proxied; ``NO_PROXY`` is a comma-separated
list of ``*``, IP addresses and CIDR ranges, and domain names (``example.com`` matches it
and its subdomains, ``.example.com`` and ``*.example.com`` only subdomains), each
optionally with ``:port``.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from urllib.parse import urlsplit

__all__ = ["proxy_from_environment"]

_IP = ipaddress.IPv4Address | ipaddress.IPv6Address


def proxy_from_environment(url: str, environ: Mapping[str, str] = os.environ) -> str | None:
    """The proxy URL the environment names for ``url``, or ``None`` to connect directly."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        proxy = _first(environ, "HTTPS_PROXY", "https_proxy")
    elif parts.scheme == "http" and not environ.get("REQUEST_METHOD"):  # never under CGI
        proxy = _first(environ, "HTTP_PROXY", "http_proxy")
    else:
        return None
    if not proxy or not parts.hostname:
        return None
    port = str(parts.port or (443 if parts.scheme == "https" else 80))
    if not use_proxy(parts.hostname, port, _first(environ, "NO_PROXY", "no_proxy")):
        return None
    if urlsplit(proxy).scheme.lower() not in ("http", "https", "socks5"):
        proxy = "http://" + proxy
    return proxy


def use_proxy(host: str, port: str, no_proxy: str) -> bool:
    """Whether ``host:port`` is reached through the proxy, given ``NO_PROXY``."""
    host = host.strip().lower()
    ip = _ip(host)
    if host == "localhost" or (ip is not None and ip.is_loopback):
        return False
    for entry in no_proxy.split(","):
        entry = entry.strip().lower()
        if entry == "*":
            return False
        if not entry:
            continue
        if "/" in entry:
            try:
                if ip is not None and ip in ipaddress.ip_network(entry, strict=False):
                    return False
                continue
            except ValueError:
                pass  # not a CIDR range: compared as a name below, as Go does
        name, entry_port = _split_host_port(entry)
        if not name or (entry_port and entry_port != port):
            continue
        entry_ip = _ip(name)
        if entry_ip is not None:
            if entry_ip == ip:
                return False
            continue
        suffix = name[1:] if name.startswith("*.") else name
        if host.endswith(suffix if suffix.startswith(".") else "." + suffix):
            return False
        if not suffix.startswith(".") and host == suffix:
            return False
    return True


def _first(environ: Mapping[str, str], *names: str) -> str:
    return next((value for name in names if (value := environ.get(name, ""))), "")


def _ip(text: str) -> _IP | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _split_host_port(entry: str) -> tuple[str, str]:
    """``host:port`` (``[v6]:port``) split as Go's net.SplitHostPort, else the entry whole."""
    if entry.startswith("["):
        end = entry.find("]")
        if end > 0 and entry[end + 1 : end + 2] == ":":
            return entry[1:end], entry[end + 2 :]
        return entry, ""
    name, colon, port = entry.rpartition(":")
    if not colon or ":" in name:  # no port, or a bare IPv6 address
        return entry, ""
    return name, port
