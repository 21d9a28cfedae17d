"""The web-search switch: Qwen's server-side `enable_search` or the local `web_search` tool.

The reference says `enable_search` is not available for the qwen-vl series, the open-source qwen
models and qwen-long; only DashScope-compatible providers implement it at all.
"""

from __future__ import annotations

from agent.errors import ModelNotSupportedError
from agent.providers import PROVIDERS

__all__ = ["choose_search_mode", "server_search_supported"]


def server_search_supported(provider: str, model: str) -> tuple[bool, str]:
    """Say whether `enable_search` works for this provider and model, and if not, why."""
    preset = PROVIDERS.get(provider)
    if provider != "custom" and (preset is None or not preset.server_search):
        return False, f"provider {provider!r} has no server-side search"
    from agent import catalog

    supported = catalog.supports_search(model)
    if supported is False:
        return False, (
            f"model {model!r} does not support enable_search "
            "(the qwen-vl series, open-source qwen models and qwen-long do not)"
        )
    if supported is None and provider == "custom":
        return False, f"model {model!r} is unknown and the endpoint is not a Qwen provider"
    return True, ""


def choose_search_mode(requested: str, provider: str, model: str) -> str:
    """Resolve "server", "local", "auto" or "off" into the mode a run uses.

    Raises:
        ModelNotSupportedError: For "server" where the provider or model lacks it.
    """
    if requested in ("off", "local"):
        return requested
    ok, why = server_search_supported(provider, model)
    if requested == "server":
        if not ok and not (provider == "custom" and "unknown" in why):
            raise ModelNotSupportedError(
                f"search='server' is not possible: {why}; use search='local' or 'auto'"
            )
        return "server"
    return "server" if ok else "local"
