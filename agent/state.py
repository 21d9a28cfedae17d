"""What a run is given (`RunConfig`) and what it accumulates (`RunProgress`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from agent.errors import MaxTurnsExceeded
from agent.hooks import HookRunner, RunContext
from agent.messages import Interruption, RunResult, ToolCallRecord, TurnUsage, Usage
from agent.messages import RunState as SavedRun
from agent.models.base import ChatModel
from agent.settings import ModelSettings
from agent.streaming import MAX_ARGUMENT_CHARS
from agent.tool import ToolRegistry

__all__ = ["RunConfig", "RunProgress"]


@dataclass(slots=True)
class RunConfig:
    """Everything a run needs that does not change while it runs.

    Attributes:
        model: The backend.
        registry: The tools offered.
        settings: Request parameters (already merged with per-run overrides).
        max_turns: Model turns allowed.
        system_prompt: Renders the system prompt for a turn (None: no system prompt).
        search_mode: "server", "local" or "off", for events and the result.
        tool_concurrency: At most this many tool calls of a turn run at once (None: all).
        text_tool_calls: "auto", "always" or "never": read tool calls written as text.
        loop_guard: Do not re-run repeated calls; ask once more without tools instead.
        send_reasoning: Send `reasoning_content` of earlier turns back to the provider.
        cost: Computes a turn's cost in CNY from its usage, or returns None.
        output_type: A pydantic model the final answer must validate as (structured output).
        output_retries: Replies that failed validation the model may correct.
        json_schema_format: Ask with `response_format` json_schema (else json_object and the
            schema in the prompt).
        force_tool_choice: The tool_choice of the first turn ("required" or a named function);
            later turns use "auto" so the run can end.
        emulate_required: The provider lacks tool_choice "required": re-ask a turn that
            answered without calling a tool.
        required_retries: Turns that may be re-asked when "required" is emulated.
        required_tool: With `emulate_required`, the one tool the model must call (None: any).
        thinking: The model reasons in this run (for its price).
        cache_instructions: Mark the system prompt cacheable (`cache_control`).
        stream: Stream the model's replies (asked for, or needed by thinking).
        hooks: The lifecycle hooks to call.
        provider: The provider preset (for hooks and spans).
        checkpoint: Called with the messages of each completed turn (a session's `append`).
        fit_context: Fits a request's messages to the context window; returns them and how
            many were left out.
        max_total_tokens: Stop with UsageLimitExceeded past this many tokens.
        max_cost: Stop with UsageLimitExceeded past this cost in CNY.
        accept_truncated: Accept a final answer cut by the token limit (marked in the result)
            instead of raising TruncatedReplyError. A cut tool call never runs either way.
        max_argument_chars: Longer tool-call arguments go back to the model as an error.
    """

    model: ChatModel
    registry: ToolRegistry
    settings: ModelSettings
    max_turns: int
    system_prompt: Callable[[], str | None] | None = None
    search_mode: str = "off"
    tool_concurrency: int | None = None
    text_tool_calls: str = "auto"
    loop_guard: bool = True
    send_reasoning: bool = False
    cost: Callable[[Usage], float | None] | None = None
    output_type: type[BaseModel] | None = None
    output_retries: int = 2
    json_schema_format: bool = False
    force_tool_choice: Any = None
    emulate_required: bool = False
    required_retries: int = 1
    required_tool: str | None = None
    thinking: bool = False
    cache_instructions: bool = False
    stream: bool = False
    hooks: HookRunner = field(default_factory=HookRunner)
    provider: str = ""
    checkpoint: Callable[[list[dict[str, Any]]], Awaitable[None]] | None = None
    fit_context: (
        Callable[[list[dict[str, Any]]], Awaitable[tuple[list[dict[str, Any]], int]]] | None
    ) = None
    max_total_tokens: int | None = None
    max_cost: float | None = None
    accept_truncated: bool = False
    max_argument_chars: int = MAX_ARGUMENT_CHARS


@dataclass(slots=True)
class RunProgress:
    """What a run has accumulated; turned into a RunResult at the end or on failure."""

    config: RunConfig
    messages: list[dict[str, Any]]
    usage: Usage = field(default_factory=Usage)
    turn_usage: list[TurnUsage] = field(default_factory=list)
    records: list[ToolCallRecord] = field(default_factory=list)
    turns: int = 0
    cost: float | None = None
    balance: str | None = None
    reasoning: str | None = None
    guarded: list[str] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)
    seen: dict[tuple[str, str], ToolCallRecord] = field(default_factory=dict)
    tools_off_next_turn: bool = False
    tools_off: bool = False
    output: str = ""
    parsed: Any = None
    output_failures: int = 0
    required_misses: int = 0
    unusable_replies: int = 0
    truncated: bool = False
    trimmed: int = 0
    checkpointed: int = 0
    interruptions: list[Interruption] = field(default_factory=list)
    held: list[ToolCallRecord] = field(default_factory=list)
    ended: bool = False
    ctx: RunContext = field(default_factory=lambda: RunContext("", ""))

    def __post_init__(self) -> None:
        self.ctx = RunContext(self.config.model.model_name, self.config.provider)

    def begin_turn(self) -> None:
        """Count a new turn.

        Raises:
            MaxTurnsExceeded: The run has used all its turns.
        """
        if self.turns >= self.config.max_turns:
            raise MaxTurnsExceeded(
                f"the run used all {self.config.max_turns} turns without a final answer; "
                "raise max_turns or make the task simpler",
                max_turns=self.config.max_turns,
            )
        self.turns += 1
        self.ctx.turn = self.turns
        self.tools_off, self.tools_off_next_turn = self.tools_off_next_turn, False

    def uncheckpointed(self) -> list[dict[str, Any]]:
        """The messages added since the last checkpoint; a leading system prompt never counts.

        `checkpointed` counts the conversation's messages after its system prompt (which the
        request phase inserts or replaces at every turn, so it is not part of what is kept).
        """
        messages = self.messages
        body = messages[1:] if messages and messages[0].get("role") == "system" else messages
        new = body[self.checkpointed :]
        self.checkpointed = len(body)
        return new

    def result(self) -> RunResult:
        """Snapshot the run as a RunResult."""
        return RunResult.model_construct(
            output=self.output,
            messages=self.messages,
            usage=self.usage,
            turn_usage=self.turn_usage,
            tool_calls=self.records,
            turns=self.turns,
            model=self.config.model.model_name,
            search_mode=self.config.search_mode,
            cost=self.cost,
            balance=self.balance,
            reasoning=self.reasoning,
            guarded=self.guarded,
            parsed=self.parsed,
            truncated=self.truncated,
            trimmed=self.trimmed,
            interruptions=self.interruptions,
            state=self.saved() if self.interruptions else None,
        )

    def saved(self) -> SavedRun:
        """What `Agent.resume` needs to continue this run after its interruptions."""
        index = {id(record): i for i, record in enumerate(self.records)}
        return SavedRun(
            model=self.config.model.model_name,
            tools=self.config.registry.names,
            messages=self.messages,
            interruptions=self.interruptions,
            done=self.held,
            turns=self.turns,
            usage=self.usage,
            turn_usage=self.turn_usage,
            records=self.records,
            cost=self.cost,
            failures=self.failures,
            seen=[(name, args, index[id(rec)]) for (name, args), rec in self.seen.items()],
            guarded=self.guarded,
            checkpointed=self.checkpointed,
        )

    @classmethod
    def restore(cls, config: RunConfig, saved: SavedRun) -> RunProgress:
        """Continue a run from what `saved` kept."""
        records = list(saved.records)
        state = cls(
            config,
            list(saved.messages),
            usage=saved.usage.model_copy(),
            turn_usage=list(saved.turn_usage),
            records=records,
            turns=saved.turns,
            cost=saved.cost,
            guarded=list(saved.guarded),
            failures=dict(saved.failures),
            seen={(name, args): records[i] for name, args, i in saved.seen if i < len(records)},
            checkpointed=saved.checkpointed,
            held=list(saved.done),
        )
        state.ctx.turn = saved.turns
        return state
