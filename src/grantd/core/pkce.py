"""Proof Key for Code Exchange (RFC 7636), S256 only."""

from __future__ import annotations

from grantd.core.clients import Client
from grantd.core.errors import InvalidGrant, InvalidRequest
from grantd.crypto.secrets import s256

METHODS = ("S256",)  # ``plain`` is refused: it protects nothing a code interceptor cannot read


def valid_value(value: str) -> bool:
    """43 to 128 characters of [A-Z a-z 0-9 - . _ ~] (RFC 7636 §4.1 and §4.2): a verifier or a challenge."""
    return 43 <= len(value) <= 128 and all(c.isascii() and (c.isalnum() or c in "-._~") for c in value)


def check_challenge(
    code_challenge: str | None, code_challenge_method: str | None, *, public: bool, fapi2: bool = False
) -> None:
    """RFC 7636 §4.3 at the authorization endpoint: S256 only, and required of a public client
    (RFC 9700 §2.1.1) and of an app under the FAPI 2.0 profile (its Security Profile §5.3.2.1).
    Raises InvalidRequest, which the endpoint redirects back with ``state``."""
    if code_challenge is not None:
        if code_challenge_method not in METHODS:
            raise InvalidRequest("code_challenge_method must be S256; plain is not accepted.")
        if not valid_value(code_challenge):
            raise InvalidRequest("code_challenge must be 43 to 128 characters of base64url.")
    elif code_challenge_method is not None:
        raise InvalidRequest("code_challenge_method was sent without a code_challenge.")
    elif public or fapi2:
        raise InvalidRequest("PKCE is required for this client: send code_challenge with code_challenge_method=S256.")


def check(code_challenge: str | None, code_verifier: str | None, client: Client) -> None:
    """RFC 7636 §4.6 at the token endpoint. A verifier for a code issued without a challenge is a
    downgrade and refused (RFC 9700 §2.1.1); a public client's code must carry a challenge."""
    if code_challenge is None:
        if code_verifier is not None:
            raise InvalidGrant("code_verifier was sent for a code issued without a code_challenge.")
        if client.is_public:
            raise InvalidGrant("A public client's code must be bound to a PKCE code_challenge.")
        return
    if code_verifier is None:
        raise InvalidGrant("code_verifier is required: the code was issued with a code_challenge.")
    if not valid_value(code_verifier) or s256(code_verifier) != code_challenge:
        raise InvalidGrant("code_verifier does not match the code_challenge.")
