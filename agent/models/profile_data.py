"""The providers' facts, with the pages they come from. The models' facts live in `agent.catalog`.

Each entry holds `ModelProfile` fields; `GENERIC` applies to any endpoint and is conservative:
it sends nothing an OpenAI-compatible server might not know and assumes nothing about it.

Sources (Alibaba Cloud Model Studio, current documentation):
- CHAT: https://www.alibabacloud.com/help/en/model-studio/qwen-api-via-openai-chat-completions
  (Chinese: https://help.aliyun.com/zh/model-studio/qwen-api-via-openai-chat-completions)
  `parallel_tool_calls` "Defaults to false"; `tool_choice` "auto", "none" or a named function
  ("required" is not listed); "thinking-mode models do not support forcing a specific tool";
  `seed` in [0, 2^31-1]; `top_logprobs` in [0, 5]; `n` 1-4, and 1 when tools are passed;
  `thinking_budget`; `preserve_thinking` (qwen3.6/3.7 plus and max only).
- THINK: https://www.alibabacloud.com/help/en/model-studio/deep-thinking
  Thinking "only supports incremental output" (the current Chinese page: most models): a
  non-streamed call with thinking on is answered 400 "parameter.enable_thinking must be set to
  false for non-streaming calls".
- BASE: https://www.alibabacloud.com/help/en/model-studio/base-url (regions and their URLs).
- CACHE: https://www.alibabacloud.com/help/en/model-studio/context-cache (explicit cache markers).
- SEARCH: https://www.alibabacloud.com/help/en/model-studio/web-search (strategies per the
  `search_options` reference of CHAT).
- vLLM: https://docs.vllm.ai/en/latest/features/reasoning_outputs.html (Qwen3's switch is
  `chat_template_kwargs: {"enable_thinking": false}`).
"""

from __future__ import annotations

from typing import Any

__all__ = ["GENERIC", "LOCAL_INSTRUCTIONS", "LOCAL_SETTINGS", "PROVIDER_FACTS"]

CHAT = "https://www.alibabacloud.com/help/en/model-studio/qwen-api-via-openai-chat-completions"
THINK = "https://www.alibabacloud.com/help/en/model-studio/deep-thinking"
CACHE = "https://www.alibabacloud.com/help/en/model-studio/context-cache"
SEARCH = "https://www.alibabacloud.com/help/en/model-studio/web-search"
VLLM = "https://docs.vllm.ai/en/latest/features/reasoning_outputs.html"

LOCAL_INSTRUCTIONS = (
    "You are a helpful assistant. When a tool can work out or look up the answer (a "
    "calculation, a unit conversion, the current time), call it instead of answering from "
    "memory, and make all the calls the question needs at once. When no tool fits, answer "
    "directly. Answer the user's question with the tool results."
)
"""The embedded model's default system prompt, measured with `bench/everyday.py` (README).

The last sentence stops the bundled 1.5B model thanking the user for a tool result instead of
answering with it (3 of 8 questions right without it, 8 of 8 with it, in an earlier
measurement); the first makes it use the calculator and clock rather than guess."""

LOCAL_SETTINGS: dict[str, Any] = {"temperature": 0.0, "max_tokens": 1024}
"""The embedded model's default settings: greedy decoding, which the accuracy figures were
measured with (a 1.5B model's tool calls suffer from sampling), and replies bounded to about a
minute and a half of generation on 2 cores."""

GENERIC: dict[str, Any] = {
    "parallel_tool_calls_default": True,
    "parallel_tool_calls_param": False,
    "tool_choice_values": frozenset({"auto", "none", "required", "function"}),
    "server_search": None,
}

_DASHSCOPE: dict[str, Any] = {
    "thinking_switch": "enable_thinking",
    "thinking_needs_stream": True,  # THINK
    "thinking_forced_tool": False,  # CHAT
    "thinking_budget": True,  # CHAT
    "parallel_tool_calls_default": False,  # CHAT
    "parallel_tool_calls_param": True,
    "tool_choice_values": frozenset({"auto", "none", "function"}),  # CHAT
    "server_search": True,
    "search_strategies": ("turbo", "max", "agent", "agent_max"),  # CHAT, SEARCH
    "seed_max": 2**31 - 1,  # CHAT
    "top_logprobs_max": 5,  # CHAT
    "n_max": 4,  # CHAT
    "explicit_cache": True,  # CACHE
    "sources": (CHAT, THINK, CACHE, SEARCH),
}

PROVIDER_FACTS: dict[str, dict[str, Any]] = {
    "dashscope": _DASHSCOPE,
    "dashscope-intl": _DASHSCOPE,
    "dashscope-us": _DASHSCOPE,
    "dashscope-hk": _DASHSCOPE,
    # The wcode.net proxy forwards DashScope's compatible mode (shared/qwen-api 000, 001).
    "wcode": _DASHSCOPE,
    "openai": {
        "parallel_tool_calls_param": True,
        "json_schema": True,
        "server_search": False,
        "seed_max": 2**63 - 1,
    },
    "vllm": {
        "thinking_switch": "chat_template_kwargs",  # VLLM
        "parallel_tool_calls_param": True,
        "json_schema": True,
        "server_search": False,
        "sources": (VLLM,),
    },
    "ollama": {"server_search": False},
    "local": {
        # The embedded model narrows the tools it shows instead of forcing a call.
        "tool_choice_values": frozenset({"auto", "none", "function"}),
        "server_search": False,
        "default_instructions": LOCAL_INSTRUCTIONS,
        "default_settings": LOCAL_SETTINGS,
    },
}
