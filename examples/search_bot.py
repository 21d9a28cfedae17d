"""A search bot that cites its sources: the `search` switch and the shipped `search_bot` template.

Run it against DashScope:

    DASHSCOPE_API_KEY=... python examples/search_bot.py "Who won the last Tour de France?"
    DASHSCOPE_API_KEY=... python examples/search_bot.py --search local "..."

`--search server` uses Qwen's own web search (`enable_search`), `local` gives the model the
`web_search` tool (DuckDuckGo and friends through `ddgs`), and `auto` (the default) picks server
search where the provider and model support it. Any other endpoint works through
QWENLOOP_PROVIDER, QWENLOOP_BASE_URL, QWENLOOP_API_KEY and QWENLOOP_MODEL.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence

from agent import Agent, AgentError, Template, Tool

DEFAULT_QUESTION = "What are the latest Qwen models?"

# Brackets, parentheses, quotes and sentence punctuation end a URL in running text.
_URL = re.compile(r"https?://[^\s<>\[\]()\"'`]+")


def cited_urls(text: str) -> list[str]:
    """Return the URLs in `text`, first occurrence first, without trailing punctuation."""
    urls = (u.rstrip(".,;:!?") for u in _URL.findall(text))
    return list(dict.fromkeys(urls))


def main(argv: Sequence[str] | None = None, *, tools: Sequence[Tool] = ()) -> int:
    """Answer the question on the command line; `tools` replaces backends (e.g. web_search)."""
    parser = argparse.ArgumentParser(description="Ask a question the web can answer.")
    parser.add_argument("question", nargs="*", help=f"default: {DEFAULT_QUESTION!r}")
    parser.add_argument("--search", choices=["server", "local", "auto"], default="auto")
    args = parser.parse_args(argv)
    question = " ".join(args.question) or DEFAULT_QUESTION

    try:
        # With search="local" the agent adds the built-in web_search unless `tools` has one.
        agent = Agent(
            provider=os.environ.get("QWENLOOP_PROVIDER", "dashscope"),
            tools=tools,
            search=args.search,
            instructions=Template(name="search_bot"),
        )
        result = agent.run_sync(question)
    except AgentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

    for call in result.tool_calls:
        if call.name == "web_search" and isinstance(call.arguments, dict):
            print(f"[searched] {call.arguments.get('query')}")
    print(result.output)
    print()
    print(f"search mode: {result.search_mode}")
    urls = cited_urls(result.output)
    print("cited:" if urls else "cited: none")
    for url in urls:
        print(f"  {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
