"""The events `Agent.stream` yields; frozen, each with a `type` tag for easy matching.

A run yields: RunStartEvent, then per turn any TextDeltaEvent / ReasoningDeltaEvent, a
TurnEndEvent, then for each tool call a ToolCallStartedEvent and a ToolCallFinishedEvent (and a
LoopGuardEvent when a repeated call is not run again), and last a RunEndEvent carrying the result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from agent.messages import RunResult, ToolCallRecord, Usage

__all__ = [
    "AgentEvent",
    "ApprovalRequiredEvent",
    "LoopGuardEvent",
    "ReasoningDeltaEvent",
    "RunEndEvent",
    "RunStartEvent",
    "TextDeltaEvent",
    "ToolCallFinishedEvent",
    "ToolCallStartedEvent",
    "TurnEndEvent",
]


@dataclass(frozen=True, slots=True)
class RunStartEvent:
    """The run began: which model and which web-search mode are in force."""

    model: str
    search_mode: str
    type: Literal["run_start"] = "run_start"


@dataclass(frozen=True, slots=True)
class TextDeltaEvent:
    """A piece of the answer's text, as it arrived."""

    delta: str
    turn: int
    type: Literal["text_delta"] = "text_delta"


@dataclass(frozen=True, slots=True)
class ReasoningDeltaEvent:
    """A piece of the model's reasoning (`reasoning_content` or a `<think>` block)."""

    delta: str
    turn: int
    type: Literal["reasoning_delta"] = "reasoning_delta"


@dataclass(frozen=True, slots=True)
class ApprovalRequiredEvent:
    """A tool call waits for a person's approval; the run will stop after this turn's others."""

    call_id: str
    name: str
    arguments: dict[str, Any] | str
    turn: int
    type: Literal["approval_required"] = "approval_required"


@dataclass(frozen=True, slots=True)
class TurnEndEvent:
    """A model turn ended: its usage, cost where known, and how many tool calls it asked for."""

    turn: int
    usage: Usage
    finish_reason: str | None
    tool_calls: int
    cost: float | None = None
    type: Literal["turn_end"] = "turn_end"


@dataclass(frozen=True, slots=True)
class ToolCallStartedEvent:
    """A tool call is about to run."""

    id: str
    name: str
    arguments: dict[str, Any] | str
    turn: int
    type: Literal["tool_call_started"] = "tool_call_started"


@dataclass(frozen=True, slots=True)
class ToolCallFinishedEvent:
    """A tool call finished; `record.result` or `record.error` says how."""

    record: ToolCallRecord
    type: Literal["tool_call_finished"] = "tool_call_finished"

    @property
    def ok(self) -> bool:
        """Whether the call succeeded."""
        return self.record.error is None


@dataclass(frozen=True, slots=True)
class LoopGuardEvent:
    """The model repeated a call that already had a result; it was not run again."""

    name: str
    arguments: dict[str, Any] | str
    reason: str
    turn: int
    type: Literal["loop_guard"] = "loop_guard"


@dataclass(frozen=True, slots=True)
class RunEndEvent:
    """The run ended with an answer; `result` is what `run` returns."""

    result: RunResult
    type: Literal["run_end"] = "run_end"


AgentEvent = (
    RunStartEvent
    | TextDeltaEvent
    | ReasoningDeltaEvent
    | TurnEndEvent
    | ToolCallStartedEvent
    | ToolCallFinishedEvent
    | LoopGuardEvent
    | ApprovalRequiredEvent
    | RunEndEvent
)
"""Any event `Agent.stream` yields."""
