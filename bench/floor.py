"""The floor: a raw ASGI app returning fixed JSON, served the same way as grantd (uvicorn, uvloop, httptools)."""

BODY = b'{"data":{"access_token":"x"},"status_code":200}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope, receive, send):  # type: ignore[no-untyped-def]
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
