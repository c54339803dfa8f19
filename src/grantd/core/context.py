"""What every use case needs: settings, the database, hashing, signing, the catalog, the clock."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from grantd.config import Settings
from grantd.core import ratelimit
from grantd.core.key_use import KeyUse
from grantd.core.permissions import Catalog
from grantd.crypto.jws import KeySealer, Signer
from grantd.crypto.secrets import SecretHasher
from grantd.store.db import Database


@dataclass
class Context:
    settings: Settings
    db: Database
    hasher: SecretHasher
    sealer: KeySealer
    catalog: Catalog
    signer: Signer | None = field(default=None)
    limiter: ratelimit.RateLimiter = field(default=None)  # type: ignore[assignment]  # set by from_settings
    dpop_replays: Any = field(default=None)  # core.dpop's Redis store of used proofs, made on first use
    key_use: KeyUse = field(default_factory=KeyUse)  # the keys' last use, flushed now and then (core.key_use)

    @classmethod
    def from_settings(cls, settings: Settings) -> "Context":
        master = settings.master_secret
        db = Database(
            settings.resolved_database_url, pool_size=settings.db_pool_size, max_overflow=settings.db_max_overflow,
            timeout=settings.database_timeout,
        )
        hasher = SecretHasher(master)
        return cls(
            settings=settings,
            db=db,
            hasher=hasher,
            sealer=KeySealer(master),
            catalog=Catalog(dict(settings.permissions)),
            limiter=ratelimit.build(settings, db, lambda bucket: hasher.hash("rate limit " + bucket)),
        )

    @property
    def signing(self) -> Signer:
        if self.signer is None:
            raise RuntimeError("signing keys are not loaded; call grantd.core.signing_keys.load() first")
        return self.signer

    @staticmethod
    def now() -> int:
        return int(time.time())

    async def close(self) -> None:
        try:
            if self.limiter is not None:
                await self.limiter.close()
            if self.dpop_replays is not None:
                await self.dpop_replays.close()
        finally:
            await self.db.dispose()
