"""HTTP helpers shared by the networked built-in tools: a cached TLS context and error wording.

httpx is imported lazily so that importing `tools` stays cheap for offline runs.
"""

from __future__ import annotations

import ssl
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx

__all__ = ["describe_http_error", "new_client", "tls_context"]

_tls: ssl.SSLContext | None = None
_tls_lock = threading.Lock()


def tls_context() -> ssl.SSLContext:
    """Return one verifying TLS context for all default clients.

    Building a context loads the CA bundle (~25 ms); sharing it makes a fresh client per call
    cost about a millisecond.
    """
    global _tls
    if _tls is None:
        with _tls_lock:
            if _tls is None:
                try:
                    import certifi

                    _tls = ssl.create_default_context(cafile=certifi.where())
                except ImportError:  # pragma: no cover - certifi ships with httpx
                    _tls = ssl.create_default_context()
    return _tls


def new_client(timeout: float, user_agent: str = "qwenloop-tools/0.1") -> httpx.AsyncClient:
    """Return a fresh client for one tool call.

    `trust_env=False` so that proxy variables cannot route requests around the address checks
    of `fetch_url`, and so that tool behaviour does not depend on the caller's environment.

    Args:
        timeout: Seconds for each of connect, read, write and pool waits.
        user_agent: The User-Agent header to send.
    """
    import httpx

    return httpx.AsyncClient(
        timeout=timeout,
        verify=tls_context(),
        trust_env=False,
        follow_redirects=False,
        headers={"User-Agent": user_agent},
    )


def describe_http_error(exc: Exception, service: str, timeout: float) -> str:
    """Word an httpx failure for the model.

    Args:
        exc: The exception httpx raised.
        service: What was being contacted, e.g. "the weather service".
        timeout: The timeout in force, quoted in timeout messages.
    """
    import httpx

    if isinstance(exc, httpx.TimeoutException):
        return f"{service} did not answer within {timeout:g} s; try again later"
    if isinstance(exc, httpx.ConnectError):
        return f"could not connect to {service}: {exc or type(exc).__name__}"
    return f"request to {service} failed: {type(exc).__name__}: {exc}"
