"""Small wire helpers shared by the JSON dialect's modules."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, ConfigDict
from pydantic_core import PydanticCustomError


def rfc3339(timestamp: int | None) -> str | None:
    """``2024-07-09T22:02:52Z``, or None."""
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# Request models: strict types (no "1" for 1 or 1 for "1"), unknown fields ignored.
STRICT = ConfigDict(strict=True, extra="ignore")


def _no_nul(value: str) -> str:
    # No identifier, secret, state or URI contains U+0000, and PostgreSQL text cannot hold it.
    if "\x00" in value:
        raise PydanticCustomError("string_nul", "String must not contain the NUL character")
    return value


# A string from the wire that may reach the database: U+0000 is refused as invalid_request.
# NO_NUL goes after any length constraint (``Annotated[str, Path(max_length=64), NO_NUL]``).
NO_NUL = AfterValidator(_no_nul)
Text = Annotated[str, NO_NUL]
