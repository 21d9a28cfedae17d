"""The exception tree of qwenloop: one base, a few branches, each error carrying fields.

```
AgentError                      base of everything qwenloop raises; .result holds the partial run
├── UserError                   misuse: bad @tool signature or settings, run_sync in a loop
│   ├── ConfigError             provider, base URL or API key missing or unknown
│   ├── PromptRenderError       template name, line and missing variable
│   └── ModelNotSupportedError  a feature the chosen model does not offer (server search, ...)
├── ModelError                  the model or its endpoint failed us
│   ├── ModelAPIError           status_code, provider message, request id
│   │   ├── AuthenticationError 401/403; names the key or environment variable that was used
│   │   ├── BadRequestError     400/404/422; carries the provider's message
│   │   ├── RateLimitError      429 after the retries
│   │   └── ServerError         5xx after the retries
│   ├── ModelConnectionError    connection refused, reset or timed out after the retries
│   ├── ModelStreamError        the provider reported an error inside a stream
│   └── ModelBehaviorError      a reply that cannot be used (no choice, unusable output)
│       └── OutputValidationError   structured output that never validated; raw text kept
├── MaxTurnsExceeded            turns, partial result
└── UsageLimitExceeded          token or cost budget spent; partial result
```

Tool failures are not exceptions to the caller: they go back to the model as `role: tool`
messages it can correct itself from.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.messages import RunResult

__all__ = [
    "AgentError",
    "AuthenticationError",
    "BadRequestError",
    "ConfigError",
    "MaxTurnsExceeded",
    "ModelAPIError",
    "ModelBehaviorError",
    "ModelConnectionError",
    "ModelError",
    "ModelNotSupportedError",
    "ModelStreamError",
    "OutputValidationError",
    "PromptRenderError",
    "RateLimitError",
    "ServerError",
    "TruncatedReplyError",
    "UnsupportedCPUError",
    "UsageLimitExceeded",
    "UserError",
]


class AgentError(Exception):
    """Base of every error qwenloop raises.

    Attributes:
        message: What went wrong and, where we know it, how to fix it.
        result: The run so far (messages, usage, tool calls) when the error ended a run.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.result: RunResult | None = None

    def __str__(self) -> str:
        return self.message


class UserError(AgentError):
    """The runtime was used in a way it cannot honour; the message says how to fix it."""


class ConfigError(UserError):
    """A provider, base URL, model or API key is missing or unknown."""


class PromptRenderError(UserError):
    """A system-prompt template failed to render.

    Attributes:
        template: The template's name or path.
        line: The line of the error, when known.
        variable: The undefined variable, when that was the cause.
    """

    def __init__(
        self, message: str, *, template: str, line: int | None = None, variable: str | None = None
    ) -> None:
        super().__init__(message)
        self.template = template
        self.line = line
        self.variable = variable


class ModelNotSupportedError(UserError):
    """The chosen model does not offer a requested feature (server-side search, images, ...)."""


class ModelError(AgentError):
    """The model or its endpoint failed."""


class ModelAPIError(ModelError):
    """The endpoint answered with an error status.

    Attributes:
        status_code: The HTTP status.
        provider_message: The provider's own error message, verbatim.
        code: The provider's error code or type, when it sent one.
        request_id: The request id from the response headers, when present.
        body: The decoded error body.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        provider_message: str | None = None,
        code: str | None = None,
        request_id: str | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.provider_message = provider_message
        self.code = code
        self.request_id = request_id
        self.body = body


class AuthenticationError(ModelAPIError):
    """The API key was refused (401/403)."""


class BadRequestError(ModelAPIError):
    """The request was refused as malformed (400, 404, 422)."""


class RateLimitError(ModelAPIError):
    """Too many requests or no quota left (429), after the retries."""


class ServerError(ModelAPIError):
    """The provider failed (5xx), after the retries."""


class ModelConnectionError(ModelError):
    """The endpoint could not be reached or timed out, after the retries."""


class ModelStreamError(ModelError):
    """The provider reported an error in the middle of a stream.

    Attributes:
        provider_message: The provider's error message.
        body: The error object as sent.
    """

    def __init__(self, message: str, *, provider_message: str | None = None, body: Any = None):
        super().__init__(message)
        self.provider_message = provider_message
        self.body = body


class UnsupportedCPUError(ModelError):
    """The embedded model's native library crashes on this CPU; the message names the rebuild.

    Raised instead of letting llama.cpp kill the process with an illegal instruction: a probe
    in a child process found that the installed build uses instructions this machine forbids.
    """


class ModelBehaviorError(ModelError):
    """The model replied with something the runtime cannot use."""


class TruncatedReplyError(ModelBehaviorError):
    """The model's reply was cut by the token limit (`finish_reason: "length"`).

    A cut tool call never runs; a cut final answer is an error unless the agent was made with
    `accept_truncated=True` (then the result says `truncated=True`). The cut reply is not added
    to `.result.messages`.

    Attributes:
        text: The text the model wrote before it was cut.
        tool_calls: The names of the tool calls in the cut reply, none of which ran.
    """

    def __init__(self, message: str, *, text: str = "", tool_calls: list[str] | None = None):
        super().__init__(message)
        self.text = text
        self.tool_calls = list(tool_calls or [])


class RequiredToolCallError(ModelBehaviorError):
    """`tool_choice` required a tool call and the model answered without one, even when asked again.

    Raised where the provider cannot force a call itself and qwenloop asks again instead (see
    `ModelProfile.tool_choice_values`). The answer it gave is the last message of
    `.result.messages`.

    Attributes:
        text: The model's answer, which no tool informed.
    """

    def __init__(self, message: str, *, text: str = "") -> None:
        super().__init__(message)
        self.text = text


class NoAnswerError(ModelBehaviorError):
    """The model's reply had no answer in it, even when asked again.

    An empty reply, one that is only markup (`<tools></tools>`, a lone tag), a half-written
    tool call, or one that is wholly a call to a tool not offered is never taken as the answer:
    the model is told what was wrong and asked again, a bounded number of times.
    Its last reply is the last message of `.result.messages`.

    Attributes:
        text: The model's last reply, verbatim.
        reason: What was wrong with it ("empty", "only markup", "a half-written tool call" or
            "a call to a tool that is not offered").
    """

    def __init__(self, message: str, *, text: str = "", reason: str = "") -> None:
        super().__init__(message)
        self.text = text
        self.reason = reason


class OutputValidationError(ModelBehaviorError):
    """Structured output did not validate within the retry budget.

    Attributes:
        raw_text: The model's last reply, verbatim.
        errors: The last validation errors.
    """

    def __init__(self, message: str, *, raw_text: str, errors: Any = None) -> None:
        super().__init__(message)
        self.raw_text = raw_text
        self.errors = errors


class SessionBusyError(UserError):
    """Another run, in this process or another, is using the same session right now."""


class SessionError(AgentError):
    """The session's store failed (a broken or unreadable file, a full disk)."""


class HookError(AgentError):
    """A lifecycle hook raised; the run stopped there. The hook's exception is `__cause__`."""


class MaxTurnsExceeded(AgentError):
    """The run used `max_turns` model turns without a final answer.

    Attributes:
        max_turns: The limit that was reached.
    """

    def __init__(self, message: str, *, max_turns: int) -> None:
        super().__init__(message)
        self.max_turns = max_turns


class UsageLimitExceeded(AgentError):
    """The run spent its token or cost budget.

    Attributes:
        limit: Which limit: "total_tokens" or "cost".
        value: What the run had spent when it stopped.
        maximum: The budget.
    """

    def __init__(self, message: str, *, limit: str, value: float, maximum: float) -> None:
        super().__init__(message)
        self.limit = limit
        self.value = value
        self.maximum = maximum
