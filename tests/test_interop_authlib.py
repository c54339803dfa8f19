"""Interop: Authlib, an OAuth 2.0 client library no one here wrote, against a real grantd process.

Discovery (RFC 8414, checked by Authlib's own metadata validator) → authorization request
with PKCE S256 built by Authlib → the user signs in and consents on the hosted pages over
HTTP → Authlib redeems the redirect URL → refresh (rotation) → introspection → revocation →
introspection again; the access tokens are verified with the published JWKS only (PyJWT's
PyJWKClient fetches the jwks_uri itself). Once for each client authentication method:
client_secret_basic, client_secret_post, and a public client (none, PKCE).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest
from authlib.common.security import generate_token
from authlib.integrations.base_client import OAuthError
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata

from acting_user import new_app
from support.interop import AUTH_METHODS, SCOPE, app_for, consent
from support.neucron import Flow
from support.servers import ServerProcess

ENDPOINT_KEYS = (
    "authorization_endpoint",
    "token_endpoint",
    "jwks_uri",
    "revocation_endpoint",
    "introspection_endpoint",
)


async def discover(http: httpx.AsyncClient, issuer: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    response = await http.get(f"{issuer}/.well-known/oauth-authorization-server")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    metadata = response.json()
    assert metadata["issuer"] == issuer
    # Authlib's RFC 8414 validator; it insists on https, which a loopback test server cannot offer.
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")
    AuthorizationServerMetadata(metadata).validate()
    assert "S256" in metadata["code_challenge_methods_supported"]
    assert "plain" not in metadata["code_challenge_methods_supported"]
    assert metadata["authorization_response_iss_parameter_supported"] is True
    assert {"client_secret_basic", "client_secret_post", "none"} <= set(
        metadata["token_endpoint_auth_methods_supported"]
    )
    assert {"authorization_code", "refresh_token", "client_credentials"} <= set(metadata["grant_types_supported"])
    # Every URL in it answers (not 404, never 5xx): the pages with GET, the endpoints with an empty POST.
    for key in ENDPOINT_KEYS:
        url = metadata[key]
        assert url.startswith(issuer + "/"), (key, url)
        if key in ("authorization_endpoint", "jwks_uri"):
            answer = await http.get(url)
        else:
            answer = await http.post(url, data={})
        assert answer.status_code != 404 and answer.status_code < 500, (key, url, answer.status_code, answer.text)
    return metadata


def verify_with_jwks(metadata: dict[str, Any], access_token: str) -> dict[str, Any]:
    """As a resource server would: only with the keys published at jwks_uri."""
    header = jwt.get_unverified_header(access_token)
    assert header["typ"] == "at+jwt" and header["alg"] == "ES256" and header.get("kid")
    key = jwt.PyJWKClient(metadata["jwks_uri"], cache_keys=False).get_signing_key_from_jwt(access_token)
    return jwt.decode(
        access_token,
        key.key,
        algorithms=["ES256"],
        audience=metadata["issuer"],
        issuer=metadata["issuer"],
        options={"require": ["iss", "sub", "aud", "exp", "iat", "jti", "client_id", "scope"]},
    )


def introspect(introspector: OAuth2Session, metadata: dict[str, Any], token: str, hint: str) -> dict[str, Any]:
    response = introspector.introspect_token(metadata["introspection_endpoint"], token=token, token_type_hint=hint)
    assert response.status_code == 200, response.text
    assert response.headers.get("cache-control") == "no-store"
    return response.json()


@pytest.mark.parametrize("auth_method", AUTH_METHODS)
async def test_authlib_authorization_code_flow(
    auth_method: str, interop_server: ServerProcess, interop_dev: Flow, monkeypatch: pytest.MonkeyPatch
) -> None:
    issuer = interop_server.base_url
    public = auth_method == "none"
    async with httpx.AsyncClient(timeout=10) as http:
        metadata = await discover(http, issuer, monkeypatch)
        flow = await app_for(interop_dev, auth_method)
        user_id = flow.user_id
        redirect_uri = flow.redirect_uri

        # The app's side, all by Authlib. A public client holds no secret.
        oauth = OAuth2Session(
            client_id=flow.app_id,
            client_secret=None if public else flow.key_secret,
            token_endpoint_auth_method=auth_method,
            revocation_endpoint_auth_method=auth_method,
            redirect_uri=redirect_uri,
            scope=SCOPE,
            code_challenge_method="S256",
        )
        # Introspection is for confidential callers: a public app's backend uses a key of that same app.
        introspector = OAuth2Session(
            client_id=flow.app_id,
            client_secret=flow.key_secret,
            token_endpoint_auth_method="client_secret_post"
            if auth_method == "client_secret_post"
            else "client_secret_basic",
        )
        with oauth, introspector:
            code_verifier = generate_token(64)
            url, state = oauth.create_authorization_url(metadata["authorization_endpoint"], code_verifier=code_verifier)
            assert "code_challenge=" in url and "code_challenge_method=S256" in url

            # The user's side: sign in and consent on the real pages.
            callback = await consent(flow, url)
            params = parse_qs(urlsplit(callback).query, keep_blank_values=True)
            assert set(params) == {"code", "state", "iss"}, callback
            assert params["state"] == [state] and params["iss"] == [issuer]

            token = oauth.fetch_token(
                metadata["token_endpoint"], authorization_response=callback, code_verifier=code_verifier
            )
            assert token["token_type"] == "Bearer"
            assert token["scope"] == SCOPE
            assert isinstance(token["expires_in"], int) and token["expires_in"] > 0
            assert token["refresh_token"]
            claims = verify_with_jwks(metadata, token["access_token"])
            assert claims["sub"] == user_id and claims["client_id"] == flow.app_id and claims["scope"] == SCOPE

            info = introspect(introspector, metadata, token["access_token"], "access_token")
            assert info["active"] is True
            assert info["scope"] == SCOPE and info["client_id"] == flow.app_id and info["sub"] == user_id
            assert info["exp"] == claims["exp"] and info["jti"] == claims["jti"]
            assert introspect(introspector, metadata, token["refresh_token"], "refresh_token")["active"] is True

            # Refresh: rotation gives a new refresh token and a new access token; the old refresh token is spent.
            refreshed = oauth.refresh_token(metadata["token_endpoint"], refresh_token=token["refresh_token"])
            assert refreshed["refresh_token"] and refreshed["refresh_token"] != token["refresh_token"]
            new_claims = verify_with_jwks(metadata, refreshed["access_token"])
            assert new_claims["jti"] != claims["jti"] and new_claims["sub"] == user_id
            assert introspect(introspector, metadata, refreshed["access_token"], "access_token")["active"] is True
            assert introspect(introspector, metadata, token["refresh_token"], "refresh_token")["active"] is False

            # Revoke the access token, then the refresh token (which takes its family with it).
            response = oauth.revoke_token(
                metadata["revocation_endpoint"], token=refreshed["access_token"], token_type_hint="access_token"
            )
            assert response.status_code == 200, response.text
            assert introspect(introspector, metadata, refreshed["access_token"], "access_token") == {"active": False}
            assert introspect(introspector, metadata, refreshed["refresh_token"], "refresh_token")["active"] is True

            response = oauth.revoke_token(
                metadata["revocation_endpoint"], token=refreshed["refresh_token"], token_type_hint="refresh_token"
            )
            assert response.status_code == 200, response.text
            assert introspect(introspector, metadata, refreshed["refresh_token"], "refresh_token") == {"active": False}
            with pytest.raises(OAuthError) as revoked:
                oauth.refresh_token(metadata["token_endpoint"], refresh_token=refreshed["refresh_token"])
            assert revoked.value.error == "invalid_grant"


async def test_authlib_client_credentials(
    interop_server: ServerProcess, interop_dev: Flow, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An app on its own behalf, by Authlib: sub is the app, no user_id; introspection agrees."""
    async with httpx.AsyncClient(timeout=10) as http:
        metadata = await discover(http, interop_server.base_url, monkeypatch)
    flow = await new_app(interop_dev)
    with OAuth2Session(client_id=flow.app_id, client_secret=flow.key_secret, scope="read_profile") as oauth:
        token = oauth.fetch_token(metadata["token_endpoint"], grant_type="client_credentials")
        assert token["scope"] == "read_profile" and "refresh_token" not in token
        claims = verify_with_jwks(metadata, token["access_token"])
        assert claims["sub"] == flow.app_id and claims["client_id"] == flow.app_id and "user_id" not in claims
        info = introspect(oauth, metadata, token["access_token"], "access_token")
        assert info["active"] is True and info["sub"] == flow.app_id and "user_id" not in info
