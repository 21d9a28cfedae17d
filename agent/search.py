"""The web-search switch: Qwen's server-side `enable_search` or the local `web_search` tool.

Whether `enable_search` works is the model profile's fact (`ModelProfile.server_search`): True,
False, or None when neither the provider nor the model documents it.
"""

from __future__ import annotations

from agent.errors import ModelNotSupportedError
from agent.models.profile import ModelProfile

__all__ = ["choose_search_mode"]


def choose_search_mode(requested: str, profile: ModelProfile) -> str:
    """Resolve "server", "local", "auto" or "off" into the mode a run uses.

    "auto" uses server search only where it is known to work; "server" is also allowed where
    it is not known either way (the endpoint decides).

    Raises:
        ModelNotSupportedError: For "server" where the provider or model is known to lack it.
    """
    if requested in ("off", "local"):
        return requested
    supported = profile.server_search
    if requested == "server":
        if supported is False:
            raise ModelNotSupportedError(
                f"search='server' is not possible: model {profile.model!r} at provider "
                f"{profile.provider!r} has no server-side search (enable_search); "
                "use search='local' or 'auto'"
            )
        return "server"
    return "server" if supported else "local"
