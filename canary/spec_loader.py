"""Reading a Rollout spec from YAML, with every problem reported as one line that names
the file, the YAML line, the field path and what was expected."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from canary.input_error import InputError, InputErrors
from canary.spec import Rollout

Loc = tuple[int | str, ...]


class _LineIndex:
    """Maps a field path (as pydantic reports it) to the YAML line where it stands."""

    def __init__(self, root: yaml.Node | None) -> None:
        self.root = root

    def line(self, loc: Loc) -> int | None:
        node = self.root
        best: int | None = None if node is None else node.start_mark.line + 1
        for part in loc:
            if isinstance(node, yaml.MappingNode):
                nxt = None
                for key, value in node.value:
                    if isinstance(key, yaml.ScalarNode) and key.value == part:
                        best = key.start_mark.line + 1
                        nxt = value
                        break
                node = nxt
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
                node = node.value[part] if 0 <= part < len(node.value) else None
                if node is not None:
                    best = node.start_mark.line + 1
            else:
                break
            if node is None:
                break
        return best


def format_loc(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


def _describe(err: dict[str, Any]) -> str:
    msg = str(err.get("msg", "invalid value"))
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        return "unknown field (check the spelling; see examples/)"
    if kind == "missing":
        return "required field is missing"
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if "input" in err and kind not in ("model_type", "dict_type") and ", got " not in msg:
        shown = repr(err["input"])
        if len(shown) <= 40:
            msg += f", got {shown}"
    return msg


_PROVIDER_TYPES = ("prometheus", "datadog", "splunk", "file", "mesh")


def _error_loc(err: dict[str, Any]) -> Loc:
    # pydantic puts validator names and a discriminated union's tag into the path; drop
    # them so the path is the one the user wrote (spec.providers.prom.url).
    loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
    out: list[int | str] = []
    for i, part in enumerate(loc):
        if i >= 2 and loc[i - 2] == "providers" and part in _PROVIDER_TYPES:
            continue
        out.append(part)
    return tuple(out)


def parse_yaml(path: Path) -> tuple[Any, _LineIndex]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(str(path), "", f"cannot read file ({exc.strerror or exc})") from exc
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise InputError(str(path), "", f"invalid YAML: {problem}", line) from exc
    return data, _LineIndex(root)


def validate_rollout(data: Any, source: str, index: _LineIndex | None = None) -> Rollout:
    """A Rollout from already-parsed data; raises InputErrors with one line per problem."""
    if not isinstance(data, dict):
        raise InputErrors([InputError(source, "", "expected a YAML mapping with apiVersion, kind, "
                                      "metadata and spec", 1)])
    try:
        return Rollout.model_validate(data)
    except ValidationError as exc:
        errors = []
        for err in exc.errors():
            loc = _error_loc(dict(err))
            line = index.line(loc) if index is not None else None
            errors.append(InputError(source, format_loc(loc), _describe(dict(err)), line))
        raise InputErrors(errors) from None


def load_rollout(path: str | Path) -> Rollout:
    """Read and validate a spec file; raises InputError or InputErrors."""
    p = Path(path)
    data, index = parse_yaml(p)
    return validate_rollout(data, str(p), index)
