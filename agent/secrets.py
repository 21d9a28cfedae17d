"""Keep what qwenloop sends and shows safe: API keys masked, text encodable as UTF-8."""

from __future__ import annotations

import re
from typing import Any

__all__ = ["mask_key", "redact", "scrub_surrogates"]

_SURROGATE = re.compile("[\ud800-\udfff]")


def mask_key(key: str) -> str:
    """Show a key as its first 3 and last 4 characters only (`sk-…a1b2`); a short key as `…`."""
    return f"{key[:3]}…{key[-4:]}" if len(key) >= 12 else "…"


def redact(text: str, secret: str | None) -> str:
    """Replace every occurrence of `secret` (an API key) in `text` with its mask."""
    if secret and len(secret) >= 8 and secret in text:
        return text.replace(secret, mask_key(secret))
    return text


def scrub_surrogates(value: Any) -> Any:
    """Return `value` with lone surrogates in its strings replaced by U+FFFD.

    A shell hands Python bytes that are not UTF-8 as surrogate escapes; such a string cannot be
    encoded into a JSON request. Dicts and lists are copied with their strings scrubbed.
    """
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return _SURROGATE.sub("\ufffd", value)
        return value
    if isinstance(value, dict):
        return {scrub_surrogates(k): scrub_surrogates(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub_surrogates(item) for item in value]
    return value
