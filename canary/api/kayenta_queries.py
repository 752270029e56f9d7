"""Kayenta metric queries (`metrics[].query` of a canary config) rendered for one scope.

Kayenta builds each metric's query from the config and the execution request's scope;
this module follows its documented rules for the two metric stores canaryctl can reach:

- Prometheus: a `customInlineTemplate` (or a named `customFilterTemplate`) is expanded
  with `${scope}`, `${location}`, `${project}`, `${resourceType}` and the scope's
  `extendedScopeParams`; an expansion starting with `PromQL:` is the whole query.
  Otherwise the query is `avg(metricName{filters}) by (groupByFields)`, the filters being
  the custom filter's comma-separated matchers (or, without one, the matchers Kayenta
  derives for `resourceType` gce_instance / aws_ec2_instance, or `scopeLabel="<scope>"`)
  followed by `labelBindings`.
- Datadog: `metricName{<custom filter, or scope and tags>}`, `avg:` unless the name
  carries its own aggregator; `metricType: COUNT` gives `sum:...{...}.as_count()`.

A problem becomes QueryError naming the field; the API answers it as a 400.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

SUPPORTED_TYPES = ("prometheus", "datadog")
_VARIABLE = re.compile(r"\$\{\s*([A-Za-z_][A-Za-z0-9_.]*)\s*\}")
_DATADOG_AGGREGATOR = re.compile(r"^(avg|sum|min|max|count):")
# Kayenta's gce_instance rule matches instance names with a 4-character suffix.
_DEFAULT_SCOPE_LABEL = "instance"


class QueryError(ValueError):
    """A metric's query cannot be built; `field` is the path inside the request."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class KayentaScope(BaseModel):
    """One side (control or experiment) of an execution request's scope."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)
    scope: str = ""
    # Kayenta renamed `region` to `location`; Argo Rollouts still sends `region`.
    location: str | None = None
    region: str | None = None
    start: str | float
    end: str | float
    step: float = Field(60, gt=0)
    extended_scope_params: dict[str, str] = Field(
        default_factory=dict, alias="extendedScopeParams")

    @field_validator("extended_scope_params", mode="before")
    @classmethod
    def _stringify(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {str(k): str(x) for k, x in v.items() if x is not None}
        return v if v is not None else {}

    @property
    def where(self) -> str:
        return self.location or self.region or ""

    def window(self) -> tuple[float, float]:
        start, end = instant(self.start), instant(self.end)
        if end <= start:
            raise ValueError("end must be after start")
        return start, end


class KayentaScopePair(BaseModel):
    model_config = ConfigDict(extra="allow")
    control_scope: KayentaScope = Field(alias="controlScope")
    experiment_scope: KayentaScope = Field(alias="experimentScope")


def instant(value: str | float) -> float:
    """Unix seconds from ISO-8601 or a number (epoch milliseconds when that large)."""
    if isinstance(value, int | float):
        number = float(value)
    else:
        try:
            number = float(value)
        except ValueError:
            try:
                return datetime.fromisoformat(value.strip().replace("Z", "+00:00")).timestamp()
            except ValueError:
                raise ValueError(f"expected an ISO-8601 instant, got {value!r}") from None
    return number / 1000.0 if number > 1e11 else number


def parse_scopes(data: Any) -> dict[str, KayentaScopePair]:
    """`executionRequest.scopes`; raises QueryError."""
    if not isinstance(data, dict) or not data:
        raise QueryError("executionRequest.scopes", "a mapping of scope names to "
                         "{controlScope, experimentScope} is needed to fetch metrics "
                         "(or give metricSetPairs inline)")
    out: dict[str, KayentaScopePair] = {}
    for name, pair in data.items():
        try:
            out[str(name)] = KayentaScopePair.model_validate(pair)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"])
            msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
            raise QueryError(f"executionRequest.scopes.{name}.{loc}", msg) from None
        for side in ("controlScope", "experimentScope"):
            scope = getattr(out[str(name)], "control_scope" if side == "controlScope"
                            else "experiment_scope")
            try:
                scope.window()
            except ValueError as exc:
                raise QueryError(f"executionRequest.scopes.{name}.{side}", str(exc)) from None
    return out


def _bindings(query: dict[str, Any], scope: KayentaScope) -> dict[str, str]:
    # The same precedence as Kayenta: scope attributes, then the query config's, then
    # the extended scope params.
    ext = scope.extended_scope_params
    values: dict[str, str] = {}
    base = {"scope": scope.scope, "location": scope.where,
            "project": ext.get("project", ""), "resourceType": ext.get("resourceType", "")}
    values.update({k: v for k, v in base.items() if v})
    for key in ("scope", "location", "project", "resourceType"):
        if isinstance(query.get(key), str) and query[key]:
            values[key] = query[key]
    values.update(ext)
    return values


def expand(template: str, bindings: dict[str, str], field: str) -> str:
    """`${name}` replaced by its binding; Kayenta stores `${` escaped as `$\\{`."""
    text = template.replace("$\\{", "${")

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in bindings:
            known = ", ".join(sorted(bindings)) or "none"
            raise QueryError(field, f"template variable ${{{name}}} is not defined "
                             f"(defined: {known})")
        return bindings[name]

    return _VARIABLE.sub(value, text)


def _custom_filter(query: dict[str, Any], templates: dict[str, str], scope: KayentaScope,
                   field: str) -> str | None:
    bindings = _bindings(query, scope)
    inline = query.get("customInlineTemplate")
    named = query.get("customFilterTemplate")
    if isinstance(inline, str) and inline.strip():
        return expand(inline, bindings, f"{field}.customInlineTemplate")
    if isinstance(named, str) and named.strip():
        if named not in templates:
            raise QueryError(f"{field}.customFilterTemplate",
                             f"a template named in the config's templates, got {named!r}")
        return expand(templates[named], bindings, f"{field}.customFilterTemplate")
    # Deprecated in Kayenta in favour of the templates; older configs still carry it.
    legacy = query.get("customFilter")
    if isinstance(legacy, str) and legacy.strip():
        return expand(legacy, bindings, f"{field}.customFilter")
    return None


def _strings(query: dict[str, Any], key: str, field: str) -> list[str]:
    value = query.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise QueryError(f"{field}.{key}", "a list of strings")
    return list(value)


def _metric_name(query: dict[str, Any], field: str) -> str:
    name = query.get("metricName")
    if not isinstance(name, str) or not name.strip():
        raise QueryError(f"{field}.metricName", "a metric name is needed when the query has "
                         "no PromQL template")
    return name.strip()


def prometheus_query(query: dict[str, Any], templates: dict[str, str], scope: KayentaScope,
                     field: str) -> str:
    custom = _custom_filter(query, templates, scope, field)
    if custom is not None and custom.lstrip().lower().startswith("promql:"):
        return custom.lstrip()[len("promql:"):].strip()
    name = _metric_name(query, field)
    filters = _strings(query, "labelBindings", field)
    if custom:
        filters = [t.strip() for t in custom.split(",") if t.strip()] + filters
    else:
        resource = str(query.get("resourceType") or
                       scope.extended_scope_params.get("resourceType") or "")
        label = str(query.get("scopeLabel") or "")
        if resource == "gce_instance":
            if not scope.where:
                raise QueryError(field, "resourceType gce_instance needs the scope's location")
            if scope.scope:
                filters.append(f'{label or _DEFAULT_SCOPE_LABEL}=~"{scope.scope}-.{{4}}"')
            project = scope.extended_scope_params.get("project")
            zone = ".+/" + (f"projects/{project}/" if project else "")
            filters.append(f'zone=~"{zone}zones/{scope.where}-.{{1}}"')
        elif resource == "aws_ec2_instance":
            if not scope.where:
                raise QueryError(field, "resourceType aws_ec2_instance needs the scope's "
                                 "location")
            if scope.scope:
                filters.append(f'asg_groupName="{scope.scope}"')
            filters.append(f'zone=~"{scope.where}.{{1}}"')
        elif resource:
            raise QueryError(f"{field}.resourceType", "gce_instance or aws_ec2_instance; for "
                             "anything else use labelBindings and a custom filter template, "
                             f"got {resource!r}")
        elif label:
            filters.append(f'{label}="{scope.scope}"')
            location_label = query.get("locationLabel")
            if isinstance(location_label, str) and location_label and scope.where:
                filters.append(f'{location_label}="{scope.where}"')
        else:
            raise QueryError(field, "a custom filter (customInlineTemplate, "
                             "customFilterTemplate), a scopeLabel or a resourceType is needed")
    selector = name + ("{" + ",".join(filters) + "}" if filters else "")
    group_by = _strings(query, "groupByFields", field)
    return f"avg({selector})" + (f" by ({','.join(group_by)})" if group_by else "")


def datadog_query(query: dict[str, Any], templates: dict[str, str], scope: KayentaScope,
                  field: str) -> str:
    name = _metric_name(query, field)
    custom = _custom_filter(query, templates, scope, field)
    if custom:
        tag_filter = custom
    else:
        tags = _strings(query, "tags", field)
        tag_filter = ",".join([t for t in [scope.scope, *tags] if t]) or "*"
    if str(query.get("metricType") or "").upper() == "COUNT":
        return f"sum:{_DATADOG_AGGREGATOR.sub('', name)}{{{tag_filter}}}.as_count()"
    prefix = "" if _DATADOG_AGGREGATOR.match(name) else "avg:"
    return f"{prefix}{name}{{{tag_filter}}}"


def query_type(query: Any, field: str) -> str:
    if not isinstance(query, dict):
        raise QueryError(field, "a query object with a type (prometheus, datadog) is needed "
                         "to fetch metrics")
    kind = str(query.get("type") or query.get("serviceType") or "").lower()
    if kind not in SUPPORTED_TYPES:
        raise QueryError(f"{field}.type", f"one of {', '.join(SUPPORTED_TYPES)} (the metric "
                         f"stores canaryctl queries), got {kind or 'nothing'!r}")
    return kind


def render(query: Any, templates: dict[str, str], scope: KayentaScope, field: str) -> str:
    """The query text for one metric and one scope; raises QueryError."""
    kind = query_type(query, field)
    if kind == "prometheus":
        return prometheus_query(query, templates, scope, field)
    return datadog_query(query, templates, scope, field)
