"""A timeout on slow request bodies: a client that stalls mid-body gets 408 instead of holding a worker.

Each chunk of the body must arrive within ``timeout`` seconds of the previous one (or of the
first read). Once the body is complete, ``receive`` is passed through untouched (it then
only waits for the client to disconnect).
"""

from __future__ import annotations

import asyncio

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyReadTimeout:
    def __init__(self, app: ASGIApp, timeout: float) -> None:
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body_complete = False

        async def timed_receive() -> Message:
            nonlocal body_complete
            if body_complete:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.timeout)
            except asyncio.TimeoutError:
                body_complete = True
                raise HTTPException(408, f"The request body did not arrive within {self.timeout:g} seconds.") from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_complete = True
            return message

        await self.app(scope, timed_receive, send)
