"""Lifecycle hooks: code of yours that runs at each step of a run.

Subclass `RunHooks` and override what you need; each method may be sync or async:

    class Audit(RunHooks):
        async def on_tool_start(self, ctx, call):
            await audit_log.write(ctx.run_id, call.name, call.arguments)

    agent = Agent(..., hooks=[Audit()])

Hooks run in the order given, in the run's own task (and context variables). A hook that raises
stops the run: the caller gets `HookError` with the run so far in `.result` and the hook's
exception as `__cause__`, so a hook can veto a request or a tool call on purpose. An exception in
`on_run_end` of a run that already failed is logged and does not replace the run's own error.
"""

from __future__ import annotations

import inspect
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agent.errors import AgentError, HookError

if TYPE_CHECKING:
    from agent.messages import RunResult, ToolCallRecord, Usage
    from agent.models.base import ModelRequest

__all__ = ["HookRunner", "ModelReply", "RunContext", "RunHooks", "ToolCallInfo"]

log = logging.getLogger("qwenloop")


@dataclass(slots=True)
class RunContext:
    """The run a hook is called for.

    Attributes:
        run_id: A unique id for the run (also in logs and spans).
        model: The model name.
        provider: The provider preset.
        turn: The current model turn (0 before the first).
        data: Free space for hooks to keep per-run state (a span, a timer, ...).
    """

    model: str
    provider: str
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    turn: int = 0
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ToolCallInfo:
    """A tool call about to run.

    Attributes:
        id: The call id the model gave.
        name: The tool's name.
        arguments: The arguments, parsed.
        turn: The model turn that asked for it.
    """

    id: str
    name: str
    arguments: dict[str, Any]
    turn: int


@dataclass(frozen=True, slots=True)
class ModelReply:
    """One model reply, assembled.

    Attributes:
        message: The assistant message as it joins the conversation.
        usage: Its token usage.
        finish_reason: Why the model stopped ("stop", "tool_calls", "length", ...).
        response_model: The model name the provider reported, where it did.
        response_id: The provider's id of the reply, where it gave one.
    """

    message: dict[str, Any]
    usage: Usage
    finish_reason: str | None
    response_model: str | None = None
    response_id: str | None = None


class RunHooks:
    """Base class for hooks: every method does nothing; override the ones you need."""

    def on_run_start(self, ctx: RunContext, messages: list[dict[str, Any]]) -> Any:
        """The run begins with this conversation."""

    def on_run_end(self, ctx: RunContext, result: RunResult, error: BaseException | None) -> Any:
        """The run ended: with its result, or with `error` (whose `.result` is `result`)."""

    def on_model_request(self, ctx: RunContext, request: ModelRequest) -> Any:
        """A request is about to go to the model."""

    def on_model_response(self, ctx: RunContext, reply: ModelReply) -> Any:
        """The model's reply arrived and was assembled."""

    def on_model_error(self, ctx: RunContext, error: BaseException) -> Any:
        """The model call failed (after retries)."""

    def on_tool_start(self, ctx: RunContext, call: ToolCallInfo) -> Any:
        """A tool call is about to run."""

    def on_tool_end(self, ctx: RunContext, record: ToolCallRecord) -> Any:
        """A tool call ended: `record.result` or `record.error`."""


_METHODS = tuple(name for name in vars(RunHooks) if name.startswith("on_"))


class HookRunner:
    """Calls every hook's method in order, awaiting async ones; turns failures into HookError."""

    def __init__(self, hooks: Sequence[RunHooks] = ()) -> None:
        for hook in hooks:
            if not isinstance(hook, RunHooks):
                raise TypeError(f"hooks must be RunHooks instances, got {type(hook).__name__}")
        self.hooks = list(hooks)
        # Per method, the hooks that override it: most methods of most hooks do nothing.
        self._callers: dict[str, list[tuple[RunHooks, Any]]] = {}
        for method in _METHODS:
            base = getattr(RunHooks, method)
            self._callers[method] = [
                (hook, getattr(hook, method))
                for hook in self.hooks
                if getattr(getattr(hook, method), "__func__", None) is not base
            ]

    def __bool__(self) -> bool:
        return bool(self.hooks)

    async def call(self, method: str, *args: Any) -> None:
        """Call `method` on every hook that overrides it.

        Raises:
            HookError: A hook raised; the run should stop.
        """
        for hook, fn in self._callers[method]:
            try:
                value = fn(*args)
                if inspect.isawaitable(value):
                    await value
            except AgentError:
                raise
            except Exception as exc:
                raise HookError(
                    f"hook {type(hook).__name__}.{method} raised {type(exc).__name__}: {exc}"
                ) from exc

    async def run_end(
        self, ctx: RunContext, result: RunResult, error: BaseException | None
    ) -> None:
        """Call `on_run_end`; for a run that already failed, a hook's failure is only logged."""
        try:
            await self.call("on_run_end", ctx, result, error)
        except HookError:
            if error is None:
                raise
            log.exception("on_run_end hook failed for run %s, which had failed", ctx.run_id)
