"""The embedded local model: a GGUF Qwen run in-process by llama.cpp, speaking OpenAI's wire format.

The prompt is the model's own chat template (from the GGUF), rendered here with the tool schemas;
the tool calls are read back from the generated text by `agent.textcalls`.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import os
import threading
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
import jinja2.sandbox

from agent.errors import BadRequestError, ConfigError, ModelNotSupportedError
from agent.models.base import ModelRequest, ModelResponse, ResponseMeta
from agent.models.weights import resolve_model_path
from agent.textcalls import ParsedText, StreamScanner, parse_tool_calls

__all__ = ["DEFAULT_LOCAL_MODEL", "LocalChatModel"]

DEFAULT_LOCAL_MODEL = "qwen2.5-coder-1.5b-instruct"

# Qwen2.5's recommended sampling (its generation_config.json), used where a request names none.
_DEFAULT_SAMPLING: dict[str, float | int] = {
    "temperature": 0.7,
    "top_p": 0.8,
    "top_k": 20,
    "min_p": 0.0,
    "repeat_penalty": 1.05,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
}
_INSTALL_HINT = "pip install 'qwenloop[local]'"
_THINK_OPEN = "<think>"

# Qwen2.5's template (ChatML with hermes-style tools), for a GGUF that carries none.
_FALLBACK_TEMPLATE = """\
{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are a helpful assistant.' }}
    {%- endif %}
    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n\
You are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and \
arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \
\\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
    {%- else %}
        {{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) \
or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\\n<tool_call>\\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {{- message.content }}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""


@dataclass(slots=True)
class _Sampling:
    """Generation settings of one request, in llama.cpp's terms."""

    temperature: float
    top_p: float
    top_k: int
    min_p: float
    repeat_penalty: float
    presence_penalty: float
    frequency_penalty: float
    seed: int
    max_tokens: int | None
    stop: list[str]
    response_format: dict[str, Any] | None


@dataclass(slots=True)
class _Outcome:
    """How a generation ended, filled in by the worker thread."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    finish_reason: str = "stop"


@dataclass(slots=True)
class _Prepared:
    """A request turned into a prompt, ready to generate from."""

    prompt: str
    tool_names: list[str]
    sampling: _Sampling
    text_prefix: str  # "<think>" when the template opened a reasoning block itself
    completion_id: str = field(default_factory=lambda: f"chatcmpl-local-{uuid.uuid4().hex[:24]}")
    created: int = field(default_factory=lambda: int(time.time()))


class LocalChatModel:
    """A chat model run in-process from a GGUF file with llama.cpp (`llama-cpp-python`).

    The weights load on the first request, in a worker thread; all loading and generation run
    on that one thread (llama.cpp contexts are not thread-safe), so requests are served one at
    a time and never block the event loop. The prompt is rendered from the GGUF's own chat
    template with the tool schemas, and tool calls are parsed from the generated text.

    Attributes:
        model_name: The name reported in responses.
        provider: Always "local".
        load_seconds: How long loading the weights took, once loaded.
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        *,
        n_ctx: int = 8192,
        n_threads: int | None = None,
        seed: int = 0,
        verbose: bool = False,
        model_name: str = DEFAULT_LOCAL_MODEL,
    ) -> None:
        """Configure the model; nothing is loaded until the first request.

        Args:
            model_path: A .gguf file, a Hugging Face repo id (`org/name[:file.gguf]`), or None
                for the default Qwen2.5-Coder-1.5B-Instruct weights from the part packages.
            n_ctx: The context window in tokens (prompt plus reply).
            n_threads: CPU threads for llama.cpp; defaults to the CPUs this process may use.
            seed: The sampling seed used when a request gives none.
            verbose: Let llama.cpp print its own logs to stderr.
            model_name: The model name put in responses.
        """
        self.model_name = model_name
        self.provider = "local"
        self.load_seconds: float | None = None
        self._model_path = model_path
        self._n_ctx = n_ctx
        self._n_threads = n_threads or _available_cpus()
        self._seed = seed
        self._verbose = verbose
        self._llama: Any = None
        self._template: jinja2.Template | None = None
        self._special: dict[str, str] = {}
        self._is_eog: Callable[[int], bool] = lambda token: False
        self._resolved_path: Path | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._running: set[threading.Event] = set()

    @property
    def model_path(self) -> Path | None:
        """The GGUF file in use, once loaded."""
        return self._resolved_path

    async def load(self) -> None:
        """Load the weights now rather than on the first request."""
        await self._in_worker(self._load_sync)

    async def complete(self, request: ModelRequest) -> ModelResponse:
        """Generate a whole reply and return it as a `chat.completion` body."""
        prepared = await self._prepare(request)
        outcome = _Outcome()
        async with contextlib.aclosing(self._generate(prepared, outcome)) as generation:
            pieces = [piece async for piece in generation]
        parsed = parse_tool_calls(prepared.text_prefix + "".join(pieces), prepared.tool_names)
        message, finish = _assistant_message(parsed, outcome.finish_reason)
        body = {
            "id": prepared.completion_id,
            "object": "chat.completion",
            "created": prepared.created,
            "model": self.model_name,
            "choices": [
                {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}
            ],
            "usage": _usage(outcome),
        }
        return ModelResponse(body=body, meta=ResponseMeta({"x-request-id": prepared.completion_id}))

    async def stream(
        self, request: ModelRequest, meta: ResponseMeta
    ) -> AsyncIterator[dict[str, Any]]:
        """Generate a reply and yield `chat.completion.chunk` bodies as text arrives.

        Text that may be the start of a tool call is held back; calls are sent at the end as
        `tool_calls` deltas, then a chunk with the finish reason and a usage-only chunk with no
        choices. Assembled, the chunks equal what `complete` returns for the same output.
        """
        prepared = await self._prepare(request)
        meta.headers["x-request-id"] = prepared.completion_id
        outcome = _Outcome()
        scanner = StreamScanner(prepared.tool_names, prepared.text_prefix)
        shown_reasoning = ""
        shown_content = ""
        role_sent = False

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            nonlocal role_sent
            if not role_sent:
                delta = {"role": "assistant", **delta}
                role_sent = True
            return {
                "id": prepared.completion_id,
                "object": "chat.completion.chunk",
                "created": prepared.created,
                "model": self.model_name,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }

        # aclosing: a consumer that stops early stops the generation at once, not at GC time.
        async with contextlib.aclosing(self._generate(prepared, outcome)) as generation:
            async for piece in generation:
                view = scanner.feed(piece)
                delta: dict[str, Any] = {}
                if len(view.reasoning) > len(shown_reasoning) and view.reasoning.startswith(
                    shown_reasoning
                ):
                    delta["reasoning_content"] = view.reasoning[len(shown_reasoning) :]
                    shown_reasoning = view.reasoning
                if len(view.content) > len(shown_content) and view.content.startswith(
                    shown_content
                ):
                    delta["content"] = view.content[len(shown_content) :]
                    shown_content = view.content
                if delta:
                    yield chunk(delta)

        parsed = parse_tool_calls(scanner.text, prepared.tool_names)
        message, finish = _assistant_message(parsed, outcome.finish_reason)
        tail: dict[str, Any] = {}
        reasoning = message.get("reasoning_content") or ""
        if reasoning.startswith(shown_reasoning) and len(reasoning) > len(shown_reasoning):
            tail["reasoning_content"] = reasoning[len(shown_reasoning) :]
        content = message["content"] or ""
        if content.startswith(shown_content) and len(content) > len(shown_content):
            tail["content"] = content[len(shown_content) :]
        if tail:
            yield chunk(tail)
        for index, call in enumerate(message.get("tool_calls", [])):
            yield chunk({"tool_calls": [{"index": index, **call}]})
        yield chunk({}, finish)
        yield {
            "id": prepared.completion_id,
            "object": "chat.completion.chunk",
            "created": prepared.created,
            "model": self.model_name,
            "choices": [],
            "usage": _usage(outcome),
        }

    async def aclose(self) -> None:
        """Stop any generation in progress and free the weights."""
        executor = self._executor
        if executor is None:
            return
        for event in list(self._running):
            event.set()
        self._executor = None
        try:
            # Queued behind any generation still winding down, on the thread that owns llama.
            await asyncio.get_running_loop().run_in_executor(executor, self._unload_sync)
        finally:
            executor.shutdown(wait=False)

    # -- event-loop side -------------------------------------------------------------------

    def _worker(self) -> ThreadPoolExecutor:
        """Return the one thread that owns llama (made anew after `aclose`)."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qwenloop-llama")
        return self._executor

    async def _in_worker(self, func: Callable[[], None]) -> None:
        await asyncio.get_running_loop().run_in_executor(self._worker(), func)

    async def _prepare(self, request: ModelRequest) -> _Prepared:
        await self._in_worker(self._load_sync)
        options = {**request.extra_body, **request.params}
        if int(options.get("n") or 1) != 1:
            raise ModelNotSupportedError("The local model returns one choice per request (n=1).")
        tools = _offered_tools(request.tools, options.get("tool_choice"))
        prompt = self._render(request.messages, tools, options)
        names = [str(tool.get("function", {}).get("name", "")) for tool in tools or []]
        sampling = self._sampling(options, has_tools=bool(tools))
        prefix = _THINK_OPEN if prompt.rstrip().endswith(_THINK_OPEN) else ""
        return _Prepared(prompt=prompt, tool_names=names, sampling=sampling, text_prefix=prefix)

    def _render(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        options: dict[str, Any],
    ) -> str:
        assert self._template is not None  # set by _load_sync
        context: dict[str, Any] = dict(options.get("chat_template_kwargs") or {})
        if "enable_thinking" in options:
            context["enable_thinking"] = bool(options["enable_thinking"])
        context.update(
            messages=[_template_message(message) for message in messages],
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

    def _sampling(self, options: dict[str, Any], *, has_tools: bool) -> _Sampling:
        def number(key: str, *aliases: str) -> float:
            for name in (key, *aliases):
                if options.get(name) is not None:
                    return float(options[name])
            return float(_DEFAULT_SAMPLING[key])

        stop = options.get("stop") or []
        stops = [stop] if isinstance(stop, str) else [str(item) for item in stop]
        if has_tools:
            # A small model sometimes goes on to invent the tool's answer after its call.
            stops.append("<tool_response>")
        max_tokens = options.get("max_completion_tokens") or options.get("max_tokens")
        seed = options.get("seed")
        response_format = options.get("response_format")
        return _Sampling(
            temperature=number("temperature"),
            top_p=number("top_p"),
            top_k=int(number("top_k")),
            min_p=number("min_p"),
            repeat_penalty=number("repeat_penalty", "repetition_penalty"),
            presence_penalty=number("presence_penalty"),
            frequency_penalty=number("frequency_penalty"),
            seed=int(seed) if seed is not None else self._seed,
            max_tokens=int(max_tokens) if max_tokens else None,
            stop=[item for item in stops if item],
            response_format=response_format if isinstance(response_format, dict) else None,
        )

    async def _generate(self, prepared: _Prepared, outcome: _Outcome) -> AsyncGenerator[str, None]:
        """Run one generation on the worker thread, yielding text pieces as they come."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        cancel = threading.Event()

        def post(kind: str, value: Any) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, (kind, value))
            except RuntimeError:  # the event loop is gone: nobody is listening any more
                cancel.set()

        def work() -> None:
            try:
                self._generate_sync(prepared, outcome, lambda text: post("piece", text), cancel)
            except Exception as exc:  # re-raised on the event loop
                post("error", exc)
            else:
                post("done", None)

        self._running.add(cancel)
        try:
            future = loop.run_in_executor(self._worker(), work)
            while True:
                kind, value = await queue.get()
                if kind == "piece":
                    yield value
                elif kind == "done":
                    break
                else:
                    raise value
            await future
        finally:
            # Also reached when the consumer stops early: the worker stops at its next token.
            cancel.set()
            self._running.discard(cancel)

    # -- worker-thread side ----------------------------------------------------------------

    def _load_sync(self) -> None:
        if self._llama is not None:
            return
        try:
            import llama_cpp
        except ImportError as exc:
            raise ConfigError(
                f"The local model needs llama-cpp-python and its weights: {_INSTALL_HINT}"
            ) from exc
        path = resolve_model_path(self._model_path)
        started = time.perf_counter()
        try:
            llama = llama_cpp.Llama(
                model_path=str(path),
                n_ctx=self._n_ctx,
                n_threads=self._n_threads,
                n_threads_batch=self._n_threads,
                seed=self._seed,
                verbose=self._verbose,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise ConfigError(f"llama.cpp could not load {path}: {exc}") from exc
        source = llama.metadata.get("tokenizer.chat_template") or _FALLBACK_TEMPLATE
        try:
            template = _template_environment().from_string(source)
        except jinja2.TemplateError as exc:
            llama.close()
            raise ConfigError(f"The chat template inside {path} does not compile: {exc}") from exc
        self._special = {
            "bos_token": _token_text(llama, llama.token_bos()),
            "eos_token": _token_text(llama, llama.token_eos()),
        }
        self._is_eog = _eog_checker(llama_cpp, llama)
        self._template = template
        self._resolved_path = path
        self._llama = llama
        self.load_seconds = time.perf_counter() - started

    def _unload_sync(self) -> None:
        llama, self._llama = self._llama, None
        self._template = None
        if llama is not None:
            llama.close()

    def _generate_sync(
        self,
        prepared: _Prepared,
        outcome: _Outcome,
        emit: Callable[[str], None],
        cancel: threading.Event,
    ) -> None:
        self._load_sync()
        llama = self._llama
        sampling = prepared.sampling
        tokens: list[int] = llama.tokenize(
            prepared.prompt.encode("utf-8"), add_bos=False, special=True
        )
        room = self._n_ctx - len(tokens)
        if room <= 0:
            raise BadRequestError(
                f"The conversation needs {len(tokens)} tokens, more than the local model's "
                f"context window of {self._n_ctx}; shorten it or raise n_ctx.",
                status_code=400,
                code="context_length_exceeded",
            )
        limit = min(sampling.max_tokens or room, room)
        outcome.prompt_tokens = len(tokens)
        outcome.cached_tokens = _cached_prefix(llama, tokens)
        grammar = _grammar(sampling.response_format) if not prepared.tool_names else None
        llama.set_seed(sampling.seed)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        text = ""
        shown = 0
        longest_stop = max((len(stop) for stop in sampling.stop), default=0)
        outcome.finish_reason = "length"
        generated = 0
        stopped_by_string = False
        for token in llama.generate(
            tokens,
            top_k=sampling.top_k,
            top_p=sampling.top_p,
            min_p=sampling.min_p,
            temp=sampling.temperature,
            repeat_penalty=sampling.repeat_penalty,
            presence_penalty=sampling.presence_penalty,
            frequency_penalty=sampling.frequency_penalty,
            grammar=grammar,
        ):
            if cancel.is_set():
                outcome.finish_reason = "cancelled"
                break
            if self._is_eog(int(token)):
                outcome.finish_reason = "stop"
                break
            generated += 1
            text += decoder.decode(llama.detokenize([token]))
            cut = _find_stop(text, sampling.stop, shown, longest_stop)
            if cut is not None:
                text = text[:cut]
                outcome.finish_reason = "stop"
                stopped_by_string = True
                break
            # Hold back a tail that may be the start of a stop string.
            visible = len(text) - _stop_prefix_len(text, sampling.stop)
            if visible > shown:
                emit(text[shown:visible])
                shown = visible
            if generated >= limit:
                break
        if not stopped_by_string:
            text += decoder.decode(b"", final=True)  # a character cut short becomes U+FFFD
        if len(text) > shown:
            emit(text[shown:])
        outcome.completion_tokens = generated


def _available_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _template_environment() -> jinja2.sandbox.ImmutableSandboxedEnvironment:
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


def _offered_tools(
    tools: list[dict[str, Any]] | None, tool_choice: Any
) -> list[dict[str, Any]] | None:
    """Apply `tool_choice` by narrowing the tools shown to the model (no grammar forcing)."""
    if not tools or tool_choice == "none":
        return None
    if isinstance(tool_choice, dict):
        wanted = (tool_choice.get("function") or {}).get("name")
        chosen = [tool for tool in tools if (tool.get("function") or {}).get("name") == wanted]
        if not chosen:
            raise BadRequestError(
                f"tool_choice names {wanted!r}, which is not among the tools offered.",
                status_code=400,
            )
        return chosen
    return tools


def _assistant_message(parsed: ParsedText, finish_reason: str) -> tuple[dict[str, Any], str]:
    """Build the assistant message of a parsed reply, and its finish reason."""
    message: dict[str, Any] = {"role": "assistant", "content": parsed.content}
    if finish_reason == "cancelled":
        finish_reason = "stop"
    if parsed.calls:
        message["content"] = parsed.content or None
        message["tool_calls"] = [
            {
                "id": f"call_{uuid.uuid4().hex[:8]}",
                "type": "function",
                "function": {
                    "name": call.name,
                    "arguments": json.dumps(call.arguments, ensure_ascii=False),
                },
            }
            for call in parsed.calls
        ]
        finish_reason = "tool_calls"
    if parsed.reasoning:
        message["reasoning_content"] = parsed.reasoning
    return message, finish_reason


def _usage(outcome: _Outcome) -> dict[str, Any]:
    return {
        "prompt_tokens": outcome.prompt_tokens,
        "completion_tokens": outcome.completion_tokens,
        "total_tokens": outcome.prompt_tokens + outcome.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": outcome.cached_tokens},
    }


def _token_text(llama: Any, token: int) -> str:
    if token < 0:
        return ""
    return bytes(llama.detokenize([token], special=True)).decode("utf-8", errors="replace")


def _eog_checker(llama_cpp: Any, llama: Any) -> Callable[[int], bool]:
    """Return a test for end-of-generation tokens (`<|im_end|>`, `<|endoftext|>`, ...)."""
    is_eog = getattr(llama_cpp, "llama_vocab_is_eog", None)
    get_vocab = getattr(llama_cpp, "llama_model_get_vocab", None)
    if is_eog is not None and get_vocab is not None:
        vocab = get_vocab(llama.model)
        return lambda token: bool(is_eog(vocab, token))
    ends = {llama.token_eos()}
    for marker in (b"<|im_end|>", b"<|endoftext|>"):
        ids = llama.tokenize(marker, add_bos=False, special=True)
        if len(ids) == 1:
            ends.add(ids[0])
    return lambda token: token in ends


def _cached_prefix(llama: Any, tokens: list[int]) -> int:
    """Count the prompt tokens llama.cpp can reuse from the previous request's KV cache."""
    try:
        previous = llama.input_ids[: llama.n_tokens].tolist()
    except (AttributeError, TypeError):
        return 0
    shared = 0
    for old, new in zip(previous, tokens, strict=False):
        if old != new:
            break
        shared += 1
    return min(shared, max(len(tokens) - 1, 0))


def _grammar(response_format: dict[str, Any] | None) -> Any:
    """Return a llama.cpp grammar enforcing a JSON `response_format`, or None."""
    if not response_format:
        return None
    kind = response_format.get("type")
    if kind not in ("json_object", "json_schema"):
        return None
    from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

    if kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        if schema:
            return LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
    return LlamaGrammar.from_string(JSON_GBNF, verbose=False)


def _find_stop(text: str, stops: list[str], shown: int, longest: int) -> int | None:
    """Return where the first stop string starts in `text`, searching only new text."""
    if not stops:
        return None
    start = max(0, shown - longest)
    found = [index for stop in stops if (index := text.find(stop, start)) >= 0]
    return min(found) if found else None


def _stop_prefix_len(text: str, stops: list[str]) -> int:
    """Return the length of the longest tail of `text` that begins some stop string."""
    best = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:size]):
                best = size
                break
    return best
