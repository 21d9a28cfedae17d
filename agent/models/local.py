"""The embedded local model: a GGUF Qwen run in-process by llama.cpp, speaking OpenAI's wire format.

The prompt is the model's own chat template (from the GGUF), rendered here with the tool schemas;
the tool calls are read back from the generated text by `agent.textcalls`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from agent.errors import BadRequestError, ConfigError, ModelError, ModelNotSupportedError
from agent.models.base import ModelRequest, ModelResponse, ResponseMeta
from agent.models.chat_template import ChatTemplate
from agent.models.cpu_guard import CpuGuard
from agent.models.llama_runner import (
    CallGuide,
    LlamaRunner,
    Outcome,
    PromptCache,
    Sampling,
    require_llama_cpp,
)
from agent.models.tool_guide import (
    CALL_ALIASES,
    CALL_CLOSE,
    CALL_OPEN,
    CONTINUE_ODDS,
    DECLINE_ODDS,
    MAX_CALLS,
    NAME_OPENING,
    NO_FIT_FUNCTION,
    NO_FIT_NAME,
    SURE_CALL_ODDS,
    add_tool_guidance,
    call_grammar,
    with_no_fit_option,
    writes_hermes_calls,
)
from agent.models.weights import default_cache_dir, resolve_model_path
from agent.textcalls import ParsedText, StreamScanner, parse_tool_calls

__all__ = ["DEFAULT_LOCAL_MODEL", "LocalChatModel"]

DEFAULT_LOCAL_MODEL = "qwen2.5-coder-1.5b-instruct"

logger = logging.getLogger(__name__)

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
_THINK_OPEN = "<think>"

# One guard per process: its verdict is cached on disk, and in memory once known.
_DEFAULT_GUARD: CpuGuard | None = None


@dataclass(slots=True)
class _Prepared:
    """A request turned into a prompt, ready to generate from."""

    prompt: str
    tool_names: list[str]
    tool_schemas: dict[str, Any]  # name -> JSON schema of its arguments, to type XML calls
    sampling: Sampling
    text_prefix: str  # "<think>" when the template opened a reasoning block itself
    guide: CallGuide | None  # the grammar a tool call is held to, once the model opens one
    completion_id: str = field(default_factory=lambda: f"chatcmpl-local-{uuid.uuid4().hex[:24]}")
    created: int = field(default_factory=lambda: int(time.time()))


class LocalChatModel:
    """A chat model run in-process from a GGUF file with llama.cpp (`llama-cpp-python`).

    The weights load on the first request, in a worker thread; all loading and generation run
    on that one thread (llama.cpp contexts are not thread-safe), so requests are served one at
    a time and never block the event loop. The prompt is rendered from the GGUF's own chat
    template with the tool schemas, and tool calls are parsed from the generated text.

    Before the first load in a process, a `CpuGuard` checks in a child process that llama.cpp's
    build runs on this CPU (once per machine, build and model; the verdict is cached), so an
    illegal instruction becomes `UnsupportedCPUError` or a slower safe mode, not a dead process.

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
        extra_buffer_types: bool | None = None,
        cpu_guard: CpuGuard | None = None,
        prompt_cache: bool | str | os.PathLike[str] = True,
        guided_calls: bool = True,
        tool_gate: float | None = DECLINE_ODDS,
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
            extra_buffer_types: Whether llama.cpp may use its extra buffer types (AMX and
                weight-repacking kernels); None lets the CPU probe decide. Giving True or False
                skips the probe.
            cpu_guard: The probe to consult (default: one per process, cached on disk).
            prompt_cache: Keep snapshots of the KV cache on disk, so a new process does not
                read the same system prompt and tools again: True for `kv/` in the model cache
                (`$QWENLOOP_CACHE`, else `~/.cache/qwenloop`), a directory, or False.
            guided_calls: Guide tool calls (`agent.models.tool_guide`): the tool section of the
                prompt says when to call and when to answer directly, and once the model opens
                a `<tool_call>` block the rest of the reply is held to well-formed calls to the
                offered tools, their arguments matching each tool's schema (a llama.cpp
                grammar; prose stays free). Only for chat templates that write JSON calls in
                `<tool_call>` blocks (Qwen2.5, Qwen3).
            tool_gate: With guided calls, the tool list ends with a "no function fits"
                option (`tool_guide.NO_FIT_FUNCTION`, never called), and before a user's
                message is answered with tools on offer (tool_choice "auto") the model's odds
                of choosing it where a call names its function are read (a few tokens after
                the prompt, nothing generated). At or above this probability the message is
                answered without tools: a small model otherwise calls a tool for questions no
                tool fits. None: no option, no gate.
        """
        self.model_name = model_name
        self.provider = "local"
        self.load_seconds: float | None = None
        self._model_path = model_path
        self._runner = LlamaRunner(
            n_ctx=n_ctx, n_threads=n_threads or _available_cpus(), seed=seed, verbose=verbose
        )
        self._seed = seed
        self._n_ctx = n_ctx
        self._prompt_cache = prompt_cache
        self._extra_buffer_types = extra_buffer_types
        self._cpu_guard = cpu_guard
        self._template: ChatTemplate | None = None
        self._resolved_path: Path | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._running: set[threading.Event] = set()
        self._guided_calls = guided_calls
        self._tool_gate = tool_gate
        self._guides: dict[str, CallGuide] = {}

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
        outcome = Outcome()
        async with contextlib.aclosing(self._generate(prepared, outcome)) as generation:
            pieces = [piece async for piece in generation]
        parsed = parse_tool_calls(
            prepared.text_prefix + "".join(pieces),
            prepared.tool_names,
            schemas=prepared.tool_schemas,
        )
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
        outcome = Outcome()
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

        parsed = parse_tool_calls(scanner.text, prepared.tool_names, schemas=prepared.tool_schemas)
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
        assert self._template is not None  # set by _load_sync
        guided = bool(tools) and self._guided_calls and writes_hermes_calls(self._template.source)
        gated = (
            guided and self._tool_gate is not None and options.get("tool_choice") in (None, "auto")
        )
        listed = with_no_fit_option(tools or []) if gated else tools
        prompt = self._template.render(request.messages, listed, options)
        if guided:
            prompt = add_tool_guidance(prompt)
        if gated and await self._no_tool_fits(request.messages, prompt, listed or []):
            tools, guided = None, False
            prompt = self._template.render(request.messages, None, options)
        functions = [tool.get("function", {}) for tool in tools or []]
        names = [str(f.get("name", "")) for f in functions]
        schemas = {str(f.get("name", "")): f.get("parameters") or {} for f in functions}
        sampling = self._sampling(options, has_tools=bool(tools))
        prefix = _THINK_OPEN if prompt.rstrip().endswith(_THINK_OPEN) else ""
        return _Prepared(
            prompt=prompt,
            tool_names=names,
            tool_schemas=schemas,
            sampling=sampling,
            text_prefix=prefix,
            guide=self._guide(functions, thinking=bool(prefix)),
        )

    async def _no_tool_fits(
        self, messages: list[dict[str, Any]], prompt: str, listed: list[Any]
    ) -> bool:
        """Tell whether the model, opening a call, would choose "no function fits" (the gate).

        `prompt` lists the offered tools and `NO_FIT_FUNCTION` (`listed`): it is the one the
        reply will be generated from, so the gate costs the few tokens of a call's opening.
        """
        if not messages or messages[-1].get("role") != "user":
            return False  # only before answering the user, not after tool results
        if not listed or listed[-1] is not NO_FIT_FUNCTION:
            return False  # one of the user's own tools has the option's name
        if prompt.rstrip().endswith(_THINK_OPEN):
            return False  # the model reasons first; its call, if any, comes after
        names = [str(tool.get("function", {}).get("name", "")) for tool in listed[:-1]]
        runner, bar = self._runner, self._tool_gate

        def decline() -> bool:
            odds = runner.choice_odds(
                prompt + NAME_OPENING, [f'{NO_FIT_NAME}"'], [f'{name}"' for name in names]
            )
            logger.debug("no function fits: P=%s (threshold %s)", odds, bar)
            if odds is None or bar is None or odds < bar:
                return False
            # Read second, from the prompt already evaluated (its last token again): the
            # option's odds are read from the prompt evaluated in one go, as calibrated.
            calling = runner.call_odds(prompt, (CALL_OPEN, *CALL_ALIASES))
            logger.debug("reply opens with a call: P=%s (sure at %s)", calling, SURE_CALL_ODDS)
            return calling is not None and calling < SURE_CALL_ODDS

        try:
            return await asyncio.get_running_loop().run_in_executor(self._worker(), decline)
        except RuntimeError as exc:
            raise _llama_failed(exc) from exc

    def _guide(self, functions: list[dict[str, Any]], *, thinking: bool) -> CallGuide | None:
        """Return the grammar that holds a started call to these tools, if calls are guided."""
        assert self._template is not None
        if not functions or not self._guided_calls:
            return None
        if not writes_hermes_calls(self._template.source):
            return None
        key = json.dumps([functions, thinking], sort_keys=True, default=str)
        guide = self._guides.get(key)
        if guide is None:
            if len(self._guides) >= 32:
                self._guides.clear()
            guide = CallGuide(
                call_grammar(functions),
                CALL_OPEN,
                CALL_CLOSE,
                thinking=thinking,
                aliases=CALL_ALIASES,
                max_calls=MAX_CALLS,
                continue_odds=CONTINUE_ODDS,
            )
            self._guides[key] = guide
        return guide

    def _sampling(self, options: dict[str, Any], *, has_tools: bool) -> Sampling:
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
        return Sampling(
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

    async def _generate(self, prepared: _Prepared, outcome: Outcome) -> AsyncGenerator[str, None]:
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
                self._runner.generate(
                    prepared.prompt,
                    prepared.sampling,
                    outcome,
                    lambda text: post("piece", text),
                    cancel,
                    constrain_json=not prepared.tool_names,
                    guide=prepared.guide,
                )
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
                elif isinstance(value, RuntimeError):
                    raise _llama_failed(value) from value
                else:
                    raise value
            await future
        finally:
            # Also reached when the consumer stops early: the worker stops at its next token.
            cancel.set()
            self._running.discard(cancel)

    # -- worker-thread side ----------------------------------------------------------------

    def _load_sync(self) -> None:
        if self._runner.loaded:
            return
        path = resolve_model_path(self._model_path)
        require_llama_cpp()  # fail fast, before probing, when the library is missing
        extra_buffer_types = self._extra_buffer_types
        if extra_buffer_types is None:
            extra_buffer_types = self._guard().check(path).extra_buffer_types
        self._runner.load(path, extra_buffer_types=extra_buffer_types)
        if self._prompt_cache is not False:
            where = default_cache_dir() if self._prompt_cache is True else Path(self._prompt_cache)
            self._runner.prompt_cache = PromptCache.for_model(where, path, self._n_ctx)
        try:
            self._template = ChatTemplate(self._runner.chat_template, self._runner.special_tokens)
        except jinja2.TemplateError as exc:
            self._runner.unload()
            raise ConfigError(f"The chat template inside {path} does not compile: {exc}") from exc
        self._resolved_path = path
        self.load_seconds = self._runner.load_seconds

    def _unload_sync(self) -> None:
        self._template = None
        self._runner.unload()

    def _guard(self) -> CpuGuard:
        global _DEFAULT_GUARD
        if self._cpu_guard is not None:
            return self._cpu_guard
        if _DEFAULT_GUARD is None:
            _DEFAULT_GUARD = CpuGuard()
        return _DEFAULT_GUARD


def _llama_failed(exc: RuntimeError) -> ModelError:
    """The typed error for llama.cpp failing mid-request (a decode or tokenize error)."""
    return ModelError(f"The local model failed: {exc}")


def _available_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


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
        # A small model sometimes writes the same call again in one reply: it is sent once.
        calls = {
            (call.name, json.dumps(call.arguments, ensure_ascii=False)): None
            for call in parsed.calls
        }
        message["tool_calls"] = [
            {
                "id": f"call_{uuid.uuid4().hex[:8]}",
                "type": "function",
                "function": {"name": name, "arguments": arguments},
            }
            for name, arguments in calls
        ]
        finish_reason = "tool_calls"
    if parsed.reasoning:
        message["reasoning_content"] = parsed.reasoning
    return message, finish_reason


def _usage(outcome: Outcome) -> dict[str, Any]:
    return {
        "prompt_tokens": outcome.prompt_tokens,
        "completion_tokens": outcome.completion_tokens,
        "total_tokens": outcome.prompt_tokens + outcome.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": outcome.cached_tokens},
    }
