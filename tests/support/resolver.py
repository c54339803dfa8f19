"""A process resolver for test host names (``*.rebind.test``): each test says what they resolve
to, and a second resolution may answer differently, as a rebinding DNS server would. Every other
name is resolved by the system, so the rest of the fetch is the real path.

Used by the tests of the safe fetcher of ``jwks_uri`` (tests/test_jwks_rebinding.py) and of client
ID metadata documents (tests/test_client_id_metadata.py)."""

from __future__ import annotations

import socket
from typing import Any

import pytest


class Resolver:
    """The process's resolver (``socket.getaddrinfo``, which asyncio's resolution calls) answering
    for ``*.rebind.test`` with ``answers``, one list per call (the last one again once they run
    out), IPv4 and IPv6 addresses alike; any other name as the system does. Whatever resolves a
    name again gets the next answer."""

    def __init__(self, system: Any, *answers: list[str]) -> None:
        self.system, self.answers, self.calls = system, list(answers), 0

    def __call__(self, host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if not name.endswith(".rebind.test"):
            return self.system(host, port, family, type, proto, flags)
        self.calls += 1
        addresses = self.answers[min(self.calls, len(self.answers)) - 1]
        if not addresses:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, int(port or 0), 0, 0))
            if ":" in address
            else (socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, int(port or 0)))
            for address in addresses
        ]


def install(monkeypatch: pytest.MonkeyPatch, *answers: list[str]) -> Resolver:
    """Make ``*.rebind.test`` resolve to ``answers`` (see ``Resolver``) until the test ends."""
    fake = Resolver(socket.getaddrinfo, *answers)
    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return fake
