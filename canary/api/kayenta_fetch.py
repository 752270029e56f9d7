"""A Kayenta execution without inline data: fetch every metric of the canary config for
the control and experiment scopes from a server-side metrics account, then judge.

The account is one of the providers `canaryctl serve --providers FILE` was started with,
picked by the request's `metricsAccountName` (Kayenta's own parameter). As in Kayenta, a
fetch that fails ends the whole execution (terminal, with the error), and a metric whose
query returns no series is judged with no data (Nodata, or a failure with mustHaveData).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from analysis.metric_config import MetricConfig, Thresholds
from analysis.metric_data import MetricData, MetricPair, Scope
from canary.api.analysis_job import JobOutcome
from canary.api.kayenta_queries import QueryError, parse_scopes, query_type, render
from canary.input_error import InputError
from providers.provider import MetricProvider, MetricQuery, ProviderError, Window

# Which provider types serve which Kayenta query types.
_SERVES = {"prometheus": "prometheus", "datadog": "datadog"}


@dataclass(frozen=True)
class PlannedFetch:
    metric: str
    scope: Scope
    query: str
    window: Window
    kayenta_scope: str


@dataclass
class KayentaFetchJob:
    configs: list[MetricConfig]
    weights: dict[str, float]
    thresholds: Thresholds
    account: str
    settings: dict[str, Any]
    fetches: list[PlannedFetch]


def pick_account(accounts: Mapping[str, Mapping[str, Any]], name: str | None,
                 source: str) -> str:
    """The metrics account a request names, or the server's default one."""
    if name:
        if name not in accounts:
            known = ", ".join(sorted(accounts)) or "none: start serve with --providers FILE"
            raise InputError(source, "metricsAccountName",
                             f"a metrics account of this server ({known}), got {name!r}")
        return name
    if len(accounts) == 1:
        return next(iter(accounts))
    if "default" in accounts:
        return "default"
    if not accounts:
        raise InputError(source, "executionRequest.metricSetPairs",
                         "inline metric data, or a metrics account to fetch it from: start "
                         "canaryctl serve with --providers FILE")
    raise InputError(source, "metricsAccountName", "one of " + ", ".join(sorted(accounts))
                     + " (the server has several metrics accounts and none named default)")


def build_kayenta_job(config: dict[str, Any], execution_request: dict[str, Any],
                      account_name: str | None, accounts: Mapping[str, Mapping[str, Any]],
                      source: str, override: Thresholds | None) -> KayentaFetchJob:
    """Validates the config, the scopes and every query; raises InputError."""
    from canary.kayenta_config import group_weights, metric_configs, parse_kayenta_config
    from canary.kayenta_config import thresholds as config_thresholds

    kc = parse_kayenta_config(config, source + ": canaryConfig")
    account = pick_account(accounts, account_name, source)
    settings = dict(accounts[account])
    try:
        scopes = parse_scopes(execution_request.get("scopes"))
        raw_templates = config.get("templates") or {}
        if not isinstance(raw_templates, dict):
            raise QueryError("canaryConfig.templates", "a mapping of names to templates")
        templates = {str(k): str(v) for k, v in raw_templates.items()}
        fetches: list[PlannedFetch] = []
        for i, metric in enumerate(kc.metrics):
            field = f"canaryConfig.metrics[{i}].query"
            kind = query_type(metric.query, field)
            if _SERVES[kind] != settings.get("type"):
                raise QueryError(f"{field}.type", f"a {settings.get('type')} query (metrics "
                                 f"account {account} is {settings.get('type')}), got {kind!r}")
            scope_name = str((metric.model_extra or {}).get("scopeName") or "default")
            pair = scopes.get(scope_name)
            if pair is None:
                raise QueryError(f"canaryConfig.metrics[{i}].scopeName",
                                 f"a scope of executionRequest.scopes "
                                 f"({', '.join(sorted(scopes))}), got {scope_name!r}")
            for side, ks in (("baseline", pair.control_scope),
                             ("canary", pair.experiment_scope)):
                start, end = ks.window()
                fetches.append(PlannedFetch(
                    metric.name, side,  # type: ignore[arg-type]
                    render(metric.query, templates, ks, field),
                    Window(start, end, step=ks.step), ks.scope))
    except QueryError as exc:
        raise InputError(source, exc.field, str(exc)) from None
    thresholds = override or config_thresholds(kc) or Thresholds()
    return KayentaFetchJob(metric_configs(kc), group_weights(kc), thresholds, account,
                           settings, fetches)


def job_thresholds(execution_request: Mapping[str, Any]) -> Thresholds | None:
    t = execution_request.get("thresholds")
    if isinstance(t, dict) and "pass" in t and "marginal" in t:
        return Thresholds(pass_=float(t["pass"]), marginal=float(t["marginal"]))
    return None


async def run_kayenta_job(job: KayentaFetchJob) -> JobOutcome:
    from analysis.mann_whitney_judge import MannWhitneyJudge
    from canary.api.analysis_job import build_provider

    try:
        provider: MetricProvider = build_provider(job.account, job.settings)
    except (ValueError, ProviderError) as exc:
        return JobOutcome(None, {job.account: str(exc)}, f"metrics account {job.account}: {exc}")
    try:
        results = await asyncio.gather(*(_fetch(provider, f) for f in job.fetches),
                                       return_exceptions=True)
    finally:
        await provider.aclose()
    errors: dict[str, str] = {}
    data: dict[str, dict[str, MetricData]] = {}
    for planned, got in zip(job.fetches, results, strict=True):
        if isinstance(got, BaseException):
            if not isinstance(got, ProviderError | ValueError):
                raise got
            errors.setdefault(planned.metric, f"{planned.scope}: {got}")
            continue
        data.setdefault(planned.metric, {})[planned.scope] = got
    if errors:
        first = next(iter(errors.items()))
        return JobOutcome(None, errors, f"metric {first[0]} could not be fetched: {first[1]}")
    pairs = {name: MetricPair(baseline=sides["baseline"], canary=sides["canary"])
             for name, sides in data.items()}
    judge = MannWhitneyJudge(job.weights)
    result = await asyncio.to_thread(judge.judge, pairs, job.configs, job.thresholds)
    return JobOutcome(result, message=result.reason)


async def _fetch(provider: MetricProvider, planned: PlannedFetch) -> MetricData:
    query = MetricQuery(metric=planned.metric, query=planned.query, scope=planned.scope,
                        service=planned.kayenta_scope, version=planned.kayenta_scope,
                        window=planned.window, kind="series")
    return await provider.fetch(query)
