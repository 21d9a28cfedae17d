"""The local model's tool guidance and call grammar, as text (the real model: test_local_model)."""

from __future__ import annotations

from agent.models.chat_template import ChatTemplate
from agent.models.tool_guide import (
    NO_FIT_FUNCTION,
    NO_FIT_NAME,
    TOOL_GUIDANCE,
    add_tool_guidance,
    call_grammar,
    with_no_fit_option,
    writes_hermes_calls,
)

CALC = {
    "name": "calculator",
    "description": "Evaluate.",
    "parameters": {
        "type": "object",
        "properties": {"expression": {"type": "string"}},
        "required": ["expression"],
    },
}


def rendered(tools: list[dict] | None, system: str | None = "Be brief.") -> str:
    messages = [{"role": "user", "content": "What is 2+2?"}]
    if system is not None:
        messages.insert(0, {"role": "system", "content": system})
    wrapped = [{"type": "function", "function": tool} for tool in tools or []]
    return ChatTemplate(None).render(messages, wrapped or None, {})


def test_guidance_closes_the_tool_section_of_the_system_turn() -> None:
    prompt = rendered([CALC])
    guided = add_tool_guidance(prompt)
    system, _, rest = guided.partition("<|im_end|>")
    assert system.startswith("<|im_start|>system\nBe brief.")
    assert system.endswith("</tool_call>\n\n" + TOOL_GUIDANCE)
    assert rest == prompt.partition("<|im_end|>")[2]  # the user's turn is untouched
    # Without a system message, Qwen's template writes its own: still the end of the section.
    assert add_tool_guidance(rendered([CALC], system=None)).count(TOOL_GUIDANCE) == 1


def test_no_tool_section_no_guidance() -> None:
    prompt = rendered(None)
    assert add_tool_guidance(prompt) == prompt
    assert add_tool_guidance(rendered([CALC]), "") == rendered([CALC])
    # A </tool_call> in a later turn (a past call) is not the system turn's example.
    later = "<|im_start|>system\nHi<|im_end|>\n<|im_start|>assistant\n</tool_call><|im_end|>\n"
    assert add_tool_guidance(later) == later


def test_which_templates_write_json_call_blocks() -> None:
    assert writes_hermes_calls(ChatTemplate(None).source)
    assert not writes_hermes_calls("{{ '<tool_call>\\n<function=' + name + '>' }}")
    assert not writes_hermes_calls("{{ messages }}")


def test_the_grammar_ties_each_name_to_its_own_arguments() -> None:
    clock = {
        "name": "current_time",
        "parameters": {"type": "object", "properties": {"timezone": {"type": "string"}}},
    }
    grammar = call_grammar([CALC, clock])
    rules = dict(line.split(" ::= ", 1) for line in grammar.splitlines())
    call = rules["qwl-call"]
    # calculator's name is followed by calculator's argument rule, current_time's by its own.
    assert '"\\"calculator\\"" space "," space "\\"arguments\\"" space ":" space qwl-args-0' in call
    assert '"\\"current_time\\""' in call and "qwl-args-1" in call
    assert rules["qwl-args-0"].count("expression") == 1  # required: not optional
    assert "?" in rules["qwl-args-1"]  # timezone is optional
    assert rules["root"] == "qwl-block"  # one call: the runner decides whether another follows
    assert rules["qwl-block"] == '"\\n" qwl-call "\\n</tool_call>"'


def test_a_schema_the_converter_cannot_read_allows_any_object() -> None:
    odd = {"name": "odd", "parameters": {"type": "object", "properties": {"x": {"$ref": "#/nope"}}}}
    grammar = call_grammar([odd, CALC])
    rules = dict(line.split(" ::= ", 1) for line in grammar.splitlines())
    assert "qwl-args-0-any" in rules["qwl-call"]
    assert "qwl-args-1" in rules["qwl-call"]  # the other tool keeps its schema


def test_names_are_quoted_safely() -> None:
    tricky = {"name": 'say "hi"\\now', "parameters": {"type": "object", "properties": {}}}
    grammar = call_grammar([tricky])
    assert '"\\"say \\\\\\"hi\\\\\\"\\\\\\\\now\\""' in grammar


def test_the_no_fit_option_comes_last_and_never_twice() -> None:
    weather = {"type": "function", "function": {"name": "weather", "parameters": {}}}
    listed = with_no_fit_option([weather])
    assert listed == [weather, NO_FIT_FUNCTION]
    own = {"type": "function", "function": {"name": NO_FIT_NAME, "parameters": {}}}
    assert with_no_fit_option([weather, own]) == [weather, own]
