"""The `web_search` tool: web and news search through the `ddgs` metasearch library.

`ddgs` is imported only when a search runs, so importing `tools` does not pay for it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import Field

from agent.tool import Tool, ToolRetry, tool

__all__ = ["make_web_search", "web_search"]

MAX_SNIPPET_CHARS = 300
"""Snippets are cut to this length: some engines return whole article intros."""

DEFAULT_TIMEOUT = 10
"""Seconds ddgs waits for its search engines."""


def _default_ddgs() -> Any:
    from ddgs import DDGS

    return DDGS(timeout=DEFAULT_TIMEOUT)


def _clip(text: Any, limit: int = MAX_SNIPPET_CHARS) -> str:
    s = " ".join(str(text or "").split())
    return s if len(s) <= limit else s[: limit - 1].rstrip() + "…"


def _text_hit(r: dict[str, Any]) -> dict[str, str]:
    return {
        "title": _clip(r.get("title"), 200),
        "url": str(r.get("href") or r.get("url") or ""),
        "snippet": _clip(r.get("body")),
    }


def _news_hit(r: dict[str, Any]) -> dict[str, str]:
    hit = {
        "title": _clip(r.get("title"), 200),
        "url": str(r.get("url") or r.get("href") or ""),
        "snippet": _clip(r.get("body")),
    }
    for key in ("date", "source"):
        if r.get(key):
            hit[key] = str(r[key])
    return hit


def make_web_search(ddgs_factory: Callable[[], Any] | None = None) -> Tool:
    """Build a `web_search` tool around a DDGS-like search backend.

    Args:
        ddgs_factory: Returns an object with `text(query, **kw)` and `news(query, **kw)` methods
            returning lists of result dicts, as `ddgs.DDGS` does. Called once per search.
            Defaults to `ddgs.DDGS(timeout=10)`.

    Returns:
        The tool.
    """
    factory = ddgs_factory or _default_ddgs

    @tool(name="web_search", timeout=60)
    def web_search(
        query: Annotated[str, Field(min_length=1, max_length=500)],
        max_results: Annotated[int, Field(ge=1, le=20)] = 5,
        region: Annotated[str, Field(pattern=r"^[a-zA-Z]{2}-[a-zA-Z]{2,3}$")] = "us-en",
        timelimit: Literal["d", "w", "m", "y"] | None = None,
        kind: Literal["text", "news"] = "text",
    ) -> list[dict[str, str]]:
        """Search the web and return the top results with title, url and snippet.

        Args:
            query: What to search for, as you would type it into a search engine.
            max_results: How many results to return (1-20).
            region: Region and language as country-language, e.g. "us-en" (the default),
                "de-de", "cn-zh".
            timelimit: Only results from the last day ("d"), week ("w"), month ("m") or
                year ("y").
            kind: "text" for web pages, "news" for news articles (adds date and source).
        """
        from ddgs.exceptions import DDGSException, RatelimitException, TimeoutException

        try:
            backend = factory()
            search = backend.news if kind == "news" else backend.text
            raw = search(query, region=region.lower(), timelimit=timelimit, max_results=max_results)
        except RatelimitException as exc:
            raise ToolRetry(
                "the search engines are rate-limiting us; wait a minute before searching "
                f"again, or answer without searching ({exc})"
            ) from exc
        except TimeoutException as exc:
            raise ToolRetry(
                f"the search timed out ({exc}); try again, perhaps with a shorter query"
            ) from exc
        except DDGSException as exc:
            # ddgs reports an empty result set as an exception, not as [].
            if "no results" in str(exc).lower():
                raw = []
            else:
                raise ToolRetry(f"web search failed: {exc}") from exc
        to_hit = _news_hit if kind == "news" else _text_hit
        hits = [to_hit(r) for r in (raw or []) if isinstance(r, dict)]
        hits = [h for h in hits if h["url"]][:max_results]
        if not hits:
            raise ToolRetry(f"no results for {query!r}; try other words")
        return hits

    return web_search


web_search = make_web_search()
