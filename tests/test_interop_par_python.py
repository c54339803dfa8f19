"""Interop: pushed authorization requests (RFC 9126) by requests-oauth2client, a Python client no one
here wrote, against a real `grantd serve`, the user signing in and consenting on the hosted pages
over HTTP (ActingUser).

The library pushes its whole authorization request (state, nonce, PKCE S256) to the
``pushed_authorization_request_endpoint`` it discovered, sends the user to the authorization
endpoint with nothing but ``client_id`` and the ``request_uri`` grantd answered, checks the answer
and redeems the code:

- as a bearer client: the ID token validated by the library, the ``request_uri`` good once;
- with DPoP (RFC 9449 §10.1): the library proves its key at the push (a ``DPoP`` header and the
  key's ``dpop_jkt``); the code redeems only with a proof of that key, into a DPoP-bound access
  token that UserInfo accepts with a proof; a push whose ``dpop_jkt`` names another key than its
  proof's is refused;
- with ``resource`` (RFC 8707) in the push: the access token's ``aud``;
- authenticated by the library's ``PrivateKeyJwt`` (RFC 7523), whose assertions name as their
  ``aud`` the URL of the endpoint they are sent to: the PAR endpoint's at the push (RFC 9126 §2),
  the token endpoint's at the redemption.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import jwt
import pytest
import requests
from jwskate import Jwk
from requests_oauth2client import (
    AuthorizationRequest,
    DPoPKey,
    DPoPToken,
    OAuth2Client,
    PrivateKeyJwt,
    RequestUriParameterAuthorizationRequest,
)
from requests_oauth2client import InvalidGrant, OAuth2Error

from acting_user import ActingUser, PageError, new_app
from support.neucron import PASSWORD, Flow
from support.servers import ServerProcess
from test_interop_openid_python import SCOPE, discovered


@pytest.fixture
async def rp(interop_server: ServerProcess, interop_dev: Flow) -> tuple[OAuth2Client, Flow]:
    flow = await new_app(interop_dev)
    return discovered(interop_server.base_url, flow), flow


@pytest.fixture
async def user(interop_dev: Flow) -> Any:
    async with httpx.AsyncClient(timeout=10) as browser:
        yield ActingUser(browser, interop_dev.extra["email"], PASSWORD)


def pushed(client: OAuth2Client, **params: Any) -> tuple[AuthorizationRequest, RequestUriParameterAuthorizationRequest]:
    """The library's authorization request, and what it pushed it into."""
    request = client.authorization_request(
        scope=SCOPE,
        authorization_response_iss_parameter_supported=client.authorization_response_iss_parameter_supported,
        **params,
    )
    return request, client.pushed_authorization_request(request)


def only_a_reference(par: RequestUriParameterAuthorizationRequest, client: OAuth2Client) -> None:
    """What the user's browser carries: the client's id and the request_uri, nothing of the request."""
    assert par.request_uri.startswith("urn:ietf:params:oauth:request_uri:")
    assert par.expires_at is not None
    assert par.uri.startswith(client.authorization_endpoint + "?")
    assert dict(parse_qsl(urlsplit(par.uri).query)) == {"client_id": client.client_id, "request_uri": par.request_uri}


async def test_a_pushed_request_completes_the_code_flow(
    rp: tuple[OAuth2Client, Flow], user: ActingUser, interop_server: ServerProcess
) -> None:
    client, flow = rp
    document = requests.get(f"{interop_server.base_url}/.well-known/openid-configuration", timeout=10).json()
    assert client.pushed_authorization_request_endpoint == document["pushed_authorization_request_endpoint"]

    request, par = pushed(client)
    only_a_reference(par, client)
    location = await user.authorize(par.uri, flow.redirect_uri)
    response = request.validate_callback(location)  # state and iss, against the pushed request's
    token = client.authorization_code(response)  # PKCE verifier; the ID token validated (nonce, at_hash)
    assert token.token_type.lower() == "bearer"
    assert token.id_token.nonce == request.nonce and token.id_token.subject == flow.user_id
    assert client.userinfo(token)["sub"] == flow.user_id

    # The request_uri was used: the same link answers with an error, no code.
    with pytest.raises(PageError) as used:
        await user.authorize(par.uri, flow.redirect_uri)
    assert used.value.response.status_code == 400 and "This request cannot be used" in used.value.response.text


async def test_a_pushed_request_with_dpop_binds_the_code_to_the_key(
    rp: tuple[OAuth2Client, Flow], user: ActingUser
) -> None:
    client, flow = rp
    request, par = pushed(client, dpop=True)
    assert request.dpop_key is not None and request.args["dpop_jkt"] == request.dpop_key.dpop_jkt
    only_a_reference(par, client)
    response = request.validate_callback(await user.authorize(par.uri, flow.redirect_uri))
    # Proved with the request's key. validate=False: the library's ID token validation rebuilds the
    # token without its DPoP key (a TypeError of its own); the test above has the library validate one.
    token = client.authorization_code(response, validate=False)
    assert isinstance(token, DPoPToken) and token.token_type == "DPoP"
    claims = client.introspect_token(token.access_token)
    assert claims["active"] is True and claims["cnf"] == {"jkt": request.dpop_key.dpop_jkt}
    assert client.userinfo(token)["sub"] == flow.user_id  # the library's proof with the bound token

    # A code pushed for one key redeems with no other key, nor without a proof.
    for other in (DPoPKey.generate("ES256"), None):
        request, par = pushed(client, dpop=True)
        response = request.validate_callback(await user.authorize(par.uri, flow.redirect_uri))
        with pytest.raises(OAuth2Error) as refused:
            client.authorization_code(
                response.code,
                code_verifier=response.code_verifier,
                redirect_uri=response.redirect_uri,
                dpop=other is not None,
                dpop_key=other,
                validate=False,
            )
        assert isinstance(refused.value, InvalidGrant), refused.value  # RFC 9449 §10: the code is not this client's to redeem


async def test_a_push_whose_proof_and_dpop_jkt_disagree_is_refused(rp: tuple[OAuth2Client, Flow]) -> None:
    client, _ = rp
    other = DPoPKey.generate("ES256")
    request = client.authorization_request(scope=SCOPE, dpop=True, dpop_jkt=other.dpop_jkt)
    assert request.args["dpop_jkt"] == other.dpop_jkt != request.dpop_key.dpop_jkt
    with pytest.raises(OAuth2Error) as refused:
        client.pushed_authorization_request(request)  # proved with the request's own key
    assert refused.value.error == "invalid_dpop_proof" and "dpop_jkt" in refused.value.description  # RFC 9449 §10.1


async def test_a_pushed_resource_is_the_tokens_audience(rp: tuple[OAuth2Client, Flow], user: ActingUser) -> None:
    """RFC 8707 through the push: the resource rides in the pushed request, not in the browser's URL."""
    client, flow = rp
    resource = "https://api.example.com/orders"
    request, par = pushed(client, resource=resource)
    assert request.args["resource"] == resource
    only_a_reference(par, client)
    response = request.validate_callback(await user.authorize(par.uri, flow.redirect_uri))
    token = client.authorization_code(response)
    assert jwt.decode(token.access_token, options={"verify_signature": False})["aud"] == resource


async def test_a_private_key_jwt_client_pushes_and_redeems_with_its_default_audiences(
    interop_server: ServerProcess, interop_dev: Flow, user: ActingUser
) -> None:
    """The library signs each assertion for the endpoint it posts to (its default ``aud``): the PAR
    endpoint's URL at the push, which RFC 9126 §2 says the server must accept."""
    key = Jwk.generate(alg="ES256", kid="k1")
    flow = await new_app(interop_dev, token_endpoint_auth_method="private_key_jwt", jwks={"keys": [dict(key.public_jwk())]})
    auth = PrivateKeyJwt(flow.app_id, key)
    assert auth.aud is None  # the library's default: the URL of the endpoint each request goes to
    client = discovered(interop_server.base_url, flow, auth)
    assert client.pushed_authorization_request_endpoint == f"{interop_server.base_url}/oauth2/par"

    request, par = pushed(client)
    only_a_reference(par, client)
    response = request.validate_callback(await user.authorize(par.uri, flow.redirect_uri))
    token = client.authorization_code(response)  # aud: the token endpoint's URL; the ID token validated
    assert token.id_token.nonce == request.nonce and token.id_token.subject == flow.user_id
    assert client.userinfo(token)["sub"] == flow.user_id
