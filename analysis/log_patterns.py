"""Log comparison: which kinds of log line the canary writes that the baseline does not,
or writes more often than its share of the traffic explains.

Messages are reduced to templates (numbers, ids, addresses and quoted values masked), so
"timeout after 3012 ms on 10.0.0.7" and "timeout after 95 ms on 10.0.0.9" count as one
kind. Per template, the canary's share of the occurrences is tested against the share
its exposure (requests, or all log lines when requests are unknown) would give it,
inflated by a practical margin: a one-sided exact binomial test, Bonferroni-corrected
over the templates, so a long tail of rare lines does not fail a canary by chance.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

_MASKS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"),
     "<uuid>"),
    (re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b"), "<ip>"),
    (re.compile(r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?"),
     "<time>"),
    (re.compile(r"\b0x[0-9a-fA-F]+\b|\b[0-9a-fA-F]{12,}\b"), "<hex>"),
    (re.compile(r'"[^"]*"|\'[^\']*\''), "<str>"),
    (re.compile(r"[-+]?\b\d+(?:\.\d+)?(?:[eE][-+]?\d+)?\b"), "<num>"),
)
_SPACE = re.compile(r"\s+")


def template_of(message: str) -> str:
    """The message with its variable parts masked, whitespace folded, at most 300 chars."""
    text = message.strip()
    for pattern, mask in _MASKS:
        text = pattern.sub(mask, text)
    return _SPACE.sub(" ", text)[:300]


class Change(StrEnum):
    NEW = "new"  # only the canary writes it, more often than chance allows
    INCREASED = "increased"  # the canary writes it beyond its traffic share and margin
    UNCHANGED = "unchanged"
    DECREASED = "decreased"  # informational: the canary writes it less often
    GONE = "gone"  # informational: only the baseline writes it


@dataclass(frozen=True)
class TemplateResult:
    template: str
    level: str
    baseline: int
    canary: int
    expected_canary: float  # occurrences the canary's exposure alone would give it
    ratio: float  # canary rate / baseline rate (inf for a new template)
    p_value: float  # one-sided: the canary writes it more often than its margin allows
    change: Change
    example: str

    @property
    def failing(self) -> bool:
        return self.change in (Change.NEW, Change.INCREASED)


@dataclass(frozen=True)
class LogComparison:
    results: tuple[TemplateResult, ...]
    baseline_lines: int
    canary_lines: int
    exposure_ratio: float  # canary exposure / baseline exposure
    alpha: float
    margin: float
    notes: tuple[str, ...] = field(default=())

    @property
    def failing(self) -> list[TemplateResult]:
        return [r for r in self.results if r.failing]

    @property
    def verdict(self) -> str:
        return "Fail" if self.failing else "Pass"

    def reason(self) -> str:
        bad = self.failing
        if not bad:
            return (f"no log template is new or more frequent in the canary beyond its "
                    f"{self.margin:.0%} margin ({len(self.results)} templates compared)")
        top = bad[0]
        extra = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        return (f"{top.change.value} in the canary: {top.template!r} ({top.canary} vs "
                f"{top.baseline} in the baseline, {top.expected_canary:.1f} expected){extra}")


@dataclass(frozen=True)
class LogLine:
    message: str
    level: str = ""


def _binomial_sf(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    if k <= 0:
        return 1.0
    if p <= 0:
        return 0.0
    if p >= 1:
        return 1.0
    from scipy.stats import binom

    return float(binom.sf(k - 1, n, p))


def compare_logs(
    baseline: Iterable[LogLine],
    canary: Iterable[LogLine],
    *,
    baseline_requests: float | None = None,
    canary_requests: float | None = None,
    alpha: float = 0.01,
    margin: float = 0.5,
    min_count: int = 3,
) -> LogComparison:
    """Compare the two versions' log lines template by template.

    Exposure is the request count of each version when given (so a canary at 10% of the
    traffic is expected to write about a ninth as many lines), else each side's number of
    lines. A template fails when the canary writes it at least `min_count` times and more
    often than (1 + margin) times its exposure share at family-wise level `alpha`.
    """
    if not 0 < alpha < 1:
        raise ValueError("alpha must be between 0 and 1")
    if margin < 0:
        raise ValueError("margin must not be negative")
    b_lines, c_lines = list(baseline), list(canary)
    counts_b: Counter[str] = Counter()
    counts_c: Counter[str] = Counter()
    levels: dict[str, str] = {}
    examples: dict[str, str] = {}
    # Canary lines first, so a template's example is one the canary wrote when it did.
    for lines, counts in ((c_lines, counts_c), (b_lines, counts_b)):
        for line in lines:
            t = template_of(line.message)
            counts[t] += 1
            levels.setdefault(t, line.level)
            examples.setdefault(t, line.message[:500])
    notes: list[str] = []
    if baseline_requests is not None and canary_requests is not None:
        if baseline_requests <= 0 or canary_requests <= 0:
            raise ValueError("request counts must be positive")
        exp_b, exp_c = float(baseline_requests), float(canary_requests)
    else:
        exp_b, exp_c = float(max(len(b_lines), 1)), float(max(len(c_lines), 1))
        notes.append("no request counts: exposure taken as each version's number of lines")
    ratio_exposure = exp_c / exp_b
    templates = sorted(set(counts_b) | set(counts_c))
    # Bonferroni over the templates that could fail at all.
    testable = [t for t in templates if counts_c[t] >= min_count] or templates
    level = alpha / max(len(testable), 1)
    # Under H0 the canary's share of a template's lines is at most this.
    inflated = exp_c * (1 + margin)
    p0 = inflated / (inflated + exp_b)
    share = exp_c / (exp_c + exp_b)
    results = []
    for t in templates:
        b, c = counts_b[t], counts_c[t]
        n = b + c
        p_value = _binomial_sf(c, n, p0)
        expected = n * share
        rate_b = b / exp_b
        rate_c = c / exp_c
        ratio = rate_c / rate_b if rate_b > 0 else math.inf
        if c >= min_count and p_value <= level:
            change = Change.NEW if b == 0 else Change.INCREASED
        elif c == 0 and b > 0:
            change = Change.GONE
        elif b > 0 and _binomial_sf(b, n, 1 - share) <= level:
            change = Change.DECREASED
        else:
            change = Change.UNCHANGED
        results.append(TemplateResult(t, levels.get(t, ""), b, c, expected, ratio, p_value,
                                      change, examples.get(t, "")))
    order = {Change.NEW: 0, Change.INCREASED: 1, Change.DECREASED: 2, Change.GONE: 3,
             Change.UNCHANGED: 4}
    results.sort(key=lambda r: (order[r.change], r.p_value, -r.canary))
    return LogComparison(tuple(results), len(b_lines), len(c_lines), ratio_exposure, alpha,
                         margin, tuple(notes))
