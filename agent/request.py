"""Request preparation: the conversation, tools and parameters of one model turn."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from agent.models.base import ModelRequest
from agent.state import RunState

__all__ = ["build_request"]


def build_request(state: RunState) -> ModelRequest:
    """The request for the turn about to start."""
    cfg = state.config
    messages = state.messages
    if cfg.system_prompt is not None or (cfg.output_type and not cfg.json_schema_format):
        text = cfg.system_prompt() if cfg.system_prompt is not None else None
        if cfg.output_type is not None and not cfg.json_schema_format:
            text = ((text + "\n\n") if text else "") + _schema_instruction(cfg.output_type)
        if text is not None:
            system = {"role": "system", "content": text}
            if messages and messages[0].get("role") == "system":
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
