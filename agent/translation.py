"""`translation_options` for the qwen-mt models: the supported languages and a validating builder.

The language list is the reference's (001); "auto" as a source is DashScope's documented
source-language detection, which the reference does not mention.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

from agent.errors import UserError

__all__ = ["AUTO", "LANGUAGES", "translation_options"]

AUTO = "auto"
"""The source language that asks the model to detect it."""

LANGUAGES: Mapping[str, str] = MappingProxyType(
    {
        "Chinese": "中文",
        "English": "英语",
        "Japanese": "日语",
        "Korean": "韩语",
        "Thai": "泰语",
        "French": "法语",
        "German": "德语",
        "Spanish": "西班牙语",
        "Arabic": "阿拉伯语",
        "Indonesian": "印尼语",
        "Vietnamese": "越南语",
        "Portuguese": "巴西葡萄牙语",
        "Italian": "意大利语",
        "Dutch": "荷兰语",
        "Russian": "俄语",
        "Khmer": "高棉语",
        "Lao": "老挝语",
        "Burmese": "缅甸语",
        "Cebuano": "宿务语",
        "Filipino": "菲律宾语",
        "Czech": "捷克语",
        "Polish": "波兰语",
        "Persian": "波斯语",
        "Hebrew": "希伯来语",
        "Turkish": "土耳其语",
        "Hindi": "印地语",
        "Bengali": "孟加拉语",
        "Urdu": "乌尔都语",
    }
)
"""The languages qwen-mt translates between: English name (sent to the API) → Chinese name."""

_BY_KEY: dict[str, str] = {english.lower(): english for english in LANGUAGES}
_BY_KEY.update({chinese: english for english, chinese in LANGUAGES.items()})


def _resolve(value: str, role: str, *, allow_auto: bool) -> str:
    """Map an English or Chinese language name, any case, to the English name the API takes."""
    key = value.strip()
    if allow_auto and key.lower() == AUTO:
        return AUTO
    english = _BY_KEY.get(key.lower())  # lower() leaves the Chinese names unchanged
    if english is None:
        accepted = ", ".join(f"{en} ({zh})" for en, zh in LANGUAGES.items())
        extra = f'"{AUTO}" or ' if allow_auto else ""
        raise UserError(
            f"unknown {role} language {value!r}: use {extra}one of {accepted}"
            + ("" if allow_auto or key.lower() != AUTO else f' ("{AUTO}" is only for the source)')
        )
    return english


def _terms(terms: Mapping[str, str] | Iterable[Mapping[str, str]]) -> list[dict[str, str]]:
    """Normalise terms to the API's `[{"source": ..., "target": ...}]`."""
    if isinstance(terms, Mapping):
        pairs = list(terms.items())
    else:
        pairs = []
        for term in terms:
            if not isinstance(term, Mapping) or not {"source", "target"} <= term.keys():
                raise UserError(
                    f"each term must be a mapping with 'source' and 'target', got {term!r}"
                )
            pairs.append((term["source"], term["target"]))
    result = []
    for source, target in pairs:
        if not isinstance(source, str) or not isinstance(target, str) or not source or not target:
            raise UserError(f"a term needs a non-empty source and target string, got {source!r}")
        result.append({"source": source, "target": target})
    return result


def translation_options(
    source: str,
    target: str,
    *,
    terms: Mapping[str, str] | Iterable[Mapping[str, str]] | None = None,
    domains: str | None = None,
) -> dict[str, Any]:
    """Build the `translation_options` object of a qwen-mt request.

    Args:
        source: The source language: an English or Chinese name from `LANGUAGES`, any case,
            or "auto" to let the model detect it.
        target: The target language, as for `source` but without "auto".
        terms: Fixed translations of terms, as `{source: target}` or as
            `[{"source": ..., "target": ...}]`.
        domains: A description of the text's domain and style, in English.

    Returns:
        `{"source_lang": ..., "target_lang": ..., "terms": [...], "domains": ...}`, the last two
        only when given. Send it in the request body (with the OpenAI SDK, via `extra_body`).

    Raises:
        UserError: A language is not supported, or a term or the domain is malformed.
    """
    options: dict[str, Any] = {
        "source_lang": _resolve(source, "source", allow_auto=True),
        "target_lang": _resolve(target, "target", allow_auto=False),
    }
    if terms is not None:
        options["terms"] = _terms(terms)
    if domains is not None:
        if not isinstance(domains, str) or not domains.strip():
            raise UserError("domains must be a non-empty description of the text's domain")
        options["domains"] = domains
    return options
