"""Every setting of grantd, read from the environment (``GRANTD_*``) or a TOML file.

Precedence, highest first: environment variables, the TOML file named by
``GRANTD_CONFIG_FILE``, the defaults below. The defaults run out of the box on
one machine: an embedded SQLite database and a generated secret under ``./var/``.
``docs/configuration.md`` lists every setting.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULT_PERMISSIONS: dict[str, str] = {
    "read_profile": "Read your profile: your user id and email address.",
    "write_data": "Create and change data on your behalf.",
    "manage_notifications": "Manage the notifications sent to you.",
}

PERMISSION_NAME = re.compile(r"^[a-z][a-z0-9_:.\-]{0,63}$")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GRANTD_", extra="ignore")

    database_url: str = Field(
        default="",
        description="SQLAlchemy URL: sqlite+aiosqlite:///path or postgresql+asyncpg://user@host/db. "
        "Empty means an SQLite file grantd.db in the data directory.",
    )
    db_pool_size: int = Field(
        default=10, ge=1, le=1000,
        description="PostgreSQL: connections per worker, opened as requests need them and closed after five idle "
        "minutes (SQLite uses two).",
    )
    db_max_overflow: int = Field(
        default=10, ge=0, le=1000, description="PostgreSQL: connections per worker beyond db_pool_size when all are busy."
    )
    database_timeout: float = Field(
        default=5.0, ge=0.5, le=300,
        description="Seconds (0.5-300) grantd waits for the database at each step: to connect, for a free pooled "
        "connection, for a statement. Past it the request is answered 503 temporarily_unavailable with Retry-After.",
    )
    data_dir: Path = Field(default=Path("var"), description="Where the embedded database and generated secret live.")
    issuer: str = Field(default="http://127.0.0.1:8000", description="The `iss` of every token: this server's public URL.")
    secret_key: str = Field(
        default="",
        description="Master secret: keys the hashes of app secrets, codes and keys, and encrypts signing keys at rest. "
        "Empty means generate one once and keep it in <data_dir>/secret.key.",
    )
    access_token_audience: str = Field(default="", description="`aud` of access tokens. Empty means the issuer.")
    resource_policy: Literal["any", "registered"] = Field(
        default="any",
        description="Which RFC 8707 `resource` values a token may be requested for (its `aud` is then that URI): "
        "any: any https URI (http only on localhost, 127.0.0.1, [::1]); registered: only a resource registered with "
        "`grantd resources create` or POST /v1/resources, its token carrying only the permissions it accepts.",
    )
    resource_admins: str = Field(
        default="",
        description="User ids, comma-separated, who may register and delete resources through /v1/resources and the "
        "console (everyone signed in may list them); the CLI always may.",
    )
    access_token_ttl: int = Field(default=3600, ge=60, le=86400, description="Access token lifetime, seconds.")
    id_token_ttl: int = Field(default=3600, ge=60, le=86400, description="OpenID Connect ID token lifetime, seconds.")
    user_token_ttl: int = Field(default=30 * 86400, ge=300, description="Signed-in user token lifetime, seconds.")
    refresh_token_ttl: int = Field(default=30 * 86400, ge=300, description="Refresh token lifetime, seconds.")
    refresh_token_grace: int = Field(
        default=5,
        ge=0,
        le=60,
        description="Seconds after a refresh token's rotation during which presenting it again returns the same "
        "result instead of revoking its family (tabs refreshing at once).",
    )
    code_retry_grace: int = Field(
        default=30,
        ge=0,
        le=300,
        description="Seconds after an authorization code's redemption during which the same client repeating the "
        "same request (same code, key, PKCE verifier, redirect_uri and state, at the same endpoint: a retry whose "
        "answer was lost) gets the same tokens instead of having them revoked as a replay; 0: none.",
    )
    code_retry_at_oauth2_token: bool = Field(
        default=False,
        description="Take such a retry at /oauth2/token too (the Neucron token endpoints always do). Off by default: "
        "RFC 6749 §4.1.2 says a code used twice MUST be denied, which OpenID certification checks (oidcc-codereuse).",
    )
    prune_interval: int = Field(
        default=3600,
        ge=0,
        le=7 * 86400,
        description="Seconds between two prunings of expired rows by the servers (one process of the deployment "
        "prunes each time, in small paced batches); 0: never (then run `grantd prune` on a schedule).",
    )
    smtp_url: str = Field(
        default="",
        description="Where the mail outbox sends: smtp://user:pass@host:port (plain) or smtp+starttls://user:pass@host:port "
        "(STARTTLS). Empty: each message is written as an .eml file under <data_dir>/mail/ instead.",
    )
    mail_from: str = Field(default="grantd@localhost", description="The From address of the messages grantd sends.")
    email_verification_ttl: int = Field(
        default=86400,
        ge=300,
        le=7 * 86400,
        description="Lifetime, seconds, of the single-use link that verifies an email address (sent at sign-up, on "
        "request from the account page, and to the new address of an email change).",
    )
    audit_retention_days: int = Field(
        default=0,
        ge=0,
        le=36500,
        description="Days the servers keep audit events when they prune (GRANTD_PRUNE_INTERVAL); 0: for ever.",
    )
    authorization_code_ttl: int = Field(default=300, ge=10, le=3600, description="Authorization code lifetime, seconds.")
    pushed_authorization_request_ttl: int = Field(
        default=60,
        ge=5,
        le=600,
        description="Lifetime, seconds, of a pushed authorization request's request_uri (RFC 9126).",
    )
    device_code_ttl: int = Field(
        default=600,
        ge=5,
        le=3600,
        description="Lifetime, seconds, of a device authorization request's device code and user code (RFC 8628).",
    )
    device_code_interval: int = Field(
        default=5,
        ge=1,
        le=60,
        description="Seconds a device must wait between two polls of the token endpoint (RFC 8628 §3.2 interval); "
        "polling faster is answered slow_down, and the device's interval grows by 5 seconds.",
    )
    require_pushed_authorization_requests: bool = Field(
        default=False,
        description="Refuse every authorization request at /oauth2/authorize that was not pushed first "
        "(RFC 9126 §5: the request_uri of /oauth2/par); per app: its require_pushed_authorization_requests.",
    )
    dpop_nonce: bool = Field(
        default=False,
        description="Require every DPoP proof (RFC 9449) to carry a nonce of the server's (use_dpop_nonce, "
        "DPoP-Nonce; §8, §9): a proof is then good for 5 to 10 minutes at most whatever its iat. Off: the iat "
        "window and the jti replay check bound a proof.",
    )
    signing_key_activation_delay: int = Field(
        default=600,
        ge=0,
        description="Seconds between `grantd signing-keys rotate` publishing a new key and that key signing.",
    )
    signing_key_reload_interval: int = Field(
        default=30,
        ge=1,
        le=3600,
        description="Seconds between two reads of the signing keys by each server process (a rotation by another "
        "process reaches this one within it).",
    )
    permissions: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_PERMISSIONS),
        description="The permission catalog: name -> description. As JSON in GRANTD_PERMISSIONS.",
    )
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, description="Largest request body accepted, bytes.")
    password_min_length: int = Field(default=8, ge=8, description="Shortest password accepted at sign-up.")
    jwks_uri_allow_private_addresses: bool = Field(
        default=False,
        description="Fetch an app's jwks_uri (private_key_jwt) from private, loopback or link-local addresses, and "
        "over http: for tests and closed networks only.",
    )
    require_second_factor: Literal["off", "all", "developers"] = Field(
        default="off",
        description="Who must sign in with a second factor: off (whoever set up an authenticator app), all (every account), "
        "developers (whoever opens the developer console). A person without one is sent to enrol first.",
    )
    dynamic_registration: Literal["off", "token", "open"] = Field(
        default="off",
        description="Dynamic client registration (RFC 7591, RFC 7592) at /oauth2/register: off; token (with an "
        "initial access token a developer or an operator created); open (anyone, rate-limited per address).",
    )
    rate_limit_registration_per_address: int = Field(
        default=10, ge=1, description="Open registrations allowed per client address per window."
    )
    rate_limit_registration_window: int = Field(
        default=3600, ge=1, le=86400, description="Open registration window, seconds."
    )
    client_id_metadata_documents: bool = Field(
        default=True,
        description="Accept an https URL as client_id: the client ID metadata document it names is fetched and "
        "describes the client (draft-ietf-oauth-client-id-metadata-document).",
    )
    client_id_metadata_document_allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Only these hosts may serve client ID metadata documents (a leading dot: the domain and its "
        "subdomains); empty: any host not denied. As JSON in the environment.",
    )
    client_id_metadata_document_denied_hosts: list[str] = Field(
        default_factory=list,
        description="Hosts whose client ID metadata documents are refused (a leading dot: the domain and its "
        "subdomains); wins over the allowed hosts. As JSON in the environment.",
    )
    client_id_metadata_document_allow_private_addresses: bool = Field(
        default=False,
        description="Fetch client ID metadata documents from private, loopback or link-local addresses, and over "
        "http: for development and tests only.",
    )
    rate_limits_enabled: bool = Field(default=True, description="Rate-limit log-in, sign-up and token endpoint failures.")
    rate_limit_login_per_account: int = Field(
        default=10, ge=1, description="Failed log-ins allowed per account (email) per log-in window."
    )
    rate_limit_login_per_address: int = Field(
        default=50, ge=1, description="Failed log-ins allowed per client address per log-in window."
    )
    rate_limit_login_window: int = Field(default=900, ge=1, le=86400, description="Log-in window, seconds.")
    rate_limit_signup_per_address: int = Field(default=20, ge=1, description="Sign-ups allowed per client address per window.")
    rate_limit_signup_window: int = Field(default=3600, ge=1, le=86400, description="Sign-up window, seconds.")
    rate_limit_password_reset_per_account: int = Field(
        default=5, ge=1, description="Password-reset requests allowed per email address per password-reset window."
    )
    rate_limit_password_reset_per_address: int = Field(
        default=20, ge=1, description="Password-reset requests allowed per client address per password-reset window."
    )
    rate_limit_password_reset_window: int = Field(
        default=3600, ge=1, le=86400, description="Password-reset request window, seconds."
    )
    rate_limit_email_verification_per_account: int = Field(
        default=5,
        ge=1,
        description="Verification links (sent again, or for an email change) per account and per address mailed per "
        "email-verification window.",
    )
    rate_limit_email_verification_per_address: int = Field(
        default=20, ge=1, description="Verification links requested per client address per email-verification window."
    )
    rate_limit_email_verification_window: int = Field(
        default=3600, ge=1, le=86400, description="Email-verification request window, seconds."
    )
    rate_limit_token_failures_per_client: int = Field(
        default=100,
        ge=1,
        description="Failed token, revocation and introspection requests (invalid_client, invalid_grant) "
        "per key_id or client_id from one client address per window (failures at one address never refuse "
        "another's requests).",
    )
    rate_limit_token_failures_per_address: int = Field(
        default=100, ge=1, description="Failed token requests per client address per window."
    )
    rate_limit_token_window: int = Field(default=60, ge=1, le=86400, description="Token endpoint failure window, seconds.")
    rate_limit_user_code_per_address: int = Field(
        default=10, ge=1, description="Wrong user codes (RFC 8628 /device) allowed per client address per user-code window."
    )
    rate_limit_user_code_global: int = Field(
        default=1000,
        ge=1,
        description="Wrong user codes allowed from all addresses together per user-code window (RFC 8628 §5.1: "
        "guessing a code is spread over many addresses).",
    )
    rate_limit_user_code_window: int = Field(default=900, ge=1, le=86400, description="User-code window, seconds.")
    redis_url: str = Field(
        default="", description="redis://host:port/db: keep rate-limit counters and the DPoP proofs used in Redis. "
        "Empty: in the database."
    )
    redis_timeout: float = Field(
        default=0.25, ge=0.01, le=10,
        description="Seconds grantd waits for Redis (to connect, for an answer) before the database stands in "
        "and Redis is left alone for a few seconds.",
    )
    redis_key_prefix: str = Field(default="grantd:", description="Prefix of every Redis key grantd writes.")
    timeout_keep_alive: int = Field(
        default=5, ge=1, le=300, description="`grantd serve`: seconds an idle keep-alive connection is kept open."
    )
    request_body_timeout: float = Field(
        default=15.0, gt=0, le=600, description="Seconds allowed between two chunks of a request body before 408."
    )
    limit_concurrency: int = Field(
        default=0, ge=0, description="`grantd serve`: most connections and tasks per process before 503; 0 means no limit."
    )
    host: str = Field(default="127.0.0.1", description="Address `grantd serve` binds to.")
    port: int = Field(default=8000, ge=1, le=65535, description="Port `grantd serve` listens on.")
    workers: int = Field(default=1, ge=1, description="Server processes `grantd serve` starts.")
    forwarded_allow_ips: str = Field(
        default="",
        description="`grantd serve`: the reverse proxies, comma-separated IP addresses or networks (10.0.0.0/8), "
        "whose X-Forwarded-For and X-Forwarded-Proto are believed: a request from one of them counts as coming from "
        "the address it forwarded for (rate limits per address, audit events, logs). Empty: none, every request is "
        "from its TCP peer; *: any peer (only where nothing but the proxy can reach grantd).",
    )
    log_level: str = Field(default="info", description="debug, info, warning or error.")
    log_format: str = Field(
        default="auto",
        description="json (one JSON object a line), console (human-readable), or auto: console when stderr is a "
        "terminal, JSON otherwise.",
    )
    metrics_enabled: bool = Field(default=False, description="Serve Prometheus metrics at /metrics on the public port.")
    metrics_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Serve Prometheus metrics on this port of GRANTD_HOST, apart from the API; 0 means no such port.",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("GRANTD_CONFIG_FILE")
        if config_file:
            if not Path(config_file).is_file():
                raise ValueError(f"GRANTD_CONFIG_FILE={config_file} does not exist")
            sources.append(_FileBelow(TomlConfigSettingsSource(settings_cls, toml_file=config_file), init_settings, env_settings))
        return tuple(sources)

    @field_validator("issuer")
    @classmethod
    def _issuer_is_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/?#\s]+(/[^?#\s]*)?$", value):
            raise ValueError("issuer must be an http(s) URL without query or fragment")
        return value.rstrip("/")

    @field_validator("permissions")
    @classmethod
    def _catalog_names(cls, value: dict[str, str]) -> dict[str, str]:
        if not value:
            raise ValueError("the permission catalog may not be empty")
        for name in value:
            if not PERMISSION_NAME.match(name):
                raise ValueError(f"permission name {name!r} must match {PERMISSION_NAME.pattern}")
        return value

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _proxy_addresses(cls, value: str) -> str:
        entries = [entry.strip() for entry in value.split(",") if entry.strip()]
        if entries == ["*"]:
            return "*"
        for entry in entries:
            # uvicorn would take an entry it cannot read as an address for a name no peer ever has,
            # and trust no proxy without a word: a typo is refused here instead.
            try:
                ipaddress.ip_network(entry) if "/" in entry else ipaddress.ip_address(entry)
            except ValueError:
                raise ValueError(
                    f"forwarded_allow_ips: {entry!r} is not an IP address or network (network bits only, as "
                    "10.0.0.0/8), nor * alone"
                ) from None
        return ",".join(entries)

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        value = value.lower()
        if value not in {"debug", "info", "warning", "error"}:
            raise ValueError("log_level must be debug, info, warning or error")
        return value

    @field_validator("log_format")
    @classmethod
    def _log_format(cls, value: str) -> str:
        value = value.lower()
        if value not in {"auto", "json", "console"}:
            raise ValueError("log_format must be auto, json or console")
        return value

    @cached_property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'grantd.db').resolve()}"

    @cached_property
    def audience(self) -> str:
        return self.access_token_audience or self.issuer

    @cached_property
    def master_secret(self) -> bytes:
        """The master secret as bytes; generated once under data_dir when not configured."""
        if self.secret_key:
            if len(self.secret_key) < 32:
                raise ValueError("GRANTD_SECRET_KEY must be at least 32 characters")
            return self.secret_key.encode()
        return _load_or_create_secret(self.data_dir / "secret.key")

    def masked(self) -> dict[str, Any]:
        values = self.model_dump(mode="json")
        if values.get("secret_key"):
            values["secret_key"] = "********"
        values["database_url"] = _mask_url_password(self.resolved_database_url)
        if values.get("smtp_url"):
            values["smtp_url"] = _mask_url_password(self.smtp_url)
        return values


class _FileBelow(PydanticBaseSettingsSource):
    """The config file's settings, minus those set by a source above it.

    pydantic-settings deep-merges dict values across sources; a setting given in the
    environment must replace the file's whole (the permission catalog above all).
    """

    def __init__(self, file: PydanticBaseSettingsSource, *above: PydanticBaseSettingsSource) -> None:
        super().__init__(file.settings_cls)
        self._file = file
        self._above = above

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._file.get_field_value(field, field_name)

    def __call__(self) -> dict[str, Any]:
        overridden = {key for source in self._above for key in source()}
        return {key: value for key, value in self._file().items() if key not in overridden}


def _load_or_create_secret(path: Path) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(48))
    value = path.read_text().strip()
    if len(value) < 32:  # a concurrent creator has not finished writing yet, or the file was truncated
        raise ValueError(f"{path} holds no usable secret; delete it or set GRANTD_SECRET_KEY")
    return value.encode()


def _mask_url_password(url: str) -> str:
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1********@", url)
