"""Neucron user accounts: sign-up, log-in, log-out (v1); the user's profile and password (v2).

v1 answers in the envelope ``{"data", "status_code"}``. Neucron's v2 SDK reads bodies as they
are, so the v2 calls (``/auth/user/*``) answer flat JSON, and the log-in both SDKs call answers
one body for both: v1's envelope with v2's top-level ``token`` and ``platforms`` beside it (v1's
SDK reads ``data`` and ignores the rest; v2's reads ``token``).
Errors are the Neucron error body in both (the v2 SDK shows its ``message``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from grantd.api.deps import account_holder, client_address, context, current_user
from grantd.api.envelope import NO_STORE, envelope
from grantd.api.jsonbody import JSONBody
from grantd.api.wire import STRICT, Text, rfc3339
from grantd.core import accounts, email_address, leaving, profile
from grantd.core.context import Context

class Credentials(BaseModel):
    model_config = STRICT
    email: str = Field(max_length=320, examples=["ada@example.com"])
    password: str = Field(max_length=1024, examples=["correct horse battery staple"])


class UserTokenData(BaseModel):
    user_id: str
    access_token: str = Field(description="The user token: send it as `Authorization: Bearer <token>`.")
    expires_at: str = Field(examples=["2024-07-09T22:02:52Z"], description="RFC 3339 UTC; equals the token's `exp`.")


class MessageData(BaseModel):
    message: str


class ProfileFields(BaseModel):
    """The profile fields of ``PUT /auth/user/update``: each optional; an empty string clears it.
    ``email``: a new address takes effect when its owner opens the link sent to it."""

    model_config = STRICT
    email: Text | None = Field(
        None, max_length=320, examples=["ada@example.com"],
        description="A new address is not taken at once: a link is sent to it, and the account's address changes "
        "when it is opened (the old address is told). Needs a session signed in within 5 minutes.",
    )
    first_name: Text | None = Field(None, max_length=1024, examples=["Ada"])
    last_name: Text | None = Field(None, max_length=1024, examples=["Lovelace"])
    user_name: Text | None = Field(None, max_length=1024, examples=["ada.l"])
    avatar: Text | None = Field(None, max_length=4096, examples=["https://images.example.com/ada.png"])
    phone_number: Text | None = Field(None, max_length=1024, examples=["+14155550123"])
    language: Text | None = Field(None, max_length=1024, examples=["en"])


class NewPassword(BaseModel):
    model_config = STRICT
    new_password: str = Field(max_length=1024, examples=["another good passphrase"])


class AccountMessage(BaseModel):
    message: str


class UserInfo(BaseModel):
    """The signed-in user, flat; a field not set is absent (never null)."""

    id: str = Field(examples=["6f1c…"])
    email: str = Field(None, examples=["ada@example.com"])  # type: ignore[assignment]
    first_name: str = Field(None)  # type: ignore[assignment]
    last_name: str = Field(None)  # type: ignore[assignment]
    full_name: str = Field(None, description="first_name and last_name, when either is set.")  # type: ignore[assignment]
    user_name: str = Field(None)  # type: ignore[assignment]
    avatar: str = Field(None, description="An https URL.")  # type: ignore[assignment]
    phone_number: str = Field(None, description="E.164: + and 7 to 15 digits.")  # type: ignore[assignment]
    language: str = Field(None, description="A BCP 47 tag.")  # type: ignore[assignment]
    is_email_verified: bool = Field(False, description="Whether the owner of `email` opened the link grantd sent to it.")
    is_phone_verified: bool = Field(False, description="Always false: grantd does not verify phone numbers.")
    platform: list[str] = Field(default_factory=list, description="Always empty.")


def _token_data(token: accounts.UserToken) -> dict[str, str]:
    return {"user_id": token.user_id, "access_token": token.access_token, "expires_at": rfc3339(token.expires_at)}


async def signup(body: Credentials, request: Request, ctx: Annotated[Context, Depends(context)]) -> Response:
    token = await accounts.sign_up(ctx, body.email, body.password, address=client_address(request))
    return envelope(_token_data(token), no_store=True)  # v1 only: v2 signs up on the hosted page


async def login(body: Credentials, request: Request, ctx: Annotated[Context, Depends(context)]) -> Response:
    token = await accounts.log_in(ctx, body.email, body.password, address=client_address(request))
    # Both SDKs: v1's envelope, and v2's top-level token (the same one) and platforms beside it.
    body = {"data": _token_data(token), "status_code": 200, "token": token.access_token, "platforms": []}
    return JSONBody(body, 200, NO_STORE)


async def logout(
    user: Annotated[accounts.Principal, Depends(current_user)], ctx: Annotated[Context, Depends(context)]
) -> Response:
    await accounts.log_out(ctx, user)
    return envelope({"message": "Logged out."})


# ---------------------------------------------------------------- v2: the user's own account


async def user_info(user_id: Annotated[str, Depends(account_holder)], ctx: Annotated[Context, Depends(context)]) -> Response:
    person = await profile.profile_of(ctx, user_id)
    info = {
        "id": person.id,
        "email": person.email,
        **{name: value for name, value in person.fields().items() if value is not None},
        "is_email_verified": person.email_verified,
        "is_phone_verified": False,
        "platform": [],
    }
    if person.full_name is not None:
        info["full_name"] = person.full_name
    return JSONBody(info, 200, NO_STORE)


async def update_user(
    body: ProfileFields,
    request: Request,
    user: Annotated[accounts.Principal, Depends(current_user)],
    ctx: Annotated[Context, Depends(context)],
) -> Response:
    address = client_address(request)
    changes = body.model_dump()
    profile.validate(changes)  # every field checked before anything is done
    changing_email = bool(changes["email"]) and await accounts.request_email_change(
        ctx, user, changes["email"], address=address
    )
    changed = await profile.update(ctx, user, changes, address=address)
    message = "Profile updated." if changed else "Profile unchanged."
    if changing_email:
        message += f" {email_address.CHANGE_SENT}"
    return JSONBody({"message": message})


async def update_password(
    body: NewPassword,
    request: Request,
    user: Annotated[accounts.Principal, Depends(current_user)],
    ctx: Annotated[Context, Depends(context)],
) -> Response:
    await accounts.change_password_signed_in_now(ctx, user, body.new_password, address=client_address(request))
    return JSONBody({"message": "Password changed. Every other session was signed out."}, 200, NO_STORE)


class AccountExport(BaseModel):
    """Everything grantd holds about the signed-in account: the JSON Schema
    docs/schemas/account-export.json describes it whole."""

    format: str = Field(examples=[leaving.EXPORT_FORMAT])
    version: int = Field(examples=[leaving.EXPORT_VERSION])
    issuer: str
    exported_at: int = Field(description="Unix seconds.")
    profile: dict[str, object]
    apps: list[dict[str, object]] = Field(description="The apps the account owns, without their keys or secrets.")
    consents: list[dict[str, object]]
    sessions: list[dict[str, object]] = Field(description="Sign-ins: their times only.")
    audit_events: list[dict[str, object]]


async def export_account(
    request: Request,
    user: Annotated[accounts.Principal, Depends(current_user)],
    ctx: Annotated[Context, Depends(context)],
) -> Response:
    data = await leaving.export_signed_in_now(ctx, user, address=client_address(request))
    return JSONBody(data, 200, NO_STORE)


async def forgot_password(
    request: Request,
    ctx: Annotated[Context, Depends(context)],
    email: Annotated[str, Query(max_length=320, examples=["ada@example.com"])],
) -> Response:
    """Neucron v2's ``forgotPassword``: the email in the query, no body; the same answer whether or
    not the address has an account."""
    await accounts.request_password_reset(ctx, email, address=client_address(request))
    return JSONBody({"message": accounts.RESET_REQUESTED}, 200, NO_STORE)
