"""A second factor at sign-in against real `grantd serve` processes, on SQLite and on PostgreSQL:
an authenticator app set up on the account page (the secret read from the page, codes computed by
pyotp as a phone app would), the second-factor step after the password on the hosted sign-in,
a code accepted once (replay refused) and within one time-step of now, recovery codes single
use, wrong codes rate limited per account, ``amr`` in the ID token saying how the person signed
in, Neucron's JSON ``POST /auth/login`` refused for such an account, the secret sealed at rest,
and the operator's GRANTD_REQUIRE_SECOND_FACTOR. The person is an HTTP client following the
pages' forms; in Chromium: tests/browser/test_totp.py."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import httpx
import jwt
import pyotp
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from acting_user import parse_forms
from grantd.store.schema import recovery_codes, totp_credentials
from support.neucron import PASSWORD, sign_up, unique_email
from support.servers import ServerProcess, server_on_new_sqlite, start_server

pytestmark = pytest.mark.db

REDIRECT_URI = "https://rp.example.com/cb"
SECRET_SHOWN = re.compile(r'<code class="totp-secret">([A-Z2-7]+)</code>')
RECOVERY_SHOWN = re.compile(r"<li><code>([a-z2-9]{5}-[a-z2-9]{5})</code></li>")


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(request: pytest.FixtureRequest, secret_key: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    if request.param == "sqlite":
        with server_on_new_sqlite(tmp_path_factory, secret_key, "totp-sqlite") as started:
            yield started
        return
    started = start_server(request.getfixturevalue("postgres_url"), secret_key, tmp_path_factory.mktemp("totp-postgres"))
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
async def http(server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        yield client


class Phone:
    """An authenticator app: its codes computed by pyotp. The server accepts a code once, and the
    steps either side of now: each code here is of a step after the last one used, the step
    after now at the latest (so a test waits only when it needs a third code within one step)."""

    def __init__(self, secret: str) -> None:
        self.totp = pyotp.TOTP(secret)
        self.last = 0

    def code(self) -> str:
        step = max(int(time.time() // 30), self.last + 1)
        while step > int(time.time() // 30) + 1:
            time.sleep(30 - time.time() % 30 + 0.1)
        self.last = step
        return self.totp.at(step * 30)

    def wrong(self) -> str:
        """A code of no step the server would accept now."""
        near = {self.totp.at(time.time() + d) for d in (-60, -30, 0, 30, 60)}
        return next(c for c in ("000000", "111111", "222222", "333333", "444444", "555555") if c not in near)


def inputs_of(response: httpx.Response, action: str) -> list[tuple[str, str]]:
    forms = [f for f in parse_forms(response.text) if f.method == "post" and f.path(str(response.url)) == action]
    assert forms, f"no form posting to {action} on {response.url}:\n{response.text[:2000]}"
    return forms[0].inputs


async def submit(http: httpx.AsyncClient, response: httpx.Response, action: str, **fill: str) -> httpx.Response:
    data = [(name, fill.pop(name, value)) for name, value in inputs_of(response, action)] + list(fill.items())
    return await http.post(
        urljoin(str(response.url), action), content=urlencode(data),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )


async def sign_in_password(http: httpx.AsyncClient, email: str, next_path: str = "/") -> httpx.Response:
    page = await http.get("/signin?" + urlencode({"next": next_path}))
    return await submit(http, page, "/signin", email=email, password=PASSWORD)


async def enrol(http: httpx.AsyncClient) -> tuple[Phone, list[str]]:
    """Set up an authenticator app on the account page, as a person with a phone does: the secret
    read from the page, the first code typed; the recovery codes the page shows once."""
    account = await http.get("/account")
    assert account.status_code == 200 and "Set up an authenticator app" in account.text
    page = await http.get("/account/second-factor")
    started = await submit(http, page, "/account/second-factor")
    assert started.status_code == 303
    shown = await http.get(started.headers["location"])
    assert shown.status_code == 200
    assert "<svg" in shown.text  # the QR code, drawn inline
    secret = SECRET_SHOWN.search(shown.text)
    assert secret, shown.text
    phone = Phone(secret.group(1))
    confirmed = await submit(http, shown, "/account/second-factor/confirm", code=phone.code())
    assert confirmed.status_code == 200, confirmed.text
    codes = RECOVERY_SHOWN.findall(confirmed.text)
    assert len(codes) == 10 and len(set(codes)) == 10
    assert "no-store" in confirmed.headers["cache-control"]
    again = await http.get("/account/second-factor")
    assert not RECOVERY_SHOWN.findall(again.text), "recovery codes are shown once"
    assert "10 unused recovery codes" in again.text
    return phone, codes


async def enrolled_person(server: ServerProcess) -> tuple[str, str, Phone, list[str]]:
    """A new account with an authenticator app; (user_id, email, its TOTP, its recovery codes)."""
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
        email = unique_email()
        user_id, _ = await sign_up(http, email)
        assert (await sign_in_password(http, email)).status_code == 303
        phone, codes = await enrol(http)
    return user_id, email, phone, codes


async def second_step(http: httpx.AsyncClient, email: str, next_path: str = "/") -> httpx.Response:
    """The password, then the second-factor page it sends to (no session yet): that page."""
    answer = await sign_in_password(http, email, next_path)
    assert answer.status_code == 303, answer.text
    location = answer.headers["location"]
    assert location.startswith("/second-factor"), location
    assert "grantd_session" not in http.cookies
    page = await http.get(location)
    assert page.status_code == 200 and 'autocomplete="one-time-code"' in page.text
    return page


async def test_sign_in_asks_for_the_code_after_the_password(server: ServerProcess, http: httpx.AsyncClient) -> None:
    _, email, phone, _ = await enrolled_person(server)
    page = await second_step(http, email, "/account")
    wrong = await submit(http, page, "/second-factor", code=phone.wrong())
    assert wrong.status_code == 401 and "The code is wrong or was used already." in wrong.text
    assert "grantd_session" not in http.cookies
    done = await submit(http, page, "/second-factor", code=phone.code())
    assert done.status_code == 303 and done.headers["location"] == "/account", done.text
    assert (await http.get("/account")).status_code == 200


async def test_hostile_codes_are_refused_never_a_server_error(server: ServerProcess, http: httpx.AsyncClient) -> None:
    _, email, phone, _ = await enrolled_person(server)
    page = await second_step(http, email)
    for typed in ("١٢٣٤٥٦", "１２３４５６", "12345\x00", "9" * 5000, "'; drop table users; --", " ", "abcde-fghij"):
        answer = await submit(http, page, "/second-factor", code=typed)
        assert answer.status_code in (400, 401), (typed[:20], answer.status_code)
    fields = urlencode([(k, v) for k, v in inputs_of(page, "/second-factor") if k != "code"]).encode()
    raw = await http.post("/second-factor", content=fields + b"&code=%FF%FE%ED%A0%80", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert raw.status_code in (400, 401), raw.status_code
    assert (await submit(http, page, "/second-factor", code=phone.code())).status_code == 303
    # Without the pending state (another browser, or after it expired): back to the password.
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as other:
        page = await other.get("/second-factor?next=%2Faccount")
        assert page.status_code == 303 and page.headers["location"] == "/signin?next=%2Faccount"


async def test_a_code_works_once_and_within_one_step(server: ServerProcess) -> None:
    _, email, phone, _ = await enrolled_person(server)
    totp = phone.totp
    time.sleep(30 - time.time() % 30 + 0.2)  # a new step: the enrolment's code was of the one before
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as first:
        page = await second_step(first, email)
        code = totp.now()
        assert (await submit(first, page, "/second-factor", code=code)).status_code == 303
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as second:
        page = await second_step(second, email)
        replay = await submit(second, page, "/second-factor", code=code)
        assert replay.status_code == 401, "a code used once is refused the second time"
        now = time.time()
        too_old = totp.at(now - 90)  # three steps ago: outside the window
        if too_old not in (totp.at(now - 30), totp.at(now), totp.at(now + 30)):
            assert (await submit(second, page, "/second-factor", code=too_old)).status_code == 401
        too_new = totp.at(now + 90)  # three steps ahead: outside the window
        if too_new not in (totp.at(now - 30), totp.at(now), totp.at(now + 30)):
            assert (await submit(second, page, "/second-factor", code=too_new)).status_code == 401
        ahead = totp.at(now + 30)  # the next step: a phone clock a little fast
        assert (await submit(second, page, "/second-factor", code=ahead)).status_code == 303
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as third:
        page = await second_step(third, email)
        # The current step is before the last one accepted: its code is refused too.
        assert (await submit(third, page, "/second-factor", code=totp.at(now))).status_code == 401


async def test_recovery_codes_are_single_use(server: ServerProcess) -> None:
    user_id, email, _, codes = await enrolled_person(server)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as first:
        page = await second_step(first, email)
        used = await submit(first, page, "/second-factor", code=codes[3].upper().replace("-", " "))
        assert used.status_code == 303, used.text
        assert "9 unused recovery codes" in (await first.get("/account/second-factor")).text
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as second:
        page = await second_step(second, email)
        again = await submit(second, page, "/second-factor", code=codes[3])
        assert again.status_code == 401
        other = await submit(second, page, "/second-factor", code=codes[4])
        assert other.status_code == 303


async def test_wrong_codes_are_rate_limited_per_account(
    secret_key: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    env = {"GRANTD_RATE_LIMIT_LOGIN_PER_ACCOUNT": "3"}
    with server_on_new_sqlite(tmp_path_factory, secret_key, "totp-limits", env=env) as server:
        _, email, phone, _ = await enrolled_person(server)
        wrong = phone.wrong()
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
            page = await second_step(http, email)
            statuses = [(await submit(http, page, "/second-factor", code=wrong)).status_code for _ in range(3)]
            assert statuses == [401, 401, 401]
            locked = await submit(http, page, "/second-factor", code=phone.code())
            assert locked.status_code == 429 and int(locked.headers["retry-after"]) > 0
            assert "Too many wrong attempts" in locked.text


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


async def new_openid_app(http: httpx.AsyncClient) -> tuple[str, str]:
    _, dev = await sign_up(http)
    body = {"name": "Relying Party", "redirect_uris": [REDIRECT_URI], "permissions": "read_profile", "client_type": "confidential"}
    response = await http.post("/v1/apps", json=body, headers={"Authorization": dev})
    assert response.status_code == 200, response.text
    client_id = response.json()["data"]["app_id"]
    response = await http.post(f"/v1/apps/{client_id}/keys", headers={"Authorization": dev})
    assert response.status_code == 200, response.text
    return client_id, response.json()["data"]["key_secret"]


async def id_token_of(http: httpx.AsyncClient, server: ServerProcess, email: str, code_of: Any) -> dict[str, Any]:
    """An OpenID Connect code flow through the hosted pages; the ID token's claims."""
    client_id, key_secret = await new_openid_app(http)
    verifier, challenge = _pkce()
    query = {
        "response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT_URI, "scope": "openid",
        "state": "s1", "nonce": "n1", "code_challenge": challenge, "code_challenge_method": "S256",
    }
    response = await http.get("/oauth2/authorize?" + urlencode(query))
    assert response.status_code == 303 and response.headers["location"].startswith("/signin?")
    next_path = parse_qs(urlsplit(response.headers["location"]).query)["next"][0]
    response = await sign_in_password(http, email, next_path)
    if code_of is not None:
        page = await http.get(response.headers["location"])
        response = await submit(http, page, "/second-factor", code=code_of())
    assert response.status_code == 303, response.text
    consent = await http.get(response.headers["location"])
    answer = await submit(http, consent, "/oauth2/authorize", decision="allow")
    location = answer.headers["location"]
    assert location.startswith(REDIRECT_URI), location
    code = parse_qs(urlsplit(location).query)["code"][0]
    token = await http.post(
        "/oauth2/token", auth=(client_id, key_secret),
        data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI, "code_verifier": verifier},
    )
    assert token.status_code == 200, token.text
    jwks = jwt.PyJWKSet.from_dict((await http.get("/.well-known/jwks.json")).json())
    id_token = token.json()["id_token"]
    key = jwks[jwt.get_unverified_header(id_token)["kid"]]
    claims = jwt.decode(id_token, key, algorithms=["RS256", "ES256"], audience=client_id, issuer=server.base_url)
    refreshed = await http.post(
        "/oauth2/token", auth=(client_id, key_secret),
        data={"grant_type": "refresh_token", "refresh_token": token.json()["refresh_token"]},
    )
    if refreshed.status_code == 200 and "id_token" in refreshed.json():
        again = jwt.decode(refreshed.json()["id_token"], options={"verify_signature": False})
        assert again["amr"] == claims["amr"] and again["auth_time"] == claims["auth_time"]
    return claims


async def test_the_id_token_says_how_the_person_signed_in(server: ServerProcess) -> None:
    _, email, phone, _ = await enrolled_person(server)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
        claims = await id_token_of(http, server, email, phone.code)
    assert claims["amr"] == ["pwd", "otp", "mfa"] and claims["nonce"] == "n1" and "acr" not in claims
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
        plain = unique_email()
        await sign_up(http, plain)
        claims = await id_token_of(http, server, plain, None)
    assert claims["amr"] == ["pwd"]


async def test_the_json_login_refuses_an_account_with_a_second_factor(server: ServerProcess, http: httpx.AsyncClient) -> None:
    _, email, _, _ = await enrolled_person(server)
    for path in ("/v1/auth/login", "/auth/login"):
        refused = await http.post(path, json={"email": email, "password": PASSWORD})
        assert refused.status_code == 400, refused.text
        body = refused.json()
        assert body["error"] == "interaction_required" and body["status_code"] == 400
        assert "hosted sign-in" in body["message"] and "token" not in body
        wrong = await http.post(path, json={"email": email, "password": PASSWORD + "x"})
        assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_grant"  # tells nothing more
    plain = unique_email()
    await sign_up(http, plain)
    assert (await http.post("/v1/auth/login", json={"email": plain, "password": PASSWORD})).status_code == 200


async def test_the_secret_is_sealed_and_recovery_codes_hashed_at_rest(
    server: ServerProcess, request: pytest.FixtureRequest
) -> None:
    user_id, _, phone, codes = await enrolled_person(server)
    on_postgres = request.node.callspec.params["server"] == "postgres"
    url = request.getfixturevalue("postgres_url") if on_postgres else f"sqlite+aiosqlite:///{server.log_path.parent / 'grantd.db'}"
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            sealed = (
                await conn.execute(select(totp_credentials.c.sealed_secret).where(totp_credentials.c.user_id == user_id))
            ).scalar_one()
            hashes = (
                await conn.execute(select(recovery_codes.c.code_hash).where(recovery_codes.c.user_id == user_id))
            ).scalars().all()
    finally:
        await engine.dispose()
    secret = phone.totp.secret
    assert secret.encode() not in bytes(sealed) and base64.b32decode(secret) not in bytes(sealed)
    assert len(hashes) == 10
    assert not {c for c in codes} & set(hashes) and not {c.replace("-", "") for c in codes} & set(hashes)


async def test_removing_the_app_needs_the_password(server: ServerProcess) -> None:
    _, email, phone, _ = await enrolled_person(server)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
        page = await second_step(http, email)
        assert (await submit(http, page, "/second-factor", code=phone.code())).status_code == 303
        manage = await http.get("/account/second-factor")
        wrong = await submit(http, manage, "/account/second-factor/remove", current_password="not it at all")
        assert wrong.status_code == 400 and "second-factor-status\">On" in wrong.text
        removed = await submit(http, manage, "/account/second-factor/remove", current_password=PASSWORD)
        assert removed.status_code == 303
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
        answer = await sign_in_password(http, email)
        assert answer.status_code == 303 and answer.headers["location"] == "/"  # the password alone again


@pytest.mark.parametrize("setting", ["all", "developers"])
async def test_the_operator_can_require_a_second_factor(
    setting: str, secret_key: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    env = {"GRANTD_REQUIRE_SECOND_FACTOR": setting}
    with server_on_new_sqlite(tmp_path_factory, secret_key, f"totp-require-{setting}", env=env) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
            email = unique_email()
            await sign_up(http, email)
            answer = await sign_in_password(http, email, "/console")
            if setting == "all":
                assert answer.headers["location"] == "/account/second-factor?next=%2Fconsole"
            else:
                assert answer.headers["location"] == "/console"
                answer = await http.get("/console")
                assert answer.status_code == 303 and answer.headers["location"] == "/account/second-factor?next=%2Fconsole"
            page = await http.get(answer.headers["location"])
            assert "asks you to set up two-step sign-in" in page.text
            await enrol(http)
            # Enrolling proved the second factor: the session goes on to the console.
            assert (await http.get("/console")).status_code == 200
            if setting == "all":
                refused = await http.post("/v1/auth/login", json={"email": unique_email(), "password": PASSWORD})
                assert refused.status_code == 401
                plain = unique_email()
                await sign_up(http, plain)
                refused = await http.post("/v1/auth/login", json={"email": plain, "password": PASSWORD})
                assert refused.status_code == 400 and refused.json()["error"] == "interaction_required"
                # A session without the factor (here: a new sign-up's) cannot approve a device before setting one up.
                async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as fresh:
                    page = await fresh.get("/signup")
                    answer = await submit(fresh, page, "/signup", email=unique_email(), password=PASSWORD)
                    assert answer.headers["location"] == "/account/second-factor"
                    client_id, key_secret = await new_openid_app(http)
                    started = await http.post("/oauth2/device_authorization", data={"scope": "read_profile"}, auth=(client_id, key_secret))
                    assert started.status_code == 200, started.text
                    approve = await fresh.get("/device/approve?" + urlencode({"user_code": started.json()["user_code"]}))
                    assert approve.status_code == 303 and approve.headers["location"].startswith("/account/second-factor?next=")
