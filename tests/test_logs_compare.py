"""Log comparison: templates, the exposure-aware test, and `canaryctl logs compare`
through its real entry point (files and a spec's provider)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import yaml

from analysis.log_patterns import Change, LogLine, compare_logs, template_of
from tests.conftest import ROOT, canaryctl

NORMAL = [
    ("GET /cart 200 {ms}ms", "INFO", 60),
    ("GET /item/{n} 200 {ms}ms", "INFO", 30),
    ("cache miss for key user:{n}", "DEBUG", 8),
    ("upstream 10.0.0.{n}:8080 slow: {ms} ms", "WARN", 2),
]


def _lines(rng: random.Random, n: int, extra: list[tuple[str, str]] | None = None
           ) -> list[LogLine]:
    kinds = [k for k, _, w in NORMAL for _ in range(w)]
    level = {k: lv for k, lv, _ in NORMAL}
    out = []
    for _ in range(n):
        k = rng.choice(kinds)
        out.append(LogLine(k.format(ms=rng.randint(1, 900), n=rng.randint(1, 250)), level[k]))
    for message, lv in extra or []:
        out.append(LogLine(message, lv))
    return out


def test_templates_mask_what_varies() -> None:
    a = template_of('timeout after 3012 ms on 10.0.0.7:443 for "alice" id=5f0c2a9e-1b2c-'
                    "4d3e-8f90-a1b2c3d4e5f6 at 2026-11-26T04:00:00Z")
    b = template_of("timeout after 95 ms on 10.0.0.9:443 for \"bob\" id=00000000-0000-"
                    "0000-0000-000000000000 at 2026-11-27 05:00:01.123")
    assert a == b == "timeout after <num> ms on <ip> for <str> id=<uuid> at <time>"
    assert template_of("GET /cart 200 12ms") != template_of("GET /cart 500 12ms".replace(
        "500", "five hundred"))


def test_a_new_error_in_the_canary_fails_and_is_named() -> None:
    rng = random.Random(1)
    errors = [(f"NullPointerException in CartService.total line {rng.randint(1, 99)}",
               "ERROR") for _ in range(12)]
    result = compare_logs(_lines(rng, 2000), _lines(rng, 220, errors),
                          baseline_requests=9000, canary_requests=1000)
    assert result.verdict == "Fail"
    top = result.failing[0]
    assert top.change == Change.NEW and top.canary == 12 and top.baseline == 0
    assert top.template == "NullPointerException in CartService.total line <num>"
    assert "NullPointerException" in result.reason()


def test_an_increase_beyond_the_traffic_share_fails_but_the_share_itself_does_not() -> None:
    rng = random.Random(2)
    warn = ("upstream 10.0.0.3:8080 slow: 800 ms", "WARN")
    # Canary at 10% of the traffic writing a tenth of the lines: nothing changed.
    same = compare_logs(_lines(rng, 3000), _lines(rng, 330), baseline_requests=27000,
                        canary_requests=3000)
    assert same.verdict == "Pass", same.reason()
    # The same canary writing the slow-upstream warning 5x as often fails.
    worse = compare_logs(_lines(rng, 3000), _lines(rng, 330, [warn] * 30),
                         baseline_requests=27000, canary_requests=3000)
    assert worse.verdict == "Fail"
    assert worse.failing[0].change == Change.INCREASED
    assert worse.failing[0].template == "upstream <ip> slow: <num> ms"


def test_healthy_canaries_rarely_fail() -> None:
    rng = random.Random(3)
    fails = sum(compare_logs(_lines(rng, 1500), _lines(rng, 500), baseline_requests=3000,
                             canary_requests=1000, alpha=0.05).verdict == "Fail"
                for _ in range(200))
    assert fails <= 10  # 5% family-wise level over 200 A/A comparisons, with room


def _write_cases(tmp_path: Path) -> tuple[Path, Path, Path]:
    rng = random.Random(4)
    base = tmp_path / "baseline.jsonl"
    base.write_text("\n".join(json.dumps({"message": ln.message, "level": ln.level})
                              for ln in _lines(rng, 800)))
    bad = tmp_path / "canary.json"
    bad.write_text(json.dumps(
        [{"msg": ln.message, "severity": ln.level} for ln in _lines(rng, 800)]
        + [{"msg": f"payment declined: gateway code {c}", "severity": "ERROR"}
           for c in range(40)]))
    good = tmp_path / "canary.log"
    good.write_text("\n".join(ln.message for ln in _lines(rng, 800)))
    return base, bad, good


def test_cli_compares_files_with_exit_codes(tmp_path: Path) -> None:
    base, bad, good = _write_cases(tmp_path)
    res = canaryctl("logs", "compare", "--baseline", str(base), "--canary", str(bad),
                    "--format", "json")
    assert res.returncode == 1, res.stderr
    body = json.loads(res.stdout)
    assert body["verdict"] == "Fail"
    assert body["templates"][0]["template"] == "payment declined: gateway code <num>"
    assert body["templates"][0]["change"] == "new"
    res = canaryctl("logs", "compare", "--baseline", str(base), "--canary", str(good))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Pass" in res.stdout
    broken = tmp_path / "broken.json"
    broken.write_text('[{"level": "INFO"}]')
    res = canaryctl("logs", "compare", "--baseline", str(base), "--canary", str(broken))
    assert res.returncode == 2
    assert res.stderr.strip() == (f"{broken}: [0]: expected a log event with one of message, "
                                  "msg, _raw, log, text")


def test_cli_reads_logs_through_a_spec_provider(tmp_path: Path) -> None:
    doc = yaml.safe_load((ROOT / "examples" / "providers" / "file-rollout.yaml").read_text())
    rec = json.loads((ROOT / "examples" / "providers" / "recorded.json").read_text())
    rec["logs"] = {
        "baseline": [{"timestamp": 1.0, "level": "INFO", "message": f"GET /cart 200 {i}ms"}
                     for i in range(200)],
        "canary": [{"timestamp": 1.0, "level": "INFO", "message": f"GET /cart 200 {i}ms"}
                   for i in range(200)]
        + [{"timestamp": 1.0, "level": "ERROR", "message": f"NullPointerException #{i}"}
           for i in range(10)],
    }
    (tmp_path / "recorded.json").write_text(json.dumps(rec))
    spec = tmp_path / "rollout.yaml"
    spec.write_text(yaml.safe_dump(doc))
    res = canaryctl("logs", "compare", "--spec", str(spec), "--provider", "recorded",
                    "--query", "*", "--format", "json")
    assert res.returncode == 1, res.stdout + res.stderr
    assert json.loads(res.stdout)["templates"][0]["template"] == "NullPointerException #<num>"
    res = canaryctl("logs", "compare", "--spec", str(spec), "--provider", "nope",
                    "--query", "*")
    assert res.returncode == 2 and "no provider named 'nope'" in res.stderr
