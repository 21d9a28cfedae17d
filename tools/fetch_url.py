"""The `fetch_url` tool: fetch a web page and return its readable text.

Non-public addresses are refused by default, after DNS resolution and on every redirect hop.
The work is done by `tools.fetch` (address policy, the fetcher, body decoding, HTML to text);
this module builds the tool and keeps the names callers import from here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field

from agent.tool import Tool, tool
from tools.fetch.content import content_encodings as content_encodings
from tools.fetch.content import decode_body as decode_body
from tools.fetch.fetcher import DEFAULT_MAX_BYTES as DEFAULT_MAX_BYTES
from tools.fetch.fetcher import DEFAULT_TIMEOUT as DEFAULT_TIMEOUT
from tools.fetch.fetcher import MAX_REDIRECTS as MAX_REDIRECTS
from tools.fetch.fetcher import USER_AGENT as USER_AGENT
from tools.fetch.fetcher import Fetcher, Resolver
from tools.fetch.html_text import html_to_text
from tools.fetch.policy import METADATA_ADDRESSES as METADATA_ADDRESSES
from tools.fetch.policy import FetchRefused, address_problem
from tools.fetch.policy import IPAddress as IPAddress

if TYPE_CHECKING:
    import httpx

__all__ = [
    "FetchRefused",
    "Fetcher",
    "Resolver",
    "address_problem",
    "fetch_url",
    "html_to_text",
    "make_fetch_url",
]


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
    fetcher = Fetcher(
        client,
        allow_private=allow_private,
        resolver=resolver,
        max_bytes=max_bytes,
        timeout=timeout,
        max_redirects=max_redirects,
    )

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
        return await fetcher.fetch(url, max_chars)

    return fetch_url


fetch_url = make_fetch_url()
