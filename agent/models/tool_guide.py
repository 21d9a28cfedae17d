"""Guiding the local model's tool calls: what its prompt says about them, and how it writes them.

Two things, both for chat templates that ask for Qwen's `<tool_call>` JSON blocks:

- `add_tool_guidance` adds lines to the end of the template's tool section, saying when to call
  (several independent calls in one reply) and when not to (no function fits: answer directly).
  The tool section is where a small model looks for how to call; the lines were measured with
  `bench/tool_accuracy.py` and `bench/everyday.py` (see the README's numbers).
- `call_grammar` is the llama.cpp grammar a call is held to once the model writes `<tool_call>`:
  one or more blocks of

      <tool_call>
      {"name": "<one of the offered tools>", "arguments": <an object matching its schema>}
      </tool_call>

  and then the end of the reply. The tool's name decides which schema the arguments follow,
  so a call can neither name a tool that is not offered nor leave out a required argument. A
  schema llama.cpp's converter cannot express falls back to "any JSON object" for that tool
  alone (its arguments are still validated when the tool runs). Prose is never constrained.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "CALL_ALIASES",
    "CALL_CLOSE",
    "CALL_OPEN",
    "CONTINUE_ODDS",
    "DECLINE_ODDS",
    "MAX_CALLS",
    "NAME_OPENING",
    "NO_FIT_FUNCTION",
    "NO_FIT_NAME",
    "SURE_CALL_ODDS",
    "TOOL_GUIDANCE",
    "add_tool_guidance",
    "call_grammar",
    "with_no_fit_option",
    "writes_hermes_calls",
]

MAX_CALLS = 4
"""The most calls one guided reply may hold."""

CONTINUE_ODDS = 0.02
"""After a guided call, another follows only when the model's odds of going on (a line break or
a tag) over ending its reply are at least this (see `CallGuide`).

Measured on BFCL questions drawn with another seed than the benchmark's: after the first call
of questions that need several, 0.026-0.95; after the only call of questions that need one,
0.001-0.009. Left to greedy decoding under a grammar that allowed more calls, the model wrote
up to six calls where one was wanted (four on a BFCL question that needs one, six on "What is
98.6 degrees Fahrenheit in Celsius?")."""
CALL_OPEN = "<tool_call>"
CALL_CLOSE = "</tool_call>"
CALL_ALIASES = (
    '```json{"name":',
    '```{"name":',
    '{"name":',
    '```json[{"name":',
    '[{"name":',
    "<tool_response>",
)
"""How the bundled model opens a call when it does not write `<tool_call>` (whitespace removed).

A reply that opens with `<tool_response>` is the model writing a tool's answer where its call
belongs. Measured after one city's time came back for "What time is it in Paris and in Shanghai
right now?": the reply opened so (and ended empty at that stop string); told to open a call
instead, the model wrote the call for Shanghai.

Measured: on BFCL questions Qwen2.5-Coder-1.5B writes almost every call as a ```json fence.
A reply that opens like one of these is taken as the start of a call and written again as a
`<tool_call>` block under the grammar (a reply opening this way with tools on offer was read as
a call before, too; now it is also well-formed, and may be followed by more calls)."""
_END_OF_SYSTEM = "<|im_end|>"

TOOL_GUIDANCE = (
    "Call a function only when the request needs it and one of the functions above fits. If "
    "none fits, or no function is needed, answer directly in plain text without <tool_call>. "
    "When the request needs several calls (the same function for different values, or "
    "different functions), write all of them now, one <tool_call></tool_call> block for each."
)
"""Added to the end of the chat template's tool section; see the module docstring."""


NO_FIT_NAME = "no_suitable_function"
NO_FIT_FUNCTION: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": NO_FIT_NAME,
        "description": (
            "None of the other functions can do what the user asked. Call this instead of "
            "them; then answer in plain text."
        ),
        "parameters": {"type": "object", "properties": {}},
    },
}
"""An option listed after the offered tools, never called: the model's odds of choosing it when
it opens a call tell whether one of the real tools fits (see `LocalChatModel(tool_gate=...)`).

A small model is good at choosing among functions and poor at saying whether any fits: asked
"Can one of the functions above do what I just asked?", the bundled model's odds of "yes"
overlapped between questions no function fits and the others (0.46-0.82 against 0.57-0.89 on
BFCL questions; 0.51-0.64 against 0.57-0.78 on the everyday questions). Offered as one more
function, "none fits" separates far better; `DECLINE_ODDS` has the numbers."""

NAME_OPENING = '<tool_call>\n{"name": "'
"""A call's text up to its function's name: where the gate reads the model's choice."""

DECLINE_ODDS = 0.05
"""At or above this probability of choosing `NO_FIT_FUNCTION` (over the offered tools, read at
the first token of the call's name) the user's message is answered without tools.

Measured with the bundled model on BFCL questions drawn with another seed than the benchmark's
(16 where no function fits, 16 where one does) and on the everyday questions
(`bench/everyday.py`: 5 that need no tool, 20 that need one):

- no function fits: BFCL 0.000-0.280 (5 of 16 at or above 0.05), everyday 0.028-0.322 (4 of 5);
- a function fits: BFCL 0.000-0.143 (1 of 16 at or above 0.05), everyday 0.000-0.042 (none).

The bar sits just above every everyday question that needs a tool: a question turned away
wrongly costs a right answer, one let through costs a needless call.

`SURE_CALL_ODDS` overrules the bar."""

SURE_CALL_ODDS = 0.75
"""At or above this probability of opening its reply with a call, the model's choice to call
stands: a message that `DECLINE_ODDS` would turn away is answered with tools.

The odds are summed over the likeliest first tokens of the reply that begin a call in any form
the model writes one (`<tool_call>`, a fence, a bare object). A long request made of several
tasks leaves some odds on "no function fits" (a part the model is unsure of) while the model is
all but certain to call. Measured on the same questions as `DECLINE_ODDS`, for those whose odds
of choosing the option were at or above 0.05:

- no function fits: BFCL 0.47-0.71 (5), everyday 0.26-0.53 (4);
- a function fits: BFCL 0.82 (1, several tasks among four functions).

Over all the questions the odds were 0.26-0.79 where no function fits and 0.49-0.94 where one
does, so they do not decide alone."""


def with_no_fit_option(tools: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return `tools` with `NO_FIT_FUNCTION` after them (unless a tool already has its name)."""
    names = {str(tool.get("function", {}).get("name", "")) for tool in tools}
    return [*tools] if NO_FIT_NAME in names else [*tools, NO_FIT_FUNCTION]


def add_tool_guidance(prompt: str, guidance: str | None = None) -> str:
    """Return `prompt` with `guidance` at the end of its tool section, where there is one.

    The tool section is the system turn's closing part in Qwen's ChatML templates: the text is
    put just before the system turn's `<|im_end|>`, when that turn holds the `</tool_call>`
    example. A prompt without that shape is returned as it is.

    Args:
        prompt: The rendered prompt.
        guidance: The text to add (default `TOOL_GUIDANCE`); empty adds nothing.
    """
    guidance = TOOL_GUIDANCE if guidance is None else guidance
    if not guidance:
        return prompt
    end = prompt.find(_END_OF_SYSTEM)
    example = prompt.find(CALL_CLOSE, 0, max(end, 0))
    if not prompt.startswith("<|im_start|>system") or example < 0:
        return prompt  # no system turn, or no call example in it
    return f"{prompt[:end]}\n\n{guidance}{prompt[end:]}"


def writes_hermes_calls(template_source: str) -> bool:
    """Tell whether a chat template asks for `<tool_call>{"name", "arguments"}` JSON blocks.

    Qwen2.5 and Qwen3 do; Qwen3-Coder writes `<function=...>` XML inside the block instead,
    which this grammar does not describe.
    """
    return CALL_OPEN in template_source and "<function=" not in template_source


def call_grammar(functions: Sequence[Mapping[str, Any]]) -> str:
    """Return GBNF for what follows `<tool_call>`: one call to one of `functions`, closed.

    Args:
        functions: The offered tools' `function` objects (`name`, `parameters`).

    Returns:
        The grammar's text, with `root` as its start rule.

    Raises:
        ValueError: No function was given.
    """
    from llama_cpp.llama_grammar import SchemaConverter

    if not functions:
        raise ValueError("a call grammar needs at least one function")
    converter = SchemaConverter(  # type: ignore[no-untyped-call]
        prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False
    )
    alternatives = []
    for index, function in enumerate(functions):
        name = str(function.get("name", ""))
        rule = _arguments_rule(converter, function.get("parameters"), f"qwl-args-{index}")
        alternatives.append(
            f'{_literal(json.dumps(name, ensure_ascii=False))} space "," space '
            f'"\\"arguments\\"" space ":" space {rule}'
        )
    rules = [
        converter.format_grammar(),  # type: ignore[no-untyped-call]
        'qwl-call ::= "{" space "\\"name\\"" space ":" space ( '
        + " | ".join(alternatives)
        + ' ) space "}"',
        'qwl-block ::= "\\n" qwl-call "\\n</tool_call>"',
        "root ::= qwl-block",
    ]
    return "\n".join(rules)


def _arguments_rule(converter: Any, parameters: Any, name: str) -> str:
    """Add the rules of one tool's arguments to `converter`; return the rule's name."""
    schema = dict(parameters) if isinstance(parameters, Mapping) else {}
    schema["type"] = "object"
    try:
        resolved = converter.resolve_refs(copy.deepcopy(schema), name)
        return str(converter.visit(resolved, name))
    except Exception:  # llama.cpp's converter raises many kinds: accept any object then
        return str(converter.visit({"type": "object"}, f"{name}-any"))


def _literal(text: str) -> str:
    """Quote `text` as a GBNF string literal."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'
