"""RFC 6749 §4.1.3 at ``/oauth2/token``: when the authorization request named ``redirect_uri``, the
token request must send it, identical; a request that did not name it (the app's one registered
URI stood in) needs none; the Neucron ``/oauth/token`` (which has no such parameter) works as before."""

from __future__ import annotations

import httpx
import pytest

from acting_user import new_app
from support.neucron import Flow
from test_oauth2_security import (  # noqa: F401  (fixtures)
    REGISTERED, assert_oauth_error, code_by_pages, dev, introspect, person, regular, token, tokens_of, Person,
)

pytestmark = pytest.mark.db


async def test_a_code_whose_request_named_redirect_uri_needs_it_at_the_token_endpoint(
    client: httpx.AsyncClient, dev: Flow, person: Person
) -> None:
    flow = await new_app(dev)
    code, verifier = await code_by_pages(await person(), flow)  # redirect_uri in the request
    form = {"grant_type": "authorization_code", "code": code, "code_verifier": verifier}
    body = assert_oauth_error(await token(client, flow, **form), "invalid_grant", 400)  # type: ignore[arg-type]
    assert "redirect_uri" in body["error_description"]
    assert_oauth_error(
        await token(client, flow, redirect_uri=REGISTERED + "/", **form), "invalid_grant", 400  # type: ignore[arg-type]
    )
    # Neither refusal spent the code: the request with the same redirect_uri gets the tokens.
    issued = tokens_of(await token(client, flow, redirect_uri=REGISTERED, **form))  # type: ignore[arg-type]
    assert (await introspect(client, flow, issued["access_token"]))["active"] is True


async def test_a_code_whose_request_left_redirect_uri_out_needs_none(
    client: httpx.AsyncClient, dev: Flow, person: Person
) -> None:
    flow = await new_app(dev)  # one registered redirect URI: the request may leave it out (RFC 6749 §3.1.2.3)
    code, verifier = await code_by_pages(await person(), flow, redirect_uri=None)
    issued = tokens_of(
        await token(client, flow, grant_type="authorization_code", code=code, code_verifier=verifier)  # type: ignore[arg-type]
    )
    assert (await introspect(client, flow, issued["access_token"]))["active"] is True


async def test_a_neucron_code_at_the_standard_endpoint_needs_its_redirect_uri_and_neucron_needs_none(
    client: httpx.AsyncClient, dev: Flow
) -> None:
    flow = await new_app(dev)
    code = await flow.code()  # the Neucron authorize call always names redirect_uri
    assert_oauth_error(await token(client, flow, grant_type="authorization_code", code=code), "invalid_grant", 400)
    tokens_of(await token(client, flow, grant_type="authorization_code", code=code, redirect_uri=flow.redirect_uri))
    response = await flow.redeem(await flow.code())  # /oauth/token: key_id, key_secret, auth_code only
    assert response.status_code == 200, response.text
