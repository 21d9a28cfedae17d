"""The Qwen model catalogue: limits, prices and capabilities of every model the reference names.

Also the service's rate-limit tiers and the meaning of its HTTP status codes, for error hints.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from types import MappingProxyType

from agent.errors import UserError

__all__ = [
    "FREE_TIER",
    "NEW_USER_FREE_TOKENS",
    "PAID_TIER",
    "RATE_LIMIT_TIERS",
    "STATUS_HINTS",
    "ModelInfo",
    "RateLimitTier",
    "all_models",
    "cost",
    "lookup",
    "status_hint",
    "supports_search",
]


@dataclass(frozen=True)
class ModelInfo:
    """What the reference says about one model.

    Figures come from the reference only; where it gives none the field is None. Context and
    output limits read the reference's "128K" / "1M" decimally (128,000 / 1,000,000), which errs
    low when used to clamp `max_tokens`.

    Prices are CNY per 1M tokens. For the models DashScope's own page prices (qwen-max, qwen-plus,
    qwen-turbo, qwen-long) those input/output prices are used, since they are the provider's list
    prices; otherwise the wcode.net proxy's single "per 1000 tokens" price is multiplied by 1000
    and applies to input and output alike, taken from its newer (2025-01) list where both lists
    price a model.

    Attributes:
        name: The model id as sent in `model`.
        family: A coarse family: "qwen-commercial", "qwen-open-source", "qwen-vl", "qwen-long",
            "qwen-mt", "qwq/qvq reasoning", "qwen-coder", "qwen-math", "qwen-audio",
            "embedding" or "farui".
        display_name: The Chinese name from the proxy's model list (the model id where the
            reference gives no name).
        context_tokens: The context window, where the reference gives one.
        max_output_tokens: The longest reply, where the reference gives one.
        input_price: CNY per 1M prompt tokens, or None.
        output_price: CNY per 1M completion tokens, or None.
        price_source: "dashscope", "wcode-2024-12", "wcode-2025-01" or "wcode-model-page"
            (the proxy's page for that one model), or None without a price.
        supports_tools: Function calling is documented for it.
        supports_images: It accepts image parts.
        supports_video: It accepts video parts.
        supports_search: Whether `enable_search` is accepted: True, False (the reference
            excludes it), or None (the reference neither shows nor excludes it).
        supports_reasoning: It returns `reasoning_content` (QwQ, QvQ).
        is_translation: A qwen-mt model, driven by `translation_options`.
        supports_json_schema: `response_format` with a `json_schema` (structured outputs).
        alias_of: For a version name resolved to a catalogued model ("qwen-plus-latest"), that
            model's id; its figures are the base model's.
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
    supports_reasoning: bool = False
    is_translation: bool = False
    supports_json_schema: bool = False
    alias_of: str | None = None


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


# --- The reference's figures, transcribed as written -------------------------------------------

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

# 002: DashScope's prices, CNY per 1M tokens (input, output).
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
    supports_tools=True,
    supports_search=False,
    # The page lists `response_format` json_object and `structured_outputs` (json_schema).
    supports_json_schema=True,
)

# --- Family rules: one place deciding capabilities from a model id ----------------------------

_SIZE = re.compile(r"-\d+(?:\.\d+)?b(?:-|$)")  # a parameter count: "-7b-", "-0.5b-", "-72b"
_VERSIONED = r"^qwen[\d.]*-"  # "qwen-", "qwen2-", "qwen2.5-"
_VL = re.compile(_VERSIONED + r"vl(?:-|$)")
_CODER = re.compile(_VERSIONED + r"coder(?:-|$)|^codeqwen")
_MATH = re.compile(_VERSIONED + r"math(?:-|$)")
_AUDIO = re.compile(_VERSIONED + r"audio(?:-|$)")
_COMMERCIAL = re.compile(r"^qwen-(?:max|plus|turbo)(?:-|$)")
_VERSION_SUFFIX = re.compile(r"-(?:latest|\d{4}-\d{2}-\d{2}|\d{4})$")


def _normalise(model: str) -> str:
    """Fold the proxy's "qwen/qwen-2.5-7b-instruct" spelling into DashScope's "qwen2.5-7b-..."."""
    name = model.strip().lower()
    name = name.removeprefix("qwen/")
    return re.sub(r"^qwen-(\d+(?:\.\d+)?)-", r"qwen\1-", name)


def _classify(model: str) -> ModelInfo | None:
    """Describe a model from its id alone: family and capabilities, no figures.

    Search follows the reference: the qwen-vl series, the open-source series and qwen-long do
    not take `enable_search`; the commercial qwen-max/plus/turbo do (001 shows it on qwen-plus);
    for the other commercial models the reference says nothing, hence None.
    """
    n = _normalise(model)
    open_source = _SIZE.search(n) is not None

    def info(
        family: str,
        *,
        supports_tools: bool = False,
        supports_images: bool = False,
        supports_video: bool = False,
        supports_search: bool | None = None,
        supports_reasoning: bool = False,
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
            supports_reasoning=supports_reasoning,
            is_translation=is_translation,
        )

    if n.startswith("text-embedding"):
        return info("embedding", supports_search=False)
    if n.startswith("qvq"):
        return info(
            "qwq/qvq reasoning",
            supports_reasoning=True,
            supports_images=True,
            supports_search=False,
        )
    if n.startswith("qwq"):
        return info(
            "qwq/qvq reasoning",
            supports_reasoning=True,
            supports_search=False if open_source else None,
        )
    if n.startswith("qwen-mt"):
        return info("qwen-mt", is_translation=True)
    if _VL.match(n):
        # Video is documented for the VL chat models (002 examples 4 and 5), not for the OCR one.
        return info(
            "qwen-vl", supports_images=True, supports_video="ocr" not in n, supports_search=False
        )
    if n.startswith("qwen-long"):
        return info("qwen-long", supports_search=False)
    if _AUDIO.match(n):
        return info("qwen-audio", supports_search=False if open_source else None)
    if _CODER.match(n):
        return info("qwen-coder", supports_search=False if open_source else None)
    if _MATH.match(n):
        return info("qwen-math", supports_search=False if open_source else None)
    if n.startswith("farui"):
        return info("farui")
    if _COMMERCIAL.match(n):
        return info("qwen-commercial", supports_tools=True, supports_search=True)
    if re.match(_VERSIONED, n) and open_source:
        # DashScope documents function calling for the Qwen2.5 open-source chat models.
        return info(
            "qwen-open-source", supports_tools=n.startswith("qwen2.5-"), supports_search=False
        )
    return None


def _per_million(per_1k: str) -> float:
    """Convert a "per 1000 tokens" price to per 1M tokens, exactly (0.0115 → 11.5)."""
    return float(Decimal(per_1k) * 1000)


def _build() -> dict[str, ModelInfo]:
    """Merge the four documents into one entry per model id."""
    names: dict[str, str] = {}
    proxy_price: dict[str, tuple[str, str]] = {}  # id -> (per-1K price, source)
    # Older list first, so the newer one overwrites names and prices it also gives.
    for rows, list_name in ((_WCODE_2024_12, "wcode-2024-12"), (_WCODE_2025_01, "wcode-2025-01")):
        for model_id, display, price in rows:
            names[model_id] = display
            proxy_price[model_id] = (price, list_name)

    order = list(_DASHSCOPE_LIMITS)
    order += [m for m, _, _ in _WCODE_2025_01 if m not in order]
    order += [m for m, _, _ in _WCODE_2024_12 if m not in order]

    catalogue: dict[str, ModelInfo] = {}
    for model_id in order:
        base = _classify(model_id)
        if base is None:  # pragma: no cover - every listed id matches a family rule
            raise AssertionError(f"no family rule for {model_id}")
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
        catalogue[model_id] = dataclasses.replace(
            base,
            display_name=names.get(model_id, model_id),
            context_tokens=context,
            max_output_tokens=max_output,
            input_price=input_price,
            output_price=output_price,
            price_source=source,
        )
    catalogue[_WCODE_MODEL_PAGE.name] = _WCODE_MODEL_PAGE
    return catalogue


_CATALOGUE: dict[str, ModelInfo] = _build()


def all_models() -> list[ModelInfo]:
    """Return every model the reference names, one entry each."""
    return list(_CATALOGUE.values())


def lookup(model: str) -> ModelInfo | None:
    """Describe a model: by exact id, then as a version of a catalogued model, then by family.

    "qwen-plus-latest" and "qwen-plus-2025-01-25" resolve to qwen-plus (with `alias_of` set and
    qwen-plus's figures); an id no list names but whose family is clear, such as
    "qwen2.5-vl-32b-instruct" or "qwen/qwen-2.5-72b-instruct", gets the family's capabilities
    and no figures.

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
        True or False where the reference decides it; None when the model is unknown or the
        reference is silent about it, leaving the decision to the caller.
    """
    info = lookup(model)
    return None if info is None else info.supports_search


def cost(model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
    """Price a request in CNY from its token counts.

    Args:
        model: The model id.
        prompt_tokens: Tokens sent.
        completion_tokens: Tokens generated.

    Returns:
        The cost in CNY, or None when the model or its price is unknown.

    Raises:
        UserError: A token count is negative.
    """
    if prompt_tokens < 0 or completion_tokens < 0:
        raise UserError(
            f"token counts must not be negative (prompt={prompt_tokens}, "
            f"completion={completion_tokens})"
        )
    info = lookup(model)
    if info is None or info.input_price is None or info.output_price is None:
        return None
    return (prompt_tokens * info.input_price + completion_tokens * info.output_price) / 1_000_000
