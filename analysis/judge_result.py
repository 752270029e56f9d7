"""The outcome of judging one look, in a shape that serialises to Kayenta's judge result."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Classification(StrEnum):
    PASS = "Pass"
    HIGH = "High"
    LOW = "Low"
    NODATA = "Nodata"
    NODATA_FAIL = "NodataFailMetric"
    ERROR = "Error"


class Verdict(StrEnum):
    PASS = "Pass"
    MARGINAL = "Marginal"
    FAIL = "Fail"


def _json_number(x: float | None) -> float | str | None:
    # Kayenta's JSON writes NaN as the string "NaN"; keep that so its readers parse us.
    if x is None:
        return None
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    return x


@dataclass(frozen=True)
class SideStats:
    """Per-side summary statistics, Kayenta's `controlMetadata.stats`."""

    count: int
    mean: float
    min: float
    max: float
    std: float

    def to_json(self) -> dict[str, Any]:
        return {k: _json_number(float(v)) if k != "count" else v for k, v in self.__dict__.items()}


EMPTY_STATS = SideStats(count=0, mean=math.nan, min=math.nan, max=math.nan, std=math.nan)


@dataclass(frozen=True)
class Evidence:
    """Why a judge classified a metric the way it did, for reports and the live view.

    `effect` is the estimated change of the canary relative to the baseline (e.g. +0.12 =
    12% worse); `interval` its confidence interval (or confidence sequence) at the level
    `confidence`; `e_value` the sequential evidence against "canary no worse"; `p_value`
    a fixed-horizon p-value where the judge has one.
    """

    effect: float | None = None
    interval: tuple[float, float] | None = None
    confidence: float | None = None
    e_value: float | None = None
    p_value: float | None = None
    threshold: float | None = None
    method: str = ""
    details: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"method": self.method}
        for key in ("effect", "confidence", "e_value", "p_value", "threshold"):
            value = getattr(self, key)
            if value is not None:
                out[key] = _json_number(value)
        if self.interval is not None:
            out["interval"] = [_json_number(self.interval[0]), _json_number(self.interval[1])]
        if self.details:
            out["details"] = {k: _json_number(v) for k, v in self.details.items()}
        return out


@dataclass(frozen=True)
class MetricResult:
    name: str
    classification: Classification
    reason: str
    critical: bool
    groups: tuple[str, ...]
    baseline: SideStats = EMPTY_STATS
    canary: SideStats = EMPTY_STATS
    ratio: float = math.nan
    evidence: Evidence = field(default_factory=Evidence)
    muted: bool = False
    tags: dict[str, str] = field(default_factory=dict)

    def to_kayenta(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "id": self.name,
            "tags": dict(self.tags),
            "classification": self.classification.value,
            "classificationReason": self.reason,
            "critical": self.critical,
            "muted": self.muted,
            "groups": list(self.groups),
            "experimentMetadata": {"stats": self.canary.to_json()},
            "controlMetadata": {"stats": self.baseline.to_json()},
            "resultMetadata": {"ratio": _json_number(self.ratio)},
            "evidence": self.evidence.to_json(),
        }


@dataclass(frozen=True)
class GroupScore:
    name: str
    score: float
    no_data: bool = False

    def to_kayenta(self) -> dict[str, Any]:
        return {"name": self.name, "score": self.score, "classification": "",
                "classificationReason": "", "noData": self.no_data}


@dataclass(frozen=True)
class JudgeResult:
    results: tuple[MetricResult, ...]
    group_scores: tuple[GroupScore, ...]
    score: float
    verdict: Verdict
    reason: str
    judge: str

    def to_kayenta(self) -> dict[str, Any]:
        return {
            "judgeName": self.judge,
            "results": [r.to_kayenta() for r in self.results],
            "groupScores": [g.to_kayenta() for g in self.group_scores],
            "score": {
                "score": self.score,
                "classification": self.verdict.value,
                "classificationReason": self.reason,
            },
        }
