import pytest

from agent.errors import UserError
from agent.translation import AUTO, LANGUAGES, translation_options


def test_language_list_matches_reference():
    assert len(LANGUAGES) == 28
    assert LANGUAGES["Chinese"] == "中文"
    assert LANGUAGES["Portuguese"] == "巴西葡萄牙语"
    assert LANGUAGES["Urdu"] == "乌尔都语"
    assert list(LANGUAGES)[:3] == ["Chinese", "English", "Japanese"]


def test_reference_example():
    assert translation_options("Chinese", "English") == {
        "source_lang": "Chinese",
        "target_lang": "English",
    }


@pytest.mark.parametrize(
    ("given", "expected"),
    [("english", "English"), ("  ENGLISH ", "English"), ("英语", "English"), ("中文", "Chinese")],
)
def test_names_are_case_insensitive_and_chinese_accepted(given, expected):
    assert translation_options(given, given)["source_lang"] == expected
    assert translation_options("auto", given)["target_lang"] == expected


def test_auto_source():
    assert translation_options("AUTO", "日语")["source_lang"] == AUTO


def test_auto_target_is_refused():
    with pytest.raises(UserError, match="only for the source"):
        translation_options("Chinese", "auto")


def test_unknown_language_lists_accepted_names():
    with pytest.raises(UserError) as excinfo:
        translation_options("Klingon", "English")
    message = str(excinfo.value)
    assert "'Klingon'" in message
    assert "English (英语)" in message and "Urdu (乌尔都语)" in message
    assert '"auto"' in message


def test_unknown_target_does_not_offer_auto():
    with pytest.raises(UserError) as excinfo:
        translation_options("English", "Swahili")
    assert "target" in str(excinfo.value) and '"auto"' not in str(excinfo.value)


def test_terms_from_mapping_and_list():
    expected = [{"source": "大模型", "target": "LLM"}]
    assert translation_options("中文", "English", terms={"大模型": "LLM"})["terms"] == expected
    assert (
        translation_options("中文", "English", terms=[{"source": "大模型", "target": "LLM"}])[
            "terms"
        ]
        == expected
    )


@pytest.mark.parametrize(
    "terms", [[{"source": "a"}], ["a=b"], {"": "x"}, [{"source": "a", "target": 1}]]
)
def test_malformed_terms(terms):
    with pytest.raises(UserError):
        translation_options("English", "Chinese", terms=terms)


def test_domains():
    domain = "The sentence is from the IT domain. Translate into this IT domain style."
    options = translation_options("English", "Chinese", domains=domain)
    assert options["domains"] == domain
    assert "terms" not in options
    with pytest.raises(UserError, match="domains"):
        translation_options("English", "Chinese", domains="  ")
