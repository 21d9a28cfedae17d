"""Provider presets and how a base URL, API key and model are resolved from arguments and env.

Order of precedence: explicit arguments, then `QWENLOOP_BASE_URL` / `QWENLOOP_API_KEY` /
`QWENLOOP_MODEL`, then the preset's own environment variable and defaults.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from agent.errors import ConfigError
from agent.secrets import mask_key

__all__ = ["PROVIDERS", "Provider", "ResolvedEndpoint", "resolve_endpoint"]


@dataclass(frozen=True, slots=True)
class Provider:
    """What qwenloop knows about one kind of endpoint.

    Attributes:
        name: The preset's name.
        base_url: The OpenAI-compatible base URL (None for the embedded model).
        key_env: The environment variable holding its API key.
        default_model: The model used when none is given.
        needs_key: Whether requests fail without a key.
        backend: "openai" (any OpenAI-compatible endpoint) or "embedded" (the local model).

    What the endpoint accepts and how it behaves is the model profile's business
    (`agent.models.profile`), not the preset's.
    """

    name: str
    base_url: str | None
    key_env: str | None
    default_model: str
    needs_key: bool = True
    backend: Literal["openai", "embedded"] = "openai"


# DashScope's regions and their OpenAI-compatible URLs; a key works only in its own region.
# https://www.alibabacloud.com/help/en/model-studio/base-url . Japan and Frankfurt have only
# per-workspace URLs: pass base_url="https://{WorkspaceId}.{region}.maas.aliyuncs.com/
# compatible-mode/v1" with provider="dashscope".
_DASHSCOPE_REGIONS = {
    "dashscope": "https://dashscope.aliyuncs.com/compatible-mode/v1",  # China (Beijing)
    "dashscope-intl": "https://dashscope-intl.aliyuncs.com/compatible-mode/v1",  # Singapore
    "dashscope-us": "https://dashscope-us.aliyuncs.com/compatible-mode/v1",  # US (Virginia)
    "dashscope-hk": "https://cn-hongkong.dashscope.aliyuncs.com/compatible-mode/v1",  # Hong Kong
}

PROVIDERS: dict[str, Provider] = {
    p.name: p
    for p in (
        *(
            Provider(name, url, "DASHSCOPE_API_KEY", "qwen-plus")
            for name, url in _DASHSCOPE_REGIONS.items()
        ),
        Provider("wcode", "https://wcode.net/api/gpt/v1", "WCODE_API_KEY", "qwen-plus"),
        Provider("openai", "https://api.openai.com/v1", "OPENAI_API_KEY", "gpt-4o-mini"),
        Provider(
            "ollama", "http://localhost:11434/v1", "OLLAMA_API_KEY", "qwen2.5:7b", needs_key=False
        ),
        Provider(
            "vllm",
            "http://localhost:8000/v1",
            "VLLM_API_KEY",
            "Qwen/Qwen2.5-7B-Instruct",
            needs_key=False,
        ),
        Provider(
            "local", None, None, "qwen2.5-coder-1.5b-instruct", needs_key=False, backend="embedded"
        ),
        Provider("custom", None, None, "qwen-plus", needs_key=False),
    )
}


@dataclass(frozen=True, slots=True)
class ResolvedEndpoint:
    """A provider with its base URL, key and model decided.

    Attributes:
        provider: The preset in force ("custom" for a bare base URL).
        base_url: Where requests go (None for the embedded model).
        api_key: The key to send.
        key_source: Where the key came from, for error messages ("--api-key", "$DASHSCOPE_API_KEY").
        model: The model name.
    """

    provider: Provider
    base_url: str | None
    api_key: str
    key_source: str
    model: str

    def __repr__(self) -> str:
        return (
            f"ResolvedEndpoint(provider={self.provider.name!r}, base_url={self.base_url!r}, "
            f"api_key={mask_key(self.api_key) if self.api_key else ''!r}, "
            f"key_source={self.key_source!r}, model={self.model!r})"
        )


def resolve_endpoint(
    provider: str | None = None,
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    model: str | None = None,
    env: dict[str, str] | None = None,
) -> ResolvedEndpoint:
    """Decide provider, base URL, key and model from arguments, then environment, then presets.

    Without a provider or base URL anywhere, the embedded local model is used.

    Raises:
        ConfigError: For an unknown provider, or a missing key the provider needs; the message
            names the argument or environment variable that would fix it.
    """
    env = dict(os.environ) if env is None else env
    name = provider or env.get("QWENLOOP_PROVIDER")
    url = base_url or env.get("QWENLOOP_BASE_URL")
    if name is None:
        name = "custom" if url else "local"
    if name not in PROVIDERS:
        known = ", ".join(p for p in PROVIDERS if p != "custom")
        raise ConfigError(f"unknown provider {name!r}: choose one of {known}, or give a base URL")
    preset = PROVIDERS[name]
    url = url or preset.base_url
    if name == "custom" and not url:
        raise ConfigError("no base URL: pass base_url=... (--base-url) or set QWENLOOP_BASE_URL")
    chosen_model = model or env.get("QWENLOOP_MODEL") or preset.default_model
    key, source = api_key, "the api_key argument"
    if not key and env.get("QWENLOOP_API_KEY"):
        key, source = env["QWENLOOP_API_KEY"], "$QWENLOOP_API_KEY"
    if not key and preset.key_env and env.get(preset.key_env):
        key, source = env[preset.key_env], f"${preset.key_env}"
    if not key:
        if preset.needs_key:
            raise ConfigError(
                f"no API key for provider {name!r}: set {preset.key_env} "
                "(or QWENLOOP_API_KEY), or pass api_key=... / --api-key"
            )
        key, source = "not-needed", "no key (the provider needs none)"
    return ResolvedEndpoint(preset, url, key, source, chosen_model)
