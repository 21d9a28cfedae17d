"""Context limits: each request's messages fitted to the model's context window before it is sent.

Tokens are estimated without a tokenizer, erring high; when the conversation does not fit, the
user's `history_processor` may rewrite it, and then the oldest turns are left out whole.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from agent.errors import AgentError, HookError, UserError
from agent.models.profile import ModelProfile
from agent.settings import ModelSettings

__all__ = [
    "DEFAULT_CONTEXT_TOKENS",
    "IMAGE_TOKENS",
    "VIDEO_TOKENS",
    "ContextFitter",
    "estimate_tokens",
    "make_fitter",
    "message_tokens",
    "text_tokens",
]

Fitter = Callable[[list[dict[str, Any]]], Awaitable[tuple[list[dict[str, Any]], int]]]
Message = dict[str, Any]

DEFAULT_CONTEXT_TOKENS = 32_768
"""The context window assumed for a model whose profile and catalogue entry give none."""
DEFAULT_REPLY_TOKENS = 8_192
"""The room kept for the reply when neither the settings nor the profile bound it."""
IMAGE_TOKENS = 1_280
"""One image part (and one frame of a video given as frames): DashScope's default cap per image."""
VIDEO_TOKENS = 16_384
"""One video given by URL, whose length is unknown here."""
MESSAGE_TOKENS = 6
"""Each message's framing in the chat template (`<|im_start|>role` ... `<|im_end|>`)."""
TOOL_CALL_TOKENS = 12
"""Each tool call's framing (`<tool_call>{"name": ..., "arguments": ...}</tool_call>`)."""
BYTES_PER_TOKEN = 3.0
"""UTF-8 bytes a token of text other than CJK and digits: ~3 for JSON, ~4 for English prose."""

# Lead bytes of the three-byte UTF-8 sequences (U+0800..U+FFFF): CJK, kana, Hangul, ...
_LEAD3 = bytes(range(0xE0, 0xF0))
_DIGITS = b"0123456789"
_CACHED_LENGTH = 256  # shorter strings are estimated afresh: cheaper than a look-up


def text_tokens(text: str) -> int:
    """Estimate the tokens of a text for Qwen's tokenizer, erring high.

    Each character of three UTF-8 bytes (U+0800..U+FFFF: CJK ideographs, kana, Hangul, full-width
    forms, and also Indic and Thai letters and typographic punctuation) counts one token, as
    does each ASCII digit (Qwen splits numbers into single digits); the other bytes count one
    token per `BYTES_PER_TOKEN`. That over-counts English prose by about a third, Chinese by
    a little, and is close for JSON and code. Linear in the length, and in C: a few
    milliseconds for 300,000 CJK characters.
    """
    if not text:
        return 0
    raw = text.encode("utf-8", "surrogatepass")
    digits = len(raw) - len(raw.translate(None, _DIGITS))
    wide = 0 if text.isascii() else len(raw) - len(raw.translate(None, _LEAD3))
    return wide + digits + math.ceil((len(raw) - 3 * wide - digits) / BYTES_PER_TOKEN)


def _bound_tokens(text: str) -> int:
    """An upper bound of `text_tokens`, in constant time (4 bytes a character at most)."""
    return math.ceil(len(text) * max(1.0, 4 / BYTES_PER_TOKEN))


def _bound(message: Message) -> int:
    return message_tokens(message, _bound_tokens)


def _part_tokens(part: Any, text: Callable[[str], int]) -> int:
    if isinstance(part, str):
        return text(part)
    if not isinstance(part, dict):
        return 0
    kind = part.get("type")
    if kind == "text" or (kind is None and "text" in part):
        value = part.get("text")
        return text(value) if isinstance(value, str) else 0
    if kind == "video_url":
        return VIDEO_TOKENS
    if kind == "video" and isinstance(part.get("video"), list):
        return IMAGE_TOKENS * len(part["video"])
    return IMAGE_TOKENS  # image_url, image, input_audio and whatever else carries media


def message_tokens(message: Message, text: Callable[[str], int] = text_tokens) -> int:
    """Estimate one message's tokens: framing, content, tool calls and any other text field.

    Args:
        message: An OpenAI-format message.
        text: The estimate of one string (`text_tokens`).
    """
    total = MESSAGE_TOKENS
    for key, value in message.items():
        if key == "role" or value is None:
            continue
        if key == "content" and isinstance(value, list):
            total += sum(_part_tokens(part, text) for part in value)
        elif key == "tool_calls" and isinstance(value, list):
            for call in value:
                function = call.get("function") if isinstance(call, dict) else None
                total += TOOL_CALL_TOKENS
                if isinstance(function, dict):
                    total += text(str(function.get("name") or ""))
                    args = function.get("arguments")
                    total += text(args if isinstance(args, str) else str(args or ""))
        elif isinstance(value, str):
            total += text(value)  # content, reasoning_content, name, tool_call_id
    return total


def estimate_tokens(messages: Sequence[Message]) -> int:
    """Estimate the tokens of a list of messages (see `text_tokens` for the rules)."""
    return sum(message_tokens(m) for m in messages)


@dataclass(slots=True)
class _Unit:
    """Messages kept or left out together: a user message, or an assistant turn and its results."""

    messages: list[Message]
    tokens: int
    user: bool
    complete: bool = True  # every tool call of the assistant message has its result


def _units(body: Sequence[Message], cost: Callable[[Message], int]) -> tuple[list[_Unit], int]:
    """Group the messages into units; also return how many orphan tool messages were left out.

    A tool message belongs to the assistant message just before its run of tool messages when
    its `tool_call_id` is one of that message's calls; any other is an orphan.
    """
    units: list[_Unit] = []
    orphans = 0
    i, n = 0, len(body)
    while i < n:
        message = body[i]
        i += 1
        role = message.get("role")
        if role == "tool":
            orphans += 1
            continue
        calls = message.get("tool_calls") if role == "assistant" else None
        unit = _Unit([message], cost(message), role == "user")
        units.append(unit)
        if not calls or not isinstance(calls, list):
            continue
        ids = {call.get("id") for call in calls if isinstance(call, dict)}
        answered: set[Any] = set()
        while i < n and body[i].get("role") == "tool":
            result = body[i]
            i += 1
            if result.get("tool_call_id") in ids:
                unit.messages.append(result)
                unit.tokens += cost(result)
                answered.add(result.get("tool_call_id"))
            else:
                orphans += 1
        unit.complete = answered >= ids
    return units, orphans


def _fit(messages: list[Message], budget: int, cost: Callable[[Message], int]) -> list[Message]:
    """Leave out the oldest units until the rest fits `budget`; always drop orphans.

    Kept whatever the budget: the leading system message, and the latest user message with
    everything after it (the turn in progress, which the model needs whole). Returns `messages`
    itself when nothing is left out.
    """
    head = messages[:1] if messages and messages[0].get("role") == "system" else []
    units, orphans = _units(messages[len(head) :], cost)
    current = max((k for k, u in enumerate(units) if u.user), default=max(len(units) - 1, 0))
    older = [u for u in units[:current] if u.complete]
    tail = units[current:]
    room = budget - sum(cost(m) for m in head) - sum(u.tokens for u in tail)
    start = len(older)
    while start > 0 and older[start - 1].tokens <= room:
        start -= 1
        room -= older[start].tokens
    if start > 0:
        # Something was left out for room: the history sent begins with a user message.
        while start < len(older) and not older[start].user:
            start += 1
    if start == 0 and not orphans and len(older) == current:
        return messages
    kept = head + [m for u in older[start:] + tail for m in u.messages]
    return kept


class ContextFitter:
    """Fits a request's messages to the context window; see `make_fitter`.

    Attributes:
        window: The context window, in tokens.
        reply_tokens: The room kept for the reply.
        budget: The tokens the messages may take (window less reply room, margin and reserve).
        processor: The user's `history_processor`, or None.
    """

    def __init__(
        self,
        window: int,
        reply_tokens: int,
        *,
        reserve_tokens: int = 0,
        processor: Callable[..., Any] | None = None,
    ) -> None:
        self.window = window
        self.reply_tokens = reply_tokens
        margin = max(64, window // 50)
        self.budget = max(window - reply_tokens - margin - reserve_tokens, window // 4)
        self.processor = processor
        self._cache: dict[int, tuple[str, int]] = {}

    def _text(self, text: str) -> int:
        # Keyed by identity with the string held, so an id is never reused while cached;
        # strings are immutable, so a hit is always right. Lives as long as the run.
        if len(text) < _CACHED_LENGTH:
            return text_tokens(text)
        hit = self._cache.get(id(text))
        if hit is not None and hit[0] is text:
            return hit[1]
        tokens = text_tokens(text)
        self._cache[id(text)] = (text, tokens)
        return tokens

    def tokens(self, message: Message) -> int:
        """Estimate one message's tokens (cached per long string)."""
        return message_tokens(message, self._text)

    async def __call__(self, messages: list[Message]) -> tuple[list[Message], int]:
        """Return the messages to send and how many of `messages` were left out."""
        if sum(_bound(m) for m in messages) <= self.budget:
            fitted = _fit(messages, self.budget, _bound)  # only orphans can go
            return fitted, len(messages) - len(fitted)
        if sum(self.tokens(m) for m in messages) <= self.budget or self.processor is None:
            fitted = _fit(messages, self.budget, self.tokens)
            return fitted, len(messages) - len(fitted)
        processed = await self._process(messages)
        fitted = _fit(processed, self.budget, self.tokens)
        sent = {id(m) for m in fitted}
        return fitted, sum(1 for m in messages if id(m) not in sent)

    async def _process(self, messages: list[Message]) -> list[Message]:
        """Call the history processor and check what it returns.

        Raises:
            HookError: The processor raised (its exception is `__cause__`).
            UserError: It returned something other than a non-empty list of messages.
        """
        assert self.processor is not None
        name = getattr(self.processor, "__name__", type(self.processor).__name__)
        try:
            value = self.processor(list(messages), self.budget)
            if inspect.isawaitable(value):
                value = await value
        except AgentError:
            raise
        except Exception as exc:
            raise HookError(f"history_processor {name} raised {type(exc).__name__}: {exc}") from exc
        if (
            not isinstance(value, list | tuple)
            or not value
            or not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in value)
        ):
            raise UserError(
                f"history_processor {name} must return a non-empty list of message dicts, "
                f"each with a 'role'; got {type(value).__name__}"
                + (" (empty)" if isinstance(value, list | tuple) and not value else "")
            )
        return list(value)


def _reply_tokens(profile: ModelProfile, settings: ModelSettings, window: int) -> int:
    """The room for the reply: the settings' bound, else the model's, else a default."""
    asked = [v for v in (settings.max_completion_tokens, settings.max_tokens) if v is not None]
    if asked:
        return max(asked)
    return min(profile.max_output_tokens or DEFAULT_REPLY_TOKENS, window // 4)


def make_fitter(
    profile: ModelProfile,
    settings: ModelSettings,
    context_tokens: int | None,
    processor: Callable[..., Any] | None,
    *,
    reserve_tokens: int = 0,
) -> ContextFitter:
    """Build the function that fits each request's messages to the context window.

    The window is `context_tokens` if given, else the profile's, else `DEFAULT_CONTEXT_TOKENS`.
    The messages may take the window less room for the reply (`max_completion_tokens` or
    `max_tokens` if set, else the model's longest reply capped at a quarter of the window), a
    margin of 2% (at least 64 tokens) and `reserve_tokens`; never less than a quarter of the
    window. A conversation within that goes as it is, at the cost of a sum over its messages.
    Otherwise `processor(messages, budget)` (sync or async), if given, may rewrite it; then the
    oldest units are left out whole (a tool call with all its results, never one alone), the
    leading system message and the latest user message with what follows it staying, and the
    history sent starts with a user message. Orphan tool messages always go (a 400 on
    DashScope), as do earlier assistant tool calls that lack some of their results. When even
    what must stay does not fit, it is sent all the same: the provider's error says so better
    than a guess from an estimate.

    Args:
        profile: The model's profile (`context_tokens`, `max_output_tokens`).
        settings: The run's settings (`max_tokens`, `max_completion_tokens`).
        context_tokens: The window to fit into instead of the model's (`Agent(context_tokens=)`).
        processor: `Agent(history_processor=)`: called with a copy of the message list and the
            token budget; returns the messages to send. It must not change the message dicts
            in place; messages it keeps as the same objects do not count as left out.
        reserve_tokens: Tokens the request carries outside its messages (the tool schemas):
            not counted unless given here.

    Returns:
        An async callable: messages → (messages to send, how many of them were left out).

    Raises:
        UserError: `context_tokens` is below 1.
    """
    if context_tokens is not None and context_tokens < 1:
        raise UserError(f"context_tokens must be at least 1, got {context_tokens}")
    window = context_tokens or profile.context_tokens or DEFAULT_CONTEXT_TOKENS
    reply = _reply_tokens(profile, settings, window)
    return ContextFitter(window, reply, reserve_tokens=reserve_tokens, processor=processor)
