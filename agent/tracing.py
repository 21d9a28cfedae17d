"""Logging and OpenTelemetry tracing, as lifecycle hooks (placeholder)."""

from __future__ import annotations

from agent.hooks import RunHooks

__all__ = ["LogHooks", "OpenTelemetryHooks"]


class LogHooks(RunHooks):
    """Logs requests and tool calls to the `qwenloop` logger."""


class OpenTelemetryHooks(RunHooks):
    """Spans following the GenAI semantic conventions."""

    def __init__(self, *, capture_content: bool = False) -> None:
        self.capture_content = capture_content
