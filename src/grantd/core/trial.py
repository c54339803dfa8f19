"""The console's "try it": an authorization request for a developer to try their own app with.

It passes the checks of an authorization request from a client (``core.authorization``), so a URL
is only handed out when it will reach the consent page.
"""

from __future__ import annotations

from dataclasses import dataclass

from grantd.core import apps, authorization
from grantd.core.context import Context
from grantd.core.errors import GrantdError, InvalidRequest
from grantd.crypto.secrets import new_secret, s256


@dataclass(frozen=True, slots=True)
class TrialRequest:
    """An authorization request for the owner to try their app with, and the verifier that redeems its code."""

    client_id: str
    redirect_uri: str
    scope: str  # space-separated, as in OAuth 2.0
    state: str
    code_challenge: str
    code_verifier: str  # PKCE (RFC 7636): sent to the token endpoint with the code, never in the URL

    def query(self) -> dict[str, str]:
        """The parameters of the authorization request (RFC 6749 §4.1.1, RFC 7636 §4.3)."""
        return {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "scope": self.scope,
            "state": self.state,
            "code_challenge": self.code_challenge,
            "code_challenge_method": "S256",
        }



async def _trial_target(
    ctx: Context, fields: apps.Fields, app_id: str, redirect_uri: str | None
) -> authorization.Target | None:
    try:
        return await authorization.resolve_target(ctx, app_id, redirect_uri)
    except GrantdError as exc:
        fields.errors.setdefault("redirect_uri", exc)
        return None


async def trial_request(ctx: Context, owner_id: str, app_id: str, redirect_uri: str | None, scope: str | None) -> TrialRequest:
    """An authorization code request for the owner's own app, with a fresh state and PKCE S256 pair.

    It passes the same checks as an authorization request from a client (a live app, a registered
    redirect_uri, a scope within the app's permissions), so a URL is only handed out when
    it will reach the consent page. The scope defaults to every permission of the app.
    """
    if (await apps.get_owned(ctx, owner_id, app_id)).disabled_at is not None:
        raise InvalidRequest("The app is disabled; it cannot be authorized.")
    fields = apps.Fields()
    target = await _trial_target(ctx, fields, app_id, redirect_uri)
    code_verifier = new_secret()  # 43 characters of base64url: 256 bits, within RFC 7636's 43..128
    code_challenge, state = s256(code_verifier), new_secret()
    request = None
    if target is not None:
        request = fields.check(
            "scope",
            lambda: authorization.validate_request(
                ctx,
                target,
                response_type="code",
                scope=scope,
                state=state,
                code_challenge=code_challenge,
                code_challenge_method="S256",
            ),
        )
    fields.done()
    assert target is not None and request is not None  # else done() raised
    return TrialRequest(app_id, target.redirect_uri, " ".join(request.permissions), state, code_challenge, code_verifier)
