"""Wire shapes of the API, for validation and the OpenAPI document."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Status = Literal["RUNNING", "SUCCEEDED", "FAILED", "CANCELED"]
VerdictName = Literal["Pass", "Marginal", "Fail", "Running", "Canceled", "Error"]
FLAGGER_HOOKS = ("confirm-rollout", "pre-rollout", "rollout", "confirm-traffic-increase",
                 "confirm-promotion", "post-rollout", "rollback", "event")
FlaggerHook = Literal["confirm-rollout", "pre-rollout", "rollout", "confirm-traffic-increase",
                      "confirm-promotion", "post-rollout", "rollback", "event"]


class ErrorBody(BaseModel):
    error: str


class Accepted(BaseModel):
    """What Spinnaker's Webhook stage reads after its POST (the Location header too)."""

    id: str
    status: Status
    statusUrl: str
    cancelUrl: str


class AnalysisStatus(BaseModel):
    """Spinnaker polls `status` (only ever RUNNING, SUCCEEDED, FAILED or CANCELED) and
    shows `progress`; Argo's web provider reads `verdict` and `score`."""

    id: str
    name: str | None = None
    status: Status
    progress: str
    complete: bool
    verdict: VerdictName
    score: float | None = None
    judgeResult: dict[str, Any] | None = None
    errors: dict[str, str] = Field(default_factory=dict)
    createdAt: float
    endedAt: float | None = None


class Verdict(BaseModel):
    """Argo Rollouts' web provider: always 200; read with e.g.
    `successCondition: result.verdict == "Pass"`."""

    verdict: VerdictName
    score: float | None = None
    status: Status
    reason: str = ""
    judgeResult: dict[str, Any] | None = None


class RolloutStatusBody(BaseModel):
    name: str
    status: Status
    progress: str
    phase: str | None = None
    verdict: str | None = None
    message: str = ""
    stepIndex: int | None = None
    weights: dict[str, int] = Field(default_factory=dict)
    reportDir: str | None = None


class FlaggerPayload(BaseModel):
    """What Flagger posts to every webhook."""

    model_config = ConfigDict(extra="allow")
    name: str = Field(min_length=1)
    namespace: str = Field(min_length=1)
    phase: str = ""
    checksum: str | None = None
    type: str | None = None
    metadata: dict[str, str] | None = None


class FlaggerAnswer(BaseModel):
    hook: str
    allowed: bool
    reason: str


class GateState(BaseModel):
    key: str
    open: bool


class KayentaExecution(BaseModel):
    canaryExecutionId: str


class KayentaStandaloneExecution(BaseModel):
    canaryAnalysisExecutionId: str


class KayentaConfigId(BaseModel):
    canaryConfigId: str


class KayentaConfigSummary(BaseModel):
    id: str
    name: str
    applications: list[str]
    updatedTimestamp: int
    updatedTimestampIso: str


class KayentaThresholds(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)
    pass_: float = Field(alias="pass", ge=0, le=100)
    marginal: float = Field(ge=0, le=100)


class KayentaExecutionRequest(BaseModel):
    """Kayenta's CanaryExecutionRequest. Without `metricSetPairs` (our extension: the
    data inline) the server fetches each metric for `scopes` from a metrics account."""

    model_config = ConfigDict(extra="allow")
    scopes: dict[str, Any] = Field(default_factory=dict)
    thresholds: KayentaThresholds | None = None
    metricSetPairs: list[dict[str, Any]] | None = None


class KayentaAdhocRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    canaryConfig: dict[str, Any]
    executionRequest: KayentaExecutionRequest


class KayentaStandaloneRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    canaryConfig: dict[str, Any] | None = None
    executionRequest: KayentaExecutionRequest


class KayentaResult(BaseModel):
    """What Argo Rollouts' kayenta provider (complete, result.judgeResult.score.score) and
    Spinnaker's Kayenta stage (status, result.judgeResult, result.canaryDuration, ...)
    read from `GET /canary/{id}`."""

    model_config = ConfigDict(extra="allow")
    complete: bool
    status: Literal["running", "succeeded", "terminal", "canceled"]
    result: dict[str, Any] | None = None
    application: str
    storageAccountName: str | None = None
    canaryExecutionRequest: dict[str, Any] | None = None
    buildTimeIso: str
    startTimeIso: str | None = None
    endTimeIso: str | None = None
    exception: dict[str, Any] | None = None
    pipelineId: str | None = None
    configId: str | None = None
    metricsAccountName: str | None = None
    buildTimeMillis: int | None = None
    startTimeMillis: int | None = None
    endTimeMillis: int | None = None
