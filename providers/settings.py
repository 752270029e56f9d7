"""Provider settings as written under `providers:` in a rollout spec.

A discriminated union on `type`. Credentials are named, never given: a spec says which
environment variable or file holds a key (`apiKeyEnv`, `tokenFile`, ...) and a key
written inline is rejected, so a spec can be committed and printed safely.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

# Keys that would put a credential in the spec text itself.
_INLINE_SECRET_KEYS = (
    "apiKey",
    "appKey",
    "applicationKey",
    "token",
    "password",
    "bearerToken",
    "sessionKey",
    "api_key",
    "app_key",
)


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _no_inline_secrets(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in _INLINE_SECRET_KEYS:
                if key in data:
                    raise ValueError(
                        f"{key}: credentials may not be written in the spec; name an "
                        f"environment variable ({key}Env) or a file ({key}File) instead"
                    )
        return data


Seconds = Annotated[float, Field(gt=0, le=600)]


class PrometheusSettings(_Settings):
    type: Literal["prometheus"]
    url: str = Field(pattern=r"^https?://")
    timeout: Seconds = 10.0
    retries: int = Field(default=2, ge=0, le=10)
    # Header name -> environment variable holding its value (e.g. an Authorization
    # header for a hosted Prometheus).
    headers_from_env: dict[str, str] = Field(default_factory=dict, alias="headersFromEnv")
    bearer_token_env: str | None = Field(default=None, alias="bearerTokenEnv")
    bearer_token_file: str | None = Field(default=None, alias="bearerTokenFile")
    verify_tls: bool = Field(default=True, alias="verifyTls")


DatadogSite = Literal[
    "datadoghq.com",
    "us3.datadoghq.com",
    "us5.datadoghq.com",
    "ap1.datadoghq.com",
    "ap2.datadoghq.com",
    "uk1.datadoghq.com",
    "datadoghq.eu",
    "ddog-gov.com",
    "us2.ddog-gov.com",
]


class DatadogSettings(_Settings):
    type: Literal["datadog"]
    site: DatadogSite = "datadoghq.com"
    # Overrides `site`, for proxies and tests; https://api.<site> otherwise.
    url: str | None = Field(default=None, pattern=r"^https?://")
    api_key_env: str | None = Field(default="DD_API_KEY", alias="apiKeyEnv")
    app_key_env: str | None = Field(default="DD_APP_KEY", alias="appKeyEnv")
    api_key_file: str | None = Field(default=None, alias="apiKeyFile")
    app_key_file: str | None = Field(default=None, alias="appKeyFile")
    timeout: Seconds = 20.0
    retries: int = Field(default=3, ge=0, le=10)
    # The longest a 429 may make us wait before one retry; beyond it the fetch errors.
    max_rate_limit_wait: float = Field(default=30.0, ge=0, le=600, alias="maxRateLimitWait")
    log_indexes: list[str] = Field(default_factory=lambda: ["*"], alias="logIndexes")

    @model_validator(mode="after")
    def _file_wins(self) -> DatadogSettings:
        # A file given explicitly replaces the default env var names.
        if self.api_key_file and "api_key_env" not in self.model_fields_set:
            object.__setattr__(self, "api_key_env", None)
        if self.app_key_file and "app_key_env" not in self.model_fields_set:
            object.__setattr__(self, "app_key_env", None)
        return self

    def base_url(self) -> str:
        return (self.url or f"https://api.{self.site}").rstrip("/")


class SplunkTokenAuth(_Settings):
    type: Literal["token"]
    token_env: str | None = Field(default=None, alias="tokenEnv")
    token_file: str | None = Field(default=None, alias="tokenFile")

    @model_validator(mode="after")
    def _one_source(self) -> SplunkTokenAuth:
        if not self.token_env and not self.token_file:
            raise ValueError("token auth needs tokenEnv or tokenFile")
        return self


class _UserPassword(_Settings):
    username_env: str | None = Field(default=None, alias="usernameEnv")
    username_file: str | None = Field(default=None, alias="usernameFile")
    password_env: str | None = Field(default=None, alias="passwordEnv")
    password_file: str | None = Field(default=None, alias="passwordFile")

    @model_validator(mode="after")
    def _sources(self) -> _UserPassword:
        if not self.username_env and not self.username_file:
            raise ValueError("needs usernameEnv or usernameFile")
        if not self.password_env and not self.password_file:
            raise ValueError("needs passwordEnv or passwordFile")
        return self


class SplunkBasicAuth(_UserPassword):
    type: Literal["basic"]


class SplunkSessionAuth(_UserPassword):
    """Logs in at /services/auth/login and sends `Authorization: Splunk <sessionKey>`."""

    type: Literal["session"]


SplunkAuth = Annotated[
    SplunkTokenAuth | SplunkBasicAuth | SplunkSessionAuth, Field(discriminator="type")
]


class SplunkSettings(_Settings):
    type: Literal["splunk"]
    url: str = Field(pattern=r"^https?://")
    auth: SplunkAuth
    verify_tls: bool = Field(default=True, alias="verifyTls")
    api_version: Literal["auto", "v1", "v2"] = Field(default="auto", alias="apiVersion")
    # export streams results as they are found; job dispatches a search job and pages
    # its results, for searches too large to stream in one response.
    mode: Literal["export", "job"] = "export"
    timeout: Seconds = 60.0
    retries: int = Field(default=2, ge=0, le=10)
    page_size: int = Field(default=1000, ge=1, le=50_000, alias="pageSize")


class FileSettings(_Settings):
    type: Literal["file"]
    path: str = Field(min_length=1)
    # Recorded timestamps rarely match a live window; replay everything unless asked.
    clip_to_window: bool = Field(default=False, alias="clipToWindow")


class MeshSettings(_Settings):
    type: Literal["mesh"]
    admin_url: str = Field(alias="adminUrl", min_length=1)
    token_env: str | None = Field(default=None, alias="tokenEnv")
    token_file: str | None = Field(default=None, alias="tokenFile")
    timeout: Seconds = 5.0

    @model_validator(mode="after")
    def _token_source(self) -> MeshSettings:
        # The admin API always wants its token.
        if not self.token_env and not self.token_file:
            raise ValueError("mesh provider needs tokenEnv or tokenFile")
        return self


ProviderSettings = Annotated[
    PrometheusSettings | DatadogSettings | SplunkSettings | FileSettings | MeshSettings,
    Field(discriminator="type"),
]

_adapter: TypeAdapter[ProviderSettings] = TypeAdapter(ProviderSettings)


def parse_provider_settings(data: Any) -> ProviderSettings:
    """Validated settings of one provider; raises pydantic.ValidationError."""
    return _adapter.validate_python(data)
