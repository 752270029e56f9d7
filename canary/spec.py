"""The Rollout spec users write (`apiVersion: canaryctl.io/v1`, `kind: Rollout`).

pydantic models only; reading YAML and turning validation errors into one line per
problem lives in `canary.spec_loader`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from analysis.metric_config import Direction, EffectSize, MetricConfig, Thresholds
from providers.settings import ProviderSettings

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: object) -> float:
    """Seconds from `30s`, `500ms`, `2m`, `1h` or a bare number of seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 30s, 2m or 500ms")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    else:
        raise ValueError("expected a duration like 30s, 2m or 500ms")
    if seconds <= 0:
        raise ValueError("expected a positive duration")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]
Weight = Annotated[int, Field(ge=0, le=100)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class Metadata(_Model):
    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)
    labels: dict[str, str] = Field(default_factory=dict)


class Target(_Model):
    """Where a version runs: static upstream addresses for now."""

    endpoints: list[str] = Field(min_length=1)
    version: str | None = Field(default=None, description="a label shown in reports")

    @field_validator("endpoints")
    @classmethod
    def _host_port(cls, endpoints: list[str]) -> list[str]:
        for endpoint in endpoints:
            host, sep, port = endpoint.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"expected host:port, got {endpoint!r}")
        return endpoints


class MeshRef(_Model):
    """The built-in mesh proxy that carries the service's traffic (its admin API)."""

    admin: str = Field(pattern=r"^https?://")
    token_env: str | None = Field(default="CANARYCTL_MESH_TOKEN", alias="tokenEnv")
    token_file: str | None = Field(default=None, alias="tokenFile")


class PauseStep(_Model):
    duration: Duration | None = None  # None: wait for `canaryctl resume` or `promote`


class AnalysisStep(_Model):
    # How long the step serves traffic before the judge looks; the analysis interval
    # of the spec when omitted.
    duration: Duration | None = None


class Step(_Model):
    """Exactly one of setWeight, pause, analysis."""

    set_weight: Weight | None = Field(default=None, alias="setWeight")
    pause: PauseStep | None = None
    analysis: AnalysisStep | None = None

    @model_validator(mode="before")
    @classmethod
    def _empty_blocks(cls, data: Any) -> Any:
        # `pause: {}` and a bare `pause:` (None in YAML) both mean an indefinite pause.
        if isinstance(data, dict):
            data = dict(data)
            for key in ("pause", "analysis"):
                if key in data and data[key] is None:
                    data[key] = {}
        return data

    @model_validator(mode="after")
    def _exactly_one(self) -> Step:
        given = [k for k in ("set_weight", "pause", "analysis") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("each step needs exactly one of setWeight, pause, analysis")
        return self


class MetricSpec(_Model):
    name: str = Field(min_length=1)
    provider: str = "mesh"
    query: str = Field(min_length=1)
    kind: Literal["auto", "series", "histogram", "counts"] = "auto"
    # Extra template values; `trials` is the denominator query of a `kind: counts` metric
    # on Prometheus or Datadog (e.g. all requests, when `query` counts the errors).
    variables: dict[str, str] = Field(default_factory=dict)
    direction: Direction = "increase"
    critical: bool = False
    must_have_data: bool = Field(default=True, alias="mustHaveData")
    muted: bool = False
    group: str | None = None
    nan_strategy: Literal["remove", "replace"] = Field(default="remove", alias="nanStrategy")
    outliers: Literal["keep", "remove"] = "keep"
    margin: float = Field(default=0.05, ge=0, le=10)
    quantile: float | None = Field(default=None, gt=0, lt=1)
    tolerance: float = Field(default=0.25, ge=0)
    confidence_level: float = Field(default=0.98, gt=0, lt=1, alias="confidenceLevel")
    allowed_increase: float | None = Field(default=None, alias="allowedIncrease")
    allowed_decrease: float | None = Field(default=None, alias="allowedDecrease")
    critical_increase: float | None = Field(default=None, alias="criticalIncrease")
    critical_decrease: float | None = Field(default=None, alias="criticalDecrease")

    def config(self) -> MetricConfig:
        return MetricConfig(
            name=self.name,
            direction=self.direction,
            critical=self.critical,
            must_have_data=self.must_have_data,
            muted=self.muted,
            groups=(self.group or self.name,),
            nan_strategy=self.nan_strategy,
            outlier_strategy=self.outliers,
            effect_size=EffectSize(
                allowed_increase=self.allowed_increase,
                allowed_decrease=self.allowed_decrease,
                critical_increase=self.critical_increase,
                critical_decrease=self.critical_decrease,
            ),
            tolerance=self.tolerance,
            confidence_level=self.confidence_level,
            margin=self.margin,
            quantile=self.quantile,
        )


class ThresholdSpec(_Model):
    pass_: float = Field(default=75.0, ge=0, le=100, alias="pass")
    marginal: float = Field(default=50.0, ge=0, le=100)

    @model_validator(mode="after")
    def _ordered(self) -> ThresholdSpec:
        if self.marginal > self.pass_:
            raise ValueError("marginal must not exceed pass")
        return self


class AnalysisSpec(_Model):
    judge: Literal["sequential", "mann-whitney"] = "sequential"
    interval: Duration = 60.0
    alpha: float = Field(default=0.05, gt=0, lt=0.5)
    thresholds: ThresholdSpec = Field(default_factory=ThresholdSpec)
    group_weights: dict[str, float] = Field(default_factory=dict, alias="groupWeights")
    failure_limit: int = Field(default=0, ge=0, alias="failureLimit")
    inconclusive_limit: int = Field(default=2, ge=0, alias="inconclusiveLimit")
    consecutive_error_limit: int = Field(default=4, ge=0, alias="consecutiveErrorLimit")
    on_error: Literal["rollback", "pause"] = Field(default="rollback", alias="onError")
    metrics: list[MetricSpec] = Field(min_length=1)

    @field_validator("metrics")
    @classmethod
    def _unique_names(cls, metrics: list[MetricSpec]) -> list[MetricSpec]:
        seen: set[str] = set()
        for m in metrics:
            if m.name in seen:
                raise ValueError(f"metric name {m.name!r} is used twice")
            seen.add(m.name)
        return metrics

    def metric_configs(self) -> list[MetricConfig]:
        return [m.config() for m in self.metrics]

    def score_thresholds(self) -> Thresholds:
        return Thresholds(pass_=self.thresholds.pass_, marginal=self.thresholds.marginal)


WebhookKind = Literal["confirm-rollout", "pre-rollout", "rollout", "confirm-traffic-increase",
                      "confirm-promotion", "post-rollout", "rollback", "event"]
NotificationEvent = Literal["started", "step", "analysis", "paused", "waiting", "webhook",
                            "promoted", "rolledback"]


class WebhookSpec(_Model):
    """A webhook of one of Flagger's kinds, called with Flagger's payload."""

    name: str = Field(min_length=1)
    type: WebhookKind
    url: str = Field(pattern=r"^https?://")
    timeout: Duration = 10.0
    retries: int = Field(default=2, ge=0, le=10)
    metadata: dict[str, str] = Field(default_factory=dict)


class NotificationSpec(_Model):
    """A Slack-compatible incoming webhook or a generic JSON webhook. The URL is a secret
    (a Slack webhook URL is its own credential), so the spec only names where it is."""

    type: Literal["slack", "webhook"]
    url_env: str | None = Field(default=None, alias="urlEnv", min_length=1)
    url_file: str | None = Field(default=None, alias="urlFile", min_length=1)
    # None: started, step, promoted and rolledback.
    events: list[NotificationEvent] | None = None

    @model_validator(mode="after")
    def _one_url_source(self) -> NotificationSpec:
        if (self.url_env is None) == (self.url_file is None):
            raise ValueError("give exactly one of urlEnv or urlFile (never the URL itself)")
        return self


class RolloutBody(_Model):
    service: str = Field(min_length=1)
    baseline: Target
    canary: Target
    mesh: MeshRef
    steps: list[Step] | None = None
    step_weights: list[Weight] | None = Field(default=None, alias="stepWeights")
    interval: Duration | None = None
    analysis: AnalysisSpec
    providers: dict[str, ProviderSettings] = Field(default_factory=dict)
    webhooks: list[WebhookSpec] = Field(default_factory=list)
    notifications: list[NotificationSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _steps_xor_weights(self) -> RolloutBody:
        if (self.steps is None) == (self.step_weights is None):
            raise ValueError(
                "give either steps or stepWeights (with interval), not both or neither"
            )
        if self.step_weights is not None and not self.step_weights:
            raise ValueError("stepWeights needs at least one weight")
        if self.steps is not None and not any(s.set_weight for s in self.steps):
            raise ValueError("steps never send traffic to the canary: add a setWeight step")
        return self

    @model_validator(mode="after")
    def _providers_named(self) -> RolloutBody:
        for metric in self.analysis.metrics:
            if metric.provider != "mesh" and metric.provider not in self.providers:
                raise ValueError(
                    f"metric {metric.name!r} uses provider {metric.provider!r}, which is not "
                    f"defined under providers (defined: {sorted(self.providers) or 'none'})"
                )
        return self

    @field_validator("webhooks")
    @classmethod
    def _unique_webhooks(cls, webhooks: list[WebhookSpec]) -> list[WebhookSpec]:
        names = [w.name for w in webhooks]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"webhook name {name!r} is used twice")
        return webhooks

    def plan(self) -> list[Step]:
        """The steps to execute; the stepWeights shorthand becomes setWeight + analysis."""
        if self.steps is not None:
            return list(self.steps)
        step_len = self.interval or self.analysis.interval
        plan: list[Step] = []
        for weight in self.step_weights or []:
            plan.append(Step(setWeight=weight))
            plan.append(Step(analysis=AnalysisStep(duration=step_len)))
        return plan


class Rollout(_Model):
    api_version: Literal["canaryctl.io/v1"] = Field(alias="apiVersion")
    kind: Literal["Rollout"]
    metadata: Metadata
    spec: RolloutBody
