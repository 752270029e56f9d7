"""The HTTP API of `canaryctl serve` (DESIGN.md, "HTTP API")."""

from canary.api.app import create_app

__all__ = ["create_app"]
