"""grantd's tables. Times are integer Unix seconds (UTC); secrets are stored only as keyed hashes.

Alembic migrations under ``migrations/versions`` create and change these tables;
a change here goes with a new migration. The store builds its statements from the tables;
what Alembic compares them with, the DDL, is ``ddl_metadata()``.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)

metadata = MetaData()

# An app's id: a UUID, or the https URL of a client ID metadata document (migration 0020), which
# PostgreSQL must have room for (SQLite does not enforce a length).
APP_ID = String(36).with_variant(String(255), "postgresql")

users = Table(
    "users",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("email", String(320), nullable=False, unique=True),
    Column("password_hash", String(255), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    # The profile (grantd.core.profile holds its rules); every field optional.
    Column("first_name", String(100)),
    Column("last_name", String(100)),
    Column("user_name", String(32)),  # as its owner wrote it
    Column("user_name_key", String(32)),  # user_name in lower case: unique, so unique whatever the case
    Column("avatar", String(2048)),  # an https URL
    Column("phone_number", String(16)),  # + and 7 to 15 digits
    Column("language", String(35)),  # a BCP 47 tag
    Column("updated_at", BigInteger),  # when the profile last changed (OpenID Connect's updated_at)
    # When ``email`` was proven by a link sent to it (grantd.core.email_address); NULL: not proven.
    Column("email_verified_at", BigInteger),
    # The account may use the admin API and pages (grantd.core.admin; migration 0024).
    Column("is_admin", Boolean, nullable=False, server_default=false()),
    # When an admin or the operator locked the account: it cannot sign in. NULL: not locked.
    Column("locked_at", BigInteger),
)
Index("ux_users_user_name_key", users.c.user_name_key, unique=True)

# One row per signed-in user token (its jti), so that log-out revokes it.
user_sessions = Table(
    "user_sessions",
    metadata,
    Column("jti", String(36), primary_key=True),
    Column("user_id", String(36), ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("issued_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("revoked_at", BigInteger),
    # How the session was signed in: RFC 8176 values, space-separated; NULL: a password alone.
    Column("amr", String(64)),
)

# A user's authenticator app (RFC 6238 TOTP), one at most (migration 0022): the shared secret
# sealed under the master secret (core.second_factor), confirmed once a first code was typed;
# ``last_step``: the time-step of the last code accepted, so that no code is accepted twice.
totp_credentials = Table(
    "totp_credentials",
    metadata,
    Column("user_id", String(36), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("sealed_secret", LargeBinary, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("confirmed_at", BigInteger),
    Column("last_step", BigInteger, nullable=False, server_default="0"),
)

# A user's single-use recovery codes, as keyed hashes (crypto.secrets.SecretHasher).
recovery_codes = Table(
    "recovery_codes",
    metadata,
    Column("user_id", String(36), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("code_hash", String(64), primary_key=True),
    Column("created_at", BigInteger, nullable=False),
    Column("used_at", BigInteger),
)

apps = Table(
    "apps",
    metadata,
    Column("id", APP_ID, primary_key=True),
    # An app no developer owns (registered by itself, RFC 7591, or by its client ID metadata
    # document) has the reserved account store.apps.SELF_REGISTERED as its owner (migration 0020).
    Column("owner_id", String(36), ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("name", String(200), nullable=False),
    Column("redirect_uris", Text, nullable=False),  # JSON array of exact URIs
    Column("permissions", Text, nullable=False),  # comma-separated: the most the app may ask for
    Column("app_key_hash", String(64), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("disabled_at", BigInteger),
    # "confidential" (authenticates with a key secret) or "public" (cannot keep a secret: PKCE required)
    Column("client_type", String(16), nullable=False, server_default="confidential"),
    # Branding, shown on the hosted pages and by the v2 client-info; NULL: not set. Named as
    # RFC 7591 §2 names client metadata where it has a name; checked by core.apps (migration 0009).
    Column("logo_uri", Text),  # an https URL (http on a loopback host), at most 2048 characters
    Column("client_uri", Text),  # the app's website
    Column("tos_uri", Text),  # its terms of service
    Column("policy_uri", Text),  # its privacy policy
    Column("description", Text),  # at most 500 printable characters
    Column("domain", String(253)),  # a host name
    Column("accent_color", String(7)),  # "#rgb" or "#rrggbb", lower case
    Column("theme", String(5)),  # "light" or "dark"
    # OpenID Connect (migration 0012), named as OpenID Connect Dynamic Client Registration 1.0 §2.
    Column("post_logout_redirect_uris", Text),  # JSON array of exact URIs
    Column("id_token_signed_response_alg", String(8)),  # RS256 or ES256; NULL: RS256
    Column("subject_type", String(8)),  # public or pairwise; NULL: public
    Column("sector_identifier_uri", Text),
    Column("require_nonce", Boolean),  # grantd's own: refuse an OpenID request without a nonce
    Column("require_pushed_authorization_requests", Boolean),  # RFC 9126 §6
    # Client authentication (migration 0014), named as RFC 7591 §2.
    Column("token_endpoint_auth_method", String(32)),  # NULL: none for a public app, else a secret
    Column("jwks", Text),  # a JWK Set of public keys (JSON), for private_key_jwt (RFC 7523)
    Column("jwks_uri", Text),  # where the app publishes its JWK Set instead
    Column("dpop_bound_access_tokens", Boolean),  # RFC 9449 §5.2 (migration 0015): DPoP required
    # grantd's own (migration 0016): "fapi2" (the FAPI 2.0 Security Profile); NULL: none.
    Column("security_profile", String(16)),
    Column("refresh_token_rotation", Boolean),  # false: a refresh keeps its refresh token; NULL: true
    # Dynamic registration (migration 0020): how the app came to be (NULL: by its developer, through
    # /v1/apps, the console or the CLI; see core.registration), RFC 7591's application_type, the
    # keyed hash of its RFC 7592 registration access token, and until when the fetched client ID
    # metadata document of an app whose id is its URL is fresh.
    Column("registration", String(32)),
    Column("application_type", String(8)),
    Column("registration_access_token_hash", String(64)),
    Column("metadata_document_expires_at", BigInteger),
    # Migration 0026: every access token of the app issued at or before this instant (its iat <=
    # it, whole seconds: one issued in the same second is void too, failing closed) is inactive.
    # Set when a disabled app is enabled again, so that none of its old tokens comes back.
    Column("tokens_revoked_at", BigInteger),
)

# DPoP proofs accepted (RFC 9449 §11.1), by a keyed hash of their key and jti, until their iat
# could no longer pass: a replay is refused by every process (when no Redis is configured).
dpop_proof_jtis = Table(
    "dpop_proof_jtis",
    metadata,
    Column("proof_hash", String(64), primary_key=True),
    Column("expires_at", BigInteger, nullable=False),
)

# The jti of each client assertion accepted (RFC 7523 §3): a replay is refused until its exp.
client_assertion_jtis = Table(
    "client_assertion_jtis",
    metadata,
    Column("app_id", APP_ID, ForeignKey("apps.id", ondelete="CASCADE"), primary_key=True),
    Column("jti", String(255), primary_key=True),
    Column("expires_at", BigInteger, nullable=False),
)

app_keys = Table(
    "app_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("app_id", APP_ID, ForeignKey("apps.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("secret_hash", String(64), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("revoked_at", BigInteger),
    # When it last obtained an access token: each process keeps it in memory and flushes it now
    # and then (core.key_use), so it is at most one flush interval behind.
    Column("last_used_at", BigInteger),
)

# A user's consent to an app: the permissions granted so far.
grants = Table(
    "grants",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("user_id", String(36), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("app_id", APP_ID, ForeignKey("apps.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("permissions", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("last_used_at", BigInteger),  # as app_keys.last_used_at, for the user's tokens of the app
    UniqueConstraint("user_id", "app_id", name="uq_grants_user_app"),
)

authorization_codes = Table(
    "authorization_codes",
    metadata,
    Column("code_hash", String(64), primary_key=True),
    Column("app_id", APP_ID, ForeignKey("apps.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("user_id", String(36), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("redirect_uri", Text, nullable=False),
    Column("permissions", Text, nullable=False),
    Column("state", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("redeemed_at", BigInteger),
    Column("code_challenge", String(128)),  # PKCE (RFC 7636), S256 only
    # OpenID Connect (migration 0012): the request's nonce, when the approving session signed in,
    # and that session when the grant ends with it (an OpenID request without offline_access).
    Column("nonce", Text),
    Column("auth_time", BigInteger),
    Column("amr", String(64)),  # how the person signed in (RFC 8176, space-separated); NULL: a password
    Column("session_jti", String(36)),
    Column("dpop_jkt", String(43)),  # RFC 9449 §10 (migration 0015): the key the code is bound to
    # RFC 8707 (migration 0019): the resources the request named, space-separated; NULL: none.
    Column("resources", Text),
    # Whether the authorization request named redirect_uri (migration 0017): the token request of
    # /oauth2/token must then send it (RFC 6749 §4.1.3). NULL: a code from before, not required.
    Column("redirect_uri_included", Boolean),
    # Migration 0026: what the redemption issued, written by the spend itself, so that a retry of
    # it (core.grants.authorization_code) re-signs the same access token: its jti, and the key
    # that redeemed the code (NULL: a client without keys).
    Column("access_jti", String(36)),
    Column("key_id", String(32)),
)
# A withdrawn consent, a locked or a deleted account finds the families to deny through the codes
# of the user (and app): without it, each is a scan of every code kept (migration 0026).
Index("ix_authorization_codes_user_app", authorization_codes.c.user_id, authorization_codes.c.app_id)

# Access tokens are self-contained JWTs (core.access_token) and have no row. What can end one
# before its exp is kept where it is decided and read by introspection in one SELECT
# (store.tokens.access_token_state): its app (``apps.disabled_at``, ``apps.tokens_revoked_at``),
# the key named by its ``key_id`` claim (``app_keys.revoked_at``), and the two deny-lists below.
#
# The families revoked (a replayed code or refresh token, a log-out, a consent withdrawn, a user
# locked or deleted), by the hash of the code they descend from (an access token's ``family``
# claim), until the last access token the family could have issued has expired: revocation time
# + access_token_ttl. The hash names no user.
revoked_families = Table(
    "revoked_families",
    metadata,
    Column("code_hash", String(64), primary_key=True),
    Column("expires_at", BigInteger, nullable=False),
)

# Access tokens revoked one by one (RFC 7009) by the app they were issued to: their jti, until
# their exp.
revoked_access_tokens = Table(
    "revoked_access_tokens",
    metadata,
    Column("jti", String(36), primary_key=True),
    Column("expires_at", BigInteger, nullable=False),
)

# Refresh tokens rotate on every use: a used one records when (rotated_at) and is never honoured
# again, except within the grace window, where the same successor is handed out once more.
refresh_tokens = Table(
    "refresh_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("code_hash", String(64), nullable=False, index=True),
    Column("app_id", APP_ID, ForeignKey("apps.id", ondelete="CASCADE"), nullable=False),
    Column("user_id", String(36), ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("scope", Text, nullable=False),
    Column("access_jti", String(36), nullable=False),  # the access token issued beside it
    Column("issued_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("rotated_at", BigInteger),
    Column("revoked_at", BigInteger),
    # OpenID Connect (migration 0012), carried from the code: the original sign-in's time, and the
    # browser session whose end ends the family (NULL: it outlives it, offline_access).
    Column("auth_time", BigInteger),
    Column("amr", String(64)),  # how the person signed in (RFC 8176, space-separated); NULL: a password
    Column("session_jti", String(36)),
    Column("dpop_jkt", String(43)),  # RFC 9449 §5 (migration 0015): the key it is bound to, if any
    # RFC 8707 (migration 0019): the grant's resources, from the code; NULL: not bound to any.
    Column("resources", Text),
    # The app key that authenticated its issue (migration 0017; NULL without one): revoking the key
    # ends it, as it ends the access tokens the key issued.
    Column("key_id", String(32)),
)
# Partial, on both databases: only the refresh tokens bound to a browser session have a
# session_jti, and the session's end finds them by it (store.tokens). Its WHERE: ddl_metadata().
_session_jti_index = Index("ix_refresh_tokens_session_jti", refresh_tokens.c.session_jti)
Index("ix_refresh_tokens_user_app", refresh_tokens.c.user_id, refresh_tokens.c.app_id)

signing_keys = Table(
    "signing_keys",
    metadata,
    Column("kid", String(64), primary_key=True),
    Column("algorithm", String(16), nullable=False),
    Column("public_jwk", Text, nullable=False),
    Column("private_key", LargeBinary, nullable=False),  # AES-GCM sealed PKCS#8
    Column("created_at", BigInteger, nullable=False),
    Column("activates_at", BigInteger, nullable=False),
    Column("retired_at", BigInteger),
)

# The rate limiter's counters (grantd.core.ratelimit): one row per bucket, holding the current
# window's start, the attempts counted in it and those of the window before. ``key`` is a keyed hash
# of the bucket name, so no email address or client address is stored in clear.
rate_limits = Table(
    "rate_limits",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("window_start", BigInteger, nullable=False, index=True),
    Column("count", Integer, nullable=False),
    # The attempts of the window before ``window_start``'s (0 when that window saw none).
    Column("previous_count", Integer, nullable=False, server_default="0"),
)

# When each periodic task of the servers is next due (one row per task, made by its first run): the
# process whose upsert moves it forward runs the task (store.retention.claim).
maintenance = Table(
    "maintenance",
    metadata,
    Column("task", String(40), primary_key=True),
    Column("due_at", BigInteger, nullable=False),
)

# The audit log (grantd.core.audit): who did what, when, from which address. Append-only (pruning
# deletes old events only where the operator sets a retention, core.retention); never a
# secret, token, code, password or hash. No foreign keys, so that the record outlives what it describes.
# ``actor`` is a user id, an app id, "operator" (the CLI) or "anonymous" (a failed log-in).
audit_events = Table(
    "audit_events",
    metadata,
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
    Column("occurred_at", BigInteger, nullable=False),
    Column("event", String(40), nullable=False),
    Column("user_id", String(36)),
    Column("app_id", APP_ID),
    Column("actor", String(64).with_variant(String(255), "postgresql"), nullable=False),
    Column("address", String(64)),
    Column("detail", Text, nullable=False),  # a short JSON object of ids and permissions
)
Index("ix_audit_events_user_id_occurred_at", audit_events.c.user_id, audit_events.c.occurred_at)
Index("ix_audit_events_app_id_occurred_at", audit_events.c.app_id, audit_events.c.occurred_at)
Index("ix_audit_events_occurred_at", audit_events.c.occurred_at)


# The mail outbox (grantd.core.mail): a message is queued in the transaction that makes it (so it
# is sent if and only if that commits) and delivered by a background task of the servers.
# ``next_attempt_at``: when it is due (NULL once sent or given up); ``claimed_until``: a sender
# holds it until then (so two processes never send one message at once).
mail_outbox = Table(
    "mail_outbox",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("recipient", String(320), nullable=False),
    Column("subject", String(200), nullable=False),
    Column("text_body", Text, nullable=False),
    Column("html_body", Text),
    Column("created_at", BigInteger, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", BigInteger),
    Column("claimed_until", BigInteger),
    Column("sent_at", BigInteger),
    Column("last_error", String(200)),
)
Index("ix_mail_outbox_next_attempt_at", mail_outbox.c.next_attempt_at)

# Single-use links sent by email (a password reset, an address's verification, an email change):
# only the token's keyed hash is stored.
email_tokens = Table(
    "email_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("user_id", String(36), ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("purpose", String(20), nullable=False),  # "password_reset", "verify_email", "change_email"
    Column("email", String(320)),  # the address the link proves (verify_email, change_email)
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("used_at", BigInteger),
)


# Pushed authorization requests (RFC 9126): only the request_uri's random part's keyed hash is
# stored; the request's parameters as a JSON object. Single-use: spent_at once answered.
pushed_authorization_requests = Table(
    "pushed_authorization_requests",
    metadata,
    Column("request_hash", String(64), primary_key=True),
    Column("app_id", APP_ID, ForeignKey("apps.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("parameters", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False, index=True),
    Column("opened_at", BigInteger),  # first brought to /oauth2/authorize: the browser's time starts
    Column("spent_at", BigInteger),
)


# The device authorization grant (RFC 8628): a device's request, from ``POST
# /oauth2/device_authorization`` until its device code is redeemed (``redeemed_at``) or expires.
# The device code and the user code are stored only as keyed hashes (the user code's is unique, so
# that a code a person types names one request). ``status``: pending, approved or denied, by
# ``user_id`` at ``decided_at``; ``interval`` the polling interval the device must keep (raised by
# slow_down), ``last_polled_at`` its last poll.
device_codes = Table(
    "device_codes",
    metadata,
    Column("device_code_hash", String(64), primary_key=True),
    Column("user_code_hash", String(64), nullable=False, unique=True),
    Column("app_id", APP_ID, ForeignKey("apps.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("scope", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False, index=True),
    Column("interval", Integer, nullable=False),
    Column("last_polled_at", BigInteger),
    Column("status", String(16), nullable=False),
    Column("user_id", String(36), ForeignKey("users.id", ondelete="CASCADE")),
    Column("auth_time", BigInteger),
    Column("amr", String(64)),  # how the person signed in (RFC 8176, space-separated); NULL: a password
    Column("decided_at", BigInteger),
    Column("redeemed_at", BigInteger),
)

# Registered resources (RFC 8707, migration 0019): under GRANTD_RESOURCE_POLICY=registered, the
# only URIs a token may be requested for, each with the permissions (comma-separated) it accepts.
resources = Table(
    "resources",
    metadata,
    Column("uri", String(2048), primary_key=True),
    Column("permissions", Text, nullable=False),
    Column("description", Text, nullable=False, server_default=""),
    Column("created_at", BigInteger, nullable=False),
)

# RFC 7591 §3 initial access tokens: what lets a client register itself when
# GRANTD_DYNAMIC_REGISTRATION is "token". Only the keyed hash is stored. A developer's (owner_id)
# registers apps that developer owns; an operator's (owner_id NULL), apps no developer owns.
initial_access_tokens = Table(
    "initial_access_tokens",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("owner_id", String(36), ForeignKey("users.id", ondelete="CASCADE"), index=True),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger),  # NULL: until revoked
    Column("revoked_at", BigInteger),
)

# The browsers a person signed in from (migration 0025): the keyed hash of each one's long-lived
# device cookie. A sign-in from a browser without a known one sends a notice (grantd.core.notices).
known_devices = Table(
    "known_devices",
    metadata,
    Column("user_id", String(36), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("device_hash", String(64), primary_key=True),
    Column("first_seen_at", BigInteger, nullable=False),
    Column("last_seen_at", BigInteger, nullable=False),
)

# Passkeys (WebAuthn, migration 0023): a user's credentials (id and COSE public key base64url),
# and the single-use challenges of ceremonies under way, as keyed hashes (core/passkeys.py).
passkeys = Table(
    "passkeys",
    metadata,
    Column("credential_id", String(1400), primary_key=True),
    Column("user_id", String(36), ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("public_key", Text, nullable=False),
    Column("sign_count", BigInteger, nullable=False),
    Column("transports", String(200), nullable=False, server_default=""),
    Column("name", String(64), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("last_used_at", BigInteger),
)

passkey_challenges = Table(
    "passkey_challenges",
    metadata,
    Column("challenge_hash", String(64), primary_key=True),
    Column("purpose", String(16), nullable=False),
    Column("binding", String(64), nullable=False),
    Column("expires_at", BigInteger, nullable=False, index=True),
)


def ddl_metadata() -> MetaData:
    """``metadata`` with the options of its indexes that only a database's DDL reads: the schema
    the migrations build, as Alembic compares it (``migrations/env.py``, tests/test_migrations.py).

    SQLAlchemy checks an option named for a dialect (``postgresql_where``) by importing that
    dialect, and importing SQLAlchemy's PostgreSQL dialect imports each of its driver modules too
    (~2 MB resident). Declared on the tables, these options would put it in every server process,
    on SQLite too, though no server emits DDL; declared here, it is imported only by what compiles
    the schema: Alembic, whose migrations name the same options. (A server on PostgreSQL imports
    the dialect for its own statements, store.prepared.) Calling it again changes nothing."""
    has_session = refresh_tokens.c.session_jti.isnot(None)
    for dialect in ("sqlite", "postgresql"):
        _session_jti_index.dialect_kwargs[f"{dialect}_where"] = has_session
    return metadata
