"""The small async client the controller (and `canaryctl mesh ...`) uses to talk to a
proxy's admin API. It speaks only the HTTP contract of mesh/README.md."""

from __future__ import annotations

from typing import Any

import httpx


class MeshClientError(Exception):
    """The proxy refused a request or could not be reached. The message names the
    proxy and what went wrong, never the token."""


class MeshClient:
    def __init__(
        self,
        admin_url: str,
        token: str,
        timeout: float = 5.0,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.admin_url = admin_url.rstrip("/")
        base_url = self.admin_url
        if admin_url.startswith("unix:"):
            # An admin API on a unix socket (admin.address: unix:/path).
            if transport is None:
                transport = httpx.AsyncHTTPTransport(uds=admin_url[len("unix:"):])
            base_url = "http://mesh-admin"
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers={"authorization": f"Bearer {token}"},
            timeout=timeout,
            transport=transport,
        )

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise MeshClientError(
                f"mesh admin {self.admin_url}: {method} {path}: "
                f"{type(exc).__name__}: {exc or 'no answer'}"
            ) from None
        if response.status_code != 200:
            try:
                detail = response.json().get("error", "")
            except ValueError:
                detail = response.text[:200]
            raise MeshClientError(
                f"mesh admin {self.admin_url}: {method} {path}: "
                f"HTTP {response.status_code}: {detail}"
            )
        try:
            return response.json()
        except ValueError:
            raise MeshClientError(
                f"mesh admin {self.admin_url}: {method} {path}: answer is not JSON"
            ) from None

    async def get_weights(self, service: str) -> dict[str, int]:
        data = await self._call("GET", f"/admin/v1/services/{service}/weights")
        return {str(k): int(v) for k, v in data["weights"].items()}

    async def set_weights(self, service: str, weights: dict[str, int]) -> None:
        """Applies atomically to the proxy's next request; raises MeshClientError."""
        await self._call("PUT", f"/admin/v1/services/{service}/weights", json=weights)

    async def routes(self) -> dict[str, Any]:
        data: dict[str, Any] = await self._call("GET", "/admin/v1/routes")
        return data

    async def replace_routes(self, routes: dict[str, Any]) -> dict[str, Any]:
        """Replaces every listener's services at once (the shape `routes()` returns);
        an invalid table is refused whole and the running one kept."""
        data: dict[str, Any] = await self._call("PUT", "/admin/v1/routes", json=routes)
        return data

    async def stats(
        self, service: str, start: float, end: float, step: float = 1.0
    ) -> dict[str, Any]:
        data: dict[str, Any] = await self._call(
            "GET", "/admin/v1/stats",
            params={"service": service, "start": repr(start), "end": repr(end),
                    "step": repr(step)},
        )
        return data

    async def health(self) -> bool:
        try:
            data = await self._call("GET", "/admin/v1/health")
        except MeshClientError:
            return False
        return bool(data.get("status") == "ok")

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> MeshClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
