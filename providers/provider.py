"""The provider seam: one small protocol for metrics, one for logs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

from analysis.metric_data import MetricData, Scope

DataKind = Literal["auto", "series", "histogram", "counts"]


class ProviderError(Exception):
    """A provider could not answer. The message is shown to users: it must name what
    failed (provider, metric, the source's own error text) and never a credential."""

    def __init__(self, provider: str, message: str, *, retryable: bool = False) -> None:
        super().__init__(f"{provider}: {message}")
        self.provider = provider
        self.retryable = retryable


@dataclass(frozen=True)
class Window:
    """[start, end) in Unix seconds; `step` is the resolution asked of range queries."""

    start: float
    end: float
    step: float = 10.0

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise ValueError(f"window end {self.end} is not after start {self.start}")
        if self.step <= 0:
            raise ValueError("window step must be positive")

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class MetricQuery:
    """One metric for one version over one window.

    `query` is the user's template; providers substitute `{{service}}`, `{{scope}}`,
    `{{version}}`, `{{window}}` and `{{step}}` (and any `variables`) before sending it.
    """

    metric: str
    query: str
    scope: Scope
    service: str
    version: str
    window: Window
    kind: DataKind = "auto"
    variables: dict[str, str] = field(default_factory=dict)

    def render(self, template: str | None = None) -> str:
        """The query with its placeholders filled in."""
        values = {
            "service": self.service,
            "scope": self.scope,
            "version": self.version,
            "window": f"{max(1, round(self.window.seconds))}s",
            "step": f"{max(1, round(self.window.step))}s",
            **self.variables,
        }
        text = self.query if template is None else template
        for key, value in values.items():
            text = text.replace("{{" + key + "}}", value).replace("{{ " + key + " }}", value)
        return text


class MetricProvider(Protocol):
    name: str

    async def fetch(self, query: MetricQuery) -> MetricData:
        """Data for one metric, one version, one window; raises ProviderError."""
        ...

    async def is_online(self) -> bool:
        ...

    async def aclose(self) -> None:
        ...


@dataclass(frozen=True)
class LogEvent:
    timestamp: float
    message: str
    level: str = ""
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LogQuery:
    query: str
    scope: Scope
    service: str
    version: str
    window: Window
    limit: int = 10_000


class LogProvider(Protocol):
    name: str

    async def fetch_logs(self, query: LogQuery) -> list[LogEvent]:
        ...

    async def aclose(self) -> None:
        ...
