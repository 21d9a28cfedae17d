"""Request preparation: what a run sends, decided from the model's profile, and each turn's request.

`plan_run` settles once per run what the profile implies for the user's settings: thinking on or
off (and whether that needs streaming), how a forced tool is asked for, parallel tool calls, and
the range checks the provider's documentation gives. `build_request` then makes each turn's
request from the run so far.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from agent.errors import UserError
from agent.models.base import ModelRequest
from agent.models.profile import ModelProfile
from agent.settings import ModelSettings
from agent.state import RunProgress

__all__ = ["RunPlan", "build_request", "plan_run"]

CACHE_MARKER = {"type": "ephemeral"}


@dataclass(frozen=True, slots=True)
class RunPlan:
    """What a run sends, settled from the user's settings and the model's profile.

    Attributes:
        settings: The settings to send (forcing `tool_choice` removed; switches translated).
        thinking: The model reasons in this run.
        stream: The requests must be streamed (thinking that the endpoint streams only).
        force_tool_choice: The first turn's `tool_choice` ("required" or a named function).
        emulate_required: Ask again when the first turn answers without a tool call.
        required_tool: With `emulate_required`, the one tool the model must call (None: any).
    """

    settings: ModelSettings
    thinking: bool
    stream: bool
    force_tool_choice: Any
    emulate_required: bool
    required_tool: str | None


def plan_run(
    profile: ModelProfile, settings: ModelSettings, tool_names: list[str], *, stream: bool
) -> RunPlan:
    """Settle what a run sends to this model.

    - A model that thinks by default, called without streaming where the endpoint streams
      thinking only, is sent `enable_thinking: false`, unless thinking was asked for: then the
      requests are streamed (the result is the same).
    - `tool_choice` "required" or a named tool forces the first turn only (forcing every turn
      would never let the run end). Where the endpoint lacks the form, or refuses a forced tool
      while the model thinks, a first answer without a call is asked again instead.
    - `parallel_tool_calls: true` is sent where the endpoint defaults it to false and more than
      one tool is offered, unless the settings say otherwise.

    Raises:
        UserError: A setting is outside what this provider and model take.
    """
    check_settings(profile, settings, tool_names)
    data = settings.model_dump(exclude_unset=True)
    thinking = profile.thinking_on(settings.enable_thinking)
    must_stream = False
    if thinking and not stream and profile.thinking_needs_stream:
        if settings.enable_thinking or profile.thinking == "only":
            must_stream = True
        elif profile.thinking_switch is not None:
            thinking = False
            data["enable_thinking"] = False
    _translate_thinking_switch(profile, data)
    if (
        len(tool_names) > 1
        and settings.parallel_tool_calls is None
        and profile.parallel_tool_calls_param
        and not profile.parallel_tool_calls_default
    ):
        data["parallel_tool_calls"] = True
    choice = data.pop("tool_choice", None)
    force, emulate, required_tool = _forcing(profile, choice, tool_names, thinking)
    if choice in ("auto", "none"):
        data["tool_choice"] = choice
    return RunPlan(ModelSettings(**data), thinking, must_stream, force, emulate, required_tool)


def _translate_thinking_switch(profile: ModelProfile, data: dict[str, Any]) -> None:
    """Send `enable_thinking` the way this endpoint takes it."""
    if profile.thinking_switch == "chat_template_kwargs" and "enable_thinking" in data:
        value = data.pop("enable_thinking")
        extra = dict(data.get("extra_body") or {})
        kwargs = dict(extra.get("chat_template_kwargs") or {})
        kwargs.setdefault("enable_thinking", value)
        extra["chat_template_kwargs"] = kwargs
        data["extra_body"] = extra


def _forcing(
    profile: ModelProfile, choice: Any, tool_names: list[str], thinking: bool
) -> tuple[Any, bool, str | None]:
    """(first turn's tool_choice, emulate by asking again, the tool that must be called)."""
    if choice is None or choice in ("auto", "none"):
        return None, False, None
    if not tool_names:
        raise UserError(f"tool_choice={choice!r} needs at least one tool")
    name: str | None = None
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
    elif choice != "required":
        name = choice
    if name is not None and name not in tool_names:
        raise UserError(
            f"tool_choice names {name!r}, which is not a tool of this agent; "
            f"tools: {', '.join(tool_names) or 'none'}"
        )
    if choice == "required" and len(tool_names) == 1:
        name = tool_names[0]  # where "required" is missing, a named function does the same
    can_force = profile.thinking_forced_tool or not thinking
    if name is not None and can_force and "function" in profile.tool_choice_values:
        return {"type": "function", "function": {"name": name}}, False, None
    if name is None and can_force and "required" in profile.tool_choice_values:
        return "required", False, None
    return None, True, name


def check_settings(profile: ModelProfile, settings: ModelSettings, tool_names: list[str]) -> None:
    """Check the settings against this provider's and model's documented ranges.

    Raises:
        UserError: Naming the setting, the limit and where it comes from.
    """
    where = f"{profile.provider} ({profile.model})"
    profile.check_thinking(settings.enable_thinking)
    limits = (
        ("seed", settings.seed, profile.seed_max),
        ("top_logprobs", settings.top_logprobs, profile.top_logprobs_max),
        ("n", settings.n, 1 if tool_names else profile.n_max),
        ("max_tokens", settings.max_tokens, profile.max_output_tokens),
        ("thinking_budget", settings.thinking_budget, profile.max_thinking_tokens),
    )
    for name, value, maximum in limits:
        if value is not None and maximum is not None and value > maximum:
            why = " with tools" if name == "n" and tool_names else ""
            raise UserError(f"{name}={value} is over {where}'s maximum of {maximum}{why}")
    if settings.thinking_budget is not None and not profile.thinking_budget:
        raise UserError(f"thinking_budget is not taken by {where}")
    if settings.preserve_thinking and not profile.preserve_thinking:
        raise UserError(
            f"preserve_thinking is not taken by {where}; "
            "pass profile={'preserve_thinking': True} if your model supports it"
        )


async def build_request(state: RunProgress) -> ModelRequest:
    """The request for the turn about to start."""
    cfg = state.config
    messages = state.messages
    if cfg.system_prompt is not None or (cfg.output_type and not cfg.json_schema_format):
        text = cfg.system_prompt() if cfg.system_prompt is not None else None
        if cfg.output_type is not None and not cfg.json_schema_format:
            text = ((text + "\n\n") if text else "") + _schema_instruction(cfg.output_type)
        if text is not None:
            replaced = messages[0] if messages and messages[0].get("role") == "system" else None
            system = _system_message(text, replaced, cfg.cache_instructions)
            if replaced is not None:
                messages[0] = system
            else:
                messages.insert(0, system)
    if any("reasoning_content" in m for m in messages):
        # Reasoning goes back only on tool-call turns, and only where the provider wants it.
        messages = [
            m
            if "reasoning_content" not in m or (cfg.send_reasoning and m.get("tool_calls"))
            else {k: v for k, v in m.items() if k != "reasoning_content"}
            for m in messages
        ]
    if cfg.fit_context is not None:
        messages, state.trimmed = await cfg.fit_context(list(messages))
    params, extra = cfg.settings.split()
    if cfg.output_type is not None:
        params["response_format"] = _response_format(cfg.output_type, cfg.json_schema_format)
    if cfg.force_tool_choice is not None and state.turns == 1:
        params["tool_choice"] = cfg.force_tool_choice
    tools: list[dict[str, Any]] | None = cfg.registry.schemas() or None
    if state.tools_off:
        tools = None
        params.pop("tool_choice", None)
        params.pop("parallel_tool_calls", None)
    elif tools is None:
        params.pop("tool_choice", None)
        params.pop("parallel_tool_calls", None)
    return ModelRequest(cfg.model.model_name, list(messages), tools, params, extra)


def _system_message(text: str, replaced: dict[str, Any] | None, cache: bool) -> dict[str, Any]:
    """The system message; marked cacheable when asked, or when the one it replaces was."""
    marker: Any = CACHE_MARKER if cache else None
    if replaced is not None and isinstance(replaced.get("content"), list):
        for part in replaced["content"]:
            if isinstance(part, dict) and part.get("cache_control"):
                marker = part["cache_control"]
    if marker is None:
        return {"role": "system", "content": text}
    return {
        "role": "system",
        "content": [{"type": "text", "text": text, "cache_control": marker}],
    }


def _schema_instruction(output_type: type[BaseModel]) -> str:
    schema = json.dumps(output_type.model_json_schema(), ensure_ascii=False)
    return (
        "Reply with one JSON object only, no prose and no code fence, that matches this JSON "
        f"schema:\n{schema}"
    )


def _response_format(output_type: type[BaseModel], json_schema: bool) -> dict[str, Any]:
    if not json_schema:
        return {"type": "json_object"}
    return {
        "type": "json_schema",
        "json_schema": {
            "name": output_type.__name__,
            "schema": output_type.model_json_schema(),
            "strict": False,
        },
    }
