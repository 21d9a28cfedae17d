"""Context limits: each request fitted to the model's context window (placeholder)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from agent.models.profile import ModelProfile
from agent.settings import ModelSettings

__all__ = ["make_fitter"]

Fitter = Callable[[list[dict[str, Any]]], Awaitable[tuple[list[dict[str, Any]], int]]]


def make_fitter(
    profile: ModelProfile,
    settings: ModelSettings,
    context_tokens: int | None,
    processor: Callable[..., Any] | None,
) -> Fitter | None:
    """The function that fits a request's messages to the context window, or None."""
    return None
