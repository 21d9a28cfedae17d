"""What qwenloop must know to speak to one model at one provider, resolved once per agent.

A `ModelProfile` joins two kinds of facts: the provider's (which parameters its endpoint takes
and how it defaults them: `agent.models.profile_data`) and the model's (thinking, limits, prices:
`agent.catalog`). Nothing outside this module and its data tests a provider or model name; the
rest of the runtime asks the profile.

Users can override any field: `Agent(..., profile={"parallel_tool_calls_default": True})`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from agent import catalog
from agent.catalog import ThinkingMode
from agent.errors import ConfigError, UserError
from agent.messages import Usage
from agent.models.profile_data import GENERIC, PROVIDER_FACTS

__all__ = ["ModelProfile", "Price", "ThinkingMode", "resolve_profile"]

ThinkingSwitch = Literal["enable_thinking", "chat_template_kwargs"]


@dataclass(frozen=True, slots=True)
class Price:
    """A price in CNY per 1M tokens, for a model the catalogue does not price (or to override it).

    Attributes:
        input: Prompt tokens.
        output: Generated tokens.
        thinking_output: Generated tokens in thinking mode (default: `output`).
        cache_hit_ratio: The fraction of `input` charged for prompt tokens served from cache.
    """

    input: float
    output: float
    thinking_output: float | None = None
    cache_hit_ratio: float | None = None

    def __post_init__(self) -> None:
        for name in ("input", "output", "thinking_output", "cache_hit_ratio"):
            value = getattr(self, name)
            if value is not None and not (value >= 0 and value != float("inf")):
                raise UserError(f"price {name} must be a finite number >= 0, got {value!r}")


@dataclass(frozen=True, slots=True)
class ModelProfile:
    """Everything the runtime must know to speak to one model at one provider.

    Attributes:
        provider: The provider preset ("dashscope", "openai", "custom", ...).
        model: The model name.
        thinking: "none" (cannot think), "optional" (can; off unless asked), "default" (thinks
            unless told not to) or "only" (always thinks).
        thinking_switch: How the endpoint takes the on/off switch: DashScope's top-level
            `enable_thinking`, vLLM's and SGLang's `chat_template_kwargs`, or None (not sent).
        thinking_needs_stream: The endpoint refuses a non-streamed call while the model thinks.
        thinking_forced_tool: A named `tool_choice` is accepted while the model thinks.
        thinking_budget: The endpoint takes `thinking_budget`.
        preserve_thinking: The endpoint takes `preserve_thinking` for this model.
        parallel_tool_calls_default: What the endpoint does when `parallel_tool_calls` is unsent.
        parallel_tool_calls_param: The endpoint takes the `parallel_tool_calls` parameter.
        tool_choice_values: The `tool_choice` forms accepted: "auto", "none", "required",
            "function" (a named function).
        json_schema: `response_format` json_schema is honoured.
        server_search: `enable_search` works: True, False, or None (unknown: allowed on request).
        search_strategies: `search_options.search_strategy` values the endpoint documents.
        images: The model takes image parts.
        video: The model takes video parts.
        context_tokens: The context window, where known.
        max_output_tokens: The longest reply, where known.
        max_thinking_tokens: The longest reasoning, where known.
        seed_max: The largest `seed` the endpoint takes.
        top_logprobs_max: The largest `top_logprobs`.
        n_max: The largest `n` (always 1 with tools).
        explicit_cache: The endpoint honours `cache_control` markers in message parts.
        send_reasoning: Earlier turns' `reasoning_content` must go back on tool-call turns.
        default_instructions: The system prompt used when the agent is given none.
        default_settings: Request settings used where the agent and the run set none (the
            embedded model decodes greedily by default, for instance).
        price: A flat price that replaces the catalogue's (tiers and all); None: the
            catalogue's, where it has one.
        sources: Where the provider's and the model's facts come from.
    """

    provider: str
    model: str
    thinking: ThinkingMode = "none"
    thinking_switch: ThinkingSwitch | None = None
    thinking_needs_stream: bool = False
    thinking_forced_tool: bool = True
    thinking_budget: bool = False
    preserve_thinking: bool = False
    parallel_tool_calls_default: bool = True
    parallel_tool_calls_param: bool = True
    tool_choice_values: frozenset[str] = frozenset({"auto", "none", "required", "function"})
    json_schema: bool = False
    server_search: bool | None = False
    search_strategies: tuple[str, ...] = ()
    images: bool | None = None
    video: bool | None = None
    context_tokens: int | None = None
    max_output_tokens: int | None = None
    max_thinking_tokens: int | None = None
    seed_max: int = 2**64 - 1
    top_logprobs_max: int = 20
    n_max: int = 128
    explicit_cache: bool = False
    send_reasoning: bool = False
    default_instructions: str | None = None
    default_settings: Mapping[str, Any] = field(default_factory=dict)
    price: Price | None = None
    sources: tuple[str, ...] = field(default=())

    @property
    def priced(self) -> bool:
        """A cost can be computed for this model."""
        return self.price is not None or catalog.has_price(self.model)

    def cost(self, usage: Usage, *, thinking: bool) -> float | None:
        """The CNY cost of one request, or None when the price is unknown."""
        price = self.price
        if price is None:
            return catalog.turn_cost(self.model, usage, thinking=thinking)
        cached = min(usage.cached_prompt_tokens, usage.prompt_tokens)
        ratio = 1.0 if price.cache_hit_ratio is None else price.cache_hit_ratio
        prompt = (usage.prompt_tokens - cached) * price.input + cached * price.input * ratio
        out_price = price.output
        if (thinking or usage.reasoning_tokens) and price.thinking_output is not None:
            out_price = price.thinking_output
        return (prompt + usage.completion_tokens * out_price) / 1_000_000

    @property
    def thinks_by_default(self) -> bool:
        """The model reasons unless told not to."""
        return self.thinking in ("default", "only")

    def thinking_on(self, enable_thinking: bool | None) -> bool:
        """Whether a request with this `enable_thinking` setting makes the model reason."""
        if self.thinking == "none":
            return False
        if self.thinking == "only" or enable_thinking is None:
            return self.thinks_by_default
        return enable_thinking

    def check_thinking(self, enable_thinking: bool | None) -> None:
        """Refuse a thinking switch the model cannot honour.

        Raises:
            UserError: Thinking asked of a model that cannot think, or refused to one that
                always thinks.
        """
        if enable_thinking and self.thinking == "none":
            raise UserError(
                f"model {self.model!r} does not think: drop enable_thinking, or use a model "
                "that can (e.g. qwen-plus, qwen3-max, the open-source qwen3 sizes)"
            )
        if enable_thinking is False and self.thinking == "only":
            raise UserError(
                f"model {self.model!r} always thinks: drop enable_thinking=False, or use a "
                "hybrid model"
            )


def resolve_profile(
    provider: str, model: str, overrides: dict[str, Any] | None = None
) -> ModelProfile:
    """Build the profile of `model` at `provider`: provider facts, then the model's, then yours.

    An unknown provider or model gets the conservative generic facts: nothing is sent that the
    endpoint might not know, and nothing is assumed about the model.

    Raises:
        ConfigError: `overrides` names a field a profile does not have.
    """
    facts: dict[str, Any] = {**GENERIC, **PROVIDER_FACTS.get(provider, {})}
    facts.update(_model_facts(model, facts))
    if overrides:
        known = {f.name for f in dataclasses.fields(ModelProfile)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigError(
                f"unknown profile field(s) {', '.join(unknown)}; known fields: "
                f"{', '.join(sorted(known - {'provider', 'model'}))}"
            )
        facts.update(overrides)
    if isinstance(facts.get("tool_choice_values"), (set, list, tuple)):
        facts["tool_choice_values"] = frozenset(facts["tool_choice_values"])
    return ModelProfile(provider=provider, model=model, **facts)


def _model_facts(model: str, provider_facts: dict[str, Any]) -> dict[str, Any]:
    """The model's own facts from the catalogue, as profile fields."""
    info = catalog.lookup(model)
    if info is None:
        return {}
    out: dict[str, Any] = {
        "thinking": info.thinking,
        "context_tokens": info.context_tokens,
        "max_output_tokens": info.max_output_tokens,
        "max_thinking_tokens": info.max_thinking_tokens,
        "images": info.supports_images,
        "video": info.supports_video,
    }
    if info.supports_json_schema:
        out["json_schema"] = True
    if provider_facts.get("server_search") is not False:
        # The provider has server search; the model decides (None: not documented either way).
        out["server_search"] = info.supports_search if info.supports_search is not None else None
    out["sources"] = tuple(provider_facts.get("sources", ())) + tuple(info.sources)
    return out
