"""Toolsets: tools that come from somewhere else at run time (an MCP server, ...).

A toolset goes in `Agent(tools=[...])` next to plain tools. Its tools are listed when a run
starts (a toolset may cache them), joined to the agent's own for that run, and a name that
collides with another tool is a `ConfigError`. `async with agent:` starts toolsets early;
`agent.aclose()` closes them.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from agent.errors import ConfigError
from agent.tool import Tool, ToolRegistry

__all__ = ["Toolset", "registry_for_run"]


@runtime_checkable
class Toolset(Protocol):
    """A source of tools known only at run time."""

    async def list_tools(self) -> list[Tool]:
        """Return the tools on offer now (starting the source on first use)."""
        ...

    async def aclose(self) -> None:
        """Stop the source and release what it holds (processes, sockets)."""
        ...


async def registry_for_run(own: ToolRegistry, toolsets: list[Toolset]) -> ToolRegistry:
    """The tools of one run: the agent's own, then each toolset's.

    Raises:
        ConfigError: Two tools share a name (give the toolset a prefix).
    """
    if not toolsets:
        return own
    registry = ToolRegistry(own)
    for toolset in toolsets:
        for tool in await toolset.list_tools():
            if tool.name in registry:
                raise ConfigError(
                    f"tool name {tool.name!r} from {toolset!r} is already taken by another "
                    "tool; give the toolset a prefix"
                )
            registry.add(tool)
    return registry
