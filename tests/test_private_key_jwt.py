"""RFC 7523 private_key_jwt client authentication: an app registered for it proves itself with a
JWT signed by a key of its ``jwks`` (or ``jwks_uri``), at the token, revocation, introspection,
pushed authorization request and device authorization endpoints, and every check of RFC 7523 §3 refuses what it should;
a ``jwks_uri`` is fetched from a real local server, within its size cap and its timeout."""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from grantd.core import jwks as jwks_module
from support.neucron import Flow, new_flow

pytestmark = pytest.mark.db

ISSUER = "http://testserver"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def public_jwk(private: Any, kid: str) -> dict[str, Any]:
    algorithm = jwt.algorithms.ECAlgorithm if isinstance(private, ec.EllipticCurvePrivateKey) else jwt.algorithms.RSAAlgorithm
    jwk = json.loads(algorithm.to_jwk(private.public_key()))
    return {**jwk, "kid": kid, "use": "sig"}


def assertion(private: Any, client_id: str, *, alg: str = "ES256", kid: str | None = "k1", **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": client_id, "sub": client_id, "aud": ISSUER, "iat": now, "exp": now + 60, "jti": secrets.token_hex(8)}
    body.update(claims)
    body = {name: value for name, value in body.items() if value is not None}
    return jwt.encode(body, private, algorithm=alg, headers={"kid": kid} if kid else None)


def form(signed: str, **fields: str) -> dict[str, str]:
    return {"client_assertion_type": JWT_BEARER, "client_assertion": signed, **fields}


@pytest.fixture
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
async def pk_flow(client: httpx.AsyncClient, key: ec.EllipticCurvePrivateKey) -> Flow:
    return await new_flow(
        client, token_endpoint_auth_method="private_key_jwt", jwks={"keys": [public_jwk(key, "k1")]}
    )


async def credentials(client: httpx.AsyncClient, data: dict[str, str], **kwargs: Any) -> httpx.Response:
    return await client.post("/oauth2/token", data={"grant_type": "client_credentials", **data}, **kwargs)


async def test_the_app_shows_its_method_and_keys(pk_flow: Flow, key: Any) -> None:
    response = await pk_flow.client.get(f"/v1/apps/{pk_flow.app_id}", headers={"Authorization": pk_flow.dev_token})
    data = response.json()["data"]
    assert data["token_endpoint_auth_method"] == "private_key_jwt"
    assert data["jwks"] == {"keys": [public_jwk(key, "k1")]} and data["jwks_uri"] is None


async def test_discovery_lists_private_key_jwt(client: httpx.AsyncClient) -> None:
    document = (await client.get("/.well-known/openid-configuration")).json()
    for endpoint in ("token", "revocation", "introspection"):
        assert "private_key_jwt" in document[f"{endpoint}_endpoint_auth_methods_supported"]
        assert document[f"{endpoint}_endpoint_auth_signing_alg_values_supported"] == ["RS256", "PS256", "ES256", "EdDSA"]


async def test_client_credentials_with_a_signed_assertion(pk_flow: Flow, key: Any) -> None:
    response = await credentials(pk_flow.client, form(assertion(key, pk_flow.app_id)))
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    # With client_id too, naming the same client; and aud the token endpoint's URL.
    response = await credentials(
        pk_flow.client, form(assertion(key, pk_flow.app_id, aud=f"{ISSUER}/oauth2/token"), client_id=pk_flow.app_id)
    )
    assert response.status_code == 200, response.text
    # Introspection and revocation with an assertion.
    response = await pk_flow.client.post("/oauth2/introspect", data=form(assertion(key, pk_flow.app_id), token=token))
    assert response.status_code == 200, response.text
    assert response.json()["active"] is True and response.json()["client_id"] == pk_flow.app_id
    response = await pk_flow.client.post("/oauth2/revoke", data=form(assertion(key, pk_flow.app_id), token=token))
    assert response.status_code == 200, response.text
    response = await pk_flow.client.post("/oauth2/introspect", data=form(assertion(key, pk_flow.app_id), token=token))
    assert response.json() == {"active": False}


async def test_authorization_code_with_a_signed_assertion(pk_flow: Flow, key: Any) -> None:
    code = await pk_flow.code()
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": pk_flow.redirect_uri}
    response = await pk_flow.client.post("/oauth2/token", data=form(assertion(key, pk_flow.app_id), **data))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["refresh_token"]
    refresh = {"grant_type": "refresh_token", "refresh_token": body["refresh_token"]}
    response = await pk_flow.client.post("/oauth2/token", data=form(assertion(key, pk_flow.app_id), **refresh))
    assert response.status_code == 200, response.text


async def test_a_pushed_request_may_name_the_par_endpoint_as_aud(pk_flow: Flow, key: Any) -> None:
    """RFC 9126 §2: at the pushed authorization request endpoint, the PAR endpoint's URL (as the
    metadata publishes it) identifies the server as well as the issuer does."""
    document = (await pk_flow.client.get("/.well-known/oauth-authorization-server")).json()
    par_endpoint = document["pushed_authorization_request_endpoint"]
    assert par_endpoint == f"{ISSUER}/oauth2/par"
    request = {"response_type": "code", "redirect_uri": pk_flow.redirect_uri, "scope": "read_profile", "state": "s"}
    for aud in (par_endpoint, ISSUER, [par_endpoint]):
        response = await pk_flow.client.post("/oauth2/par", data=form(assertion(key, pk_flow.app_id, aud=aud), **request))
        assert response.status_code == 201, (aud, response.text)
        assert response.json()["request_uri"].startswith("urn:ietf:params:oauth:request_uri:")
    # The device authorization endpoint's URL is an audience too, where clients authenticate.
    device_endpoint = document["device_authorization_endpoint"]
    response = await pk_flow.client.post(
        "/oauth2/device_authorization", data=form(assertion(key, pk_flow.app_id, aud=device_endpoint), scope="read_profile")
    )
    assert response.status_code == 200, response.text
    # An endpoint where no client authenticates is no audience.
    response = await pk_flow.client.post(
        "/oauth2/par", data=form(assertion(key, pk_flow.app_id, aud=f"{ISSUER}/oauth2/authorize"), **request)
    )
    refused(response)


async def test_a_fapi2_app_may_not_name_the_par_endpoint_as_aud(client: httpx.AsyncClient, key: Any) -> None:
    """Under the FAPI 2.0 profile (its Security Profile §5.3.2.1) the issuer alone, at PAR too."""
    flow = await new_flow(
        client, token_endpoint_auth_method="private_key_jwt", jwks={"keys": [public_jwk(key, "k1")]},
        security_profile="fapi2",
    )
    request = {
        "response_type": "code", "redirect_uri": flow.redirect_uri, "scope": "read_profile", "state": "s",
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", "code_challenge_method": "S256",
    }
    response = await client.post("/oauth2/par", data=form(assertion(key, flow.app_id, aud=f"{ISSUER}/oauth2/par"), **request))
    refused(response)
    response = await client.post("/oauth2/par", data=form(assertion(key, flow.app_id), **request))
    assert response.status_code == 201, response.text


def refused(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "invalid_client"


async def test_rfc_7523_section_3_checks(pk_flow: Flow, key: Any) -> None:
    app_id, client = pk_flow.app_id, pk_flow.client
    refused(await credentials(client, form(assertion(key, app_id, aud="https://elsewhere.example"))))
    # A reused jti, across requests.
    used = assertion(key, app_id)
    assert (await credentials(client, form(used))).status_code == 200
    refused(await credentials(client, form(used)))
    # Signed by a key not in the app's jwks (the same kid).
    refused(await credentials(client, form(assertion(ec.generate_private_key(ec.SECP256R1()), app_id))))
    now = int(time.time())
    refused(await credentials(client, form(assertion(key, app_id, iat=now - 600, exp=now - 300))))  # expired
    refused(await credentials(client, form(assertion(key, app_id, exp=None))))  # no exp
    refused(await credentials(client, form(assertion(key, app_id, jti=None))))  # no jti
    refused(await credentials(client, form(assertion(key, app_id, iat=None, exp=now + 3600))))  # too far ahead
    refused(await credentials(client, form(assertion(key, app_id, iat=now, exp=now + 3600))))
    refused(await credentials(client, form(assertion(key, app_id, iss="someone-else"))))  # iss != sub
    refused(await credentials(client, form(assertion(key, app_id), client_id="another-client")))
    # alg none, and HS256 with the public key as the secret.
    unsigned = jwt.encode({"iss": app_id, "sub": app_id, "aud": ISSUER, "exp": now + 60, "jti": "n1"}, None, algorithm="none")
    refused(await credentials(client, form(unsigned)))
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    header = jwt.utils.base64url_encode(json.dumps({"alg": "HS256", "kid": "k1"}).encode())
    payload = jwt.utils.base64url_encode(
        json.dumps({"iss": app_id, "sub": app_id, "aud": ISSUER, "exp": now + 60, "jti": "h1"}).encode()
    )
    import hashlib
    import hmac

    signature = jwt.utils.base64url_encode(hmac.new(pem, header + b"." + payload, hashlib.sha256).digest())
    refused(await credentials(client, form((header + b"." + payload + b"." + signature).decode())))
    # A private_key_jwt app's own key secret proves nothing, by Basic or in the form.
    refused(await credentials(client, {}, auth=(app_id, pk_flow.key_secret)))
    refused(await credentials(client, {"client_id": app_id, "client_secret": pk_flow.key_secret}))
    # One method only: an assertion beside a secret.
    response = await credentials(client, form(assertion(key, app_id), client_secret=pk_flow.key_secret))
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"
    # A wrong assertion type.
    refused(await credentials(client, {"client_assertion_type": "urn:x", "client_assertion": assertion(key, app_id)}))


async def test_an_app_with_secrets_cannot_use_an_assertion(client: httpx.AsyncClient, key: Any) -> None:
    flow = await new_flow(client, jwks={"keys": [public_jwk(key, "k1")]})  # keys, but the secret method
    refused(await credentials(client, form(assertion(key, flow.app_id))))
    assert (await credentials(client, {}, auth=(flow.app_id, flow.key_secret))).status_code == 200


async def test_an_rsa_key_with_ps256_and_no_kid(client: httpx.AsyncClient) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = {name: value for name, value in public_jwk(private, "r").items() if name != "kid"}
    flow = await new_flow(client, token_endpoint_auth_method="private_key_jwt", jwks={"keys": [jwk]})
    response = await credentials(client, form(assertion(private, flow.app_id, alg="PS256", kid=None)))
    assert response.status_code == 200, response.text


async def test_the_settings_rules(flow: Flow, key: Any) -> None:
    headers = {"Authorization": flow.dev_token}

    async def patch(**body: Any) -> httpx.Response:
        return await flow.client.patch(f"/v1/apps/{flow.app_id}", json=body, headers=headers)

    response = await patch(token_endpoint_auth_method="private_key_jwt")  # no keys
    assert response.status_code == 400 and "jwks" in response.text
    private_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key))
    assert (await patch(jwks={"keys": [private_jwk]})).status_code == 400
    assert (await patch(jwks={"keys": [{"kty": "oct", "k": "c2VjcmV0"}]})).status_code == 400
    assert (await patch(jwks={"keys": [public_jwk(key, "k")] * (jwks_module.MAX_KEYS + 1)})).status_code == 400
    assert (await patch(token_endpoint_auth_method="none")).status_code == 400  # a confidential client
    assert (await patch(token_endpoint_auth_method="secret_jwt")).status_code == 400
    assert (await patch(jwks_uri="http://keys.example/jwks.json")).status_code == 400  # https only
    response = await patch(jwks={"keys": [public_jwk(key, "k")]}, jwks_uri="https://keys.example/jwks.json")
    assert response.status_code == 400
    response = await patch(token_endpoint_auth_method="private_key_jwt", jwks={"keys": [public_jwk(key, "k")]})
    assert response.status_code == 200, response.text
    assert response.json()["data"]["token_endpoint_auth_method"] == "private_key_jwt"
    response = await patch(token_endpoint_auth_method="", jwks={})  # back to the defaults
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["token_endpoint_auth_method"] == "client_secret_basic" and data["jwks"] is None


# ---------------------------------------------------------------- jwks_uri


@pytest.fixture
def jwks_server(key: Any) -> Iterator[tuple[str, list[int]]]:
    """A local HTTP server publishing the key's JWK Set: its URL and the count of fetches."""
    fetched = [0]
    body = json.dumps({"keys": [public_jwk(key, "k1")]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            fetched[0] += 1
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json", fetched
    finally:
        server.shutdown()
        server.server_close()


async def test_jwks_uri_fetched_from_a_local_server_when_allowed(
    app: Any, client: httpx.AsyncClient, key: Any, jwks_server: tuple[str, list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    uri, fetched = jwks_server
    flow = await new_flow(client, token_endpoint_auth_method="private_key_jwt", jwks_uri=uri)
    settings = app.state.ctx.settings
    # Without the operator's setting: a loopback address (and http) is refused.
    monkeypatch.setattr(jwks_module, "CACHE", jwks_module.JwksCache())
    assert settings.jwks_uri_allow_private_addresses is False
    refused(await credentials(client, form(assertion(key, flow.app_id))))
    assert fetched[0] == 0
    monkeypatch.setattr(settings, "jwks_uri_allow_private_addresses", True)
    for _ in range(2):
        response = await credentials(client, form(assertion(key, flow.app_id)))
        assert response.status_code == 200, response.text
    assert fetched[0] == 1  # cached


async def test_jwks_uri_refuses_loopback_addresses_without_the_setting() -> None:
    from grantd.core.errors import InvalidClient

    with pytest.raises(InvalidClient):
        await jwks_module.fetch("https://127.0.0.1:1/jwks.json", allow_private=False)
    with pytest.raises(InvalidClient):
        await jwks_module.fetch("https://localhost:1/jwks.json", allow_private=False)
    with pytest.raises(InvalidClient):
        await jwks_module.fetch("https://169.254.169.254/jwks.json", allow_private=False)


async def test_failed_assertions_count_in_the_client_authentication_rate_limit(settings: Any, key: Any) -> None:
    from test_ratelimit import limited_settings, running

    async with running(limited_settings(settings, rate_limit_token_failures_per_client=3)) as client:
        c = client(None)
        flow = await new_flow(c, token_endpoint_auth_method="private_key_jwt", jwks={"keys": [public_jwk(key, "k1")]})
        foreign = ec.generate_private_key(ec.SECP256R1())
        for _ in range(3):
            refused(await credentials(c, form(assertion(foreign, flow.app_id))))
        # Over the limit at this address: refused before the assertion is judged, a good one too.
        response = await credentials(c, form(assertion(key, flow.app_id)))
        assert response.status_code == 429 and response.json()["error"] == "rate_limited", response.text
        # Another address is served: failures here lock nobody out there.
        served = await credentials(client(None), form(assertion(key, flow.app_id)))
        assert served.status_code == 200, served.text


async def test_pruning_deletes_the_jti_of_expired_assertions(app: Any, pk_flow: Flow, key: Any) -> None:
    from grantd.core import retention
    from grantd.store import retention as retention_store
    from grantd.store.schema import client_assertion_jtis
    from sqlalchemy import func, select

    ctx = app.state.ctx
    assert (await credentials(pk_flow.client, form(assertion(key, pk_flow.app_id)))).status_code == 200

    async def count() -> int:
        async with ctx.db.read() as conn:
            query = select(func.count()).select_from(client_assertion_jtis).where(client_assertion_jtis.c.app_id == pk_flow.app_id)
            return (await conn.execute(query)).scalar_one()

    assert await count() == 1
    # Only this table is walked here: the session's database holds other tests' rows.
    assert await retention._prune(ctx, retention_store.ASSERTION_JTIS, "", ctx.now(), 200, False) == 0
    assert await count() == 1
    assert await retention._prune(ctx, retention_store.ASSERTION_JTIS, "", ctx.now() + 3600, 200, False) >= 1
    assert await count() == 0


class KeysServer:
    """A local HTTP server at a jwks_uri whose answer a test sets: a body (``body``), or, with
    ``stall``, an answer that never comes ("silent": the request is read and nothing is sent) or
    comes a byte a second ("trickling": headers, then the body) until the test ends."""

    def __init__(self) -> None:
        self.body, self.stall, self.fetched = b"", None, 0
        self.released = threading.Event()
        served = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                served.fetched += 1
                if served.stall == "silent":
                    served.released.wait(30)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(served.body)))
                self.end_headers()
                if served.stall == "trickling":
                    for byte in served.body:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        if served.released.wait(1):
                            return
                self.wfile.write(served.body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.uri = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def keys_server(app: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[KeysServer]:
    """A ``KeysServer``, with the operator's allowance for its loopback address and no cached sets."""
    monkeypatch.setattr(jwks_module, "CACHE", jwks_module.JwksCache())
    monkeypatch.setattr(app.state.ctx.settings, "jwks_uri_allow_private_addresses", True)
    served = KeysServer()
    try:
        yield served
    finally:
        served.close()


async def test_a_jwks_uri_document_over_the_size_cap_is_refused(client: httpx.AsyncClient, key: Any, keys_server: KeysServer) -> None:
    """A JWK Set published at jwks_uri is read up to MAX_JWKS_BYTES (16 KiB): a larger document,
    valid JSON with the app's key in it, fails the client's authentication, and only that request."""
    flow = await new_flow(client, token_endpoint_auth_method="private_key_jwt", jwks_uri=keys_server.uri)
    keys = {"keys": [public_jwk(key, "k1")]}
    keys_server.body = json.dumps({**keys, "padding": "x" * jwks_module.MAX_JWKS_BYTES}).encode()
    response = await credentials(client, form(assertion(key, flow.app_id)))
    refused(response)
    assert f"larger than {jwks_module.MAX_JWKS_BYTES} bytes" in response.json()["error_description"]
    assert keys_server.fetched == 1
    # The refusal is not cached: once the app publishes a set within the cap, it authenticates.
    keys_server.body = json.dumps(keys).encode()
    response = await credentials(client, form(assertion(key, flow.app_id)))
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("stall", ["silent", "trickling"])
async def test_a_jwks_uri_that_does_not_answer_fails_within_the_fetch_timeout(
    client: httpx.AsyncClient, key: Any, keys_server: KeysServer, stall: str
) -> None:
    """A jwks_uri that accepts the connection and then sends nothing, or its answer a byte a second,
    fails the client's authentication within the fetch's total timeout (``TOTAL_SECONDS``, 5 s)
    and a margin, and meanwhile the server answers other clients at once."""
    flow = await new_flow(client, token_endpoint_auth_method="private_key_jwt", jwks_uri=keys_server.uri)
    other_key = ec.generate_private_key(ec.SECP256R1())
    other = await new_flow(client, token_endpoint_auth_method="private_key_jwt", jwks={"keys": [public_jwk(other_key, "k1")]})
    keys_server.body = json.dumps({"keys": [public_jwk(key, "k1")]}).encode()
    keys_server.stall = stall
    started = time.monotonic()
    waiting = asyncio.create_task(credentials(client, form(assertion(key, flow.app_id))))
    while keys_server.fetched == 0 and time.monotonic() - started < jwks_module.TOTAL_SECONDS:
        await asyncio.sleep(0.05)
    answered = time.monotonic()
    response = await credentials(client, form(assertion(other_key, other.app_id)))
    assert response.status_code == 200, response.text
    assert time.monotonic() - answered < 2 and not waiting.done()  # not held up by the fetch under way
    response = await waiting
    elapsed = time.monotonic() - started
    refused(response)
    assert "could not be fetched" in response.json()["error_description"]
    assert elapsed < jwks_module.TOTAL_SECONDS + 2, elapsed  # bounded: a correctness bound, not a benchmark
