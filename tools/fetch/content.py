"""Turning a fetched body into text: Content-Encoding within a bound, content kind, charset."""

from __future__ import annotations

import codecs
import re
import zlib

from agent.tool import ToolRetry

__all__ = ["charset", "content_encodings", "content_kind", "decode_body"]

_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.I)
_HTML_START = re.compile(rb"<(!doctype html|html|head|body)\b", re.I)
_JSON_TYPES = ("application/json", "application/ld+json", "application/javascript")
_XML_TYPES = ("application/xml", "application/rss+xml", "application/atom+xml")


def content_encodings(header: str) -> list[str]:
    """Return the codings of a Content-Encoding header that need undoing, in applied order.

    Args:
        header: The header's value, e.g. "gzip" or "gzip, identity".

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

    Args:
        raw: The body as sent.
        codings: The codings applied to it, as `content_encodings` returns them.
        limit: The most bytes any decoded layer may hold.

    Returns:
        The decoded body, and whether it was cut at `limit`.

    Raises:
        ToolRetry: When a layer is not valid gzip or deflate data.
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


def charset(declared: str | None, body: bytes, is_html: bool) -> str:
    """Return the codec to decode a body with.

    Args:
        declared: The charset of the Content-Type header, if any.
        body: The body, searched for a `<meta charset>` when it is HTML.
        is_html: Whether the body is HTML.

    Returns:
        The first known codec of the declared and the `<meta>` charset, else "utf-8".
    """
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


def content_kind(content_type: str, body: bytes) -> str | None:
    """Say how a body is turned into text.

    Args:
        content_type: The media type, lower case without parameters ("" when none was sent).
        body: The body, sniffed when the media type says nothing useful.

    Returns:
        "html", "text", or None for content that is not turned into text.
    """
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
    return "html" if _HTML_START.search(head) else "text"
