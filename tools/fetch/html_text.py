"""HTML to readable text: the title first, then headings (as Markdown) and paragraphs."""

from __future__ import annotations

import re
from html.parser import HTMLParser

__all__ = ["html_to_text"]

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
