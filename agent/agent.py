"""Agent: a model, tools, instructions and limits; `run`, `run_sync` and `stream` one semantics."""

from __future__ import annotations

import asyncio
import json
import reprlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from agent.approval import resumption
from agent.context import make_fitter, text_tokens
from agent.errors import ConfigError, ModelNotSupportedError, UserError
from agent.events import AgentEvent, RunEndEvent
from agent.hooks import HookRunner, RunHooks
from agent.loop import RunConfig, run_events
from agent.messages import RunResult, RunState, Usage
from agent.models.base import ChatModel, RequestGate
from agent.models.profile import ModelProfile, Price, resolve_profile
from agent.providers import ResolvedEndpoint, resolve_endpoint
from agent.request import RunPlan, plan_run
from agent.sessions import Session
from agent.settings import ModelSettings, settings_from
from agent.tool import Tool, ToolRegistry
from agent.toolsets import Toolset, registry_for_run

__all__ = ["Agent"]

Input = str | Sequence[dict[str, Any]]
SearchMode = Literal["server", "local", "auto", "off"]
TextToolCalls = Literal["auto", "always", "never"]


class Agent:
    """A tool-calling agent over any OpenAI-compatible endpoint or the embedded local model.

    One agent serves many concurrent runs; it holds no per-run state.

    Args:
        model: The model name; defaults to `QWENLOOP_MODEL`, then the provider's default.
        provider: A preset: "dashscope", "dashscope-intl", "wcode", "openai", "ollama", "vllm",
            "local" (the embedded model). Defaults to `QWENLOOP_PROVIDER`, else "custom" when
            a base URL is given, else "local".
        base_url: Any OpenAI-compatible base URL (overrides the preset's).
        api_key: The key; defaults to `QWENLOOP_API_KEY`, then the preset's variable
            (`DASHSCOPE_API_KEY`, ...).
        tools: Tools (`@tool` functions, plain typed functions, or built-in names like
            "calculator"), and toolsets whose tools are listed at each run (an MCP server).
        instructions: The system prompt: a string, or a `Template` rendered at every turn.
        settings: Request parameters (a `ModelSettings` or a dict of its fields).
        max_turns: Model turns a run may take before `MaxTurnsExceeded`.
        search: Web search: "server" (Qwen's `enable_search`), "local" (the `web_search`
            tool), "auto" (server where the model supports it, else local) or "off".
        search_fetch: With local search, also offer `fetch_url` to read a result's page.
        tool_concurrency: At most this many tool calls of one turn run at once.
        text_tool_calls: Read tool calls a model writes as text: "auto" (a reply that is only
            calls, or `<tool_call>` blocks naming a registered tool, also after prose and in
            Qwen3-Coder's XML form), "always" (any call form anywhere) or "never".
        loop_guard: Do not re-run a call that repeats an earlier one (same tool and
            arguments); ask the model once more without tools instead.
        chat_model: A ready backend (overrides provider, base URL and key).
        retries: Retries for 429, 5xx and connection failures.
        timeout: Seconds one model request may take.
        model_path: A GGUF file for the local provider (default: the bundled Qwen model).
        output_type: A pydantic model the final answer must validate as; the result's
            `parsed` holds the instance.
        output_retries: Invalid structured replies the model may correct.
        send_reasoning: Send `reasoning_content` back on tool-call turns; None (the default)
            follows the model profile (only providers that require it get it).
        max_total_tokens: A token budget per run (`UsageLimitExceeded` past it).
        max_cost: A cost budget per run in CNY, where the model's price is known.
        accept_truncated: Accept a final answer cut by `max_tokens` (the result's `truncated`
            is then True) instead of raising `TruncatedReplyError`. A tool call cut by the
            limit never runs either way.
        max_connections: HTTP connections kept for reuse: at least the number of runs you keep
            in flight at once.
        transport: The HTTP client under the openai SDK: "aiohttp" (faster; `qwenloop[fast]`),
            "httpx" (the SDK's default) or "auto" (aiohttp where installed).
        max_argument_chars: Tool-call arguments longer than this are not parsed; they go back
            to the model as an error.
        profile: Overrides of the model profile's fields (see `ModelProfile`), e.g.
            `{"preserve_thinking": True}` for a model the catalogue does not know yet.
        price: The model's price, for a model the catalogue does not price (needed by
            `max_cost`), or to replace the catalogue's.
        headers: Extra HTTP headers for every request (e.g. `X-DashScope-DataInspection`).
        cache_instructions: Mark the system prompt cacheable (`cache_control`), for providers
            with an explicit context cache (DashScope).
        hooks: Lifecycle hooks (`RunHooks` instances), called in order at each step of a run.
        instrument: Emit OpenTelemetry spans (GenAI conventions) to the globally configured
            tracer provider; needs `qwenloop[otel]`.
        trace_content: With `instrument`, also record message contents in spans.
        context_tokens: The context window to fit each request into, for a model the
            catalogue does not know (or to use less of it); None: the model's own.
        history_processor: Called with the messages and the token budget when a request
            does not fit (sync or async); returns the messages to send, e.g. with old turns
            summarised. Without one, the oldest turns are left out.
        rate_limiter: Paces every request (retries included) with other agents sharing the
            account's limits (an `agent.ratelimit.RateLimiter`; batches make one).
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        provider: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        tools: Iterable[Tool | Callable[..., Any] | str | Toolset] = (),
        instructions: Any = None,
        settings: ModelSettings | dict[str, Any] | None = None,
        max_turns: int = 10,
        search: SearchMode = "off",
        search_fetch: bool = False,
        tool_concurrency: int | None = None,
        text_tool_calls: TextToolCalls = "auto",
        loop_guard: bool = True,
        chat_model: ChatModel | None = None,
        retries: int = 3,
        timeout: float = 120.0,
        model_path: str | None = None,
        output_type: type[BaseModel] | None = None,
        output_retries: int = 2,
        send_reasoning: bool | None = None,
        max_total_tokens: int | None = None,
        max_cost: float | None = None,
        accept_truncated: bool = False,
        max_connections: int = 256,
        transport: str = "auto",
        max_argument_chars: int = 4_000_000,
        profile: dict[str, Any] | None = None,
        price: Price | None = None,
        headers: dict[str, str] | None = None,
        cache_instructions: bool = False,
        hooks: Sequence[RunHooks] = (),
        instrument: bool = False,
        trace_content: bool = False,
        context_tokens: int | None = None,
        history_processor: Callable[..., Any] | None = None,
        rate_limiter: RequestGate | None = None,
    ) -> None:
        if max_turns < 1:
            raise UserError(f"max_turns must be at least 1, got {max_turns}")
        if context_tokens is not None and context_tokens < 1:
            raise UserError(f"context_tokens must be at least 1, got {context_tokens}")
        if tool_concurrency is not None and tool_concurrency < 1:
            raise UserError(f"tool_concurrency must be at least 1, got {tool_concurrency}")
        if text_tool_calls not in ("auto", "always", "never"):
            raise UserError(
                f"text_tool_calls must be 'auto', 'always' or 'never', got {text_tool_calls!r}"
            )
        self.settings = settings_from(settings)
        _check_translation(self.settings)
        self.output_type = output_type
        self.output_retries = output_retries
        self.send_reasoning = send_reasoning
        self.max_total_tokens = max_total_tokens
        self.max_cost = max_cost
        self.accept_truncated = accept_truncated
        self.max_argument_chars = max_argument_chars
        self.max_turns = max_turns
        self.tool_concurrency = tool_concurrency
        self.text_tool_calls = text_tool_calls
        self.loop_guard = loop_guard
        self.instructions = instructions
        self.cache_instructions = cache_instructions
        self.context_tokens = context_tokens
        self.history_processor = history_processor
        self.hooks = HookRunner(_hooks(hooks, instrument, trace_content))
        self._resumed: set[str] = set()
        self._plans: dict[tuple[Any, ...], tuple[ModelSettings, ModelProfile, RunPlan, int]] = {}
        self.endpoint: ResolvedEndpoint | None = None
        if chat_model is not None:
            self.model: ChatModel = chat_model
        else:
            self.endpoint = resolve_endpoint(
                provider, base_url=base_url, api_key=api_key, model=model
            )
            self.model = _make_model(
                self.endpoint,
                retries,
                timeout,
                model_path,
                max_connections,
                transport,
                headers,
                rate_limiter,
            )
        overrides = dict(profile or {})
        if price is not None:
            overrides["price"] = price
        self.profile: ModelProfile = resolve_profile(
            self.model.provider, self.model.model_name, overrides
        )
        if max_cost is not None and not self.profile.priced:
            raise ConfigError(
                f"max_cost needs the price of {self.model.model_name!r}, which qwenloop does "
                "not know: pass price=Price(input=..., output=...) in CNY per 1M tokens "
                "(command line: --price INPUT:OUTPUT)"
            )
        if self.profile.default_settings:
            self.settings = settings_from(dict(self.profile.default_settings)).merge(self.settings)
        if instructions is None:
            self.instructions = self.profile.default_instructions
        self._system_prompt(ToolRegistry())  # a wrong instructions type fails here, not later
        items = list(tools)
        self.toolsets: list[Toolset] = [t for t in items if isinstance(t, Toolset)]
        self.tools = ToolRegistry(_resolve_tools(t for t in items if not isinstance(t, Toolset)))
        self.search_mode = self._apply_search(search, search_fetch)

    @property
    def rate_limiter(self) -> RequestGate | None:
        """The gate pacing this agent's requests, if any (remote endpoints only)."""
        gate: RequestGate | None = getattr(self.model, "gate", None)
        return gate

    @rate_limiter.setter
    def rate_limiter(self, gate: RequestGate | None) -> None:
        if not hasattr(self.model, "gate"):
            raise UserError(f"the {self.model.provider} backend takes no rate limiter")
        self.model.gate = gate

    @property
    def provider(self) -> str:
        """The provider preset in force ("custom" for a bare base URL)."""
        return self.model.provider

    def _apply_search(self, search: str, fetch: bool) -> str:
        if search not in ("server", "local", "auto", "off"):
            raise UserError(f"search must be 'server', 'local', 'auto' or 'off', got {search!r}")
        if search == "off":
            return "off"
        from agent.search import choose_search_mode

        mode = choose_search_mode(search, self.profile)
        if mode == "server":
            self.settings = self.settings.merge(ModelSettings(enable_search=True))
        elif mode == "local":
            from agent.tool_plugins import load_tool

            for name in ("web_search", "fetch_url") if fetch else ("web_search",):
                if name not in self.tools:
                    self.tools.add(load_tool(name))
        return mode

    def _system_prompt(
        self, registry: ToolRegistry, variables: Mapping[str, Any] | None = None
    ) -> Callable[[], str | None] | None:
        instructions = self.instructions
        if variables is not None and not isinstance(variables, Mapping):
            raise UserError(f"variables must be a mapping of names to values, got {variables!r}")
        if variables and getattr(instructions, "render_system", None) is None:
            raise UserError("variables= needs a Template as the agent's instructions")
        if instructions is None:
            return None
        if isinstance(instructions, str):
            text: str = instructions
            return lambda: text
        render = getattr(instructions, "render_system", None)
        if render is None:
            raise UserError(
                "instructions must be a string or an agent.Template, "
                f"got {type(instructions).__name__}"
            )
        agent = self

        def system() -> str | None:
            result: str = render(
                tools=list(registry),
                search_mode=agent.search_mode,
                model=agent.model.model_name,
                variables=variables,
            )
            return result

        return system

    def _config(
        self,
        settings: ModelSettings | dict[str, Any] | None,
        max_turns: int | None,
        output_type: type[BaseModel] | None,
        stream: bool,
        registry: ToolRegistry | None = None,
        variables: Mapping[str, Any] | None = None,
    ) -> RunConfig:
        registry = self.tools if registry is None else registry
        merged = self.settings.merge(settings_from(settings)) if settings else self.settings
        if settings:
            _check_translation(merged)
        plan, reserve = self._plan(merged, registry, stream)
        profile = self.profile

        def cost(usage: Usage) -> float | None:
            return profile.cost(usage, thinking=plan.thinking)

        return RunConfig(
            model=self.model,
            registry=registry,
            settings=plan.settings,
            max_turns=max_turns or self.max_turns,
            system_prompt=self._system_prompt(registry, variables),
            search_mode=self.search_mode,
            tool_concurrency=self.tool_concurrency,
            text_tool_calls=self.text_tool_calls,
            loop_guard=self.loop_guard,
            cost=cost if profile.priced else None,
            output_type=output_type or self.output_type,
            output_retries=self.output_retries,
            json_schema_format=profile.json_schema,
            force_tool_choice=plan.force_tool_choice,
            emulate_required=plan.emulate_required,
            required_tool=plan.required_tool,
            thinking=plan.thinking,
            stream=stream or plan.stream,
            cache_instructions=self.cache_instructions,
            hooks=self.hooks,
            provider=self.model.provider,
            fit_context=make_fitter(
                profile,
                plan.settings,
                self.context_tokens,
                self.history_processor,
                reserve_tokens=reserve,
            ),
            max_total_tokens=self.max_total_tokens,
            max_cost=self.max_cost,
            send_reasoning=(
                profile.send_reasoning if self.send_reasoning is None else self.send_reasoning
            ),
            accept_truncated=self.accept_truncated,
            max_argument_chars=self.max_argument_chars,
        )

    def _plan(
        self, settings: ModelSettings, registry: ToolRegistry, stream: bool
    ) -> tuple[RunPlan, int]:
        """The run's plan and the tokens its tool schemas take, kept for repeated runs.

        Settled afresh whenever what decides it changes: the settings object, the tools or the
        profile (all three may be replaced on a live agent).
        """
        names = tuple(registry.names)
        key = (id(settings), id(self.profile), names, stream)
        cached = self._plans.get(key)
        if cached is not None and cached[0] is settings and cached[1] is self.profile:
            return cached[2], cached[3]
        plan = plan_run(self.profile, settings, list(names), stream=stream)
        reserve = text_tokens(json.dumps(registry.schemas(), ensure_ascii=False))
        if len(self._plans) >= 64:
            self._plans.clear()
        self._plans[key] = (settings, self.profile, plan, reserve)
        return plan, reserve

    async def _events(
        self, input: Input, stream: bool, options: dict[str, Any]
    ) -> AsyncIterator[AgentEvent]:
        registry = await registry_for_run(self.tools, self.toolsets)
        config = self._config(
            options["settings"],
            options["max_turns"],
            options["output_type"],
            stream,
            registry,
            options["variables"],
        )
        # Prompt templates render before any request, so their errors come first.
        if config.system_prompt is not None:
            config.system_prompt()
        session: Session | None = options["session"]
        if session is None:
            messages = self._messages(input, options["history"], options)
            async for event in run_events(config, messages):
                yield event
            return
        if options["history"] is not None:
            raise UserError("pass either history= or session=, not both")
        async with session.lock():
            history = await session.load()
            messages = self._messages(input, history, options)
            config.checkpoint = session.append
            saved = len(history) - (1 if history and history[0].get("role") == "system" else 0)
            async for event in run_events(config, messages, saved=saved):
                yield event

    def _messages(
        self, input: Input, history: Sequence[dict[str, Any]] | None, options: dict[str, Any]
    ) -> list[dict[str, Any]]:
        messages = _conversation(input, history)
        if options["images"] or options["video"] is not None:
            self._attach_media(messages, options["images"], options["video"])
        return messages

    def _attach_media(self, messages: list[dict[str, Any]], images: Any, video: Any) -> None:
        from agent.content import user_message

        profile = self.profile
        if images and profile.images is False:
            raise ModelNotSupportedError(
                f"model {self.model.model_name!r} does not take images; use a qwen-vl model"
            )
        if video is not None and profile.video is False:
            raise ModelNotSupportedError(
                f"model {self.model.model_name!r} does not take video; use a qwen-vl model"
            )
        last = messages[-1]
        if last.get("role") != "user" or not isinstance(last.get("content"), str):
            raise UserError("images and video attach to a text prompt: pass the prompt as a string")
        messages[-1] = user_message(last["content"], images=images, video=video)

    async def run(
        self,
        input: Input,
        *,
        history: Sequence[dict[str, Any]] | None = None,
        settings: ModelSettings | dict[str, Any] | None = None,
        max_turns: int | None = None,
        output_type: type[BaseModel] | None = None,
        images: Sequence[str | Path] = (),
        video: str | Path | Sequence[str | Path] | None = None,
        session: Session | None = None,
        variables: Mapping[str, Any] | None = None,
    ) -> RunResult:
        """Run the agent until the model answers without calling a tool.

        1. Build the conversation: `history` (e.g. a previous result's `messages`) plus the
           input, and the system prompt rendered for this turn.
        2. Send it with the tools' schemas and the settings.
        3. If the reply has tool calls, run them all concurrently, append their results as
           `role: tool` messages in the order the model emitted them, and go back to 2.
        4. Otherwise return the answer, the whole conversation and the usage.

        Args:
            input: A user prompt, or a whole conversation as OpenAI-format messages.
            history: Messages to continue from (a previous result's `messages`).
            settings: Request parameters overriding the agent's for this run.
            max_turns: Overrides the agent's turn limit for this run.
            output_type: A pydantic model the answer must validate as (overrides the agent's).
            images: Image URLs or local image files to send with the prompt (qwen-vl models).
            video: A video URL, or a list of frame images, to send with the prompt.
            session: Continue this session's conversation and keep each completed turn in it
                (instead of `history`); one run at a time per session.
            variables: Template variables for this run's system prompt (with a `Template` as
                instructions), over the template's own.

        Returns:
            The run's result.

        Raises:
            MaxTurnsExceeded: The model kept calling tools; `.result` holds the run so far.
            ModelError: The endpoint failed after retries; `.result` holds the run so far.
        """
        result: RunResult | None = None
        options = {
            "history": history,
            "settings": settings,
            "max_turns": max_turns,
            "output_type": output_type,
            "images": images,
            "video": video,
            "session": session,
            "variables": variables,
        }
        async for event in self._events(input, False, options):
            if isinstance(event, RunEndEvent):
                result = event.result
        assert result is not None
        return result

    def run_sync(
        self,
        input: Input,
        *,
        history: Sequence[dict[str, Any]] | None = None,
        settings: ModelSettings | dict[str, Any] | None = None,
        max_turns: int | None = None,
        output_type: type[BaseModel] | None = None,
        images: Sequence[str | Path] = (),
        video: str | Path | Sequence[str | Path] | None = None,
        session: Session | None = None,
        variables: Mapping[str, Any] | None = None,
    ) -> RunResult:
        """Run the agent from synchronous code; same arguments and result as `run`.

        Raises:
            UserError: When called inside a running event loop (use `await agent.run(...)`).
        """
        return self._blocking(
            "run_sync",
            "run",
            lambda: self.run(
                input,
                history=history,
                settings=settings,
                max_turns=max_turns,
                output_type=output_type,
                images=images,
                video=video,
                session=session,
                variables=variables,
            ),
        )

    async def stream(
        self,
        input: Input,
        *,
        history: Sequence[dict[str, Any]] | None = None,
        settings: ModelSettings | dict[str, Any] | None = None,
        max_turns: int | None = None,
        output_type: type[BaseModel] | None = None,
        images: Sequence[str | Path] = (),
        video: str | Path | Sequence[str | Path] | None = None,
        session: Session | None = None,
        variables: Mapping[str, Any] | None = None,
    ) -> AsyncIterator[AgentEvent]:
        """Run the agent with streaming on, yielding events; the last is a `RunEndEvent`.

        Same arguments, loop and final result as `run`; text and reasoning arrive as deltas.
        """
        options = {
            "history": history,
            "settings": settings,
            "max_turns": max_turns,
            "output_type": output_type,
            "images": images,
            "video": video,
            "session": session,
            "variables": variables,
        }
        async for event in self._events(input, True, options):
            yield event

    async def resume(
        self,
        state: RunState | str,
        *,
        approve: Iterable[str] = (),
        reject: Mapping[str, str] | None = None,
        settings: ModelSettings | dict[str, Any] | None = None,
        max_turns: int | None = None,
        output_type: type[BaseModel] | None = None,
        session: Session | None = None,
    ) -> RunResult:
        """Continue a run that stopped for approval (`result.interruptions`).

        Approved calls run (exactly once), rejected ones go back to the model as a tool
        message with the reason, and the run goes on as `run` would. Every waiting call must
        be decided. A state is resumed once; the same state again is refused.

        Args:
            state: The stopped run's `result.state`, or its `to_json()` text.
            approve: The ids of the calls a person approved.
            reject: Call id -> the reason it was rejected (the model sees the reason).
            settings: As for `run`.
            max_turns: As for `run` (counted over the whole run, stop included).
            output_type: As for `run`.
            session: The session the run used, to keep its turns.

        Raises:
            UserError: The state is not valid JSON of a run state, belongs to another model
                or tool set, was already resumed, or the decisions do not cover exactly the
                waiting calls.
        """
        result: RunResult | None = None
        events = self._resume_events(
            state, approve, reject, False, settings, max_turns, output_type, session
        )
        async for event in events:
            if isinstance(event, RunEndEvent):
                result = event.result
        assert result is not None
        return result

    def resume_sync(
        self,
        state: RunState | str,
        *,
        approve: Iterable[str] = (),
        reject: Mapping[str, str] | None = None,
        settings: ModelSettings | dict[str, Any] | None = None,
        max_turns: int | None = None,
        output_type: type[BaseModel] | None = None,
        session: Session | None = None,
    ) -> RunResult:
        """`resume` from synchronous code; same arguments and result."""
        return self._blocking(
            "resume_sync",
            "resume",
            lambda: self.resume(
                state,
                approve=approve,
                reject=reject,
                settings=settings,
                max_turns=max_turns,
                output_type=output_type,
                session=session,
            ),
        )

    async def resume_stream(
        self,
        state: RunState | str,
        *,
        approve: Iterable[str] = (),
        reject: Mapping[str, str] | None = None,
        settings: ModelSettings | dict[str, Any] | None = None,
        max_turns: int | None = None,
        output_type: type[BaseModel] | None = None,
        session: Session | None = None,
    ) -> AsyncIterator[AgentEvent]:
        """`resume` with streaming on, yielding events as `stream` does."""
        events = self._resume_events(
            state, approve, reject, True, settings, max_turns, output_type, session
        )
        async for event in events:
            yield event

    async def _resume_events(
        self,
        state: RunState | str,
        approve: Iterable[str],
        reject: Mapping[str, str] | None,
        stream: bool,
        settings: ModelSettings | dict[str, Any] | None,
        max_turns: int | None,
        output_type: type[BaseModel] | None,
        session: Session | None,
    ) -> AsyncIterator[AgentEvent]:
        saved = RunState.from_json(state) if isinstance(state, str) else state
        registry = await registry_for_run(self.tools, self.toolsets)
        point = resumption(
            saved, list(approve), dict(reject or {}), self.model.model_name, registry.names
        )
        config = self._config(settings, max_turns, output_type, stream, registry)
        if saved.state_id in self._resumed:
            raise UserError("this run state was already resumed: its approved calls ran")
        self._resumed.add(saved.state_id)
        if session is None:
            async for event in run_events(config, [], resume=point):
                yield event
            return
        async with session.lock():
            config.checkpoint = session.append
            async for event in run_events(config, [], resume=point):
                yield event

    def _blocking(
        self, name: str, instead: str, work: Callable[[], Awaitable[RunResult]]
    ) -> RunResult:
        """Run `work` on a new event loop, closing the connections bound to it afterwards.

        Raises:
            UserError: When called inside a running event loop.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise UserError(
                f"{name}() was called inside a running event loop; use `await agent.{instead}(...)`"
            )

        async def main() -> RunResult:
            try:
                return await work()
            finally:
                await self._close_connections()

        return asyncio.run(main())

    async def _close_connections(self) -> None:
        """Close connections bound to the current event loop (`*_sync` make one per call)."""
        close = getattr(self.model, "close_connections", None)
        if close is not None:
            await close()

    async def aclose(self) -> None:
        """Close the backend's connections (or unload the local model) and stop toolsets."""
        try:
            for toolset in self.toolsets:
                await toolset.aclose()
        finally:
            await self.model.aclose()

    async def __aenter__(self) -> Agent:
        """Start the toolsets now rather than at the first run."""
        for toolset in self.toolsets:
            await toolset.list_tools()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _conversation(input: Input, history: Sequence[dict[str, Any]] | None) -> list[dict[str, Any]]:
    messages = [_checked_message(m) for m in history] if history else []
    if isinstance(input, str):
        messages.append({"role": "user", "content": input})
    else:
        messages.extend(_checked_message(m) for m in input)
    if not messages:
        raise UserError("nothing to send: give a prompt or at least one message")
    return messages


def _checked_message(message: Any) -> dict[str, Any]:
    """Return a copy of an OpenAI-format message, or raise UserError for a malformed one."""
    if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
        raise UserError(
            f"each message must be a dict with a 'role', got {reprlib.repr(message)}; "
            "pass a string prompt or OpenAI-format messages"
        )
    calls = message.get("tool_calls")
    if calls is not None and not (
        isinstance(calls, list)
        and all(
            isinstance(call, Mapping)
            and isinstance(call.get("id", ""), str)
            and isinstance(call.get("function", {}), Mapping)
            for call in calls
        )
    ):
        raise UserError(
            "a message's tool_calls must be a list of calls like {'id': 'call_1', 'type': "
            "'function', 'function': {'name': ..., 'arguments': ...}}, "
            f"got {reprlib.repr(calls)}"
        )
    if not isinstance(message.get("tool_call_id", ""), str):
        raise UserError(
            "a tool message's tool_call_id must be a string, "
            f"got {reprlib.repr(message['tool_call_id'])}"
        )
    return dict(message)


def _resolve_tools(
    items: Iterable[Tool | Callable[..., Any] | str],
) -> list[Tool | Callable[..., Any]]:
    out: list[Tool | Callable[..., Any]] = []
    for item in items:
        if isinstance(item, str):
            from agent.tool_plugins import load_tool

            out.append(load_tool(item))
        else:
            out.append(item)
    return out


def _make_model(
    endpoint: ResolvedEndpoint,
    retries: int,
    timeout: float,
    model_path: str | None,
    max_connections: int,
    transport: str,
    headers: dict[str, str] | None,
    gate: RequestGate | None,
) -> ChatModel:
    if endpoint.provider.backend == "embedded":
        try:
            from agent.models.local import LocalChatModel
        except ImportError as exc:  # pragma: no cover - the module ships with the runtime
            raise ConfigError(f"the local backend cannot load: {exc}") from exc
        return LocalChatModel(model_path, model_name=endpoint.model)
    from agent.models.openai import OpenAIChatModel, RetryPolicy

    assert endpoint.base_url is not None
    return OpenAIChatModel(
        endpoint.model,
        base_url=endpoint.base_url,
        api_key=endpoint.api_key,
        provider=endpoint.provider.name,
        key_source=endpoint.key_source,
        retry=RetryPolicy(max_retries=retries),
        timeout=timeout,
        max_connections=max_connections,
        transport=transport,
        default_headers=headers,
        gate=gate,
    )


def _check_translation(settings: ModelSettings) -> None:
    options = settings.translation_options
    if options is None:
        return
    from agent.translation import translation_options

    if "source_lang" not in options or "target_lang" not in options:
        raise UserError("translation_options needs source_lang and target_lang")
    translation_options(options["source_lang"], options["target_lang"])


def _hooks(hooks: Sequence[RunHooks], instrument: bool, trace_content: bool) -> list[RunHooks]:
    from agent.tracing import LogHooks

    out: list[RunHooks] = [LogHooks(), *hooks]
    if instrument:
        from agent.tracing import OpenTelemetryHooks

        out.append(OpenTelemetryHooks(capture_content=trace_content))
    return out
