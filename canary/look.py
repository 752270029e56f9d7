"""One look: fetch every metric of both versions for a window, concurrently, and judge it.

A provider that fails or a must-have metric without data makes the whole look an Error
measurement: never a Pass (Kayenta's users lost canaries to empty data that passed).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from analysis.judge import Decision, Judge, LookOutcome
from analysis.metric_data import SCOPES, MetricData, MetricPair, Scope
from analysis.report import summarize_side
from canary.spec import AnalysisSpec, MetricSpec
from providers.provider import MetricProvider, MetricQuery, ProviderError, Window

# Per-fetch ceiling on top of each provider's own request timeouts, so one stuck source
# cannot stall a rollout.
FETCH_TIMEOUT = 30.0


@dataclass
class LookResult:
    phase: str  # Successful | Failed | Inconclusive | Error (Argo Rollouts' measurement phases)
    decision: Decision | None
    outcome: LookOutcome | None
    message: str
    errors: dict[str, str] = field(default_factory=dict)
    # Per metric and version, the compact distribution of analysis.report.summarize_side,
    # so reports can chart both versions and the live view can show request rates.
    sides: dict[str, dict[str, Any]] = field(default_factory=dict)
    window: tuple[float, float] | None = None

    def result_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"errors": self.errors}
        if self.sides:
            out["sides"] = self.sides
        if self.window is not None:
            out["window"] = list(self.window)
        if self.outcome is not None:
            out["judgeResult"] = self.outcome.result.to_kayenta()
        return out


PHASE_OF_DECISION = {
    Decision.CONTINUE: "Successful",
    Decision.PROMOTE: "Successful",
    Decision.ROLLBACK: "Failed",
    Decision.INCONCLUSIVE: "Inconclusive",
}


async def _fetch(
    provider: MetricProvider, metric: MetricSpec, scope: Scope, service: str, version: str,
    window: Window,
) -> MetricData:
    query = MetricQuery(
        metric=metric.name, query=metric.query, scope=scope, service=service, version=version,
        window=window, kind=metric.kind, variables=dict(metric.variables),
    )
    try:
        return await asyncio.wait_for(provider.fetch(query), FETCH_TIMEOUT)
    except TimeoutError:
        raise ProviderError(provider.name, f"{metric.name} ({scope}): no answer within "
                            f"{FETCH_TIMEOUT:.0f}s") from None


async def fetch_all(
    analysis: AnalysisSpec,
    providers: Mapping[str, MetricProvider],
    service: str,
    window: Window,
    versions: Mapping[Scope, str] | None = None,
) -> tuple[dict[str, MetricPair], dict[str, str]]:
    """Every metric for both versions, fetched concurrently; errors by metric name.

    `versions` are the labels the sources know each version by (`{{version}}` in a
    query); the scope name itself when the spec gives none."""
    jobs = []
    keys: list[tuple[str, Scope]] = []
    for metric in analysis.metrics:
        provider = providers[metric.provider]
        for scope in SCOPES:
            version = (versions or {}).get(scope) or scope
            jobs.append(_fetch(provider, metric, scope, service, version, window))
            keys.append((metric.name, scope))
    results = await asyncio.gather(*jobs, return_exceptions=True)
    got: dict[str, dict[Scope, MetricData]] = {}
    errors: dict[str, str] = {}
    for (name, scope), res in zip(keys, results, strict=True):
        if isinstance(res, BaseException):
            if not isinstance(res, Exception):
                raise res
            text = str(res) if isinstance(res, ProviderError) else f"{type(res).__name__}: {res}"
            errors.setdefault(name, text)
        else:
            got.setdefault(name, {})[scope] = res
    pairs = {
        name: MetricPair(baseline=sides["baseline"], canary=sides["canary"])
        for name, sides in got.items()
        if name not in errors
    }
    return pairs, errors


async def take_look(
    analysis: AnalysisSpec,
    providers: Mapping[str, MetricProvider],
    judge: Judge,
    service: str,
    window: Window,
    state: Mapping[str, Any] | None,
    final: bool,
    versions: Mapping[Scope, str] | None = None,
) -> LookResult:
    pairs, errors = await fetch_all(analysis, providers, service, window, versions)
    for metric in analysis.metrics:
        pair = pairs.get(metric.name)
        missing = pair is not None and (pair.baseline.empty or pair.canary.empty)
        if pair is not None and metric.must_have_data and missing:
            side = "baseline" if pair.baseline.empty else "canary"
            errors[metric.name] = f"no data for the {side} in this window"
    sides = {name: {"baseline": summarize_side(pair.baseline),
                    "canary": summarize_side(pair.canary)} for name, pair in pairs.items()}
    seen = (window.start, window.end)
    if errors:
        summary = "; ".join(f"{k}: {v}" for k, v in sorted(errors.items()))
        return LookResult("Error", None, None, f"measurement error: {summary}", errors,
                          sides, seen)
    outcome = await asyncio.to_thread(
        judge.look, pairs, analysis.metric_configs(), analysis.score_thresholds(), state, final
    )
    return LookResult(
        PHASE_OF_DECISION[outcome.decision], outcome.decision, outcome, describe(outcome),
        sides=sides, window=seen,
    )


def describe(outcome: LookOutcome) -> str:
    """One line a person reads in events and reports: the judge's own reason, or the
    verdict with the score and the metrics that pulled it down."""
    result = outcome.result
    if result.reason:
        return result.reason
    bad = [r for r in result.results
           if r.classification.value in ("High", "Low", "NodataFailMetric", "Error")]
    parts = []
    for r in bad:
        effect = r.evidence.effect
        shown = f" ({effect:+.1%})" if effect is not None and math.isfinite(effect) else ""
        parts.append(f"{r.name} {r.classification.value}{shown}"
                     + (" [critical]" if r.critical else ""))
    tail = f": {', '.join(parts)}" if parts else ": every metric passed"
    return f"score {result.score:g} ({result.verdict.value}){tail}"
