"""Tools by name: found through the `qwenloop.tools` entry-point group, ours and anyone's.

The built-in tools (`tools/`) register there in pyproject.toml, and any installed package can add
its own the same way:

    [project.entry-points."qwenloop.tools"]
    stock_price = "mypackage.tools:stock_price"

so `Agent(tools=["stock_price"])` and `qwenloop run --tools stock_price` find it. The runtime
never imports a tool package by name, which keeps `agent` free of imports from `tools`.
"""

from __future__ import annotations

import functools
from importlib.metadata import EntryPoint, entry_points

from agent.errors import ConfigError, UserError
from agent.tool import Tool, tool

__all__ = ["GROUP", "available_tools", "load_tool"]

GROUP = "qwenloop.tools"


@functools.cache
def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def available_tools() -> list[str]:
    """The names of every installed tool, sorted."""
    return sorted(_entry_points())


def load_tool(name: str) -> Tool:
    """Load the tool registered as `name`.

    Raises:
        UserError: No installed package registers a tool of that name (the message lists them).
        ConfigError: The registered object cannot be loaded or is not a tool.
    """
    ep = _entry_points().get(name)
    if ep is None:
        known = ", ".join(available_tools()) or "none (is qwenloop installed?)"
        raise UserError(f"no built-in tool named {name!r}; available: {known}")
    try:
        obj = ep.load()
    except Exception as exc:  # a broken plugin must not take the agent down with a traceback
        raise ConfigError(f"tool {name!r} ({ep.value}) cannot be loaded: {exc}") from exc
    if isinstance(obj, Tool):
        return obj
    if callable(obj):
        return tool(obj)
    raise ConfigError(f"tool {name!r} ({ep.value}) is a {type(obj).__name__}, not a function")
