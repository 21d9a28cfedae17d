"""A finished turn: recorded and checked (token limit, budgets), and an answer accepted or not."""

from __future__ import annotations

import re

from pydantic import ValidationError

from agent.errors import (
    NoAnswerError,
    OutputValidationError,
    RequiredToolCallError,
    TruncatedReplyError,
    UsageLimitExceeded,
)
from agent.events import TurnEndEvent
from agent.messages import TurnUsage
from agent.state import RunProgress
from agent.streaming import AssistantTurn
from agent.textcalls import is_markup_only, parse_tool_calls
from agent.tool import validation_summary

__all__ = ["accept_answer", "record_turn", "unusable_reason"]

_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)
# A `<tool_call>` block opened on a call's body and never closed.
_HALF_CALL = re.compile(r"<tool_call>\s*(?:\{|<function=)")
UNUSABLE_RETRIES = 2
"""How many times a reply without an answer (see `unusable_reason`) is sent back to the model."""


def unusable_reason(text: str, tool_names: list[str] | None) -> str | None:
    """Say why a reply without tool calls cannot be the answer, or None when it can.

    Args:
        text: The reply's content, after any calls were read out of it.
        tool_names: The tools offered, when calls written as text are read; else None.
    """
    if not text.strip():
        return "empty"
    if is_markup_only(text):
        return "only markup"
    if tool_names is None:
        return None
    if _HALF_CALL.search(text, text.rfind("</tool_call>") + 1):
        return "a half-written tool call"
    stray = parse_tool_calls(text, None, mode="auto")
    if stray.calls and not stray.content:
        return "a call to a tool that is not offered"
    return None


def _ask_for_an_answer(state: RunProgress, assistant: AssistantTurn, reason: str) -> None:
    """Send an unusable reply back with what was wrong (bounded), or end the run."""
    cfg = state.config
    if state.unusable_replies >= UNUSABLE_RETRIES:
        raise NoAnswerError(
            f"the model's reply had no answer in it ({reason}) {state.unusable_replies + 1} "
            "times; its last reply is in .result.messages",
            text=assistant.content,
            reason=reason,
        )
    state.unusable_replies += 1
    if reason in ("a half-written tool call", "a call to a tool that is not offered"):
        names = ", ".join(cfg.registry.names)
        fix = (
            f"To call a tool, write the whole call to one of: {names}. Otherwise answer the "
            "question in plain text."
        )
    else:
        fix = "Answer the question in plain text, or call a tool if one is needed."
    state.messages.append(
        {"role": "user", "content": f"Your last reply had no answer in it ({reason}). {fix}"}
    )


def _check_output(state: RunProgress, assistant: AssistantTurn) -> bool:
    """Validate structured output; on failure ask again (bounded). True when the run may end."""
    cfg = state.config
    assert cfg.output_type is not None
    text = assistant.content
    fenced = _FENCE.match(text)
    try:
        state.parsed = cfg.output_type.model_validate_json(fenced.group(1) if fenced else text)
        return True
    except ValidationError as exc:
        errors = validation_summary(exc).removeprefix("invalid arguments: ")
        if state.output_failures >= cfg.output_retries:
            raise OutputValidationError(
                f"the model's reply did not validate as {cfg.output_type.__name__} after "
                f"{state.output_failures + 1} tries: {errors}",
                raw_text=text,
                errors=exc.errors(),
            ) from None
        state.output_failures += 1
        state.messages.append(
            {
                "role": "user",
                "content": f"Your reply did not validate: {errors}. Reply again with only the "
                "corrected JSON object.",
            }
        )
        return False


def _check_limits(state: RunProgress) -> None:
    cfg = state.config
    if cfg.max_total_tokens is not None and state.usage.total_tokens > cfg.max_total_tokens:
        raise UsageLimitExceeded(
            f"the run used {state.usage.total_tokens} tokens, over its budget of "
            f"{cfg.max_total_tokens}; raise the limit or shorten the task",
            limit="total_tokens",
            value=state.usage.total_tokens,
            maximum=cfg.max_total_tokens,
        )
    if cfg.max_cost is not None and (state.cost or 0.0) > cfg.max_cost:
        raise UsageLimitExceeded(
            f"the run cost {state.cost:.6f} CNY, over its budget of {cfg.max_cost} CNY",
            limit="cost",
            value=state.cost or 0.0,
            maximum=cfg.max_cost,
        )


def _check_truncation(state: RunProgress, assistant: AssistantTurn) -> None:
    """Handle a reply cut by the token limit: never run its calls; accept its text if allowed."""
    if not assistant.calls and state.config.accept_truncated:
        state.truncated = True
        return
    state.usage.add(assistant.usage)  # the cut reply was billed all the same
    names = [call.name for call in assistant.calls]
    what = f"a call to {', '.join(names)}" if names else "the answer"
    raise TruncatedReplyError(
        f"the model's reply was cut by the token limit (finish_reason 'length') in {what}; "
        "raise max_tokens"
        + ("" if names else ", or pass accept_truncated=True to accept a cut answer"),
        text=assistant.content,
        tool_calls=names,
    )


def record_turn(state: RunProgress, assistant: AssistantTurn) -> TurnEndEvent:
    """Add a finished turn to the run: its message, usage and cost; then check the budgets.

    Raises:
        TruncatedReplyError: The reply was cut by the token limit (see `_check_truncation`).
        UsageLimitExceeded: The run went over its token or cost budget.
    """
    cfg = state.config
    if assistant.finish_reason == "length":
        _check_truncation(state, assistant)
    state.messages.append(assistant.message)
    state.usage.add(assistant.usage)
    cost = cfg.cost(assistant.usage) if cfg.cost else None
    if cost is not None:
        state.cost = (state.cost or 0.0) + cost
    state.turn_usage.append(TurnUsage(turn=state.turns, usage=assistant.usage, cost=cost))
    if assistant.reasoning:
        state.reasoning = assistant.reasoning
    _check_limits(state)
    return TurnEndEvent(
        state.turns, assistant.usage, assistant.finish_reason, len(assistant.calls), cost
    )


def accept_answer(state: RunProgress, assistant: AssistantTurn) -> bool:
    """Decide whether a reply without tool calls ends the run; if not, ask the model again.

    A reply with no answer in it (`unusable_reason`) is sent back with what was wrong.

    Raises:
        NoAnswerError: The model still gave no answer after being asked again.
        RequiredToolCallError: A tool call was required (emulated) and the model still
            answered without one after being asked again.
        OutputValidationError: Structured output failed validation too many times.
    """
    cfg = state.config
    reads_calls = cfg.text_tool_calls != "never" and len(cfg.registry) > 0
    reason = unusable_reason(assistant.content, cfg.registry.names if reads_calls else None)
    if reason is not None and not (reason == "empty" and state.truncated):
        _ask_for_an_answer(state, assistant, reason)
        return False
    if cfg.emulate_required and not state.records:
        if state.required_misses >= cfg.required_retries:
            raise RequiredToolCallError(
                f"the model answered without calling a tool {state.required_misses + 1} times "
                "although tool_choice required a call; its answer is in .result.messages",
                text=assistant.content,
            )
        state.required_misses += 1
        which = f"the {cfg.required_tool} tool" if cfg.required_tool else "one of the tools"
        state.messages.append(
            {"role": "user", "content": f"Call {which} now; do not answer directly."}
        )
        return False
    if cfg.output_type is not None and not _check_output(state, assistant):
        return False
    state.output = assistant.content
    return True
