"""Human approval: a run that stops before a tool call, and the state to resume it from.

A tool made with `@tool(needs_approval=...)` does not run when the model calls it: the run ends
with `result.interruptions` (the calls waiting) and `result.state`, a `RunState` that survives
`to_json()` / `RunState.from_json(text)`, so a web app can ask a person and resume hours later in
another process with `agent.resume(state, approve=[...], reject={...})`.

A state is resumed once: the approved calls run exactly once; the other calls of the same turn,
which ran before the run stopped, are not run again.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.errors import UserError
from agent.messages import Interruption, RunState
from agent.streaming import PendingCall, decode_arguments

__all__ = ["Interruption", "Resumption", "RunState", "decisions", "resumption"]


@dataclass(frozen=True, slots=True)
class Resumption:
    """A stopped run and what a person decided: the loop continues from it.

    Attributes:
        saved: The state the run stopped with.
        calls: The calls of the turn that waited, in the order the model emitted them.
        decided: Call id -> None (approved) or the reason it was rejected.
    """

    saved: RunState
    calls: list[PendingCall]
    decided: dict[str, str | None]


def resumption(
    saved: RunState, approve: list[str], reject: dict[str, str], model: str, tools: list[str]
) -> Resumption:
    """Check that `saved` can be resumed by this agent with these decisions.

    Raises:
        UserError: The state belongs to another model or tool set, is malformed, or the
            decisions do not cover exactly the waiting calls.
    """
    if saved.model != model:
        raise UserError(f"this run state is for model {saved.model!r}, not {model!r}")
    missing = sorted({i.name for i in saved.interruptions} - set(tools))
    if missing:
        raise UserError(f"this agent lacks the tools the run stopped at: {', '.join(missing)}")
    last = saved.messages[-1] if saved.messages else {}
    raw_calls = last.get("tool_calls") if last.get("role") == "assistant" else None
    if not raw_calls:
        raise UserError("this run state does not end with the tool calls it stopped at")
    if not isinstance(raw_calls, list) or not all(isinstance(r, dict) for r in raw_calls):
        raise UserError("this run state's last message holds tool calls that are not objects")
    calls = []
    for raw in raw_calls:
        function = raw.get("function") or {}
        if not isinstance(function, dict):
            raise UserError("this run state holds a tool call without a function object")
        text, arguments, error = decode_arguments(function.get("arguments"))
        calls.append(
            PendingCall(str(raw.get("id")), str(function.get("name")), text, arguments, error)
        )
    return Resumption(saved, calls, decisions(saved, approve, reject))


def decisions(state: RunState, approve: list[str], reject: dict[str, str]) -> dict[str, str | None]:
    """Check a person's decisions against the waiting calls: call id -> None (approved) or reason.

    Raises:
        UserError: A waiting call is not decided, a call is both approved and rejected, or an
            id is not one of the waiting calls.
    """
    waiting = {i.id for i in state.interruptions}
    both = set(approve) & set(reject)
    if both:
        raise UserError(f"calls both approved and rejected: {', '.join(sorted(both))}")
    unknown = (set(approve) | set(reject)) - waiting
    if unknown:
        raise UserError(
            f"not waiting for approval: {', '.join(sorted(unknown))}; "
            f"waiting: {', '.join(sorted(waiting))}"
        )
    undecided = waiting - set(approve) - set(reject)
    if undecided:
        raise UserError(
            f"decide every waiting call: {', '.join(sorted(undecided))} (approve or reject)"
        )
    out: dict[str, str | None] = {call_id: None for call_id in approve}
    out.update({call_id: reason or "rejected" for call_id, reason in reject.items()})
    return out
