"""What an app may register as a redirect URI (RFC 6749 §3.1.2, RFC 8252 §7, RFC 9700 §4.1).

Matching at authorization time (``matches``) is exact, character for character, except for the
port of an ``http`` redirect URI on a loopback IP literal (``127.0.0.1``, ``[::1]``): a native app
listens on whatever port it gets, so any port matches there (RFC 8252 §7.3). What may be
registered (``validate``):

- ``https://host/...``;
- ``http://`` only on a loopback host (``localhost``, ``127.0.0.1``, ``[::1]``), for native and local apps;
- a private-use scheme with a dot in it (``com.example.app:/callback``), for native apps;
- never a fragment, user info, white space or control characters.

The same rules hold for an app's ``post_logout_redirect_uris`` (OpenID Connect RP-Initiated Logout 1.0 §3.1).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

from grantd.core.errors import InvalidRequest

MAX_LENGTH = 2000
LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1"}
_PRIVATE_USE_SCHEME = re.compile(r"^[a-z][a-z0-9+\-]*(\.[a-z0-9+\-]+)+$")
_FORBIDDEN_CHARS = re.compile(r"[\s\x00-\x1f\x7f<>\"\\^`{|}]")
# http on a loopback IP literal, with or without a port: group 1 is the URI without its port.
_LOOPBACK_IP = re.compile(r"^(http://(?:127\.0\.0\.1|\[::1\]))(?::[0-9]{1,5})?([/?].*)?$")


def _without_loopback_port(uri: str) -> str | None:
    found = _LOOPBACK_IP.match(uri)
    return None if found is None else found.group(1) + (found.group(2) or "")


def matches(registered: Iterable[str], uri: str) -> bool:
    """Whether ``uri`` is one of the ``registered`` redirect URIs: the same characters, or, for
    ``http`` on a loopback IP literal, the same characters but the port (RFC 8252 §7.3)."""
    registered = list(registered)
    if uri in registered:
        return True
    portless = _without_loopback_port(uri)
    return portless is not None and any(_without_loopback_port(each) == portless for each in registered)


def validate(uri: str, field: str = "redirect_uris") -> str:
    """The URI itself when it may be registered; InvalidRequest saying why otherwise, naming
    ``field`` (the list it is an item of: ``redirect_uris`` or ``post_logout_redirect_uris``)."""
    if not uri or len(uri) > MAX_LENGTH:
        raise InvalidRequest(f"{field} items must be 1 to {MAX_LENGTH} characters.")
    if _FORBIDDEN_CHARS.search(uri):
        raise InvalidRequest(f"{field} items may not contain white space or control characters.")
    try:
        parts = urlsplit(uri)
        hostname = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise InvalidRequest(f"{field} item is not a valid URI: {uri}") from None
    scheme = parts.scheme.lower()
    if "#" in uri:
        raise InvalidRequest(f"{field} items may not have a fragment.")
    if parts.username is not None or parts.password is not None:
        raise InvalidRequest(f"{field} items may not carry user information.")
    if scheme == "https":
        if not hostname:
            raise InvalidRequest(f"{field} item has no host: {uri}")
        return uri
    if scheme == "http":
        if hostname not in LOOPBACK_HOSTS:
            raise InvalidRequest(f"http {field} are allowed only on a loopback host; use https.")
        return uri
    if _PRIVATE_USE_SCHEME.match(scheme) and uri.startswith(parts.scheme + ":"):
        return uri
    raise InvalidRequest(
        f"{field} item must be https, http on a loopback host, or a private-use scheme like com.example.app:/cb: {uri}"
    )
