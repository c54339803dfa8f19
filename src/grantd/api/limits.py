"""The request body limits, in one place: a size cap (413) and a timeout on slow bodies (408).

- A body larger than ``max_bytes`` is refused with 413: at once when its ``Content-Length``
  says so, else as soon as the bytes read pass the cap.
- Each chunk of the body must arrive within ``timeout`` seconds of the previous one (or of the
  first read): a client that stalls mid-body gets 408 instead of holding a worker. Once the
  body is complete, ``receive`` is passed through untouched (it then only waits for the client
  to disconnect).

``BodySizeLimit`` and ``BodyReadTimeout`` apply them to every route FastAPI serves; the hot
routes (``grantd.api.hot``) read their own bodies with the same functions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from grantd.api.errors import Dialect, render
from grantd.core.errors import PayloadTooLarge


def too_large(max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"Request body is larger than {max_bytes} bytes.")


def declared_too_large(content_length: bytes | None, max_bytes: int) -> bool:
    """Whether a ``Content-Length`` header value refuses the body before it is read."""
    return content_length is not None and (not content_length.isdigit() or int(content_length) > max_bytes)


def timed_out(timeout: float) -> HTTPException:
    return HTTPException(408, f"The request body did not arrive within {timeout:g} seconds.")


class _Expiry:
    """A timer that cancels the task awaiting a message, and remembers that it did."""

    __slots__ = ("task", "fired")

    def __init__(self, task: asyncio.Task[object]) -> None:
        self.task, self.fired = task, False

    def __call__(self) -> None:
        self.fired = True
        self.task.cancel()


async def receive_within(timeout: float, receive: Receive) -> Message | None:
    """The next message, or None when it did not come within ``timeout`` seconds. (What
    ``asyncio.timeout`` does, with one timer handle: a token request pays for it once.)"""
    expiry = _Expiry(asyncio.current_task())  # type: ignore[arg-type]
    timer = asyncio.get_running_loop().call_later(timeout, expiry)
    try:
        return await receive()
    except asyncio.CancelledError:
        if expiry.fired and expiry.task.uncancel() == 0:
            return None
        raise
    finally:
        timer.cancel()


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
            message = await receive_within(self.timeout, receive)
            if message is None:
                body_complete = True
                raise timed_out(self.timeout)
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_complete = True
            return message

        await self.app(scope, timed_receive, send)


class BodySizeLimit:
    """Refuses request bodies over the limit with 413 before the application reads them; a body
    refused by its ``Content-Length`` is answered here, before routing, in ``dialect_of(path)``."""

    def __init__(self, app: ASGIApp, max_bytes: int, dialect_of: Callable[[str], Dialect]) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.dialect_of = dialect_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for key, value in scope["headers"]:
            if key == b"content-length":
                if declared_too_large(value, self.max_bytes):
                    response = render(self.dialect_of(scope["path"]), too_large(self.max_bytes))
                    response.headers["Connection"] = "close"
                    await response(scope, receive, send)
                    return
                break
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # An HTTPException: FastAPI passes it through its body parsing, which would turn
                    # any other exception into a 400 "error parsing the body".
                    raise HTTPException(413, too_large(self.max_bytes).message)
            return message

        await self.app(scope, limited_receive, send)
