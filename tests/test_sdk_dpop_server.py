"""grantd.sdk and a real `grantd serve` agree on DPoP (RFC 9449): tokens the server binds to a
client's key (``cnf.jkt``) are what :class:`grantd.sdk.TokenVerifier` accepts with a fresh proof by
that key, and only then.

The server issues the tokens over HTTP (client_credentials with a proof, for each proof algorithm
the server announces; a user's code redeemed with a proof); the verifier reads the server's
discovery document and JWKS over HTTP, as a resource server does, and judges each token with proofs
built by the client side (tests/support/dpop.py) for a resource URL: ``verify_request`` and
``averify_request``, and a resource served by uvicorn behind ``RequirePermissionsMiddleware``. A bound
token is refused as a bearer token and with another key's proof; a bearer token from the same server
still verifies with ``verify``.

The SDK's own rules, with tokens minted by the test: tests/test_sdk_dpop.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from acting_user import new_app
from grantd.sdk import AccessToken, InvalidTokenError, RequirePermissionsMiddleware, TokenVerifier
from support.asgi import serve
from support.challenges import parse_challenges
from support.dpop import Holder, claims_of, code_for, redeem
from support.neucron import Flow
from support.servers import ServerProcess

# A resource server's URL, as its clients address it: what the proofs' htu name.
RESOURCE = "https://api.example.com/v1/things"


@pytest.fixture
async def verifier(interop_server: ServerProcess) -> AsyncIterator[TokenVerifier]:
    """A resource server's verifier for the real server's tokens (the default audience: the issuer)."""
    verifier = TokenVerifier(interop_server.base_url)
    yield verifier
    await verifier.aclose()


@pytest.fixture
async def app(interop_dev: Flow) -> Flow:
    return await new_app(interop_dev, client_type="confidential")


async def client_credentials(app: Flow, base: str, holder: Holder | None) -> dict[str, Any]:
    """The app's client_credentials token answer, with a proof by ``holder`` (None: without)."""
    headers = {"DPoP": holder.proof("POST", f"{base}/oauth2/token")} if holder else {}
    response = await app.client.post(
        "/oauth2/token", data={"grant_type": "client_credentials", "scope": "read_profile"},
        auth=(app.app_id, app.key_secret), headers=headers,
    )
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def refusal(call: Any) -> InvalidTokenError:
    with pytest.raises(InvalidTokenError) as refused:
        call()
    return refused.value


async def arefusal(call: Any) -> InvalidTokenError:
    with pytest.raises(InvalidTokenError) as refused:
        await call()
    return refused.value


@pytest.mark.parametrize("alg", ["ES256", "EdDSA", "RS256", "PS256"])
async def test_a_token_the_server_binds_is_verified_with_its_proof_and_only_so(
    app: Flow, interop_server: ServerProcess, verifier: TokenVerifier, alg: str
) -> None:
    holder = Holder(alg)
    answer = await client_credentials(app, interop_server.base_url, holder)
    token = answer["access_token"]
    assert answer["token_type"] == "DPoP" and claims_of(token)["cnf"] == {"jkt": holder.jkt}

    # A fresh proof for the resource request, by the key: accepted, sync and async.
    access = verifier.verify_request("GET", RESOURCE, f"DPoP {token}", holder.proof("GET", RESOURCE, token=token))
    assert access.jkt == holder.jkt and access.app_id == app.app_id and access.user_id is None
    assert access.has("read_profile")
    again = await verifier.averify_request("POST", RESOURCE, f"DPoP {token}", holder.proof("POST", RESOURCE, token=token))
    assert again.jti == access.jti and again.jkt == holder.jkt

    # As a bearer token: refused (RFC 9449 §7.2), by verify_request and by verify.
    as_bearer = refusal(lambda: verifier.verify_request("GET", RESOURCE, f"Bearer {token}"))
    assert (as_bearer.reason, as_bearer.error, as_bearer.scheme) == ("dpop_bound", "invalid_token", "Bearer")
    assert refusal(lambda: verifier.verify(token)).reason == "dpop_bound"
    assert (await arefusal(lambda: verifier.averify(token))).reason == "dpop_bound"

    # A proof by another key (a thief's), however well made: refused.
    thief = Holder(alg)
    stolen = refusal(lambda: verifier.verify_request("GET", RESOURCE, f"DPoP {token}", thief.proof("GET", RESOURCE, token=token)))
    assert (stolen.reason, stolen.error, stolen.scheme) == ("dpop_key_mismatch", "invalid_token", "DPoP")
    stolen = await arefusal(
        lambda: verifier.averify_request("GET", RESOURCE, f"DPoP {token}", thief.proof("GET", RESOURCE, token=token))
    )
    assert stolen.reason == "dpop_key_mismatch"

    # The proof the client sent the token endpoint is for that request, not the resource's.
    at_token_endpoint = holder.proof("POST", f"{interop_server.base_url}/oauth2/token", token=token)
    wrong = refusal(lambda: verifier.verify_request("POST", RESOURCE, f"DPoP {token}", at_token_endpoint))
    assert (wrong.reason, wrong.error) == ("invalid_dpop_proof", "invalid_dpop_proof")
    # A proof accepted once is not accepted again.
    proof = holder.proof("GET", RESOURCE, token=token)
    verifier.verify_request("GET", RESOURCE, f"DPoP {token}", proof)
    assert refusal(lambda: verifier.verify_request("GET", RESOURCE, f"DPoP {token}", proof)).reason == "dpop_replayed"


async def test_a_bearer_token_from_the_same_server_still_verifies(
    app: Flow, interop_server: ServerProcess, verifier: TokenVerifier
) -> None:
    answer = await client_credentials(app, interop_server.base_url, None)
    token = answer["access_token"]
    assert answer["token_type"] == "Bearer" and "cnf" not in claims_of(token)
    access = verifier.verify(token)
    assert access.jkt is None and access.app_id == app.app_id
    assert (await verifier.averify(token)).jti == access.jti
    assert verifier.verify_request("GET", RESOURCE, f"Bearer {token}").jti == access.jti
    # Not bound, so not a DPoP token, whatever proof comes with it.
    holder = Holder()
    unbound = refusal(lambda: verifier.verify_request("GET", RESOURCE, f"DPoP {token}", holder.proof("GET", RESOURCE, token=token)))
    assert (unbound.reason, unbound.scheme) == ("not_dpop_bound", "DPoP")


async def whoami(request: Request) -> JSONResponse:
    token: AccessToken = request.state.access_token
    return JSONResponse({"user_id": token.user_id, "app_id": token.app_id, "jkt": token.jkt})


async def test_a_users_bound_token_at_a_resource_over_http(app: Flow, interop_server: ServerProcess, verifier: TokenVerifier) -> None:
    """The code flow: the user signs in and consents on the real pages; the code is bound by dpop_jkt
    and redeemed with the key's proof; a resource behind RequirePermissionsMiddleware answers the
    token with a proof for its own URL, and refuses it as a bearer token or with another key's proof."""
    holder, base = Holder(), interop_server.base_url
    code, code_verifier = await code_for(app, base, dpop_jkt=holder.jkt)
    response = await redeem(app, base, code, code_verifier, holder.proof("POST", f"{base}/oauth2/token"))
    assert response.status_code == 200, response.text
    assert response.json()["token_type"] == "DPoP"
    token = response.json()["access_token"]

    resource = Starlette(routes=[Route("/whoami", whoami)])
    resource.add_middleware(RequirePermissionsMiddleware, verifier=verifier, permissions=["read_profile"])
    with serve(resource) as api:
        url = f"{api}/whoami"
        async with httpx.AsyncClient(timeout=30) as http:
            ok = await http.get(url, headers={"Authorization": f"DPoP {token}", "DPoP": holder.proof("GET", url, token=token)})
            assert ok.status_code == 200, ok.text
            assert ok.json() == {"user_id": app.user_id, "app_id": app.app_id, "jkt": holder.jkt}
            as_bearer = await http.get(url, headers={"Authorization": f"Bearer {token}"})
            assert as_bearer.status_code == 401, as_bearer.text
            assert parse_challenges(as_bearer.headers["www-authenticate"])["Bearer"]["error"] == "invalid_token"
            thief = await http.get(url, headers={"Authorization": f"DPoP {token}", "DPoP": Holder().proof("GET", url, token=token)})
            assert thief.status_code == 401, thief.text
            assert parse_challenges(thief.headers["www-authenticate"])["DPoP"]["error"] == "invalid_token"


async def test_online_mode_asks_the_server_about_a_bound_token(app: Flow, interop_server: ServerProcess) -> None:
    """With introspection (RFC 7662) on, the verifier asks the server whether the bound token is still
    active: it is, until the app revokes it (RFC 7009); then the verifier refuses it, proof or not."""
    holder, base = Holder(), interop_server.base_url
    token = (await client_credentials(app, base, holder))["access_token"]
    online = TokenVerifier(base, introspection=(app.app_id, app.key_secret), introspection_cache_ttl=0)
    try:
        access = await online.averify_request("GET", RESOURCE, f"DPoP {token}", holder.proof("GET", RESOURCE, token=token))
        assert access.jkt == holder.jkt
        revoked = await app.client.post("/oauth2/revoke", data={"token": token}, auth=(app.app_id, app.key_secret))
        assert revoked.status_code == 200, revoked.text
        gone = await arefusal(lambda: online.averify_request("GET", RESOURCE, f"DPoP {token}", holder.proof("GET", RESOURCE, token=token)))
        assert (gone.reason, gone.error) == ("inactive", "invalid_token")
    finally:
        await online.aclose()
