"""Where grantd's OAuth 2.0 endpoints are: their URLs under the issuer, as the metadata document
(RFC 8414 §2, OpenID Connect Discovery 1.0 §3) publishes them and as a client assertion may name
them in its ``aud`` (RFC 7523 §3, RFC 9126 §2)."""

from __future__ import annotations

# Each metadata field naming an endpoint, and the endpoint's path under the issuer.
PATHS = {
    "authorization_endpoint": "/oauth2/authorize",
    "token_endpoint": "/oauth2/token",
    "userinfo_endpoint": "/oauth2/userinfo",
    "end_session_endpoint": "/oauth2/logout",
    "revocation_endpoint": "/oauth2/revoke",
    "introspection_endpoint": "/oauth2/introspect",
    "pushed_authorization_request_endpoint": "/oauth2/par",
    "device_authorization_endpoint": "/oauth2/device_authorization",
}

# The endpoints where a client authenticates (RFC 6749 §2.3): a private_key_jwt assertion sent to
# any of them may name any of them as its audience, or the issuer.
CLIENT_AUTHENTICATED = (
    "token_endpoint", "revocation_endpoint", "introspection_endpoint",
    "pushed_authorization_request_endpoint", "device_authorization_endpoint",
)


def urls(issuer: str) -> dict[str, str]:
    """Every endpoint's URL, by its metadata field."""
    return {name: issuer + path for name, path in PATHS.items()}


def assertion_audiences(issuer: str) -> list[str]:
    """What a client assertion's ``aud`` may be (RFC 7523 §3 item 3): the issuer, or the URL of an
    endpoint where the client authenticates: RFC 9126 §2 names the pushed authorization request
    endpoint's too."""
    return [issuer, *(issuer + PATHS[name] for name in CLIENT_AUTHENTICATED)]
