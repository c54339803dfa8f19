"""The whole-suite secret scan: every secret the suite creates or sends is kept, and after the
last test every place it could have landed is searched for it (issue 6: "after the whole suite
runs, no secret, password, code or token created in it appears in any log line or database
column in clear").

A pytest plugin (``pytest_plugins`` in conftest.py). It harvests:

- every HTTP exchange of the suite, wherever it goes (the in-process app over httpx's ASGI
  transport, real ``grantd serve`` processes, the SDK's calls, Authlib's over requests): from
  the request, passwords, client secrets, codes, PKCE verifiers and tokens in JSON and form
  bodies and in the query, and the credentials of the ``Authorization`` header; from the
  response, every token, code, app key, key secret and refresh token in JSON and form bodies,
  in HTML (by their shapes), in the ``Location`` of a redirect and in the session cookie;
- what the command line prints (``grantd apps create`` hands out an app key) and is given
  (``--password``), and what shell scripts print (the README walkthrough's curl answers);
- the private scalar of every signing key sealed in this process, and the session's master secret.

The places: every SQLite database file the suite left under pytest's base temporary directory
(and under the project's ``var/`` if written during the run), with its ``-wal``, ``-shm`` and
``-journal`` files, as raw bytes (free pages included); every ``*.log`` file there (the stdout
and stderr of every server process the suite starts); every PostgreSQL database the suite
created (conftest registers each before any test uses it; it is dropped only after the last
test), every row of every table as text; the records logged in this process (a root handler
writes each, formatted as a deployment would, to a file); and the stderr of every ``grantd``
command run.

The final test (``test_secret_scan.py``, moved to the end of the run) searches them all, for
each secret in its plain form, URL-encoded, JSON-escaped and as hex (how PostgreSQL renders a
``bytea``), and for the random part alone of a secret that embeds public data.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, quote_plus, unquote, unquote_plus, urlsplit

import ahocorasick
import pytest

ROOT = Path(__file__).resolve().parent.parent
MARKER = "secret_scan_last"

# Request and response fields that carry a secret, and the kind each is counted as.
SECRET_FIELDS: Mapping[str, str] = {
    "password": "password",
    "new_password": "password",
    "current_password": "password",
    "client_secret": "key_secret",
    "key_secret": "key_secret",
    "app_key": "app_key",
    "code": "code",
    "auth_code": "code",
    "code_verifier": "code_verifier",
    "refresh_token": "refresh_token",
    "access_token": "token",
    "id_token": "token",
    "token": "token",
    "request_uri": "request_uri",  # RFC 9126: stands for a pushed request; stored only as a keyed hash
    "device_code": "device_code",  # RFC 8628: the device's, stored only as a keyed hash
}
SESSION_COOKIE = "grantd_session"
# Request fields whose values are public by design, which grantd may store or echo. A test may
# send the same value in a secret's place, to show it is refused (a PKCE challenge as its own
# verifier, an odd unicode ``state`` as an app key): a value the suite sent as public is no
# secret it created. This never excuses a secret grantd issued (in a response, or to the CLI).
PUBLIC_FIELDS = frozenset(
    {"code_challenge", "state", "email", "name", "redirect_uri", "client_id", "app_id", "key_id", "user_id", "scope", "permissions"}
)

# Shapes of grantd's secrets, to find them in any text (an HTML page, a CLI's output).
_SHAPES = (
    ("app_key", re.compile(r"gak_[A-Za-z0-9_-]{43}")),
    ("key_secret", re.compile(r"gks_[0-9a-f]{16}_[A-Za-z0-9_-]{43}")),
    ("token", re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,}")),
)
_JSON_FIELD = re.compile(r'"(' + "|".join(SECRET_FIELDS) + r')"\s*:\s*"((?:[^"\\]|\\.){12,4096})"')
_URL_FIELD = re.compile(r"[?&#](code|access_token|refresh_token|id_token)=([A-Za-z0-9_.~%-]{16,})")
# Public values a test may send in a secret's place (to show it is refused): never secrets.
_PUBLIC = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|key_[0-9a-f]{16}|[^@\s]+@[^@\s]+|https?://\S*",
    re.I,
)
MIN_LENGTH = 16  # tokens, codes, keys: a shorter value ("x", "nonsense") is a test's placeholder
MIN_PASSWORD_LENGTH = 12
MIN_DISTINCT = 6  # "aaaaaaaaaaaa" is a weak-password test's input; a chance match would be no leak


@dataclass
class Secret:
    value: str
    kind: str
    test: str  # the test during which it was first seen
    how: str  # where in that test: "response of POST /v1/apps", "request to …", "CLI output", …
    extra_forms: list[bytes] = field(default_factory=list)  # binary forms (a signing key's scalar)
    issued: bool = True  # handed out by grantd (or made by it); False: only ever sent by a test

    def prefix(self) -> str:
        return f"{self.value[:8]}…({len(self.value)} chars)"

    def forms(self) -> dict[str, bytes]:
        """The byte strings that betray this secret, by name."""
        raw = self.value.encode("utf-8", "surrogatepass")
        found: dict[str, bytes] = {"plain": raw}
        for name, form in (
            ("url-encoded", quote(self.value, safe="")),
            ("form-encoded", quote_plus(self.value, safe="")),
            ("json-escaped", json.dumps(self.value)[1:-1]),
        ):
            if form != self.value:
                found[name] = form.encode()
        found["hex"] = raw.hex().encode()
        random_part = _random_part(self.value)
        if random_part:
            found["random part"] = random_part.encode()
        for i, form in enumerate(self.extra_forms):
            found[f"binary {i}"] = form
        return {name: form for name, form in found.items() if len(form) >= MIN_PASSWORD_LENGTH}


def _random_part(value: str) -> str | None:
    """The random tail of a secret that embeds public data (a key id, a JWT's header and claims)."""
    if value.startswith("gak_"):
        return value[4:]
    if value.startswith("gks_") and value.count("_") >= 2:
        return value.split("_", 2)[2]
    if value.count(".") == 2 and value.startswith("eyJ"):
        signature = value.rsplit(".", 1)[1]
        return signature if len(signature) >= MIN_LENGTH else None
    return None


def _kind_of_jwt(token: str) -> str:
    try:
        header = json.loads(base64.urlsafe_b64decode(token.split(".", 1)[0] + "=="))
    except (ValueError, binascii.Error):
        return "token"
    return "access_token" if header.get("typ") in ("at+jwt", "application/at+jwt") else "user_token"


class Harvest:
    """Every secret seen so far, and every place to search."""

    def __init__(self) -> None:
        self.secrets: dict[str, Secret] = {}
        self.public: set[str] = set()  # values of PUBLIC_FIELDS seen in requests
        self.postgres_urls: list[str] = []
        self.current_test = "(session start)"
        self.started = time.time()
        self.scan_dir: Path | None = None  # pytest's basetemp/secret-scan: the in-process log, CLI stderr
        self.base_temp: Path | None = None
        self.whole_suite = False
        self.selection = ""
        self._lock = threading.Lock()

    # ------------------------------------------------------------ keeping secrets

    def keep(self, kind: str, value: Any, how: str, *, extra_forms: Iterable[bytes] = (), issued: bool = True) -> None:
        if not isinstance(value, str) or "\x00" in value:
            return
        is_password = kind == "password"
        if len(value) < (MIN_PASSWORD_LENGTH if is_password else MIN_LENGTH) or len(set(value)) < MIN_DISTINCT:
            return
        if _PUBLIC.fullmatch(value.strip()):
            return
        if kind in ("token", "bearer") and value.startswith("eyJ") and value.count(".") == 2:
            kind = _kind_of_jwt(value)
        with self._lock:
            known = self.secrets.get(value)
            if known is None:
                self.secrets[value] = Secret(value, kind, self.current_test, how, list(extra_forms), issued)
            elif issued and not known.issued:
                known.issued = True

    def keep_fields(self, data: Any, how: str, *, public: Iterable[str] = (), issued: bool = True) -> None:
        """Every secret-named field of a JSON document or form, at any depth."""
        stack = [data]
        public_values = {p.lower() for p in public if p}
        while stack:
            item = stack.pop()
            if isinstance(item, dict):
                for name, value in item.items():
                    if isinstance(value, dict | list):
                        stack.append(value)
                    elif isinstance(name, str) and name.lower() in PUBLIC_FIELDS and isinstance(value, str):
                        if not issued:
                            self.public.add(value)
                    elif isinstance(name, str) and name.lower() in SECRET_FIELDS and isinstance(value, str):
                        kind = SECRET_FIELDS[name.lower()]
                        if kind == "password" and any(value.lower() in p or p in value.lower() for p in public_values):
                            continue  # a password made of the account's own email is public already
                        self.keep(kind, value, how, issued=issued)
            elif isinstance(item, list):
                stack.extend(item)

    def keep_text(self, text: str, how: str, *, fields: bool = True, issued: bool = True) -> None:
        """Secrets found in free text by their shapes, in URLs, and (``fields``) by their JSON field names."""
        for kind, shape in _SHAPES:
            for match in shape.finditer(text):
                self.keep(kind, match.group(0), how, issued=issued)
        for match in _URL_FIELD.finditer(text):
            self.keep(SECRET_FIELDS[match.group(1)], unquote_plus(match.group(2)), how, issued=issued)
        if not fields:
            return
        for match in _JSON_FIELD.finditer(text):
            try:
                value = json.loads(f'"{match.group(2)}"')
            except ValueError:
                continue
            self.keep(SECRET_FIELDS[match.group(1)], value, how, issued=issued)

    def keep_authorization(self, header: str | None, how: str) -> None:
        """The credentials a test sent (never issued by this header itself)."""
        if not header:
            return
        scheme, _, credentials = header.strip().partition(" ")
        credentials = credentials.strip()
        if scheme.lower() == "basic" and credentials:
            self.keep("basic_credentials", credentials, how, issued=False)
            try:
                decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
            except (ValueError, binascii.Error):
                return
            _, sep, secret = decoded.partition(":")
            if sep:
                self.keep("key_secret", unquote_plus(secret), how, issued=False)
        elif scheme.lower() == "bearer":
            self.keep("bearer", credentials, how, issued=False)
        elif not credentials:  # the Neucron API also takes a bare token
            self.keep("bearer", scheme, how, issued=False)

    def keep_body(self, content: bytes, content_type: str, how: str, *, issued: bool) -> None:
        if not content or len(content) > 2_000_000:
            return
        text = content.decode("utf-8", "replace")
        media = content_type.split(";")[0].strip().lower()
        parsed = False
        if media == "application/x-www-form-urlencoded":
            form = dict(parse_qsl(text, keep_blank_values=True))
            self.keep_fields(form, how, public=[form.get("email", ""), form.get("username", "")], issued=issued)
            parsed = True
        elif media.endswith("json"):
            try:
                data = json.loads(text)
                parsed = True
            except (ValueError, RecursionError):  # the deep-nesting tests send 10,000 brackets
                data = None
            email = _email_of(data)
            self.keep_fields(data, how, public=[email] if email else [], issued=issued)
        self.keep_text(text, how, fields=not parsed, issued=issued)

    def keep_url(self, url: str, how: str, *, issued: bool) -> None:
        parts = urlsplit(url)
        if not issued:
            # Path segments are public (an app id, a key id) and grantd logs the path; the
            # schema fuzzer may send one same random string as a path segment and a bearer token.
            # So is a whole path: Hypothesis draws strings from the constants of the code under
            # test, and has sent a route's path (``/oauth2/introspect``) as a bearer token.
            self.public.update(unquote(segment) for segment in parts.path.split("/") if segment)
            self.public.add(unquote(parts.path))
        for part in (parts.query, parts.fragment):
            if part:
                self.keep_fields(dict(parse_qsl(part, keep_blank_values=True)), how, issued=issued)

    # ------------------------------------------------------------ HTTP exchanges

    def httpx_exchange(self, request: Any, response: Any | None, streamed: bool) -> None:
        exchanges = [(r.request, r) for r in (response.history if response is not None else [])]
        exchanges.append((response.request if response is not None else request, response))
        for req, resp in exchanges:
            try:
                self._request(req.method, str(req.url), req.headers, _httpx_content(req))
                if resp is not None:
                    body = b"" if (streamed and resp is response) else _httpx_content(resp)
                    self._response(req.method, str(req.url), resp.headers, resp.headers.get_list("set-cookie"), body)
            except Exception as exc:  # noqa: BLE001 - the harvest must never break a test
                _harvest_error(exc)

    def requests_exchange(self, prepared: Any, response: Any | None, streamed: bool) -> None:
        exchanges = [(r.request, r) for r in (response.history if response is not None else [])]
        exchanges.append((response.request if response is not None else prepared, response))
        for req, resp in exchanges:
            try:
                body = req.body.encode() if isinstance(req.body, str) else (req.body or b"")
                self._request(req.method, req.url, req.headers, body if isinstance(body, bytes) else b"")
                if resp is not None:
                    cookies = resp.raw.headers.getlist("set-cookie") if hasattr(resp.raw, "headers") else []
                    body = b"" if (streamed and resp is response) else (resp.content or b"")
                    self._response(req.method, req.url, resp.headers, cookies, body)
            except Exception as exc:  # noqa: BLE001
                _harvest_error(exc)

    def _request(self, method: str, url: str, headers: Mapping[str, str], content: bytes) -> None:
        how = f"request {method} {urlsplit(url).path}"
        self.keep_url(url, how, issued=False)
        self.keep_authorization(headers.get("authorization"), how)
        self.keep_body(content, headers.get("content-type", ""), how, issued=False)

    def _response(self, method: str, url: str, headers: Mapping[str, str], cookies: list[str], content: bytes) -> None:
        how = f"response to {method} {urlsplit(url).path}"
        location = headers.get("location")
        if location:
            self.keep_url(location, how, issued=True)
        for cookie in cookies:
            name, _, rest = cookie.partition("=")
            if name.strip() == SESSION_COOKIE:
                self.keep("user_token", rest.split(";", 1)[0].strip().strip('"'), how)
        self.keep_body(content, headers.get("content-type", ""), how, issued=True)

    # ------------------------------------------------------------ other sources

    def command(self, args: Any, result: subprocess.CompletedProcess[Any]) -> None:
        argv = [str(a) for a in args] if isinstance(args, list | tuple) else [str(args)]
        how = f"command {' '.join(os.path.basename(a) for a in argv[:4])[:80]}"
        for flag, value in zip(argv, argv[1:]):
            if flag in ("--password", "--client-secret", "--key-secret"):
                self.keep("password" if flag == "--password" else "key_secret", value, how, issued=False)
        for stream in (result.stdout, result.stderr):
            if isinstance(stream, bytes):
                stream = stream.decode("utf-8", "replace")
            if isinstance(stream, str):
                self.keep_text(stream, how)
        if self.scan_dir is not None and any("grantd" in a for a in argv[:4]) and result.stderr:
            stderr = result.stderr if isinstance(result.stderr, bytes) else str(result.stderr).encode()
            with open(self.scan_dir / "cli-stderr.log", "ab") as log:
                log.write(stderr + b"\n")

    def signing_key(self, key: Any) -> None:
        """The private scalar of an EC key; the private exponent and both primes of an RSA key."""
        numbers = key.private_numbers()
        if hasattr(numbers, "private_value"):
            secrets = [numbers.private_value.to_bytes(32, "big")]
        else:
            secrets = [value.to_bytes((value.bit_length() + 7) // 8, "big") for value in (numbers.d, numbers.p, numbers.q)]
        for d in secrets:
            as_b64 = base64.urlsafe_b64encode(d).rstrip(b"=").decode()
            self.keep("signing_key", as_b64, "process: a signing key sealed in it", extra_forms=[d, d.hex().encode()])

    def counts(self) -> Counter[str]:
        return Counter(secret.kind for secret in list(self.secrets.values()))

    def sources(self) -> Counter[str]:
        """Where the secrets were first seen: a response, a request, a command's output, this process."""
        return Counter(secret.how.split(" ", 1)[0] for secret in list(self.secrets.values()))


def _email_of(data: Any) -> str | None:
    if isinstance(data, dict):
        for value in data.values():
            if isinstance(value, dict):
                found = _email_of(value)
                if found:
                    return found
        email = data.get("email")
        return email if isinstance(email, str) else None
    return None


def _httpx_content(message: Any) -> bytes:
    try:
        return bytes(message.content)
    except Exception:  # noqa: BLE001 - a streamed body not read: nothing to harvest
        return b""


_errors: list[str] = []


def _harvest_error(exc: Exception) -> None:
    if len(_errors) < 20:
        _errors.append(f"{exc.__class__.__name__}: {exc}")


HARVEST = Harvest()


# ---------------------------------------------------------------- the places and the scanner


@dataclass(frozen=True)
class Finding:
    place: str
    kind: str
    prefix: str
    form: str
    test: str
    how: str

    def __str__(self) -> str:
        return f"{self.place}: {self.kind} {self.prefix} as {self.form} (first seen in {self.test}, {self.how})"


class Scanner:
    """One Aho-Corasick automaton over every form of every secret: each place is read once.

    ``controls`` are public values (an app id, say) that must be found in some places: each
    place where one is seen is recorded in ``seen``, proof that the scan read the right bytes.
    """

    def __init__(self, secrets: Iterable[Secret], controls: Mapping[str, str] | None = None) -> None:
        self.automaton = ahocorasick.Automaton()
        self.needles = 0
        self.seen: dict[str, set[str]] = {name: set() for name in controls or {}}
        for name, value in (controls or {}).items():
            self.automaton.add_word(value, (None, name))
        for secret in secrets:
            for form_name, form in secret.forms().items():
                key = form.decode("latin-1")  # bytes to str one to one: the automaton searches str
                if key not in self.automaton:
                    self.automaton.add_word(key, (secret, form_name))
                    self.needles += 1
        if len(self.automaton):
            self.automaton.make_automaton()

    def scan_bytes(self, place: str, data: bytes) -> list[Finding]:
        if not len(self.automaton) or not data:
            return []
        forms: dict[str, set[str]] = {}
        secrets: dict[str, Secret] = {}
        for _end, (secret, form) in self.automaton.iter(data.decode("latin-1")):
            if secret is None:
                self.seen[form].add(place)
                continue
            secrets[secret.value] = secret
            forms.setdefault(secret.value, set()).add(form)
        return [
            Finding(place, s.kind, s.prefix(), ", ".join(sorted(forms[value])), s.test, s.how)
            for value, s in secrets.items()
        ]

    def scan_file(self, path: Path) -> list[Finding]:
        try:
            data = path.read_bytes()
        except FileNotFoundError:  # a -wal file checkpointed away since it was listed
            return []
        return self.scan_bytes(str(path), data)

    async def scan_postgres(self, url: str) -> tuple[list[Finding], dict[str, int]]:
        """Every row of every table of every schema but the system's, as text; the rows read per table."""
        import asyncpg

        dsn = url.replace("postgresql+asyncpg://", "postgresql://", 1)
        conn = await asyncpg.connect(dsn, timeout=10)
        findings: list[Finding] = []
        rows_read: dict[str, int] = {}
        try:
            tables = await conn.fetch(
                "SELECT table_schema, table_name FROM information_schema.tables "
                "WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema') "
                "ORDER BY 1, 2"
            )
            database = dsn.rsplit("/", 1)[1]
            for schema, table in tables:
                quoted = ".".join('"' + part.replace('"', '""') + '"' for part in (schema, table))
                rows = await conn.fetch(f"SELECT t::text FROM {quoted} t")
                rows_read[f"{schema}.{table}"] = len(rows)
                text = "\n".join(row[0] for row in rows)
                findings += self.scan_bytes(f"postgres {database} {schema}.{table}", text.encode("utf-8", "surrogatepass"))
        finally:
            await conn.close()
        return findings, rows_read


SQLITE_MAGIC = b"SQLite format 3\x00"
SQLITE_SIDECARS = ("-wal", "-shm", "-journal")


def is_sqlite(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(16) == SQLITE_MAGIC
    except OSError:
        return False


def files_to_scan(roots: Iterable[Path], since: float | None = None) -> tuple[list[Path], list[Path]]:
    """(SQLite database files with their -wal/-shm/-journal files, log files) under ``roots``."""
    databases: set[Path] = set()
    logs: set[Path] = set()
    for root in roots:
        if not root.is_dir():
            continue
        for path in root.rglob("*"):
            if not path.is_file() or path.is_symlink() or "node_modules" in path.parts:
                continue
            if since is not None and path.stat().st_mtime < since:
                continue
            if path.name.endswith(".log"):
                logs.add(path)
            elif is_sqlite(path):
                databases.add(path)
                databases.update(p for p in (Path(f"{path}{s}") for s in SQLITE_SIDECARS) if p.exists())
            elif path.name.endswith(SQLITE_SIDECARS):
                databases.add(path)  # a -wal of a database whose main file is still empty
    return sorted(databases), sorted(logs)


# ---------------------------------------------------------------- the pytest plugin


class _FileHandler(logging.Handler):
    """Every record logged in this process, formatted as grantd formats its log, appended to a file."""

    def __init__(self, path: Path) -> None:
        super().__init__(logging.DEBUG)
        from grantd import logs

        self.setFormatter(logs.formatter("json"))
        self.stream = open(path, "a", encoding="utf-8")

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # noqa: BLE001 - formatting is grantd's; keep the raw message then
            line = record.getMessage()
        self.stream.write(line + "\n")  # Handler.handle holds self.lock around emit
        self.stream.flush()


_handler: _FileHandler | None = None
_originals: list[tuple[Any, str, Any]] = []


def _patch(owner: Any, name: str, wrapper: Any) -> None:
    _originals.append((owner, name, getattr(owner, name)))
    setattr(owner, name, wrapper)


def _install_http_hooks() -> None:
    import httpx

    sync_send, async_send = httpx.Client.send, httpx.AsyncClient.send

    def send(self: Any, request: Any, **kwargs: Any) -> Any:
        response = None
        try:
            response = sync_send(self, request, **kwargs)
            return response
        finally:
            HARVEST.httpx_exchange(request, response, kwargs.get("stream", False))

    async def asend(self: Any, request: Any, **kwargs: Any) -> Any:
        response = None
        try:
            response = await async_send(self, request, **kwargs)
            return response
        finally:
            HARVEST.httpx_exchange(request, response, kwargs.get("stream", False))

    _patch(httpx.Client, "send", send)
    _patch(httpx.AsyncClient, "send", asend)

    try:
        import requests
    except ImportError:
        return
    requests_send = requests.Session.send

    def rsend(self: Any, request: Any, **kwargs: Any) -> Any:
        response = None
        try:
            response = requests_send(self, request, **kwargs)
            return response
        finally:
            HARVEST.requests_exchange(request, response, kwargs.get("stream", False))

    _patch(requests.Session, "send", rsend)


def _install_process_hooks() -> None:
    run = subprocess.run

    def harvesting_run(*args: Any, **kwargs: Any) -> Any:
        result = run(*args, **kwargs)
        try:
            HARVEST.command(args[0] if args else kwargs.get("args", []), result)
        except Exception as exc:  # noqa: BLE001
            _harvest_error(exc)
        return result

    _patch(subprocess, "run", harvesting_run)

    from grantd.crypto import jws

    seal = jws.KeySealer.seal

    def harvesting_seal(self: Any, key: Any, kid: str) -> bytes:
        HARVEST.signing_key(key)
        return seal(self, key, kid)

    _patch(jws.KeySealer, "seal", harvesting_seal)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{MARKER}: runs after every other test (the whole-suite secret scan)")
    _install_http_hooks()
    _install_process_hooks()


def pytest_sessionstart(session: pytest.Session) -> None:
    global _handler
    factory = session.config._tmp_path_factory  # type: ignore[attr-defined]
    HARVEST.base_temp = factory.getbasetemp()
    HARVEST.scan_dir = HARVEST.base_temp / "secret-scan"
    HARVEST.scan_dir.mkdir(exist_ok=True)
    _handler = _FileHandler(HARVEST.scan_dir / "in-process.log")
    logging.getLogger().addHandler(_handler)
    # grantd's records down to debug, as `GRANTD_LOG_LEVEL=debug` would write them; others from warning.
    logging.getLogger("grantd").setLevel(logging.DEBUG)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    last = [item for item in items if item.get_closest_marker(MARKER)]
    items[:] = [item for item in items if not item.get_closest_marker(MARKER)] + last


def pytest_collection_finish(session: pytest.Session) -> None:
    """Whether the whole suite runs: no paths narrower than tests/, no -k, no -m, nothing deselected."""
    config = session.config
    tests_dir = (ROOT / "tests").resolve()
    args = [Path(str(a).split("::")[0]).resolve() for a in config.args]
    broad = all(a in (tests_dir, ROOT.resolve()) for a in args)
    HARVEST.selection = " ".join(
        part for part in (f"-m {config.option.markexpr}" if config.option.markexpr else "",
                          f"-k {config.option.keyword}" if config.option.keyword else "") if part
    )
    HARVEST.whole_suite = broad and not config.option.keyword and not config.option.markexpr and not getattr(config.option, "lf", False)


def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    HARVEST.current_test = item.nodeid


def logged_records_path() -> Path:
    assert HARVEST.scan_dir is not None
    return HARVEST.scan_dir / "in-process.log"


def flush_log() -> None:
    if _handler is not None:
        _handler.stream.flush()


_summary: list[str] = []


def report(line: str) -> None:
    """A line for the terminal summary (numbers of the scan, shown after the run)."""
    _summary.append(line)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _summary:
        terminalreporter.section("whole-suite secret scan")
        for line in _summary:
            terminalreporter.write_line(line)
    if _errors:
        terminalreporter.write_line(f"secret harvest errors (first {len(_errors)}): {_errors}")


def pytest_unconfigure(config: pytest.Config) -> None:
    for owner, name, original in reversed(_originals):
        setattr(owner, name, original)
    _originals.clear()
    if _handler is not None:
        logging.getLogger().removeHandler(_handler)
        _handler.stream.close()


def iter_secrets() -> Iterator[Secret]:
    """Every harvested secret, less values a test sent both as a secret and as public (PUBLIC_FIELDS)
    that grantd never issued."""
    public = set(HARVEST.public)
    return iter([s for s in list(HARVEST.secrets.values()) if s.issued or s.value not in public])


def public_values_sent_as_secrets() -> int:
    public = set(HARVEST.public)
    return sum(1 for s in list(HARVEST.secrets.values()) if not s.issued and s.value in public)
