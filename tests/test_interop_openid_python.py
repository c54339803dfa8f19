"""Interop: requests-oauth2client, a Python OpenID relying party no one here wrote, against a real
`grantd serve`, the user signing in and consenting on the hosted pages over HTTP (ActingUser).

Each test lets the library do the relying party's part and checks only what a relying party sees:

- discovery: the library builds its client from /.well-known/openid-configuration alone (issuer,
  endpoints, the JWKS it fetches, RFC 9207 support);
- code + PKCE (S256) + nonce, the ID token validated by the library (``validate_id_token``:
  signature by a published key, whatever the algorithm, iss, aud, exp, nonce, at_hash), and
  UserInfo by GET and by POST answering the ID token's ``sub``;
- ``prompt=none`` without a session: the library raises its ``LoginRequired``;
- ``prompt=login`` and ``max_age``: the user is asked to sign in again, and the library's own
  ``max_age`` check of ``auth_time`` passes;
- a replayed code: refused, and the grant's family revoked (the first access token is inactive at
  introspection);
- RP-initiated logout, then ``prompt=none``: ``login_required``;
- RFC 9207: every answer carries the issuer, and the library refuses an answer whose ``iss`` is
  another's or missing.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
import requests
from requests_oauth2client import (
    AuthorizationRequest,
    AuthorizationResponse,
    BearerToken,
    ClientSecretBasic,
    OAuth2Client,
)
from requests_oauth2client import InvalidGrant, LoginRequired, MismatchingIssuer, MissingIssuer

from acting_user import ActingUser, new_app
from support.neucron import PASSWORD, Flow
from support.servers import ServerProcess

SCOPE = "openid profile email"


def discovered(issuer: str, flow: Flow, auth: Any = None) -> OAuth2Client:
    """The library's client for ``flow``'s app, from the discovery document alone, authenticating
    with ``auth`` (by default the app's key secret, by HTTP Basic). ``testing``: the loopback
    server is http, which the library would otherwise refuse as an issuer."""
    document = requests.get(f"{issuer}/.well-known/openid-configuration", timeout=10).json()
    client = OAuth2Client.from_discovery_document(
        document,
        issuer=issuer,
        auth=auth or ClientSecretBasic(flow.app_id, flow.key_secret),
        redirect_uri=flow.redirect_uri,
        testing=True,
        # The app's id_token_signed_response_alg (RS256: the registration default, which /v1/apps
        # reports): the library checks that each ID token is signed with it.
        id_token_signed_response_alg="RS256",
    )
    client.update_authorization_server_public_keys()  # fetches jwks_uri
    return client


def request_for(client: OAuth2Client, **params: Any) -> AuthorizationRequest:
    """An authorization request built by the library: state, nonce, PKCE S256, and RFC 9207's
    ``iss`` required in the answer (discovery says grantd sends it)."""
    params.setdefault("scope", SCOPE)
    return client.authorization_request(
        authorization_response_iss_parameter_supported=client.authorization_response_iss_parameter_supported,
        **params,
    )


async def signed_in_flow(
    client: OAuth2Client, user: ActingUser, flow: Flow, **params: Any
) -> tuple[AuthorizationRequest, AuthorizationResponse, BearerToken]:
    """The user answers the library's request on the pages; the library checks the answer,
    redeems the code and validates the ID token."""
    request = request_for(client, **params)
    location = await user.authorize(str(request.uri), flow.redirect_uri)
    response = request.validate_callback(location)
    token = client.authorization_code(response)  # validate=True: validate_id_token
    return request, response, token


@pytest.fixture
async def rp(interop_server: ServerProcess, interop_dev: Flow) -> tuple[OAuth2Client, Flow]:
    flow = await new_app(interop_dev)
    return discovered(interop_server.base_url, flow), flow


@pytest.fixture
async def user(interop_dev: Flow) -> Any:
    async with httpx.AsyncClient(timeout=10) as browser:
        yield ActingUser(browser, interop_dev.extra["email"], PASSWORD)


def signin_pages(user: ActingUser) -> int:
    return sum(1 for page in user.pages if page.request.method == "POST" and page.request.url.path == "/signin")


async def test_discovery_code_pkce_nonce_and_userinfo(
    rp: tuple[OAuth2Client, Flow], user: ActingUser, interop_server: ServerProcess
) -> None:
    client, flow = rp
    issuer = interop_server.base_url
    assert client.issuer == issuer
    assert client.authorization_response_iss_parameter_supported is True
    assert client.userinfo_endpoint == f"{issuer}/oauth2/userinfo"
    assert len(client.authorization_server_jwks) >= 1

    request, response, token = await signed_in_flow(client, user, flow)
    assert request.code_challenge_method == "S256" and "code_challenge" in request.args
    assert request.nonce and request.args["nonce"] == request.nonce
    assert response.iss == issuer  # RFC 9207, checked by validate_callback against the discovered issuer
    id_token = token.id_token  # validated: the library returns it parsed
    document = requests.get(f"{issuer}/.well-known/openid-configuration", timeout=10).json()
    assert id_token.alg in document["id_token_signing_alg_values_supported"]
    assert id_token.issuer == issuer
    assert id_token.audiences == [flow.app_id]
    assert id_token.nonce == request.nonce
    assert id_token.subject == flow.user_id
    assert id_token.get_claim("email") == user.email
    assert id_token.get_claim("at_hash")  # checked by the library against the access token

    by_post = client.userinfo(token)  # the library's own call: POST with the bearer header
    by_get = requests.get(client.userinfo_endpoint, auth=token, timeout=10)
    assert by_get.status_code == 200, by_get.text
    assert by_post["sub"] == by_get.json()["sub"] == id_token.subject
    assert by_post["email"] == user.email


async def test_prompt_none_without_a_session_is_login_required(rp: tuple[OAuth2Client, Flow], user: ActingUser) -> None:
    client, flow = rp
    request = request_for(client, prompt="none")
    location = await user.authorize(str(request.uri), flow.redirect_uri)
    with pytest.raises(LoginRequired):
        request.validate_callback(location)  # state and iss checked first: an answer from grantd


async def test_prompt_login_and_max_age_ask_to_sign_in_again(rp: tuple[OAuth2Client, Flow], user: ActingUser) -> None:
    client, flow = rp
    _, _, first = await signed_in_flow(client, user, flow)
    assert signin_pages(user) == 1

    _, _, again = await signed_in_flow(client, user, flow, prompt="login")
    assert signin_pages(user) == 2  # asked again, though signed in
    assert again.id_token.auth_datetime >= first.id_token.auth_datetime

    # Signed in just now: max_age=3600 does not ask again; the library checks auth_time against it.
    _, _, recent = await signed_in_flow(client, user, flow, max_age=3600)
    assert signin_pages(user) == 2
    await asyncio.sleep(2.1)
    _, _, fresh = await signed_in_flow(client, user, flow, max_age=1)
    assert signin_pages(user) == 3  # the sign-in was older than max_age
    assert fresh.id_token.auth_datetime > recent.id_token.auth_datetime


async def test_a_replayed_code_is_refused_and_its_tokens_revoked(rp: tuple[OAuth2Client, Flow], user: ActingUser) -> None:
    client, flow = rp
    request = request_for(client, scope="openid offline_access")
    response = request.validate_callback(await user.authorize(str(request.uri), flow.redirect_uri))
    token = client.authorization_code(response)
    assert client.introspect_token(token.access_token)["active"] is True
    with pytest.raises(InvalidGrant):
        client.authorization_code(response)
    assert client.introspect_token(token.access_token)["active"] is False
    assert client.introspect_token(token.refresh_token, token_type_hint="refresh_token")["active"] is False


async def test_logout_then_prompt_none_is_login_required(rp: tuple[OAuth2Client, Flow], user: ActingUser, interop_server: ServerProcess) -> None:
    client, flow = rp
    _, _, token = await signed_in_flow(client, user, flow)
    silent = request_for(client, prompt="none")
    assert silent.validate_callback(await user.authorize(str(silent.uri), flow.redirect_uri)).code
    # RP-initiated logout (the library has no end_session call): the ID token the library validated as the hint.
    document = requests.get(f"{interop_server.base_url}/.well-known/openid-configuration", timeout=10).json()
    signed_out = await user.http.get(document["end_session_endpoint"], params={"id_token_hint": str(token.id_token)})
    assert signed_out.status_code == 200 and "You are signed out" in signed_out.text
    after = request_for(client, prompt="none")
    with pytest.raises(LoginRequired):
        after.validate_callback(await user.authorize(str(after.uri), flow.redirect_uri))
    # The access token of the session's grant ended with it (no offline_access).
    assert client.introspect_token(token.access_token)["active"] is False


async def test_rfc_9207_the_library_refuses_another_issuer(rp: tuple[OAuth2Client, Flow], user: ActingUser, interop_server: ServerProcess) -> None:
    client, flow = rp
    request = request_for(client)
    location = await user.authorize(str(request.uri), flow.redirect_uri)
    assert f"iss={requests.utils.quote(interop_server.base_url, safe='')}" in location
    mixed_up = location.replace(requests.utils.quote(interop_server.base_url, safe=""), requests.utils.quote("https://attacker.example", safe=""))
    with pytest.raises(MismatchingIssuer):
        request.validate_callback(mixed_up)
    stripped = "&".join(part for part in location.split("&") if not part.startswith("iss="))
    with pytest.raises(MissingIssuer):
        request.validate_callback(stripped)
    assert request.validate_callback(location).code
