"""Read tool calls that a model wrote as text: Qwen's `<tool_call>` blocks, JSON fences, bare JSON.

Pure functions with no model dependency. The embedded local model and endpoints without native
function calling reply in text; this module turns such a reply into calls and leftover content.
It also owns the reply clean-up both paths share: the `<think>` splitter and the JSON repairer.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "Mode",
    "ParsedCall",
    "ParsedText",
    "StreamScanner",
    "StreamView",
    "is_markup_only",
    "looks_like_tool_call",
    "parse_tool_calls",
    "repair_json",
    "split_think",
    "stream_view",
]

Mode = Literal["auto", "always"]
"""How readily text is read as calls: "always" takes every form (JSON in prose too, given the
tool names); "auto" only what is unmistakable (a reply that is nothing but calls, or `<tool_call>`
blocks naming the tools after prose)."""

_OPEN_THINK = "<think>"
_CLOSE_THINK = "</think>"
_OPEN_CALL = "<tool_call>"
_CLOSE_CALL = "</tool_call>"
# Qwen3-Coder's XML form inside a <tool_call> block.
_XML_FUNCTION_RE = re.compile(r"<function=([^>\n]+)>")
_XML_PARAMETER_RE = re.compile(r"<parameter=([^>\n]+)>")
_CLOSE_FUNCTION = "</function>"
_CLOSE_PARAMETER = "</parameter>"
# Languages a fenced block may name and still be read as a call; other fences are plain code.
_CALL_FENCE_LANGS = frozenset({"", "json", "json5", "jsonc", "tool_call", "tool_code"})
_FENCE_OPEN_RE = re.compile(r"```[ \t]*([A-Za-z0-9_+.-]*)[ \t]*\n")
_FENCE_OPEN_PARTIAL_RE = re.compile(r"`{1,3}[ \t]*[A-Za-z0-9_+.-]*[ \t]*\Z")
_CALL_ONLY_KEYS = frozenset({"name", "type", "id"})
# Characters that may open a call: tags and fences always, an object inside prose sometimes.
_OPENER_RE = re.compile(r"[<`{]")
_TAG_RE = re.compile(r"[<`]")
_BACKTICKS_RE = re.compile(r"`+")
# Tags and whitespace only (`<tools></tools>`, a lone `</tool_call>`), perhaps ending mid-tag.
_TAG = r"</?[A-Za-z_][\w=.:-]*\s*/?>"
_MARKUP_RE = re.compile(rf"\s*(?:{_TAG}\s*)+")
_MARKUP_PREFIX_RE = re.compile(rf"\s*(?:{_TAG}\s*)*(?:</?(?:[A-Za-z_][\w=.:-]*\s*/?)?)?")


@dataclass(frozen=True, slots=True)
class ParsedCall:
    """One tool call found in a reply.

    Attributes:
        name: The tool's name.
        arguments: The call's arguments, decoded.
    """

    name: str
    arguments: dict[str, Any]


@dataclass(slots=True)
class ParsedText:
    """A text reply split into content, reasoning and tool calls.

    Attributes:
        content: The reply with the tool-call parts and any reasoning removed, stripped.
        calls: The tool calls, in the order they appear.
        reasoning: The text inside `<think>...</think>`, stripped, or None without one.
    """

    content: str
    calls: list[ParsedCall] = field(default_factory=list)
    reasoning: str | None = None


class StreamView:
    """What part of a reply still being generated can be shown already.

    The texts are built when first read, so a caller that only wants what is new (see
    `StreamScanner.take_content`) does not pay for copying the whole reply on every piece.

    Attributes:
        reasoning: Reasoning text that is safe to show.
        content: Content text that is safe to show.
    """

    __slots__ = ("_content", "_reasoning")

    def __init__(
        self, reasoning: str | Callable[[], str] = "", content: str | Callable[[], str] = ""
    ) -> None:
        """Hold the two texts, or functions that build them on demand."""
        self._reasoning = reasoning
        self._content = content

    @property
    def reasoning(self) -> str:
        """Reasoning text that is safe to show."""
        if not isinstance(self._reasoning, str):
            self._reasoning = self._reasoning()
        return self._reasoning

    @property
    def content(self) -> str:
        """Content text that is safe to show."""
        if not isinstance(self._content, str):
            self._content = self._content()
        return self._content

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StreamView):
            return NotImplemented
        return (self.reasoning, self.content) == (other.reasoning, other.content)

    def __hash__(self) -> int:
        return hash((self.reasoning, self.content))

    def __repr__(self) -> str:
        return f"StreamView(reasoning={self.reasoning!r}, content={self.content!r})"


@dataclass(frozen=True, slots=True)
class _Rules:
    """Which forms a scan reads as calls; `<tool_call>` blocks always count.

    Attributes:
        names: The tools on offer (None: any name).
        schemas: The parameters' JSON schema of each tool, to type the values of XML calls.
        whole: A body opening with `{` or `[` may be wholly a sequence of call objects.
        fences: Fenced JSON blocks may hold calls (else every fence is plain code).
        embedded: A call object inside prose counts (only when the names are known).
    """

    names: frozenset[str] | None
    schemas: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    whole: bool = True
    fences: bool = True
    embedded: bool = True


def _rules_for(
    tool_names: Collection[str] | None,
    schemas: Mapping[str, Mapping[str, Any]] | None,
    mode: Mode,
) -> tuple[_Rules, _Rules | None]:
    """Return the rules for the content and, in "auto" mode, those of a reply wholly calls."""
    names = None if tool_names is None else frozenset(tool_names)
    table: Mapping[str, Mapping[str, Any]] = {} if schemas is None else schemas
    if mode == "always":
        return _Rules(names, table), None
    if mode == "auto":
        # After prose only tags count; fences and JSON there are the model talking about calls.
        tags_only = _Rules(names, table, whole=False, fences=False, embedded=False)
        return tags_only, _Rules(names, table, embedded=False)
    raise ValueError(f"mode must be 'auto' or 'always', got {mode!r}")


def parse_tool_calls(
    text: str,
    tool_names: Collection[str] | None = None,
    *,
    mode: Mode = "always",
    schemas: Mapping[str, Mapping[str, Any]] | None = None,
) -> ParsedText:
    """Split a model's text reply into content, reasoning and tool calls.

    Recognises, in order of appearance: Qwen's `<tool_call>{...}</tool_call>` blocks (several,
    the last possibly unterminated), Qwen3-Coder's `<tool_call><function=NAME><parameter=KEY>
    VALUE</parameter></function></tool_call>` blocks, fenced ```json (or unlabelled) blocks, and
    a reply that is wholly one JSON object, a JSON list of them, or several objects in a row. A
    call object is `{"name", "arguments"}`, `{"name", "parameters"}` or `{"function": {"name",
    "arguments"}}`, with arguments as an object or a JSON string. Broken JSON is repaired
    leniently (trailing commas, single quotes, Python literals, missing closing brackets)
    before it is given up on. When `tool_names` is given, a JSON object naming one of the tools
    is also taken from inside prose. A block that cannot be read whole stays in the content.

    In "auto" mode only unmistakable calls count: a reply that is nothing but calls (any form),
    or `<tool_call>` blocks among prose; fenced or inline JSON beside prose stays text.

    Args:
        text: The reply as generated.
        tool_names: The tools on offer; when given, calls naming others are left as text.
        mode: "always" (every form) or "auto" (only unmistakable calls).
        schemas: The JSON schema of each tool's parameters, by name: the text values of XML
            calls become the declared type (integer, number, boolean, object, array) when they
            parse as it, else stay strings.

    Returns:
        The content (calls and reasoning removed, stripped), the calls and the reasoning.

    Raises:
        ValueError: When `mode` is neither "auto" nor "always".
    """
    rules, whole = _rules_for(tool_names, schemas, mode)
    reasoning, body, _ = _split_think(text, final=True)
    if whole is not None and body.lstrip().startswith(("{", "[", "`", "<")):
        content, calls = _scan(body, whole)
        if calls and not content.strip():
            return ParsedText(content="", calls=calls, reasoning=reasoning)
    content, calls = _scan(body, rules)
    return ParsedText(content=content.strip(), calls=calls, reasoning=reasoning)


def looks_like_tool_call(text: str, tool_names: Collection[str]) -> bool:
    """Tell whether a reply is unmistakably nothing but tool calls to the given tools.

    Prose that merely contains JSON, calls to tools not on offer, or a mix of text and calls
    do not count.

    Args:
        text: The reply as generated.
        tool_names: The tools on offer.

    Returns:
        True when the reply, after reasoning and whitespace, is only calls naming those tools.
    """
    names = frozenset(tool_names)
    if not names:
        return False
    _, body, _ = _split_think(text, final=True)
    body = body.strip()
    if not body.startswith(("{", "[", "```", _OPEN_CALL)):
        return False
    # Embedded-object search is for prose; here the whole reply must be calls, so it is off.
    content, calls = _scan(body, _Rules(names, embedded=False))
    return bool(calls) and not content.strip()


def is_markup_only(text: str, *, partial: bool = False) -> bool:
    """Tell whether `text` is nothing but tags and whitespace (`<tools></tools>`).

    Such a reply is template debris, not an answer. With `partial`, text that may still become
    only markup (whitespace, or tags ending in an unfinished one) counts too.
    """
    if partial:
        return _MARKUP_PREFIX_RE.fullmatch(text) is not None
    return _MARKUP_RE.fullmatch(text) is not None


def stream_view(
    text: str, tool_names: Collection[str] | None = None, *, mode: Mode = "always"
) -> StreamView:
    """Return the reasoning and content of a partial reply that can be shown without regret.

    Text that may yet turn out to be part of a tool call (from a possible `<tool_call>`,
    fence or JSON object on) and trailing whitespace are held back. For every continuation of
    `text`, the returned content is a prefix of `parse_tool_calls(full, mode=mode).content` and
    the reasoning a prefix of its reasoning, provided a reply that reasons opens with `<think>`.

    Args:
        text: The reply generated so far.
        tool_names: The tools on offer, as given to `parse_tool_calls`.
        mode: As given to `parse_tool_calls`.

    Returns:
        The reasoning and content that are safe to show so far.
    """
    return StreamScanner(tool_names, mode=mode).feed(text)


def repair_json(text: str) -> Any:
    """Decode JSON a model wrote loosely; return None when it cannot be repaired.

    Strict JSON is tried first; then single quotes, Python's True/False/None, unquoted keys,
    trailing commas, unclosed objects or arrays and Qwen's doubled braces are fixed. A string
    left open (a reply cut short) is not repaired.

    Args:
        text: The JSON-ish text.

    Returns:
        The decoded value, or None when the text is not JSON even after repair.
    """
    return _loads_or_none(text)


def split_think(text: str) -> tuple[str | None, str]:
    """Move a reply's reasoning aside: a `<think>...</think>` block, or text before a lone close.

    An unterminated `<think>` makes the whole reply reasoning.

    Args:
        text: The whole reply.

    Returns:
        (reasoning, rest): the reasoning stripped, or None when there is none (or it is blank),
        and the text after it, unstripped.
    """
    reasoning, body, _ = _split_think(text, final=True)
    return reasoning, body


class StreamScanner:
    """Feed a reply piece by piece and get what is safe to show, as `stream_view` would say.

    Gives the same answers as calling `stream_view` on the text so far, but only looks at each
    piece once: text already decided is never scanned again, and a span still undecided (an
    open `<tool_call>` block, a fence, a JSON object) is only searched for what would decide it
    (its closing tag, fence or bracket) in the new text. A long reply costs linear time.
    """

    def __init__(
        self, tool_names: Collection[str] | None = None, text: str = "", *, mode: Mode = "always"
    ) -> None:
        """Start a scan.

        Args:
            tool_names: The tools on offer, as given to `parse_tool_calls`.
            text: Text the reply starts with (a `<think>` the prompt opened, say).
            mode: As given to `parse_tool_calls`.

        Raises:
            ValueError: When `mode` is neither "auto" nor "always".
        """
        self._rules, self._whole = _rules_for(tool_names, None, mode)
        self._parts: list[str] = []
        self._joined = ""
        self._joined_parts = 0
        self._phase: Literal["start", "thinking", "body", "after"] = "start"
        self._head = ""  # "start": the reply without its leading whitespace, a few characters
        self._tail = ""  # the last characters before the new piece, for a split "</think>"
        self._reasoning = ""  # "after": the reasoning before "</think>"
        self._content = _Content(self._rules, self._whole)
        self._taken = 0
        # After an orphan "</think>" moved the body: the content taken before, until the new
        # content is known to start with it (None) or not to (`_stalled`).
        self._taken_before: str | None = None
        self._stalled = False
        self._push(text)

    @property
    def text(self) -> str:
        """The whole reply fed so far."""
        if self._joined_parts < len(self._parts):
            self._joined += "".join(self._parts[self._joined_parts :])
            self._joined_parts = len(self._parts)
        return self._joined

    def feed(self, piece: str) -> StreamView:
        """Add generated text and return the reasoning and content safe to show so far."""
        self._push(piece)
        phase = self._phase
        if phase == "thinking":
            parts, count = self._parts, len(self._parts)
            return StreamView(lambda: _thinking_view(parts, count))
        ledger = None if phase == "start" else self._content.ledger
        return StreamView(self._reasoning, "" if ledger is None else ledger.snapshot())

    def take_content(self) -> str:
        """Return the content that became safe to show since the last call.

        The pieces returned add up to the `content` of the latest view, except after an orphan
        `</think>` (a reply that reasoned without opening `<think>`): content taken before it
        cannot be taken back, so nothing more comes until the content extends it again.
        """
        ledger = self._content.ledger if self._phase != "start" else None
        if ledger is None or self._stalled:
            return ""
        start, end = ledger.bounds()
        if end - start <= self._taken:
            return ""
        if self._taken_before is not None:
            # Decided text never changes, so this is settled the first time it can be checked.
            if ledger.raw(start, start + self._taken) != self._taken_before:
                self._stalled = True
                return ""
            self._taken_before = None
        fresh = ledger.raw(start + self._taken, end)
        self._taken = end - start
        return fresh

    def _push(self, piece: str) -> None:
        """Take the next piece: split off the reasoning, and pass the body on."""
        if not piece:
            return
        self._parts.append(piece)
        phase = self._phase
        if phase == "after":
            self._content.feed(piece)
            return
        new = piece
        if phase == "start":
            self._head = self._head + piece if self._head else piece.lstrip()
            if not self._head or (_OPEN_THINK.startswith(self._head) and self._head != _OPEN_THINK):
                return  # blank, or may still become "<think>"
            self._phase = "thinking" if self._head.startswith(_OPEN_THINK) else "body"
            self._head = ""
            new = self.text
        # The first "</think>" ends the reasoning, wherever it is (see _split_think).
        hay = self._tail + new
        end = hay.find(_CLOSE_THINK)
        if end < 0:
            self._tail = hay[-(len(_CLOSE_THINK) - 1) :]
            if self._phase == "body":
                self._content.feed(new)
            return
        text = self.text
        end += len(text) - len(hay)
        self._reasoning = text[:end].lstrip().removeprefix(_OPEN_THINK).strip()
        if self._phase == "body" and self._taken:
            ledger = self._content.ledger
            assert ledger is not None
            start, _ = ledger.bounds()
            self._taken_before = ledger.raw(start, start + self._taken)
        self._phase = "after"
        self._content = _Content(self._rules, self._whole)
        self._content.feed(text[end + len(_CLOSE_THINK) :])


def _split_think(text: str, *, final: bool) -> tuple[str | None, str, bool]:
    """Return (reasoning, body, still_thinking) of a reply."""
    end = text.find(_CLOSE_THINK)
    if end >= 0:
        head = text[:end].lstrip()
        head = head.removeprefix(_OPEN_THINK).strip()
        return head or None, text[end + len(_CLOSE_THINK) :], False
    stripped = text.lstrip()
    if stripped.startswith(_OPEN_THINK):
        inside = stripped[len(_OPEN_THINK) :].lstrip()
        if final:
            return inside.rstrip() or None, "", False
        return _hold_partial(inside, _CLOSE_THINK), "", True
    if not final and stripped and _OPEN_THINK.startswith(stripped):
        return "", "", True  # may still become "<think>"
    return None, text, False


def _hold_partial(text: str, marker: str) -> str:
    """Drop a tail of `text` that could be the start of `marker`."""
    for size in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:size]):
            return text[:-size]
    return text


def _scan(body: str, rules: _Rules) -> tuple[str, list[ParsedCall]]:
    """Walk a whole body left to right, cutting out call spans.

    `_BodyScan` takes the same decisions for every span that is complete on a body that
    arrives in pieces, which is what makes streamed content a prefix of the final content.

    Returns:
        (content, calls).
    """
    names = rules.names
    if names is not None and not names:
        return body, []  # nothing can be a call
    if rules.whole and body.lstrip().startswith(("{", "[")):
        whole = _calls_from_sequence(body.lstrip(), names, require_all=True)
        if whole:
            return "", whole
    openers = _OPENER_RE if rules.embedded and names is not None else _TAG_RE
    pieces: list[str] = []
    calls: list[ParsedCall] = []
    pos = 0
    size = len(body)
    while pos < size:
        found = openers.search(body, pos)
        if found is None:
            pieces.append(body[pos:])
            break
        start = found.start()
        pieces.append(body[pos:start])
        outcome = _decide_at(body, start, rules, final=True)
        assert outcome is not None  # a final scan decides everything
        pos, spanned = outcome
        if spanned:
            calls.extend(spanned)
        else:
            pieces.append(body[start:pos])
    return "".join(pieces), calls


def _decide_at(
    body: str, start: int, rules: _Rules, *, final: bool
) -> tuple[int, list[ParsedCall]] | None:
    """Decide the opener at `start`: (end, calls), (end, []) for text, or None: undecided."""
    char = body[start]
    if char == "<":
        return _hermes_at(body, start, rules, final=final)
    if char == "`":
        return _fence_at(body, start, rules, final=final)
    return _object_at(body, start, rules.names, final=final)


def _hermes_at(
    body: str, start: int, rules: _Rules, *, final: bool
) -> tuple[int, list[ParsedCall]] | None:
    """Decide the `<` at `start`: a `<tool_call>` block (end, calls) or plain text (end, [])."""
    rest = body[start : start + len(_OPEN_CALL)]
    if not body.startswith(_OPEN_CALL, start):
        if not final and len(rest) < len(_OPEN_CALL) and _OPEN_CALL.startswith(rest):
            return None
        return start + 1, []
    inner_start = start + len(_OPEN_CALL)
    reopen = body.find(_OPEN_CALL, inner_start)
    # Only a close before the next opening tag counts: searching no further keeps a reply that
    # mentions `<tool_call>` many times linear.
    close = body.find(_CLOSE_CALL, inner_start, reopen if reopen >= 0 else len(body))
    if close >= 0:
        return close + len(_CLOSE_CALL), _block_calls(body[inner_start:close], rules)
    if reopen >= 0:  # unterminated, another block follows
        calls = _block_calls(body[inner_start:reopen], rules)
        # Not a call: a lone `<tool_call>` mentioned in prose. Only the tag is text; what
        # follows it (a code example, say) is scanned as usual.
        return (reopen, calls) if calls else (inner_start, [])
    if not final:
        return None
    return len(body), _block_calls(body[inner_start:], rules)  # unterminated last block


def _block_calls(inner: str, rules: _Rules) -> list[ParsedCall]:
    """Read the inside of a `<tool_call>` block: JSON or XML calls, all or nothing."""
    inner = _strip_fence(inner.strip())
    if _XML_FUNCTION_RE.match(inner):
        return _xml_calls(inner, rules)
    # A block with a part that is not a call stays text, never half-read.
    return _calls_from_sequence(inner, rules.names, require_all=True)


def _fence_at(
    body: str, start: int, rules: _Rules, *, final: bool
) -> tuple[int, list[ParsedCall]] | None:
    """Decide the backtick at `start`: a fenced call (end, calls) or plain text (end, [])."""
    opener = _FENCE_OPEN_RE.match(body, start)
    if opener is None:
        if not final and _FENCE_OPEN_PARTIAL_RE.match(body, start):
            return None
        backticks = _BACKTICKS_RE.match(body, start)
        assert backticks is not None
        return backticks.end(), []
    lang = opener.group(1).lower()
    close = body.find("```", opener.end())
    if not rules.fences or lang not in _CALL_FENCE_LANGS:
        # Plain code: shown as it comes, and never searched for calls.
        return (close + 3 if close >= 0 else len(body)), []
    if close < 0:
        if not final:
            return None
        inner, end = body[opener.end() :], len(body)
    else:
        inner, end = body[opener.end() : close], close + 3
    return end, _calls_from_sequence(inner.strip(), rules.names, require_all=True)


def _object_at(
    body: str, start: int, names: frozenset[str] | None, *, final: bool
) -> tuple[int, list[ParsedCall]] | None:
    """Decide the `{` at `start` inside prose: a call object (end, calls) or text (end, [])."""
    end = _value_end(body, start)
    if end is None:
        if not final:
            return None
        call = _as_call(_loads_or_none(body[start:]), names)
        return (len(body), [call]) if call is not None else (start + 1, [])
    call = _as_call(_loads_or_none(body[start:end]), names)
    # An object that is not a call is data (or code): kept whole, not searched inside.
    return end, [call] if call is not None else []


def _strip_fence(text: str) -> str:
    """Remove a code fence wrapped around the whole text, if there is one."""
    opener = _FENCE_OPEN_RE.match(text)
    if opener is None:
        return text
    inner = text[opener.end() :]
    inner = inner.rstrip()
    return inner.removesuffix("```").strip()


# -- streaming ---------------------------------------------------------------------------------


def _thinking_view(parts: list[str], count: int) -> str:
    """Return the reasoning to show of a reply still inside `<think>`: its first `count` parts."""
    reasoning, _, _ = _split_think("".join(parts[:count]), final=False)
    return (reasoning or "").rstrip()


class _Ledger:
    """Content decided so far: append-only, so a view of it is a prefix of every later one.

    The shown content is the ledger stripped; where that starts and ends is kept up to date,
    so neither a view nor a delta needs the whole text. `tail` is shown but not final: a run
    of backticks that reaches the end, decided again when more text comes.
    """

    __slots__ = ("lead", "parts", "size", "tail", "trail")

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.size = 0
        self.lead = -1  # where the first non-space character is; -1 while there is none
        self.trail = 0  # how much whitespace the parts end with
        self.tail = ""

    def append(self, text: str) -> None:
        size = len(text)
        if not size:
            return
        kept = len(text.rstrip())
        if kept:
            if self.lead < 0:
                self.lead = self.size + size - len(text.lstrip())
            self.trail = size - kept
        else:
            self.trail += size
        self.parts.append(text)
        self.size += size

    def bounds(self) -> tuple[int, int]:
        """Return where the stripped content starts and ends in the raw text."""
        tail = self.tail
        kept = tail.rstrip()
        start = self.lead
        if start < 0:
            if not kept:
                return 0, 0
            start = self.size + len(tail) - len(tail.lstrip())
        end = self.size + len(kept) if kept else self.size - self.trail
        return start, end

    def raw(self, start: int, stop: int) -> str:
        """Return the raw text from `start` to `stop`, read back from the end (cheap near it)."""
        found: list[str] = []
        pos = self.size
        if self.tail and stop > pos:
            found.append(self.tail[max(start - pos, 0) : stop - pos])
        parts = self.parts
        index = len(parts) - 1
        while pos > start and index >= 0:
            part = parts[index]
            begin = pos - len(part)
            if begin < stop:
                found.append(part[start - begin if start > begin else 0 : stop - begin])
            pos = begin
            index -= 1
        if len(found) == 1:
            return found[0]
        found.reverse()
        return "".join(found)

    def snapshot(self) -> Callable[[], str]:
        """Return a function that builds the content as it stands now."""
        parts, count, tail = self.parts, len(self.parts), self.tail
        return lambda: ("".join(parts[:count]) + tail).strip()


class _Needles:
    """Shut until one of the needles shows up; searches only new text and a short overlap."""

    __slots__ = ("keep", "needles", "seen")

    def __init__(self, needles: tuple[str, ...], seen: str) -> None:
        self.needles = needles
        self.keep = max(map(len, needles)) - 1
        self.seen = seen[-self.keep :]

    def opens(self, text: str) -> bool:
        hay = self.seen + text
        for needle in self.needles:
            if needle in hay:
                return True
        self.seen = hay[-self.keep :]
        return False


class _ValueEnd:
    """Find where the JSON-ish value opening at a bracket ends, in text that comes in pieces.

    Double-quoted strings are skipped; a single quote opens a string only where a JSON string
    could start, so apostrophes in prose do not.
    """

    __slots__ = ("depth", "escaped", "last", "quote")

    def __init__(self) -> None:
        self.depth = 0
        self.quote = ""
        self.last = ""  # the last significant character
        self.escaped = False  # the piece before ended in a backslash inside a string

    def feed(self, text: str, start: int = 0) -> int | None:
        """Read `text` from `start`; return the index just past the value, or None if open."""
        depth, quote, last = self.depth, self.quote, self.last
        index = start + 1 if self.escaped else start
        size = len(text)
        while index < size:
            char = text[index]
            if quote:
                if char == "\\":
                    index += 2
                    continue
                if char == quote:
                    quote = ""
                    last = '"'
            elif char == '"' or (char == "'" and last in "{[,:"):
                quote = char
            elif char in "{[":
                depth += 1
                last = char
            elif char in "}]":
                depth -= 1
                last = char
                if depth == 0:
                    return index + 1
            elif not char.isspace():
                last = char
            index += 1
        self.depth, self.quote, self.last, self.escaped = depth, quote, last, index > size
        return None

    def opens(self, text: str) -> bool:
        return self.feed(text) is not None


class _BodyScan:
    """`_scan` for a body that arrives in pieces: decided text goes to `ledger`, once.

    Undecided text is kept from the opener that may still become a call; while it waits for
    what would decide it (a gate), new text is only searched for that, never scanned again
    from the opener on.
    """

    def __init__(self, rules: _Rules) -> None:
        self.rules = rules
        self.ledger = _Ledger()
        self._everything = rules.names is not None and not rules.names  # nothing is a call
        self._openers = _OPENER_RE if rules.embedded and rules.names is not None else _TAG_RE
        self._leading = True  # nothing but whitespace so far
        self._held = False  # a body that is one JSON value is wholly a call or not: wait
        self._window = ""  # undecided text, from an opener to the end
        self._waiting: list[str] = []  # text after the window, come while the gate was shut
        self._gate: _Needles | _ValueEnd | None = None  # None: decide again on any new text
        self._fence: str | None = None  # in a plain fence: its last characters, else None
        self._clear = False  # nothing is waiting: a piece without an opener is plain text

    def feed(self, text: str) -> None:
        if self._clear and self._openers.search(text) is None:
            self.ledger.append(text)
            return
        if self._held or not text:
            return
        if self._everything:
            self.ledger.append(text)
            return
        if self._fence is not None:
            text = self._flow(text)
        if not text:
            return
        if self._gate is not None and not self._gate.opens(text):
            self._waiting.append(text)
            return
        window = "".join((self._window, *self._waiting, text))
        self._window, self._waiting, self._gate = "", [], None
        self._advance(window)

    def _flow(self, text: str) -> str:
        """Show a plain fence's text as it comes; return what follows its closing backticks."""
        assert self._fence is not None
        hay = self._fence + text
        close = hay.find("```")
        if close < 0:
            self.ledger.append(text)
            self._fence = hay[-2:]
            return ""
        cut = close + 3 - len(self._fence)
        self.ledger.append(text[:cut])
        self._fence = None
        return text[cut:]

    def _advance(self, window: str) -> None:
        """Decide the openers in `window` (undecided text and all that came after it)."""
        self.ledger.tail = ""
        self._clear = False
        size = len(window)
        if self._leading:
            first = size - len(window.lstrip())
            if first == size:
                self.ledger.append(window)
                return
            self._leading = False
            if self.rules.whole and window[first] in "{[":
                self._held = True
                return
        pos = 0
        while pos < size:
            found = self._openers.search(window, pos)
            if found is None:
                self.ledger.append(window[pos:])
                break
            start = found.start()
            if start > pos:
                self.ledger.append(window[pos:start])
            outcome = _decide_at(window, start, self.rules, final=False)
            if outcome is None:
                self._wait(window[start:])
                return
            end, calls = outcome
            if end >= size and window[start] == "`" and self._grows(window[start:]):
                return
            if not calls:
                self.ledger.append(window[start:end])
            pos = end
        self._clear = True

    def _grows(self, span: str) -> bool:
        """Keep text from backticks that reaches the end and may still change; say if it did."""
        opener = _FENCE_OPEN_RE.match(span)
        if opener is None:  # a run of backticks, shown but decided again
            self._window = self.ledger.tail = span
            return True
        if span.find("```", opener.end()) >= 0:
            return False  # a closed fence
        self.ledger.append(span)  # an open plain fence: its text is shown as it comes
        self._fence = span[max(opener.end(), len(span) - 2) :]
        return True

    def _wait(self, span: str) -> None:
        """Keep `span`, which opens with an undecided opener, and say what would decide it."""
        self._window = span
        if span.startswith(_OPEN_CALL):
            self._gate = _Needles((_CLOSE_CALL, _OPEN_CALL), span[len(_OPEN_CALL) :])
        elif span.startswith("`"):
            opener = _FENCE_OPEN_RE.match(span)
            if opener is not None:  # a call fence: undecided until it closes
                self._gate = _Needles(("```",), span[opener.end() :])
        elif span.startswith("{"):
            value = _ValueEnd()
            value.feed(span)
            self._gate = value
        # Otherwise a few characters that may become an opener: decided on the next piece.


class _Content:
    """The content of a streamed body; in "auto" mode first read as a reply of only calls."""

    def __init__(self, rules: _Rules, whole: _Rules | None) -> None:
        self._rules = rules
        # Until something other than a call shows up, the reply may be nothing but calls,
        # fences and bare JSON included; once it has, only tags count (see parse_tool_calls).
        self._whole = None if whole is None else _BodyScan(whole)
        self._scan = _BodyScan(rules) if whole is None else None
        self._body: list[str] = []  # the body so far, while `_whole` decides

    @property
    def ledger(self) -> _Ledger | None:
        """The content shown, or None while nothing is."""
        return None if self._scan is None else self._scan.ledger

    def feed(self, text: str) -> None:
        if self._scan is not None:
            self._scan.feed(text)
            return
        assert self._whole is not None
        self._body.append(text)
        self._whole.feed(text)
        start, end = self._whole.ledger.bounds()
        if start == end:  # nothing but calls and whitespace so far
            return
        self._scan, self._whole = _BodyScan(self._rules), None
        self._scan.feed("".join(self._body))
        self._body = []


# -- Qwen3-Coder's XML form ------------------------------------------------------------------


def _xml_calls(inner: str, rules: _Rules) -> list[ParsedCall]:
    """Read `<function=NAME><parameter=KEY>VALUE</parameter>...</function>` calls.

    All or nothing: other text in the block, a name not on offer or a value left open (a reply
    cut short) mean no calls, and the block stays text.
    """
    calls: list[ParsedCall] = []
    pos, size = 0, len(inner)
    while True:
        while pos < size and inner[pos].isspace():
            pos += 1
        if pos >= size:
            return calls
        opener = _XML_FUNCTION_RE.match(inner, pos)
        if opener is None:
            return []
        name = opener.group(1).strip()
        if not name or (rules.names is not None and name not in rules.names):
            return []
        close = inner.find(_CLOSE_FUNCTION, opener.end())
        following = _XML_FUNCTION_RE.search(inner, opener.end())
        if close >= 0 and (following is None or close < following.start()):
            body_end, pos = close, close + len(_CLOSE_FUNCTION)
        else:
            body_end = following.start() if following is not None else size
            pos = body_end
        arguments = _xml_parameters(
            inner[opener.end() : body_end], rules.schemas.get(name), closed=close >= 0
        )
        if arguments is None:
            return []
        calls.append(ParsedCall(name=name, arguments=arguments))


def _xml_parameters(
    text: str, schema: Mapping[str, Any] | None, *, closed: bool
) -> dict[str, Any] | None:
    """Read the `<parameter=KEY>VALUE</parameter>` list of one function, typed by its schema.

    A value ends at `</parameter>`, else at the next `<parameter=`; one that runs to the end of
    an unclosed function is a reply cut short, and nothing is read.
    """
    properties = schema.get("properties") if schema is not None else None
    declared: Mapping[str, Any] = properties if isinstance(properties, Mapping) else {}
    arguments: dict[str, Any] = {}
    pos, size = 0, len(text)
    while True:
        while pos < size and text[pos].isspace():
            pos += 1
        if pos >= size:
            return arguments
        opener = _XML_PARAMETER_RE.match(text, pos)
        key = opener.group(1).strip() if opener is not None else ""
        if opener is None or not key:
            return None
        end = text.find(_CLOSE_PARAMETER, opener.end())
        following = _XML_PARAMETER_RE.search(text, opener.end())
        if end >= 0 and (following is None or end < following.start()):
            value, pos = text[opener.end() : end], end + len(_CLOSE_PARAMETER)
        elif following is not None:
            value, pos = text[opener.end() : following.start()], following.start()
        elif closed:
            value, pos = text[opener.end() :], size
        else:
            return None
        # The value sits on lines of its own: one newline either side is layout, not value.
        value = value.removeprefix("\n")
        value = value.removesuffix("\n")
        arguments[key] = _typed_value(value, declared.get(key))


def _typed_value(text: str, schema: Any) -> Any:
    """Convert an XML parameter's text to the type its schema declares, when it parses as it."""
    types = _schema_types(schema) if isinstance(schema, Mapping) else set()
    if not types or "string" in types:
        return text
    stripped = text.strip()
    lowered = stripped.lower()
    if "null" in types and lowered in ("null", "none"):
        return None
    if "boolean" in types and lowered in ("true", "false"):
        return lowered == "true"
    number = _as_number(stripped, types)
    if number is not None:
        return number
    if "object" in types or "array" in types:
        value = _loads_or_none(stripped)
        if isinstance(value, dict) and "object" in types:
            return value
        if isinstance(value, list) and "array" in types:
            return value
    return text


def _schema_types(schema: Mapping[str, Any]) -> set[str]:
    """Return the JSON types a schema allows (through anyOf/oneOf/allOf; a $ref is an object)."""
    found: set[str] = set()
    declared = schema.get("type")
    if isinstance(declared, str):
        found.add(declared)
    elif isinstance(declared, list):
        found.update(item for item in declared if isinstance(item, str))
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        for option in options if isinstance(options, list) else ():
            if isinstance(option, Mapping):
                found |= _schema_types(option)
    if "$ref" in schema or "properties" in schema:
        found.add("object")
    return found


def _as_number(text: str, types: set[str]) -> int | float | None:
    """Read a number for an integer or number parameter; None when it is not one."""
    if "integer" not in types and "number" not in types:
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return None
    if not math.isfinite(value):
        return None
    if "number" in types:
        return value
    return int(value) if value.is_integer() else None


# -- JSON calls ------------------------------------------------------------------------------


def _calls_from_sequence(
    text: str, names: frozenset[str] | None, *, require_all: bool
) -> list[ParsedCall]:
    """Read JSON values laid one after another; return the calls among them.

    With `require_all`, any value that is not a call (or text that is not JSON) means no calls.
    """
    calls: list[ParsedCall] = []
    pos = 0
    size = len(text)
    while True:
        while pos < size and (text[pos].isspace() or text[pos] == ","):
            pos += 1
        if pos >= size:
            break
        if text[pos] not in "{[":
            return [] if require_all or not calls else calls
        end = _value_end(text, pos)
        chunk = text[pos:] if end is None else text[pos:end]
        found = _calls_from_value(_loads_or_none(chunk), names)
        if found is None:
            if require_all:
                return []
        else:
            calls.extend(found)
        if end is None:
            break
        pos = end
    return calls


def _calls_from_value(value: Any, names: frozenset[str] | None) -> list[ParsedCall] | None:
    """Return the calls a decoded JSON value holds, or None if it is not wholly calls."""
    if isinstance(value, dict) and isinstance(value.get("tool_calls"), list):
        value = value["tool_calls"]
    items = value if isinstance(value, list) else [value]
    calls = [_as_call(item, names) for item in items]
    if not calls or any(call is None for call in calls):
        return None
    return [call for call in calls if call is not None]


def _as_call(value: Any, names: frozenset[str] | None) -> ParsedCall | None:
    """Return the call a decoded JSON object describes, or None."""
    if not isinstance(value, dict):
        return None
    source = value
    if isinstance(value.get("function"), dict):
        source = value["function"]
    name = source.get("name")
    if not isinstance(name, str) or not name.strip():
        return None
    name = name.strip()
    if names is not None and name not in names:
        return None
    if "arguments" in source:
        raw = source["arguments"]
    elif "parameters" in source:
        raw = source["parameters"]
    elif names is not None and set(source) <= _CALL_ONLY_KEYS:
        raw = None  # {"name": "get_time"}: a registered tool called without arguments
    else:
        return None
    arguments = _as_arguments(raw)
    if arguments is None:
        return None
    return ParsedCall(name=name, arguments=arguments)


def _as_arguments(raw: Any) -> dict[str, Any] | None:
    if raw is None:
        return {}
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, str):
        if not raw.strip():
            return {}
        decoded = _loads_or_none(raw)
        if isinstance(decoded, dict):
            return decoded
    return None


def _value_end(text: str, start: int) -> int | None:
    """Return the index just past the JSON-ish value opening at `start`, or None if unclosed."""
    return _ValueEnd().feed(text, start)


def _loads_or_none(text: str) -> Any:
    """Decode JSON strictly, then after lenient repair; None when both fail."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return json.loads(_repair(text), strict=False)
    except ValueError:  # json.JSONDecodeError is a ValueError too
        pass
    stripped = text.strip()
    if stripped.startswith("{{"):
        # Qwen2.5's template shows the call format as `{{"name": ...}}`, and the model copies it.
        return _loads_or_none(stripped[1:-1] if stripped.endswith("}}") else stripped[1:])
    return None


_PY_LITERALS = {"True": "true", "False": "false", "None": "null"}


def _repair(text: str) -> str:
    """Rewrite near-JSON into JSON.

    Fixes single-quoted strings, Python's True/False/None, unquoted keys, trailing commas and
    objects or arrays left unclosed. A string left open is not closed: that is a reply cut
    short, whose last value cannot be trusted.
    """
    out: list[str] = []
    stack: list[str] = []
    index = 0
    size = len(text)
    while index < size:
        char = text[index]
        if char in "\"'":
            index = _copy_string(text, index, out)
        elif char.isalpha() or char == "_":
            index = _copy_word(text, index, out)
        else:
            _copy_punctuation(char, stack, out)
            index += 1
    while stack:
        _drop_trailing_comma(out)
        out.append(stack.pop())
    return "".join(out)


def _copy_string(text: str, start: int, out: list[str]) -> int:
    """Copy the string opening at `start` as a double-quoted JSON string; return the index after.

    Raises:
        ValueError: When the string is not closed.
    """
    quote = text[start]
    out.append('"')
    index = start + 1
    size = len(text)
    while index < size:
        char = text[index]
        if char == "\\" and index + 1 < size:
            following = text[index + 1]
            out.append("'" if following == "'" else char + following)  # \' is not a JSON escape
            index += 2
            continue
        index += 1
        if char == quote:
            out.append('"')
            return index
        # a double quote inside a single-quoted string
        out.append('\\"' if char == '"' else char)
    raise ValueError("unterminated string")


def _copy_word(text: str, start: int, out: list[str]) -> int:
    """Copy the bare word at `start`: a key gets quotes, a Python literal becomes JSON's.

    Returns:
        The index after the word.
    """
    size = len(text)
    word_end = start
    while word_end < size and (text[word_end].isalnum() or text[word_end] == "_"):
        word_end += 1
    word = text[start:word_end]
    after = word_end
    while after < size and text[after] in " \t":
        after += 1
    if after < size and text[after] == ":" and word not in _PY_LITERALS:
        out.append(f'"{word}"')  # an unquoted key
    else:
        out.append(_PY_LITERALS.get(word, word))
    return word_end


def _copy_punctuation(char: str, stack: list[str], out: list[str]) -> None:
    """Copy one character outside strings and words, tracking the open objects and arrays."""
    if char in "{[":
        stack.append("}" if char == "{" else "]")
    elif char in "}]":
        _drop_trailing_comma(out)
        if stack:
            stack.pop()
    out.append(char)


def _drop_trailing_comma(out: list[str]) -> None:
    index = len(out) - 1
    while index >= 0 and out[index].isspace():
        index -= 1
    if index >= 0 and out[index] == ",":
        del out[index]
