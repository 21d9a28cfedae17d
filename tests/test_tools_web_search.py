"""web_search with a fake DDGS-like backend returning ddgs's documented result shapes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pydantic
import pytest
from ddgs.exceptions import DDGSException, RatelimitException, TimeoutException

from agent.tool import Tool, ToolRetry
from tools.web_search import MAX_SNIPPET_CHARS, make_web_search

# Shapes as ddgs 9 returns them (ddgs README, "text()" and "news()"; ddgs/results.py
# TextResult and NewsResult).
TEXT_RESULTS = [
    {
        "title": "News, sport, celebrities and gossip | The Sun",
        "href": "https://www.thesun.co.uk/",
        "body": "Get the latest news, exclusives, sport, celebrities, showbiz, politics, "
        "business and lifestyle from The Sun",
    },
    {
        "title": "Sun - Wikipedia",
        "href": "https://en.wikipedia.org/wiki/Sun",
        "body": "The Sun is the star at the centre of the Solar System.",
    },
    {"title": "No link", "href": "", "body": "dropped: a result without a URL is useless"},
]
NEWS_RESULTS = [
    {
        "date": "2024-07-03T16:25:22+00:00",
        "title": "Murdoch's Sun Endorses Starmer's Labour Day Before UK Vote",
        "body": "Rupert Murdoch's Sun newspaper endorsed Keir Starmer.",
        "url": "https://www.msn.com/en-us/money/other/murdoch-s-sun-endorses/ar-BB1plQwl",
        "image": "https://img-s-msn-com.akamaized.net/tenant/amp/entityid/BB1plZil.img",
        "source": "Bloomberg on MSN.com",
    }
]


class FakeDDGS:
    """Records calls; returns canned lists or raises a canned exception."""

    calls: list[tuple[str, str, dict[str, Any]]]

    def __init__(self, text: Any = (), news: Any = (), error: Exception | None = None) -> None:
        self._text, self._news, self._error = list(text), list(news), error
        self.calls = []

    def _answer(self, kind: str, query: str, kw: dict[str, Any]) -> list[dict[str, Any]]:
        self.calls.append((kind, query, kw))
        if self._error is not None:
            raise self._error
        return self._text if kind == "text" else self._news

    def text(self, query: str, **kw: Any) -> list[dict[str, Any]]:
        return self._answer("text", query, kw)

    def news(self, query: str, **kw: Any) -> list[dict[str, Any]]:
        return self._answer("news", query, kw)


def search_tool(fake: FakeDDGS) -> Tool:
    return make_web_search(lambda: fake)


async def call(t: Tool, **args: Any) -> Any:
    return await t.invoke(t.validate(args))


async def test_text_results_are_mapped_and_compact() -> None:
    fake = FakeDDGS(text=TEXT_RESULTS)
    out = await call(search_tool(fake), query="sun")
    assert out == [
        {
            "title": "News, sport, celebrities and gossip | The Sun",
            "url": "https://www.thesun.co.uk/",
            "snippet": "Get the latest news, exclusives, sport, celebrities, showbiz, politics, "
            "business and lifestyle from The Sun",
        },
        {
            "title": "Sun - Wikipedia",
            "url": "https://en.wikipedia.org/wiki/Sun",
            "snippet": "The Sun is the star at the centre of the Solar System.",
        },
    ]
    assert fake.calls == [
        ("text", "sun", {"region": "us-en", "timelimit": None, "max_results": 5}),
    ]


async def test_news_results_keep_date_and_source() -> None:
    fake = FakeDDGS(news=NEWS_RESULTS)
    out = await call(search_tool(fake), query="sun", kind="news", timelimit="w")
    assert out == [
        {
            "title": "Murdoch's Sun Endorses Starmer's Labour Day Before UK Vote",
            "url": "https://www.msn.com/en-us/money/other/murdoch-s-sun-endorses/ar-BB1plQwl",
            "snippet": "Rupert Murdoch's Sun newspaper endorsed Keir Starmer.",
            "date": "2024-07-03T16:25:22+00:00",
            "source": "Bloomberg on MSN.com",
        }
    ]
    assert fake.calls[0][0] == "news"
    assert fake.calls[0][2]["timelimit"] == "w"


async def test_arguments_are_passed_and_results_clamped() -> None:
    many = [{"title": f"t{i}", "href": f"https://e.example/{i}", "body": "b"} for i in range(9)]
    fake = FakeDDGS(text=many)
    out = await call(search_tool(fake), query="q", max_results=3, region="DE-de")
    assert [h["url"] for h in out] == [f"https://e.example/{i}" for i in range(3)]
    assert fake.calls[0][2] == {"region": "de-de", "timelimit": None, "max_results": 3}


async def test_long_snippets_are_clipped() -> None:
    fake = FakeDDGS(text=[{"title": "T", "href": "https://e.example", "body": "word " * 500}])
    (hit,) = await call(search_tool(fake), query="q")
    assert len(hit["snippet"]) == MAX_SNIPPET_CHARS
    assert hit["snippet"].endswith("…")


async def test_empty_results_are_a_clear_error() -> None:
    with pytest.raises(ToolRetry, match=r"no results for 'zxqv qqq'; try other words"):
        await call(search_tool(FakeDDGS(text=[])), query="zxqv qqq")


async def test_ddgs_no_results_exception_is_the_same_clear_error() -> None:
    # ddgs 9 raises DDGSException("No results found.") instead of returning [].
    fake = FakeDDGS(error=DDGSException("No results found."))
    with pytest.raises(ToolRetry, match=r"no results for 'zxqv'; try other words"):
        await call(search_tool(fake), query="zxqv")


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (RatelimitException("202 Ratelimit"), "rate-limiting us; wait a minute"),
        (TimeoutException("timed out"), "the search timed out"),
        (DDGSException("https://html.duckduckgo.com 403 Forbidden"), "web search failed: "),
    ],
)
async def test_ddgs_exceptions_become_clear_tool_errors(error: Exception, message: str) -> None:
    with pytest.raises(ToolRetry, match=message):
        await call(search_tool(FakeDDGS(error=error)), query="q")


@pytest.mark.parametrize(
    "args",
    [
        {"query": "q", "max_results": 0},
        {"query": "q", "max_results": 21},
        {"query": "q", "timelimit": "h"},
        {"query": "q", "kind": "images"},
        {"query": "q", "region": "germany"},
        {"query": ""},
    ],
)
def test_bad_arguments_are_validation_errors(args: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        make_web_search(FakeDDGS).validate(args)


def test_schema() -> None:
    fn = make_web_search(FakeDDGS).openai_schema()["function"]
    assert fn["name"] == "web_search"
    props = fn["parameters"]["properties"]
    assert set(props) == {"query", "max_results", "region", "timelimit", "kind"}
    assert props["kind"]["enum"] == ["text", "news"]
    assert fn["parameters"]["required"] == ["query"]


def test_importing_tools_does_not_import_ddgs() -> None:
    code = "import sys, tools; print('ddgs' in sys.modules, 'web_search' in tools.BUILTIN_TOOLS)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert out.stdout.split() == ["False", "True"]
