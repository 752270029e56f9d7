"""The routing table of a proxy process, as users write it (YAML) and as the admin API
returns it. Everything read from a file or the wire is validated here, once; the data
plane works on the compiled form in mesh/routing.py."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


class MeshConfigError(ValueError):
    """A one-line message naming the source, the field and what was expected."""


def split_address(address: str) -> tuple[str, int]:
    """'host:port' (or '[v6]:port') into its parts; raises ValueError naming the text."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected host:port, got {address!r}")
    return host.strip("[]"), int(port)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class UpstreamTLS(_Model):
    """mTLS to a version's endpoints (another mesh proxy): our certificate, the mesh CA,
    and the service identity the endpoints must present."""

    cert: str
    key: str
    ca: str
    service: str = Field(pattern=_NAME)


class ListenerTLS(_Model):
    """mTLS on a listener: our certificate, and client certificates required, signed
    by the mesh CA; with `client_services`, only those identities are let in."""

    cert: str
    key: str
    ca: str
    client_services: list[str] = Field(default_factory=list)


class VersionConfig(_Model):
    """One backend group of a service (baseline, canary, or any named version)."""

    name: str = Field(pattern=_NAME)
    endpoints: list[str] = Field(min_length=1)
    weight: int = Field(default=0, ge=0, le=1_000_000)
    tls: UpstreamTLS | None = None

    @field_validator("endpoints")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        for address in value:
            split_address(address)
        return value


class MatchRule(_Model):
    """Pins a request to a version when a header or a cookie has a given value."""

    header: str | None = None
    cookie: str | None = None
    value: str
    version: str

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.header is None) == (self.cookie is None):
            raise ValueError("a match rule needs exactly one of header or cookie")
        if self.header is not None and not _HEADER_NAME.match(self.header):
            raise ValueError(f"invalid header name {self.header!r}")
        return self


class StickyConfig(_Model):
    """A cookie that keeps a user on the version first chosen for them."""

    cookie: str = Field(default="canaryctl-version", pattern=r"^[A-Za-z0-9_.-]+$")
    max_age: int = Field(default=86_400, ge=1)


class MirrorConfig(_Model):
    """Copies `percent` of a service's requests to `version`; its answers are dropped."""

    version: str
    percent: float = Field(default=100.0, gt=0, le=100)


class OutlierConfig(_Model):
    """Passive ejection: an endpoint that fails `consecutive_failures` times in a row
    (refused, reset, timed out, 5xx when `on_5xx`) is skipped for `eject_seconds`,
    doubling on each repeat; at most `max_ejected_percent` of a version's endpoints are
    out at once, so a version never loses all its endpoints to ejection."""

    consecutive_failures: int = Field(default=5, ge=1)
    eject_seconds: float = Field(default=10.0, gt=0)
    max_ejected_percent: int = Field(default=50, ge=0, le=100)
    on_5xx: bool = False


class ServiceConfig(_Model):
    name: str = Field(pattern=_NAME)
    hosts: list[str] = Field(default_factory=list, description="empty: any Host")
    path_prefix: str = "/"
    versions: list[VersionConfig] = Field(min_length=1)
    match: list[MatchRule] = Field(default_factory=list)
    sticky: StickyConfig | None = None
    balance: Literal["round_robin", "least_requests"] = "round_robin"
    mirror: MirrorConfig | None = None
    retries: int = Field(default=1, ge=0, le=5, description="other endpoints to try")
    outlier: OutlierConfig = Field(default_factory=OutlierConfig)

    @field_validator("path_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"path_prefix must start with '/', got {value!r}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        names = [v.name for v in self.versions]
        if len(set(names)) != len(names):
            raise ValueError(f"version names must be unique, got {names}")
        if sum(v.weight for v in self.versions) <= 0:
            raise ValueError("at least one version needs a positive weight")
        for rule in self.match:
            if rule.version not in names:
                raise ValueError(f"match rule names unknown version {rule.version!r}")
        if self.mirror is not None and self.mirror.version not in names:
            raise ValueError(f"mirror names unknown version {self.mirror.version!r}")
        return self

    def weights(self) -> dict[str, int]:
        return {v.name: v.weight for v in self.versions}

    def with_weights(self, weights: dict[str, int]) -> ServiceConfig:
        """A copy with the named versions' weights replaced; others keep theirs."""
        known = {v.name for v in self.versions}
        unknown = sorted(set(weights) - known)
        if unknown:
            raise ValueError(f"service {self.name!r} has no version {', '.join(unknown)}")
        versions = [
            v.model_copy(update={"weight": weights.get(v.name, v.weight)}) for v in self.versions
        ]
        # Validate the result as a whole (weights in range, total positive).
        return ServiceConfig.model_validate(
            {**self.model_dump(), "versions": [v.model_dump() for v in versions]}
        )


class ListenerConfig(_Model):
    address: str = "127.0.0.1:8080"
    services: list[ServiceConfig] = Field(min_length=1)
    tls: ListenerTLS | None = None

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        split_address(value)
        return value


class AdminConfig(_Model):
    address: str = Field(default="127.0.0.1:9901", description="host:port or unix:/path")
    token_file: str | None = None

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        if value.startswith("unix:"):
            if len(value) <= len("unix:"):
                raise ValueError("expected unix:/path/to/socket")
            return value
        split_address(value)
        return value


class TimeoutConfig(_Model):
    """Seconds. Upstream read is the longest silence while a response is awaited."""

    connect: float = Field(default=2.0, gt=0)
    upstream_read: float = Field(default=30.0, gt=0)
    client_header: float = Field(default=10.0, gt=0)
    client_idle: float = Field(default=60.0, gt=0)
    client_body: float = Field(default=30.0, gt=0, description="longest silence in a body")
    pool_idle: float = Field(default=30.0, gt=0)


class LimitConfig(_Model):
    max_header_bytes: int = Field(default=64 * 1024, ge=1024)
    max_header_count: int = Field(default=100, ge=8)
    max_idle_per_endpoint: int = Field(default=256, ge=0)


class StatsConfig(_Model):
    """The snapshot ring read by the `mesh` provider (see mesh/README.md)."""

    interval: float = Field(default=0.5, gt=0)
    retention: float = Field(default=1800.0, gt=0)


class AccessLogConfig(_Model):
    """JSON lines, written in batches; the file is rotated at `max_bytes` keeping
    `backups` old files (path.1 is the newest)."""

    path: str
    max_bytes: int = Field(default=100 * 1024 * 1024, ge=4096)
    backups: int = Field(default=3, ge=0, le=100)


class MeshConfig(_Model):
    listeners: list[ListenerConfig] = Field(min_length=1)
    admin: AdminConfig | None = None
    access_log: AccessLogConfig | None = None
    timeouts: TimeoutConfig = Field(default_factory=TimeoutConfig)
    limits: LimitConfig = Field(default_factory=LimitConfig)
    stats: StatsConfig = Field(default_factory=StatsConfig)

    @model_validator(mode="after")
    def _unique_services(self) -> Self:
        # The admin API addresses services by name alone.
        names = [s.name for listener in self.listeners for s in listener.services]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"service names must be unique across listeners: {dupes}")
        return self

    def services(self) -> dict[str, ServiceConfig]:
        return {s.name: s for listener in self.listeners for s in listener.services}


def _where(error: ErrorDetails) -> str:
    return ".".join(str(part) for part in error["loc"]) or "(top level)"


def describe(error: ValidationError, source: str) -> str:
    """The first problem as one line: source, field path, what was expected."""
    first = error.errors()[0]
    message = str(first["msg"]).removeprefix("Value error, ")
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{source}: {_where(first)}: {message}{more}"


def parse_config(data: object, source: str) -> MeshConfig:
    try:
        return MeshConfig.model_validate(data)
    except ValidationError as exc:
        raise MeshConfigError(describe(exc, source)) from None


def load_config(path: str | Path) -> MeshConfig:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise MeshConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise MeshConfigError(f"{path}:{line}: not valid YAML") from None
    return parse_config(data, str(path))


def config_from_flags(
    *,
    listen: str,
    service: str,
    versions: list[str],
    weights: list[str],
    admin: str | None,
) -> MeshConfig:
    """The one-service config that `--version NAME=HOST:PORT --weight NAME=N` describe.

    With two versions and only one weight given, the other gets the rest of 100.
    """
    endpoints: dict[str, list[str]] = {}
    for item in versions:
        name, sep, address = item.partition("=")
        if not sep:
            raise MeshConfigError(f"--version: expected NAME=HOST:PORT, got {item!r}")
        endpoints.setdefault(name, []).append(address)
    given = parse_weights(weights, "--weight")
    resolved = complete_weights(list(endpoints), given, default_first=True)
    data: dict[str, Any] = {
        "listeners": [
            {
                "address": listen,
                "services": [
                    {
                        "name": service,
                        "versions": [
                            {"name": n, "endpoints": e, "weight": resolved[n]}
                            for n, e in endpoints.items()
                        ],
                    }
                ],
            }
        ]
    }
    if admin is not None:
        data["admin"] = {"address": admin}
    return parse_config(data, "flags")


def parse_weights(items: list[str], flag: str) -> dict[str, int]:
    weights: dict[str, int] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not value.strip().isdigit():
            raise MeshConfigError(f"{flag}: expected NAME=INTEGER, got {item!r}")
        weights[name.strip()] = int(value)
    return weights


def complete_weights(
    names: list[str], given: dict[str, int], *, default_first: bool = False
) -> dict[str, int]:
    """Fills in the weights not given: with exactly one version left out, it gets what
    the others leave of 100; with none given, the first version gets 100."""
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise MeshConfigError(f"weight names unknown version {', '.join(unknown)}")
    missing = [n for n in names if n not in given]
    result = dict(given)
    if not given and default_first:
        result = {n: (100 if i == 0 else 0) for i, n in enumerate(names)}
    elif len(missing) == 1:
        rest = 100 - sum(given.values())
        if rest < 0:
            raise MeshConfigError(
                f"weights {given} add up to more than 100, so {missing[0]} gets nothing"
            )
        result[missing[0]] = rest
    else:
        for n in missing:
            result[n] = 0
    return result


def with_access_log(config: MeshConfig, path: str) -> MeshConfig:
    """`--access-log PATH` over whatever the config says."""
    data = config.model_dump(mode="json")
    data["access_log"] = {**(data.get("access_log") or {}), "path": path}
    return parse_config(data, "--access-log")
