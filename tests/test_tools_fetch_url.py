"""fetch_url: text extraction, limits, redirects, and the private-address guard.

No packet leaves 127.0.0.1: "public" hosts resolve (fake resolver) to addresses whose connections
a test transport hands to the local server; refusals are asserted to happen before any transport.
"""

from __future__ import annotations

import ipaddress
import itertools
import re
import socket
import ssl
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pydantic
import pytest

from agent.tool import Tool, ToolRetry
from tests.httpfixture import LocalHTTPServer
from tools.fetch_url import FetchRefused, address_problem, html_to_text, make_fetch_url

PUBLIC_IP = "93.184.216.34"
PUBLIC_IP_2 = "93.184.216.35"

PAGE = b"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Test  Page</title>
<style>body { color: red }</style><script>var secret = "do not show";</script></head>
<body>
<nav><a href="/">Home</a> | <a href="/about">About</a></nav>
<header><h1>Main &amp; Heading</h1></header>
<p>First   paragraph with <b>bold</b> text.</p>
<p>Second paragraph.<br>After a break.</p>
<h2>Lists</h2>
<ul><li>one</li><li>two</li></ul>
<table><tr><th>Name</th><th>Value</th></tr><tr><td>pi</td><td>3.14</td></tr></table>
<pre>def f():
    return 1</pre>
<noscript>Enable JavaScript</noscript>
<footer>Copyright footer</footer>
</body></html>"""

PAGE_TEXT = """Test Page

# Main & Heading

First paragraph with bold text.

Second paragraph.
After a break.

## Lists

- one
- two

Name | Value
pi | 3.14

def f():
    return 1"""


# --- helpers ------------------------------------------------------------------------------


class LoopbackTransport(httpx.AsyncBaseTransport):
    """Hands every connection to the local server, recording where the tool meant to connect.

    `targets` holds (URL host, Host header, SNI name) per request, so a test can check that the
    tool connected to the address it vetted while keeping the name for Host and TLS.
    """

    def __init__(
        self,
        port: int,
        unreachable: frozenset[str] = frozenset(),
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.port = port
        self.unreachable = unreachable
        self.tls = tls
        self.targets: list[tuple[str, str, str | None]] = []
        self._inner = httpx.AsyncHTTPTransport(verify=tls or True)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        sni = request.extensions.get("sni_hostname")
        self.targets.append((request.url.host, request.headers["host"], sni))
        if request.url.host in self.unreachable:
            raise httpx.ConnectError("unreachable", request=request)
        # Over TLS the scheme and the SNI extension stay, so the certificate is checked against
        # the name the tool passed on, exactly as it would be for the real address.
        scheme = "https" if self.tls is not None else "http"
        request.url = request.url.copy_with(scheme=scheme, host="127.0.0.1", port=self.port)
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


class NoNetworkTransport(httpx.AsyncBaseTransport):
    """Fails the test if the tool tries to send anything."""

    def __init__(self) -> None:
        self.used = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.used = True
        raise AssertionError(f"the tool tried to connect: {request.url}")


class FakeResolver:
    """Resolves names from a table; records every lookup."""

    def __init__(self, table: dict[str, list[str]] | None = None) -> None:
        self.table = table or {}
        self.calls: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.table[host]


async def call(t: Tool, **args: Any) -> Any:
    return await t.invoke(t.validate(args))


@pytest.fixture
def server() -> Iterator[LocalHTTPServer]:
    with LocalHTTPServer() as s:
        yield s


@pytest.fixture
async def no_network() -> Any:
    transport = NoNetworkTransport()
    async with httpx.AsyncClient(transport=transport) as client:
        yield client, transport


def local_tool(**kw: Any) -> Tool:
    """A tool that may reach the local server (127.0.0.1 is loopback, so allow_private)."""
    return make_fetch_url(allow_private=True, **kw)


# --- content ------------------------------------------------------------------------------


async def test_html_becomes_readable_text(server: LocalHTTPServer) -> None:
    server.route("/page", PAGE, content_type="text/html; charset=utf-8")
    out = await call(local_tool(), url=server.url("/page"))
    assert out == {"url": server.url("/page"), "content_type": "text/html", "text": PAGE_TEXT}
    assert server.requests[0].headers["accept"].startswith("text/html")


async def test_plain_text_and_json_pass_through(server: LocalHTTPServer) -> None:
    server.route("/a.txt", b"line one\n\n  line two  ", content_type="text/plain")
    server.route("/a.json", b'{"a": [1, 2], "b": "<p>x</p>"}', content_type="application/json")
    tool = local_tool()
    txt = await call(tool, url=server.url("/a.txt"))
    assert (txt["content_type"], txt["text"]) == ("text/plain", "line one\n\n  line two  ")
    js = await call(tool, url=server.url("/a.json"))
    assert (js["content_type"], js["text"]) == (
        "application/json",
        '{"a": [1, 2], "b": "<p>x</p>"}',
    )


async def test_max_chars_truncates(server: LocalHTTPServer) -> None:
    server.route("/long.txt", b"x" * 5000, content_type="text/plain")
    out = await call(local_tool(), url=server.url("/long.txt"), max_chars=300)
    assert out["text"] == "x" * 300
    assert out["truncated"] is True


async def test_size_limit_stops_reading_an_endless_body(server: LocalHTTPServer) -> None:
    # Without the byte limit this body never ends and the fetch would time out.
    server.route("/endless.txt", itertools.repeat(b"a" * 65_536), content_type="text/plain")
    tool = local_tool(max_bytes=20_000, timeout=5)
    started = time.monotonic()
    out = await call(tool, url=server.url("/endless.txt"), max_chars=50_000)
    assert time.monotonic() - started < 3
    assert out["text"] == "a" * 20_000  # cut by bytes, not by max_chars
    assert out["truncated"] is True


async def test_html_parsing_stops_early_on_huge_pages(server: LocalHTTPServer) -> None:
    body = b"<html><title>Big</title><body>" + b"<p>para</p>" * 150_000 + b"</body></html>"
    server.route("/big.html", body, content_type="text/html")
    out = await call(local_tool(), url=server.url("/big.html"), max_chars=500)
    assert out["text"].startswith("Big\n\npara\n\npara")
    assert len(out["text"]) <= 500
    assert out["truncated"] is True


async def test_charsets_are_honoured(server: LocalHTTPServer) -> None:
    server.route(
        "/latin1.txt", "Grüße".encode("latin-1"), content_type="text/plain; charset=iso-8859-1"
    )
    server.route(
        "/meta.html",
        '<html><head><meta charset="windows-1252"></head><body><p>café</p></body></html>'.encode(
            "cp1252"
        ),
        content_type="text/html",
    )
    tool = local_tool()
    assert (await call(tool, url=server.url("/latin1.txt")))["text"] == "Grüße"
    assert (await call(tool, url=server.url("/meta.html")))["text"] == "café"


async def test_binary_content_is_refused(server: LocalHTTPServer) -> None:
    server.route("/img.png", b"\x89PNG\r\n\x1a\n\x00\x00", content_type="image/png")
    with pytest.raises(ToolRetry, match="image/png, which cannot be read as text"):
        await call(local_tool(), url=server.url("/img.png"))


async def test_missing_content_type_is_sniffed(server: LocalHTTPServer) -> None:
    server.route("/x", b"<!doctype html><title>T</title><p>hi</p>", content_type="")
    out = await call(local_tool(), url=server.url("/x"))
    assert out["text"] == "T\n\nhi"


# --- HTTP behaviour -----------------------------------------------------------------------


async def test_http_error_status_is_a_clear_error(server: LocalHTTPServer) -> None:
    with pytest.raises(ToolRetry, match=r"answered HTTP 404 Not Found"):
        await call(local_tool(), url=server.url("/missing"))


async def test_redirects_are_followed_and_final_url_reported(server: LocalHTTPServer) -> None:
    server.route("/a", status=301, headers={"Location": "/b"})
    server.route("/b", status=302, headers={"Location": server.url("/c?x=1")})
    server.route("/c", b"done", content_type="text/plain")
    out = await call(local_tool(), url=server.url("/a"))
    assert out["text"] == "done"
    assert out["url"] == server.url("/c?x=1")
    assert server.paths() == ["/a", "/b", "/c"]


async def test_too_many_redirects(server: LocalHTTPServer) -> None:
    server.route("/loop", status=302, headers={"Location": "/loop"})
    with pytest.raises(ToolRetry, match=r"too many redirects \(more than 5\)"):
        await call(local_tool(), url=server.url("/loop"))
    assert len(server.requests) == 6


async def test_redirect_without_location(server: LocalHTTPServer) -> None:
    server.route("/r", status=302)
    with pytest.raises(ToolRetry, match="without a Location"):
        await call(local_tool(), url=server.url("/r"))


async def test_slow_server_hits_the_time_limit(server: LocalHTTPServer) -> None:
    server.route("/slow", b"late", delay=5)
    started = time.monotonic()
    with pytest.raises(ToolRetry, match=r"(did not answer within|took longer than) 0.3 s"):
        await call(local_tool(timeout=0.3), url=server.url("/slow"))
    assert time.monotonic() - started < 2


async def test_trickling_body_hits_the_overall_time_limit(server: LocalHTTPServer) -> None:
    # Each chunk arrives within the read timeout, but the whole body would take 10 s.
    server.route("/trickle", [b"x" * 10] * 100, chunk_delay=0.1, content_type="text/plain")
    started = time.monotonic()
    with pytest.raises(ToolRetry, match=r"took longer than 0.5 s"):
        await call(local_tool(timeout=0.5), url=server.url("/trickle"))
    assert time.monotonic() - started < 2


async def test_connection_refused_is_a_clear_error() -> None:
    with LocalHTTPServer() as s:
        dead = s.url("/")
    with pytest.raises(ToolRetry, match=re.escape("could not connect to 127.0.0.1")):
        await call(local_tool(timeout=2), url=dead)


async def test_injected_client_is_left_open(server: LocalHTTPServer) -> None:
    server.route("/t", b"ok", content_type="text/plain")
    async with httpx.AsyncClient() as client:
        out = await call(local_tool(client=client), url=server.url("/t"))
        assert out["text"] == "ok"
        assert not client.is_closed


# --- the guard: refusals before any connection ---------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://ftp.example.com/file",
        "gopher://example.com/",
        "javascript:alert(1)",
        "data:text/plain,hello",
    ],
)
async def test_non_http_schemes_are_refused(url: str, no_network: Any) -> None:
    client, transport = no_network
    resolver = FakeResolver()
    with pytest.raises(FetchRefused, match="only http:// and https:// URLs"):
        await call(make_fetch_url(client=client, resolver=resolver), url=url)
    assert not transport.used
    assert resolver.calls == []


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://localhost/", "loopback"),
        ("http://LOCALHOST./admin", "loopback"),
        ("http://api.localhost/", "loopback"),
        ("http://[::1]/", "loopback"),
        ("http://127.0.0.1:8080/", "loopback"),
        ("http://127.1/", "loopback"),
        ("http://2130706433/", "loopback"),
        ("http://0x7f000001/", "loopback"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),
        ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
        ("http://[fd00:ec2::254]/", "cloud metadata"),
        ("http://100.100.100.200/latest/meta-data/", "cloud metadata"),
        ("http://10.0.0.1/", "private"),
        ("http://172.16.5.4/", "private"),
        ("http://192.168.1.1/", "private"),
        ("http://[fc00::1]/", "private"),
        ("http://169.254.1.1/", "link-local"),
        ("http://[fe80::1]/", "link-local"),
        ("http://224.0.0.1/", "multicast"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://[::]/", "unspecified"),
        ("http://240.0.0.1/", "reserved"),
        ("http://100.64.0.1/", "not a public internet address"),
        ("http://[2002:7f00:1::]/", "loopback"),
        ("https://10.0.0.1/", "private"),
    ],
)
async def test_default_refuses_non_public_addresses(url: str, why: str, no_network: Any) -> None:
    client, transport = no_network
    resolver = FakeResolver()
    with pytest.raises(FetchRefused, match=why):
        await call(make_fetch_url(client=client, resolver=resolver), url=url)
    assert not transport.used
    assert resolver.calls == []  # literal addresses and localhost need no lookup


async def test_default_refuses_the_running_local_server(server: LocalHTTPServer) -> None:
    server.route("/", b"secret", content_type="text/plain")
    with pytest.raises(FetchRefused, match=re.escape("127.0.0.1 is a loopback address")):
        await call(make_fetch_url(), url=server.url("/"))
    assert server.requests == []


async def test_hostname_resolving_to_private_address_is_refused(no_network: Any) -> None:
    client, transport = no_network
    resolver = FakeResolver({"intranet.example": ["10.1.2.3"]})
    tool = make_fetch_url(client=client, resolver=resolver)
    with pytest.raises(
        FetchRefused, match=re.escape("intranet.example resolves to 10.1.2.3, which is a private")
    ):
        await call(tool, url="https://intranet.example/wiki")
    assert resolver.calls == [("intranet.example", 443)]
    assert not transport.used


async def test_every_resolved_address_is_checked(no_network: Any) -> None:
    client, transport = no_network
    resolver = FakeResolver({"mixed.example": [PUBLIC_IP, "::1"]})
    with pytest.raises(FetchRefused, match=r"resolves to ::1, which is a loopback"):
        await call(make_fetch_url(client=client, resolver=resolver), url="http://mixed.example/")
    assert not transport.used


async def test_unresolvable_host_is_a_clear_error(no_network: Any) -> None:
    client, _ = no_network
    tool = make_fetch_url(client=client, resolver=FakeResolver())
    with pytest.raises(ToolRetry, match=re.escape("could not resolve host 'nowhere.example'")):
        await call(tool, url="http://nowhere.example/")


async def test_public_host_is_fetched_through_the_checked_address(
    server: LocalHTTPServer,
) -> None:
    server.route("/page", b"public content", content_type="text/plain")
    resolver = FakeResolver({"public.example": [PUBLIC_IP]})
    transport = LoopbackTransport(server.port)
    async with httpx.AsyncClient(transport=transport) as client:
        tool = make_fetch_url(client=client, resolver=resolver)
        out = await call(tool, url="http://public.example:8080/page")
        https_out = await call(tool, url="public.example/page")  # scheme added: https
    assert out == {
        "url": "http://public.example:8080/page",
        "content_type": "text/plain",
        "text": "public content",
    }
    assert https_out["url"] == "https://public.example/page"
    # Connected to the vetted address, named the host in Host and (for https) in SNI.
    assert transport.targets == [
        (PUBLIC_IP, "public.example:8080", None),
        (PUBLIC_IP, "public.example", "public.example"),
    ]
    assert [r.host for r in server.requests] == ["public.example:8080", "public.example"]
    assert resolver.calls == [("public.example", 8080), ("public.example", 443)]


async def test_next_address_is_tried_when_one_is_unreachable(server: LocalHTTPServer) -> None:
    server.route("/", b"up", content_type="text/plain")
    resolver = FakeResolver({"multi.example": [PUBLIC_IP, PUBLIC_IP_2]})
    transport = LoopbackTransport(server.port, unreachable=frozenset({PUBLIC_IP}))
    async with httpx.AsyncClient(transport=transport) as client:
        out = await call(
            make_fetch_url(client=client, resolver=resolver), url="http://multi.example/"
        )
    assert out["text"] == "up"
    assert [t[0] for t in transport.targets] == [PUBLIC_IP, PUBLIC_IP_2]


@pytest.mark.parametrize(("cert_name", "ok"), [("public.example", True), ("other.example", False)])
async def test_https_to_the_checked_address_verifies_the_host_name(
    cert_name: str, ok: bool
) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(cert_name).configure_cert(server_tls)
    client_tls = ssl.create_default_context()
    ca.configure_trust(client_tls)
    resolver = FakeResolver({"public.example": [PUBLIC_IP]})
    with LocalHTTPServer(ssl_context=server_tls) as server:
        server.route("/", b"over tls", content_type="text/plain")
        transport = LoopbackTransport(server.port, tls=client_tls)
        async with httpx.AsyncClient(transport=transport) as client:
            tool = make_fetch_url(client=client, resolver=resolver, timeout=5)
            if ok:
                out = await call(tool, url="https://public.example/")
                assert out["text"] == "over tls"
            else:
                with pytest.raises(ToolRetry, match="CERTIFICATE_VERIFY_FAILED"):
                    await call(tool, url="https://public.example/")
    assert transport.targets == [(PUBLIC_IP, "public.example", "public.example")]


@pytest.mark.parametrize(
    ("location", "why"),
    [
        ("http://127.0.0.1:{port}/secret", "loopback"),
        ("http://internal.example/secret", "internal.example resolves to 10.0.0.5"),
        ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
        ("file:///etc/passwd", "only http:// and https://"),
    ],
)
async def test_redirect_to_a_refused_target_is_refused(
    location: str, why: str, server: LocalHTTPServer
) -> None:
    location = location.format(port=server.port)
    server.route("/start", status=302, headers={"Location": location})
    server.route("/secret", b"internal data", content_type="text/plain")
    resolver = FakeResolver({"public.example": [PUBLIC_IP], "internal.example": ["10.0.0.5"]})
    transport = LoopbackTransport(server.port)
    async with httpx.AsyncClient(transport=transport) as client:
        tool = make_fetch_url(client=client, resolver=resolver)
        with pytest.raises(FetchRefused, match=why):
            await call(tool, url="http://public.example/start")
    assert server.paths() == ["/start"]  # the redirect target was never contacted
    assert [t[0] for t in transport.targets] == [PUBLIC_IP]


async def test_allow_private_permits_loopback(server: LocalHTTPServer) -> None:
    server.route("/", b"local", content_type="text/plain")
    out = await call(make_fetch_url(allow_private=True), url=server.url("/"))
    assert out["text"] == "local"


async def test_system_resolver_is_used_for_names(server: LocalHTTPServer) -> None:
    # "localhost" comes from /etc/hosts: the real getaddrinfo path, still no packet off-host.
    server.route("/", b"via name", content_type="text/plain")
    out = await call(make_fetch_url(allow_private=True), url=f"http://localhost:{server.port}/")
    assert out["text"] == "via name"
    assert server.requests[0].host == f"localhost:{server.port}"


@pytest.mark.parametrize(
    "args",
    [{"url": ""}, {"url": "http://e.example", "max_chars": 10}, {"max_chars": 500}],
)
def test_bad_arguments_are_validation_errors(args: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        make_fetch_url().validate(args)


# --- units --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        (PUBLIC_IP, True),
        ("2606:2800:220:1:248:1893:25c8:1946", True),
        ("64:ff9b::5db8:d822", True),  # NAT64 form of 93.184.216.34
        ("64:ff9b::a00:1", False),  # NAT64 form of 10.0.0.1
        ("::ffff:10.0.0.1", False),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", False),  # Teredo, client 192.0.2.45 (TEST-NET)
        # Teredo with a public client: 2001::/23 is IETF protocol space, not global.
        ("2001:0:4136:e378:8000:63bf:a247:27dd", False),
        ("100.100.100.200", False),
        ("198.18.0.1", False),
        ("192.0.2.1", False),
    ],
)
def test_address_problem(address: str, allowed: bool) -> None:
    ip = ipaddress.ip_address(address)
    assert (address_problem(ip) is None) is allowed, address_problem(ip)


def test_html_to_text_limit_and_entities() -> None:
    text, stopped = html_to_text("<p>a &lt; b &eacute;</p>" + "<p>filler</p>" * 10_000, limit=50)
    assert text.startswith("a < b é\n\nfiller")
    assert stopped is True
    assert html_to_text("<p>x</p>") == ("x", False)


def test_html_to_text_survives_broken_markup() -> None:
    text, _ = html_to_text("<p>open <b>bold <i>both</p> <div>after</span></div> <script>x")
    assert text == "open bold both\n\nafter"


def test_schema() -> None:
    fn = make_fetch_url().openai_schema()["function"]
    assert fn["name"] == "fetch_url"
    assert fn["parameters"]["required"] == ["url"]
    assert fn["parameters"]["properties"]["max_chars"]["default"] == 8000


async def test_layered_compression_is_bounded_at_every_layer(server: LocalHTTPServer) -> None:
    """gzip inside gzip: 2.5 KB on the wire would be 2 GB if every layer were inflated whole."""
    import gzip

    inner = gzip.compress(b"a" * (200 * 1024 * 1024), compresslevel=9)  # 200 MB of "a"
    bomb = gzip.compress(inner, compresslevel=9)
    assert len(bomb) < 10_000
    server.route(
        "/bomb.txt", bomb, content_type="text/plain", headers={"Content-Encoding": "gzip, gzip"}
    )
    tool = local_tool(max_bytes=30_000)
    started = time.monotonic()
    out = await call(tool, url=server.url("/bomb.txt"), max_chars=50_000)
    assert time.monotonic() - started < 5
    assert out["text"] == "a" * 30_000
    assert out["truncated"] is True
    assert server.requests[0].headers["accept-encoding"] == "gzip, deflate"


@pytest.mark.parametrize("coding", ["gzip", "deflate", "gzip, identity"])
async def test_compressed_pages_are_decoded(server: LocalHTTPServer, coding: str) -> None:
    import gzip
    import zlib

    text = b"hello " * 100
    body = zlib.compress(text) if coding == "deflate" else gzip.compress(text)
    server.route("/c.txt", body, content_type="text/plain", headers={"Content-Encoding": coding})
    out = await call(local_tool(), url=server.url("/c.txt"))
    assert out["text"] == text.decode()


async def test_an_unknown_content_encoding_is_a_clear_error(server: LocalHTTPServer) -> None:
    server.route("/z.txt", b"???", content_type="text/plain", headers={"Content-Encoding": "zstd"})
    with pytest.raises(ToolRetry, match="Content-Encoding 'zstd'"):
        await call(local_tool(), url=server.url("/z.txt"))


# --- the split into tools.fetch: import paths, and behaviours pinned at the seams ----------


def test_names_importable_from_tools_fetch_url() -> None:
    import importlib

    from tools.fetch import content, fetcher, html_text, policy

    module = importlib.import_module("tools.fetch_url")  # `tools.fetch_url` is the tool itself
    assert module.FetchRefused is policy.FetchRefused
    assert module.address_problem is policy.address_problem
    assert module.html_to_text is html_text.html_to_text
    assert module.content_encodings is content.content_encodings
    assert module.decode_body is content.decode_body
    assert module.Fetcher is fetcher.Fetcher
    assert (module.DEFAULT_MAX_BYTES, module.DEFAULT_TIMEOUT, module.MAX_REDIRECTS) == (
        2_000_000,
        15.0,
        5,
    )
    for name in module.__all__:
        assert hasattr(module, name), name


def test_importing_tools_does_not_import_httpx() -> None:
    import subprocess
    import sys
    from pathlib import Path

    code = "import sys, tools, tools.fetch_url; print('httpx' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert out.stdout.split() == ["False"]


async def test_a_sync_resolver_is_used_and_repeated_addresses_are_tried_once() -> None:
    calls: list[tuple[str, int]] = []

    def resolver(host: str, port: int) -> list[str]:
        calls.append((host, port))
        return [PUBLIC_IP, PUBLIC_IP, "93.184.216.36", "93.184.216.37", "93.184.216.38"]

    every = frozenset({PUBLIC_IP, "93.184.216.36", "93.184.216.37", "93.184.216.38"})
    transport = LoopbackTransport(1, unreachable=every)
    async with httpx.AsyncClient(transport=transport) as client:
        tool = make_fetch_url(client=client, resolver=resolver)
        with pytest.raises(ToolRetry, match=re.escape("could not connect to many.example")):
            await call(tool, url="http://many.example/")
    assert calls == [("many.example", 80)]
    # Duplicates dropped, then at most three addresses tried, in the resolver's order.
    assert [t[0] for t in transport.targets] == [PUBLIC_IP, "93.184.216.36", "93.184.216.37"]


async def test_a_bad_address_from_the_resolver_is_a_clear_error(no_network: Any) -> None:
    client, transport = no_network
    tool = make_fetch_url(client=client, resolver=FakeResolver({"odd.example": ["not-an-ip"]}))
    with pytest.raises(
        ToolRetry, match=re.escape("the resolver gave a bad address for 'odd.example'")
    ):
        await call(tool, url="http://odd.example/")
    assert not transport.used


async def test_a_scoped_ipv6_answer_is_judged_without_its_zone(no_network: Any) -> None:
    client, transport = no_network
    resolver = FakeResolver({"scoped.example": ["fe80::1%eth0"]})
    with pytest.raises(FetchRefused, match=r"resolves to fe80::1, which is a link-local"):
        await call(make_fetch_url(client=client, resolver=resolver), url="http://scoped.example/")
    assert not transport.used


def test_decode_body_raw_deflate_and_corrupt_data() -> None:
    import zlib

    from tools.fetch_url import content_encodings, decode_body

    squeezer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    raw_deflate = squeezer.compress(b"plain words") + squeezer.flush()
    assert decode_body(raw_deflate, ["deflate"], 100) == (b"plain words", False)
    assert decode_body(zlib.compress(b"x" * 50), ["deflate"], 10) == (b"x" * 10, True)
    with pytest.raises(ToolRetry, match="gzip encoding is corrupt"):
        decode_body(b"not gzip", ["gzip"], 100)
    assert content_encodings(" GZIP , identity,, x-gzip ") == ["gzip", "x-gzip"]
