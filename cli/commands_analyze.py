"""`canaryctl analyze`: one-shot analysis of a Kayenta canary config and metric set
pairs, printed in Kayenta's judge result shape."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cli import exit_codes

if TYPE_CHECKING:
    from analysis.judge_result import JudgeResult

JUDGES = ("mann-whitney",)


def register(app: typer.Typer, mesh_app: typer.Typer) -> None:
    app.command("analyze")(analyze)


def analyze(
    config: Annotated[Path, typer.Option(
        "--config", help="Kayenta canary config JSON (or canaryctl analysis spec).")],
    data: Annotated[Path, typer.Option(
        "--data", help="Kayenta metric set pair list JSON (null = NaN).")],
    pass_threshold: Annotated[float | None, typer.Option(
        "--pass", help="Score needed to pass [default: the config's, else 75].")] = None,
    marginal_threshold: Annotated[float | None, typer.Option(
        "--marginal", help="Score needed for Marginal [default: the config's, else 50].")] = None,
    judge: Annotated[str, typer.Option("--judge", help="Judge: mann-whitney.")] = "mann-whitney",
    output_format: Annotated[str, typer.Option(
        "--format", help="Output format: text or json.")] = "text",
) -> None:
    """Judge a canary from a Kayenta config and metric data. Exit 0 Pass, 1 Fail,
    4 Marginal, 2 invalid input."""
    from analysis.judge_result import Verdict
    from analysis.mann_whitney_judge import MannWhitneyJudge
    from analysis.metric_config import Thresholds
    from canary.input_error import InputError
    from canary.kayenta_config import load_analysis_config, load_metric_set_pairs

    try:
        if output_format not in ("text", "json"):
            raise InputError("--format", "", f"expected text or json, got {output_format!r}")
        if judge not in JUDGES:
            raise InputError("--judge", "", f"expected one of {', '.join(JUDGES)}, got {judge!r}")
        configs, weights, config_thresholds = load_analysis_config(config)
        pairs, tags = load_metric_set_pairs(data)
        known = {c.name for c in configs}
        for i, name in enumerate(pairs):
            if name not in known:
                raise InputError(str(data), f"[{i}].name",
                                 f"a metric named in {config}, got {name!r}")
        base = config_thresholds or Thresholds()
        thresholds = Thresholds(
            pass_=base.pass_ if pass_threshold is None else pass_threshold,
            marginal=base.marginal if marginal_threshold is None else marginal_threshold)
        for flag, value in (("--pass", thresholds.pass_), ("--marginal", thresholds.marginal)):
            if not 0 <= value <= 100 or math.isnan(value):
                raise InputError(flag, "", f"expected a score between 0 and 100, got {value:g}")
        if thresholds.marginal > thresholds.pass_:
            raise InputError("--marginal", "", f"expected at most the pass threshold "
                             f"{thresholds.pass_:g}, got {thresholds.marginal:g}")
    except InputError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(exit_codes.INVALID_INPUT) from None

    result = MannWhitneyJudge(weights).judge(pairs, configs, thresholds, tags)
    if output_format == "json":
        typer.echo(json.dumps({"judgeResult": result.to_kayenta()}, indent=2))
    else:
        _print_text(result)
    codes = {Verdict.PASS: exit_codes.ANALYSIS_PASS, Verdict.FAIL: exit_codes.ANALYSIS_FAIL,
             Verdict.MARGINAL: exit_codes.ANALYSIS_MARGINAL}
    raise typer.Exit(codes[result.verdict])


def _fmt(x: float | None, pct: bool = False) -> str:
    if x is None or math.isnan(x):
        return "-"
    return f"{x:+.1%}" if pct else f"{x:.3g}"


def _print_text(result: JudgeResult) -> None:
    from rich.console import Console
    from rich.table import Table

    styles = {"Pass": "green", "High": "red", "Low": "red", "NodataFailMetric": "red",
              "Nodata": "yellow", "Error": "magenta"}
    table = Table(title=f"canary analysis ({result.judge})")
    table.add_column("metric", no_wrap=True)
    table.add_column("result", no_wrap=True)
    for col in ("ratio", "shift [interval]", "p-value"):
        table.add_column(col, justify="right", no_wrap=col == "shift [interval]")
    for r in result.results:
        ev = r.evidence
        shift = _fmt(ev.effect, True)
        if ev.interval is not None:
            shift += f" [{_fmt(ev.interval[0], True)}, {_fmt(ev.interval[1], True)}]"
        label = r.classification.value + (" critical" if r.critical else "") \
            + (" (muted)" if r.muted else "")
        table.add_row(r.name, f"[{styles.get(r.classification.value, 'white')}]{label}[/]",
                      _fmt(r.ratio), shift, _fmt(ev.p_value))
    # Piped output (CI logs) is not limited to 80 columns the way rich assumes.
    console = Console(width=None if sys.stdout.isatty() else 120)
    console.print(table)
    for g in result.group_scores:
        console.print(f"group {g.name}: {g.score:.2f}" + (" (no data)" if g.no_data else ""))
    colour = {"Pass": "green", "Marginal": "yellow", "Fail": "red"}[result.verdict.value]
    console.print(f"score {result.score:.2f}: [bold {colour}]{result.verdict.value}[/]"
                  + (f" - {result.reason}" if result.reason else ""))
