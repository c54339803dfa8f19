import pytest

from support.neucron import Flow, new_flow



async def test_code_flow_in_process(flow: Flow) -> None:
    code = await flow.code()
    response = await flow.redeem(code)
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"data", "status_code"}


@pytest.mark.db
async def test_two_databases(any_database_url: str, server_factory) -> None:  # type: ignore[no-untyped-def]
    import httpx

    server = server_factory(any_database_url)
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        flow = await new_flow(client)
        response = await flow.redeem(await flow.code())
        assert response.status_code == 200, response.text
