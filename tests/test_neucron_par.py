""""Require PAR" on the Neucron dialects, against real `grantd serve` processes: neither v1's
``POST /oauth/authorize`` nor v2's ``GET /oauth/authorize`` can carry a pushed request's
``request_uri``, so an app that requires pushed requests (its own setting, or the server's) is
refused by both with the Neucron error body, ``400 unauthorized_client``, naming ``/oauth2/par``;
an app that does not is served as before. (The FAPI 2.0 profile's refusal: tests/test_fapi2.py.)"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from acting_user import new_app
from support.neucron import Flow
from support.servers import ServerProcess


def assert_refused(response: httpx.Response) -> None:
    assert response.status_code == 400, response.text
    body = response.json()
    assert set(body) == {"error", "message", "status_code"} and body["status_code"] == 400, body
    assert body["error"] == "unauthorized_client", body
    assert "pushed authorization requests" in body["message"] and "/oauth2/par" in body["message"], body


async def v1_authorize(flow: Flow, prefix: str) -> httpx.Response:
    return await flow.client.post(
        f"{prefix}/oauth/authorize", json={"token": flow.params()}, headers={"Authorization": flow.user_token}
    )


async def v2_authorize(flow: Flow, prefix: str) -> httpx.Response:
    query = {
        "response_type": "code", "client_id": flow.app_id, "redirect_uri": flow.redirect_uri, "state": "s-1",
        "platform": "Test App",
    }
    return await flow.client.get(f"{prefix}/oauth/authorize", params=query)


@pytest.mark.parametrize("prefix", ["", "/v1"])
async def test_an_app_that_requires_par_is_refused(interop_dev: Flow, prefix: str) -> None:
    flow = await new_app(interop_dev, require_pushed_authorization_requests=True)
    assert_refused(await v1_authorize(flow, prefix))
    assert_refused(await v2_authorize(flow, prefix))
    # Its pushed requests are its way in: /oauth2/par takes them.
    pushed = await flow.client.post(
        "/oauth2/par",
        data={"response_type": "code", "redirect_uri": flow.redirect_uri, "scope": "read_profile", "state": "s"},
        auth=(flow.app_id, flow.key_secret),
    )
    assert pushed.status_code == 201, pushed.text


async def test_an_app_that_does_not_is_served(interop_dev: Flow) -> None:
    flow = await new_app(interop_dev)
    v1 = await v1_authorize(flow, "/v1")
    assert v1.status_code == 200 and v1.json()["data"]["code"], v1.text
    v2 = await v2_authorize(flow, "/v1")
    assert v2.status_code == 200 and "/signin?next=" in v2.json()["redirect_url"], v2.text


async def test_the_servers_setting_refuses_every_app(
    secret_key: str, tmp_path_factory: pytest.TempPathFactory, server_factory: Callable[..., ServerProcess]
) -> None:
    from acting_user import developer

    database = tmp_path_factory.mktemp("neucron-par") / "grantd.db"
    server = server_factory(
        f"sqlite+aiosqlite:///{database}", env={"GRANTD_REQUIRE_PUSHED_AUTHORIZATION_REQUESTS": "true"}
    )
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
        flow: Any = await new_app(await developer(http))
        assert_refused(await v1_authorize(flow, ""))
        assert_refused(await v2_authorize(flow, "/v1"))
