"""The metrics accounts of `canaryctl serve --providers FILE`: the metric stores Kayenta
requests name with `metricsAccountName`, so callers need not send data inline.

The file is a YAML mapping of account names to provider settings, written exactly as
under `providers:` in a rollout spec; credentials stay references (`apiKeyEnv`,
`bearerTokenFile`, ...), read when an execution fetches.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from canary.input_error import InputError


def load_metrics_accounts(path: Path) -> dict[str, dict[str, Any]]:
    """Validated provider settings by account name; raises InputError."""
    from canary.spec_loader import format_loc, parse_yaml
    from providers.settings import parse_provider_settings

    data, _ = parse_yaml(path)
    if isinstance(data, dict) and set(data) == {"providers"}:
        # A rollout spec's providers section pasted with its key is fine too.
        data = data["providers"]
    if not isinstance(data, dict) or not data:
        raise InputError(str(path), "", "expected a mapping of account names to provider "
                         "settings, e.g. `prom: {type: prometheus, url: http://...}`")
    out: dict[str, dict[str, Any]] = {}
    for name, settings in data.items():
        if not isinstance(name, str) or not name:
            raise InputError(str(path), str(name), "an account name (a string)")
        try:
            parse_provider_settings(settings)
        except ValidationError as exc:
            err = exc.errors()[0]
            parts = list(err["loc"])
            # A discriminated union puts the `type` tag first; the user never wrote it.
            if parts and isinstance(settings, dict) and parts[0] == settings.get("type"):
                parts = parts[1:]
            loc = format_loc([p for p in parts if not str(p).startswith("function-")])
            msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
            field = ".".join(p for p in (name, loc) if p)
            raise InputError(str(path), field, msg) from None
        out[name] = dict(settings)
    return out
