"""qwenloop: a function-calling agent runtime for Qwen models.

The public surface: `Agent`, `tool`, settings, results, events and errors.
"""

from agent.agent import Agent
from agent.batch import Batch, BatchSummary
from agent.errors import (
    AgentError,
    AuthenticationError,
    BadRequestError,
    ConfigError,
    HookError,
    MaxTurnsExceeded,
    ModelAPIError,
    ModelBehaviorError,
    ModelConnectionError,
    ModelError,
    ModelNotSupportedError,
    ModelStreamError,
    NoAnswerError,
    OutputValidationError,
    PromptRenderError,
    RateLimitError,
    RequiredToolCallError,
    ServerError,
    SessionBusyError,
    SessionError,
    TruncatedReplyError,
    UnsupportedCPUError,
    UsageLimitExceeded,
    UserError,
)
from agent.events import (
    AgentEvent,
    ApprovalRequiredEvent,
    LoopGuardEvent,
    ReasoningDeltaEvent,
    RunEndEvent,
    RunStartEvent,
    TextDeltaEvent,
    ToolCallFinishedEvent,
    ToolCallStartedEvent,
    TurnEndEvent,
)
from agent.hooks import ModelReply, RunContext, RunHooks, ToolCallInfo
from agent.messages import Interruption, RunResult, RunState, ToolCallRecord, TurnUsage, Usage
from agent.models.profile import ModelProfile, Price
from agent.prompts import Template
from agent.ratelimit import RateLimiter
from agent.sessions import Session, SQLiteSession
from agent.settings import ModelSettings, SearchOptions
from agent.tool import Tool, ToolRegistry, ToolRetry, tool
from agent.tracing import LogHooks, OpenTelemetryHooks

__version__ = "0.1.0"

__all__ = [
    "Agent",
    "AgentError",
    "AgentEvent",
    "ApprovalRequiredEvent",
    "AuthenticationError",
    "BadRequestError",
    "Batch",
    "BatchSummary",
    "ConfigError",
    "HookError",
    "Interruption",
    "LogHooks",
    "LoopGuardEvent",
    "MaxTurnsExceeded",
    "ModelAPIError",
    "ModelBehaviorError",
    "ModelConnectionError",
    "ModelError",
    "ModelNotSupportedError",
    "ModelProfile",
    "ModelReply",
    "ModelSettings",
    "ModelStreamError",
    "NoAnswerError",
    "OpenTelemetryHooks",
    "OutputValidationError",
    "Price",
    "PromptRenderError",
    "RateLimitError",
    "RateLimiter",
    "ReasoningDeltaEvent",
    "RequiredToolCallError",
    "RunContext",
    "RunEndEvent",
    "RunHooks",
    "RunResult",
    "RunStartEvent",
    "RunState",
    "SQLiteSession",
    "SearchOptions",
    "ServerError",
    "Session",
    "SessionBusyError",
    "SessionError",
    "Template",
    "TextDeltaEvent",
    "Tool",
    "ToolCallFinishedEvent",
    "ToolCallInfo",
    "ToolCallRecord",
    "ToolCallStartedEvent",
    "ToolRegistry",
    "ToolRetry",
    "TruncatedReplyError",
    "TurnEndEvent",
    "TurnUsage",
    "UnsupportedCPUError",
    "Usage",
    "UsageLimitExceeded",
    "UserError",
    "tool",
]
