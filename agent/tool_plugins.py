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
import importlib.util
import sys
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

from agent.errors import ConfigError, UserError
from agent.tool import Tool, tool

__all__ = ["GROUP", "available_tools", "load_tool", "load_tool_file"]

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


def load_tool_file(spec: str) -> Tool:
    """Load the function FUNCTION of the Python file FILE.py (`--tool FILE.py:FUNCTION`) as a tool.

    Raises:
        UserError: The spec, the file or the function is wrong, or importing the file failed.
    """
    file, sep, name = spec.rpartition(":")
    if not sep or not file or not name:
        raise UserError(f"--tool {spec!r}: write it as FILE.py:FUNCTION")
    path = Path(file)
    if not path.is_file():
        raise UserError(f"--tool {spec!r}: file {file!r} does not exist")
    module_spec = importlib.util.spec_from_file_location(f"_qwenloop_tool_{path.stem}", path)
    if module_spec is None or module_spec.loader is None:
        raise UserError(f"--tool {spec!r}: {file!r} is not a Python file")
    module = importlib.util.module_from_spec(module_spec)
    # Registered before it runs, as `import` does: dataclasses and pydantic models defined under
    # `from __future__ import annotations` look their module up in sys.modules.
    sys.modules[module_spec.name] = module
    try:
        module_spec.loader.exec_module(module)
    except SystemExit as exc:
        sys.modules.pop(module_spec.name, None)
        raise UserError(
            f"--tool {spec!r}: importing {file!r} called sys.exit({exc.code!r})"
        ) from None
    except Exception as exc:
        sys.modules.pop(module_spec.name, None)
        raise UserError(f"--tool {spec!r}: importing {file!r} failed: {exc}") from exc
    fn = getattr(module, name, None)
    if fn is None:
        raise UserError(f"--tool {spec!r}: {file!r} has no function {name!r}")
    if isinstance(fn, Tool):
        return fn
    if not callable(fn):
        raise UserError(f"--tool {spec!r}: {name!r} is not a function")
    return tool(fn)
