"""How a person signed in, as RFC 8176 names authentication methods: the ``amr`` of a session,
carried to the codes, refresh tokens and device codes issued from it, and to ID tokens.

A session stores its methods space-separated, and a password alone as NULL (the rows from
before sessions recorded how: they were all signed in with a password).
"""

from __future__ import annotations

PASSWORD_AMR = ("pwd",)  # RFC 8176 §2: a password


def stored_amr(amr: tuple[str, ...]) -> str | None:
    """``amr`` as a row stores it."""
    return None if tuple(amr) == PASSWORD_AMR else " ".join(amr)


def amr_claim(stored: str | None) -> list[str]:
    """The ``amr`` claim of what a row stores."""
    return stored.split(" ") if stored else list(PASSWORD_AMR)
