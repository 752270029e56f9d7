"""Kayenta canary configs and metric-set-pair lists, as Kayenta users have them, and
their conversion to the analysis types.

Real Kayenta configs carry many fields we do not use (queries, scopes, templates,
judge settings); unknown fields are tolerated everywhere. The fields we do read are
validated, and a problem becomes one InputError line naming file, field path and what
was expected.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from analysis.metric_config import Direction, EffectSize, MetricConfig, Thresholds
from analysis.metric_data import MetricData, MetricPair, Series
from canary.input_error import InputError
from canary.spec_loader import format_loc, parse_yaml


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class KayentaEffectSize(_Lenient):
    measure: Literal["meanRatio", "cles"] = "meanRatio"
    allowed_increase: float | None = Field(None, alias="allowedIncrease")
    allowed_decrease: float | None = Field(None, alias="allowedDecrease")
    critical_increase: float | None = Field(None, alias="criticalIncrease")
    critical_decrease: float | None = Field(None, alias="criticalDecrease")


class KayentaOutliers(_Lenient):
    strategy: Literal["keep", "remove", "none"] = "keep"
    outlier_factor: float = Field(3.0, alias="outlierFactor", gt=0)


class KayentaCanaryAnalysis(_Lenient):
    """`metrics[].analysisConfigurations.canary`."""

    # Kayenta treats any direction it does not know as "either"; so do we.
    direction: str = "either"
    nan_strategy: Literal["remove", "replace", "none"] = Field("remove", alias="nanStrategy")
    critical: bool = False
    must_have_data: bool = Field(False, alias="mustHaveData")
    muted: bool = False
    effect_size: KayentaEffectSize = Field(
        default_factory=lambda: KayentaEffectSize.model_validate({}), alias="effectSize")
    outliers: KayentaOutliers = Field(default_factory=lambda: KayentaOutliers.model_validate({}))
    tolerance: float = Field(0.25, ge=0)
    confidence_level: float = Field(0.98, alias="confidenceLevel", gt=0, lt=1)


class KayentaAnalysisConfigurations(_Lenient):
    canary: KayentaCanaryAnalysis = Field(
        default_factory=lambda: KayentaCanaryAnalysis.model_validate({}))


class KayentaMetric(_Lenient):
    name: str = Field(min_length=1)
    query: Any = None
    groups: list[str] = Field(default_factory=list)
    analysis_configurations: KayentaAnalysisConfigurations = Field(
        default_factory=KayentaAnalysisConfigurations, alias="analysisConfigurations")


class KayentaScoreThresholds(_Lenient):
    pass_: float = Field(alias="pass", ge=0, le=100)
    marginal: float = Field(ge=0, le=100)


class KayentaClassifier(_Lenient):
    group_weights: dict[str, float] = Field(default_factory=dict, alias="groupWeights")
    score_thresholds: KayentaScoreThresholds | None = Field(None, alias="scoreThresholds")

    @field_validator("group_weights")
    @classmethod
    def _weights_in_range(cls, v: dict[str, float]) -> dict[str, float]:
        if any(w < 0 for w in v.values()) or sum(v.values()) > 100 + 1e-9:
            raise ValueError("group weights must be >= 0 and sum to at most 100")
        return v


class KayentaCanaryConfig(_Lenient):
    name: str | None = None
    metrics: list[KayentaMetric] = Field(min_length=1)
    classifier: KayentaClassifier = Field(
        default_factory=lambda: KayentaClassifier.model_validate({}))

    @field_validator("metrics")
    @classmethod
    def _unique_names(cls, v: list[KayentaMetric]) -> list[KayentaMetric]:
        seen: set[str] = set()
        for m in v:
            if m.name in seen:
                raise ValueError(f"metric names must be unique, {m.name!r} appears twice")
            seen.add(m.name)
        return v


class KayentaValues(_Lenient):
    control: list[float | None]
    experiment: list[float | None]


class KayentaMetricSetPair(_Lenient):
    name: str = Field(min_length=1)
    id: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    values: KayentaValues


class KayentaMetricSetPairs(BaseModel):
    pairs: list[KayentaMetricSetPair]


# -- conversion -------------------------------------------------------------------------


def _direction(value: str) -> Direction:
    if value == "increase":
        return "increase"
    if value == "decrease":
        return "decrease"
    return "either"


def metric_configs(config: KayentaCanaryConfig) -> list[MetricConfig]:
    out = []
    for m in config.metrics:
        c = m.analysis_configurations.canary
        es = c.effect_size
        out.append(MetricConfig(
            name=m.name,
            direction=_direction(c.direction),
            critical=c.critical,
            must_have_data=c.must_have_data,
            muted=c.muted,
            groups=tuple(m.groups),
            nan_strategy="replace" if c.nan_strategy == "replace" else "remove",
            outlier_strategy="remove" if c.outliers.strategy == "remove" else "keep",
            outlier_factor=c.outliers.outlier_factor,
            effect_size=EffectSize(measure=es.measure, allowed_increase=es.allowed_increase,
                                   allowed_decrease=es.allowed_decrease,
                                   critical_increase=es.critical_increase,
                                   critical_decrease=es.critical_decrease),
            tolerance=c.tolerance,
            confidence_level=c.confidence_level,
        ))
    return out


def group_weights(config: KayentaCanaryConfig) -> dict[str, float]:
    return dict(config.classifier.group_weights)


def thresholds(config: KayentaCanaryConfig) -> Thresholds | None:
    """The config's score thresholds, or None when it has none."""
    st = config.classifier.score_thresholds
    return None if st is None else Thresholds(pass_=st.pass_, marginal=st.marginal)


def metric_pairs(pairs: Sequence[KayentaMetricSetPair]) -> dict[str, MetricPair]:
    def series(values: list[float | None]) -> Series:
        return Series.values_only([math.nan if v is None else v for v in values])

    return {p.name: MetricPair(baseline=MetricData(series=series(p.values.control)),
                               canary=MetricData(series=series(p.values.experiment)))
            for p in pairs}


# -- reading files ----------------------------------------------------------------------


def _describe(err: Any) -> str:
    kind, msg = err.get("type", ""), str(err.get("msg", "invalid value"))
    if kind == "missing":
        return "required field is missing"
    msg = msg.removeprefix("Value error, ")
    if "input" in err and kind not in ("model_type", "dict_type", "list_type"):
        shown = repr(err["input"])
        if len(shown) <= 40:
            msg += f", got {shown}"
    return msg


def _invalid(source: str, exc: ValidationError, strip: int = 0) -> InputError:
    err = exc.errors()[0]
    return InputError(source, format_loc(tuple(err["loc"])[strip:]), _describe(err))


def read_json(path: str | Path) -> Any:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(str(p), "", f"cannot read file ({exc.strerror or exc})") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(str(p), "", f"invalid JSON: {exc.msg}", exc.lineno) from exc


def is_kayenta_config(data: Any) -> bool:
    """A Kayenta canary config is recognised by `metrics[].analysisConfigurations`."""
    metrics = data.get("metrics") if isinstance(data, dict) else None
    return isinstance(metrics, list) and any(
        isinstance(m, dict) and "analysisConfigurations" in m for m in metrics)


def parse_kayenta_config(data: Any, source: str) -> KayentaCanaryConfig:
    try:
        return KayentaCanaryConfig.model_validate(data)
    except ValidationError as exc:
        raise _invalid(source, exc) from None


def load_analysis_config(
    path: str | Path,
) -> tuple[list[MetricConfig], dict[str, float], Thresholds | None]:
    """Metric configs, group weights and score thresholds (None when the file sets
    none) from a Kayenta canary config, or from canaryctl's own analysis spec: a whole
    Rollout (its `spec.analysis`) or the `analysis` mapping alone."""
    p = Path(path)
    # JSON is valid YAML, so the YAML reader takes both spellings of a config.
    data = read_json(p) if p.suffix.lower() == ".json" else parse_yaml(p)[0]
    if is_kayenta_config(data):
        config = parse_kayenta_config(data, str(p))
        return metric_configs(config), group_weights(config), thresholds(config)
    return _own_analysis_spec(data, str(p))


def _own_analysis_spec(
    data: Any, source: str
) -> tuple[list[MetricConfig], dict[str, float], Thresholds | None]:
    from pydantic import ValidationError

    from canary.spec import AnalysisSpec

    prefix: tuple[str, ...] = ()
    if isinstance(data, dict) and data.get("kind") == "Rollout":
        prefix = ("spec", "analysis")
        data = (data.get("spec") or {}).get("analysis")
    if not isinstance(data, dict) or not isinstance(data.get("metrics"), list):
        raise InputError(source, "metrics", "expected a Kayenta canary config (metrics[] with "
                         "analysisConfigurations.canary), a canaryctl Rollout, or its "
                         "analysis section (metrics[] with name and query)")
    try:
        spec = AnalysisSpec.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        raise InputError(source, format_loc((*prefix, *err["loc"])), msg) from None
    return spec.metric_configs(), dict(spec.group_weights), spec.score_thresholds()


def load_metric_set_pairs(
    path: str | Path,
) -> tuple[dict[str, MetricPair], dict[str, dict[str, str]]]:
    """Metric pairs by name and each metric's tags from a Kayenta metric-set-pair list."""
    p = Path(path)
    data = read_json(p)
    if not isinstance(data, list):
        raise InputError(str(p), "", "expected a JSON list of metric set pairs "
                         '[{"name", "tags", "values": {"control": [...], "experiment": [...]}}]')
    try:
        pairs = KayentaMetricSetPairs.model_validate({"pairs": data}).pairs
    except ValidationError as exc:
        raise _invalid(str(p), exc, strip=1) from None
    seen: set[str] = set()
    for i, pair in enumerate(pairs):
        if pair.name in seen:
            raise InputError(str(p), f"[{i}].name", f"metric names must be unique, "
                             f"{pair.name!r} appears twice")
        seen.add(pair.name)
    return metric_pairs(pairs), {pair.name: dict(pair.tags) for pair in pairs}
