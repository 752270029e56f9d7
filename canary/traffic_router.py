"""The traffic-router seam: how the controller moves weight between baseline and canary.

One small protocol so another router (Gateway API, Istio) can stand in for the built-in
mesh later; the mesh router speaks only the proxy's admin API.
"""

from __future__ import annotations

from typing import Protocol


class RouterError(Exception):
    """The router could not apply or read weights (unreachable, refused)."""


class TrafficRouter(Protocol):
    async def set_weights(self, baseline: int, canary: int) -> None:
        ...

    async def get_weights(self) -> dict[str, int]:
        ...

    async def aclose(self) -> None:
        ...


class MeshRouter:
    """Weights on the built-in mesh proxy, for one service, through its admin API."""

    def __init__(self, admin_url: str, token: str, service: str, timeout: float = 5.0) -> None:
        from mesh.client import MeshClient

        self.service = service
        self._client = MeshClient(admin_url, token, timeout=timeout)

    async def set_weights(self, baseline: int, canary: int) -> None:
        try:
            await self._client.set_weights(self.service, {"baseline": baseline, "canary": canary})
        except Exception as exc:  # the client raises its own errors; the controller needs one
            raise RouterError(f"mesh: cannot set weights of {self.service}: {exc}") from exc

    async def get_weights(self) -> dict[str, int]:
        try:
            return await self._client.get_weights(self.service)
        except Exception as exc:
            raise RouterError(f"mesh: cannot read weights of {self.service}: {exc}") from exc

    async def aclose(self) -> None:
        await self._client.aclose()
