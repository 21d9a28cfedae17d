"""Turn a model reply — a whole `chat.completion` or a stream of chunks — into one assistant turn.

Both paths end in the same `AssistantTurn`, so streamed and non-streamed runs produce the same
messages. The stream assembler is defensive about what real providers send: tool-call deltas
without `index` (merged by `id`), `id` repeated in every chunk or sent only once, the function name
arriving late, `arguments` null or empty, parallel calls interleaved, a usage-only last chunk with
`choices: []`, `reasoning_content` deltas, `<think>` text in `content`, `finish_reason`
"stop" although tool calls are present, and parallel calls that share one `index` (a new `id` at
a known index is a new call).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.errors import ModelBehaviorError
from agent.messages import Usage
from agent.textcalls import repair_json, split_think

__all__ = [
    "AssistantTurn",
    "PendingCall",
    "StreamAssembler",
    "build_turn",
    "decode_arguments",
    "parse_completion",
]

MAX_ARGUMENT_CHARS = 4_000_000
"""The default bound: tool-call arguments longer than this go back to the model as an error,
never parsed (`Agent(max_argument_chars=...)`)."""

_THINK_OPEN = "<think>"
_THINK_CLOSE = "</think>"


@dataclass(slots=True)
class PendingCall:
    """A tool call the model asked for, with its arguments decoded once.

    Attributes:
        id: The call id (made up when the provider sent none).
        name: The tool name as the model wrote it.
        arguments_text: Canonical JSON text of the arguments, as sent back to the provider.
        arguments: The decoded arguments, or None when they were not a JSON object.
        error: Why the arguments could not be decoded, else None.
    """

    id: str
    name: str
    arguments_text: str
    arguments: dict[str, Any] | None
    error: str | None = None


@dataclass(slots=True)
class AssistantTurn:
    """One assistant reply, normalised.

    Attributes:
        message: The OpenAI-format assistant message to append to the conversation.
        calls: Its tool calls, decoded.
        usage: The turn's token usage.
        finish_reason: As the provider reported it (may be None or wrong; do not trust it).
        reasoning: Reasoning text, from `reasoning_content` or a `<think>` block.
    """

    message: dict[str, Any]
    calls: list[PendingCall] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    finish_reason: str | None = None
    reasoning: str | None = None

    @property
    def content(self) -> str:
        """The reply's text ('' when it has none)."""
        content = self.message.get("content")
        return content if isinstance(content, str) else ""


def _new_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


def decode_arguments(
    raw: Any, *, max_chars: int = MAX_ARGUMENT_CHARS
) -> tuple[str, dict[str, Any] | None, str | None]:
    """Decode a tool call's `arguments` into (canonical JSON text, object, error).

    Null or empty arguments mean `{}`. Text that is not a JSON object is kept out of the
    conversation (replaced by `{}`) because DashScope rejects invalid `function.arguments` with a
    400 on the next request; the error goes to the model in the tool's reply instead.
    """
    if raw is None:
        return "{}", {}, None
    text = raw if isinstance(raw, str) else None
    if text is not None and len(text) > max_chars:
        return "{}", None, f"the arguments are longer than {max_chars:,} characters"
    if text is not None and not text.strip():
        return "{}", {}, None
    try:
        if text is None:
            value = raw
        else:
            try:
                value = json.loads(text, parse_constant=_no_constant)
            except json.JSONDecodeError as exc:
                value = repair_json(text)
                if value is None:
                    return (
                        "{}",
                        None,
                        (f"the arguments are not valid JSON ({exc.msg} at char {exc.pos})"),
                    )
        if not isinstance(value, dict):
            return "{}", None, f"the arguments must be a JSON object, got {type(value).__name__}"
        # Strict JSON back to the provider: NaN and Infinity are not JSON (DashScope refuses them).
        return json.dumps(value, ensure_ascii=False, allow_nan=False), value, None
    except ValueError as exc:  # NaN, Infinity, or a non-finite number from the repair
        return "{}", None, f"the arguments are not strict JSON ({exc})"
    except RecursionError:
        return "{}", None, "the arguments are nested too deeply"


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def build_turn(
    content: str | None,
    reasoning: str | None,
    raw_calls: list[dict[str, Any]],
    usage: Usage,
    finish_reason: str | None,
    *,
    max_argument_chars: int = MAX_ARGUMENT_CHARS,
    native_calls: Sequence[PendingCall] = (),
) -> AssistantTurn:
    """Build a normalised turn from its parts (content, reasoning, raw OpenAI tool calls).

    `native_calls`, already decoded (a reply's own tool calls, when text calls are added to
    them), come first; a raw call without an id gets a fresh one.
    """
    if content and (_THINK_CLOSE in content):
        think, content = split_think(content)
        content = content.lstrip()
        reasoning = (reasoning + "\n" + think) if reasoning and think else (reasoning or think)
    calls = list(native_calls)
    for raw in raw_calls:
        fn = raw.get("function") or {}
        name = fn.get("name") or ""
        text, obj, err = decode_arguments(fn.get("arguments"), max_chars=max_argument_chars)
        calls.append(PendingCall(raw.get("id") or _new_id(), name, text, obj, err))
    message: dict[str, Any] = {"role": "assistant", "content": content or None}
    if calls:
        message["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments_text},
            }
            for call in calls
        ]
        if message["content"] is not None and not message["content"].strip():
            message["content"] = None
    elif message["content"] is None:
        message["content"] = ""
    if reasoning:
        message["reasoning_content"] = reasoning
    return AssistantTurn(message, calls, usage, finish_reason, reasoning or None)


def parse_completion(
    body: dict[str, Any], *, max_argument_chars: int = MAX_ARGUMENT_CHARS
) -> AssistantTurn:
    """Normalise a whole `chat.completion` body.

    Raises:
        ModelBehaviorError: When the body holds no choice.
    """
    choices = body.get("choices")
    if not choices:
        raise ModelBehaviorError(f"the model's reply has no choices: {json.dumps(body)[:300]}")
    choice = choices[0]
    msg = choice.get("message") or {}
    content = msg.get("content")
    if isinstance(content, list):  # DashScope-native style [{"text": ...}]
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return build_turn(
        content,
        msg.get("reasoning_content") or msg.get("reasoning"),
        list(msg.get("tool_calls") or ()),
        Usage.from_openai(body.get("usage")),
        choice.get("finish_reason"),
        max_argument_chars=max_argument_chars,
    )


class StreamAssembler:
    """Merge `chat.completion.chunk` dicts into one assistant turn.

    `feed` returns the text and reasoning to show for each chunk, so callers can emit deltas as
    they arrive; `finish` returns the assembled turn.
    """

    def __init__(self, *, max_argument_chars: int = MAX_ARGUMENT_CHARS) -> None:
        self.max_argument_chars = max_argument_chars
        self._content: list[str] = []
        self._reasoning: list[str] = []
        self._calls: list[dict[str, Any]] = []
        self._by_index: dict[int, dict[str, Any]] = {}
        self._by_id: dict[str, dict[str, Any]] = {}
        self._last: dict[str, Any] | None = None
        self._usage: dict[str, Any] | None = None
        self._finish: str | None = None
        self._head = ""  # content held back while it may be an opening <think>
        self._in_think: bool | None = None  # None: undecided; True: inside <think>
        self.chunks = 0

    def feed(self, chunk: dict[str, Any]) -> tuple[str, str]:
        """Take one chunk; return (text delta, reasoning delta) to show now."""
        self.chunks += 1
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        text_out = ""
        reasoning_out = ""
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or choice.get("message") or {}
            r = delta.get("reasoning_content") or delta.get("reasoning")
            if r:
                self._reasoning.append(r)
                reasoning_out += r
            c = delta.get("content")
            if c:
                t, r2 = self._route_content(c)
                text_out += t
                reasoning_out += r2
            for tc in delta.get("tool_calls") or ():
                self._merge_call(tc)
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
        return text_out, reasoning_out

    def _route_content(self, piece: str) -> tuple[str, str]:
        """Send `<think>` text in `content` to reasoning, the rest to text."""
        if self._in_think is False:
            self._content.append(piece)
            return piece, ""
        if self._in_think is None:
            self._head += piece
            head = self._head.lstrip()
            if not head:
                return "", ""
            if head.startswith(_THINK_OPEN):
                self._in_think = True
                piece, self._head = head[len(_THINK_OPEN) :], ""
            elif _THINK_OPEN.startswith(head):
                return "", ""  # could still become "<think>"
            else:
                self._in_think = False
                piece, self._head = self._head, ""
                self._content.append(piece)
                return piece, ""
        # inside <think>
        end = piece.find(_THINK_CLOSE)
        if end == -1:
            self._reasoning.append(piece)
            return "", piece
        think, rest = piece[:end], piece[end + len(_THINK_CLOSE) :].lstrip()
        self._reasoning.append(think)
        self._in_think = False
        if rest:
            self._content.append(rest)
        return rest, think

    def _merge_call(self, tc: dict[str, Any]) -> None:
        index = tc.get("index")
        call_id = tc.get("id")
        slot: dict[str, Any] | None = None
        if index is not None:
            slot = self._by_index.get(index)
            if slot is not None and call_id and slot["id"] and call_id != slot["id"]:
                # Ollama and SGLang stream parallel calls all at index 0: a new id at a known
                # index starts a new call.
                slot = None
        elif call_id:
            slot = self._by_id.get(call_id)
        elif self._last is not None:
            slot = self._last  # neither index nor id: a continuation of the last call
        if slot is None:
            slot = {"id": call_id, "name": "", "args": []}
            self._calls.append(slot)
            if index is not None:
                self._by_index[index] = slot
        if call_id:
            if not slot["id"]:
                slot["id"] = call_id
            self._by_id.setdefault(call_id, slot)
        fn = tc.get("function") or {}
        name = fn.get("name")
        if name and not slot["name"]:
            slot["name"] = name
        args = fn.get("arguments")
        if args:
            slot["args"].append(args if isinstance(args, str) else json.dumps(args))
        self._last = slot

    @property
    def calls_started(self) -> int:
        """How many tool calls have begun arriving."""
        return len(self._calls)

    def finish(self) -> AssistantTurn:
        """Return the assembled turn."""
        if self._in_think is None and self._head:
            self._content.append(self._head)
        raw_calls = [
            {
                "id": slot["id"],
                "type": "function",
                "function": {"name": slot["name"], "arguments": "".join(slot["args"])},
            }
            for slot in self._calls
        ]
        reasoning = "".join(self._reasoning) or None
        return build_turn(
            "".join(self._content),
            reasoning.strip() if reasoning else None,
            raw_calls,
            Usage.from_openai(self._usage),
            self._finish,
            max_argument_chars=self.max_argument_chars,
        )
