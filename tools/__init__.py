"""Built-in tools: web search, weather, calculator, clock and URL fetching, usable by name.

Each tool is also importable from its module (`tools.calculator.calculator`, ...), together with
a `make_*` factory for injecting backends in tests or deployments.
"""

from __future__ import annotations

from agent.errors import UserError
from agent.tool import Tool
from tools.calculator import calculator
from tools.clock import current_time
from tools.fetch_url import fetch_url
from tools.weather import get_forecast, get_weather
from tools.web_search import web_search

__all__ = [
    "BUILTIN_TOOLS",
    "OFFLINE_TOOLS",
    "calculator",
    "current_time",
    "fetch_url",
    "get_builtin",
    "get_forecast",
    "get_weather",
    "web_search",
]

BUILTIN_TOOLS: dict[str, Tool] = {
    str(t.name): t
    for t in (web_search, get_weather, get_forecast, calculator, current_time, fetch_url)
}
"""The built-in tools by name."""

OFFLINE_TOOLS: frozenset[str] = frozenset({"calculator", "current_time"})
"""Names of the built-in tools that need no network."""


def get_builtin(name: str) -> Tool:
    """Return the built-in tool called `name`.

    Args:
        name: A key of `BUILTIN_TOOLS`, e.g. "calculator".

    Raises:
        UserError: When there is no built-in tool of that name; the message lists them.
    """
    try:
        return BUILTIN_TOOLS[name]
    except KeyError:
        available = ", ".join(sorted(BUILTIN_TOOLS))
        raise UserError(f"no built-in tool named {name!r}; available: {available}") from None
