"""User passwords: argon2id (argon2-cffi), hashed off the event loop.

Each hash takes argon2-cffi's default 64 MiB and a few tens of milliseconds, so at most
``CONCURRENT_HASHES`` run at once in a process: a burst of sign-ups or log-ins waits its turn
instead of taking a gigabyte of memory and every core.
"""

from __future__ import annotations

import asyncio
import threading
import weakref

import anyio
import anyio.to_thread
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

CONCURRENT_HASHES = 4

_hasher = PasswordHasher()  # argon2id, RFC 9106 low-memory profile defaults
_limiters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, anyio.CapacityLimiter] = weakref.WeakKeyDictionary()
_dummy_hash: str | None = None
_dummy_lock = threading.Lock()


def _capacity() -> anyio.CapacityLimiter:
    """This event loop's limiter (one per loop: a limiter belongs to the loop it waits on)."""
    loop = asyncio.get_running_loop()
    limiter = _limiters.get(loop)
    if limiter is None:
        limiter = _limiters[loop] = anyio.CapacityLimiter(CONCURRENT_HASHES)
    return limiter


def _dummy() -> str:
    """Verified against when the email is unknown, so that a wrong email costs the same time as a
    wrong password and log-in does not tell which accounts exist. Made on first use (in a worker
    thread), not at import: a server starts without spending a hash."""
    global _dummy_hash
    if _dummy_hash is None:
        with _dummy_lock:
            if _dummy_hash is None:
                _dummy_hash = _hasher.hash("grantd: no such account")
    return _dummy_hash


async def hash_password(password: str) -> str:
    return await anyio.to_thread.run_sync(_hasher.hash, password, limiter=_capacity())


def _verify(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _dummy(), password) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


async def verify_password(password_hash: str | None, password: str) -> bool:
    """True when ``password`` matches; with ``password_hash=None`` spends the same time and says False."""
    return await anyio.to_thread.run_sync(_verify, password_hash, password, limiter=_capacity())
