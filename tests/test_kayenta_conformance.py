"""Every vector transcribed from Kayenta's test suites, reproduced by our code.

The vectors live in ../shared/conformance/kayenta_vectors.json next to the repository
(CI clones the repository beside a copy of shared/). A missing file fails the suite.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from analysis.effect_size import cles, cohen_d, mean_ratio
from analysis.judge_result import Classification, MetricResult
from analysis.kayenta_classifier import classify_mann_whitney, classify_mean_inequality
from analysis.mann_whitney import R_ROOT_TOLERANCE, location_shift, normal_quantile, wilcoxon_diff
from analysis.metric_config import EffectSize
from analysis.scoring import score
from analysis.summary_stats import summarize
from analysis.transforms import (
    iqr_outliers,
    ksigma_outliers,
    percentile_r7,
    remove_nans,
    remove_outliers,
    replace_nans,
)

VECTORS = Path(__file__).resolve().parents[2] / "shared/conformance/kayenta_vectors.json"


def _load() -> list[Any]:
    if not VECTORS.is_file():
        return [pytest.param(None, id="kayenta-vectors-missing")]
    vectors = json.loads(VECTORS.read_text())
    return [pytest.param(v, id=v["source"]) for v in vectors]


def _arr(values: list[float | None]) -> np.ndarray[Any, np.dtype[np.float64]]:
    return np.array([math.nan if v is None else v for v in values], dtype=np.float64)


def _num(x: float | str) -> float:
    return math.nan if x == "NaN" else float(x)


def _close(actual: float, expected: float | str, tol: float) -> None:
    e = _num(expected)
    if math.isnan(e):
        assert math.isnan(actual), f"expected NaN, got {actual}"
    else:
        assert actual == pytest.approx(e, abs=tol), f"expected {e}, got {actual}"


def _mann_whitney_classifier(v: dict[str, Any], root_tolerance: float | None) -> None:
    p, exp = v["params"], v["expected"]
    allowed_dec, allowed_inc = p["effectSizeThresholds"]
    crit_dec, crit_inc = p["criticalThresholds"]
    result = classify_mann_whitney(
        _arr(v["control"]), _arr(v["experiment"]),
        direction=p["direction"], nan_strategy=p["nanStrategy"],
        critical=p["isCriticalMetric"], must_have_data=p["isDataRequired"],
        tolerance=p["tolerance"], confidence_level=p["confLevel"],
        effect_size=EffectSize(measure=p["effectSizeMeasure"], allowed_increase=allowed_inc,
                               allowed_decrease=allowed_dec, critical_increase=crit_inc,
                               critical_decrease=crit_dec),
        root_tolerance=root_tolerance,
    )
    checked = 0
    if "classification" in exp:
        assert result.classification.value == exp["classification"]
        checked += 1
    if "critical" in exp:
        assert result.critical is exp["critical"]
        checked += 1
    if "deviation" in exp:
        _close(result.deviation, exp["deviation"], 1e-9)
        checked += 1
    if exp.get("reason_nonempty"):
        assert result.reason.strip()
        checked += 1
    assert checked == len(exp), f"unchecked expectations in {exp}"


def _scorer(v: dict[str, Any]) -> None:
    p, exp = v["params"], v["expected"]
    results = [MetricResult(name=m["name"], classification=Classification(m["classification"]),
                            reason="", critical=m["critical"], groups=tuple(m["groups"]))
               for m in p["metrics"]]
    summary = score(results, p["groupWeights"])
    assert summary.score == exp["summaryScore"]
    if "nodataGroupScore" in exp:
        nodata = [g for g in summary.group_scores if g.no_data]
        assert len(nodata) == 1
        assert nodata[0].score == exp["nodataGroupScore"]


def _check(v: dict[str, Any]) -> None:
    kind, p, exp = v["kind"], v["params"], v["expected"]
    control, experiment = _arr(v["control"]), _arr(v["experiment"])
    if kind == "mann_whitney_classifier":
        # Classifications must agree whether interval ends are solved like R or precisely.
        _mann_whitney_classifier(v, R_ROOT_TOLERANCE)
        _mann_whitney_classifier(v, None)
    elif kind == "mean_inequality_classifier":
        result = classify_mean_inequality(control, experiment, direction=p["direction"])
        assert result.classification.value == exp["classification"]
    elif kind == "weighted_sum_scorer":
        _scorer(v)
    elif kind == "wilcoxon_diff":
        for key, want in exp.items():
            m = re.fullmatch(r"wilcoxonDiff\(mu=([-\d.]+),zq=([-\d.]+)\)", key)
            assert m, key
            got = wilcoxon_diff(float(m[1]), float(m[2]), experiment, control)
            _close(got, want, p["tolerance_abs"])
    elif kind == "normal_quantile":
        _close(normal_quantile(p["p"]), exp["inverseCumulativeProbability"], p["tolerance_abs"])
    elif kind == "mann_whitney_ci":
        # The expected ends are R's uniroot answers at its 1e-4 tolerance.
        shift = location_shift(experiment, control, p["confidenceLevel"], R_ROOT_TOLERANCE)
        _close(shift.lower, exp["ci_lower"], p["tolerance_abs_ci"])
        _close(shift.upper, exp["ci_upper"], p["tolerance_abs_ci"])
        _close(shift.estimate, exp["estimate"], p["tolerance_abs_estimate"])
    elif kind == "mann_whitney_intermediates":
        tol = p["tolerance_abs"]
        mu_min = float(experiment.min() - control.max())
        mu_max = float(experiment.max() - control.min())
        zq_lower = -normal_quantile((1 - p["confidenceLevel"]) / 2)
        zq_upper = -zq_lower
        shift = location_shift(experiment, control, p["confidenceLevel"], R_ROOT_TOLERANCE)
        values = {
            "rMumin": mu_min, "rMumax": mu_max, "rZqLower": zq_lower, "rZqUpper": zq_upper,
            "rFlower1": wilcoxon_diff(mu_min, zq_lower, experiment, control),
            "rFupper1": wilcoxon_diff(mu_max, zq_lower, experiment, control),
            "rFlower2": wilcoxon_diff(mu_min, zq_upper, experiment, control),
            "rFupper2": wilcoxon_diff(mu_max, zq_upper, experiment, control),
            "rCil": shift.lower, "rCiu": shift.upper, "rEst": shift.estimate,
        }
        assert set(values) == set(exp)
        for key, want in exp.items():
            _close(values[key], want, tol)
    elif kind == "summary_statistics":
        stats = summarize(experiment)
        assert stats.count == exp["count"]
        for key in ("min", "max", "mean", "std"):
            _close(getattr(stats, key), exp[key], 1e-12)
    elif kind == "percentile_R7":
        for key, want in exp.items():
            if key.endswith("_tol"):
                continue
            tol = exp.get(f"{key}_tol", 1e-9)
            _close(percentile_r7(experiment, float(key[1:])), want, tol)
    elif kind == "effect_size_mean_ratio":
        _close(mean_ratio(control, experiment), exp["meanRatio"], 1e-12)
    elif kind == "effect_size_cles":
        _close(cles(control, experiment), exp["cles"], p.get("tol", 1e-12))
    elif kind == "effect_size_cohen_d":
        # Kayenta's test passes the samples swapped; the magnitude is what it checks.
        _close(cohen_d(experiment, control), exp["cohenD"], p["tol"])
        _close(cohen_d(control, experiment), exp["cohenD"], p["tol"])
    elif kind == "outlier_detect":
        if p["detector"] == "ksigma":
            mask = ksigma_outliers(experiment, p["k"])
        else:
            mask = iqr_outliers(experiment, p["factor"], p["reduceSensitivity"])
        assert mask.tolist() == exp["outlier_mask"]
    elif kind == "remove_nans":
        assert remove_nans(experiment).tolist() == exp["result"]
    elif kind == "replace_nans":
        assert replace_nans(experiment, p["value"]).tolist() == exp["result"]
    elif kind == "remove_outliers":
        kept = remove_outliers(experiment, p["factor"], p["reduceSensitivity"])
        assert kept.tolist() == exp["result"]
    else:
        pytest.fail(f"vector kind {kind!r} is not implemented")


@pytest.mark.parametrize("vector", _load())
def test_kayenta_vector(vector: dict[str, Any] | None) -> None:
    if vector is None:
        pytest.fail(f"Kayenta conformance vectors not found at {VECTORS}; "
                    "the repository must sit next to a copy of shared/")
    _check(vector)
