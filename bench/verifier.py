"""The SDK's side of the benchmark: access tokens verified per second on one core.

`make bench` runs this pinned to one CPU against the grantd it started, with tokens that grantd
issued; it can also run alone against any grantd:

    python bench/verifier.py --issuer http://127.0.0.1:8000 --tokens tokens.txt [--seconds 2]

(``tokens.txt``: one access token a line). It prints one JSON object: tokens per second for

- ``floor``: the ES256 signature check alone (``cryptography``, the same public key and tokens),
  the part no verifier can skip;
- ``verify_new``: ``TokenVerifier.verify`` on tokens it has not seen (its cache of verified tokens
  turned off), everything the SDK checks: header, signature, iss, aud, times, claims;
- ``verify_again``: ``TokenVerifier.verify`` on a token it verified before, as when a client calls
  an API many times with one token (the default cache);
- ``averify_again``: the same through ``await averify``.

Every token must verify, in every mode, or the run fails.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from grantd.sdk import TokenVerifier

_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())


def _b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _rate(step: Callable[[int], None], seconds: float) -> float:
    """Calls of ``step(i)`` per second, run for about ``seconds`` (checked every 100 calls)."""
    done = 0
    started = time.perf_counter()
    deadline = started + seconds
    while True:
        for i in range(done, done + 100):
            step(i)
        done += 100
        now = time.perf_counter()
        if now >= deadline:
            return done / (now - started)


def signature_floor(issuer: str, tokens: list[str], seconds: float) -> float:
    """ES256 checks of the tokens' signatures with nothing else: decode, then ``cryptography``."""
    kid = json.loads(_b64decode(tokens[0].split(".")[0]))["kid"]
    jwks = httpx.get(issuer + "/.well-known/jwks.json").raise_for_status().json()
    key = next(jwt.PyJWK(jwk).key for jwk in jwks["keys"] if jwk["kid"] == kid)

    def step(i: int) -> None:
        token = tokens[i % len(tokens)]
        signing_input, _, signature = token.rpartition(".")
        raw = _b64decode(signature)
        der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
        key.verify(der, signing_input.encode("ascii"), _ECDSA_SHA256)

    return _rate(step, seconds)


def measure(issuer: str, tokens: list[str], seconds: float) -> dict[str, float]:
    if len(tokens) < 2:
        raise SystemExit("need at least two tokens")
    results: dict[str, float] = {}
    with TokenVerifier(issuer, cache_size=0) as fresh, TokenVerifier(issuer) as cached:
        fresh.refresh_keys()
        cached.refresh_keys()
        for token in tokens:  # every one must verify before anything is timed
            fresh.verify(token)
        results["floor"] = signature_floor(issuer, tokens, seconds)
        results["verify_new"] = _rate(lambda i: fresh.verify(tokens[i % len(tokens)]), seconds)
        results["verify_again"] = _rate(lambda i: cached.verify(tokens[0]), seconds)

        async def again() -> float:
            count = 0
            started = time.perf_counter()
            while time.perf_counter() - started < seconds:
                for _ in range(100):
                    await cached.averify(tokens[0])
                count += 100
            return count / (time.perf_counter() - started)

        results["averify_again"] = asyncio.run(again())
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--issuer", required=True)
    parser.add_argument("--tokens", type=Path, required=True, help="a file of access tokens, one a line")
    parser.add_argument("--seconds", type=float, default=2.0, help="how long each mode runs")
    args = parser.parse_args()
    tokens = [line.strip() for line in args.tokens.read_text().splitlines() if line.strip()]
    json.dump(measure(args.issuer, tokens, args.seconds), sys.stdout)
    print()


if __name__ == "__main__":
    main()
