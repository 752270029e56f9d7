"""The ASGI app of `canaryctl serve`: Spinnaker, Argo Rollouts, Flagger and Kayenta
contracts over the analyses and rollouts a RunManager hosts (DESIGN.md, HTTP API)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from canary.api import models as m
from canary.api.analysis_job import AnalysisBody
from canary.api.auth import bearer_matches
from canary.api.run_store import RunRecord
from canary.api.runner import Conflict, RunManager
from canary.input_error import InputError, InputErrors

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": m.ErrorBody}, 401: {"model": m.ErrorBody}, 404: {"model": m.ErrorBody},
    409: {"model": m.ErrorBody},
}
# Confirm gates hold until someone opens them; the others let Flagger go on unless closed.
GATES_CLOSED_BY_DEFAULT = {"confirm-rollout", "confirm-traffic-increase", "confirm-promotion",
                           "rollback"}


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat().replace(
        "+00:00", "Z")


def _millis(ts: float | None) -> int | None:
    return None if ts is None else int(ts * 1000)


def _duration(seconds: float) -> str:
    return f"PT{max(seconds, 0.0):.3f}S"


def create_app(state_dir: Path, token: str, *, report_dir: Path | None = None,
               kayenta_without_auth: bool = False,
               flagger_without_auth: bool = False,
               metrics_accounts: Mapping[str, Mapping[str, Any]] | None = None) -> FastAPI:
    """`metrics_accounts`: provider settings by name (as under a rollout spec's
    `providers:`), the metrics accounts Kayenta requests name in `metricsAccountName`."""
    manager = RunManager(state_dir, report_dir, metrics_accounts=metrics_accounts)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await manager.start()
        try:
            yield
        finally:
            await manager.stop()

    app = FastAPI(title="canaryctl", version="1", lifespan=lifespan, docs_url=None,
                  redoc_url=None,
                  description="Canary analysis for Spinnaker, Argo Rollouts, Flagger and "
                              "Kayenta clients. Authenticate with `Authorization: Bearer`.")
    app.state.manager = manager

    async def require_token(request: Request) -> None:
        if not bearer_matches(request.headers.get("authorization"), token):
            raise HTTPException(401, "missing or wrong bearer token",
                                headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, exc.status_code, headers=exc.headers)

    @app.exception_handler(InputError)
    async def _input_error(request: Request, exc: InputError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, 400)

    @app.exception_handler(InputErrors)
    async def _input_errors(request: Request, exc: InputErrors) -> JSONResponse:
        return JSONResponse({"error": str(exc.errors[0]) if exc.errors else str(exc),
                             "errors": [str(e) for e in exc.errors]}, 400)

    @app.exception_handler(Conflict)
    async def _conflict(request: Request, exc: Conflict) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, 409)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    api = APIRouter(prefix="/api/v1", dependencies=[Depends(require_token)], responses=ERRORS)

    # -- analyses: Spinnaker Webhook stage, Argo web provider ---------------------------

    def analysis_status(rec: RunRecord) -> m.AnalysisStatus:
        verdict = rec.verdict or {"RUNNING": "Running", "CANCELED": "Canceled"}.get(
            rec.status, "Error")
        return m.AnalysisStatus(
            id=rec.id, name=rec.request.get("body", {}).get("name"), status=rec.status,
            progress=rec.progress, complete=rec.complete, verdict=verdict,  # type: ignore[arg-type]
            score=rec.score, judgeResult=rec.result.get("judgeResult"),
            errors=rec.result.get("errors") or {}, createdAt=rec.created_at,
            endedAt=rec.ended_at)

    def get_run(run_id: str) -> RunRecord:
        rec = manager.runs.get_run(run_id)
        if rec is None:
            raise HTTPException(404, f"no analysis {run_id}")
        return rec

    @api.post("/analyses", status_code=202, response_model=m.Accepted)
    async def create_analysis(body: AnalysisBody, request: Request, response: Response
                              ) -> m.Accepted:
        """Start an analysis (Spinnaker Webhook stage with wait-for-completion)."""
        rec = manager.submit("analysis", body)
        url = str(request.url_for("get_analysis", run_id=rec.id))
        response.headers["Location"] = url
        return m.Accepted(id=rec.id, status=rec.status, statusUrl=url,
                          cancelUrl=str(request.url_for("cancel_analysis", run_id=rec.id)))

    @api.get("/analyses/{run_id}", response_model=m.AnalysisStatus)
    async def get_analysis(run_id: str) -> m.AnalysisStatus:
        return analysis_status(get_run(run_id))

    @api.post("/analyses/{run_id}/cancel", response_model=m.AnalysisStatus)
    async def cancel_analysis(run_id: str) -> m.AnalysisStatus:
        get_run(run_id)
        rec = manager.cancel(run_id)
        assert rec is not None
        return analysis_status(rec)

    @api.delete("/analyses/{run_id}", response_model=m.AnalysisStatus)
    async def delete_analysis(run_id: str) -> m.AnalysisStatus:
        return await cancel_analysis(run_id)

    def verdict_of(rec: RunRecord) -> m.Verdict:
        s = analysis_status(rec)
        return m.Verdict(verdict=s.verdict, score=s.score, status=s.status,
                         reason=rec.progress, judgeResult=s.judgeResult)

    @api.get("/analyses/{run_id}/verdict", response_model=m.Verdict)
    async def analysis_verdict(
        run_id: str,
        wait: Annotated[float, Query(ge=0, le=300, description="seconds to wait for the end")
                        ] = 0,
    ) -> m.Verdict:
        """Argo Rollouts `web` provider: 200 with the verdict, whatever it is."""
        get_run(run_id)
        rec = await manager.wait(run_id, wait)
        assert rec is not None
        return verdict_of(rec)

    @api.post("/verdict", response_model=m.Verdict,
              responses={503: {"model": m.Verdict}})
    async def judge_now(body: AnalysisBody) -> JSONResponse:
        """Judge and answer in one request (Argo Rollouts `web` provider with POST).
        200 for Pass, Marginal and Fail alike; 503 when the data could not be had (Argo
        counts that as a measurement error, not a failed canary)."""
        started = manager.submit("analysis", body)
        rec = await manager.wait(started.id, 300)
        assert rec is not None
        verdict = verdict_of(rec)
        code = 503 if verdict.verdict == "Error" else 200
        return JSONResponse(verdict.model_dump(mode="json"), code)

    # -- rollouts -----------------------------------------------------------------------

    def rollout_body(name: str) -> m.RolloutStatusBody:
        st = manager.rollout_status(name)
        if st is None:
            raise HTTPException(404, f"no rollout {name}")
        rec = st.record
        return m.RolloutStatusBody(
            name=name, status=st.status, progress=st.progress,
            phase=rec.phase if rec else None, verdict=rec.verdict if rec else None,
            message=rec.message if rec else "", stepIndex=rec.step_index if rec else None,
            weights=rec.weights if rec else {}, reportDir=rec.report_dir if rec else None)

    @api.post("/rollouts", status_code=202, response_model=m.Accepted)
    async def create_rollout(
        request: Request, response: Response,
        spec: Annotated[dict[str, Any], Body(description="a Rollout spec, as JSON")],
    ) -> m.Accepted:
        """Start (or resume) a rollout; Spinnaker polls the Location."""
        name = await manager.start_rollout(spec, request.client.host if request.client else "")
        url = str(request.url_for("get_rollout", name=name))
        response.headers["Location"] = url
        return m.Accepted(id=name, status="RUNNING", statusUrl=url,
                          cancelUrl=str(request.url_for("cancel_rollout", name=name)))

    @api.get("/rollouts/{name}", response_model=m.RolloutStatusBody)
    async def get_rollout(name: str) -> m.RolloutStatusBody:
        return rollout_body(name)

    def control(name: str, command: str) -> m.RolloutStatusBody:
        if manager.command(name, command) is None:
            raise HTTPException(404, f"no rollout {name}")
        return rollout_body(name)

    @api.post("/rollouts/{name}/cancel", response_model=m.RolloutStatusBody)
    async def cancel_rollout(name: str) -> m.RolloutStatusBody:
        """Spinnaker's cancel: aborts the rollout (traffic back to the baseline)."""
        return control(name, "abort")

    @api.post("/rollouts/{name}/pause", response_model=m.RolloutStatusBody)
    async def pause_rollout(name: str) -> m.RolloutStatusBody:
        return control(name, "pause")

    @api.post("/rollouts/{name}/resume", response_model=m.RolloutStatusBody)
    async def resume_rollout(name: str) -> m.RolloutStatusBody:
        return control(name, "resume")

    @api.post("/rollouts/{name}/promote", response_model=m.RolloutStatusBody)
    async def promote_rollout(name: str) -> m.RolloutStatusBody:
        return control(name, "promote")

    @api.post("/rollouts/{name}/abort", response_model=m.RolloutStatusBody)
    async def abort_rollout(name: str) -> m.RolloutStatusBody:
        return control(name, "abort")

    # -- Flagger webhooks -----------------------------------------------------------------

    # Flagger's webhook spec has no way to send a header, so its hook endpoint can be
    # served without the token (--flagger-without-auth); gates stay behind it.
    flagger = APIRouter(prefix="/api/v1", responses=ERRORS,
                        dependencies=[] if flagger_without_auth else [Depends(require_token)])

    @flagger.post("/flagger/{hook}", response_model=m.FlaggerAnswer,
                  responses={403: {"model": m.FlaggerAnswer}})
    async def flagger_hook(hook: m.FlaggerHook, payload: m.FlaggerPayload) -> JSONResponse:
        """One URL per Flagger webhook type. 200 lets Flagger go on (for `rollback`: roll
        back now); 403 halts it. Gates are set with /flagger/gates/...; a `rollout` or
        `pre-rollout` hook whose metadata names `analysisId` answers with that analysis."""
        allowed, reason = flagger_decision(hook, payload)
        code = 200 if allowed else 403
        manager.runs.add_flagger_event(hook, payload.name, payload.namespace, payload.phase,
                                       payload.model_dump(mode="json"), code)
        return JSONResponse(m.FlaggerAnswer(hook=hook, allowed=allowed, reason=reason)
                            .model_dump(), code)

    def flagger_decision(hook: str, payload: m.FlaggerPayload) -> tuple[bool, str]:
        if hook == "event":
            return True, "recorded"
        analysis_id = (payload.metadata or {}).get("analysisId")
        if analysis_id and hook in ("rollout", "pre-rollout", "post-rollout"):
            rec = manager.runs.get_run(analysis_id)
            if rec is None:
                return False, f"no analysis {analysis_id}"
            return rec.status == "SUCCEEDED", rec.progress
        key = f"{payload.namespace}/{payload.name}/{hook}"
        state = manager.runs.gate(key)
        is_open = hook not in GATES_CLOSED_BY_DEFAULT if state is None else state
        return is_open, f"gate {key} is {'open' if is_open else 'closed'}"

    @api.post("/flagger/gates/{namespace}/{name}/{hook}/{action}", response_model=m.GateState)
    async def set_gate(namespace: str, name: str, hook: m.FlaggerHook,
                       action: Literal["open", "close"]) -> m.GateState:
        """Open or close one canary's gate of one webhook type."""
        key = f"{namespace}/{name}/{hook}"
        manager.runs.set_gate(key, action == "open")
        return m.GateState(key=key, open=action == "open")

    @api.get("/flagger/{namespace}/{name}/calls")
    async def flagger_calls(namespace: str, name: str) -> list[dict[str, Any]]:
        """The webhook calls Flagger made for one canary, oldest first."""
        return manager.runs.flagger_events(namespace, name)

    app.include_router(api)
    app.include_router(flagger)
    app.include_router(_kayenta_router(manager, None if kayenta_without_auth else require_token))
    return app


def _kayenta_router(manager: RunManager, auth: Any) -> APIRouter:
    """Kayenta's REST subset: enough for Spinnaker's Kayenta stage and Argo Rollouts'
    kayenta provider to use canaryctl in its place."""
    router = APIRouter(dependencies=[Depends(auth)] if auth is not None else [],
                       responses=ERRORS, tags=["kayenta"])

    def summary(rec: Any) -> m.KayentaConfigSummary:
        return m.KayentaConfigSummary(
            id=rec.id, name=rec.name, applications=rec.applications,
            updatedTimestamp=int(rec.updated_at * 1000),
            updatedTimestampIso=_iso(rec.updated_at) or "")

    @router.get("/canaryConfig", response_model=list[m.KayentaConfigSummary])
    async def list_configs(application: str | None = None) -> list[m.KayentaConfigSummary]:
        return [summary(c) for c in manager.runs.list_configs()
                if application is None or not c.applications or application in c.applications]

    @router.post("/canaryConfig", response_model=m.KayentaConfigId)
    async def save_config(config: Annotated[dict[str, Any], Body()]) -> m.KayentaConfigId:
        from canary.kayenta_config import parse_kayenta_config

        parse_kayenta_config(config, "canaryConfig")
        apps = [a for a in config.get("applications") or [] if isinstance(a, str)]
        name = str(config.get("name") or "unnamed")
        return m.KayentaConfigId(canaryConfigId=manager.runs.save_config(name, apps, config))

    @router.get("/canaryConfig/{config_id}")
    async def get_config(config_id: str) -> dict[str, Any]:
        rec = manager.runs.get_config(config_id)
        if rec is None:
            raise HTTPException(404, f"no canary config {config_id}")
        return rec.config

    @router.delete("/canaryConfig/{config_id}", status_code=204)
    async def delete_config(config_id: str) -> Response:
        if not manager.runs.delete_config(config_id):
            raise HTTPException(404, f"no canary config {config_id}")
        return Response(status_code=204)

    @router.get("/credentials")
    async def credentials() -> list[dict[str, Any]]:
        """Kayenta's account list: the server's metrics accounts (never their secrets)."""
        return [{"name": name, "type": str(settings.get("type")),
                 "supportedTypes": ["METRICS_STORE"]}
                for name, settings in sorted(manager.metrics_accounts.items())]

    def submit(kind: str, config: dict[str, Any], req: m.KayentaExecutionRequest,
               params: dict[str, Any]) -> RunRecord:
        if req.metricSetPairs is None:
            if not req.scopes:
                raise InputError("request", "executionRequest.scopes",
                                 "scopes to fetch the metrics for (with a metrics account of "
                                 "this server), or the data inline as metricSetPairs")
            request = req.model_dump(mode="json", by_alias=True, exclude_none=True)
            return manager.submit_kayenta_fetch(
                kind, config, request, params.get("metricsAccountName"),  # type: ignore[arg-type]
                {"kayenta": {**params, "executionRequest": request}})
        thresholds = None if req.thresholds is None else {
            "pass": req.thresholds.pass_, "marginal": req.thresholds.marginal}
        try:
            body = AnalysisBody.model_validate(
                {"config": config, "data": req.metricSetPairs, "thresholds": thresholds,
                 "name": config.get("name")})
        except ValidationError as exc:
            raise InputError("request", "executionRequest", str(exc.errors()[0]["msg"])
                             ) from None
        extra = {"kayenta": {**params, "executionRequest": req.model_dump(
            mode="json", by_alias=True, exclude={"metricSetPairs"}, exclude_none=True)}}
        return manager.submit(kind, body, extra)  # type: ignore[arg-type]

    def stored_config(config_id: str) -> dict[str, Any]:
        rec = manager.runs.get_config(config_id)
        if rec is None:
            raise HTTPException(404, f"no canary config {config_id}")
        return rec.config

    @router.post("/canary", response_model=m.KayentaExecution)
    async def adhoc(body: m.KayentaAdhocRequest, application: str = "canaryctl",
                    storageAccountName: str | None = None,
                    metricsAccountName: str | None = None) -> m.KayentaExecution:
        rec = submit("kayenta", body.canaryConfig, body.executionRequest,
                     {"application": application, "storageAccountName": storageAccountName,
                      "metricsAccountName": metricsAccountName})
        return m.KayentaExecution(canaryExecutionId=rec.id)

    @router.post("/canary/{config_id}", response_model=m.KayentaExecution)
    async def with_config(config_id: str, body: m.KayentaExecutionRequest,
                          application: str = "canaryctl",
                          storageAccountName: str | None = None,
                          metricsAccountName: str | None = None) -> m.KayentaExecution:
        rec = submit("kayenta", stored_config(config_id), body,
                     {"application": application, "storageAccountName": storageAccountName,
                      "metricsAccountName": metricsAccountName, "configId": config_id})
        return m.KayentaExecution(canaryExecutionId=rec.id)

    def kayenta_status(rec: RunRecord) -> str:
        if rec.status == "RUNNING":
            return "running"
        if rec.status == "CANCELED":
            return "canceled"
        return "succeeded" if rec.verdict is not None else "terminal"

    def kayenta_result(rec: RunRecord) -> m.KayentaResult:
        params = rec.request.get("kayenta", {})
        result = None
        if rec.verdict is not None:
            result = {"judgeResult": rec.result.get("judgeResult"),
                      "canaryDuration": _duration((rec.ended_at or time.time())
                                                  - (rec.started_at or rec.created_at))}
        exception = None
        if rec.status == "FAILED" and rec.verdict is None:
            # Orca's stage exception shape, which Kayenta passes on and Spinnaker shows.
            message = rec.error or rec.progress
            exception = {"exceptionType": "CanaryExecutionError", "shouldRetry": False,
                         "timestamp": int((rec.ended_at or rec.created_at) * 1000),
                         "details": {"error": message, "errors": [message],
                                     "metrics": rec.result.get("errors") or {}}}
        return m.KayentaResult(
            complete=rec.complete, status=kayenta_status(rec),  # type: ignore[arg-type]
            result=result, application=params.get("application") or "canaryctl",
            storageAccountName=params.get("storageAccountName"),
            canaryExecutionRequest=params.get("executionRequest"),
            buildTimeIso=_iso(rec.created_at) or "", startTimeIso=_iso(rec.started_at),
            endTimeIso=_iso(rec.ended_at), exception=exception, pipelineId=rec.id,
            configId=params.get("configId"), metricsAccountName=params.get("metricsAccountName"),
            buildTimeMillis=_millis(rec.created_at), startTimeMillis=_millis(rec.started_at),
            endTimeMillis=_millis(rec.ended_at))

    def kayenta_run(run_id: str, kind: str) -> RunRecord:
        rec = manager.runs.get_run(run_id)
        if rec is None or rec.kind != kind:
            raise HTTPException(404, f"no canary execution {run_id}")
        return rec

    @router.get("/canary/{run_id}", response_model=m.KayentaResult)
    async def canary_result(run_id: str, storageAccountName: str | None = None
                            ) -> m.KayentaResult:
        return kayenta_result(kayenta_run(run_id, "kayenta"))

    @router.post("/standalone_canary_analysis", response_model=m.KayentaStandaloneExecution)
    async def standalone(body: m.KayentaStandaloneRequest, application: str = "canaryctl",
                         metricsAccountName: str | None = None
                         ) -> m.KayentaStandaloneExecution:
        if body.canaryConfig is None:
            raise InputError("request", "canaryConfig", "a Kayenta canary config is needed "
                             "(or use /standalone_canary_analysis/config/{id})")
        rec = submit("standalone", body.canaryConfig, body.executionRequest,
                     {"application": application, "metricsAccountName": metricsAccountName})
        return m.KayentaStandaloneExecution(canaryAnalysisExecutionId=rec.id)

    @router.post("/standalone_canary_analysis/config/{config_id}",
                 response_model=m.KayentaStandaloneExecution)
    async def standalone_with_config(config_id: str, body: m.KayentaStandaloneRequest,
                                     application: str = "canaryctl",
                                     metricsAccountName: str | None = None
                                     ) -> m.KayentaStandaloneExecution:
        rec = submit("standalone", stored_config(config_id), body.executionRequest,
                     {"application": application, "metricsAccountName": metricsAccountName})
        return m.KayentaStandaloneExecution(canaryAnalysisExecutionId=rec.id)

    @router.get("/standalone_canary_analysis/{run_id}")
    async def standalone_result(run_id: str) -> dict[str, Any]:
        rec = kayenta_run(run_id, "standalone")
        single = kayenta_result(rec).model_dump(mode="json")
        thresholds = (rec.request.get("body", {}).get("thresholds")
                      or {"pass": 75.0, "marginal": 50.0})
        out: dict[str, Any] = {
            "pipelineId": rec.id, "application": single["application"],
            "complete": rec.complete, "status": single["status"],
            "executionStatus": single["status"].upper(),
            "buildTimeIso": single["buildTimeIso"], "startTimeIso": single["startTimeIso"],
            "endTimeIso": single["endTimeIso"], "exception": single["exception"],
        }
        if rec.verdict is not None and rec.score is not None:
            passed = rec.score >= thresholds["pass"]
            out["canaryAnalysisExecutionResult"] = {
                "didPassThresholds": passed,
                "hasWarnings": False,
                "canaryScoreMessage": "Final canary score "
                f"{rec.score:.1f} {'met' if passed else 'did not meet'} the pass threshold "
                f"{thresholds['pass']}",
                "canaryScores": [rec.score],
                "canaryExecutionResults": [{**single, "executionId": rec.id}],
            }
        return out

    return router
