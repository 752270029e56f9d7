"""Builds providers from their spec settings, reading credentials as it goes.

Credentials are read here, at build time, so a missing key fails before a rollout
starts rather than at its first analysis.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from providers.provider import LogProvider, MetricProvider, ProviderError
from providers.secrets import SecretError, read_optional_secret, read_secret
from providers.settings import (
    DatadogSettings,
    FileSettings,
    MeshSettings,
    PrometheusSettings,
    ProviderSettings,
    SplunkBasicAuth,
    SplunkSessionAuth,
    SplunkSettings,
    SplunkTokenAuth,
)


def _prometheus(name: str, s: PrometheusSettings) -> MetricProvider:
    from providers.prometheus import PrometheusProvider, build_headers

    token = read_optional_secret(
        env=s.bearer_token_env, file=s.bearer_token_file, what=f"provider {name}: bearer token"
    )
    headers = build_headers(s.headers_from_env, token.reveal() if token else None)
    return PrometheusProvider(
        name, s.url, timeout=s.timeout, retries=s.retries, headers=headers, verify_tls=s.verify_tls
    )


def _datadog(
    name: str, s: DatadogSettings, transport: httpx.AsyncBaseTransport | None
) -> MetricProvider | LogProvider:
    from providers.datadog import DatadogProvider

    api_key = read_secret(env=s.api_key_env, file=s.api_key_file, what=f"provider {name}: apiKey")
    app_key = read_secret(env=s.app_key_env, file=s.app_key_file, what=f"provider {name}: appKey")
    return DatadogProvider(
        name,
        api_key,
        app_key,
        base_url=s.base_url(),
        timeout=s.timeout,
        retries=s.retries,
        max_rate_limit_wait=s.max_rate_limit_wait,
        log_indexes=tuple(s.log_indexes),
        transport=transport,
    )


def _splunk(
    name: str, s: SplunkSettings, transport: httpx.AsyncBaseTransport | None
) -> MetricProvider | LogProvider:
    from providers.splunk import (
        BasicCredentials,
        BearerToken,
        SessionCredentials,
        SplunkCredentials,
        SplunkProvider,
    )

    auth = s.auth
    what = f"provider {name}: auth"
    creds: SplunkCredentials
    if isinstance(auth, SplunkTokenAuth):
        creds = BearerToken(read_secret(env=auth.token_env, file=auth.token_file, what=what))
    else:
        user = read_secret(env=auth.username_env, file=auth.username_file, what=what + " username")
        password = read_secret(
            env=auth.password_env, file=auth.password_file, what=what + " password"
        )
        if isinstance(auth, SplunkBasicAuth):
            creds = BasicCredentials(user, password)
        else:
            assert isinstance(auth, SplunkSessionAuth)
            creds = SessionCredentials(user, password)
    return SplunkProvider(
        name,
        s.url,
        creds,
        verify_tls=s.verify_tls,
        api_version=s.api_version,
        mode=s.mode,
        timeout=s.timeout,
        retries=s.retries,
        page_size=s.page_size,
        transport=transport,
    )


def _file(name: str, s: FileSettings, base_dir: Path | None) -> MetricProvider | LogProvider:
    from providers.file import FileProvider

    path = Path(s.path).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    return FileProvider(name, path, clip_to_window=s.clip_to_window)


def _mesh(name: str, s: MeshSettings, transport: httpx.AsyncBaseTransport | None) -> MetricProvider:
    # Imported lazily: the mesh provider is built separately and pulls its own client.
    from providers.mesh import MeshProvider

    token = read_secret(env=s.token_env, file=s.token_file, what=f"provider {name}: token")
    provider: MetricProvider = MeshProvider(
        s.admin_url, token.reveal(), timeout=s.timeout, transport=transport
    )
    return provider


def _build(
    name: str,
    settings: ProviderSettings,
    transport: httpx.AsyncBaseTransport | None,
    base_dir: Path | None,
) -> object:
    try:
        if isinstance(settings, PrometheusSettings):
            return _prometheus(name, settings)
        if isinstance(settings, DatadogSettings):
            return _datadog(name, settings, transport)
        if isinstance(settings, SplunkSettings):
            return _splunk(name, settings, transport)
        if isinstance(settings, FileSettings):
            return _file(name, settings, base_dir)
        return _mesh(name, settings, transport)
    except SecretError as exc:
        raise ProviderError(name, str(exc)) from None


def build_metric_provider(
    name: str,
    settings: ProviderSettings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    base_dir: Path | None = None,
) -> MetricProvider:
    """The metric provider named `name` in a spec. `base_dir` anchors relative file
    paths (the spec's directory); `transport` replaces the network for HTTP providers.
    Raises ProviderError when a credential cannot be read."""
    provider = _build(name, settings, transport, base_dir)
    if not hasattr(provider, "fetch"):
        raise ProviderError(name, f"type {settings.type} does not serve metrics")
    return provider  # type: ignore[return-value]


def build_log_provider(
    name: str,
    settings: ProviderSettings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    base_dir: Path | None = None,
) -> LogProvider:
    """The log provider named `name`; Prometheus has no logs (ProviderError)."""
    if isinstance(settings, PrometheusSettings):
        raise ProviderError(name, "type prometheus has no logs; use datadog, splunk or file")
    provider = _build(name, settings, transport, base_dir)
    if not hasattr(provider, "fetch_logs"):
        raise ProviderError(name, f"type {settings.type} does not serve logs")
    return provider  # type: ignore[return-value]
