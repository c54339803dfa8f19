"""Passkeys over the wire, without a browser: a real `grantd serve` and a software authenticator
written here (an ECDSA P-256 key, CBOR, the byte layouts of WebAuthn §6.1 and §6.5) that answers
as a browser would, or as an attacker could: from another origin, over a challenge grantd never
made or already took, with a credential grantd never registered, with a counter gone back. After
a password, a passkey is the second step of a person who set up an authenticator app too, or where
the operator requires a second factor: the account's own, over that step's challenge, counted
against the account when refused, and said in the ID token's ``amr``. Otherwise a passkey does
not change the password sign-in: the password alone signs its holder in, as before.

The server is named 127.0.0.1 here: a browser refuses an IP address as an RP ID, grantd does not
need to (tests/browser/test_passkeys.py runs the same ceremonies in Chromium at localhost).
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from urllib.parse import parse_qs, urlencode, urlsplit

import cbor2
import httpx
import jwt
import pyotp
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from acting_user import parse_forms
from support.neucron import PASSWORD, unique_email
from support.servers import ServerProcess, assert_clean_logs, server_on_new_sqlite, start_server

REFUSED = "This passkey cannot be used to sign in here."
SPENT = "This passkey request has expired or was used already. Try again."
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Authenticator:
    """A passkey: one credential, kept by a user-verifying authenticator."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.credential_id = os.urandom(32)
        self.count = 0
        self.user_handle: str | None = None

    def _cose_key(self) -> bytes:
        numbers = self.key.public_key().public_numbers()
        return cbor2.dumps({1: 2, 3: -7, -1: 1, -2: numbers.x.to_bytes(32, "big"), -3: numbers.y.to_bytes(32, "big")})

    def create(self, options: dict, origin: str) -> str:
        """The answer to navigator.credentials.create(options) on a page of ``origin``."""
        self.user_handle = options["user"]["id"]
        client_data = json.dumps({"type": "webauthn.create", "challenge": options["challenge"], "origin": origin}).encode()
        auth_data = (
            hashlib.sha256(options["rp"]["id"].encode()).digest()
            + bytes([0x45])  # user present, user verified, attested credential data
            + self.count.to_bytes(4, "big")
            + bytes(16)  # AAGUID
            + len(self.credential_id).to_bytes(2, "big")
            + self.credential_id
            + self._cose_key()
        )
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        response = {"clientDataJSON": b64(client_data), "attestationObject": b64(attestation), "transports": ["internal"]}
        return self._credential(response)

    def get(self, options: dict, origin: str, *, count: int | None = None) -> str:
        """The answer to navigator.credentials.get(options) on a page of ``origin``; ``count``:
        the signature counter it reports (one more than the last, unless said)."""
        self.count = self.count + 1 if count is None else count
        client_data = json.dumps({"type": "webauthn.get", "challenge": options["challenge"], "origin": origin}).encode()
        auth_data = hashlib.sha256(options["rpId"].encode()).digest() + bytes([0x05]) + self.count.to_bytes(4, "big")
        signature = self.key.sign(auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256()))
        response = {"clientDataJSON": b64(client_data), "authenticatorData": b64(auth_data), "signature": b64(signature)}
        if self.user_handle is not None:
            response["userHandle"] = self.user_handle
        return self._credential(response)

    def _credential(self, response: dict) -> str:
        credential_id = b64(self.credential_id)
        return json.dumps(
            {"id": credential_id, "rawId": credential_id, "type": "public-key", "response": response, "clientExtensionResults": {}}
        )


pytestmark = pytest.mark.db


@pytest.fixture(scope="module")
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, secret_key: str) -> Iterator[ServerProcess]:
    """A real server on a new SQLite file; on the session's PostgreSQL database with GRANTD_TEST_DB=postgres."""
    if os.environ.get("GRANTD_TEST_DB", "sqlite") != "postgres":
        with server_on_new_sqlite(tmp_path_factory, secret_key, "passkeys-wire") as running:
            yield running
            assert_clean_logs([running])  # no 500, no traceback, whatever was sent
        return
    running = start_server(request.getfixturevalue("postgres_url"), secret_key, tmp_path_factory.mktemp("passkeys-wire-pg"))
    try:
        yield running
        assert_clean_logs([running])
    finally:
        running.stop()


def browser(server: ServerProcess) -> httpx.Client:
    return httpx.Client(base_url=server.base_url, timeout=30)


def signin_csrf(client: httpx.Client) -> str:
    """Opens the sign-in page (its pre-session cookie lands in ``client``); the form's token."""
    page = client.get("/signin")
    assert page.status_code == 200
    return CSRF.search(page.text).group(1)


def account_csrf(client: httpx.Client) -> str:
    page = client.get("/account")
    assert page.status_code == 200, page.headers.get("location")
    return CSRF.search(page.text).group(1)


def signed_in(server: ServerProcess) -> tuple[httpx.Client, str]:
    """A browser signed in with the password of a new account, and the account's email."""
    client, email = browser(server), unique_email()
    assert client.post("/v1/auth/signup", json={"email": email, "password": PASSWORD}).status_code in (200, 201)
    token = signin_csrf(client)
    answer = client.post("/signin", data={"email": email, "password": PASSWORD, "csrf_token": token, "next": "/"})
    assert answer.status_code == 303 and "grantd_session" in client.cookies
    return client, email


def register(server: ServerProcess, client: httpx.Client, authenticator: Authenticator, *, origin: str | None = None) -> httpx.Response:
    token = account_csrf(client)
    options = client.post("/account/passkeys/options", data={"csrf_token": token})
    assert options.status_code == 200, options.text
    credential = authenticator.create(options.json(), origin or server.base_url)
    return client.post("/account/passkeys", data={"csrf_token": token, "name": "Laptop", "credential": credential})


def sign_in_options(client: httpx.Client) -> tuple[str, dict]:
    token = signin_csrf(client)
    options = client.post("/passkeys/signin/options", data={"csrf_token": token})
    assert options.status_code == 200, options.text
    return token, options.json()


def sign_in(client: httpx.Client, token: str, credential: str) -> httpx.Response:
    return client.post("/passkeys/signin", data={"csrf_token": token, "credential": credential, "next": "/account"})


def registered(server: ServerProcess) -> tuple[Authenticator, str]:
    """A new account with a passkey: its authenticator and the account's email."""
    client, email = signed_in(server)
    authenticator = Authenticator()
    added = register(server, client, authenticator)
    client.close()
    assert added.status_code == 200, added.text
    assert added.json() == {"redirect": "/account?passkey=added#passkeys"}
    return authenticator, email


def enrol_app(client: httpx.Client) -> pyotp.TOTP:
    """Sets up an authenticator app in the signed-in ``client``: the app (its first code, of
    this time-step, is used)."""
    token = CSRF.search(client.get("/account/second-factor").text).group(1)
    assert client.post("/account/second-factor", data={"csrf_token": token}).status_code == 303
    shown = client.get("/account/second-factor")
    secret = re.search(r'<code class="totp-secret">([A-Z2-7]+)</code>', shown.text).group(1)
    totp = pyotp.TOTP(secret)
    confirmed = client.post(
        "/account/second-factor/confirm", data={"csrf_token": CSRF.search(shown.text).group(1), "code": totp.now()}
    )
    assert confirmed.status_code == 200 and "recovery-codes" in confirmed.text
    return totp


def two_step(server: ServerProcess) -> tuple[Authenticator, str, pyotp.TOTP]:
    """A new account with a passkey and an authenticator app (two-step sign-in turned on): its
    authenticator, the account's email and the app."""
    client, email = signed_in(server)
    authenticator = Authenticator()
    assert register(server, client, authenticator).status_code == 200
    totp = enrol_app(client)
    client.close()
    return authenticator, email, totp


def test_a_passkey_signs_in_alone_and_its_answer_is_taken_once(server: ServerProcess) -> None:
    authenticator, email = registered(server)
    with browser(server) as client:
        token, options = sign_in_options(client)
        assert options["rpId"] == "127.0.0.1" and options["allowCredentials"] == [] and options["userVerification"] == "required"
        credential = authenticator.get(options, server.base_url)
        answer = sign_in(client, token, credential)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"redirect": "/account"}
        account = client.get("/account")
        assert account.status_code == 200 and f'<dd class="email">{email}</dd>' in account.text
        assert 'class="passkey-name">Laptop<' in account.text and "last used never" not in account.text

    # The same answer again, from another browser: its challenge is spent; no session is made.
    with browser(server) as replaying:
        token, _ = sign_in_options(replaying)
        replay = sign_in(replaying, token, credential)
        assert replay.status_code == 401 and replay.json()["error"] == SPENT
        assert "grantd_session" not in replaying.cookies


def test_a_challenge_is_for_the_browser_that_asked_for_it(server: ServerProcess) -> None:
    authenticator, _ = registered(server)
    with browser(server) as asking, browser(server) as answering:
        _, options = sign_in_options(asking)
        token = signin_csrf(answering)
        answer = sign_in(answering, token, authenticator.get(options, server.base_url))
        assert answer.status_code == 401 and answer.json()["error"] == SPENT
        assert "grantd_session" not in answering.cookies
        # and it is spent: the browser that asked cannot use it now either
        replay = sign_in(asking, signin_csrf(asking), authenticator.get(options, server.base_url))
        assert replay.status_code == 401 and replay.json()["error"] == SPENT


def test_a_challenge_grantd_never_made_is_refused(server: ServerProcess) -> None:
    authenticator, _ = registered(server)
    with browser(server) as client:
        token, options = sign_in_options(client)
        made_up = {**options, "challenge": b64(os.urandom(32))}
        answer = sign_in(client, token, authenticator.get(made_up, server.base_url))
        assert answer.status_code == 401 and answer.json()["error"] == SPENT
        assert "grantd_session" not in client.cookies


def test_a_credential_grantd_never_registered_is_refused(server: ServerProcess) -> None:
    registered(server)
    stranger = Authenticator()
    with browser(server) as client:
        token, options = sign_in_options(client)
        answer = sign_in(client, token, stranger.get(options, server.base_url))
        assert answer.status_code == 401 and answer.json()["error"] == REFUSED
        assert "grantd_session" not in client.cookies


def test_an_answer_from_another_origin_is_refused(server: ServerProcess) -> None:
    port = urlsplit(server.base_url).port
    elsewhere = f"http://evil.example:{port}"
    # Registration: the passkey is not kept.
    client, _ = signed_in(server)
    refused = register(server, client, Authenticator(), origin=elsewhere)
    assert refused.status_code == 401 and "was not accepted" in refused.json()["error"]
    assert "You have no passkey yet." in client.get("/account").text
    client.close()
    # Sign-in: a real passkey of the account, its answer made on another site's page.
    authenticator, _ = registered(server)
    with browser(server) as victim:
        token, options = sign_in_options(victim)
        answer = sign_in(victim, token, authenticator.get(options, elsewhere))
        assert answer.status_code == 401 and answer.json()["error"] == REFUSED
        assert "grantd_session" not in victim.cookies
    # The same passkey, answering on grantd's own page, still works.
    with browser(server) as client:
        token, options = sign_in_options(client)
        assert sign_in(client, token, authenticator.get(options, server.base_url)).status_code == 200


def test_a_signature_counter_that_goes_back_is_refused(server: ServerProcess) -> None:
    authenticator, _ = registered(server)
    with browser(server) as client:
        token, options = sign_in_options(client)
        assert sign_in(client, token, authenticator.get(options, server.base_url, count=5)).status_code == 200
    with browser(server) as clone:
        token, options = sign_in_options(clone)
        answer = sign_in(clone, token, authenticator.get(options, server.base_url, count=3))
        assert answer.status_code == 401 and answer.json()["error"] == REFUSED
        assert "grantd_session" not in clone.cookies


def test_a_credential_id_no_passkey_can_have_is_refused(server: ServerProcess) -> None:
    authenticator, _ = registered(server)
    with browser(server) as client:
        token, options = sign_in_options(client)
        answer = json.loads(authenticator.get(options, server.base_url))
        answer["id"] = answer["rawId"] = "a\u0000b"
        refused = sign_in(client, token, json.dumps(answer))
        assert refused.status_code == 401 and refused.json()["error"] == REFUSED


def test_passkey_answers_are_limited_per_address(tmp_path_factory: pytest.TempPathFactory, secret_key: str) -> None:
    with server_on_new_sqlite(
        tmp_path_factory, secret_key, "passkeys-limited", env={"GRANTD_RATE_LIMIT_LOGIN_PER_ADDRESS": "3"}
    ) as limited, browser(limited) as client:
        stranger = Authenticator()
        statuses = []
        for _ in range(4):
            token, options = sign_in_options(client)
            statuses.append(sign_in(client, token, stranger.get(options, limited.base_url)))
        assert [answer.status_code for answer in statuses] == [401, 401, 401, 429]
        assert statuses[-1].json()["error"].startswith("Too many attempts. Try again in ")
        assert int(statuses[-1].headers["retry-after"]) > 0


def test_malformed_and_forged_requests_get_4xx(server: ServerProcess) -> None:
    with browser(server) as client:
        token = signin_csrf(client)
        assert client.post("/passkeys/signin/options", data={"csrf_token": "forged"}).status_code == 403
        for credential in ("", "not json", "{}", '{"id": 1, "response": {"clientDataJSON": "!!"}}', "[" * 4000):
            answer = sign_in(client, token, credential)
            assert answer.status_code == 400, (credential[:40], answer.text)
            assert answer.json()["error"]
        too_long = sign_in(client, token, "x" * 20_000)  # over a form parameter's length: the pages' error
        assert too_long.status_code == 400 and "credential is too long." in too_long.text
    signed, _ = signed_in(server)
    assert signed.post("/account/passkeys/options", data={"csrf_token": "forged"}).status_code == 403
    token = account_csrf(signed)
    answer = signed.post("/account/passkeys", data={"csrf_token": token, "name": "", "credential": "{}"})
    assert answer.status_code == 400 and answer.json()["error"] == "Give the passkey a name."
    removed = signed.post("/account/passkeys/nope/remove", data={"csrf_token": token, "password": PASSWORD})
    assert removed.status_code == 404 and "You have no such passkey." in removed.text
    signed.close()
    with browser(server) as nobody:
        assert nobody.post("/account/passkeys/options", data={"csrf_token": "x"}).status_code == 401


def test_the_pages_offer_passkeys_only_where_browsers_can_use_them(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory, secret_key: str) -> None:
    # At 127.0.0.1 (an IP address cannot be an RP ID) the pages neither offer passkeys nor run a script.
    with browser(server) as client:
        signin = client.get("/signin")
        assert "passkey" not in signin.text and 'autocomplete="username"' in signin.text
        assert "script-src" not in signin.headers["content-security-policy"]
    # At localhost they do, with the one static script, from the site itself.
    with server_on_new_sqlite(tmp_path_factory, secret_key, "passkeys-localhost", host="localhost") as local, browser(local) as client:
        signin = client.get("/signin")
        assert 'autocomplete="username webauthn"' in signin.text and "Use a passkey" in signin.text
        policy = signin.headers["content-security-policy"]
        assert "; script-src 'self'" in policy and "; connect-src 'self'" in policy and "default-src 'none'" in policy
        assert re.findall(r"<script[^>]*>", signin.text) == ['<script src="/static/passkeys.js" defer>']
        script = client.get("/static/passkeys.js")
        assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
        assert "navigator.credentials.get" in script.text


# ---------------------------------------------------------------- a passkey as the second factor after a password

STEP_OPTIONS = re.compile(r'<form id="passkey-second-step" method="post" action="/second-factor" data-options="([^"]+)"')
REDIRECT_URI = "https://rp.example.com/cb"


def step_of(page: httpx.Response) -> tuple[str, dict]:
    """The second-factor page's form token and the passkey options it carries."""
    found = STEP_OPTIONS.search(page.text)
    assert found, page.text[:3000]
    return CSRF.search(page.text).group(1), json.loads(html.unescape(found.group(1)))


def password_step(client: httpx.Client, email: str, next_path: str = "/account") -> tuple[str, dict, httpx.Response]:
    """The password on the sign-in page, then the second-factor page it leads to (no session
    yet): its form token, its passkey options, the page."""
    token = signin_csrf(client)
    answer = client.post("/signin", data={"email": email, "password": PASSWORD, "csrf_token": token, "next": next_path})
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/second-factor?" + urlencode({"next": next_path})
    assert "grantd_session" not in client.cookies
    page = client.get(answer.headers["location"])
    assert page.status_code == 200
    return (*step_of(page), page)


def second_step(client: httpx.Client, token: str, credential: str, next_path: str = "/account") -> httpx.Response:
    return client.post("/second-factor", data={"csrf_token": token, "next": next_path, "credential": credential})


def test_after_the_password_a_passkey_is_the_second_step(server: ServerProcess) -> None:
    authenticator, email, _ = two_step(server)
    with browser(server) as client:
        token, options, page = password_step(client, email)
        assert "Use a passkey" in page.text and 'autocomplete="one-time-code"' in page.text
        assert "; script-src 'self'" in page.headers["content-security-policy"]
        # Only this account's passkeys are named, user verification required.
        assert [d["id"] for d in options["allowCredentials"]] == [b64(authenticator.credential_id)]
        assert options["allowCredentials"][0]["transports"] == ["internal"]
        assert options["rpId"] == "127.0.0.1" and options["userVerification"] == "required"
        credential = authenticator.get(options, server.base_url)
        done = second_step(client, token, credential)
        assert done.status_code == 303 and done.headers["location"] == "/account", done.text
        assert "grantd_pending_sign_in=;" in done.headers["set-cookie"]  # the pending state is gone
        account = client.get("/account")
        assert account.status_code == 200 and f'<dd class="email">{email}</dd>' in account.text

    # The same answer in another pending sign-in of the same account: its challenge was that
    # sign-in's, and is spent.
    with browser(server) as replaying:
        token, _, _ = password_step(replaying, email)
        replay = second_step(replaying, token, credential)
        assert replay.status_code == 401 and SPENT in replay.text
        assert "grantd_session" not in replaying.cookies


def test_a_passkey_of_another_account_or_origin_is_refused_at_the_second_step(server: ServerProcess) -> None:
    mine, email, _ = two_step(server)
    theirs, _ = registered(server)
    port = urlsplit(server.base_url).port
    with browser(server) as client:
        token, options, _ = password_step(client, email)
        # Another account's passkey, answering this step's challenge on grantd's own page.
        refused = second_step(client, token, theirs.get(options, server.base_url))
        assert refused.status_code == 401 and REFUSED in refused.text
        assert "grantd_session" not in client.cookies
        # The account's own passkey, its answer made on another site's page.
        token, options = step_of(refused)  # the page shown again, with a new challenge
        elsewhere = second_step(client, token, mine.get(options, f"http://evil.example:{port}"))
        assert elsewhere.status_code == 401 and REFUSED in elsewhere.text
        assert "grantd_session" not in client.cookies
        # Malformed answers, and a form sent with no answer (a browser without JavaScript): 400.
        token, options = step_of(elsewhere)
        for credential in ("not json", "{}", " "):
            malformed = second_step(client, token, credential)
            assert malformed.status_code == 400, (credential, malformed.text[:500])
        token, options = step_of(malformed)
        # The account's own passkey on grantd's page signs in.
        done = second_step(client, token, mine.get(options, server.base_url))
        assert done.status_code == 303 and "grantd_session" in client.cookies


def test_a_second_step_challenge_serves_nothing_else(server: ServerProcess) -> None:
    authenticator, email, _ = two_step(server)
    with browser(server) as client:
        # The second step's challenge does not sign in with a passkey alone ...
        _, step_options, _ = password_step(client, email)
        token = signin_csrf(client)
        alone = sign_in(client, token, authenticator.get(step_options, server.base_url))
        assert alone.status_code == 401 and alone.json()["error"] == SPENT
        # ... a passkey sign-in's challenge does not complete the second step ...
        step_token, _, _ = password_step(client, email)
        _, alone_options = sign_in_options(client)
        answer = second_step(client, step_token, authenticator.get(alone_options, server.base_url))
        assert answer.status_code == 401 and SPENT in answer.text
        assert "grantd_session" not in client.cookies
    # ... and one pending sign-in's challenge does not complete another's.
    with browser(server) as first, browser(server) as second:
        _, first_options, _ = password_step(first, email)
        token, _, _ = password_step(second, email)
        answer = second_step(second, token, authenticator.get(first_options, server.base_url))
        assert answer.status_code == 401 and SPENT in answer.text
        assert "grantd_session" not in second.cookies


def test_the_json_login_refuses_an_account_whose_password_sign_in_is_two_step(server: ServerProcess) -> None:
    _, two_step_email, _ = two_step(server)
    _, passkey_email = registered(server)
    with browser(server) as client:
        refused = client.post("/v1/auth/login", json={"email": two_step_email, "password": PASSWORD})
        assert refused.status_code == 400 and refused.json()["error"] == "interaction_required"
        # Passkeys alone, where no second factor is required: the password logs in, as before.
        logged_in = client.post("/v1/auth/login", json={"email": passkey_email, "password": PASSWORD})
        assert logged_in.status_code == 200, logged_in.text
        token = logged_in.json()["data"]["access_token"]
        works = client.get("/v1/apps", headers={"Authorization": f"Bearer {token}"})
        assert works.status_code == 200, works.text


def test_passkeys_refused_at_the_second_step_count_against_the_account(
    tmp_path_factory: pytest.TempPathFactory, secret_key: str
) -> None:
    env = {"GRANTD_RATE_LIMIT_LOGIN_PER_ACCOUNT": "3"}
    with server_on_new_sqlite(tmp_path_factory, secret_key, "passkeys-2fa-limited", env=env) as limited:
        authenticator, email, _ = two_step(limited)
        stranger = Authenticator()
        with browser(limited) as client:
            token, options, _ = password_step(client, email)
            statuses = []
            for _ in range(3):
                answer = second_step(client, token, stranger.get(options, limited.base_url))
                statuses.append(answer.status_code)
                token, options = step_of(answer)
            assert statuses == [401, 401, 401]
            locked = second_step(client, token, authenticator.get(options, limited.base_url))
            assert locked.status_code == 429 and int(locked.headers["retry-after"]) > 0
            assert "Too many wrong attempts" in locked.text
            assert "grantd_session" not in client.cookies


def _openid_app(client: httpx.Client) -> tuple[str, str]:
    developer = unique_email()
    signed_up = client.post("/v1/auth/signup", json={"email": developer, "password": PASSWORD})
    assert signed_up.status_code == 200, signed_up.text
    auth = {"Authorization": f"Bearer {signed_up.json()['data']['access_token']}"}
    body = {"name": "Relying Party", "redirect_uris": [REDIRECT_URI], "permissions": "read_profile", "client_type": "confidential"}
    created = client.post("/v1/apps", json=body, headers=auth)
    assert created.status_code == 200, created.text
    client_id = created.json()["data"]["app_id"]
    key = client.post(f"/v1/apps/{client_id}/keys", headers=auth)
    assert key.status_code == 200, key.text
    return client_id, key.json()["data"]["key_secret"]


def id_token_claims(server: ServerProcess, signs_in: Callable[[httpx.Client, str], None]) -> dict:
    """The claims of the ID token an OpenID Connect app gets for a browser that ``signs_in``
    (given the page to go on to)."""
    with browser(server) as client:
        client_id, key_secret = _openid_app(client)
        query = {
            "response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT_URI, "scope": "openid",
            "state": "s1", "nonce": "n1",
        }
        started = client.get("/oauth2/authorize?" + urlencode(query))
        assert started.status_code == 303 and started.headers["location"].startswith("/signin?")
        next_path = parse_qs(urlsplit(started.headers["location"]).query)["next"][0]
        signs_in(client, next_path)
        consent = client.get(next_path)
        assert consent.status_code == 200, consent.text
        form = next(f for f in parse_forms(consent.text) if f.path(str(consent.url)) == "/oauth2/authorize")
        fields = [(k, v) for k, v in form.inputs if k != "decision"] + [("decision", "allow")]
        answer = client.post(
            "/oauth2/authorize", content=urlencode(fields), headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
        location = answer.headers["location"]
        assert location.startswith(REDIRECT_URI), location
        code = parse_qs(urlsplit(location).query)["code"][0]
        issued = client.post(
            "/oauth2/token", auth=(client_id, key_secret),
            data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI},
        )
        assert issued.status_code == 200, issued.text
        jwks = jwt.PyJWKSet.from_dict(client.get("/.well-known/jwks.json").json())
        id_token = issued.json()["id_token"]
        key = jwks[jwt.get_unverified_header(id_token)["kid"]]
        claims = jwt.decode(id_token, key, algorithms=["RS256", "ES256"], audience=client_id, issuer=server.base_url)
    assert claims["nonce"] == "n1"
    return claims


def test_the_id_token_says_password_and_passkey(server: ServerProcess) -> None:
    authenticator, email, _ = two_step(server)

    def with_passkey(client: httpx.Client, next_path: str) -> None:
        token, options, _ = password_step(client, email, next_path)
        done = second_step(client, token, authenticator.get(options, server.base_url), next_path)
        assert done.status_code == 303 and done.headers["location"] == next_path

    assert id_token_claims(server, with_passkey)["amr"] == ["pwd", "hwk", "user", "mfa"]


def test_a_passkey_alone_does_not_make_the_password_sign_in_two_step(server: ServerProcess) -> None:
    """A person who added a passkey to sign in without a password, and set up no authenticator
    app, where the operator requires no second factor: the password alone still signs them in
    (there are no recovery codes behind a passkey), and the session says a password only."""
    _, email = registered(server)

    def with_password(client: httpx.Client, next_path: str) -> None:
        token = signin_csrf(client)
        answer = client.post("/signin", data={"email": email, "password": PASSWORD, "csrf_token": token, "next": next_path})
        assert answer.status_code == 303 and answer.headers["location"] == next_path, answer.text
        assert "grantd_session" in client.cookies and "grantd_pending_sign_in" not in client.cookies

    assert id_token_claims(server, with_password)["amr"] == ["pwd"]
    with browser(server) as client:
        with_password(client, "/account")
        account = client.get("/account")
        assert account.status_code == 200 and f'<dd class="email">{email}</dd>' in account.text
        assert 'class="second-factor-status">Off:' in account.text
        assert client.get("/second-factor").headers["location"] == "/signin"  # no second step pending


@pytest.mark.parametrize("setting", ["all", "developers"])
def test_a_required_second_factor_is_met_by_a_passkey(
    tmp_path_factory: pytest.TempPathFactory, secret_key: str, setting: str
) -> None:
    env = {"GRANTD_REQUIRE_SECOND_FACTOR": setting}
    with server_on_new_sqlite(tmp_path_factory, secret_key, f"passkeys-2fa-required-{setting}", env=env) as required:
        authenticator, email = registered(required)  # signed in with the password alone, adds a passkey
        with browser(required) as client:
            # A passkey and no authenticator app: after the password, the passkey is asked for.
            token, options, page = password_step(client, email, "/console")
            assert "Use a passkey" in page.text and 'name="code"' not in page.text  # no authenticator app: no code field
            refused = client.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
            assert refused.status_code == 400 and refused.json()["error"] == "interaction_required"
            done = second_step(client, token, authenticator.get(options, required.base_url), "/console")
            assert done.status_code == 303 and done.headers["location"] == "/console"
            assert client.get("/console").status_code == 200  # not sent to set up a second factor
        with browser(required) as alone:  # a passkey alone is more than one factor too
            token, alone_options = sign_in_options(alone)
            assert sign_in(alone, token, authenticator.get(alone_options, required.base_url)).status_code == 200
            assert alone.get("/console").status_code == 200


def test_with_an_authenticator_app_too_both_are_offered(server: ServerProcess) -> None:
    client, email = signed_in(server)
    authenticator = Authenticator()
    assert register(server, client, authenticator).status_code == 200
    # A passkey alone turns no second step on ...
    assert 'class="second-factor-status">Off:' in client.get("/account/second-factor").text
    totp = enrol_app(client)
    # ... the authenticator app does, and the passkey is then a way to complete it.
    assert "or one of your passkeys" in client.get("/account/second-factor").text
    client.close()
    with browser(server) as passkey_user:
        token, options, page = password_step(passkey_user, email)
        assert "Use a passkey" in page.text and 'autocomplete="one-time-code"' in page.text
        assert second_step(passkey_user, token, authenticator.get(options, server.base_url)).status_code == 303
    with browser(server) as code_user:  # the code of the next step: the enrolment's step is used
        token, _, _ = password_step(code_user, email)
        code = totp.at(time.time() + 30)
        answer = code_user.post("/second-factor", data={"csrf_token": token, "next": "/account", "code": code})
        assert answer.status_code == 303 and answer.headers["location"] == "/account", answer.text
