"""The model protocol every backend implements: one request shape, OpenAI-format dicts out.

A backend returns a whole `chat.completion` body from `complete` and yields
`chat.completion.chunk` bodies from `stream`. Keeping OpenAI's wire format as the lingua franca
lets one assembler (`agent.streaming`) and one loop serve every backend, remote or local.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = ["ChatModel", "ModelRequest", "ModelResponse", "RequestGate", "ResponseMeta"]


@dataclass(slots=True)
class ModelRequest:
    """One chat-completions request, provider-neutral.

    Attributes:
        model: The model name sent to the endpoint.
        messages: The conversation, OpenAI-format dicts.
        tools: OpenAI tool schemas (`{"type": "function", "function": {...}}`), or None.
        params: Request parameters the OpenAI API names (temperature, tool_choice, ...).
        extra_body: Parameters it does not name (top_k, enable_search, translation_options, ...).
    """

    model: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None
    params: dict[str, Any] = field(default_factory=dict)
    extra_body: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class ResponseMeta:
    """What the response said besides its body: headers (X-Account-Balance, request id)."""

    headers: dict[str, str] = field(default_factory=dict)

    @property
    def request_id(self) -> str | None:
        """The provider's request id, from the usual headers."""
        return self.headers.get("x-request-id") or self.headers.get("x-dashscope-request-id")

    @property
    def balance(self) -> str | None:
        """The account balance the wcode.net proxy reports in `X-Account-Balance`."""
        return self.headers.get("x-account-balance")


@dataclass(slots=True)
class ModelResponse:
    """A whole (non-streamed) reply: the `chat.completion` body as a dict, and its metadata."""

    body: dict[str, Any]
    meta: ResponseMeta = field(default_factory=ResponseMeta)


@runtime_checkable
class ChatModel(Protocol):
    """A chat model backend.

    Attributes:
        model_name: The model the backend talks to.
        provider: A short provider name ("dashscope", "local", ...), used for quirks and catalogue.
    """

    model_name: str
    provider: str

    async def complete(self, request: ModelRequest) -> ModelResponse:
        """Send the request and return the whole reply."""
        ...

    def stream(self, request: ModelRequest, meta: ResponseMeta) -> AsyncIterator[dict[str, Any]]:
        """Send the request with streaming on and yield each chunk as a dict.

        Fills `meta.headers` once the response starts. Raises `ModelStreamError` when the
        provider reports an error inside the stream.
        """
        ...

    async def aclose(self) -> None:
        """Release connections or weights."""
        ...


@runtime_checkable
class RequestGate(Protocol):
    """Paces the requests of many runs that share one account's limits (see `agent.ratelimit`).

    A backend calls `acquire` before every HTTP attempt (retries included), `rate_limited` when
    the provider answers 429, and `used` with the tokens a reply consumed once it knows them.
    """

    async def acquire(self, tokens: int) -> None:
        """Wait until a request estimated at `tokens` tokens may go out."""
        ...

    def rate_limited(self, retry_after: float | None) -> None:
        """The provider refused a request (429): slow every request down."""
        ...

    def used(self, tokens: int) -> None:
        """A reply consumed `tokens` tokens (prompt and completion) in all."""
        ...
