"""What one analysis needs, read from a request body, and judging it.

Two ways to give the data: inline (a Kayenta metric-set-pair list, judged with the
Kayenta-compatible mann-whitney judge), or providers plus a time window (fetched and
judged like one look of a rollout). A window that ends in the future makes the run wait
for it; the stored request is enough to redo the whole job after a restart.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from analysis.judge_result import JudgeResult
from analysis.metric_config import MetricConfig, Thresholds
from analysis.metric_data import MetricPair
from canary.input_error import InputError
from canary.spec import AnalysisSpec, parse_duration
from providers.provider import MetricProvider, ProviderError, Window


class ThresholdsBody(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    pass_: float = Field(alias="pass", ge=0, le=100)
    marginal: float = Field(ge=0, le=100)

    @model_validator(mode="after")
    def _ordered(self) -> ThresholdsBody:
        if self.marginal > self.pass_:
            raise ValueError("marginal must not exceed pass")
        return self


class WindowBody(BaseModel):
    """Either start and end (Unix seconds or ISO-8601), or `last` (the window ending
    now), or `duration` (a window starting now: the run waits for it to pass)."""

    model_config = ConfigDict(extra="forbid")
    start: float | str | None = None
    end: float | str | None = None
    last: float | str | None = None
    duration: float | str | None = None

    @model_validator(mode="after")
    def _one_form(self) -> WindowBody:
        forms = [self.start is not None and self.end is not None, self.last is not None,
                 self.duration is not None]
        if sum(forms) != 1:
            raise ValueError("give start and end, or last, or duration")
        return self

    def resolve(self, now: float) -> tuple[float, float]:
        if self.last is not None:
            return now - parse_duration(self.last), now
        if self.duration is not None:
            return now, now + parse_duration(self.duration)
        assert self.start is not None and self.end is not None
        start, end = _instant(self.start), _instant(self.end)
        if end <= start:
            raise ValueError("window end must be after its start")
        return start, end


def _instant(value: float | str) -> float:
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(value)
    except ValueError:
        pass
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


class AnalysisBody(BaseModel):
    """`POST /api/v1/analyses`: a Kayenta canary config or canaryctl analysis spec, and
    either inline metric data or providers with a window."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    name: str | None = Field(None, description="a label shown in status answers")
    config: dict[str, Any] | None = Field(
        None, description="Kayenta canary config (metrics[].analysisConfigurations.canary)")
    analysis: dict[str, Any] | None = Field(
        None, description="canaryctl analysis spec (the `spec.analysis` of a Rollout)")
    data: list[dict[str, Any]] | None = Field(
        None, description='Kayenta metric set pairs [{"name", "tags", "values": '
                          '{"control": [...], "experiment": [...]}}]')
    thresholds: ThresholdsBody | None = None
    service: str | None = None
    providers: dict[str, dict[str, Any]] = Field(default_factory=dict)
    window: WindowBody | None = None
    marginal_status: Literal["FAILED", "SUCCEEDED"] = Field(
        "FAILED", alias="marginalStatus",
        description="the Spinnaker status of a Marginal verdict")


@dataclass
class InlineJob:
    configs: list[MetricConfig]
    weights: dict[str, float]
    thresholds: Thresholds
    pairs: dict[str, MetricPair]
    tags: dict[str, dict[str, str]]


@dataclass
class ProviderJob:
    analysis: AnalysisSpec
    service: str
    providers: dict[str, dict[str, Any]]
    start: float
    end: float


@dataclass
class JobOutcome:
    """`result` is None for a measurement error (a provider failed, data missing)."""

    result: JudgeResult | None
    errors: dict[str, str] = field(default_factory=dict)
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"errors": self.errors}
        if self.result is not None:
            out["judgeResult"] = self.result.to_kayenta()
        return out


Job = InlineJob | ProviderJob


def _invalid(source: str, prefix: str, exc: ValidationError) -> InputError:
    from canary.spec_loader import format_loc

    err = exc.errors()[0]
    loc = format_loc(tuple(p for p in err["loc"] if not str(p).startswith("function-")))
    msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    path = ".".join(p for p in (prefix, loc) if p)
    return InputError(source, path, msg)


def build_job(body: AnalysisBody, source: str, now: float) -> Job:
    """Validates everything a run needs; raises InputError naming the field."""
    from canary.kayenta_config import (
        KayentaMetricSetPairs,
        group_weights,
        metric_configs,
        metric_pairs,
        parse_kayenta_config,
    )
    from canary.kayenta_config import thresholds as config_thresholds

    if (body.config is None) == (body.analysis is None):
        raise InputError(source, "config", "give either config (a Kayenta canary config) or "
                         "analysis (a canaryctl analysis spec)")
    override = None if body.thresholds is None else Thresholds(
        pass_=body.thresholds.pass_, marginal=body.thresholds.marginal)
    if body.data is not None:
        if body.config is not None:
            kc = parse_kayenta_config(body.config, source + ": config")
            configs, weights = metric_configs(kc), group_weights(kc)
            base = config_thresholds(kc) or Thresholds()
        else:
            spec = _analysis_spec(body.analysis, source)
            configs, weights = spec.metric_configs(), dict(spec.group_weights)
            base = spec.score_thresholds()
        try:
            pairs = KayentaMetricSetPairs.model_validate({"pairs": body.data}).pairs
        except ValidationError as exc:
            raise _invalid(source, "data", exc) from None
        known = {c.name for c in configs}
        for i, pair in enumerate(pairs):
            if pair.name not in known:
                raise InputError(source, f"data[{i}].name",
                                 f"a metric named in the config, got {pair.name!r}")
        return InlineJob(configs, weights, override or base, metric_pairs(pairs),
                         {p.name: dict(p.tags) for p in pairs})
    if body.analysis is None:
        raise InputError(source, "data", "inline data (a metric set pair list) is needed with "
                         "a Kayenta config; use analysis + providers + window to fetch data")
    spec = _analysis_spec(body.analysis, source)
    if not body.service:
        raise InputError(source, "service", "the service name is needed to fetch metrics")
    if body.window is None:
        raise InputError(source, "window", "a window (start+end, last or duration) is needed "
                         "to fetch metrics")
    try:
        start, end = body.window.resolve(now)
    except ValueError as exc:
        raise InputError(source, "window", str(exc)) from None
    from providers.settings import parse_provider_settings

    for name, settings in body.providers.items():
        try:
            parse_provider_settings(settings)
        except ValidationError as exc:
            raise _invalid(source, f"providers.{name}", exc) from None
    for i, metric in enumerate(spec.metrics):
        if metric.provider not in body.providers:
            raise InputError(source, f"analysis.metrics[{i}].provider",
                             f"a provider defined under providers, got {metric.provider!r}")
    if override is not None:
        from canary.spec import ThresholdSpec

        spec = spec.model_copy(update={"thresholds": ThresholdSpec.model_validate(
            {"pass": override.pass_, "marginal": override.marginal})})
    return ProviderJob(spec, body.service, dict(body.providers), start, end)


def _analysis_spec(data: Any, source: str) -> AnalysisSpec:
    try:
        return AnalysisSpec.model_validate(data)
    except ValidationError as exc:
        raise _invalid(source, "analysis", exc) from None


def build_provider(name: str, settings: dict[str, Any]) -> MetricProvider:
    from providers.factory import build_metric_provider
    from providers.settings import parse_provider_settings

    return build_metric_provider(name, parse_provider_settings(settings))


async def run_job(job: Job, clock: Any = time.time) -> JobOutcome:
    """Judges the job, waiting first for a provider window that has not ended yet."""
    if isinstance(job, InlineJob):
        from analysis.mann_whitney_judge import MannWhitneyJudge

        judge = MannWhitneyJudge(job.weights)
        result = await asyncio.to_thread(judge.judge, job.pairs, job.configs, job.thresholds,
                                         job.tags)
        return JobOutcome(result, message=result.reason)
    remaining = job.end - clock()
    if remaining > 0:
        await asyncio.sleep(remaining)
    from canary.look import take_look
    from canary.rollout_setup import make_judge

    providers: dict[str, MetricProvider] = {}
    try:
        for name, settings in job.providers.items():
            try:
                providers[name] = build_provider(name, settings)
            except (ValueError, ProviderError) as exc:
                return JobOutcome(None, {name: str(exc)}, f"provider {name}: {exc}")
        step = max(1.0, (job.end - job.start) / 600.0)
        look = await take_look(job.analysis, providers, make_judge(job.analysis), job.service,
                               Window(job.start, job.end, step=step), None, final=True)
    finally:
        for provider in providers.values():
            close = getattr(provider, "aclose", None)
            if close is not None:
                await close()
    if look.outcome is None:
        return JobOutcome(None, look.errors, look.message)
    return JobOutcome(look.outcome.result, message=look.message)
