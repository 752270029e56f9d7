"""`canaryctl logs compare`: which kinds of log line the canary writes that the baseline
does not, or writes more often than its traffic share explains."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli import exit_codes

if TYPE_CHECKING:
    from analysis.log_patterns import LogComparison, LogLine

logs_app = typer.Typer(help="Compare the logs of the baseline and the canary.",
                       no_args_is_help=True)

_MESSAGE_KEYS = ("message", "msg", "_raw", "log", "text")
_LEVEL_KEYS = ("level", "severity", "status", "log_level")


def _fail(message: str, code: int = exit_codes.INVALID_INPUT) -> typer.Exit:
    print(message, file=sys.stderr)
    return typer.Exit(code)


def _line_of(item: Any, source: str, where: str) -> LogLine:
    from analysis.log_patterns import LogLine

    if isinstance(item, str):
        return LogLine(item)
    if isinstance(item, dict):
        message = next((item[k] for k in _MESSAGE_KEYS if isinstance(item.get(k), str)), None)
        if message is None:
            raise _fail(f"{source}: {where}: expected a log event with one of "
                        f"{', '.join(_MESSAGE_KEYS)}")
        level = next((str(item[k]) for k in _LEVEL_KEYS if item.get(k) is not None), "")
        return LogLine(message, level)
    raise _fail(f"{source}: {where}: expected a log event object or a string")


def read_log_file(path: Path) -> list[LogLine]:
    """A JSON array of events, JSON lines, or plain text (one message a line)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise _fail(f"{path}: cannot read file ({exc.strerror or exc})") from None
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise _fail(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
        return [_line_of(item, str(path), f"[{i}]") for i, item in enumerate(data)]
    lines = []
    for n, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        if raw.lstrip().startswith("{"):
            try:
                lines.append(_line_of(json.loads(raw), str(path), f"line {n}"))
                continue
            except json.JSONDecodeError:
                pass
        lines.append(_line_of(raw, str(path), f"line {n}"))
    return lines


def _from_provider(spec_path: Path, provider: str, query: str, last: float,
                   limit: int) -> tuple[list[LogLine], list[LogLine]]:
    import asyncio

    from analysis.log_patterns import LogLine
    from canary.input_error import InputError, InputErrors
    from canary.spec_loader import load_rollout
    from providers.factory import build_log_provider
    from providers.provider import LogQuery, ProviderError, Window

    try:
        rollout = load_rollout(spec_path)
    except (InputError, InputErrors) as exc:
        raise _fail(str(exc)) from None
    spec = rollout.spec
    if provider not in spec.providers:
        raise _fail(f"{spec_path}: spec.providers: no provider named {provider!r} "
                    f"(defined: {sorted(spec.providers) or 'none'})")
    now = time.time()
    window = Window(now - last, now)

    async def fetch() -> tuple[list[LogLine], list[LogLine]]:
        source = build_log_provider(provider, spec.providers[provider],
                                    base_dir=spec_path.resolve().parent)
        try:
            out = []
            for scope, target in (("baseline", spec.baseline), ("canary", spec.canary)):
                events = await source.fetch_logs(LogQuery(
                    query=query, scope=scope, service=spec.service,  # type: ignore[arg-type]
                    version=target.version or scope, window=window, limit=limit))
                out.append([LogLine(e.message, e.level) for e in events])
            return out[0], out[1]
        finally:
            await source.aclose()

    try:
        return asyncio.run(fetch())
    except ProviderError as exc:
        raise _fail(f"{spec_path}: {exc}", exit_codes.OPERATIONAL) from None


def _print_text(result: LogComparison) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    style = "bold red" if result.failing else "bold green"
    console.print(f"[{style}]{result.verdict}[/]: {result.reason()}")
    table = Table("change", "canary", "baseline", "expected", "template", expand=True)
    for r in result.results[:30]:
        table.add_row(r.change.value, str(r.canary), str(r.baseline),
                      f"{r.expected_canary:.1f}", r.template)
    console.print(table)
    for note in result.notes:
        console.print(f"[dim]{note}[/]")


def _as_json(result: LogComparison) -> dict[str, Any]:
    def num(x: float) -> float | str:
        return x if x == x and abs(x) != float("inf") else str(x)

    return {
        "verdict": result.verdict, "reason": result.reason(),
        "baselineLines": result.baseline_lines, "canaryLines": result.canary_lines,
        "exposureRatio": result.exposure_ratio, "alpha": result.alpha,
        "margin": result.margin, "notes": list(result.notes),
        "templates": [{"template": r.template, "change": r.change.value, "level": r.level,
                       "baseline": r.baseline, "canary": r.canary,
                       "expectedCanary": r.expected_canary, "ratio": num(r.ratio),
                       "pValue": r.p_value, "example": r.example}
                      for r in result.results],
    }


@logs_app.command("compare")
def compare(
    baseline: Annotated[Path | None, typer.Option(help="Baseline log file (JSON array, "
                                                 "JSON lines or plain text).")] = None,
    canary: Annotated[Path | None, typer.Option(help="Canary log file.")] = None,
    spec: Annotated[Path | None, typer.Option(help="Rollout spec whose providers to read "
                                             "logs from (with --provider and --query).")] = None,
    provider: Annotated[str | None, typer.Option(help="Provider name in the spec.")] = None,
    query: Annotated[str | None, typer.Option(help="Log query; {{service}}, {{version}}, "
                                             "{{scope}} are filled in.")] = None,
    last: Annotated[str, typer.Option(help="Window ending now, e.g. 15m.")] = "15m",
    limit: Annotated[int, typer.Option(help="Most events per version.", min=1)] = 10_000,
    baseline_requests: Annotated[float | None, typer.Option(
        help="Requests the baseline served in the window (its exposure).")] = None,
    canary_requests: Annotated[float | None, typer.Option(
        help="Requests the canary served in the window.")] = None,
    alpha: Annotated[float, typer.Option(help="Family-wise error level.")] = 0.01,
    margin: Annotated[float, typer.Option(help="Relative increase still acceptable.")] = 0.5,
    min_count: Annotated[int, typer.Option(help="Fewest canary lines that can fail.",
                                           min=1)] = 3,
    fmt: Annotated[str, typer.Option("--format", help="text or json.")] = "text",
) -> None:
    """Exit 0 when no log template is new or more frequent in the canary, 1 when one is,
    2 for invalid input, 3 when the provider cannot be read."""
    from analysis.log_patterns import compare_logs
    from canary.spec import parse_duration

    if fmt not in ("text", "json"):
        raise _fail(f"--format: expected text or json, got {fmt!r}")
    if not 0 < alpha < 1:
        raise _fail(f"--alpha: expected a number between 0 and 1, got {alpha}")
    if margin < 0:
        raise _fail(f"--margin: expected a non-negative number, got {margin}")
    if (baseline_requests is None) != (canary_requests is None):
        raise _fail("--baseline-requests and --canary-requests: give both or neither")
    if spec is not None:
        if provider is None or query is None:
            raise _fail("--spec: also give --provider and --query")
        try:
            seconds = parse_duration(last)
        except ValueError as exc:
            raise _fail(f"--last: {exc}, got {last!r}") from None
        b_lines, c_lines = _from_provider(spec, provider, query, seconds, limit)
    elif baseline is not None and canary is not None:
        b_lines, c_lines = read_log_file(baseline), read_log_file(canary)
    else:
        raise _fail("give --baseline and --canary files, or --spec with --provider and --query")
    try:
        result = compare_logs(b_lines, c_lines, baseline_requests=baseline_requests,
                              canary_requests=canary_requests, alpha=alpha, margin=margin,
                              min_count=min_count)
    except ValueError as exc:
        raise _fail(f"--baseline-requests/--canary-requests: {exc}") from None
    if fmt == "json":
        print(json.dumps(_as_json(result)))
    else:
        _print_text(result)
    raise typer.Exit(exit_codes.ANALYSIS_FAIL if result.failing else exit_codes.ANALYSIS_PASS)


def register(app: typer.Typer, mesh_app: typer.Typer) -> None:
    app.add_typer(logs_app, name="logs")
