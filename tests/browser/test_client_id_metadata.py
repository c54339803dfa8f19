"""The consent page of a client ID metadata document's client, in a real browser: the document's
host in large type and a warning that no one reviewed the app; Allow, and the code redeems."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from browser.conftest import CLIENT_ORIGIN, REDIRECT_URI, Traffic, callback_params, launch_server, new_user, sign_in
from support.servers import ServerProcess
from test_client_id_metadata import DocumentServer


@pytest.fixture(scope="module")
def documents() -> Iterator[DocumentServer]:
    server = DocumentServer()
    yield server
    server.httpd.shutdown()


@pytest.fixture(scope="module")
def metadata_server(tmp_path_factory: pytest.TempPathFactory, secret_key: str) -> Iterator[ServerProcess]:
    # The documents are served on 127.0.0.1, as in development.
    with launch_server(tmp_path_factory, secret_key, client_id_metadata_document_allow_private_addresses="true") as server:
        yield server


def test_the_consent_page_shows_the_host_and_says_not_reviewed(
    page: Any, metadata_server: ServerProcess, documents: DocumentServer, shoot: Any
) -> None:
    base_url = metadata_server.base_url
    client_id = documents.publish(
        "/browser/client.json",
        {"client_id": documents.base + "/browser/client.json", "client_name": "MCP Inspector", "redirect_uris": [REDIRECT_URI]},
    )
    verifier = "v" * 43
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    query = {
        "response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT_URI, "scope": "read_profile",
        "state": "st-cimd", "code_challenge": challenge, "code_challenge_method": "S256",
    }
    with httpx.Client(base_url=base_url, timeout=30) as api:
        user = new_user(api)
    Traffic(page.context)
    page.goto(f"{base_url}/oauth2/authorize?{urlencode(query)}")
    sign_in(page, None, user.email)
    assert page.get_by_role("heading", level=1).inner_text() == "MCP Inspector wants to access your account"
    host = page.locator(".client-host .host")
    assert host.inner_text() == "127.0.0.1"
    body_size = float(page.evaluate("parseFloat(getComputedStyle(document.body).fontSize)"))
    assert float(host.evaluate("e => parseFloat(getComputedStyle(e).fontSize)")) > body_size  # prominently
    assert "no one has reviewed it" in page.locator(".unreviewed").inner_text()
    assert page.locator(".owner").count() == 0  # no developer vouches for it
    shoot(page, "consent-client-metadata-document")

    page.get_by_role("button", name="Allow").click()
    page.wait_for_url(f"{CLIENT_ORIGIN}/callback?**")
    params = callback_params(page.url)
    assert params["state"] == "st-cimd"
    with httpx.Client(base_url=base_url, timeout=30) as api:
        response = api.post(
            "/oauth2/token",
            data={"grant_type": "authorization_code", "code": params["code"], "redirect_uri": REDIRECT_URI,
                  "client_id": client_id, "code_verifier": verifier},
        )
    assert response.status_code == 200, response.text
