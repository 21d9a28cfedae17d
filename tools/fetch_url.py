"""The `fetch_url` tool: fetch a web page and return its readable text.

Non-public addresses are refused by default, after DNS resolution and on every redirect hop.
"""

from __future__ import annotations

import asyncio
import codecs
import inspect
import ipaddress
import re
import socket
import zlib
from collections.abc import Awaitable, Callable, Iterable
from html.parser import HTMLParser
from typing import TYPE_CHECKING, Annotated, Any, TypeAlias

from pydantic import Field

from agent.tool import Tool, ToolRetry, tool
from tools._http import describe_http_error, new_client

if TYPE_CHECKING:
    import httpx

__all__ = [
    "FetchRefused",
    "Resolver",
    "address_problem",
    "fetch_url",
    "html_to_text",
    "make_fetch_url",
]

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver: TypeAlias = Callable[[str, int], Awaitable[Iterable[str]] | Iterable[str]]
"""Maps (host, port) to IP address strings; may be sync or async."""

DEFAULT_MAX_BYTES = 2_000_000
DEFAULT_TIMEOUT = 15.0
MAX_REDIRECTS = 5
USER_AGENT = "Mozilla/5.0 (compatible; qwenloop-fetch/0.1)"
_ACCEPT = "text/html,application/xhtml+xml,text/plain;q=0.9,application/json;q=0.9,*/*;q=0.5"
_REDIRECTS = frozenset({301, 302, 303, 307, 308})

METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack, ...
        ipaddress.ip_address("fd00:ec2::254"),  # AWS over IPv6
        ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
    }
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


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


def _literal_ip(host: str) -> IPAddress | None:
    """Return the address a host string denotes by itself, as the system resolver would read it."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    # inet_aton shorthand ("127.1", "0x7f000001", "2130706433") is honoured by getaddrinfo, and
    # so by any HTTP client; it must be judged as the address it stands for.
    if re.fullmatch(r"[0-9a-fA-FxX.]+", host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _parse_address(text: str) -> IPAddress:
    return ipaddress.ip_address(text.split("%", 1)[0])


async def _system_resolver(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


# --- HTML to text ---------------------------------------------------------------------------

_SKIP_TAGS = frozenset(
    [
        "script",
        "style",
        "noscript",
        "template",
        "svg",
        "math",
        "nav",
        "footer",
        "iframe",
        "object",
        "canvas",
    ]
)
_PARAGRAPH_TAGS = frozenset(
    [
        "p",
        "blockquote",
        "pre",
        "table",
        "ul",
        "ol",
        "dl",
        "figure",
        "section",
        "article",
        "main",
        "header",
        "aside",
        "details",
        "form",
        "fieldset",
        "address",
        "hr",
    ]
)
_LINE_TAGS = frozenset(
    ["div", "br", "tr", "dt", "dd", "figcaption", "summary", "caption", "li", "option", "label"]
)
_HEADINGS = {f"h{n}": n for n in range(1, 7)}
_SPACES = re.compile(r"\s+")


class _TextExtractor(HTMLParser):
    """Collects readable text: headings as Markdown, paragraphs separated by blank lines."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.title: str | None = None
        self._title_parts: list[str] | None = None
        self.out: list[str] = []
        self.size = 0
        self._tail = ""
        self._skip = 0
        self._pre = 0

    def _emit(self, text: str) -> None:
        if text:
            self.out.append(text)
            self.size += len(text)
            self._tail = (self._tail + text)[-2:]

    def _break(self, lines: int) -> None:
        if not self.out:
            return
        if not self._pre:
            while self.out and self.out[-1].endswith((" ", "\t")):
                last = self.out.pop().rstrip(" \t")
                if last:
                    self.out.append(last)
                    break
            self._tail = "".join(self.out[-2:])[-2:]
        have = len(self._tail) - len(self._tail.rstrip("\n"))
        if self.out and lines > have:
            self._emit("\n" * (lines - have))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP_TAGS:
            self._skip += 1
            return
        if self._skip:
            return
        if tag == "title" and self.title is None and self._title_parts is None:
            self._title_parts = []
        elif tag in _HEADINGS:
            self._break(2)
            self._emit("#" * _HEADINGS[tag] + " ")
        elif tag == "li":
            self._break(1)
            self._emit("- ")
        elif tag in ("td", "th"):
            if self._tail and not self._tail.endswith("\n"):
                self._emit(" | ")
        elif tag in _PARAGRAPH_TAGS:
            self._break(2)
        elif tag in _LINE_TAGS:
            self._break(1)
        if tag == "pre":
            self._pre += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS:
            self._skip = max(0, self._skip - 1)
            return
        if self._skip:
            return
        if tag == "title" and self._title_parts is not None and self.title is None:
            self.title = _SPACES.sub(" ", "".join(self._title_parts)).strip()
            self._title_parts = None
        elif tag == "pre":
            self._pre = max(0, self._pre - 1)
            self._break(2)
        elif tag in _HEADINGS or tag in _PARAGRAPH_TAGS:
            self._break(2)
        elif tag in _LINE_TAGS:
            self._break(1)

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        if self._title_parts is not None:
            self._title_parts.append(data)
            return
        if self._pre:
            self._emit(data)
            return
        text = _SPACES.sub(" ", data)
        if not self._tail or self._tail.endswith((" ", "\n")):
            text = text.lstrip(" ")
        self._emit(text)

    def text(self) -> str:
        body = re.sub(r"\n{3,}", "\n\n", "".join(self.out)).strip()
        if self.title and not body.startswith(self.title):
            return f"{self.title}\n\n{body}" if body else self.title
        return body


def html_to_text(html: str, limit: int | None = None) -> tuple[str, bool]:
    """Extract readable text from HTML: title first, then headings and paragraphs.

    Scripts, styles, navigation and footers are dropped; headings become Markdown `#` lines, list
    items `- ` lines and table cells are joined with ` | `.

    Args:
        html: The page.
        limit: Stop parsing once this many characters of text are collected.

    Returns:
        The text, and whether parsing stopped early because of `limit`.
    """
    parser = _TextExtractor()
    step = 65_536
    for start in range(0, len(html), step):
        parser.feed(html[start : start + step])
        if limit is not None and parser.size > limit:
            return parser.text(), True
    parser.close()
    return parser.text(), False


# --- the tool -----------------------------------------------------------------------------------

_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.I)
_JSON_TYPES = ("application/json", "application/ld+json", "application/javascript")
_XML_TYPES = ("application/xml", "application/rss+xml", "application/atom+xml")


def _charset(declared: str | None, body: bytes, is_html: bool) -> str:
    candidates = [declared]
    if is_html:
        m = _META_CHARSET.search(body[:4096])
        candidates.append(m.group(1).decode("ascii") if m else None)
    for name in candidates:
        if name:
            try:
                return codecs.lookup(name).name
            except LookupError:
                continue
    return "utf-8"


def _kind(content_type: str, body: bytes) -> str | None:
    """Return "html", "text", or None for content we do not turn into text."""
    if content_type in ("text/html", "application/xhtml+xml"):
        return "html"
    if (
        content_type.startswith("text/")
        or content_type in _JSON_TYPES
        or content_type in _XML_TYPES
        or content_type.endswith(("+json", "+xml"))
    ):
        return "text"
    if content_type and content_type != "application/octet-stream":
        return None
    head = body[:1024]
    if b"\x00" in head:
        return None
    return "html" if re.search(rb"<(!doctype html|html|head|body)\b", head, re.I) else "text"


def make_fetch_url(
    client: httpx.AsyncClient | None = None,
    allow_private: bool = False,
    resolver: Resolver | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    timeout: float = DEFAULT_TIMEOUT,
    max_redirects: int = MAX_REDIRECTS,
) -> Tool:
    """Build a `fetch_url` tool.

    Host names are resolved first and every address is checked (loopback, private, link-local,
    multicast, reserved, unspecified and cloud metadata addresses are refused). The connection
    is then made to the checked address itself, with the name kept for the Host header and TLS
    (SNI, certificate check), so a second DNS answer cannot swap in another address (DNS
    rebinding). Redirects are followed by hand, at most `max_redirects`, each hop checked again.

    Args:
        client: An httpx client to send requests with (the caller keeps ownership). It should not
            use a proxy, or the address checks only vet the URL, not the connection. By default
            each call opens its own client, ignoring proxy environment variables.
        allow_private: Allow loopback, private, link-local and other non-public addresses
            (tests, intranet deployments). Cloud metadata addresses are then allowed too.
        resolver: Resolves (host, port) to IP address strings, sync or async; defaults to the
            event loop's `getaddrinfo`.
        max_bytes: Stop reading a body after this many (decoded) bytes.
        timeout: Seconds for the whole fetch, redirects and body included.
        max_redirects: Redirects followed before giving up.

    Returns:
        The tool.
    """
    resolve: Resolver = resolver or _system_resolver

    def checked_url(text: str) -> httpx.URL:
        import httpx

        text = text.strip()
        if not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", text):
            text = "https://" + text  # models often leave the scheme out
        try:
            url = httpx.URL(text)
        except httpx.InvalidURL as exc:
            raise ToolRetry(f"invalid URL {text!r}: {exc}") from exc
        if url.scheme not in ("http", "https"):
            raise FetchRefused(
                f"refusing {text!r}: only http:// and https:// URLs can be fetched, "
                f"not {url.scheme}:"
            )
        if not url.raw_host:
            raise ToolRetry(f"invalid URL {text!r}: it has no host name")
        return url

    async def addresses_for(url: httpx.URL) -> list[IPAddress]:
        host = url.raw_host.decode("ascii")
        literal = _literal_ip(host)
        if literal is not None:
            found = [literal]
        else:
            name = host.rstrip(".").lower()
            if not allow_private and (name == "localhost" or name.endswith(".localhost")):
                raise FetchRefused(f"refusing {url}: {host} is this machine (loopback)")
            port = url.port or (443 if url.scheme == "https" else 80)
            try:
                answer = resolve(host, port)
                if inspect.isawaitable(answer):
                    answer = await answer
                found = []
                for text in answer:
                    ip = _parse_address(text)
                    if ip not in found:
                        found.append(ip)
            except (OSError, UnicodeError) as exc:
                raise ToolRetry(f"could not resolve host {host!r}: {exc}") from exc
            except ValueError as exc:
                raise ToolRetry(f"the resolver gave a bad address for {host!r}: {exc}") from exc
            if not found:
                raise ToolRetry(f"could not resolve host {host!r}: no addresses")
        if not allow_private:
            for ip in found:
                why = address_problem(ip)
                if why:
                    shown = host if literal is not None else f"{host} resolves to {ip}, which"
                    raise FetchRefused(
                        f"refusing {url}: {shown} is {why}; only public internet addresses "
                        "can be fetched"
                    )
        return found

    async def open_hop(c: httpx.AsyncClient, url: httpx.URL) -> httpx.Response:
        import httpx

        host = url.raw_host.decode("ascii")
        literal = _literal_ip(host) is not None
        last: Exception = ConnectionError("no address to connect to")
        for ip in (await addresses_for(url))[:3]:
            # Connect to the address that was checked; keep the name for Host and TLS (SNI and
            # certificate verification), so the server sees an ordinary request.
            extensions: dict[str, Any] = {}
            if url.scheme == "https" and not literal:
                extensions["sni_hostname"] = host
            request = c.build_request(
                "GET",
                url.copy_with(host=str(ip)),
                headers={
                    "Host": url.netloc.decode("ascii"),
                    "Accept": _ACCEPT,
                    "Accept-Encoding": "gzip, deflate",  # what decode_body can bound
                },
                extensions=extensions,
                timeout=timeout,
            )
            try:
                return await c.send(request, stream=True, follow_redirects=False)
            except httpx.ConnectError as exc:
                last = exc
        raise ToolRetry(describe_http_error(last, host, timeout)) from last

    async def read_limited(response: httpx.Response) -> tuple[bytes, bool]:
        # Raw bytes, decoded here: httpx would inflate each chunk through every
        # Content-Encoding layer at once, so "gzip, gzip" turns kilobytes into gigabytes.
        chunks: list[bytes] = []
        size = 0
        cut = False
        async for chunk in response.aiter_raw():
            room = max_bytes - size
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
        body, inflated_cut = await asyncio.to_thread(decode_body, raw, encodings, max_bytes)
        return body, cut or inflated_cut

    async def run(c: httpx.AsyncClient, start: httpx.URL, max_chars: int) -> dict[str, Any]:
        import httpx

        url = start
        for _ in range(max_redirects + 1):
            response = await open_hop(c, url)
            try:
                status = response.status_code
                if status in _REDIRECTS:
                    location = response.headers.get("location")
                    if not location:
                        raise ToolRetry(f"{url} redirected (HTTP {status}) without a Location")
                    try:
                        target = str(url.join(location))
                    except httpx.InvalidURL as exc:
                        raise ToolRetry(f"{url} redirected to an invalid URL: {exc}") from exc
                    url = checked_url(target)
                    continue
                if status >= 300:
                    phrase = f" {response.reason_phrase}" if response.reason_phrase else ""
                    raise ToolRetry(f"{url} answered HTTP {status}{phrase}")
                body, cut = await read_limited(response)
                content_type = (
                    response.headers.get("content-type", "").split(";")[0].strip().lower()
                )
                declared = response.charset_encoding
            finally:
                await response.aclose()
            kind = _kind(content_type, body)
            if kind is None:
                raise ToolRetry(
                    f"{url} is {content_type}, which cannot be read as text; only HTML, plain "
                    "text and JSON pages are supported"
                )
            text = body.decode(_charset(declared, body, kind == "html"), errors="replace")
            if kind == "html":
                text, stopped = await asyncio.to_thread(html_to_text, text, max_chars)
                cut = cut or stopped
            if len(text) > max_chars:
                text, cut = text[:max_chars].rstrip(), True
            result: dict[str, Any] = {
                "url": str(url),
                "content_type": content_type or ("text/html" if kind == "html" else "text"),
                "text": text,
            }
            if cut:
                result["truncated"] = True
            return result
        raise ToolRetry(f"too many redirects (more than {max_redirects}) from {start}")

    @tool(name="fetch_url", timeout=timeout + 5)
    async def fetch_url(
        url: Annotated[str, Field(min_length=1, max_length=4000)],
        max_chars: Annotated[int, Field(ge=200, le=50_000)] = 8000,
    ) -> dict[str, Any]:
        """Fetch a web page (http or https) and return its readable text.

        HTML is reduced to its title, headings and paragraphs; plain text and JSON are returned
        as they are. Only public internet addresses can be fetched.

        Args:
            url: The address, e.g. "https://example.com/page".
            max_chars: Return at most this many characters of text.
        """
        import httpx

        start = checked_url(url)
        try:
            async with asyncio.timeout(timeout):
                if client is not None:
                    return await run(client, start, max_chars)
                async with new_client(timeout, USER_AGENT) as c:
                    return await run(c, start, max_chars)
        except TimeoutError as exc:
            raise ToolRetry(f"fetching {start} took longer than {timeout:g} s") from exc
        except httpx.HTTPError as exc:
            raise ToolRetry(describe_http_error(exc, start.host, timeout)) from exc

    return fetch_url


fetch_url = make_fetch_url()


def content_encodings(header: str) -> list[str]:
    """Return the codings of a Content-Encoding header that need undoing, in applied order.

    Raises:
        ToolRetry: A coding other than gzip or deflate.
    """
    codings = [c.strip().lower() for c in header.split(",") if c.strip()]
    codings = [c for c in codings if c != "identity"]
    for coding in codings:
        if coding not in ("gzip", "x-gzip", "deflate"):
            raise ToolRetry(f"the page is sent with Content-Encoding {coding!r}, not supported")
    return codings


def decode_body(raw: bytes, codings: list[str], limit: int) -> tuple[bytes, bool]:
    """Undo `codings` (last applied first), never holding more than `limit` bytes of any layer.

    Returns:
        The decoded body, and whether it was cut at `limit`.
    """
    data = raw
    cut = False
    for coding in reversed(codings):
        if coding == "deflate" and data[:1] != b"\x78":  # raw deflate, no zlib header
            decoder = zlib.decompressobj(-zlib.MAX_WBITS)
        else:
            decoder = zlib.decompressobj(16 + zlib.MAX_WBITS if coding != "deflate" else 15)
        try:
            out = decoder.decompress(data, limit + 1)
        except zlib.error as exc:
            raise ToolRetry(f"the page's {coding} encoding is corrupt: {exc}") from None
        if len(out) > limit:
            out, cut = out[:limit], True
        data = out
    return data, cut
