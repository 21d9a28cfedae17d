"""The `Fetcher`: fetch one URL under the address policy and return its readable text.

Host names are resolved first and every address is checked. The connection is then made to the
checked address itself, with the name kept for the Host header and TLS (SNI, certificate check),
so a second DNS answer cannot swap in another address (DNS rebinding). Redirects are followed by
hand, each hop checked again. Bodies are read raw and bounded, then decoded here.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

from agent.tool import ToolRetry
from tools._http import describe_http_error, new_client
from tools.fetch.content import charset, content_encodings, content_kind, decode_body
from tools.fetch.html_text import html_to_text
from tools.fetch.policy import (
    IPAddress,
    checked_url,
    literal_ip,
    parse_address,
    refuse_local_name,
    refuse_non_public,
)

if TYPE_CHECKING:
    import httpx

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_TIMEOUT",
    "MAX_REDIRECTS",
    "USER_AGENT",
    "Fetcher",
    "Page",
    "Resolver",
]

Resolver: TypeAlias = Callable[[str, int], Awaitable[Iterable[str]] | Iterable[str]]
"""Maps (host, port) to IP address strings; may be sync or async."""

DEFAULT_MAX_BYTES = 2_000_000
DEFAULT_TIMEOUT = 15.0
MAX_REDIRECTS = 5
USER_AGENT = "Mozilla/5.0 (compatible; qwenloop-fetch/0.1)"
_ACCEPT = "text/html,application/xhtml+xml,text/plain;q=0.9,application/json;q=0.9,*/*;q=0.5"
_ACCEPT_ENCODING = "gzip, deflate"  # what decode_body can bound
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_ADDRESSES_TRIED = 3


async def _system_resolver(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


@dataclass(frozen=True)
class Page:
    """A final (non-redirect) answer, read and closed.

    Attributes:
        url: The URL it was fetched from.
        content_type: The media type, lower case without parameters ("" when none was sent).
        declared_charset: The charset of the Content-Type header, if any.
        body: The body, Content-Encoding undone, at most `Fetcher.max_bytes` long.
        cut: Whether the body was cut at `Fetcher.max_bytes`.
    """

    url: httpx.URL
    content_type: str
    declared_charset: str | None
    body: bytes
    cut: bool


class Fetcher:
    """Fetches a URL and returns its readable text, refusing non-public addresses.

    Attributes:
        client: The httpx client to send requests with, or None for a fresh one per fetch.
        allow_private: Whether loopback, private and other non-public addresses are allowed.
        resolver: Resolves (host, port) to IP address strings, sync or async.
        max_bytes: The most bytes of a body read, and of each layer decoded.
        timeout: Seconds for a whole fetch, redirects and body included.
        max_redirects: Redirects followed before giving up.
    """

    def __init__(
        self,
        client: httpx.AsyncClient | None = None,
        *,
        allow_private: bool = False,
        resolver: Resolver | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        timeout: float = DEFAULT_TIMEOUT,
        max_redirects: int = MAX_REDIRECTS,
    ) -> None:
        self.client = client
        self.allow_private = allow_private
        self.resolver: Resolver = resolver or _system_resolver
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.max_redirects = max_redirects

    async def fetch(self, url: str, max_chars: int) -> dict[str, Any]:
        """Fetch `url` within the time limit and return its text.

        Args:
            url: The URL as the model wrote it; "https://" is added when the scheme is missing.
            max_chars: Return at most this many characters of text.

        Returns:
            `url` (the final one, after redirects), `content_type` and `text`, plus
            `truncated: True` when the text was cut.

        Raises:
            FetchRefused: When a URL or address on the way is not allowed.
            ToolRetry: When the page cannot be fetched or read as text.
        """
        import httpx

        start = checked_url(url)
        try:
            async with asyncio.timeout(self.timeout):
                if self.client is not None:
                    return await self.follow(self.client, start, max_chars)
                async with new_client(self.timeout, USER_AGENT) as c:
                    return await self.follow(c, start, max_chars)
        except TimeoutError as exc:
            raise ToolRetry(f"fetching {start} took longer than {self.timeout:g} s") from exc
        except httpx.HTTPError as exc:
            raise ToolRetry(describe_http_error(exc, start.host, self.timeout)) from exc

    async def follow(
        self, c: httpx.AsyncClient, start: httpx.URL, max_chars: int
    ) -> dict[str, Any]:
        """Fetch `start`, following at most `max_redirects` redirects, each hop checked again.

        Args:
            c: The client to send requests with.
            start: The checked URL to begin with.
            max_chars: Return at most this many characters of text.

        Returns:
            The result of `decode` for the final page.

        Raises:
            ToolRetry: On too many redirects, a bad redirect or an error status.
        """
        url = start
        for _ in range(self.max_redirects + 1):
            response = await self.open_hop(c, url)
            try:
                target = self.redirect_target(url, response)
                if target is not None:
                    url = target
                    continue
                page = await self._read_page(url, response)
            finally:
                await response.aclose()
            return await self.decode(page, max_chars)
        raise ToolRetry(f"too many redirects (more than {self.max_redirects}) from {start}")

    async def addresses_for(self, url: httpx.URL) -> list[IPAddress]:
        """Return the addresses to connect to for `url`, each checked against the policy.

        Args:
            url: A checked URL.

        Raises:
            FetchRefused: When the host is, or resolves to, an address that is not allowed.
            ToolRetry: When the host cannot be resolved.
        """
        host = url.raw_host.decode("ascii")
        literal = literal_ip(host)
        if literal is not None:
            found = [literal]
        else:
            if not self.allow_private:
                refuse_local_name(url, host)
            port = url.port or (443 if url.scheme == "https" else 80)
            found = await self.resolve(host, port)
        if not self.allow_private:
            refuse_non_public(url, host, found, resolved=literal is None)
        return found

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        """Resolve a host name with the resolver, dropping repeated addresses.

        Args:
            host: The name.
            port: The port to be connected to.

        Raises:
            ToolRetry: When the name does not resolve, or the resolver gives a bad address.
        """
        try:
            answer = self.resolver(host, port)
            if inspect.isawaitable(answer):
                answer = await answer
            found: list[IPAddress] = []
            for text in answer:
                ip = parse_address(text)
                if ip not in found:
                    found.append(ip)
        except (OSError, UnicodeError) as exc:
            raise ToolRetry(f"could not resolve host {host!r}: {exc}") from exc
        except ValueError as exc:
            raise ToolRetry(f"the resolver gave a bad address for {host!r}: {exc}") from exc
        if not found:
            raise ToolRetry(f"could not resolve host {host!r}: no addresses")
        return found

    async def open_hop(self, c: httpx.AsyncClient, url: httpx.URL) -> httpx.Response:
        """Send one GET for `url` to its checked addresses in turn, without following redirects.

        Args:
            c: The client to send requests with.
            url: A checked URL.

        Returns:
            The streamed response of the first address that accepts the connection.

        Raises:
            ToolRetry: When no address can be connected to.
        """
        import httpx

        host = url.raw_host.decode("ascii")
        sni = host if url.scheme == "https" and literal_ip(host) is None else None
        last: Exception = ConnectionError("no address to connect to")
        for ip in (await self.addresses_for(url))[:_ADDRESSES_TRIED]:
            request = self._pinned_request(c, url, ip, sni)
            try:
                return await c.send(request, stream=True, follow_redirects=False)
            except httpx.ConnectError as exc:
                last = exc
        raise ToolRetry(describe_http_error(last, host, self.timeout)) from last

    def _pinned_request(
        self, c: httpx.AsyncClient, url: httpx.URL, ip: IPAddress, sni: str | None
    ) -> httpx.Request:
        # Connect to the address that was checked; keep the name for Host and TLS (SNI and
        # certificate verification), so the server sees an ordinary request.
        extensions: dict[str, Any] = {}
        if sni is not None:
            extensions["sni_hostname"] = sni
        return c.build_request(
            "GET",
            url.copy_with(host=str(ip)),
            headers={
                "Host": url.netloc.decode("ascii"),
                "Accept": _ACCEPT,
                "Accept-Encoding": _ACCEPT_ENCODING,
            },
            extensions=extensions,
            timeout=self.timeout,
        )

    def redirect_target(self, url: httpx.URL, response: httpx.Response) -> httpx.URL | None:
        """Return the checked URL a redirect points to, or None when `response` is no redirect.

        Args:
            url: The URL that was fetched.
            response: Its response.

        Raises:
            FetchRefused: When the target's scheme is not allowed.
            ToolRetry: When the redirect has no Location or an invalid one.
        """
        import httpx

        status = response.status_code
        if status not in _REDIRECTS:
            return None
        location = response.headers.get("location")
        if not location:
            raise ToolRetry(f"{url} redirected (HTTP {status}) without a Location")
        try:
            target = str(url.join(location))
        except httpx.InvalidURL as exc:
            raise ToolRetry(f"{url} redirected to an invalid URL: {exc}") from exc
        return checked_url(target)

    async def _read_page(self, url: httpx.URL, response: httpx.Response) -> Page:
        status = response.status_code
        if status >= 300:
            phrase = f" {response.reason_phrase}" if response.reason_phrase else ""
            raise ToolRetry(f"{url} answered HTTP {status}{phrase}")
        body, cut = await self.read_limited(response)
        content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        return Page(url, content_type, response.charset_encoding, body, cut)

    async def read_limited(self, response: httpx.Response) -> tuple[bytes, bool]:
        """Read at most `max_bytes` of a body, then undo its Content-Encoding within that bound.

        Args:
            response: A streamed response.

        Returns:
            The decoded body, and whether it was cut at `max_bytes`.

        Raises:
            ToolRetry: When the Content-Encoding is unsupported or corrupt.
        """
        # Raw bytes, decoded here: httpx would inflate each chunk through every
        # Content-Encoding layer at once, so "gzip, gzip" turns kilobytes into gigabytes.
        chunks: list[bytes] = []
        size = 0
        cut = False
        async for chunk in response.aiter_raw():
            room = self.max_bytes - size
            if len(chunk) > room:
                chunks.append(chunk[:room])
                cut = True
                break
            chunks.append(chunk)
            size += len(chunk)
        raw = b"".join(chunks)
        encodings = content_encodings(response.headers.get("content-encoding", ""))
        if not encodings:
            return raw, cut
        # Inflating is CPU work: off the event loop, so other runs are not stalled.
        body, inflated_cut = await asyncio.to_thread(decode_body, raw, encodings, self.max_bytes)
        return body, cut or inflated_cut

    async def decode(self, page: Page, max_chars: int) -> dict[str, Any]:
        """Turn a page's body into the tool's result.

        Args:
            page: The page, read and closed.
            max_chars: Return at most this many characters of text.

        Raises:
            ToolRetry: When the content is not text (images, archives, ...).
        """
        kind = content_kind(page.content_type, page.body)
        if kind is None:
            raise ToolRetry(
                f"{page.url} is {page.content_type}, which cannot be read as text; only HTML, "
                "plain text and JSON pages are supported"
            )
        codec = charset(page.declared_charset, page.body, kind == "html")
        text = page.body.decode(codec, errors="replace")
        cut = page.cut
        if kind == "html":
            text, stopped = await asyncio.to_thread(html_to_text, text, max_chars)
            cut = cut or stopped
        if len(text) > max_chars:
            text, cut = text[:max_chars].rstrip(), True
        result: dict[str, Any] = {
            "url": str(page.url),
            "content_type": page.content_type or ("text/html" if kind == "html" else "text"),
            "text": text,
        }
        if cut:
            result["truncated"] = True
        return result
