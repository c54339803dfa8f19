"""One exception per error code. Each dialect renders them in its own shape.

``status_code`` is the HTTP status of the Neucron dialect (the spec's error table);
another dialect maps the ``error`` code to its own statuses.
"""

from __future__ import annotations


class GrantdError(Exception):
    error: str = "server_error"
    status_code: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(GrantdError):
    """``field``: the input the error concerns, when it is one (``email``, ``password``), so that a
    page can show the message next to it; the wire shapes do not carry it."""

    error, status_code = "invalid_request", 400

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class PayloadTooLarge(InvalidRequest):
    status_code = 413


class InvalidScope(GrantdError):
    error, status_code = "invalid_scope", 400


class InvalidTarget(GrantdError):
    """RFC 8707 §2: the requested resource is invalid, unknown, malformed, or not one the grant
    may name."""

    error, status_code = "invalid_target", 400


class Forbidden(GrantdError):
    """Signed in, but not allowed to do this (the registered resources: the operator's)."""

    error, status_code = "forbidden", 403


class InvalidRedirectUri(GrantdError):
    error, status_code = "invalid_redirect_uri", 400


class InvalidClientMetadata(GrantdError):
    """RFC 7591 §3.2.2: a value of the client metadata is invalid or not supported."""

    error, status_code = "invalid_client_metadata", 400


class ConsentRequired(GrantdError):
    error, status_code = "consent_required", 400


class InvalidToken(GrantdError):
    error, status_code = "invalid_token", 401


class InsufficientUserAuthentication(GrantdError):
    """RFC 9470 §3: the token is valid, but its user signed in too long ago for what is asked;
    ``max_age``: how recent a sign-in would do, in seconds."""

    error, status_code = "insufficient_user_authentication", 401

    def __init__(self, message: str, *, max_age: int) -> None:
        super().__init__(message)
        self.max_age = max_age


class InvalidClient(GrantdError):
    error, status_code = "invalid_client", 401


class InvalidGrant(GrantdError):
    error, status_code = "invalid_grant", 401


class NotFound(GrantdError):
    error, status_code = "not_found", 404


class Conflict(GrantdError):
    error, status_code = "conflict", 409


class RateLimited(GrantdError):
    error, status_code = "rate_limited", 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TemporarilyUnavailable(GrantdError):
    """The server cannot serve the request now (its database does not answer): 503 with
    ``Retry-After`` in every dialect (RFC 6749 §4.1.2.1 names the code)."""

    error, status_code = "temporarily_unavailable", 503

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UnsupportedGrantType(GrantdError):
    error, status_code = "unsupported_grant_type", 400


class UnauthorizedClient(GrantdError):
    error, status_code = "unauthorized_client", 400


class UnsupportedResponseType(GrantdError):
    error, status_code = "unsupported_response_type", 400


class InsufficientScope(GrantdError):
    """RFC 6750 §3.1: the token is valid but was not granted what the resource needs."""

    error, status_code = "insufficient_scope", 403


# OpenID Connect Core 1.0 §3.1.2.6: an authorization request that needs the user, sent back to
# the client because it asked that no page be shown (``prompt=none``), or with what is not supported.
class LoginRequired(GrantdError):
    error, status_code = "login_required", 400


class InteractionRequired(GrantdError):
    error, status_code = "interaction_required", 400


class RequestNotSupported(GrantdError):
    error, status_code = "request_not_supported", 400


class RequestUriNotSupported(GrantdError):
    error, status_code = "request_uri_not_supported", 400


class InvalidRequestUri(GrantdError):
    """RFC 9101 §6.2 (as RFC 9126 §4 uses it): a request_uri that is unknown, expired, spent, or
    another client's. Shown on a page, never redirected."""

    error, status_code = "invalid_request_uri", 400


# RFC 8628 §3.5: the token endpoint's answers to a device polling for its authorization.
class AuthorizationPending(GrantdError):
    error, status_code = "authorization_pending", 400


class SlowDown(GrantdError):
    error, status_code = "slow_down", 400


class AccessDenied(GrantdError):
    error, status_code = "access_denied", 400


class ExpiredToken(GrantdError):
    error, status_code = "expired_token", 400
class InvalidDPoPProof(GrantdError):
    """RFC 9449 §5, §7.1: the request's DPoP proof is missing where it must be, or fails a check of §4.3."""

    error, status_code = "invalid_dpop_proof", 400


class UseDPoPNonce(GrantdError):
    """RFC 9449 §8, §9: the proof must carry the server's nonce, which the answer sends in ``DPoP-Nonce``."""

    error, status_code = "use_dpop_nonce", 400

    def __init__(self, message: str, *, nonce: str) -> None:
        super().__init__(message)
        self.dpop_nonce = nonce
