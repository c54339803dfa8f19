"""Small wire helpers shared by the JSON dialect's modules."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import ConfigDict


def rfc3339(timestamp: int | None) -> str | None:
    """``2024-07-09T22:02:52Z``, or None."""
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# Request models: strict types (no "1" for 1 or 1 for "1"), unknown fields ignored.
STRICT = ConfigDict(strict=True, extra="ignore")
