"""The Qwen model catalogue: limits, prices, thinking modes and capabilities of each model.

Figures come from the 2024-25 reference (../shared/qwen-api/) and, where Alibaba Cloud's current
Model Studio pages differ (Qwen3, thinking, prices), from those pages, each cited next to its data.
Also the service's rate-limit tiers and the meaning of its HTTP status codes, for error hints.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType
from typing import Literal

from agent.errors import UserError
from agent.messages import Usage

__all__ = [
    "FREE_TIER",
    "NEW_USER_FREE_TOKENS",
    "PAID_TIER",
    "RATE_LIMIT_TIERS",
    "STATUS_HINTS",
    "ModelInfo",
    "PriceTier",
    "RateLimitTier",
    "ThinkingMode",
    "all_models",
    "cost",
    "has_price",
    "lookup",
    "status_hint",
    "supports_search",
    "turn_cost",
]

ThinkingMode = Literal["none", "optional", "default", "only"]
"""How a model thinks: "none" (cannot), "optional" (hybrid, off unless asked), "default" (hybrid,
on unless told not to) or "only" (always thinks)."""


@dataclass(frozen=True)
class PriceTier:
    """One price band of a model, in CNY per 1M tokens.

    Model Studio picks the band by the prompt tokens of the single request and bills the whole
    request (prompt and completion) at that band's prices.

    Attributes:
        max_input_tokens: The largest prompt this band covers; None for no upper bound.
        input: Price of prompt tokens.
        output: Price of completion tokens. For a thinking-only model, its only output price
            (reasoning plus answer).
        thinking_output: Price of completion tokens (reasoning plus answer) in thinking mode, or
            None where the model cannot think.
    """

    max_input_tokens: int | None
    input: float
    output: float
    thinking_output: float | None = None


@dataclass(frozen=True)
class ModelInfo:
    """What the documents say about one model.

    Where a document gives no figure the field is None. The 2024-25 reference's context and
    output limits read its "128K" / "1M" decimally (128,000 / 1,000,000), which errs low when
    used to clamp `max_tokens`; the current Model Studio pages give exact token counts.

    Prices are CNY per 1M tokens (China mainland / Beijing). For the models Alibaba Cloud's
    current pricing page prices (the Qwen3 models, qwen-plus, qwen-flash, qwen-turbo, qwq-plus)
    its figures are used. Otherwise, for the models DashScope's page in the reference prices
    (qwen-max, qwen-long) those input/output prices are used; otherwise the wcode.net proxy's
    single "per 1000 tokens" price is multiplied by 1000 and applies to input and output alike,
    taken from its newer (2025-01) list where both lists price a model.

    Attributes:
        name: The model id as sent in `model`.
        family: A coarse family: "qwen-commercial", "qwen-open-source", "qwen-vl", "qwen-long",
            "qwen-mt", "qwq/qvq reasoning", "qwen-coder", "qwen-math", "qwen-audio",
            "embedding" or "farui".
        display_name: The Chinese name from the proxy's model list (the model id where the
            documents give no name).
        context_tokens: The context window, where a document gives one.
        max_output_tokens: The longest reply, where a document gives one (for qwen3-max, in
            non-thinking mode).
        input_price: CNY per 1M prompt tokens in the first price tier, or None.
        output_price: CNY per 1M completion tokens in the first price tier, or None.
        price_source: "model-studio" (Alibaba Cloud's current pricing page), "dashscope",
            "wcode-2024-12", "wcode-2025-01" or "wcode-model-page" (the reference's documents),
            or None without a price.
        supports_tools: Function calling is documented for it.
        supports_images: It accepts image parts.
        supports_video: It accepts video parts.
        supports_search: Whether `enable_search` is accepted: True, False (the documents
            exclude it), or None (they neither show nor exclude it).
        supports_reasoning: It can return `reasoning_content`; always `thinking != "none"`.
        is_translation: A qwen-mt model, driven by `translation_options`.
        supports_json_schema: `response_format` with a `json_schema` (structured outputs).
        alias_of: For a version name resolved to a catalogued model ("qwen-plus-latest"), that
            model's id; its figures are the base model's.
        thinking: "none" (cannot think), "optional" (hybrid, off by default), "default" (hybrid,
            on by default) or "only" (always thinks).
        max_thinking_tokens: The longest reasoning, where documented.
        price_tiers: The price bands, smallest prompt first; the last has no upper bound. Empty
            without a price. `input_price`/`output_price` are the first band's figures.
        cache_hit_ratio: The fraction of the input price charged for prompt tokens served from
            the implicit context cache, for models the pricing page marks as cache-discounted;
            None otherwise (cached tokens then cost the full input price).
        sources: Where the figures come from: documentation URLs, or for the reference's
            figures (which carry no page URL) the reference document ("qwen-api/002_....txt").
    """

    name: str
    family: str
    display_name: str
    context_tokens: int | None = None
    max_output_tokens: int | None = None
    input_price: float | None = None
    output_price: float | None = None
    price_source: str | None = None
    supports_tools: bool = False
    supports_images: bool = False
    supports_video: bool = False
    supports_search: bool | None = None
    supports_reasoning: bool = field(init=False, default=False)
    is_translation: bool = False
    supports_json_schema: bool = False
    alias_of: str | None = None
    thinking: ThinkingMode = "none"
    max_thinking_tokens: int | None = None
    price_tiers: tuple[PriceTier, ...] = ()
    cache_hit_ratio: float | None = None
    sources: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Derived fields are set here so that no entry can contradict itself: a flat price
        # becomes one unbounded tier, and tiers give the flat price.
        set_field = object.__setattr__
        set_field(self, "supports_reasoning", self.thinking != "none")
        if not self.price_tiers and self.input_price is not None and self.output_price is not None:
            set_field(self, "price_tiers", (PriceTier(None, self.input_price, self.output_price),))
        if not self.price_tiers:
            return
        first = self.price_tiers[0]
        if self.input_price is None and self.output_price is None:
            set_field(self, "input_price", first.input)
            set_field(self, "output_price", first.output)
        elif (self.input_price, self.output_price) != (first.input, first.output):
            raise ValueError(f"{self.name}: input/output prices differ from the first tier")
        _check_tiers(self.name, self.price_tiers)


def _check_tiers(name: str, tiers: tuple[PriceTier, ...]) -> None:
    """Refuse tiers that do not rise strictly or that leave large prompts unpriced."""
    bounds = [t.max_input_tokens for t in tiers[:-1]]
    finite = [b for b in bounds if b is not None]
    rising = all(a < b for a, b in itertools.pairwise(finite))
    if tiers[-1].max_input_tokens is not None or len(finite) != len(bounds) or not rising:
        raise ValueError(f"{name}: price tiers must rise and end unbounded, got {tiers}")


@dataclass(frozen=True)
class RateLimitTier:
    """A DashScope rate-limit tier.

    Attributes:
        name: "free" or "paid".
        rpm: Requests per minute.
        tpm: Tokens per minute.
    """

    name: str
    rpm: int
    tpm: int


FREE_TIER = RateLimitTier("free", rpm=60, tpm=60_000)
PAID_TIER = RateLimitTier("paid", rpm=300, tpm=300_000)
RATE_LIMIT_TIERS: Mapping[str, RateLimitTier] = MappingProxyType(
    {FREE_TIER.name: FREE_TIER, PAID_TIER.name: PAID_TIER}
)
NEW_USER_FREE_TOKENS = 1_000_000
"""DashScope's free allowance for a new account, in tokens."""

STATUS_HINTS: Mapping[int, str] = MappingProxyType(
    {
        400: "the request is malformed: check the parameters",
        401: "the API key is invalid: check the key",
        429: "rate limit reached or quota used up: back off and retry, or top up the account",
        500: "the server failed: retry later",
    }
)


def status_hint(status_code: int) -> str | None:
    """Return the hint for an HTTP status, using the 500 hint for any other 5xx.

    Args:
        status_code: The HTTP status of the failed response.

    Returns:
        An English hint on what to do, or None for a status the reference does not cover.
    """
    if status_code in STATUS_HINTS:
        return STATUS_HINTS[status_code]
    if 500 <= status_code < 600:
        return STATUS_HINTS[500]
    return None


# --- The 2024-25 reference's figures, transcribed as written -----------------------------------

# The reference documents carry no page URL: an entry's `sources` names the document instead.
_REF_000 = "qwen-api/000_8dfcea389a9f4246.txt"  # wcode.net proxy's Qwen page, late 2024
_REF_001 = "qwen-api/001_025a46e46580a3e5.txt"  # the same page, early 2025
_REF_002 = "qwen-api/002_0ef068c298cbc181.txt"  # a DashScope summary: limits, prices
_REF_003 = "qwen-api/003_ca54f1a3b6af1342.txt"  # the proxy's page for qwen/qwen-2.5-7b-instruct

_K = 1_000
_M = 1_000_000

# 002: DashScope's table of context and output limits ("-" output for the embedding model).
_DASHSCOPE_LIMITS: dict[str, tuple[int, int | None]] = {
    "qwen-max": (128 * _K, 8 * _K),
    "qwen-plus": (128 * _K, 8 * _K),
    "qwen-turbo": (128 * _K, 8 * _K),
    "qwen-long": (1 * _M, 6 * _K),
    "qwen-vl-max": (32 * _K, 8 * _K),
    "qwen-vl-plus": (32 * _K, 8 * _K),
    "qwen2.5-coder-32b": (128 * _K, 8 * _K),
    "qwen-audio-turbo": (8 * _K, 2 * _K),
    "text-embedding-v3": (8 * _K, None),
}

# 002: DashScope's prices, CNY per 1M tokens (input, output). The current pricing page prices
# qwen-plus and qwen-turbo differently: `_MODEL_STUDIO` below supersedes them.
_DASHSCOPE_PRICES: dict[str, tuple[str, str]] = {
    "qwen-max": ("20", "60"),
    "qwen-plus": ("4", "12"),
    "qwen-turbo": ("1", "3"),
    "qwen-long": ("0.5", "2"),
}

# 001: the proxy's list, early 2025: id, Chinese name, CNY per 1000 tokens.
_WCODE_2025_01: list[tuple[str, str, str]] = [
    ("qwen2.5-vl-7b-instruct", "通义千问2.5-VL-7B", "0.0065"),
    ("qwen2.5-vl-72b-instruct", "通义千问2.5-VL-72B", "0.0615"),
    ("qwen2.5-vl-3b-instruct", "通义千问2.5-VL-3B", "0.0045"),
    ("qwen2.5-7b-instruct-1m", "通义千问2.5-7B-1M", "0.0015"),
    ("qwen2.5-14b-instruct-1m", "通义千问2.5-14B-1M", "0.004"),
    ("qwen2-vl-72b-instruct", "通义千问2-VL-72B", "0.0615"),
    ("qvq-72b-preview", "通义千问-QvQ-72B-Preview", "0.046"),
    ("qwen-mt-plus", "通义千问-MT-Plus", "0.0575"),
    ("qwen-mt-turbo", "通义千问-MT-Turbo", "0.004"),
    ("qwen-plus", "通义千问-Plus", "0.0025"),
    ("qwen-turbo", "通义千问-Turbo", "0.0008"),
    ("qwen-vl-max", "通义千问VL-Max", "0.0115"),
    ("qwq-32b-preview", "通义千问-QwQ-32B-Preview", "0.008"),
    ("qwen-vl-ocr", "通义千问VL-OCR", "0.0065"),
    ("qwen2.5-coder-14b-instruct", "通义千问2.5-Coder-14B", "0.008"),
    ("qwen2.5-coder-32b-instruct", "通义千问2.5-Coder-32B", "0.008"),
    ("qwen-coder-plus", "通义千问-Coder-Plus", "0.009"),
    ("qwen-max", "通义千问-Max", "0.0125"),
    ("qwen-coder-turbo", "通义千问-Coder-Turbo", "0.008"),
    ("qwen2.5-math-7b-instruct", "通义千问2.5-Math-7B", "0.0025"),
    ("qwen2.5-math-72b-instruct", "通义千问2.5-Math-72B", "0.0155"),
    ("qwen2.5-coder-7b-instruct", "通义千问2.5-Coder-7B", "0.0025"),
    ("qwen2.5-7b-instruct", "通义千问2.5-7B", "0.0015"),
    ("qwen2.5-72b-instruct", "通义千问2.5-72B", "0.0155"),
    ("qwen2.5-14b-instruct", "通义千问2.5-14B", "0.004"),
    ("qwen-math-turbo", "通义千问-Math-Turbo", "0.008"),
    ("qwen2.5-32b-instruct", "通义千问2.5-32B", "0.008"),
    ("qwen2.5-3b-instruct", "通义千问2.5-3B", "0.001"),
    ("qwen-vl-plus", "通义千问VL-Plus", "0.006"),
    ("qwen-math-plus", "通义千问-Math-Plus", "0.0155"),
    ("qwen2-math-7b-instruct", "通义千问2-Math-7B", "0.0025"),
    ("qwen2-math-72b-instruct", "通义千问2-Math-72B", "0.0155"),
    ("qwen2-72b-instruct", "通义千问2-72B", "0.0155"),
    ("qwen2-57b-a14b-instruct", "通义千问2-57B", "0.009"),
    ("qwen2-7b-instruct", "通义千问2-7B", "0.0025"),
    ("qwen-long", "Qwen-Long", "0.0029"),
    ("farui-plus", "通义法睿-Plus-32K", "0.027"),
    ("qwen1.5-110b-chat", "通义千问1.5-开源版-110B", "0.018"),
    ("qwen1.5-7b-chat", "通义千问1.5-开源版-7B", "0.0025"),
    ("qwen1.5-72b-chat", "通义千问1.5-开源版-72B", "0.013"),
    ("qwen1.5-32b-chat", "通义千问1.5-开源版-32B", "0.009"),
    ("qwen1.5-14b-chat", "通义千问1.5-开源版-14B", "0.0055"),
]

# 000: the proxy's list, late 2024.
_WCODE_2024_12: list[tuple[str, str, str]] = [
    ("qvq-72b-preview", "通义千问-QvQ-72B-Preview", "0.046"),
    ("qwen-mt-turbo", "通义千问-MT-Turbo", "0.0385"),
    ("qwen-mt-plus", "通义千问-MT-Plus", "0.0765"),
    ("qwen-vl-max", "通义千问VL-Max", "0.0115"),
    ("qwen-turbo", "通义千问-Turbo", "0.0008"),
    ("qwen-plus", "通义千问-Plus", "0.0025"),
    ("qwq-32b-preview", "通义千问-QwQ-32B-Preview", "0.009"),
    ("qwen-vl-max-latest", "通义千问VL-Max-Latest", "0.0115"),
    ("qwen-vl-ocr", "通义千问VL-OCR", "0.0065"),
    ("qwen2.5-coder-14b-instruct", "通义千问2.5-Coder-14B", "0.008"),
    ("qwen2.5-coder-32b-instruct", "通义千问2.5-Coder-32B", "0.009"),
    ("qwen-coder-plus", "通义千问-Coder-Plus", "0.009"),
    ("qwen2-vl-7b-instruct", "通义千问2-VL-开源版-7B", "0.006"),
    ("qwen-max", "通义千问-Max", "0.0765"),
    ("qwen2.5-math-7b-instruct", "通义千问2.5-Math-7B", "0.0025"),
    ("qwen-coder-turbo", "通义千问-Coder-Turbo", "0.008"),
    ("qwen2.5-coder-7b-instruct", "通义千问2.5-Coder-7B", "0.0025"),
    ("qwen2.5-math-72b-instruct", "通义千问2.5-Math-72B", "0.0155"),
    ("qwen2.5-7b-instruct", "通义千问2.5-7B", "0.0025"),
    ("qwen2.5-72b-instruct", "通义千问2.5-72B", "0.0155"),
    ("qwen2.5-32b-instruct", "通义千问2.5-32B", "0.009"),
    ("qwen-math-turbo", "通义千问-Math-Turbo", "0.008"),
    ("qwen2.5-14b-instruct", "通义千问2.5-14B", "0.008"),
    ("qwen-vl-plus", "通义千问VL-Plus", "0.006"),
    ("qwen-math-plus", "通义千问-Math-Plus", "0.0155"),
    ("qwen2-math-72b-instruct", "通义千问2-Math-72B", "0.0155"),
    ("qwen2-math-7b-instruct", "通义千问2-Math-7B", "0.0025"),
    ("qwen2-57b-a14b-instruct", "通义千问2-开源版-57B", "0.009"),
    ("qwen2-72b-instruct", "通义千问2-开源版-72B", "0.0155"),
    ("text-embedding-v3", "通用文本向量-v3", "0.0009"),
    ("qwen2-7b-instruct", "通义千问2-开源版-7B", "0.0025"),
    ("qwen-long", "Qwen-Long", "0.0029"),
    ("farui-plus", "通义法睿-Plus-32K", "0.027"),
    ("qwen1.5-110b-chat", "通义千问1.5-开源版-110B", "0.018"),
    ("qwen1.5-7b-chat", "通义千问1.5-开源版-7B", "0.0025"),
    ("qwen1.5-72b-chat", "通义千问1.5-开源版-72B", "0.013"),
    ("qwen1.5-32b-chat", "通义千问1.5-开源版-32B", "0.009"),
    ("qwen1.5-14b-chat", "通义千问1.5-开源版-14B", "0.0055"),
    ("qwen-72b-chat", "通义千问-开源版-72B", "0.0255"),
    ("qwen-14b-chat", "通义千问-开源版-14B", "0.0105"),
]

# 003: the proxy's page for one model, priced per 1M tokens with separate input and output.
_WCODE_MODEL_PAGE = ModelInfo(
    name="qwen/qwen-2.5-7b-instruct",
    family="qwen-open-source",
    display_name="Qwen2.5 7B Instruct",
    context_tokens=64 * _K,
    input_price=0.6,
    output_price=1.5,
    price_source="wcode-model-page",
    sources=(_REF_003,),
    supports_tools=True,
    supports_search=False,
    # The page lists `response_format` json_object and `structured_outputs` (json_schema).
    supports_json_schema=True,
)

# --- Alibaba Cloud Model Studio today: Qwen3, thinking, tiered prices ---------------------------
#
# Where these pages differ from the reference, they win (qwen-plus, qwen-turbo). Prices are China
# mainland (Beijing), CNY per 1M tokens, from the pricing page as read in 2026; treat them as a
# snapshot. The tier bounds are written there as "32K", "128K", "256K"; K is read as 1,024, as on
# the models page, where qwen3-max's "256K" context is 262,144 tokens.

_PRICING = "https://help.aliyun.com/zh/model-studio/model-pricing"
_MODELS = "https://help.aliyun.com/zh/model-studio/models"
_CACHE = "https://www.alibabacloud.com/help/en/model-studio/context-cache"
# "enable_thinking ... default is True for open source models, False for commercial models".
_THINKING_DEFAULTS = (
    "https://www.alibabacloud.com/help/en/model-studio/qwen-api-via-openai-chat-completions"
)
# Says which models take `enable_thinking` (Qwen3, Qwen3-VL, ...).
_CHAT_REFERENCE_ZH = "https://help.aliyun.com/zh/model-studio/qwen-api-via-openai-chat-completions"
# A SECONDARY source (models.dev, a community catalogue), used only for limits the official
# pages were not read for.
_MODELS_DEV = (
    "https://github.com/anomalyco/models.dev/tree/735cde79503d30a3dab85e1e690fe3546b4bdf19/"
    "providers/alibaba-cn/models"
)

_KI = 1_024
# The context-cache page: "The portion of the input served from the cache is billed at 20% of
# the standard input token price" (implicit cache).
_IMPLICIT_CACHE_RATIO = 0.2


@dataclass(frozen=True)
class _Current:
    """One model as the current Model Studio pages describe it (see the comments at each)."""

    name: str
    thinking: ThinkingMode
    sources: tuple[str, ...]
    tiers: tuple[PriceTier, ...] = ()
    context_tokens: int | None = None
    max_output_tokens: int | None = None
    max_thinking_tokens: int | None = None
    cache_hit_ratio: float | None = None


def _flat(input_: float, output: float, thinking: float | None = None) -> tuple[PriceTier, ...]:
    """One unbounded tier: a model whose price does not depend on the prompt's length."""
    return (PriceTier(None, input_, output, thinking),)


_HYBRID_OPEN = (_PRICING, _THINKING_DEFAULTS)  # open-source Qwen3: thinks unless told not to

_MODEL_STUDIO: list[_Current] = [
    # qwen3-max (= qwen3-max-2026-01-23): hybrid ("非思考和思考模式"); thinking output costs the
    # same as non-thinking ("思维链+回答"); cache-discounted. Limits from the models page:
    # 262,144 context, 65,536 output without thinking; with thinking 81,920 reasoning and
    # 32,768 answer. Off by default: a commercial model (inferred; the page does not say).
    _Current(
        "qwen3-max",
        "optional",
        (_PRICING, _MODELS, _CACHE, _THINKING_DEFAULTS),
        tiers=(
            PriceTier(32 * _KI, 2.5, 10, 10),
            PriceTier(128 * _KI, 4, 16, 16),
            PriceTier(None, 7, 28, 28),  # the page's top band ends at the input limit
        ),
        context_tokens=262_144,
        max_output_tokens=65_536,
        max_thinking_tokens=81_920,
        cache_hit_ratio=_IMPLICIT_CACHE_RATIO,
    ),
    # The September snapshot: non-thinking only ("仅非思考模式"), the same bands; no cache mark
    # was read for it.
    _Current(
        "qwen3-max-2025-09-23",
        "none",
        (_PRICING,),
        tiers=(
            PriceTier(32 * _KI, 6, 24),
            PriceTier(128 * _KI, 10, 40),
            PriceTier(None, 15, 60),
        ),
    ),
    # qwen-plus (= qwen-plus-2025-12-01): hybrid, thinking off by default; not marked as
    # cache-discounted in Beijing (only qwen-plus-us is). Limits: secondary source.
    _Current(
        "qwen-plus",
        "optional",
        (_PRICING, _THINKING_DEFAULTS, _MODELS_DEV),
        tiers=(
            PriceTier(128 * _KI, 0.8, 2, 8),
            PriceTier(256 * _KI, 2.4, 20, 24),
            PriceTier(None, 4.8, 48, 64),  # up to 1M
        ),
        context_tokens=1_000_000,
        max_output_tokens=32_768,
    ),
    # qwen-flash (= qwen-flash-2025-07-28): hybrid, thinking at the same price; cache-discounted.
    # Limits: secondary source.
    _Current(
        "qwen-flash",
        "optional",
        (_PRICING, _CACHE, _THINKING_DEFAULTS, _MODELS_DEV),
        tiers=(
            PriceTier(128 * _KI, 0.15, 1.5, 1.5),
            PriceTier(256 * _KI, 0.6, 6, 6),
            PriceTier(None, 1.2, 12, 12),  # up to 1M
        ),
        context_tokens=1_000_000,
        max_output_tokens=32_768,
        cache_hit_ratio=_IMPLICIT_CACHE_RATIO,
    ),
    # qwen-turbo: hybrid, no tiers. Limits: secondary source.
    _Current(
        "qwen-turbo",
        "optional",
        (_PRICING, _THINKING_DEFAULTS, _MODELS_DEV),
        tiers=_flat(0.3, 0.6, 3),
        context_tokens=131_072,
        max_output_tokens=16_384,
    ),
    # qwq-plus: thinking only ("仅思考模式"); its one output price is the thinking price.
    _Current("qwq-plus", "only", (_PRICING,), tiers=_flat(1.6, 4, 4)),
    # The open-source Qwen3 sizes: hybrid, thinking on by default (the chat reference's sample).
    _Current("qwen3-235b-a22b", "default", _HYBRID_OPEN, tiers=_flat(2, 8, 20)),
    _Current("qwen3-32b", "default", _HYBRID_OPEN, tiers=_flat(2, 8, 20)),
    _Current("qwen3-30b-a3b", "default", _HYBRID_OPEN, tiers=_flat(0.75, 3, 7.5)),
    _Current("qwen3-14b", "default", _HYBRID_OPEN, tiers=_flat(1, 4, 10)),
    _Current("qwen3-8b", "default", _HYBRID_OPEN, tiers=_flat(0.5, 2, 5)),
    _Current("qwen3-4b", "default", _HYBRID_OPEN, tiers=_flat(0.3, 1.2, 3)),
    _Current("qwen3-1.7b", "default", _HYBRID_OPEN, tiers=_flat(0.3, 1.2, 3)),
    _Current("qwen3-0.6b", "default", _HYBRID_OPEN, tiers=_flat(0.3, 1.2, 3)),
    # The 2507 and Next variants: instruct = non-thinking only, thinking = thinking only.
    _Current("qwen3-235b-a22b-instruct-2507", "none", (_PRICING,), tiers=_flat(2, 8)),
    _Current("qwen3-235b-a22b-thinking-2507", "only", (_PRICING,), tiers=_flat(2, 20, 20)),
    _Current("qwen3-30b-a3b-instruct-2507", "none", (_PRICING,), tiers=_flat(0.75, 3)),
    _Current("qwen3-30b-a3b-thinking-2507", "only", (_PRICING,), tiers=_flat(0.75, 7.5, 7.5)),
    _Current("qwen3-next-80b-a3b-instruct", "none", (_PRICING,), tiers=_flat(1, 4)),
    _Current("qwen3-next-80b-a3b-thinking", "only", (_PRICING,), tiers=_flat(1, 10, 10)),
    # qwen3-coder-plus: no CNY price was read. The only figures found are USD (a note citing the
    # English pricing page: $0.574/$2.294 up to 32K ...); CNY converted from them would be an
    # inference, not the page's price, so the model stays unpriced.
    _Current("qwen3-coder-plus", "none", ()),
    # Qwen3-VL takes `enable_thinking`; as commercial models they default to off (inferred from
    # the commercial default). Their CNY prices were not read.
    _Current("qwen3-vl-plus", "optional", (_CHAT_REFERENCE_ZH, _THINKING_DEFAULTS)),
    _Current("qwen3-vl-flash", "optional", (_CHAT_REFERENCE_ZH, _THINKING_DEFAULTS)),
]

# --- Family rules: one place deciding capabilities from a model id ----------------------------

_SIZE = re.compile(r"-\d+(?:\.\d+)?b(?:-|$)")  # a parameter count: "-7b-", "-0.5b-", "-72b"
_VERSIONED = r"^qwen[\d.]*-"  # "qwen-", "qwen2-", "qwen2.5-", "qwen3-"
_VL = re.compile(_VERSIONED + r"vl(?:-|$)")
_CODER = re.compile(_VERSIONED + r"coder(?:-|$)|^codeqwen")
_MATH = re.compile(_VERSIONED + r"math(?:-|$)")
_AUDIO = re.compile(_VERSIONED + r"audio(?:-|$)")
_COMMERCIAL = re.compile(r"^qwen-(?:max|plus|flash|turbo)(?:-|$)|^qwen3-max(?:-|$)")
_VERSION_SUFFIX = re.compile(r"-(?:latest|\d{4}-\d{2}-\d{2}|\d{4})$")
_THINKING_ONLY = re.compile(r"^q[wv]q|-thinking(?:-|$)")
# Commercial hybrids, thinking off by default ("False for commercial models"), with the version
# spellings of the same models.
_HYBRID_COMMERCIAL = re.compile(
    r"^(?:qwen-(?:plus|flash|turbo)|qwen3-max|qwen3-vl-(?:plus|flash))"
    r"(?:-preview|-latest|-\d{4}-\d{2}-\d{2})?$"
)


def _normalise(model: str) -> str:
    """Fold the proxy's "qwen/qwen-2.5-7b-instruct" spelling into DashScope's "qwen2.5-7b-..."."""
    name = model.strip().lower()
    name = name.removeprefix("qwen/")
    return re.sub(r"^qwen-(\d+(?:\.\d+)?)-", r"qwen\1-", name)


def _thinking_mode(n: str, open_source: bool) -> ThinkingMode:
    """Tell how a model thinks from its normalised id (the catalogue overrides snapshots)."""
    if _THINKING_ONLY.search(n):
        return "only"
    if _HYBRID_COMMERCIAL.match(n):
        return "optional"
    plain_qwen3 = not ("instruct" in n or _CODER.match(n) or _VL.match(n))
    if n.startswith("qwen3-") and open_source and plain_qwen3:
        return "default"
    return "none"


def _classify(model: str) -> ModelInfo | None:
    """Describe a model from its id alone: family, capabilities and thinking mode, no figures.

    Search follows the documents: the qwen-vl series, the open-source series and qwen-long do
    not take `enable_search`; the commercial qwen-max/plus/flash/turbo and qwen3-max do (001
    shows it on qwen-plus; the web-search page on qwen3-max); for the other commercial models
    the documents say nothing, hence None. Function calling is documented for the Qwen2.5 and
    Qwen3 chat models, Qwen3-Coder and Qwen3-VL.
    """
    n = _normalise(model)
    open_source = _SIZE.search(n) is not None
    qwen3 = n.startswith("qwen3-")

    def info(
        family: str,
        *,
        supports_tools: bool = False,
        supports_images: bool = False,
        supports_video: bool = False,
        supports_search: bool | None = None,
        is_translation: bool = False,
    ) -> ModelInfo:
        return ModelInfo(
            name=model,
            family=family,
            display_name=model,
            supports_tools=supports_tools,
            supports_images=supports_images,
            supports_video=supports_video,
            supports_search=supports_search,
            is_translation=is_translation,
            thinking=_thinking_mode(n, open_source),
        )

    if n.startswith("text-embedding"):
        return info("embedding", supports_search=False)
    if n.startswith("qvq"):
        return info("qwq/qvq reasoning", supports_images=True, supports_search=False)
    if n.startswith("qwq"):
        return info("qwq/qvq reasoning", supports_search=False if open_source else None)
    if n.startswith("qwen-mt"):
        return info("qwen-mt", is_translation=True)
    if _VL.match(n):
        # Video is documented for the VL chat models (002 examples 4 and 5), not for the OCR one.
        video = "ocr" not in n
        return info(
            "qwen-vl",
            supports_tools=qwen3,
            supports_images=True,
            supports_video=video,
            supports_search=False,
        )
    if n.startswith("qwen-long"):
        return info("qwen-long", supports_search=False)
    if _AUDIO.match(n):
        return info("qwen-audio", supports_search=False if open_source else None)
    if _CODER.match(n):
        search = False if open_source else None
        return info("qwen-coder", supports_tools=qwen3, supports_search=search)
    if _MATH.match(n):
        return info("qwen-math", supports_search=False if open_source else None)
    if n.startswith("farui"):
        return info("farui")
    if _COMMERCIAL.match(n):
        return info("qwen-commercial", supports_tools=True, supports_search=True)
    if re.match(_VERSIONED, n) and open_source:
        tools = n.startswith(("qwen2.5-", "qwen3-"))
        return info("qwen-open-source", supports_tools=tools, supports_search=False)
    return None


def _per_million(per_1k: str) -> float:
    """Convert a "per 1000 tokens" price to per 1M tokens, exactly (0.0115 → 11.5)."""
    return float(Decimal(per_1k) * 1000)


def _base(model_id: str) -> ModelInfo:
    """The family description of a catalogued id, which every one must have."""
    base = _classify(model_id)
    if base is None:  # pragma: no cover - every listed id matches a family rule
        raise AssertionError(f"no family rule for {model_id}")
    return base


def _build_reference() -> dict[str, ModelInfo]:
    """Merge the reference's four documents into one entry per model id."""
    names: dict[str, str] = {}
    proxy_price: dict[str, tuple[str, str]] = {}  # id -> (per-1K price, source)
    # Older list first, so the newer one overwrites names and prices it also gives.
    for rows, list_name in ((_WCODE_2024_12, "wcode-2024-12"), (_WCODE_2025_01, "wcode-2025-01")):
        for model_id, display, price in rows:
            names[model_id] = display
            proxy_price[model_id] = (price, list_name)
    documents = {"dashscope": _REF_002, "wcode-2024-12": _REF_000, "wcode-2025-01": _REF_001}

    order = list(_DASHSCOPE_LIMITS)
    order += [m for m, _, _ in _WCODE_2025_01 if m not in order]
    order += [m for m, _, _ in _WCODE_2024_12 if m not in order]

    catalogue: dict[str, ModelInfo] = {}
    for model_id in order:
        context, max_output = _DASHSCOPE_LIMITS.get(model_id, (None, None))
        input_price: float | None = None
        output_price: float | None = None
        source: str | None = None
        if model_id in _DASHSCOPE_PRICES:
            in_p, out_p = _DASHSCOPE_PRICES[model_id]
            input_price, output_price, source = float(in_p), float(out_p), "dashscope"
        elif model_id in proxy_price:
            per_1k, source = proxy_price[model_id]
            input_price = output_price = _per_million(per_1k)
        sources = [documents[source]] if source else []
        if model_id in _DASHSCOPE_LIMITS and _REF_002 not in sources:
            sources.append(_REF_002)
        catalogue[model_id] = dataclasses.replace(
            _base(model_id),
            display_name=names.get(model_id, model_id),
            context_tokens=context,
            max_output_tokens=max_output,
            input_price=input_price,
            output_price=output_price,
            price_source=source,
            sources=tuple(sources),
        )
    catalogue[_WCODE_MODEL_PAGE.name] = _WCODE_MODEL_PAGE
    return catalogue


def _build() -> dict[str, ModelInfo]:
    """The reference's entries, then the current pages' entries replacing or adding to them."""
    catalogue = _build_reference()
    for current in _MODEL_STUDIO:
        old = catalogue.get(current.name)
        catalogue[current.name] = dataclasses.replace(
            _base(current.name),
            # The proxy's Chinese name still names the model; none of its figures survive.
            display_name=old.display_name if old else current.name,
            context_tokens=current.context_tokens,
            max_output_tokens=current.max_output_tokens,
            price_source="model-studio" if current.tiers else None,
            thinking=current.thinking,
            max_thinking_tokens=current.max_thinking_tokens,
            price_tiers=current.tiers,
            cache_hit_ratio=current.cache_hit_ratio,
            sources=current.sources,
        )
    return catalogue


_CATALOGUE: dict[str, ModelInfo] = _build()


def all_models() -> list[ModelInfo]:
    """Return every catalogued model, one entry each."""
    return list(_CATALOGUE.values())


def lookup(model: str) -> ModelInfo | None:
    """Describe a model: by exact id, then as a version of a catalogued model, then by family.

    "qwen-plus-latest" and "qwen-plus-2025-12-01" resolve to qwen-plus, "qwen3-max-2026-01-23"
    to qwen3-max (with `alias_of` set and the base model's figures); a snapshot catalogued on
    its own ("qwen3-max-2025-09-23") keeps its own entry. An id no list names but whose family
    is clear, such as "qwen2.5-vl-32b-instruct" or "qwen/qwen-2.5-72b-instruct", gets the
    family's capabilities and no figures.

    Args:
        model: The model id, as sent in a request (case and surrounding spaces ignored).

    Returns:
        The model's description, or None when nothing about the id is recognised.
    """
    key = model.strip().lower()
    if key in _CATALOGUE:
        return _CATALOGUE[key]
    # Only DashScope-style ids are versions of catalogued models: the proxy's "qwen/..." routes
    # are priced apart (003), so they get family capabilities and no figures.
    stripped = key
    while (shorter := _VERSION_SUFFIX.sub("", stripped)) != stripped:
        stripped = shorter
        if stripped in _CATALOGUE:
            return dataclasses.replace(_CATALOGUE[stripped], name=model, alias_of=stripped)
    return _classify(model)


def supports_search(model: str) -> bool | None:
    """Tell whether a model accepts `enable_search`.

    Args:
        model: The model id.

    Returns:
        True or False where the documents decide it; None when the model is unknown or the
        documents are silent about it, leaving the decision to the caller.
    """
    info = lookup(model)
    return None if info is None else info.supports_search


def has_price(model: str) -> bool:
    """Tell whether the catalogue prices a model, so that `turn_cost` gives a figure.

    Args:
        model: The model id (a version name counts as its base model).
    """
    info = lookup(model)
    return info is not None and bool(info.price_tiers)


def _check_counts(**counts: int) -> None:
    """Refuse negative token counts, naming them all."""
    if any(n < 0 for n in counts.values()):
        shown = ", ".join(f"{name}={n}" for name, n in counts.items())
        raise UserError(f"token counts must not be negative ({shown})")


def cost(model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
    """Price a request in CNY from its token counts, at the first price tier and without cache.

    Use `turn_cost` for the exact price of one request: its tier, cache hits and thinking.

    Args:
        model: The model id.
        prompt_tokens: Tokens sent.
        completion_tokens: Tokens generated.

    Returns:
        The cost in CNY, or None when the model or its price is unknown.

    Raises:
        UserError: A token count is negative.
    """
    _check_counts(prompt=prompt_tokens, completion=completion_tokens)
    info = lookup(model)
    if info is None or info.input_price is None or info.output_price is None:
        return None
    return (prompt_tokens * info.input_price + completion_tokens * info.output_price) / 1_000_000


def turn_cost(model: str, usage: Usage, *, thinking: bool = False) -> float | None:
    """Price one request in CNY from its usage, as Model Studio bills it.

    1. The price tier is the first whose bound the request's prompt tokens do not exceed; the
       whole request is billed at it.
    2. Prompt tokens served from the cache cost `cache_hit_ratio` of the input price when the
       model is cache-discounted, the full input price otherwise.
    3. Completion tokens cost the tier's thinking output price when the request thought
       (`thinking`, or the usage reports reasoning tokens) and the tier has one; otherwise its
       output price.

    Args:
        model: The model id.
        usage: The usage of the single request (not a run's sum: tiers apply per request).
        thinking: Thinking was enabled for the request.

    Returns:
        The cost in CNY, or None when the model or its price is unknown.

    Raises:
        UserError: A token count in `usage` is negative.
    """
    _check_counts(
        prompt=usage.prompt_tokens,
        completion=usage.completion_tokens,
        cached=usage.cached_prompt_tokens,
        reasoning=usage.reasoning_tokens,
    )
    info = lookup(model)
    if info is None or not info.price_tiers:
        return None
    tier = next(
        t
        for t in info.price_tiers
        if t.max_input_tokens is None or usage.prompt_tokens <= t.max_input_tokens
    )
    cached = min(usage.cached_prompt_tokens, usage.prompt_tokens)
    ratio = 1.0 if info.cache_hit_ratio is None else info.cache_hit_ratio
    prompt_cost = (usage.prompt_tokens - cached) * tier.input + cached * tier.input * ratio
    output_price = tier.output
    if (thinking or usage.reasoning_tokens > 0) and tier.thinking_output is not None:
        output_price = tier.thinking_output
    return (prompt_cost + usage.completion_tokens * output_price) / 1_000_000
