"""Address policy for `fetch_url`: which URLs and addresses may be fetched.

Only http and https URLs are accepted. Loopback, private, link-local, multicast, reserved,
unspecified and cloud metadata addresses are refused, also when embedded in an IPv6 address or
written in inet_aton shorthand ("127.1", "0x7f000001").
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from typing import TYPE_CHECKING, TypeAlias

from agent.tool import ToolRetry

if TYPE_CHECKING:
    import httpx

__all__ = [
    "METADATA_ADDRESSES",
    "FetchRefused",
    "IPAddress",
    "address_problem",
    "checked_url",
    "literal_ip",
    "parse_address",
    "refuse_local_name",
    "refuse_non_public",
]

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address

METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack, ...
        ipaddress.ip_address("fd00:ec2::254"),  # AWS over IPv6
        ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
    }
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
_INET_ATON = re.compile(r"[0-9a-fA-FxX.]+")


class FetchRefused(ToolRetry):
    """The URL was refused before any connection was made (scheme or address not allowed)."""


def address_problem(ip: IPAddress) -> str | None:
    """Say why `ip` may not be fetched, or return None for a public internet address.

    IPv6 addresses that embed an IPv4 one (IPv4-mapped, NAT64, 6to4, Teredo) are judged by the
    embedded address as well.

    Args:
        ip: The address to judge.
    """
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata service address"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return address_problem(ip.ipv4_mapped)
        if ip in _NAT64:
            return address_problem(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        embedded = ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is not None and (why := address_problem(embedded)):
            return f"{why} (embedded in {ip})"
    for flag, why in (
        ("is_loopback", "a loopback address"),
        ("is_link_local", "a link-local address"),
        ("is_multicast", "a multicast address"),
        ("is_unspecified", "an unspecified address"),
        ("is_reserved", "a reserved address"),
        ("is_private", "a private network address"),
    ):
        if getattr(ip, flag):
            return why
    if not ip.is_global:
        return "not a public internet address"
    return None


def literal_ip(host: str) -> IPAddress | None:
    """Return the address a host string denotes by itself, as the system resolver would read it.

    Args:
        host: The host part of a URL, without brackets.

    Returns:
        The address, or None when `host` is a name to be resolved.
    """
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    # inet_aton shorthand ("127.1", "0x7f000001", "2130706433") is honoured by getaddrinfo, and
    # so by any HTTP client; it must be judged as the address it stands for.
    if _INET_ATON.fullmatch(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def parse_address(text: str) -> IPAddress:
    """Parse an address as a resolver returns it, dropping any IPv6 zone ("fe80::1%eth0").

    Args:
        text: The address.

    Raises:
        ValueError: When `text` is not an IP address.
    """
    return ipaddress.ip_address(text.split("%", 1)[0])


def checked_url(text: str) -> httpx.URL:
    """Parse a URL given by the model, adding "https://" when the scheme is left out.

    Args:
        text: The URL.

    Raises:
        FetchRefused: When the scheme is not http or https.
        ToolRetry: When the URL cannot be parsed or has no host name.
    """
    import httpx

    text = text.strip()
    if not _SCHEME.match(text):
        text = "https://" + text  # models often leave the scheme out
    try:
        url = httpx.URL(text)
    except httpx.InvalidURL as exc:
        raise ToolRetry(f"invalid URL {text!r}: {exc}") from exc
    if url.scheme not in ("http", "https"):
        raise FetchRefused(
            f"refusing {text!r}: only http:// and https:// URLs can be fetched, not {url.scheme}:"
        )
    if not url.raw_host:
        raise ToolRetry(f"invalid URL {text!r}: it has no host name")
    return url


def refuse_local_name(url: httpx.URL, host: str) -> None:
    """Refuse "localhost" and its subdomains before any lookup.

    Args:
        url: The URL being fetched, for the message.
        host: Its host name.

    Raises:
        FetchRefused: When `host` names this machine.
    """
    name = host.rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        raise FetchRefused(f"refusing {url}: {host} is this machine (loopback)")


def refuse_non_public(
    url: httpx.URL, host: str, addresses: Iterable[IPAddress], resolved: bool
) -> None:
    """Refuse the URL unless every address of its host is a public internet address.

    Args:
        url: The URL being fetched, for the message.
        host: Its host, a name or a literal address.
        addresses: The addresses `host` stands for.
        resolved: Whether `host` is a name that was resolved (not a literal address).

    Raises:
        FetchRefused: At the first address that is not public.
    """
    for ip in addresses:
        why = address_problem(ip)
        if why:
            shown = f"{host} resolves to {ip}, which" if resolved else host
            raise FetchRefused(
                f"refusing {url}: {shown} is {why}; only public internet addresses can be fetched"
            )
