"""Reading a ``WWW-Authenticate`` header as a client does (RFC 9110 §11.6.1): its challenges by
scheme, each with its auth-params. grantd.sdk writes every auth-param as a quoted string."""

from __future__ import annotations

import re

_PARAM = re.compile(r'\s*(?:([A-Za-z][A-Za-z0-9!#$%&\'*+.^_`|~-]*)\s+)?([A-Za-z_]+)="((?:[^"\\]|\\.)*)"\s*(,|$)')


def parse_challenges(header: str) -> dict[str, dict[str, str]]:
    """``{scheme: {param: value}}``; AssertionError when the header is not a list of challenges whose
    auth-params are all quoted strings, or names a scheme twice."""
    challenges: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    position = 0
    while position < len(header):
        match = _PARAM.match(header, position)
        assert match, f"not a list of challenges with quoted auth-params at {position}: {header!r}"
        scheme, name, value, _ = match.groups()
        if scheme is not None:
            assert scheme not in challenges, f"{scheme} twice: {header!r}"
            current = challenges[scheme] = {}
        assert current is not None and name not in current, header
        current[name] = re.sub(r"\\(.)", r"\1", value)
        position = match.end()
    return challenges
