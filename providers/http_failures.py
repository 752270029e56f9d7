"""How an HTTP provider turns a failed request into a retry or a ProviderError, the same
way for every source."""

from __future__ import annotations

import asyncio

import httpx

from providers.provider import ProviderError
from providers.secrets import redact


def transport_failure(provider: str, what: str, exc: httpx.HTTPError,
                      timeout: float) -> ProviderError:
    """The error for a request that got no HTTP answer; any credential is scrubbed."""
    if isinstance(exc, httpx.TimeoutException):
        return ProviderError(provider, f"{what}: no answer within {timeout:g}s", retryable=True)
    return ProviderError(provider, redact(f"{what}: {type(exc).__name__}: {exc}"),
                         retryable=True)


async def back_off(base: float, attempt: int) -> None:
    """Exponential back-off before retry number `attempt` (1-based)."""
    await asyncio.sleep(base * 2 ** (attempt - 1))
