"""InvalidTokenError, the one exception of grantd.sdk, and every reason it can carry."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

#: Every ``InvalidTokenError.reason``, with what it means.
REASONS: Mapping[str, str] = MappingProxyType(
    {
        "missing": "No access token was sent.",
        "malformed": "The value is not a compact JWS with a JSON header and claims.",
        "unsupported_algorithm": "The header's alg is not ES256 (alg none and HMAC are always refused).",
        "wrong_type": "The header's typ is not at+jwt: this is not an access token.",
        "unknown_key": "The header's kid is not in the issuer's JWKS.",
        "bad_signature": "The signature does not verify with the issuer's key.",
        "wrong_issuer": "iss is not the expected issuer.",
        "wrong_audience": "aud is not (or does not contain) the expected audience (the resource, when one is set).",
        "missing_claim": "A required claim (iss, aud, exp, sub, client_id, jti) is missing or of the wrong type.",
        "expired": "exp is past (beyond the leeway).",
        "not_yet_valid": "nbf or iat is in the future (beyond the leeway).",
        "inactive": "Introspection says the token is no longer active: revoked, or its app disabled.",
        "unavailable": "The issuer's keys or introspection endpoint could not be reached; the token was not judged.",
        "dpop_bound": "The token is bound to a DPoP key (cnf.jkt, RFC 9449 §6.1) but was presented as a bearer token.",
        "not_dpop_bound": "The token was presented with the DPoP scheme but is not bound to a key.",
        "bearer_refused": "The resource requires DPoP-bound tokens (dpop_required) and a bearer token was sent.",
        "dpop_key_mismatch": "The DPoP proof's key is not the key the token is bound to (its cnf.jkt).",
        "invalid_dpop_proof": "The DPoP proof is missing, repeated or fails a check of RFC 9449 §4.3 (the description says which).",
        "dpop_replayed": "The DPoP proof's jti was seen before within the proof window: a replayed proof.",
        "use_dpop_nonce": "The resource requires a DPoP nonce and the proof carries none, or a stale one.",
    }
)

_DESCRIPTIONS = {
    "missing": "A bearer token is required.",
    "malformed": "The access token is malformed.",
    "unsupported_algorithm": "The access token is not signed with ES256.",
    "wrong_type": "The token is not an access token (typ at+jwt).",
    "unknown_key": "The access token is signed with an unknown key.",
    "bad_signature": "The access token's signature is invalid.",
    "wrong_issuer": "The access token was issued by another issuer.",
    "wrong_audience": "The access token is meant for another audience.",
    "missing_claim": "The access token lacks a required claim.",
    "expired": "The access token expired.",
    "not_yet_valid": "The access token is not valid yet.",
    "inactive": "The access token was revoked.",
    "unavailable": "The token could not be checked right now; try again.",
    "dpop_bound": "The access token is DPoP-bound: send it as Authorization: DPoP with a DPoP proof.",
    "not_dpop_bound": "The access token is not DPoP-bound: send it as Authorization: Bearer.",
    "bearer_refused": "This resource accepts only DPoP-bound access tokens.",
    "dpop_key_mismatch": "Invalid DPoP key binding.",
    "invalid_dpop_proof": "The DPoP proof is invalid.",
    "dpop_replayed": "The DPoP proof was used before.",
    "use_dpop_nonce": "Resource server requires nonce in DPoP proof.",
}

# The OAuth error code (RFC 6750 §3.1, RFC 9449 §7.1 and §9) a reason is answered with.
_ERRORS = {
    "invalid_dpop_proof": "invalid_dpop_proof",
    "dpop_replayed": "invalid_dpop_proof",
    "use_dpop_nonce": "use_dpop_nonce",
    "unavailable": "temporarily_unavailable",
}


class InvalidTokenError(Exception):
    """The one exception the verifier raises: the token may not be trusted.

    ``reason`` is one of :data:`REASONS` (a short machine-readable code) and ``description``
    a sentence safe to return to the caller. ``reason == "unavailable"`` means the token was
    not judged at all (the issuer could not be reached): answer 503, not 401.

    ``error`` is the OAuth error code to answer with: ``invalid_token``, ``invalid_dpop_proof``
    or ``use_dpop_nonce`` (``temporarily_unavailable`` for ``unavailable``). ``scheme`` is the
    authorization scheme the request used (``"Bearer"`` or ``"DPoP"``; None when it sent no token),
    the challenge that carries the error. ``dpop_nonce`` is the nonce to send back in a
    ``DPoP-Nonce`` header, when the verifier requires nonces.
    """

    def __init__(
        self, reason: str, description: str | None = None, *, scheme: str | None = None, dpop_nonce: str | None = None
    ) -> None:
        self.reason = reason
        self.description = description or _DESCRIPTIONS.get(reason, "The access token is invalid.")
        self.error = _ERRORS.get(reason, "invalid_token")
        self.scheme = scheme
        self.dpop_nonce = dpop_nonce
        super().__init__(f"{reason}: {self.description}")
