"""Hypothesis properties of the two parsers that read untrusted text: permission lists and redirect URIs."""

from __future__ import annotations

import os

import ipaddress
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from grantd.core import permissions
from grantd.core.errors import InvalidRequest
from grantd.core.redirect_uris import LOOPBACK_HOSTS, validate

# Exploratory on a developer's machine; the same examples every time in CI, so CI never flakes on a new find.
PROPERTY = settings(
    max_examples=300,
    deadline=None,
    database=None,
    derandomize=bool(os.environ.get("CI")),
    suppress_health_check=[HealthCheck.too_slow],
)

# A permission name: no separator, no surrounding white space, not empty.
names = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters=",", min_codepoint=33),
    min_size=1,
    max_size=20,
).map(str.strip).filter(bool)


@PROPERTY
@given(st.lists(names, min_size=1, max_size=10, unique=True))
def test_join_then_parse_gives_the_names_back(items: list[str]) -> None:
    assert permissions.parse(permissions.join(items)) == tuple(items)


@PROPERTY
@given(st.lists(names, min_size=1, max_size=10), st.lists(st.sampled_from([" ", "  ", "\t"]), min_size=2, max_size=2))
def test_duplicates_fold_keeping_the_first_order_and_spaces_are_trimmed(items: list[str], pad: list[str]) -> None:
    text = ",".join(f"{pad[0]}{name}{pad[1]}" for name in items)
    assert permissions.parse(text) == tuple(dict.fromkeys(items))


@PROPERTY
@given(st.lists(names, max_size=5), st.lists(names, max_size=5), st.sampled_from(["", " ", "\t", "  "]))
def test_an_empty_item_anywhere_is_rejected(before: list[str], after: list[str], empty: str) -> None:
    with pytest.raises(InvalidRequest):
        permissions.parse(",".join([*before, empty, *after]))


@PROPERTY
@given(st.lists(names, min_size=1, max_size=10))
def test_the_space_separated_scope_form_round_trips(items: list[str]) -> None:
    items = [name for name in items if " " not in name] or ["read_profile"]
    assert permissions.parse(" ".join(items), field="scope", separator=" ") == tuple(dict.fromkeys(items))


@PROPERTY
@given(st.text(max_size=200), st.sampled_from([",", " "]))
def test_arbitrary_text_parses_or_is_an_invalid_request(text: str, separator: str) -> None:
    try:
        parsed = permissions.parse(text, separator=separator)
    except InvalidRequest:
        return
    assert parsed and all(name and name == name.strip() and separator not in name for name in parsed)
    assert len(set(parsed)) == len(parsed)


# ---------------------------------------------------------------- redirect URIs

schemes = st.sampled_from(["https", "http", "HTTPS", "Http", "com.example.app", "javascript", "data", "ftp", "file", ""])
hosts = st.one_of(
    st.sampled_from(["app.example.com", "localhost", "127.0.0.1", "[::1]", "evil.example", "", "127.0.0.2", "[::2]"]),
    st.text(max_size=20),
)
uri_parts = st.tuples(
    schemes,
    st.sampled_from(["://", ":/", ":", ""]),
    st.sampled_from(["", "user@", "user:pass@", "@"]),
    hosts,
    st.sampled_from(["", ":8080", ":0", ":99999", ":x"]),
    st.one_of(st.sampled_from(["/cb", "/", "", "/a b", "/cb?x=1", "/cb#frag", "/%2e%2e/"]), st.text(max_size=30)),
)
uris = st.one_of(st.text(max_size=300), uri_parts.map("".join))


def _check_accepted(uri: str) -> None:
    assert 1 <= len(uri) <= 2000
    assert "#" not in uri, "a fragment was accepted"
    assert not any(c.isspace() for c in uri), "white space was accepted"
    assert not any(ord(c) < 0x20 or ord(c) == 0x7F for c in uri), "a control character was accepted"
    parts = urlsplit(uri)
    assert parts.username is None and parts.password is None and "@" not in parts.netloc, "user info was accepted"
    scheme = parts.scheme.lower()
    if scheme == "http":
        assert parts.hostname in LOOPBACK_HOSTS, f"http on a non-loopback host: {uri!r}"
    elif scheme == "https":
        assert parts.hostname, f"https without a host: {uri!r}"
    else:
        assert "." in scheme, f"neither https, loopback http, nor a private-use scheme: {uri!r}"
        assert scheme not in ("javascript", "data", "file")


@PROPERTY
@given(uris)
def test_validate_accepts_only_safe_uris_and_refuses_everything_else_with_invalid_request(uri: str) -> None:
    try:
        result = validate(uri)
    except InvalidRequest:
        return
    assert result == uri
    _check_accepted(uri)


@PROPERTY
@given(
    st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?){0,3}", fullmatch=True),
    st.from_regex(r"(/[A-Za-z0-9._~-]{0,12}){0,4}", fullmatch=True),
    st.sampled_from(["", ":443", ":8443"]),
)
def test_https_with_a_host_is_accepted(host: str, path: str, port: str) -> None:
    uri = f"https://{host}{port}{path}"
    assert validate(uri) == uri


@PROPERTY
@given(
    st.sampled_from(["localhost", "127.0.0.1", "[::1]"]),
    st.integers(min_value=1, max_value=65535),
    st.from_regex(r"(/[A-Za-z0-9._~-]{0,12}){0,3}", fullmatch=True),
)
def test_http_is_accepted_on_a_loopback_host(host: str, port: int, path: str) -> None:
    uri = f"http://{host}:{port}{path}"
    assert validate(uri) == uri


@PROPERTY
@given(st.one_of(st.ip_addresses(v=4), st.from_regex(r"[a-z]{1,10}\.(com|org|example)", fullmatch=True)))
def test_http_is_refused_on_any_other_host(host: object) -> None:
    text = str(host)
    if text in LOOPBACK_HOSTS or (isinstance(host, ipaddress.IPv4Address) and host.is_loopback and text == "127.0.0.1"):
        return
    with pytest.raises(InvalidRequest):
        validate(f"http://{text}/cb")


@PROPERTY
@given(st.sampled_from(["https://app.example.com/cb", "http://127.0.0.1:8080/cb", "com.example.app:/cb"]), st.text(max_size=20))
def test_a_fragment_or_user_info_is_always_refused(base: str, extra: str) -> None:
    with pytest.raises(InvalidRequest):
        validate(f"{base}#{extra}")
    scheme, _, rest = base.partition("://")
    if rest:
        with pytest.raises(InvalidRequest):
            # Without the delimiters that end the authority ("/", "?", "#"), everything before "@" is user info.
            user_info = extra.replace("/", "").replace("?", "").replace("#", "")
            validate(f"{scheme}://{user_info}@{rest}")
