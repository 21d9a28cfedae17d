import dataclasses

import pytest

from agent.catalog import (
    FREE_TIER,
    PAID_TIER,
    RATE_LIMIT_TIERS,
    STATUS_HINTS,
    ModelInfo,
    all_models,
    cost,
    lookup,
    status_hint,
    supports_search,
)
from agent.errors import UserError


def _get(name: str) -> ModelInfo:
    info = lookup(name)
    assert info is not None, name
    return info


# --- Figures straight from the reference --------------------------------------------------------


def test_qwen_max_dashscope_prices_and_limits():
    info = _get("qwen-max")
    assert (info.input_price, info.output_price) == (20.0, 60.0)
    assert info.price_source == "dashscope"
    assert (info.context_tokens, info.max_output_tokens) == (128_000, 8_000)
    assert info.display_name == "通义千问-Max"


def test_qwen_plus_limits_and_prices():
    info = _get("qwen-plus")
    assert (info.context_tokens, info.max_output_tokens) == (128_000, 8_000)
    # DashScope's prices win over the proxy's 0.0025/1K for a model 002 prices.
    assert (info.input_price, info.output_price) == (4.0, 12.0)


def test_qwen_long_context_and_prices():
    info = _get("qwen-long")
    assert info.context_tokens == 1_000_000
    assert info.max_output_tokens == 6_000
    assert (info.input_price, info.output_price) == (0.5, 2.0)


def test_qvq_price_from_proxy_per_1k():
    info = _get("qvq-72b-preview")
    assert info.input_price == info.output_price == 46.0
    assert info.price_source == "wcode-2025-01"
    assert info.supports_reasoning and info.supports_images


def test_newer_proxy_list_wins():
    # 000 lists qwen-mt-turbo at 0.0385/1K, 001 at 0.004/1K.
    info = _get("qwen-mt-turbo")
    assert info.input_price == info.output_price == 4.0
    assert info.price_source == "wcode-2025-01"
    assert info.is_translation


def test_model_only_in_older_list_keeps_its_source():
    info = _get("qwen-72b-chat")
    assert info.input_price == 25.5
    assert info.price_source == "wcode-2024-12"


def test_model_page_entry():
    info = _get("qwen/qwen-2.5-7b-instruct")
    assert info.context_tokens == 64_000
    assert (info.input_price, info.output_price) == (0.6, 1.5)
    assert info.supports_json_schema and info.supports_tools
    assert info.max_output_tokens is None


def test_no_invented_figures():
    audio = _get("qwen-audio-turbo")
    assert (audio.context_tokens, audio.max_output_tokens) == (8_000, 2_000)
    assert audio.input_price is None and audio.price_source is None
    embedding = _get("text-embedding-v3")
    assert embedding.family == "embedding"
    assert embedding.max_output_tokens is None
    assert embedding.input_price == 0.9
    # Proxy-only models: no limits in the reference.
    assert _get("qwen2.5-14b-instruct").context_tokens is None


def test_every_model_in_the_documents_is_catalogued():
    names = {m.name for m in all_models()}
    for expected in [
        "qwen-max", "qwen-plus", "qwen-turbo", "qwen-long", "qwen-vl-max", "qwen-vl-plus",
        "qwen2.5-coder-32b", "qwen-audio-turbo", "text-embedding-v3", "qwen2.5-vl-3b-instruct",
        "qwen2.5-14b-instruct-1m", "qwen-vl-max-latest", "qwen2-vl-7b-instruct", "qwen-14b-chat",
        "farui-plus", "qwen/qwen-2.5-7b-instruct", "qwq-32b-preview", "qwen-mt-plus",
    ]:  # fmt: skip
        assert expected in names
    assert len(names) == len(all_models()) == 50


def test_only_documented_models_claim_json_schema():
    assert [m.name for m in all_models() if m.supports_json_schema] == ["qwen/qwen-2.5-7b-instruct"]


# --- Search support per family -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("qwen-plus", True),
        ("qwen-max", True),
        ("qwen-turbo", True),
        ("qwen-vl-max", False),
        ("qwen-vl-ocr", False),
        ("qwen2.5-vl-72b-instruct", False),
        ("qwen2.5-14b-instruct", False),
        ("qwen1.5-7b-chat", False),
        ("qwen-72b-chat", False),
        ("qwen-long", False),
        ("qwq-32b-preview", False),
        ("qwen-coder-plus", None),  # commercial but unmentioned: the caller decides
        ("qwen-mt-turbo", None),
    ],
)
def test_search_support(model, expected):
    assert supports_search(model) is expected


def test_search_unknown_model_is_none():
    assert supports_search("gpt-4o") is None


# --- Versions and families of unlisted ids -------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "base"),
    [
        ("qwen-plus-latest", "qwen-plus"),
        ("qwen-plus-2025-01-25", "qwen-plus"),
        ("qwen-max-0428", "qwen-max"),
        ("qwen-vl-max-2024-11-19", "qwen-vl-max"),
    ],
)
def test_versions_resolve_to_their_base(model, base):
    info = _get(model)
    assert info.name == model
    assert info.alias_of == base
    assert dataclasses.replace(info, name=base, alias_of=None) == _get(base)


def test_exact_entry_beats_version_rule():
    info = _get("qwen-vl-max-latest")
    assert info.alias_of is None
    assert info.display_name == "通义千问VL-Max-Latest"
    assert info.supports_video and info.supports_search is False


def test_family_rule_for_unlisted_vl_model():
    info = _get("qwen2.5-vl-32b-instruct")
    assert info.family == "qwen-vl"
    assert info.supports_images and info.supports_search is False
    assert info.input_price is None and info.context_tokens is None
    assert cost("qwen2.5-vl-32b-instruct", 10, 10) is None


def test_proxy_route_names_are_not_priced_as_dashscope_models():
    info = _get("qwen/qwen-2.5-72b-instruct")
    assert info.family == "qwen-open-source"
    assert info.supports_search is False
    assert info.input_price is None


def test_lookup_ignores_case_and_spaces():
    assert _get("  QWEN-Max ").name == "qwen-max"


@pytest.mark.parametrize("model", ["gpt-4o", "qwen3-max", "", "deepseek-r1"])
def test_unknown_models(model):
    assert lookup(model) is None
    assert cost(model, 1000, 1000) is None


# --- Cost arithmetic -----------------------------------------------------------------------------


def test_cost_uses_separate_input_and_output_prices():
    # 1M prompt tokens at ¥20 + 500k completion tokens at ¥60.
    assert cost("qwen-max", 1_000_000, 500_000) == pytest.approx(50.0)
    assert cost("qwen-plus", 2_000, 1_000) == pytest.approx(0.008 + 0.012)


def test_cost_with_single_proxy_price():
    assert cost("qvq-72b-preview", 1_000, 1_000) == pytest.approx(0.092)
    assert cost("qwen-mt-turbo", 250, 750) == pytest.approx(0.004)


def test_cost_of_a_version_uses_the_base_price():
    assert cost("qwen-turbo-latest", 1_000_000, 1_000_000) == pytest.approx(4.0)


def test_cost_zero_tokens_and_negative_counts():
    assert cost("qwen-max", 0, 0) == 0.0
    with pytest.raises(UserError, match="negative"):
        cost("qwen-max", -1, 0)


def test_cost_unpriced_model():
    assert cost("qwen-audio-turbo", 100, 100) is None


# --- Rate limits and status hints ----------------------------------------------------------------


def test_rate_limit_tiers():
    assert (FREE_TIER.rpm, FREE_TIER.tpm) == (60, 60_000)
    assert (PAID_TIER.rpm, PAID_TIER.tpm) == (300, 300_000)
    assert RATE_LIMIT_TIERS["paid"] is PAID_TIER


def test_status_hints():
    assert set(STATUS_HINTS) == {400, 401, 429, 500}
    assert "key" in STATUS_HINTS[401]
    assert "retry" in STATUS_HINTS[429]
    assert status_hint(503) == STATUS_HINTS[500]
    assert status_hint(404) is None
