"""`canaryctl validate` and the spec models: good specs pass, each bad field is named with
its YAML line, and nothing else is reported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from canary.spec_loader import load_rollout
from tests.conftest import ROOT, canaryctl

GOOD = (ROOT / "examples" / "rollout.yaml").read_text()


@pytest.mark.parametrize("example", ["examples/rollout.yaml", "examples/demo/rollout.yaml"])
def test_examples_are_valid(example: str) -> None:
    res = canaryctl("validate", example)
    assert res.returncode == 0, res.stderr
    assert "valid" in res.stdout


def test_shorthand_expands_to_weight_and_analysis_steps() -> None:
    rollout = load_rollout(ROOT / "examples" / "rollout.yaml")
    plan = rollout.spec.plan()
    weights = [s.set_weight for s in plan if s.set_weight is not None]
    assert weights == [1, 5, 25, 50]
    assert [s.analysis.duration for s in plan if s.analysis is not None] == [120.0] * 4


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rollout.yaml"
    path.write_text(text)
    return path


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


@pytest.mark.parametrize(
    ("old", "new", "field", "expected"),
    [
        ("        direction: increase\n        critical: true",
         "        direcion: increase\n        critical: true",
         "spec.analysis.metrics[0].direcion", "unknown field"),
        ("stepWeights: [1, 5, 25, 50]", "stepWeights: [1, 5, 250, 50]",
         "spec.stepWeights[2]", "less than or equal to 100"),
        ("  interval: 2m", "  interval: soon", "spec.interval", "duration"),
        ('endpoints: ["10.0.0.12:8000"]', 'endpoints: ["10.0.0.12"]',
         "spec.canary.endpoints", "host:port"),
        ("judge: sequential", "judge: bayesian", "spec.analysis.judge", "sequential"),
    ],
)
def test_one_wrong_field_gives_one_line(tmp_path: Path, old: str, new: str, field: str,
                                        expected: str) -> None:
    assert old in GOOD
    text = GOOD.replace(old, new, 1)
    path = _write(tmp_path, text)
    res = canaryctl("validate", str(path))
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    line = _line_of(text, new.strip().splitlines()[0])
    assert lines[0].startswith(f"{path}:{line}: {field}: "), lines[0]
    assert expected in lines[0]


def test_several_problems_one_line_each_and_json(tmp_path: Path) -> None:
    text = GOOD.replace("interval: 2m", "interval: -3s").replace("alpha: 0.05", "alpha: 2")
    path = _write(tmp_path, text)
    res = canaryctl("validate", str(path), "--format", "json")
    assert res.returncode == 2
    assert len(res.stderr.strip().splitlines()) == 2
    body = json.loads(res.stdout)
    assert body["valid"] is False and len(body["errors"]) == 2


def test_undefined_provider_is_named(tmp_path: Path) -> None:
    text = GOOD.replace("provider: mesh      #", "provider: prom      #", 1)
    res = canaryctl("validate", str(_write(tmp_path, text)))
    assert res.returncode == 2
    assert "'prom'" in res.stderr and "providers" in res.stderr


def test_unreadable_and_non_yaml_files(tmp_path: Path) -> None:
    res = canaryctl("validate", str(tmp_path / "missing.yaml"))
    assert res.returncode == 2 and "missing.yaml" in res.stderr and "cannot read" in res.stderr
    bad = _write(tmp_path, "apiVersion: [unclosed\n")
    res = canaryctl("validate", str(bad))
    assert res.returncode == 2 and "invalid YAML" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_steps_and_shorthand_are_exclusive(tmp_path: Path) -> None:
    text = GOOD.replace("  stepWeights: [1, 5, 25, 50]",
                        "  stepWeights: [1, 5, 25, 50]\n  steps:\n    - setWeight: 5")
    res = canaryctl("validate", str(_write(tmp_path, text)))
    assert res.returncode == 2 and "either steps or stepWeights" in res.stderr
