import dataclasses

import pytest

from agent.catalog import (
    FREE_TIER,
    PAID_TIER,
    RATE_LIMIT_TIERS,
    STATUS_HINTS,
    ModelInfo,
    PriceTier,
    all_models,
    cost,
    has_price,
    lookup,
    status_hint,
    supports_search,
    turn_cost,
)
from agent.errors import UserError
from agent.messages import Usage

PRICING = "https://help.aliyun.com/zh/model-studio/model-pricing"


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
    # The current pricing page replaces the reference's 4/12 and 128K/8K (limits: secondary).
    info = _get("qwen-plus")
    assert (info.context_tokens, info.max_output_tokens) == (1_000_000, 32_768)
    assert (info.input_price, info.output_price) == (0.8, 2.0)
    assert info.price_source == "model-studio"
    assert info.display_name == "通义千问-Plus"
    assert info.price_tiers == (
        PriceTier(131_072, 0.8, 2, 8),
        PriceTier(262_144, 2.4, 20, 24),
        PriceTier(None, 4.8, 48, 64),
    )
    assert info.cache_hit_ratio is None  # not marked cache-discounted in Beijing


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
        # The current Model Studio pages.
        "qwen3-max", "qwen3-max-2025-09-23", "qwen-flash", "qwq-plus", "qwen3-235b-a22b",
        "qwen3-32b", "qwen3-30b-a3b", "qwen3-14b", "qwen3-8b", "qwen3-4b", "qwen3-1.7b",
        "qwen3-0.6b", "qwen3-235b-a22b-instruct-2507", "qwen3-235b-a22b-thinking-2507",
        "qwen3-30b-a3b-instruct-2507", "qwen3-30b-a3b-thinking-2507",
        "qwen3-next-80b-a3b-instruct", "qwen3-next-80b-a3b-thinking", "qwen3-coder-plus",
        "qwen3-vl-plus", "qwen3-vl-flash",
    ]:  # fmt: skip
        assert expected in names
    assert len(names) == len(all_models()) == 71


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
        ("qwen3-max", True),
        ("qwen3-max-2026-01-23", True),
        ("qwen-flash", True),
        ("qwen3-32b", False),
        ("qwen3-next-80b-a3b-thinking", False),
        ("qwen3-vl-plus", False),
        ("qwen3-coder-plus", None),
        ("qwq-plus", None),
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
        ("qwen-plus-2025-12-01", "qwen-plus"),
        ("qwen3-max-latest", "qwen3-max"),
        ("qwen3-max-2026-01-23", "qwen3-max"),
        ("qwen-flash-2025-07-28", "qwen-flash"),
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


@pytest.mark.parametrize("model", ["gpt-4o", "", "deepseek-r1"])
def test_unknown_models(model):
    assert lookup(model) is None
    assert cost(model, 1000, 1000) is None
    assert turn_cost(model, Usage(prompt_tokens=1000, completion_tokens=1000)) is None
    assert not has_price(model)


# --- Cost arithmetic -----------------------------------------------------------------------------


def test_cost_uses_separate_input_and_output_prices():
    # 1M prompt tokens at ¥20 + 500k completion tokens at ¥60.
    assert cost("qwen-max", 1_000_000, 500_000) == pytest.approx(50.0)
    assert cost("qwen-plus", 2_000, 1_000) == pytest.approx(0.0016 + 0.002)


def test_cost_with_single_proxy_price():
    assert cost("qvq-72b-preview", 1_000, 1_000) == pytest.approx(0.092)
    assert cost("qwen-mt-turbo", 250, 750) == pytest.approx(0.004)


def test_cost_of_a_version_uses_the_base_price():
    assert cost("qwen-turbo-latest", 1_000_000, 1_000_000) == pytest.approx(0.3 + 0.6)


def test_cost_zero_tokens_and_negative_counts():
    assert cost("qwen-max", 0, 0) == 0.0
    with pytest.raises(UserError, match="negative"):
        cost("qwen-max", -1, 0)


def test_cost_unpriced_model():
    assert cost("qwen-audio-turbo", 100, 100) is None


# --- Current Model Studio figures: Qwen3, thinking, tiers, cache --------------------------------


def test_qwen3_max_tiers_limits_and_thinking():
    info = _get("qwen3-max")
    assert info.family == "qwen-commercial"
    assert (info.context_tokens, info.max_output_tokens) == (262_144, 65_536)
    assert info.max_thinking_tokens == 81_920
    assert info.thinking == "optional" and info.supports_reasoning
    assert info.price_tiers == (
        PriceTier(32_768, 2.5, 10, 10),
        PriceTier(131_072, 4, 16, 16),
        PriceTier(None, 7, 28, 28),
    )
    assert (info.input_price, info.output_price) == (2.5, 10.0)
    assert info.cache_hit_ratio == 0.2
    assert PRICING in info.sources


def test_qwen3_max_september_snapshot_is_its_own_entry():
    info = _get("qwen3-max-2025-09-23")
    assert info.alias_of is None
    assert info.thinking == "none" and not info.supports_reasoning
    assert [(t.input, t.output, t.thinking_output) for t in info.price_tiers] == [
        (6, 24, None),
        (10, 40, None),
        (15, 60, None),
    ]


@pytest.mark.parametrize(
    ("model", "prices"),
    [
        ("qwen-flash", (0.15, 1.5, 1.5)),
        ("qwen-turbo", (0.3, 0.6, 3)),
        ("qwq-plus", (1.6, 4, 4)),
        ("qwen3-235b-a22b", (2, 8, 20)),
        ("qwen3-32b", (2, 8, 20)),
        ("qwen3-30b-a3b", (0.75, 3, 7.5)),
        ("qwen3-14b", (1, 4, 10)),
        ("qwen3-8b", (0.5, 2, 5)),
        ("qwen3-4b", (0.3, 1.2, 3)),
        ("qwen3-1.7b", (0.3, 1.2, 3)),
        ("qwen3-0.6b", (0.3, 1.2, 3)),
        ("qwen3-235b-a22b-instruct-2507", (2, 8, None)),
        ("qwen3-235b-a22b-thinking-2507", (2, 20, 20)),
        ("qwen3-30b-a3b-instruct-2507", (0.75, 3, None)),
        ("qwen3-30b-a3b-thinking-2507", (0.75, 7.5, 7.5)),
        ("qwen3-next-80b-a3b-instruct", (1, 4, None)),
        ("qwen3-next-80b-a3b-thinking", (1, 10, 10)),
    ],
)
def test_current_first_tier_prices(model, prices):
    info = _get(model)
    first = info.price_tiers[0]
    assert (first.input, first.output, first.thinking_output) == prices
    assert info.price_source == "model-studio"


@pytest.mark.parametrize(
    ("model", "thinking"),
    [
        ("qwen-plus", "optional"),
        ("qwen-flash", "optional"),
        ("qwen-turbo", "optional"),
        ("qwen3-max", "optional"),
        ("qwen3-max-preview", "optional"),
        ("qwen3-vl-plus", "optional"),
        ("qwen3-0.6b", "default"),
        ("qwen3-32b", "default"),
        ("qwen3-235b-a22b", "default"),
        ("qwq-plus", "only"),
        ("qwq-32b-preview", "only"),
        ("qvq-72b-preview", "only"),
        ("qwen3-235b-a22b-thinking-2507", "only"),
        ("qwen3-30b-a3b-thinking-2507", "only"),
        ("qwen3-next-80b-a3b-thinking", "only"),
        ("qwen3-235b-a22b-instruct-2507", "none"),
        ("qwen3-next-80b-a3b-instruct", "none"),
        ("qwen3-max-2025-09-23", "none"),
        ("qwen3-coder-plus", "none"),
        ("qwen-max", "none"),
        ("qwen2.5-72b-instruct", "none"),
        ("qwen-vl-max", "none"),
    ],
)
def test_thinking_modes(model, thinking):
    info = _get(model)
    assert info.thinking == thinking
    assert info.supports_reasoning is (thinking != "none")


def test_supports_reasoning_always_follows_thinking():
    for info in all_models():
        assert info.supports_reasoning is (info.thinking != "none"), info.name


def test_thinking_only_models_have_one_output_price():
    for info in all_models():
        if info.thinking == "only" and info.price_source == "model-studio":
            assert all(t.output == t.thinking_output for t in info.price_tiers), info.name


@pytest.mark.parametrize(
    ("model", "family", "images"),
    [
        ("qwen3-32b", "qwen-open-source", False),
        ("qwen3-235b-a22b-thinking-2507", "qwen-open-source", False),
        ("qwen3-coder-plus", "qwen-coder", False),
        ("qwen3-vl-plus", "qwen-vl", True),
        ("qwen3-vl-flash", "qwen-vl", True),
        ("qwen3-max-preview", "qwen-commercial", False),
        ("qwen3-max-2026-01-23", "qwen-commercial", False),
        ("qwen-plus-2025-12-01", "qwen-commercial", False),
        ("qwen-flash", "qwen-commercial", False),
        ("qwen3-8b-unlisted-variant", "qwen-open-source", False),  # by family rule only
    ],
)
def test_qwen3_ids_are_classified_with_tools(model, family, images):
    info = _get(model)
    assert info.family == family
    assert info.supports_tools
    assert info.supports_images is images
    assert info.supports_video is images


def test_models_without_a_confirmed_price_stay_unpriced():
    # qwen3-coder-plus's CNY figures would be converted from USD; the VL prices were not read.
    for model in ["qwen3-coder-plus", "qwen3-vl-plus", "qwen3-vl-flash", "qwen3-max-preview"]:
        info = _get(model)
        assert info.price_tiers == () and info.input_price is None and info.price_source is None
        assert not has_price(model)
        assert turn_cost(model, Usage(prompt_tokens=10, completion_tokens=10)) is None


def test_every_priced_entry_cites_its_source():
    priced = [m for m in all_models() if m.price_tiers]
    assert len(priced) > 60
    for info in priced:
        assert info.sources, info.name
        if info.price_source == "model-studio":
            assert PRICING in info.sources, info.name
            assert all(s.startswith("https://") for s in info.sources), info.name
        else:
            # The 2024-25 reference carries no page URLs: its document is named instead.
            assert any(s.startswith("qwen-api/") for s in info.sources), info.name


def test_flat_price_is_one_unbounded_tier():
    assert _get("qwen-max").price_tiers == (PriceTier(None, 20.0, 60.0),)
    assert _get("qvq-72b-preview").price_tiers == (PriceTier(None, 46.0, 46.0),)
    assert _get("qwen-audio-turbo").price_tiers == ()


def test_model_info_refuses_contradictory_prices():
    with pytest.raises(ValueError, match="first tier"):
        ModelInfo(
            "m", "f", "m", input_price=1, output_price=2, price_tiers=(PriceTier(None, 3, 4),)
        )
    with pytest.raises(ValueError, match="tiers"):
        ModelInfo("m", "f", "m", price_tiers=(PriceTier(10, 1, 1), PriceTier(5, 2, 2)))
    with pytest.raises(ValueError, match="tiers"):
        ModelInfo("m", "f", "m", price_tiers=(PriceTier(10, 1, 1),))
    info = ModelInfo("m", "f", "m", price_tiers=(PriceTier(10, 1, 2), PriceTier(None, 3, 4)))
    assert (info.input_price, info.output_price) == (1, 2)


# --- has_price and turn_cost ---------------------------------------------------------------------


def test_has_price():
    assert has_price("qwen3-max")
    assert has_price("qwen3-max-latest")
    assert has_price("qwen-max")
    assert not has_price("qwen-audio-turbo")
    assert not has_price("gpt-4o")


@pytest.mark.parametrize(
    ("prompt", "input_price", "output_price"),
    [
        (0, 2.5, 10),
        (32_768, 2.5, 10),  # exactly 32K: still the first tier
        (32_769, 4, 16),
        (131_072, 4, 16),  # exactly 128K
        (131_073, 7, 28),
        (258_048, 7, 28),
    ],
)
def test_qwen3_max_tier_boundaries(prompt, input_price, output_price):
    usage = Usage(prompt_tokens=prompt, completion_tokens=1_000)
    expected = (prompt * input_price + 1_000 * output_price) / 1_000_000
    assert turn_cost("qwen3-max", usage) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("prompt", "tier"),
    [
        (131_072, (0.8, 2, 8)),
        (131_073, (2.4, 20, 24)),
        (262_144, (2.4, 20, 24)),
        (262_145, (4.8, 48, 64)),
    ],
)
def test_qwen_plus_tier_boundaries_and_thinking_price(prompt, tier):
    input_price, output_price, thinking_price = tier
    usage = Usage(prompt_tokens=prompt, completion_tokens=2_000)
    plain = (prompt * input_price + 2_000 * output_price) / 1_000_000
    thought = (prompt * input_price + 2_000 * thinking_price) / 1_000_000
    assert turn_cost("qwen-plus", usage) == pytest.approx(plain)
    assert turn_cost("qwen-plus", usage, thinking=True) == pytest.approx(thought)


def test_reasoning_tokens_imply_the_thinking_price():
    usage = Usage(prompt_tokens=1_000_000, completion_tokens=1_000_000, reasoning_tokens=10)
    assert turn_cost("qwen-turbo", usage) == pytest.approx(0.3 + 3)
    assert turn_cost("qwen-turbo", usage, thinking=False) == pytest.approx(3.3)
    quiet = Usage(prompt_tokens=1_000_000, completion_tokens=1_000_000)
    assert turn_cost("qwen-turbo", quiet) == pytest.approx(0.3 + 0.6)


def test_thinking_flag_on_a_model_without_a_thinking_price():
    usage = Usage(prompt_tokens=1_000_000, completion_tokens=1_000_000)
    assert turn_cost("qwen3-235b-a22b-instruct-2507", usage, thinking=True) == pytest.approx(10)
    assert turn_cost("qwen-max", usage, thinking=True) == pytest.approx(80)


def test_cache_discount_for_cache_discounted_models():
    # 100k prompt tokens, 60k of them from the implicit cache at 20% of ¥2.5.
    usage = Usage(prompt_tokens=100_000, completion_tokens=0, cached_prompt_tokens=60_000)
    expected = (40_000 * 4 + 60_000 * 4 * 0.2) / 1_000_000  # 100k prompt: the 32K-128K tier
    assert turn_cost("qwen3-max", usage) == pytest.approx(expected)
    flash = Usage(prompt_tokens=10_000, completion_tokens=0, cached_prompt_tokens=10_000)
    assert turn_cost("qwen-flash", flash) == pytest.approx(10_000 * 0.15 * 0.2 / 1_000_000)


def test_cached_tokens_cost_full_price_without_a_discount():
    usage = Usage(prompt_tokens=10_000, completion_tokens=0, cached_prompt_tokens=10_000)
    assert turn_cost("qwen-plus", usage) == pytest.approx(10_000 * 0.8 / 1_000_000)


def test_cached_count_above_prompt_count_is_capped():
    usage = Usage(prompt_tokens=1_000, completion_tokens=0, cached_prompt_tokens=5_000)
    assert turn_cost("qwen3-max", usage) == pytest.approx(1_000 * 2.5 * 0.2 / 1_000_000)


def test_turn_cost_of_versions_and_reference_models():
    usage = Usage(prompt_tokens=2_000, completion_tokens=1_000)
    assert turn_cost("qwen-plus-2025-12-01", usage) == turn_cost("qwen-plus", usage)
    assert turn_cost("qwen3-max-latest", usage) == pytest.approx((2_000 * 2.5 + 10_000) / 1e6)
    assert turn_cost("qwen-max", usage) == pytest.approx(cost("qwen-max", 2_000, 1_000))
    assert turn_cost("qwen-audio-turbo", usage) is None


def test_cost_keeps_the_first_tier_and_ignores_cache():
    assert cost("qwen3-max", 200_000, 0) == pytest.approx(200_000 * 2.5 / 1_000_000)


@pytest.mark.parametrize(
    "usage",
    [
        Usage(prompt_tokens=-1),
        Usage(completion_tokens=-1),
        Usage(cached_prompt_tokens=-1),
        Usage(reasoning_tokens=-1),
    ],
)
def test_turn_cost_refuses_negative_counts(usage):
    with pytest.raises(UserError, match="negative"):
        turn_cost("qwen3-max", usage)


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
