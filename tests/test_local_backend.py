"""Tests of LocalChatModel's machinery against a scripted stand-in for llama_cpp (fast, no weights).

The stand-in tokenises bytes one by one and "generates" a scripted reply, so rendering, text-call
parsing, streaming hold-back, stop strings, cancellation and serialisation are tested exactly.
The real model runs in tests/test_local_model.py.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import math
import sys
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from agent.errors import BadRequestError, ConfigError, ModelError, ModelNotSupportedError
from agent.models import local as local_module
from agent.models.base import ChatModel, ModelRequest, ResponseMeta
from agent.models.cpu_guard import CpuGuard
from agent.models.local import LocalChatModel
from agent.models.tool_guide import NAME_OPENING

EOS = 1001
VOCAB = 1002
CALC = {
    "type": "function",
    "function": {
        "name": "calculator",
        "description": "Evaluate <expr> & return it.",
        "parameters": {
            "type": "object",
            "properties": {"expression": {"type": "string"}},
            "required": ["expression"],
        },
    },
}


class FakeLlama:
    """Byte-level stand-in for llama_cpp.Llama that replays scripted replies."""

    replies: ClassVar[list[str]] = []
    instances: ClassVar[list[FakeLlama]] = []
    template: ClassVar[str | None] = None
    delay: ClassVar[float] = 0.0
    no_fit: ClassVar[float] = 0.0  # the model's odds of choosing "no function fits"
    opens_call: ClassVar[float] = 0.0  # the model's odds of opening its reply with "<"

    def __init__(self, model_path: str, **settings: Any) -> None:
        self.model_path = model_path
        self.settings = settings
        self.metadata = {} if self.template is None else {"tokenizer.chat_template": self.template}
        self.model = object()
        self.n_tokens = 0
        self.prompts: list[str] = []
        self.sampling: list[dict[str, Any]] = []
        self.yielded = 0
        self.active = 0
        self.max_active = 0
        self.closed = False
        self.seed: int | None = None
        self.lock = threading.Lock()
        self.script: tuple[list[int], bytes] | None = None  # the prompt and reply under way
        self.evaluated_upto = 0
        self.evaluated: list[str] = []  # what was evaluated outside generation
        self.read_by_gate = False  # the logits are those of the gate's evaluation
        FakeLlama.instances.append(self)

    def tokenize(self, data: bytes, add_bos: bool = True, special: bool = True) -> list[int]:
        assert add_bos is False
        assert special is True
        return [EOS] if data == b"<|im_end|>" else list(data)

    def eval(self, tokens: list[int]) -> None:
        self.evaluated_upto = self.n_tokens + len(tokens)
        self.evaluated.append(bytes(tokens).decode("utf-8", errors="replace"))
        self.read_by_gate = True  # until generation starts

    @property
    def ctx(self) -> FakeLlama:
        return self

    def n_vocab(self) -> int:
        return VOCAB

    def next_logits(self) -> Any:
        """Logits after the evaluated text: the scripted reply's next byte, or the end.

        Where the gate reads them: at the call's name, "no_suitable_function" opens with "n"
        and the tools' names not (P = `no_fit`); at the reply's start, "<" opens a call
        (P = `opens_call`) and "H" does not.
        """
        logits = (ctypes.c_float * VOCAB)(*([-30.0] * VOCAB))
        last = self.evaluated[-1] if self.evaluated else ""
        if self.read_by_gate and last.endswith(NAME_OPENING):
            logits[:256] = [math.log(max(1 - self.no_fit, 1e-9))] * 256
            logits[ord("n")] = math.log(max(self.no_fit, 1e-9))
        elif self.read_by_gate and last.endswith("<|im_start|>assistant\n"):
            logits[ord("<")] = math.log(max(self.opens_call, 1e-9))
            logits[ord("H")] = math.log(max(1 - self.opens_call, 1e-9))
        else:
            assert self.script is not None
            prompt, reply = self.script
            upcoming = reply[self.evaluated_upto - len(prompt) :]
            logits[upcoming[0] if upcoming else EOS] = 0.0
        return ctypes.cast(logits, ctypes.POINTER(ctypes.c_float))

    def detokenize(self, tokens: list[int], special: bool = False) -> bytes:
        if tokens == [1000]:
            return b"<s>" if special else b""
        if tokens == [EOS]:
            return b"</s>" if special else b""
        return bytes(token for token in tokens if token < 256)

    def token_bos(self) -> int:
        return 1000

    def token_eos(self) -> int:
        return EOS

    def set_seed(self, seed: int) -> None:
        self.seed = seed

    def generate(self, tokens: list[int], **sampling: Any) -> Iterator[int]:
        self.read_by_gate = False
        self.sampling.append(sampling)
        script = self.script
        done = len(tokens) - len(script[0]) if script is not None else 0
        if script is not None and done > 0 and tokens == script[0] + list(script[1][:done]):
            # A guided call restarts generation from the prompt plus the reply so far: the
            # scripted reply goes on where it stopped.
            reply = script[1][done:].decode("utf-8")
        else:
            self.prompts.append(bytes(tokens).decode("utf-8"))
            reply = self.replies.pop(0) if self.replies else "ok"
            self.script = (list(tokens), reply.encode("utf-8"))
        with self.lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            for token in reply.encode("utf-8"):
                if self.delay:
                    time.sleep(self.delay)
                self.yielded += 1
                yield token
            yield EOS
            yield EOS  # a real model would go on; the backend must stop at the first
        finally:
            with self.lock:
                self.active -= 1

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake_llama(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> type[FakeLlama]:
    import llama_cpp.llama_grammar as real_grammar  # before the stand-in takes its place

    module = types.ModuleType("llama_cpp")
    module.Llama = FakeLlama  # type: ignore[attr-defined]
    module.llama_model_get_vocab = lambda model: "vocab"  # type: ignore[attr-defined]
    module.llama_vocab_is_eog = lambda vocab, token: token == EOS  # type: ignore[attr-defined]
    module.llama_get_logits_ith = lambda ctx, index: ctx.next_logits()  # type: ignore[attr-defined]
    grammar_module = types.ModuleType("llama_cpp.llama_grammar")

    class FakeGrammar:
        def __init__(self, source: str) -> None:
            self.source = source

        @classmethod
        def from_string(cls, grammar: str, verbose: bool = True) -> FakeGrammar:
            return cls(grammar)

        @classmethod
        def from_json_schema(cls, schema: str, verbose: bool = True) -> FakeGrammar:
            return cls("schema:" + schema)

    grammar_module.LlamaGrammar = FakeGrammar  # type: ignore[attr-defined]
    # The schema-to-grammar converter is pure Python: the real one writes the call grammar.
    grammar_module.SchemaConverter = real_grammar.SchemaConverter  # type: ignore[attr-defined]
    grammar_module.JSON_GBNF = "json-gbnf"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "llama_cpp", module)
    monkeypatch.setitem(sys.modules, "llama_cpp.llama_grammar", grammar_module)
    monkeypatch.setattr(FakeLlama, "replies", [])
    monkeypatch.setattr(FakeLlama, "instances", [])
    monkeypatch.setattr(FakeLlama, "template", None)
    monkeypatch.setattr(FakeLlama, "delay", 0.0)
    # The CPU probe's child always succeeds here (the real probe is tested in test_cpu_guard).
    guard = CpuGuard(cache_dir=tmp_path / "cpu-probe", probe_command=[sys.executable, "-c", ""])
    monkeypatch.setattr(local_module, "_DEFAULT_GUARD", guard)
    monkeypatch.setenv("QWENLOOP_CACHE", str(tmp_path / "cache"))
    return FakeLlama


@pytest.fixture
def gguf(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.gguf"
    path.write_bytes(b"GGUF\x03\x00\x00\x00")
    return path


def request(
    tools: list[dict[str, Any]] | None = None, content: str = "What is 2+2?", **params: Any
) -> ModelRequest:
    return ModelRequest(
        model="local",
        messages=[{"role": "user", "content": content}],
        tools=tools,
        params=params,
    )


def assemble(chunks: list[dict[str, Any]]) -> tuple[dict[str, Any], str | None, dict[str, Any]]:
    """Assemble stream chunks the way an OpenAI client does: (message, finish, usage)."""
    message: dict[str, Any] = {"role": "assistant", "content": None}
    calls: dict[int, dict[str, Any]] = {}
    finish = None
    usage: dict[str, Any] = {}
    for chunk in chunks:
        assert chunk["object"] == "chat.completion.chunk"
        if chunk.get("usage"):
            usage = chunk["usage"]
        for choice in chunk["choices"]:
            delta = choice["delta"]
            for key in ("content", "reasoning_content"):
                if delta.get(key):
                    message[key] = (message.get(key) or "") + delta[key]
            for call in delta.get("tool_calls", []):
                slot = calls.setdefault(
                    call["index"],
                    {"id": "", "type": "function", "function": {"name": "", "arguments": ""}},
                )
                slot["id"] += call.get("id", "")
                slot["function"]["name"] += call["function"].get("name", "")
                slot["function"]["arguments"] += call["function"].get("arguments", "")
            finish = choice["finish_reason"] or finish
    if calls:
        message["tool_calls"] = [calls[index] for index in sorted(calls)]
    return message, finish, usage


def without_ids(message: dict[str, Any]) -> dict[str, Any]:
    shown = json.loads(json.dumps(message))
    for call in shown.get("tool_calls", []):
        assert call.pop("id").startswith("call_")
    return shown


async def both(
    model: LocalChatModel, fake: type[FakeLlama], reply: str, req: ModelRequest
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run the same scripted reply through complete() and stream()."""
    fake.replies.extend([reply, reply])
    body = (await model.complete(req)).body
    chunks = [chunk async for chunk in model.stream(req, ResponseMeta())]
    return body, chunks


REPLIES = [
    "The answer is 4.",
    '```json\n{\n  "name": "calculator",\n  "arguments": {\n    "expression": "2+2"\n  }\n}\n```',
    'Let me compute.\n<tool_call>\n{"name": "calculator", "arguments": {"expression": "2+2"}}\n'
    '</tool_call>\n<tool_call>\n{"name": "calculator", "arguments": {"expression": "3*3"}}',
    '{{"name": "calculator", "arguments": {"expression": "12 * 34"}}}',
    "<think>\nadd them\n</think>\n\nIt is 4 — vier, 四.",
    "Here is code:\n```python\nprint({'a': 1})\n```\nDone.",
    '{"name": "unknown_tool", "arguments": {}}',
]


@pytest.mark.parametrize("reply", REPLIES)
async def test_stream_assembles_to_complete(
    fake_llama: type[FakeLlama], gguf: Path, reply: str
) -> None:
    # Unguided, so every form the text parser reads reaches it as scripted (guided calls are
    # rewritten into <tool_call> blocks first: tested below).
    model = LocalChatModel(str(gguf), guided_calls=False)
    body, chunks = await both(model, fake_llama, reply, request([CALC], temperature=0))
    message, finish, usage = assemble(chunks)
    choice = body["choices"][0]
    assert without_ids(message) == without_ids(choice["message"])
    assert finish == choice["finish_reason"]
    assert usage == body["usage"]
    assert chunks[-1]["choices"] == []
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    await model.aclose()


async def test_complete_reads_a_fenced_call(fake_llama: type[FakeLlama], gguf: Path) -> None:
    model = LocalChatModel(str(gguf), model_name="tiny", guided_calls=False)
    fake_llama.replies.append(REPLIES[1])
    response = await model.complete(request([CALC]))
    body = response.body
    assert body["object"] == "chat.completion"
    assert body["model"] == "tiny"
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function"
    assert len(call["id"]) == len("call_") + 8
    assert call["function"] == {"name": "calculator", "arguments": '{"expression": "2+2"}'}
    prompt_tokens = len(fake_llama.instances[0].prompts[0].encode())
    assert body["usage"]["prompt_tokens"] == prompt_tokens
    assert body["usage"]["completion_tokens"] == len(REPLIES[1].encode())
    assert response.meta.request_id == body["id"]
    await model.aclose()


async def test_plain_answer_and_reasoning(fake_llama: type[FakeLlama], gguf: Path) -> None:
    model = LocalChatModel(str(gguf))
    fake_llama.replies.append("<think>\nadd them\n</think>\n\nIt is 4.")
    choice = (await model.complete(request([CALC]))).body["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["message"] == {
        "role": "assistant",
        "content": "It is 4.",
        "reasoning_content": "add them",
    }
    await model.aclose()


async def test_stream_shows_prose_before_the_call_arrives(
    fake_llama: type[FakeLlama], gguf: Path
) -> None:
    model = LocalChatModel(str(gguf))
    fake_llama.replies.append(REPLIES[2])
    chunks = [chunk async for chunk in model.stream(request([CALC]), ResponseMeta())]
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    content_deltas = [d["content"] for d in deltas if "content" in d]
    assert "".join(content_deltas) == "Let me compute."
    assert len(content_deltas) > 1  # shown as it came, not at the end
    call_deltas = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    assert [d["index"] for d in call_deltas] == [0, 1]
    assert [json.loads(d["function"]["arguments"]) for d in call_deltas] == [
        {"expression": "2+2"},
        {"expression": "3*3"},
    ]
    # No chunk ever showed any of the call's text.
    assert all("<tool_call>" not in d.get("content", "") for d in deltas)
    await model.aclose()


async def test_multibyte_characters_split_across_tokens(
    fake_llama: type[FakeLlama], gguf: Path
) -> None:
    model = LocalChatModel(str(gguf))
    text = "Ça fait 4 — 四 🎉"
    body, chunks = await both(model, fake_llama, text, request())
    assert body["choices"][0]["message"]["content"] == text
    assert assemble(chunks)[0]["content"] == text
    assert all(
        "\ufffd" not in (c["choices"] or [{}])[0].get("delta", {}).get("content", "")
        for c in chunks
    )
    await model.aclose()


async def test_prompt_renders_tools_and_object_arguments(
    fake_llama: type[FakeLlama], gguf: Path
) -> None:
    model = LocalChatModel(str(gguf))
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "What is 2+2?"}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "calculator", "arguments": '{"expression": "2+2"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "4"},
    ]
    await model.complete(ModelRequest(model="local", messages=messages, tools=[CALC]))
    prompt = fake_llama.instances[0].prompts[0]
    # The fallback template (the fake GGUF carries none) in ChatML, with the schema as JSON.
    assert prompt.startswith("<|im_start|>system\n")
    assert json.dumps(CALC, ensure_ascii=False) in prompt  # no HTML escaping of < and &
    assert '{"name": "calculator", "arguments": {"expression": "2+2"}}' in prompt
    assert "<tool_response>\n4\n</tool_response>" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")
    await model.aclose()


def _calls(*expressions: str, first_id: int = 1) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": f"call_{first_id + i}",
                "type": "function",
                "function": {"name": "calculator", "arguments": json.dumps({"expression": e})},
            }
            for i, e in enumerate(expressions)
        ],
    }


def _result(call_id: int, content: str) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": f"call_{call_id}", "content": content}


async def test_results_name_their_calls_once_a_question_has_several(
    fake_llama: type[FakeLlama], gguf: Path
) -> None:
    model = LocalChatModel(str(gguf))
    messages = [
        {"role": "user", "content": "What is 2+2?"},
        _calls("2+2"),
        _result(1, "4"),
        {"role": "assistant", "content": "4."},
        # Two results for one question, from two turns: each says which call it answers.
        {"role": "user", "content": "What is 12*12, and 25*4?"},
        _calls("12*12", first_id=2),
        _result(2, "144"),
        _calls("25*4", first_id=3),
        _result(3, "100"),
        {"role": "assistant", "content": "144 and 100."},
        # A server that numbers calls anew each turn: each result goes with its own turn's call.
        {"role": "user", "content": "And 3*3, and 4*4?"},
        _calls("3*3"),
        _result(1, "9"),
        _calls("4*4"),
        _result(1, "16"),
    ]
    await model.complete(ModelRequest(model="local", messages=messages, tools=[CALC]))
    prompt = fake_llama.instances[0].prompts[0]
    assert "<tool_response>\n4\n</tool_response>" in prompt  # the first question had one
    assert (
        '<tool_response>\ncalculator({"expression": "12*12"}) returned: 144\n</tool_response>'
        in prompt
    )
    assert '\ncalculator({"expression": "25*4"}) returned: 100\n' in prompt
    assert '\ncalculator({"expression": "3*3"}) returned: 9\n' in prompt
    assert '\ncalculator({"expression": "4*4"}) returned: 16\n' in prompt
    await model.aclose()


async def test_uses_the_gguf_template(fake_llama: type[FakeLlama], gguf: Path) -> None:
    fake_llama.template = (
        "{{ bos_token }}{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}"
        "{% if tools %}<tools>{{ tools | length }}</tools>{% endif %}"
        "{% if add_generation_prompt %}[assistant]{% endif %}{{ flag }}"
    )
    model = LocalChatModel(str(gguf))
    req = request([CALC], content="hi")
    req.extra_body["chat_template_kwargs"] = {"flag": "!"}
    await model.complete(req)
    assert fake_llama.instances[0].prompts[0] == "<s>[user]hi<tools>1</tools>[assistant]!"
    await model.aclose()


async def test_template_opening_a_think_block(fake_llama: type[FakeLlama], gguf: Path) -> None:
    fake_llama.template = "{{ messages[0].content }}<think>\n"
    fake_llama.replies.append("weighing it</think>\nFour.")
    model = LocalChatModel(str(gguf))
    message = (await model.complete(request())).body["choices"][0]["message"]
    assert message["content"] == "Four."
    assert message["reasoning_content"] == "weighing it"
    await model.aclose()


async def test_template_errors_are_bad_requests(fake_llama: type[FakeLlama], gguf: Path) -> None:
    fake_llama.template = "{{ raise_exception('roles must alternate') }}"
    model = LocalChatModel(str(gguf))
    with pytest.raises(BadRequestError, match="roles must alternate"):
        await model.complete(request())
    await model.aclose()


@pytest.mark.parametrize(
    "malformed",
    [
        {"tool_calls": 5},  # not a list
        {"tool_calls": [{"id": "a", "function": "calculator"}]},  # a call that is no object
        {"tool_calls": [{"id": ["a"], "function": {"name": "calculator"}}]},  # a list as id
    ],
)
async def test_a_malformed_message_is_a_bad_request(
    fake_llama: type[FakeLlama], gguf: Path, malformed: dict[str, Any]
) -> None:
    model = LocalChatModel(str(gguf))
    calls = malformed["tool_calls"]
    call_id = calls[0]["id"] if isinstance(calls, list) else "a"
    messages = [
        {"role": "user", "content": "2+2 and 3+3?"},
        {"role": "assistant", "content": None, **malformed},
        {"role": "tool", "tool_call_id": call_id, "content": "4"},
        {"role": "tool", "tool_call_id": "b", "content": "6"},
    ]
    with pytest.raises(BadRequestError, match="malformed message"):
        await model.complete(ModelRequest(model="local", messages=messages, tools=[CALC]))
    assert fake_llama.instances[0].prompts == []  # nothing was generated
    await model.aclose()


async def test_sampling_parameters(fake_llama: type[FakeLlama], gguf: Path) -> None:
    model = LocalChatModel(str(gguf), seed=7)
    await model.complete(request())
    defaults = fake_llama.instances[0].sampling[0]
    assert defaults["temp"] == 0.7
    assert defaults["top_k"] == 20
    assert defaults["repeat_penalty"] == 1.05
    assert fake_llama.instances[0].seed == 7
    req = request(temperature=0, top_p=0.5, presence_penalty=0.3, frequency_penalty=0.2, seed=3)
    req.extra_body.update(top_k=5, min_p=0.1, repetition_penalty=1.2)
    await model.complete(req)
    given = fake_llama.instances[0].sampling[1]
    assert given["temp"] == 0
    assert given["top_p"] == 0.5
    assert given["top_k"] == 5
    assert given["min_p"] == 0.1
    assert given["repeat_penalty"] == 1.2
    assert given["presence_penalty"] == 0.3
    assert given["frequency_penalty"] == 0.2
    assert fake_llama.instances[0].seed == 3
    await model.aclose()


async def test_max_tokens_ends_with_length(fake_llama: type[FakeLlama], gguf: Path) -> None:
    model = LocalChatModel(str(gguf))
    fake_llama.replies.append("one two three four")
    body = (await model.complete(request(max_tokens=7))).body
    assert body["choices"][0]["message"]["content"] == "one two"
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 7
    await model.aclose()


async def test_stop_strings_are_cut_and_never_streamed(
    fake_llama: type[FakeLlama], gguf: Path
) -> None:
    model = LocalChatModel(str(gguf))
    reply = "alpha beta END gamma"
    body, chunks = await both(model, fake_llama, reply, request(stop=["END", "never"]))
    assert body["choices"][0]["message"]["content"] == "alpha beta"
    assert body["choices"][0]["finish_reason"] == "stop"
    streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert streamed == "alpha beta"
    await model.aclose()


async def test_tool_choice(fake_llama: type[FakeLlama], gguf: Path) -> None:
    other = {"type": "function", "function": {"name": "other", "parameters": {}}}
    model = LocalChatModel(str(gguf))
    fake_llama.replies.append('{"name": "calculator", "arguments": {}}')
    none = (await model.complete(request([CALC], tool_choice="none"))).body["choices"][0]
    assert "tool_calls" not in none["message"]  # no tools shown, so no call read
    assert "# Tools" not in fake_llama.instances[0].prompts[0]
    choice = {"type": "function", "function": {"name": "calculator"}}
    await model.complete(request([CALC, other], tool_choice=choice))
    assert '"name": "other"' not in fake_llama.instances[0].prompts[1]
    with pytest.raises(BadRequestError, match="missing"):
        await model.complete(
            request([CALC], tool_choice={"type": "function", "function": {"name": "missing"}})
        )
    await model.aclose()


async def test_json_response_format_uses_a_grammar(fake_llama: type[FakeLlama], gguf: Path) -> None:
    model = LocalChatModel(str(gguf))
    await model.complete(request(response_format={"type": "json_object"}))
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    await model.complete(
        request(response_format={"type": "json_schema", "json_schema": {"schema": schema}})
    )
    await model.complete(request([CALC], response_format={"type": "json_object"}))
    grammars = [s["grammar"] for s in fake_llama.instances[0].sampling]
    assert grammars[0].source == "json-gbnf"
    assert grammars[1].source == "schema:" + json.dumps(schema)
    assert grammars[2] is None  # tools offered: a grammar would forbid calling them
    await model.aclose()


async def test_a_started_call_goes_on_under_the_tools_grammar(
    fake_llama: type[FakeLlama], gguf: Path
) -> None:
    weather = {
        "type": "function",
        "function": {
            "name": "weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                "required": ["city"],
            },
        },
    }
    model = LocalChatModel(str(gguf))
    fake_llama.replies.extend(
        [
            "Checking.\n<tool_call>\n"
            '{"name": "weather", "arguments": {"city": "Oslo"}}\n</tool_call>\n<tool_call>\n'
            '{"name": "calculator", "arguments": {"expression": "1+1"}}\n</tool_call>',
            "No call here: <tool_call is not a tag.",
        ]
    )
    body = (await model.complete(request([CALC, weather]))).body
    message = body["choices"][0]["message"]
    assert [c["function"]["name"] for c in message["tool_calls"]] == ["weather", "calculator"]
    fake = fake_llama.instances[0]
    # Free until the model wrote "<tool_call>"; from there under the call grammar.
    assert fake.sampling[0]["grammar"] is None
    grammar = fake.sampling[1]["grammar"].source
    assert fake.prompts[0].endswith("<|im_start|>assistant\n")
    assert '"\\"weather\\""' in grammar and '"\\"calculator\\""' in grammar
    assert '"\\"city\\""' in grammar and "root ::=" in grammar
    await model.complete(request([CALC, weather]))
    # The second call was the model's choice (its odds of going on), under the grammar again.
    assert fake.sampling[2]["grammar"].source == grammar
    assert len(fake.sampling) == 4 and fake.sampling[3]["grammar"] is None  # prose: never guided
    unguided = LocalChatModel(str(gguf), guided_calls=False)
    fake_llama.replies.append('<tool_call>\n{"name": "calculator", "arguments": {}}\n</tool_call>')
    await unguided.complete(request([CALC]))
    assert [s["grammar"] for s in fake_llama.instances[1].sampling] == [None]
    await model.aclose()
    await unguided.aclose()


async def test_a_call_opened_as_a_json_fence_is_written_again_as_a_guided_block(
    fake_llama: type[FakeLlama], gguf: Path
) -> None:
    model = LocalChatModel(str(gguf))
    block = '\n{"name": "calculator", "arguments": {"expression": "2+2"}}\n</tool_call>'
    # The model opens a fence; once `{"name":` shows it is a call, generation restarts from
    # the prompt plus "<tool_call>" under the grammar (the stand-in's next script).
    fence = '```json\n{\n  "name": "calculator", "arguments": {"expression": "2+2"}}\n```'
    fake_llama.replies.extend([fence, block, fence, block, "```python\nprint(1)\n```"])
    body = (await model.complete(request([CALC]))).body
    message = body["choices"][0]["message"]
    assert message["content"] is None
    assert [json.loads(c["function"]["arguments"]) for c in message["tool_calls"]] == [
        {"expression": "2+2"}
    ]
    fake = fake_llama.instances[0]
    assert fake.prompts[1] == fake.prompts[0] + "<tool_call>"
    assert fake.sampling[0]["grammar"] is None and fake.sampling[1]["grammar"] is not None
    # Streamed, nothing of the fence is ever shown.
    chunks = [chunk async for chunk in model.stream(request([CALC]), ResponseMeta())]
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert not any(d.get("content") for d in deltas)
    assert [d["tool_calls"][0]["function"]["name"] for d in deltas if "tool_calls" in d] == [
        "calculator"
    ]
    # Code that is not a call is left alone.
    code = (await model.complete(request([CALC]))).body["choices"][0]["message"]
    assert code["content"] == "```python\nprint(1)\n```" and "tool_calls" not in code
    assert fake.sampling[-1]["grammar"] is None
    await model.aclose()


def assert_written_again_as_call(message: dict[str, Any], fake: FakeLlama, expression: str) -> None:
    """The reply's first text was dropped; it went on from `<tool_call>` under the grammar."""
    assert message["content"] is None
    arguments = json.loads(message["tool_calls"][0]["function"]["arguments"])
    assert arguments == {"expression": expression}
    assert fake.prompts[1].endswith("<|im_start|>assistant\n<tool_call>")
    assert fake.sampling[1]["grammar"] is not None


async def test_llama_cpp_failing_mid_request_is_a_typed_model_error(
    fake_llama: type[FakeLlama], gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: FakeLlama, tokens: list[int]) -> None:
        raise RuntimeError("llama_decode returned -1")

    model = LocalChatModel(str(gguf))
    working = fake_llama.eval
    monkeypatch.setattr(fake_llama, "eval", broken)
    with pytest.raises(ModelError, match="The local model failed: llama_decode"):
        await model.complete(request([CALC]))  # in the gate
    monkeypatch.setattr(fake_llama, "eval", working)

    def broken_generate(self: FakeLlama, tokens: list[int], **sampling: Any) -> Iterator[int]:
        raise RuntimeError("llama_decode returned 1")
        yield 0

    monkeypatch.setattr(fake_llama, "generate", broken_generate)
    with pytest.raises(ModelError, match="The local model failed"):
        await model.complete(request())
    with pytest.raises(ModelError):
        [chunk async for chunk in model.stream(request(), ResponseMeta())]
    await model.aclose()


async def test_a_greedy_reply_opens_a_call_when_its_forms_together_outweigh_the_text(
    fake_llama: type[FakeLlama], gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ctypes

    scripted = ctypes.c_float * 1002

    def first_token_logits(ctx: FakeLlama, index: int) -> Any:
        # Where a reply starts: "W" (a question) 0.3, "<" and "{" 0.2 each, the end 0.3;
        # after a call (the runner evaluated it), the end.
        logits = scripted(*([-30.0] * 1002))
        opening = not ctx.evaluated_upto
        for token, probability in ((ord("W"), 0.3), (ord("<"), 0.2), (ord("{"), 0.2)):
            logits[token] = math.log(probability) if opening else -30.0
        logits[EOS] = math.log(0.3) if opening else 0.0
        return ctypes.cast(logits, ctypes.POINTER(ctypes.c_float))

    monkeypatch.setattr(sys.modules["llama_cpp"], "llama_get_logits_ith", first_token_logits)
    monkeypatch.setattr(fake_llama, "n_vocab", lambda self: 1002, raising=False)
    model = LocalChatModel(str(gguf), tool_gate=None)
    call = '\n{"name": "calculator", "arguments": {"expression": "2+2"}}\n</tool_call>'
    fake_llama.replies.extend(["What is 2+2?", call, "What is 2+2?"])
    message = (await model.complete(request([CALC], temperature=0))).body["choices"][0]["message"]
    # Greedy decoding alone takes "W"; a call, written "<" or "{", is likelier (0.4): the reply
    # is written again as a call, under the grammar, and the question is never shown.
    assert_written_again_as_call(message, fake_llama.instances[0], "2+2")
    # Sampled replies keep the model's own draw.
    sampled = (await model.complete(request([CALC], temperature=0.7))).body
    assert sampled["choices"][0]["message"]["content"] == "What is 2+2?"
    await model.aclose()


async def test_a_reply_that_opens_with_a_made_up_tool_response_is_written_again_as_a_call(
    fake_llama: type[FakeLlama], gguf: Path
) -> None:
    model = LocalChatModel(str(gguf), tool_gate=None)
    call = '\n{"name": "calculator", "arguments": {"expression": "1+1"}}\n</tool_call>'
    fake_llama.replies.extend(
        ["<tool_response>\n2\n</tool_response>", call, "Done.\n<tool_response>\n2"]
    )
    message = (await model.complete(request([CALC]))).body["choices"][0]["message"]
    # The model wrote a tool's answer where its call belongs: the call it meant is written
    # under the grammar instead, and the made-up answer is never shown.
    assert_written_again_as_call(message, fake_llama.instances[0], "1+1")
    # Later in a reply, "<tool_response>" still ends it.
    later = (await model.complete(request([CALC]))).body["choices"][0]["message"]
    assert later["content"] == "Done." and not later.get("tool_calls")
    await model.aclose()


async def test_guided_generation_stops_when_the_model_repeats_a_call(
    fake_llama: type[FakeLlama], gguf: Path
) -> None:
    model = LocalChatModel(str(gguf))
    block = '<tool_call>\n{"name": "calculator", "arguments": {"expression": "%s"}}\n</tool_call>'
    fake_llama.replies.append("\n".join(block % e for e in ("1+1", "2+2", "1+1", "3+3")))
    message = (await model.complete(request([CALC]))).body["choices"][0]["message"]
    assert [json.loads(c["function"]["arguments"]) for c in message["tool_calls"]] == [
        {"expression": "1+1"},
        {"expression": "2+2"},
    ]
    # Generation stopped at the repeat, before "3+3"; each "\n<tool_call>" after a call is
    # written by the runner once the model's odds say it goes on, not generated.
    three = "\n".join(block % e for e in ("1+1", "2+2", "1+1"))
    assert fake_llama.instances[0].yielded == len(three) - 2 * len("\n<tool_call>")
    await model.aclose()


async def test_a_call_repeated_word_for_word_in_one_reply_is_sent_once(
    fake_llama: type[FakeLlama], gguf: Path
) -> None:
    model = LocalChatModel(str(gguf), guided_calls=False)
    call = '<tool_call>\n{"name": "calculator", "arguments": {"expression": "2+2"}}\n</tool_call>'
    other = call.replace("2+2", "3+3")
    fake_llama.replies.append("\n".join([call, other, call]))
    message = (await model.complete(request([CALC]))).body["choices"][0]["message"]
    assert [json.loads(c["function"]["arguments"]) for c in message["tool_calls"]] == [
        {"expression": "2+2"},
        {"expression": "3+3"},
    ]
    await model.aclose()


async def test_the_gate_answers_without_tools_when_the_model_would_choose_none_fits(
    fake_llama: type[FakeLlama], gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = LocalChatModel(str(gguf), tool_gate=0.3)
    fake_llama.replies.extend(["Paris.", "It is 4."])
    for odds in (0.4, 0.2):
        monkeypatch.setattr(fake_llama, "no_fit", odds)
        await model.complete(request([CALC], content="Capital of France?"))
    fake = fake_llama.instances[0]
    asked = fake.evaluated
    # The gate reads the model's choice where a call names its function, in the very prompt
    # the reply is then generated from (the "none fits" option listed after the tools); where
    # the option wins, it reads the model's odds of opening a call at all (here 0).
    assert len(asked) == 3
    assert asked[0].endswith('<tool_call>\n{"name": "') and asked[1] + "<tool_call>" in asked[0]
    assert '"no_suitable_function"' in asked[0] and "Capital of France?" in asked[0]
    # P(none fits) 0.4: answered without tools (no tool section, no grammar); 0.2: with them,
    # from the prompt the gate read.
    assert "# Tools" not in fake.prompts[0] and "# Tools" in fake.prompts[1]
    assert asked[2] == fake.prompts[1] + '<tool_call>\n{"name": "'
    # A model all but sure to open a call (0.8) calls, whatever its odds of "none fits".
    monkeypatch.setattr(fake_llama, "opens_call", 0.8)
    monkeypatch.setattr(fake_llama, "no_fit", 0.9)
    fake_llama.replies.append("<tool_call>\n" + '{"name": "calculator", "arguments": {}}')
    await model.complete(request([CALC], content="Two tasks: 2+2, and the capital of France?"))
    assert len(asked) == 5 and asked[4] == fake.prompts[2]
    monkeypatch.setattr(fake_llama, "opens_call", 0.0)
    # tool_choice other than auto, and turns after a tool result, are not gated.
    await model.complete(
        request([CALC], tool_choice={"type": "function", "function": {"name": "calculator"}})
    )
    tool_turn = ModelRequest(
        model="local",
        messages=[
            {"role": "user", "content": "2+2?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "calculator", "arguments": "{}"},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "4"},
        ],
        tools=[CALC],
    )
    await model.complete(tool_turn)
    assert len(fake.evaluated) == 5
    off = LocalChatModel(str(gguf), tool_gate=None)
    monkeypatch.setattr(fake_llama, "no_fit", 1.0)
    await off.complete(request([CALC]))
    assert fake_llama.instances[1].evaluated == []
    assert "# Tools" in fake_llama.instances[1].prompts[0]
    assert "no_suitable_function" not in fake_llama.instances[1].prompts[0]
    await model.aclose()
    await off.aclose()


async def test_context_overflow_is_a_bad_request(fake_llama: type[FakeLlama], gguf: Path) -> None:
    model = LocalChatModel(str(gguf), n_ctx=64)
    with pytest.raises(BadRequestError) as caught:
        await model.complete(request(content="x" * 100))
    assert caught.value.code == "context_length_exceeded"
    await model.aclose()


async def test_unsupported_requests(fake_llama: type[FakeLlama], gguf: Path) -> None:
    model = LocalChatModel(str(gguf))
    with pytest.raises(ModelNotSupportedError):
        await model.complete(request(n=2))
    image = {"type": "image_url", "image_url": {"url": "data:,"}}
    with pytest.raises(ModelNotSupportedError, match="image_url"):
        await model.complete(
            ModelRequest(model="local", messages=[{"role": "user", "content": [image]}])
        )
    await model.aclose()


async def test_requests_are_serialised_and_do_not_block_the_loop(
    fake_llama: type[FakeLlama], gguf: Path
) -> None:
    fake_llama.delay = 0.002
    fake_llama.replies.extend(["first reply " * 5, "second reply " * 5])
    model = LocalChatModel(str(gguf))
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0.005)

    tick_task = asyncio.create_task(ticker())
    first, second = await asyncio.gather(model.complete(request()), model.complete(request()))
    done.set()
    await tick_task
    contents = {
        first.body["choices"][0]["message"]["content"],
        second.body["choices"][0]["message"]["content"],
    }
    assert contents == {("first reply " * 5).strip(), ("second reply " * 5).strip()}
    assert fake_llama.instances[0].max_active == 1
    assert len(fake_llama.instances) == 1  # loaded once
    assert ticks > 5
    await model.aclose()


async def test_leaving_a_stream_early_stops_generation(
    fake_llama: type[FakeLlama], gguf: Path
) -> None:
    fake_llama.delay = 0.002
    fake_llama.replies.extend(["word " * 500, "after"])
    model = LocalChatModel(str(gguf))
    stream = model.stream(request(), ResponseMeta())
    async for _chunk in stream:
        break
    await stream.aclose()  # type: ignore[attr-defined]
    # The next request queues behind the stopped one and gets its own reply.
    body = (await model.complete(request())).body
    assert body["choices"][0]["message"]["content"] == "after"
    assert fake_llama.instances[0].yielded < len("word " * 500) + len("after")
    await model.aclose()


async def test_aclose_frees_and_a_later_request_reloads(
    fake_llama: type[FakeLlama], gguf: Path
) -> None:
    model = LocalChatModel(str(gguf))
    assert isinstance(model, ChatModel)
    assert model.provider == "local"
    await model.load()
    assert model.model_path == gguf
    assert model.load_seconds is not None
    await model.aclose()
    assert fake_llama.instances[0].closed
    await model.complete(request())
    assert len(fake_llama.instances) == 2
    await model.aclose()
    await model.aclose()  # twice is harmless


async def test_settings_reach_llama(fake_llama: type[FakeLlama], gguf: Path) -> None:
    model = LocalChatModel(str(gguf), n_ctx=2048, n_threads=3, seed=5, verbose=True)
    await model.load()
    settings = fake_llama.instances[0].settings
    assert settings == {
        "n_ctx": 2048,
        "n_threads": 3,
        "n_threads_batch": 3,
        "seed": 5,
        "verbose": True,
    }
    await model.aclose()


async def test_missing_llama_cpp_names_the_extra(
    gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    model = LocalChatModel(str(gguf))
    with pytest.raises(ConfigError, match=r"pip install 'qwenloop\[local\]'"):
        await model.complete(request())
    await model.aclose()


async def test_bad_model_path(fake_llama: type[FakeLlama], tmp_path: Path) -> None:
    model = LocalChatModel(str(tmp_path / "missing.gguf"))
    with pytest.raises(ConfigError, match="does not exist"):
        await model.complete(request())
    await model.aclose()


def crashing_guard(tmp_path: Path) -> CpuGuard:
    """A CPU guard whose probe child dies of SIGILL whatever it tries (a build for another CPU)."""
    crash = "import signal; signal.raise_signal(signal.SIGILL)"
    return CpuGuard(
        cache_dir=tmp_path / "crash-probe",
        flags=["avx2", "amx_tile"],
        probe_command=[sys.executable, "-c", crash],
    )


async def test_a_cpu_that_cannot_run_llama_is_a_typed_error_with_the_run(
    fake_llama: type[FakeLlama], gguf: Path, tmp_path: Path
) -> None:
    from agent import Agent, UnsupportedCPUError

    agent = Agent(chat_model=LocalChatModel(str(gguf), cpu_guard=crashing_guard(tmp_path)))
    with pytest.raises(UnsupportedCPUError, match="SIGILL") as caught:
        await agent.run("What is 2+2?")
    assert caught.value.result is not None
    assert caught.value.result.messages[-1]["content"] == "What is 2+2?"
    assert not fake_llama.instances  # llama.cpp was never loaded in this process
    await agent.aclose()


def test_the_cli_reports_an_unusable_cpu_in_one_line(
    fake_llama: type[FakeLlama],
    gguf: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from agent.cli import main

    monkeypatch.setattr(local_module, "_DEFAULT_GUARD", crashing_guard(tmp_path))
    code = main(["run", "What is 2+2?", "--provider", "local", "--model-path", str(gguf)])
    err = capsys.readouterr().err
    assert code == 1
    assert len(err.strip().splitlines()) == 1
    assert "llama.cpp crashes on this CPU (SIGILL" in err
    assert "pip install --force-reinstall --no-cache-dir" in err


async def test_extra_buffer_types_given_explicitly_skip_the_probe(
    fake_llama: type[FakeLlama], gguf: Path, tmp_path: Path
) -> None:
    model = LocalChatModel(str(gguf), extra_buffer_types=True, cpu_guard=crashing_guard(tmp_path))
    fake_llama.replies.append("4")
    body = (await model.complete(request())).body
    assert body["choices"][0]["message"]["content"] == "4"
    await model.aclose()


async def test_xml_calls_take_the_types_the_tool_declares(
    fake_llama: type[FakeLlama], gguf: Path
) -> None:
    repeat = {
        "type": "function",
        "function": {
            "name": "repeat",
            "parameters": {
                "type": "object",
                "properties": {"text": {"type": "string"}, "times": {"type": "integer"}},
            },
        },
    }
    model = LocalChatModel(str(gguf), model_name="tiny")
    reply = (
        "<tool_call>\n<function=repeat>\n<parameter=text>\n7\n</parameter>\n"
        "<parameter=times>\n3\n</parameter>\n</function>\n</tool_call>"
    )
    body, chunks = await both(model, fake_llama, reply, request([repeat]))
    streamed, _, _ = assemble(chunks)
    for message in (body["choices"][0]["message"], streamed):
        (call,) = message["tool_calls"]
        assert json.loads(call["function"]["arguments"]) == {"text": "7", "times": 3}
    await model.aclose()
