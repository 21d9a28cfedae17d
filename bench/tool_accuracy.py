"""Tool-call accuracy of the embedded local model on a BFCL sample: qwenloop vs llama.cpp's server.

Usage:

    python bench/tool_accuracy.py                          # 50 per category, both backends
    python bench/tool_accuracy.py --per-category 2 --json /tmp/acc.json
    python bench/tool_accuracy.py --categories simple,irrelevance --backends qwenloop
    python bench/tool_accuracy.py --per-category 20 --backends qwenloop --unguided  # before

Questions come from the Berkeley Function Calling Leaderboard (BFCL), read straight out of the
`bfcl-eval` wheel (pinned below; downloaded once with `pip download --no-deps` into
~/.cache/qwenloop/bench/, nothing of it is installed or imported). Categories: simple (Python),
multiple, parallel, parallel_multiple and irrelevance. A seeded sample of N per category is
drawn (`--per-category`, `--sample-seed`); only the first turn of each question is asked.

Backends, the same GGUF weights behind both, asked alternately question by question so machine
noise hits both alike:

- `qwenloop`: `LocalChatModel.complete` in this process (the model's own chat template, calls
  parsed from the text by `agent.textcalls`), with guided calls, tool guidance and the relevance
  gate as shipped (`agent.models.tool_guide`); `--unguided` turns all three off, which is how
  qwenloop ran before them.
- `llama-server`: llama-cpp-python's OpenAI-compatible server (`python -m llama_cpp.server`,
  needs `llama-cpp-python[server]`) with `--chat_format chatml-function-calling`, the only
  format it ships for OpenAI-style `tools` on a ChatML model (the `functionary*` ones are for
  Functionary models and their own tokenizer), called with the plain `openai` SDK.

Both get the same messages, tools and sampling: temperature 0, seed 0, max_tokens 256 and
Qwen's recommended top_k/top_p/min_p/repeat_penalty (llama.cpp applies the repeat penalty even
when decoding greedily, and the server's default, 1.1, differs from qwenloop's 1.05), and
`tool_choice="auto"` (OpenAI's default when tools are given, but chatml-function-calling
ignores the tools unless it is sent). A question without a system message gets Qwen2.5's own
default one, "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.": Qwen's
template renders exactly that when there is none, so qwenloop's prompt does not change, while
chatml-function-calling lists the tools only inside a system message. Notes on the server
(llama-cpp-python 0.3.36): chatml-function-calling first lets a grammar choose between
"message:" and "functions.NAME:"; call arguments are then generated under the tool's JSON
Schema grammar, without max_tokens; `seed` is ignored; and when it chooses "message:" the text
is still held to the function-name grammar, so such a reply is empty or a bare
"functions.NAME:" (counted as unparsable below). Its log goes to ~/.cache/qwenloop/bench/
llama-server.log. Seconds per question exclude loading the weights.

BFCL function docs become JSON Schema in one place, `to_json_schema`, used for both backends
(the mapping is part of the benchmark): dict -> object, float -> number, tuple -> array, any (or
an unknown type) -> no "type" at all; integer/string/boolean/array keep theirs; properties,
items and additionalProperties are mapped recursively; BFCL's non-standard "optional" flag is
dropped (the "required" list says it). Dots in function names become "_" on the wire and are
mapped back before scoring, as BFCL's own OpenAI handler does.

Scoring is an AST-style check written here after BFCL's `ast_checker` (bfcl-eval is not
imported). A call matches an expected call when the function name is right, every required
parameter (the function doc's "required") is given, every given parameter is one the answer
lists, every given value is among the answer's accepted values, and every parameter the answer
lists without "" among its accepted values is given ("" means "may be omitted"; an explicit ""
string is accepted there too, as in BFCL). Values:
numbers compare equal across int/float (a bool is never a number); strings compare after
BFCL's standardisation (lower-cased, with spaces and , . / - _ * ^ removed, ' read as ");
lists compare element by element, in order; a dict in an answer maps each key to its accepted
values, recursively. simple and multiple need exactly one call, parallel and parallel_multiple
a one-to-one match between the calls and the expected calls in any order, and irrelevance no
call at all. Errors (exceptions, timeouts) count as wrong.

Two more counts per question, from the reply's text content (a heuristic): `leaked` when the
content looks like a call (contains "<tool_call>", "functions.NAME:" or a JSON object with a
"name" key), with or without structured tool_calls beside it; `unparsable` when it does and
there are no structured tool_calls at all (so unparsable is a subset of leaked).

Output: a table per backend and category (accuracy, n, unparsable, leaked, errors, mean seconds
per question); `--json OUT` writes every question's record (id, category, backend, calls as
name + arguments, content, verdict, reason, and for qwenloop the raw generated text) with reason
strings meant for grouping: "no call", "no call (unparsable call text)", "extra call: ...",
"missing call: ...", "wrong function: ...", "missing required param X", "unexpected param X",
"missing param X (answer has no default)", "value mismatch for X: got ... expected one of ...",
"arguments not a JSON object: ...", "called when none applies: ...", "error: ...".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import random
import re
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

BFCL_VERSION = "2026.3.23"
CATEGORIES = ("simple", "multiple", "parallel", "parallel_multiple", "irrelevance")
# The stems of each category's data file in the wheel (BFCL_v4_simple_python.json, ...); older
# releases named the Python simple set BFCL_v3_simple.json.
CATEGORY_STEMS: dict[str, tuple[str, ...]] = {
    "simple": ("simple_python", "simple"),
    "multiple": ("multiple",),
    "parallel": ("parallel",),
    "parallel_multiple": ("parallel_multiple",),
    "irrelevance": ("irrelevance",),
}
BACKENDS = ("qwenloop", "llama-server")
CHAT_FORMAT = "chatml-function-calling"
N_CTX = 4096
MAX_TOKENS = 256
# Qwen2.5's template writes this system message when a conversation has none.
DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
# Sent to both backends. Qwen2.5's recommended sampling (qwenloop's defaults); only
# repeat_penalty matters at temperature 0, but llama.cpp does apply it to greedy decoding.
SAMPLING: dict[str, Any] = {"temperature": 0, "seed": 0, "max_tokens": MAX_TOKENS}
LLAMA_SAMPLING: dict[str, Any] = {"top_k": 20, "top_p": 0.8, "min_p": 0.0, "repeat_penalty": 1.05}
SERVER_PACKAGES = ("fastapi", "uvicorn", "sse_starlette", "starlette_context", "pydantic_settings")
SERVER_START_TIMEOUT = 300.0
REQUEST_TIMEOUT = 600.0


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "qwenloop" / "bench"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- data ------------------------------------------------------------------------------------


@dataclass(slots=True)
class Question:
    id: str
    category: str
    messages: list[dict[str, Any]]
    functions: list[dict[str, Any]]
    answers: list[dict[str, dict[str, list[Any]]]]  # [{function: {param: [accepted, ...]}}]


def bfcl_wheel(directory: Path) -> Path:
    """Return the pinned bfcl-eval wheel, downloading it (without dependencies) if missing."""
    pattern = f"bfcl_eval-{BFCL_VERSION}-*.whl"
    found = sorted(directory.glob(pattern))
    if found:
        return found[0]
    directory.mkdir(parents=True, exist_ok=True)
    log(f"downloading bfcl-eval=={BFCL_VERSION} into {directory}")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            f"bfcl-eval=={BFCL_VERSION}",
            "-d",
            str(directory),
        ],
        check=True,
    )
    found = sorted(directory.glob(pattern))
    if not found:
        raise SystemExit(f"pip download left no {pattern} in {directory}")
    return found[0]


def _member(names: Sequence[str], stems: Sequence[str], *, answers: bool) -> str | None:
    for stem in stems:
        pattern = re.compile(rf"(^|/)BFCL_v\d+_{re.escape(stem)}\.json$")
        for name in names:
            if "unused" in name or ("possible_answer/" in name) != answers:
                continue
            if pattern.search(name):
                return name
    return None


def _json_lines(archive: zipfile.ZipFile, member: str) -> list[dict[str, Any]]:
    text = archive.read(member).decode("utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def load_category(archive: zipfile.ZipFile, category: str) -> list[Question]:
    names = archive.namelist()
    stems = CATEGORY_STEMS[category]
    question_file = _member(names, stems, answers=False)
    if question_file is None:
        raise SystemExit(f"no BFCL data file for {category!r} in {archive.filename}")
    answers: dict[str, list[Any]] = {}
    if category != "irrelevance":
        answer_file = _member(names, stems, answers=True)
        if answer_file is None:
            raise SystemExit(f"no possible answers for {category!r} in {archive.filename}")
        answers = {row["id"]: row["ground_truth"] for row in _json_lines(archive, answer_file)}
    questions = []
    for row in _json_lines(archive, question_file):
        if category != "irrelevance" and row["id"] not in answers:
            raise SystemExit(f"{row['id']} has no possible answer")
        questions.append(
            Question(
                id=row["id"],
                category=category,
                messages=list(row["question"][0]),  # the first turn
                functions=row["function"],
                answers=answers.get(row["id"], []),
            )
        )
    return questions


def sample(questions: list[Question], count: int, seed: int) -> list[Question]:
    """A seeded sample, kept in file order; the same for a given seed, category and count."""
    if not questions:
        return []
    rng = random.Random(f"bfcl:{seed}:{questions[0].category}")
    picked = sorted(rng.sample(range(len(questions)), min(count, len(questions))))
    return [questions[index] for index in picked]


def interleave(groups: Sequence[Sequence[Question]]) -> list[Question]:
    """Round-robin over categories, so a run stopped early still covers them all."""
    out: list[Question] = []
    for index in range(max((len(group) for group in groups), default=0)):
        out.extend(group[index] for group in groups if index < len(group))
    return out


# -- tools: the BFCL -> JSON Schema mapping (one function, used for both backends) -----------

_TYPE_MAP = {
    "dict": "object",
    "object": "object",
    "float": "number",
    "number": "number",
    "integer": "integer",
    "string": "string",
    "boolean": "boolean",
    "bool": "boolean",
    "array": "array",
    "list": "array",
    "tuple": "array",
}


def to_json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Map one BFCL parameter schema to JSON Schema (see the module docstring for the rules)."""
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "type":
            mapped = _TYPE_MAP.get(str(value))
            if mapped is not None:  # "any" and unknown types: no type constraint at all
                out["type"] = mapped
        elif key == "optional":
            continue  # not JSON Schema; "required" already says it
        elif key == "properties" and isinstance(value, dict):
            out[key] = {
                name: to_json_schema(prop) if isinstance(prop, dict) else prop
                for name, prop in value.items()
            }
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = to_json_schema(value)
        else:
            out[key] = value
    return out


def wire_name(name: str) -> str:
    return name.replace(".", "_")


def to_tools(functions: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Return the OpenAI tools for a question and the map from wire names back to BFCL's."""
    tools = []
    back: dict[str, str] = {}
    for function in functions:
        name = wire_name(function["name"])
        if name in back:
            raise ValueError(f"two functions share the wire name {name!r}")
        back[name] = function["name"]
        parameters = to_json_schema(function.get("parameters") or {"type": "dict"})
        parameters["type"] = "object"
        parameters.setdefault("properties", {})
        tools.append(
            {
                "type": "function",
                "function": {
                    "name": name,
                    "description": function.get("description", ""),
                    "parameters": parameters,
                },
            }
        )
    return tools, back


def with_system(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if any(message.get("role") == "system" for message in messages):
        return messages
    return [{"role": "system", "content": DEFAULT_SYSTEM}, *messages]


# -- replies ---------------------------------------------------------------------------------


@dataclass(slots=True)
class Call:
    name: str
    arguments: Any  # decoded JSON, or None when the arguments were not JSON
    raw_arguments: str


@dataclass(slots=True)
class Reply:
    calls: list[Call]
    content: str
    raw: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


def reply_from_body(body: dict[str, Any], back: dict[str, str], raw: str | None) -> Reply:
    """Read an OpenAI `chat.completion` body; wire names are mapped back to BFCL's."""
    choice = (body.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    functions = [call.get("function") or {} for call in message.get("tool_calls") or []]
    if not functions and message.get("function_call"):
        functions = [message["function_call"]]
    calls = []
    for function in functions:
        raw_arguments = function.get("arguments")
        if isinstance(raw_arguments, str):
            try:
                arguments = json.loads(raw_arguments) if raw_arguments.strip() else {}
            except ValueError:
                arguments = None
        else:
            arguments, raw_arguments = raw_arguments, json.dumps(raw_arguments)
        name = str(function.get("name") or "")
        calls.append(Call(back.get(name, name), arguments, raw_arguments or ""))
    usage = body.get("usage") or {}
    return Reply(
        calls=calls,
        content=message.get("content") or "",
        raw=raw,
        finish_reason=choice.get("finish_reason"),
        prompt_tokens=usage.get("prompt_tokens"),
        completion_tokens=usage.get("completion_tokens"),
    )


_CALL_LIKE = re.compile(r"<tool_call>|\bfunctions\.\w[\w.]*\s*:|[{,]\s*[\"']name[\"']\s*:")


def call_like(text: str) -> bool:
    return bool(_CALL_LIKE.search(text))


# -- scoring ---------------------------------------------------------------------------------

_STRIP = re.compile(r"[ ,./\-_*^]")


def standardize(text: str) -> str:
    """BFCL's string standardisation: drop spaces and , . / - _ * ^, lower-case, ' -> "."""
    return _STRIP.sub("", text).lower().replace("'", '"')


def same(got: Any, want: Any) -> bool:
    """Whether a given value equals one accepted value (a dict in `want` holds alternatives)."""
    if isinstance(want, dict):
        return isinstance(got, dict) and dict_mismatch(got, want, "") is None
    if isinstance(want, list | tuple):
        return (
            isinstance(got, list | tuple)
            and len(got) == len(want)
            and all(same(g, w) for g, w in zip(got, want, strict=True))
        )
    if isinstance(want, bool) or isinstance(got, bool):
        return isinstance(want, bool) and isinstance(got, bool) and got == want
    if isinstance(want, int | float):
        return isinstance(got, int | float) and float(got) == float(want)
    if isinstance(want, str):
        return isinstance(got, str) and standardize(got) == standardize(want)
    return bool(got == want)


def _alternatives(accepted: Any) -> list[Any]:
    return accepted if isinstance(accepted, list) else [accepted]


def accepted_value(got: Any, accepted: Any) -> bool:
    return any(same(got, alternative) for alternative in _alternatives(accepted))


def short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def dict_mismatch(got: dict[str, Any], want: dict[str, Any], path: str) -> str | None:
    """Compare a dict value with an answer's dict of accepted values per key."""
    for key, value in got.items():
        where = f"{path}.{key}" if path else key
        if key not in want:
            return f"unexpected key {where}"
        if not accepted_value(value, want[key]):
            return f"value mismatch for {where}: got {short(value)}"
    for key, accepted in want.items():
        if key not in got and "" not in _alternatives(accepted):
            return f"missing key {path}.{key}" if path else f"missing key {key}"
    return None


def check_call(
    call: Call, expected: dict[str, dict[str, list[Any]]], doc: dict[str, Any] | None
) -> str | None:
    """Return why a call does not match one expected call, or None when it does."""
    name, accepted = next(iter(expected.items()))
    if call.name != name:
        return f"wrong function: got {call.name}, expected {name}"
    if not isinstance(call.arguments, dict):
        return f"arguments not a JSON object: {call.raw_arguments[:80]!r}"
    arguments: dict[str, Any] = call.arguments
    required = ((doc or {}).get("parameters") or {}).get("required") or []
    for param in required:
        if param not in arguments:
            return f"missing required param {param}"
    for param, value in arguments.items():
        if param not in accepted:
            return f"unexpected param {param}"
        if not accepted_value(value, accepted[param]):
            wanted = [item for item in accepted[param] if item != ""]
            return (
                f"value mismatch for {param}: got {short(value)}, expected one of {short(wanted)}"
            )
    for param, values in accepted.items():
        if param not in arguments and "" not in values:
            return f"missing param {param} (answer has no default)"
    return None


def _perfect_matching(ok: list[list[bool]]) -> tuple[list[int], list[int]]:
    """Maximum bipartite matching (Kuhn). Returns (call matched to each answer or -1, inverse)."""
    rows, cols = len(ok), len(ok[0]) if ok else 0
    answer_of_call = [-1] * cols

    def augment(row: int, seen: list[bool]) -> bool:
        for col in range(cols):
            if ok[row][col] and not seen[col]:
                seen[col] = True
                if answer_of_call[col] < 0 or augment(answer_of_call[col], seen):
                    answer_of_call[col] = row
                    return True
        return False

    for row in range(rows):
        augment(row, [False] * cols)
    call_of_answer = [-1] * rows
    for col, row in enumerate(answer_of_call):
        if row >= 0:
            call_of_answer[row] = col
    return call_of_answer, answer_of_call


def score(question: Question, reply: Reply) -> str | None:
    """Return None when the reply is right, else why not."""
    calls = reply.calls
    if question.category == "irrelevance":
        if calls:
            return "called when none applies: " + ", ".join(call.name for call in calls)
        return None
    expected = question.answers
    if not calls:
        return "no call (unparsable call text)" if call_like(reply.content) else "no call"
    if len(calls) > len(expected):
        return f"extra call: got {len(calls)}, expected {len(expected)}"
    if len(calls) < len(expected):
        return f"missing call: got {len(calls)}, expected {len(expected)}"
    docs = {function["name"]: function for function in question.functions}
    reasons = [
        [check_call(call, answer, docs.get(next(iter(answer)))) for call in calls]
        for answer in expected
    ]
    call_of_answer, answer_of_call = _perfect_matching(
        [[reason is None for reason in row] for row in reasons]
    )
    if all(col >= 0 for col in call_of_answer):
        return None
    problems = []
    free = [col for col, row in enumerate(answer_of_call) if row < 0]
    for row, col in enumerate(call_of_answer):
        if col >= 0:
            continue
        name = next(iter(expected[row]))
        same_name = [c for c in free if calls[c].name == name]
        if same_name:  # explain with an unmatched call to the same function, each used once
            free.remove(same_name[0])
            problems.append(reasons[row][same_name[0]] or "")
        else:
            got = ", ".join(calls[c].name for c in free) or "nothing"
            problems.append(f"wrong function: got {got}, expected {name}")
    return "; ".join(problems)


# -- backends --------------------------------------------------------------------------------


class Backend(Protocol):
    name: str

    async def start(self) -> None: ...

    async def ask(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], back: dict[str, str]
    ) -> Reply: ...

    async def stop(self) -> None: ...


class RawCapture:
    """Remember the raw text qwenloop's local model parsed (a bench may reach inside)."""

    def __init__(self) -> None:
        self.last: str | None = None

    def install(self) -> None:
        import agent.textcalls as textcalls

        original: Callable[..., Any] = textcalls.parse_tool_calls

        def capturing(text: str, *args: Any, **kwargs: Any) -> Any:
            self.last = text
            return original(text, *args, **kwargs)

        for name, module in list(sys.modules.items()):
            if name.startswith("agent.") and getattr(module, "parse_tool_calls", None) is original:
                module.parse_tool_calls = capturing  # type: ignore[attr-defined]


class QwenloopBackend:
    name = "qwenloop"

    def __init__(self, *, guided: bool = True) -> None:
        from agent.models.local import LocalChatModel

        # Same conditions as the server: every kernel, no KV snapshots on disk.
        self.model = LocalChatModel(
            n_ctx=N_CTX, seed=0, extra_buffer_types=True, prompt_cache=False, guided_calls=guided
        )
        self.capture = RawCapture()

    async def start(self) -> None:
        started = time.perf_counter()
        await self.model.load()
        self.capture.install()
        log(f"qwenloop: loaded {self.model.model_path} in {time.perf_counter() - started:.1f} s")

    async def ask(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], back: dict[str, str]
    ) -> Reply:
        from agent.models.base import ModelRequest

        self.capture.last = None
        request = ModelRequest(
            model="local",
            messages=messages,
            tools=tools,
            params={**SAMPLING, "tool_choice": "auto"},
            extra_body=dict(LLAMA_SAMPLING),
        )
        response = await self.model.complete(request)
        return reply_from_body(response.body, back, self.capture.last)

    async def stop(self) -> None:
        await self.model.aclose()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


class ServerBackend:
    """llama-cpp-python's OpenAI-compatible server in a subprocess, asked with the openai SDK."""

    name = "llama-server"

    def __init__(self, model_path: Path, chat_format: str) -> None:
        self.model_path = model_path
        self.chat_format = chat_format
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = cache_dir() / "llama-server.log"
        self.client: Any = None
        self.model_id = "local"

    async def start(self) -> None:
        missing = [name for name in SERVER_PACKAGES if importlib.util.find_spec(name) is None]
        if missing:
            raise SystemExit(
                f"llama-server needs llama-cpp-python[server]; missing {', '.join(missing)}: "
                "pip install fastapi uvicorn sse-starlette starlette-context pydantic-settings"
            )
        import httpx
        import openai

        port = _free_port()
        threads = str(_cpus())  # what LocalChatModel uses; the server defaults to half of that
        command = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(self.model_path),
            "--chat_format",
            self.chat_format,
            "--n_ctx",
            str(N_CTX),
            "--n_threads",
            threads,
            "--n_threads_batch",
            threads,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
        started = time.perf_counter()
        self.process = await asyncio.to_thread(self._spawn, command)
        base = f"http://127.0.0.1:{port}/v1"
        async with httpx.AsyncClient(timeout=2.0) as http:
            while True:
                if self.process.poll() is not None:
                    raise SystemExit(
                        f"llama-server exited with {self.process.returncode}; see {self.log_path}"
                    )
                if time.perf_counter() - started > SERVER_START_TIMEOUT:
                    raise SystemExit(f"llama-server did not answer in time; see {self.log_path}")
                with contextlib.suppress(httpx.HTTPError):
                    answer = await http.get(f"{base}/models")
                    if answer.status_code == 200:
                        models = answer.json().get("data") or [{}]
                        self.model_id = str(models[0].get("id") or "local")
                        break
                await asyncio.sleep(0.5)
        self.client = openai.OpenAI(
            base_url=base, api_key="none", timeout=REQUEST_TIMEOUT, max_retries=0
        )
        log(
            f"llama-server: {self.chat_format} on port {port}, up in "
            f"{time.perf_counter() - started:.1f} s (log {self.log_path})"
        )

    def _spawn(self, command: list[str]) -> subprocess.Popen[bytes]:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as server_log:
            return subprocess.Popen(command, stdout=server_log, stderr=subprocess.STDOUT)

    async def ask(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], back: dict[str, str]
    ) -> Reply:
        completion = await asyncio.to_thread(
            self.client.chat.completions.create,
            model=self.model_id,
            messages=messages,
            tools=tools,
            tool_choice="auto",
            extra_body=dict(LLAMA_SAMPLING),
            **SAMPLING,
        )
        return reply_from_body(completion.model_dump(), back, None)

    async def stop(self) -> None:
        if self.client is not None:
            self.client.close()
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            await asyncio.to_thread(process.wait, 15)
        except subprocess.TimeoutExpired:
            process.kill()
            await asyncio.to_thread(process.wait)


# -- run -------------------------------------------------------------------------------------


@dataclass(slots=True)
class Record:
    id: str
    category: str
    backend: str
    verdict: str  # "correct", "wrong" or "error"
    reason: str
    calls: list[dict[str, Any]]
    content: str
    raw: str | None
    seconds: float
    unparsable: bool
    leaked: bool
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    expected: list[dict[str, Any]] = field(default_factory=list)


async def ask_one(backend: Backend, question: Question) -> Record:
    tools, back = to_tools(question.functions)
    messages = with_system(question.messages)
    started = time.perf_counter()
    try:
        reply = await backend.ask(messages, tools, back)
    except Exception as exc:  # recorded, counted as wrong, and the run goes on
        return Record(
            id=question.id,
            category=question.category,
            backend=backend.name,
            verdict="error",
            reason=f"error: {type(exc).__name__}: {exc}"[:300],
            calls=[],
            content="",
            raw=None,
            seconds=time.perf_counter() - started,
            unparsable=False,
            leaked=False,
            expected=question.answers,
        )
    seconds = time.perf_counter() - started
    reason = score(question, reply)
    leaked = call_like(reply.content)
    return Record(
        id=question.id,
        category=question.category,
        backend=backend.name,
        verdict="correct" if reason is None else "wrong",
        reason=reason or "",
        calls=[
            {
                "name": call.name,
                "arguments": call.arguments if call.arguments is not None else call.raw_arguments,
            }
            for call in reply.calls
        ],
        content=reply.content,
        raw=reply.raw,
        seconds=seconds,
        unparsable=leaked and not reply.calls,
        leaked=leaked,
        finish_reason=reply.finish_reason,
        prompt_tokens=reply.prompt_tokens,
        completion_tokens=reply.completion_tokens,
        expected=question.answers,
    )


def groups(
    records: list[Record], backends: Sequence[str]
) -> Iterator[tuple[str, str, list[Record]]]:
    for backend in backends:
        mine = [record for record in records if record.backend == backend]
        for category in CATEGORIES:
            rows = [record for record in mine if record.category == category]
            if rows:
                yield backend, category, rows
        if mine:
            yield backend, "all", mine


def table(records: list[Record], backends: Sequence[str]) -> str:
    header = (
        f"{'backend':<13} {'category':<18} {'acc %':>6} {'n':>4} {'unparsable':>10} "
        f"{'leaked':>6} {'errors':>6} {'s/question':>10}"
    )
    lines = [header, "-" * len(header)]
    for backend, category, rows in groups(records, backends):
        correct = sum(record.verdict == "correct" for record in rows)
        lines.append(
            f"{backend:<13} {category:<18} {100 * correct / len(rows):>6.1f} {len(rows):>4} "
            f"{sum(r.unparsable for r in rows):>10} {sum(r.leaked for r in rows):>6} "
            f"{sum(r.verdict == 'error' for r in rows):>6} "
            f"{sum(r.seconds for r in rows) / len(rows):>10.2f}"
        )
    return "\n".join(lines)


def _csv(value: str, allowed: Sequence[str], what: str) -> list[str]:
    items = [item.strip() for item in value.split(",") if item.strip()]
    unknown = [item for item in items if item not in allowed]
    if unknown or not items:
        raise argparse.ArgumentTypeError(f"{what}: choose from {', '.join(allowed)}")
    return items


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--per-category", type=int, default=50, metavar="N")
    parser.add_argument(
        "--categories",
        type=lambda value: _csv(value, CATEGORIES, "categories"),
        default=list(CATEGORIES),
        help=f"comma-separated, from {','.join(CATEGORIES)}",
    )
    parser.add_argument(
        "--backends",
        type=lambda value: _csv(value, BACKENDS, "backends"),
        default=list(BACKENDS),
        help=f"comma-separated, from {','.join(BACKENDS)}",
    )
    parser.add_argument("--sample-seed", type=int, default=0, help="seed of the question sample")
    parser.add_argument(
        "--start",
        type=int,
        default=1,
        metavar="K",
        help="begin at question K of the sample (to go on after an interrupted run)",
    )
    parser.add_argument("--chat-format", default=CHAT_FORMAT, help="the server's --chat_format")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT")
    parser.add_argument(
        "--tool-guidance",
        default=None,
        metavar="TEXT",
        help="replace qwenloop's tool guidance (agent.models.tool_guide) for this run; '' for none",
    )
    parser.add_argument(
        "--unguided",
        action="store_true",
        help="qwenloop without guided calls, tool guidance or the relevance gate",
    )
    args = parser.parse_args()
    if args.tool_guidance is not None:
        import agent.models.tool_guide as tool_guide

        tool_guide.TOOL_GUIDANCE = args.tool_guidance

    wheel = bfcl_wheel(cache_dir())
    with zipfile.ZipFile(wheel) as archive:
        picked = [
            sample(load_category(archive, category), args.per_category, args.sample_seed)
            for category in args.categories
        ]
    questions = interleave(picked)
    log(f"BFCL {wheel.name}: {len(questions)} questions ({', '.join(args.categories)})")

    from agent.models.weights import resolve_model_path

    model_path = resolve_model_path(None)
    backends: list[Backend] = []
    records: list[Record] = []
    try:
        for name in args.backends:
            backend: Backend = (
                QwenloopBackend(guided=not args.unguided)
                if name == "qwenloop"
                else ServerBackend(model_path, args.chat_format)
            )
            backends.append(backend)
            await backend.start()
        for index, question in enumerate(questions, 1):
            if index < args.start:
                continue
            verdicts = []
            for backend in backends:
                record = await ask_one(backend, question)
                records.append(record)
                verdict = record.verdict + (f" ({record.reason})" if record.reason else "")
                verdicts.append(f"{backend.name}: {verdict[:90]} {record.seconds:.1f}s")
            log(f"[{index}/{len(questions)}] {question.id}  " + " | ".join(verdicts))
    except (KeyboardInterrupt, asyncio.CancelledError):  # Ctrl-C cancels asyncio.run's task
        log("interrupted: reporting the questions done so far")
    finally:
        for backend in reversed(backends):
            with contextlib.suppress(Exception):
                await backend.stop()

    print(
        f"BFCL tool-call accuracy: bfcl-eval {BFCL_VERSION}, sample seed {args.sample_seed}, "
        f"{args.per_category} per category, first turn, temperature 0"
    )
    print(f"model {model_path}; llama-server chat format {args.chat_format}")
    print(table(records, args.backends))
    if args.json is not None:
        meta = {
            "bfcl_eval": BFCL_VERSION,
            "sample_seed": args.sample_seed,
            "per_category": args.per_category,
            "categories": args.categories,
            "backends": args.backends,
            "chat_format": args.chat_format,
            "model": str(model_path),
            "sampling": {**SAMPLING, **LLAMA_SAMPLING, "tool_choice": "auto"},
            "default_system": DEFAULT_SYSTEM,
            "guided": not args.unguided,
            "tool_guidance": args.tool_guidance,
        }
        payload = {"meta": meta, "records": [asdict(record) for record in records]}
        args.json.write_text(json.dumps(payload, ensure_ascii=False, indent=1), encoding="utf-8")
        log(f"wrote {len(records)} records to {args.json}")


if __name__ == "__main__":
    asyncio.run(main())
