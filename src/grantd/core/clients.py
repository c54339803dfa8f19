"""What a client is: an app of one of two types (RFC 6749 §2.1), and the caller proven to be one.

How a caller proves it is a client is ``grantd.core.client_auth``'s.
"""

from __future__ import annotations

from typing import NamedTuple

CONFIDENTIAL = "confidential"
PUBLIC = "public"
CLIENT_TYPES = (CONFIDENTIAL, PUBLIC)


class Client(NamedTuple):
    """The authenticated caller (immutable; a NamedTuple, which costs a request far less to build
    than a frozen dataclass)."""

    app_id: str
    key_id: str | None  # None for a public client
    # The app's permissions as read with its key (a live key of a live app), so that the
    # client_credentials grant needs no second read; None when not read.
    app_permissions: str | None = None

    @property
    def is_public(self) -> bool:
        return self.key_id is None
