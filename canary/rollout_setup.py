"""Assembling a controller from a spec: the judge, the providers, the traffic router and
the credentials they need (read from the environment or files, never from the spec)."""

from __future__ import annotations

import os
from pathlib import Path

from analysis.judge import Judge
from canary.input_error import InputError
from canary.spec import AnalysisSpec, MeshRef, Rollout
from providers.provider import MetricProvider


def make_judge(analysis: AnalysisSpec) -> Judge:
    if analysis.judge == "mann-whitney":
        from analysis.mann_whitney_judge import MannWhitneyJudge

        return MannWhitneyJudge(group_weights=dict(analysis.group_weights))
    from analysis.sequential import SequentialJudge

    return SequentialJudge(alpha=analysis.alpha)


def mesh_token(mesh: MeshRef, source: str) -> str:
    if mesh.token_file:
        try:
            return Path(mesh.token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise InputError(source, "spec.mesh.tokenFile",
                             f"cannot read token file ({exc.strerror or exc})") from exc
    if mesh.token_env:
        token = os.environ.get(mesh.token_env)
        if token:
            return token
        raise InputError(source, "spec.mesh.tokenEnv",
                         f"environment variable {mesh.token_env} holding the mesh admin token "
                         "is not set")
    raise InputError(source, "spec.mesh", "give tokenEnv or tokenFile for the mesh admin token")


def make_providers(rollout: Rollout, source: str, token: str) -> dict[str, MetricProvider]:
    """One provider instance per name used by the spec's metrics. Relative paths in
    provider settings are relative to the spec file."""
    from providers.mesh import MeshProvider
    from providers.provider import ProviderError

    spec = rollout.spec
    built: dict[str, MetricProvider] = {}
    for metric in spec.analysis.metrics:
        name = metric.provider
        if name in built:
            continue
        if name == "mesh" and name not in spec.providers:
            built[name] = MeshProvider(spec.mesh.admin, token)
            continue
        from providers.factory import build_metric_provider

        base_dir = Path(source).resolve().parent if Path(source).exists() else None
        try:
            built[name] = build_metric_provider(name, spec.providers[name], base_dir=base_dir)
        except (ValueError, ProviderError) as exc:
            # Typically a credential that cannot be read: the message names the variable
            # or file, never the value.
            raise InputError(source, f"spec.providers.{name}", str(exc)) from exc
    return built
