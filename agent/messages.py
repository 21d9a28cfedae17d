"""The data a run produces: usage, tool-call records and the RunResult (all JSON-serialisable).

Conversation messages themselves stay plain OpenAI-format dicts, so they can be stored, sent back
to any compatible endpoint and continued without conversion.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Message", "RunResult", "ToolCallRecord", "TurnUsage", "Usage"]

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
