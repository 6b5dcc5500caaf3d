"""Settings of the API and the console (app settings in Azure, env locally)."""

from __future__ import annotations

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True, case_sensitive=False)

    # Automation key (x-functions-key or ?code=): devhost's stand-in, and in Azure an app setting (Key Vault
    # reference) the v1 routes check themselves, since they are anonymous to the host. Empty: no key accepted.
    function_key: str = Field(default="", validation_alias=AliasChoices("WHARF_FUNCTION_KEY"))
    # Entra ID: the tenant and the API's application ID URI / client id (the token audience).
    tenant_id: str = Field(default="", validation_alias=AliasChoices("WHARF_AUTH_TENANT_ID"))
    audience: str = Field(default="", validation_alias=AliasChoices("WHARF_AUTH_AUDIENCE"))
    issuer: str = Field(default="", validation_alias=AliasChoices("WHARF_AUTH_ISSUER"))
    jwks_url: str = Field(default="", validation_alias=AliasChoices("WHARF_AUTH_JWKS_URL"))
    algorithms: str = Field(default="RS256", validation_alias=AliasChoices("WHARF_AUTH_ALGORITHMS"))
    leeway_seconds: int = Field(default=60, ge=0, le=600, validation_alias=AliasChoices("WHARF_AUTH_LEEWAY_SECONDS"))
    jwks_cache_seconds: int = Field(default=3600, ge=60, le=86400,
                                    validation_alias=AliasChoices("WHARF_AUTH_JWKS_CACHE_SECONDS"))
    # An unknown `kid` fetches the key set again at most once per this many seconds (a flood of made-up kids
    # cannot hammer the tenant's JWKS endpoint).
    jwks_refresh_cooldown_seconds: float = Field(default=30, ge=0, le=3600,
                                                 validation_alias=AliasChoices("WHARF_AUTH_JWKS_COOLDOWN_SECONDS"))
    # Uploads through the API (POST /partners/{p}/uploads): the largest body accepted.
    upload_max_bytes: int = Field(default=100 * 1024 * 1024, ge=1,
                                  validation_alias=AliasChoices("WHARF_UPLOAD_MAX_BYTES"))
    # Report and content downloads larger than this are refused with 413 (the Functions host buffers bodies).
    download_max_bytes: int = Field(default=64 * 1024 * 1024, ge=1,
                                    validation_alias=AliasChoices("WHARF_DOWNLOAD_MAX_BYTES"))
    # uploads:prepare: how long the upload URL is valid.
    upload_url_minutes: int = Field(default=15, ge=1, le=60, validation_alias=AliasChoices("WHARF_UPLOAD_URL_MINUTES"))

    # The console: App Service authentication (Easy Auth) in front of the app in Azure, whose validated principal
    # arrives as X-MS-CLIENT-PRINCIPAL (trusted only when this is on: the platform strips it from requests).
    easyauth_enabled: bool = Field(default=False, validation_alias=AliasChoices("WHARF_EASYAUTH_ENABLED"))
    # Locally: a clearly marked development sign-in (pick a name and a role). Never on in Azure.
    dev_signin: bool = Field(default=False, validation_alias=AliasChoices("WHARF_CONSOLE_DEV_SIGNIN"))
    # Signs the development sign-in cookie and the console's CSRF tokens; random per process when empty.
    console_secret: str = Field(default="", validation_alias=AliasChoices("WHARF_CONSOLE_SECRET"))

    @property
    def effective_issuer(self) -> str:
        return self.issuer or (f"https://login.microsoftonline.com/{self.tenant_id}/v2.0" if self.tenant_id else "")

    @property
    def effective_jwks_url(self) -> str:
        if self.jwks_url:
            return self.jwks_url
        return f"https://login.microsoftonline.com/{self.tenant_id}/discovery/v2.0/keys" if self.tenant_id else ""

    @property
    def allowed_algorithms(self) -> list[str]:
        """Asymmetric algorithms only: HS* and none are never accepted, whatever the setting says."""
        return [a.strip() for a in self.algorithms.split(",") if a.strip().upper()[:2] in ("RS", "PS", "ES")]


def api_settings() -> ApiSettings:
    """Read on each request (a few microseconds): a changed app setting or test environment takes effect."""
    return ApiSettings()
