"""The data a run produces: usage, tool-call records and the RunResult (all JSON-serialisable).

Conversation messages themselves stay plain OpenAI-format dicts, so they can be stored, sent back
to any compatible endpoint and continued without conversion.
"""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.errors import UserError

__all__ = [
    "Interruption",
    "Message",
    "RunResult",
    "RunState",
    "ToolCallRecord",
    "TurnUsage",
    "Usage",
]

STATE_VERSION = 1
MAX_STATE_CHARS = 64_000_000

Message = dict[str, Any]
"""One chat message in OpenAI format: {"role": ..., "content": ..., ...}."""


class Usage(BaseModel):
    """Token counts, summed over the turns of a run.

    Attributes:
        prompt_tokens: Tokens sent to the model.
        completion_tokens: Tokens the model generated.
        total_tokens: Their sum, as the provider reported it.
        cached_prompt_tokens: Prompt tokens served from the provider's cache, where reported.
        reasoning_tokens: Generated tokens spent on reasoning, where reported.
        requests: Model requests made.
    """

    model_config = ConfigDict(extra="forbid")

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_prompt_tokens: int = 0
    reasoning_tokens: int = 0
    requests: int = 0

    def add(self, other: Usage) -> None:
        """Add another usage's counts to this one, in place."""
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.total_tokens += other.total_tokens
        self.cached_prompt_tokens += other.cached_prompt_tokens
        self.reasoning_tokens += other.reasoning_tokens
        self.requests += other.requests

    @classmethod
    def from_openai(cls, data: dict[str, Any] | None) -> Usage:
        """Read an OpenAI/DashScope `usage` object, tolerating missing or null fields."""
        if not data:
            return cls(requests=1)
        prompt = int(data.get("prompt_tokens") or data.get("input_tokens") or 0)
        completion = int(data.get("completion_tokens") or data.get("output_tokens") or 0)
        total = int(data.get("total_tokens") or prompt + completion)
        details = data.get("prompt_tokens_details") or {}
        out_details = data.get("completion_tokens_details") or {}
        return cls(
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=total,
            cached_prompt_tokens=int(details.get("cached_tokens") or 0),
            reasoning_tokens=int(out_details.get("reasoning_tokens") or 0),
            requests=1,
        )


class TurnUsage(BaseModel):
    """Usage and cost of one model turn."""

    turn: int
    usage: Usage
    cost: float | None = None


class ToolCallRecord(BaseModel):
    """One tool call the model made and what came of it.

    Attributes:
        id: The call id the model gave (or one qwenloop made up when the provider sent none).
        name: The tool's name as the model wrote it.
        arguments: The parsed arguments, or the raw text when it was not valid JSON.
        result: The text sent back to the model when the tool succeeded.
        error: The error text sent back to the model when it failed.
        seconds: Wall time spent running the tool.
        turn: The model turn that asked for the call.
        skipped: Why the call was not run (a loop-guard repeat), else None.
    """

    id: str
    name: str
    arguments: dict[str, Any] | str
    result: str | None = None
    error: str | None = None
    seconds: float = 0.0
    turn: int = 0
    skipped: str | None = None


class Interruption(BaseModel):
    """A tool call waiting for a person's decision.

    Attributes:
        id: The call id: pass it to `resume` in `approve` or `reject`.
        name: The tool's name.
        arguments: The arguments the model gave.
    """

    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    arguments: dict[str, Any]


class RunState(BaseModel):
    """Everything needed to resume a run stopped for approval, as plain JSON.

    Attributes:
        version: The format's version.
        state_id: A unique id for this stop (a state is resumed once).
        model: The model the run used (resuming with another agent model is refused).
        tools: The names of the tools offered.
        messages: The conversation, up to and including the assistant message whose calls wait.
        interruptions: The calls waiting for a decision.
        done: The results of the turn's other calls, which already ran.
        turns: Model turns taken.
        usage: Token counts so far.
        turn_usage: Usage per turn so far.
        records: Every earlier tool call of the run.
        cost: Cost so far in CNY, where known.
        failures: Failed calls per tool (for `max_retries`).
        seen: The loop guard's record of calls already made: [tool, arguments, record index].
        guarded: Loop-guard interventions so far.
        checkpointed: Messages already kept in the session, if the run used one.
    """

    model_config = ConfigDict(extra="forbid")

    version: int = STATE_VERSION
    state_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    model: str
    tools: list[str]
    messages: list[dict[str, Any]]
    interruptions: list[Interruption]
    done: list[ToolCallRecord] = Field(default_factory=list)
    turns: int
    usage: Usage = Field(default_factory=Usage)
    turn_usage: list[TurnUsage] = Field(default_factory=list)
    records: list[ToolCallRecord] = Field(default_factory=list)
    cost: float | None = None
    failures: dict[str, int] = Field(default_factory=dict)
    seen: list[tuple[str, str, int]] = Field(default_factory=list)
    guarded: list[str] = Field(default_factory=list)
    checkpointed: int = 0

    def to_json(self) -> str:
        """Serialise the state (keys are never part of it)."""
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str | bytes) -> RunState:
        """Read a state written by `to_json`.

        Raises:
            UserError: The text is not a run state of this version.
        """
        if len(text) > MAX_STATE_CHARS:
            raise UserError(f"a run state is at most {MAX_STATE_CHARS:,} characters")
        try:
            state = cls.model_validate_json(text)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "state"
            raise UserError(f"not a qwenloop run state: {where}: {first['msg']}") from None
        if state.version != STATE_VERSION:
            raise UserError(
                f"this run state has version {state.version}; this qwenloop reads version "
                f"{STATE_VERSION}"
            )
        return state


class RunResult(BaseModel):
    """What a run returns, and what an error that ended a run carries as `.result`.

    Attributes:
        output: The final answer's text (empty for a run that ended early).
        messages: The whole conversation in OpenAI format, ready to pass to the next run.
        usage: Token counts summed over the turns.
        turn_usage: Usage (and cost, where the model's price is known) per turn.
        tool_calls: Every tool call of the run, in the order the model emitted them.
        turns: Model turns taken.
        model: The model that answered.
        search_mode: The web-search mode in force: "server", "local" or "off".
        cost: Total cost in CNY where the model's price is known, else None.
        balance: The account balance the provider reported (`X-Account-Balance`), if any.
        reasoning: The reasoning text of the final turn, where the model produced one.
        guarded: Loop-guard interventions (repeated calls that were not run again).
        parsed: The validated structured output, when an output type was asked for.
        truncated: The final answer was cut by the token limit and accepted as it was
            (`Agent(accept_truncated=True)`); without that option a cut answer is an error.
        trimmed: Messages of the conversation left out of the last request to fit the
            model's context window (they stay in `messages`).
        interruptions: Tool calls waiting for a person's approval; the run stopped before
            them (empty for a run that ended).
        state: With `interruptions`, what `Agent.resume` continues from.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    output: str = ""
    messages: list[dict[str, Any]] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    turn_usage: list[TurnUsage] = Field(default_factory=list)
    tool_calls: list[ToolCallRecord] = Field(default_factory=list)
    turns: int = 0
    model: str = ""
    search_mode: str = "off"
    cost: float | None = None
    balance: str | None = None
    reasoning: str | None = None
    guarded: list[str] = Field(default_factory=list)
    parsed: Any = None
    truncated: bool = False
    trimmed: int = 0
    interruptions: list[Interruption] = Field(default_factory=list)
    state: RunState | None = None

    def to_json_dict(self) -> dict[str, Any]:
        """Return the CLI's `--json` shape: output, messages, usage, tool_calls, turns, cost."""
        return {
            "output": self.output,
            "messages": self.messages,
            "usage": self.usage.model_dump(),
            "tool_calls": [
                {
                    "id": c.id,
                    "name": c.name,
                    "arguments": c.arguments,
                    "result": c.result,
                    "error": c.error,
                }
                for c in self.tool_calls
            ],
            "turns": self.turns,
            "cost": self.cost,
        }
