"""The permission catalog and the parsing of permission lists.

On the wire (Neucron) permissions are one comma-separated string; in OAuth 2.0
(``scope``) they are space-separated. Either way: surrounding spaces are trimmed,
duplicates folded (first occurrence wins the order), empty items rejected.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from grantd.core.errors import InvalidRequest, InvalidScope


# OpenID Connect Core 1.0 §5.4, §11: the standard scopes every app may ask for beside the catalog's
# permissions, in the words the consent and connected-apps pages show (``core.openid`` gives them
# their meaning).
STANDARD_SCOPES: dict[str, str] = {
    "openid": "Sign you in to the app and know it is you (your account's identifier)",
    "profile": "See your name, user name, profile picture and language",
    "email": "See your email address and whether it is verified",
    "phone": "See your phone number",
    "offline_access": "Keep access after you sign out, until you disconnect the app",
}


def parse(value: str, *, field: str = "permissions", separator: str = ",") -> tuple[str, ...]:
    items = value.split(separator) if separator != " " else value.split(" ")
    names: dict[str, None] = {}
    for item in items:
        name = item.strip()
        if not name:
            raise InvalidRequest(f"{field} must be a {_describe(separator)} list of permission names with no empty item.")
        names.setdefault(name, None)
    return tuple(names)


def _describe(separator: str) -> str:
    return "comma-separated" if separator == "," else "space-separated"


def join(names: Iterable[str]) -> str:
    return ",".join(names)


def union(current: Iterable[str], added: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys((*current, *added)))


@dataclass(frozen=True)
class Catalog:
    """Every permission an app may ask for, with the description a user is shown."""

    descriptions: Mapping[str, str]

    def describe(self, name: str) -> str:
        """What a user is shown for a scope: a permission of the catalog, or a standard scope of
        OpenID Connect (which the catalog cannot redefine)."""
        return STANDARD_SCOPES.get(name) or self.descriptions.get(name, name)

    def unknown(self, names: Iterable[str]) -> list[str]:
        return [n for n in names if n not in self.descriptions]

    def require_known(self, names: Iterable[str]) -> None:
        unknown = self.unknown(names)
        if unknown:
            raise InvalidScope(f"Unknown permission(s): {', '.join(unknown)}.")

    def still_allowed(self, granted: Iterable[str], allowed: Iterable[str]) -> tuple[str, ...]:
        """What of a grant an app may still use: its standard scopes (every app's), and its
        permissions that are still in the catalog and among the app's ``allowed`` ones. A grant
        outlives changes to both (a refresh token lives for weeks): what was taken from the app
        since is dropped, as an authorization request for it would be refused."""
        allowed_set = set(allowed)
        return tuple(
            name for name in granted
            if name in STANDARD_SCOPES or (name in self.descriptions and name in allowed_set)
        )

    def require_allowed(self, requested: Iterable[str], allowed: Iterable[str]) -> None:
        """Every requested permission must be in the catalog and in the app's allowed set."""
        requested = tuple(requested)
        self.require_known(requested)
        allowed_set = set(allowed)
        beyond = [n for n in requested if n not in allowed_set]
        if beyond:
            raise InvalidScope(f"Permission(s) not allowed for this app: {', '.join(beyond)}.")
