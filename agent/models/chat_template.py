"""Render a conversation into the local model's prompt with its own chat template.

A GGUF file carries the Jinja chat template its model was trained with; we render it here, in a
sandbox, the way Hugging Face's `transformers` does, with the tool schemas and tool-call arguments
as objects. A GGUF without a template gets Qwen2.5's (`fallback_chat_template.j2`).
"""

from __future__ import annotations

import contextlib
import json
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Any

import jinja2
import jinja2.sandbox

from agent.errors import BadRequestError, ModelNotSupportedError

__all__ = ["ChatTemplate", "fallback_template_source"]


@cache
def fallback_template_source() -> str:
    """Return Qwen2.5's chat template (ChatML, hermes-style tools), for a GGUF that has none."""
    return resources.files("agent.models").joinpath("fallback_chat_template.j2").read_text("utf-8")


class ChatTemplate:
    """A compiled chat template and the special tokens it may refer to.

    Args:
        source: The Jinja source, or None for the fallback template.
        special_tokens: Values for `bos_token`, `eos_token` and the like.

    Raises:
        jinja2.TemplateError: The source does not compile.
    """

    def __init__(self, source: str | None, special_tokens: dict[str, str] | None = None) -> None:
        self.source = source or fallback_template_source()
        self._template = _environment().from_string(self.source)
        self._special = dict(special_tokens or {})

    def render(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        options: dict[str, Any],
    ) -> str:
        """Return the prompt for `messages`, ending with the assistant's generation prompt.

        Args:
            messages: OpenAI chat messages.
            tools: OpenAI tool schemas to show the model, or None.
            options: The request's options; `chat_template_kwargs` and `enable_thinking` reach
                the template.

        Raises:
            BadRequestError: The template refused the conversation (`raise_exception`), or a
                message is malformed.
            ModelNotSupportedError: A message has a part that is not text.
        """
        try:
            shaped = [_template_message(message) for message in _label_results(messages)]
        except (TypeError, AttributeError, ValueError) as exc:
            # A message of the wrong shape (tool_calls not a list, a call that is not an
            # object, an id that is a list): the request is at fault, as a server would say.
            raise BadRequestError(
                f"The local model cannot read a malformed message in the conversation: {exc}",
                status_code=400,
                provider_message=str(exc),
            ) from exc
        context: dict[str, Any] = dict(options.get("chat_template_kwargs") or {})
        if "enable_thinking" in options:
            context["enable_thinking"] = bool(options["enable_thinking"])
        context.update(
            messages=shaped,
            tools=tools or None,
            add_generation_prompt=True,
            **self._special,
        )
        try:
            return self._template.render(**context)
        except jinja2.TemplateError as exc:
            raise BadRequestError(
                f"The local model's chat template refused the conversation: {exc}",
                status_code=400,
                provider_message=str(exc),
            ) from exc


@cache
def _environment() -> jinja2.sandbox.ImmutableSandboxedEnvironment:
    """Return a sandboxed Jinja environment that renders chat templates as transformers does."""
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, undefined=jinja2.Undefined
    )

    def tojson(
        value: Any, indent: int | None = None, separators: Any = None, sort_keys: bool = False
    ) -> str:
        # Jinja's own tojson escapes <, > and & for HTML, which would garble the prompt.
        return json.dumps(
            value, ensure_ascii=False, indent=indent, separators=separators, sort_keys=sort_keys
        )

    def raise_exception(message: str) -> None:
        raise jinja2.TemplateError(message)

    def strftime_now(fmt: str) -> str:
        return datetime.now().strftime(fmt)

    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def _label_results(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Name the call each result answers, where one request got several results.

    Templates show a tool's result without its call. After several calls for one user message
    the model has a list of bare values ("144", "100") and has to pair them up with its calls
    itself; a small model loses track and answers something else. So, where a user message led
    to more than one result, each of those is written as `name(arguments) returned: result`. A
    single result is left as the template shows it: labelled, it made the model likelier to
    echo the question instead of making its next call.
    """
    segments: list[list[dict[str, Any]]] = [[]]  # each user message with what followed it
    for message in messages:
        if message.get("role") == "user":
            segments.append([])
        segments[-1].append(message)
    return [message for segment in segments for message in _named_results(segment)]


def _named_results(segment: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if sum(message.get("role") == "tool" for message in segment) < 2:
        return segment
    calls: dict[Any, dict[str, Any]] = {}  # by id, the latest call (some servers reuse ids)
    named = []
    for message in segment:
        if message.get("role") == "assistant":
            for call in message.get("tool_calls") or ():
                if isinstance(call, dict):
                    calls[call.get("id")] = call.get("function") or {}
        elif message.get("role") == "tool" and message.get("tool_call_id") in calls:
            function = calls[message["tool_call_id"]]
            arguments = function.get("arguments")
            if not isinstance(arguments, str):
                arguments = json.dumps(arguments, ensure_ascii=False)
            content = _text_of(message.get("content"))
            message = {
                **message,
                "content": f"{function.get('name')}({arguments}) returned: {content}",
            }
        named.append(message)
    return named


def _template_message(message: dict[str, Any]) -> dict[str, Any]:
    """Shape one OpenAI message for the chat template.

    Content becomes a string (templates concatenate it) and tool-call arguments become
    objects: the template serialises them itself, and a JSON string inside JSON confuses the
    model on the next turn.
    """
    shaped = dict(message)
    shaped["content"] = _text_of(message.get("content"))
    calls = message.get("tool_calls")
    if calls:
        shaped_calls = []
        for call in calls:
            call = dict(call)
            function = dict(call.get("function") or {})
            arguments = function.get("arguments")
            if isinstance(arguments, str):
                # Malformed text from the model is shown back to it verbatim.
                with contextlib.suppress(ValueError):
                    function["arguments"] = json.loads(arguments) if arguments.strip() else {}
            call["function"] = function
            shaped_calls.append(call)
        shaped["tool_calls"] = shaped_calls
    return shaped


def _text_of(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text":
                parts.append(str(part.get("text", "")))
            elif isinstance(part, str):
                parts.append(part)
            else:
                raise ModelNotSupportedError(
                    "The local model reads text only; this message has a "
                    f"{part.get('type') if isinstance(part, dict) else type(part).__name__} part."
                )
        return "".join(parts)
    return str(content)
