"""Request parameters, typed and range-checked before anything is sent.

Every parameter the reference (`shared/qwen-api/`) documents has a field here. Parameters the
OpenAI SDK names travel as its keyword arguments; the rest (top_k, enable_search, ...) travel in
`extra_body`, as DashScope's own documentation prescribes.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from agent.errors import UserError

__all__ = ["ModelSettings", "SearchOptions", "settings_from"]

ToolChoice = Literal["auto", "none", "required"] | str | dict[str, Any]

# Names the OpenAI chat-completions API (and so the SDK) knows.
_OPENAI_PARAMS = frozenset(
    {
        "temperature",
        "top_p",
        "seed",
        "max_tokens",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "stop",
        "response_format",
        "tool_choice",
        "parallel_tool_calls",
        "verbosity",
        "n",
        "max_completion_tokens",
        "stream_options",
    }
)


class SearchOptions(BaseModel):
    """DashScope's `search_options`, for server-side search (`enable_search`).

    Source: https://www.alibabacloud.com/help/en/model-studio/web-search and the `search_options`
    entry of https://www.alibabacloud.com/help/en/model-studio/qwen-api-via-openai-chat-completions

    Attributes:
        forced_search: Always search, even when the model would not.
        search_strategy: "turbo" (the default), "max", "agent" or "agent_max" (the agent
            strategies only on some models).
        enable_search_extension: Also search domain-specific sources.
        enable_source: Return the sources searched.
        enable_citation: Cite the sources in the answer (needs `enable_source`).
        citation_format: The citation marker, e.g. "[<number>]" or "[ref_<number>]".
        freshness: Only pages from the last N days.
        assigned_site_list: Only these sites.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    forced_search: bool | None = None
    search_strategy: Literal["turbo", "max", "agent", "agent_max"] | None = None
    enable_search_extension: bool | None = None
    enable_source: bool | None = None
    enable_citation: bool | None = None
    citation_format: str | None = None
    freshness: int | None = Field(None, ge=1)
    assigned_site_list: list[str] | None = None


class ModelSettings(BaseModel):
    """Sampling and request options; unset fields are not sent.

    Attributes:
        temperature: Sampling temperature, [0, 2) (DashScope's range).
        top_p: Nucleus sampling threshold, (0, 1].
        top_k: Sample from the k most likely tokens, >= 0 (0 turns it off).
        seed: Seed for more repeatable sampling, 0 to 2**64 - 1.
        max_tokens: Upper bound on generated tokens, >= 1.
        presence_penalty: [-2, 2]; positive values discourage repeating topics.
        frequency_penalty: [-2, 2]; positive values discourage repeating tokens.
        repetition_penalty: (0, 2]; 1.0 is neutral.
        min_p: [0, 1]; minimum probability relative to the most likely token.
        top_a: [0, 1]; a dynamic top-p based on the top token's probability.
        logit_bias: Token id to bias in [-100, 100].
        logprobs: Return log probabilities of the output tokens.
        top_logprobs: 0 to 20 most likely tokens per position; needs `logprobs=True`.
        stop: A string, or a list of strings, or a list of token ids (not mixed).
        response_format: {"type": "text" | "json_object"} or {"type": "json_schema", ...}.
        structured_outputs: Ask the proxy to honour `response_format` json_schema.
        tool_choice: "auto", "none", "required", a tool name, or
            {"type": "function", "function": {"name": ...}}.
        parallel_tool_calls: Let the model call several tools in one turn (default true).
        enable_search: Let Qwen search the web on the server side.
        search_options: DashScope's search options (a `SearchOptions` or a dict of its fields).
        translation_options: {"source_lang": ..., "target_lang": ...} for the qwen-mt models.
        verbosity: "low", "medium" or "high".
        enable_thinking: Turn a hybrid model's reasoning on or off (None: the model's default;
            see the README's "Qwen3 and thinking").
        thinking_budget: At most this many reasoning tokens, >= 1 (DashScope).
        preserve_thinking: Send earlier reasoning back as input (DashScope, some models).
        max_completion_tokens: Upper bound on reasoning plus answer tokens, >= 1.
        n: Replies per request, >= 1 (DashScope: 1-4, and 1 with tools); the run uses the first.
        vl_high_resolution_images: Let qwen-vl models read images at a higher resolution.
        enable_code_interpreter: Let the model run code on the server (DashScope, some models).
        stream_options: e.g. {"include_usage": true}; sent with streamed requests only.
        timeout: Seconds one model request may take.
        extra_body: Any other field to send as is.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: float | None = Field(None, ge=0, lt=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)
    seed: int | None = Field(None, ge=0, le=2**64 - 1)
    max_tokens: int | None = Field(None, ge=1)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    repetition_penalty: float | None = Field(None, gt=0, le=2)
    min_p: float | None = Field(None, ge=0, le=1)
    top_a: float | None = Field(None, ge=0, le=1)
    logit_bias: dict[str, float] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    stop: str | list[str] | list[int] | None = None
    response_format: dict[str, Any] | None = None
    structured_outputs: bool | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    enable_search: bool | None = None
    search_options: SearchOptions | None = None
    translation_options: dict[str, Any] | None = None
    verbosity: Literal["low", "medium", "high"] | None = None
    enable_thinking: bool | None = None
    thinking_budget: int | None = Field(None, ge=1)
    preserve_thinking: bool | None = None
    max_completion_tokens: int | None = Field(None, ge=1)
    n: int | None = Field(None, ge=1, le=128)
    vl_high_resolution_images: bool | None = None
    enable_code_interpreter: bool | None = None
    stream_options: dict[str, bool] | None = None
    timeout: float | None = Field(None, gt=0)
    extra_body: dict[str, Any] | None = None

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise UserError(f"invalid model settings: {_describe(exc)}") from None

    @field_validator("logit_bias")
    @classmethod
    def _bias_range(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        if v:
            for token, bias in v.items():
                if not -100 <= bias <= 100:
                    raise ValueError(f"logit_bias[{token!r}] = {bias} is outside [-100, 100]")
        return v

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_not_mixed(cls, v: Any) -> Any:
        if isinstance(v, list) and v:
            kinds = {isinstance(x, int) and not isinstance(x, bool) for x in v}
            if len(kinds) > 1:
                raise ValueError("stop cannot mix token ids and strings, e.g. ['你好', 123456]")
        return v

    @field_validator("response_format")
    @classmethod
    def _response_format(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is not None and v.get("type") not in ("text", "json_object", "json_schema"):
            raise ValueError("response_format.type must be 'text', 'json_object' or 'json_schema'")
        return v

    @model_validator(mode="after")
    def _top_logprobs_needs_logprobs(self) -> ModelSettings:
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs=True")
        return self

    def merge(self, other: ModelSettings | None) -> ModelSettings:
        """Return these settings overridden by the fields `other` sets."""
        if other is None:
            return self
        data = self.model_dump(exclude_unset=True)
        data.update(other.model_dump(exclude_unset=True))
        return ModelSettings(**data)

    def split(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """Return (OpenAI-named parameters, extra_body) with unset fields left out."""
        params: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for name, value in self.model_dump(exclude_none=True).items():
            if name in ("timeout", "extra_body"):
                continue
            if name in _OPENAI_PARAMS:
                params[name] = value
            else:
                extra[name] = value
        if isinstance(params.get("tool_choice"), str) and params["tool_choice"] not in (
            "auto",
            "none",
            "required",
        ):
            params["tool_choice"] = {
                "type": "function",
                "function": {"name": params["tool_choice"]},
            }
        if self.extra_body:
            extra.update(self.extra_body)
        return params, extra


def settings_from(value: ModelSettings | dict[str, Any] | None) -> ModelSettings:
    """Build settings from a dict (or pass settings through), with a one-line error per mistake.

    Raises:
        UserError: Naming each invalid field and its allowed range.
    """
    if value is None:
        return ModelSettings()
    if isinstance(value, ModelSettings):
        return value
    return ModelSettings(**value)


def _describe(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
        for err in exc.errors()
    )
