"""Tools: `@tool` turns a typed function into a Tool; a ToolRegistry holds them by name.

Sync tools run in a dedicated thread pool sized for many concurrent runs (asyncio's default pool
has only `cpu_count + 4` threads, which caps throughput at a few runs per second with slow tools).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import json
import os
import re
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, overload

from pydantic import BaseModel, ValidationError
from pydantic_core import to_json

from agent.errors import UserError
from agent.schema import function_schema

__all__ = ["Tool", "ToolRegistry", "ToolRetry", "tool", "validation_summary"]

_NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def tool_executor() -> ThreadPoolExecutor:
    """Return the shared thread pool for sync tools (`QWENLOOP_TOOL_THREADS`, default 64)."""
    global _executor
    if _executor is None:
        with _executor_lock:
            if _executor is None:
                workers = int(os.environ.get("QWENLOOP_TOOL_THREADS", "64"))
                _executor = ThreadPoolExecutor(workers, thread_name_prefix="qwenloop-tool")
    return _executor


class ToolRetry(Exception):
    """Raise inside a tool to send the model a correction instead of a result.

    The message goes back to the model as the tool's error; the call counts against the tool's
    retry budget.
    """


class Tool:
    """A Python function the model can call, with its validated arguments and JSON schema.

    Attributes:
        name: The name the model calls the tool by.
        description: What the tool does, for the model.
        parameters: The JSON schema of its arguments.
        fn: The wrapped function.
        is_async: Whether `fn` is a coroutine function.
        timeout: Seconds a call may take, or None.
        strict: Whether the schema is sent in OpenAI strict mode.
        max_retries: Failed calls (bad arguments, errors, timeouts) the model may retry before
            the tool is reported as failing for the rest of the run.
        needs_approval: True when every call waits for a person's approval, or a function of
            the call's arguments that decides (see `approval_needed`).
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        timeout: float | None = None,
        strict: bool = False,
        max_retries: int = 2,
        needs_approval: bool | Callable[[dict[str, Any]], bool] = False,
    ) -> None:
        if not callable(fn):
            raise UserError(f"@tool needs a function, got {fn!r}")
        tool_name: str = name or str(getattr(fn, "__name__", ""))
        if not _NAME_RE.match(tool_name):
            raise UserError(
                f"tool name {tool_name!r} is invalid: use 1-64 letters, digits, '_' or '-'"
            )
        if timeout is not None and timeout <= 0:
            raise UserError(f"tool {tool_name!r}: timeout must be positive, got {timeout}")
        fs = function_schema(fn, name=tool_name, description=description, strict=strict)
        self.name = tool_name
        self.description = fs.description
        self.parameters = fs.parameters
        self.args_model: type[BaseModel] = fs.args_model
        self.fn = fn
        self.is_async = inspect.iscoroutinefunction(fn)
        self.timeout = timeout
        self.strict = strict
        self.max_retries = max_retries
        self.needs_approval = needs_approval
        self._field_names = tuple(fs.args_model.model_fields)
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the underlying function directly, as if it were not a tool."""
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"Tool(name={self.name!r})"

    def openai_schema(self) -> dict[str, Any]:
        """Return the tool in OpenAI's `tools` format."""
        function: dict[str, Any] = {"name": self.name, "parameters": self.parameters}
        if self.description:
            function["description"] = self.description
        if self.strict:
            function["strict"] = True
        return {"type": "function", "function": function}

    def approval_needed(self, arguments: dict[str, Any]) -> bool:
        """Whether this call must wait for a person's approval before it runs.

        A deciding function that raises counts as "yes": when in doubt, ask.
        """
        decide = self.needs_approval
        if not callable(decide):
            return bool(decide)
        try:
            return bool(decide(arguments))
        except Exception:
            return True

    def validate(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """Validate raw arguments and return the keyword arguments to call the function with.

        Raises:
            pydantic.ValidationError: When the arguments do not fit the signature.
        """
        model = self.args_model.model_validate(arguments)
        return {name: getattr(model, name) for name in self._field_names}

    async def invoke(self, kwargs: dict[str, Any]) -> Any:
        """Run the function with validated arguments: async tools directly, sync in a thread."""
        if self.is_async:
            coro: Awaitable[Any] = self.fn(**kwargs)
        else:
            # In the caller's context variables (and current span), as `asyncio.to_thread` does.
            call = functools.partial(contextvars.copy_context().run, self.fn, **kwargs)
            coro = asyncio.get_running_loop().run_in_executor(tool_executor(), call)
        if self.timeout is None:
            return await coro
        async with asyncio.timeout(self.timeout):
            return await coro


def validation_summary(exc: ValidationError) -> str:
    """The first few validation errors, one phrase each, for the model to correct."""
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "arguments"
        parts.append(f"{loc}: {err['msg']}")
    return "invalid arguments: " + "; ".join(parts)


def format_tool_output(value: Any) -> str:
    """Turn a tool's return value into the text sent back to the model."""
    if isinstance(value, str):
        return value
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return to_json(value, fallback=str).decode()


@overload
def tool(fn: Callable[..., Any], /) -> Tool: ...


@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = None,
    strict: bool = False,
    max_retries: int = 2,
    needs_approval: bool | Callable[[dict[str, Any]], bool] = False,
) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = None,
    strict: bool = False,
    max_retries: int = 2,
    needs_approval: bool | Callable[[dict[str, Any]], bool] = False,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Turn a sync or async function into a tool the model can call.

    The parameters' annotations become the JSON schema; the docstring's first paragraph becomes
    the description and its `Args:` section the parameter descriptions.

    Args:
        fn: The function (when used as a bare `@tool`).
        name: The tool's name; defaults to the function's name.
        description: Overrides the docstring.
        timeout: Seconds a call may take before it is reported to the model as timed out.
        strict: Send the schema in OpenAI strict mode (closed objects, all fields required).
        max_retries: Failed calls the model may retry.
        needs_approval: Stop the run before a call runs, for a person to approve or reject it
            (True, or a function of the arguments that decides); see `Agent.resume`.

    Returns:
        A `Tool`, still callable like the function.

    Example:
        ```python
        @tool
        def add(a: int, b: int) -> int:
            '''Add two numbers.'''
            return a + b
        ```
    """

    def wrap(f: Callable[..., Any]) -> Tool:
        return Tool(
            f,
            name=name,
            description=description,
            timeout=timeout,
            strict=strict,
            max_retries=max_retries,
            needs_approval=needs_approval,
        )

    if fn is not None:
        return wrap(fn)
    return wrap


class ToolRegistry:
    """Tools by name. Plain functions are wrapped with `@tool` defaults on the way in."""

    def __init__(self, tools: Iterable[Tool | Callable[..., Any]] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        self._schemas: list[dict[str, Any]] | None = None
        for t in tools:
            self.add(t)

    def add(self, item: Tool | Callable[..., Any]) -> Tool:
        """Register a tool (or a function, wrapped as one).

        Raises:
            UserError: When a tool of that name is already registered.
        """
        t = item if isinstance(item, Tool) else Tool(item)
        if t.name in self._tools:
            raise UserError(
                f"duplicate tool name {t.name!r}: two tools cannot share a name; "
                f"pass name=... to @tool for one of them"
            )
        self._tools[t.name] = t
        self._schemas = None
        return t

    def get(self, name: str) -> Tool | None:
        """Return the tool called `name`, or None."""
        return self._tools.get(name)

    def schemas(self) -> list[dict[str, Any]]:
        """Return all tools in OpenAI's `tools` format (cached)."""
        if self._schemas is None:
            self._schemas = [t.openai_schema() for t in self._tools.values()]
        return self._schemas

    @property
    def names(self) -> list[str]:
        """The registered names, in registration order."""
        return list(self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> Iterator[Tool]:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)
