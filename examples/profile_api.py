"""A small resource server that trusts grantd's access tokens, using grantd.sdk.

    GET  /me        needs read_profile: who the token speaks for
    PUT  /me/data   needs write_data:   stores a JSON object for that user (in memory)
    GET  /healthz   no token

Run it beside grantd (README, "Calling an API with the token"):

    GRANTD_ISSUER=http://127.0.0.1:8000 .venv/bin/uvicorn --app-dir examples profile_api:app --port 8001

Environment:

    GRANTD_ISSUER               grantd's issuer URL (default http://127.0.0.1:8000)
    PROFILE_API_AUDIENCE        the `aud` to require (default: the issuer, grantd's default audience)
    PROFILE_API_INTROSPECTION   "client_id:client_secret" of a grantd app key: also ask grantd's
                                introspection endpoint, so a revoked token is refused at once
"""

from __future__ import annotations

import os
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, HTTPException

from grantd.sdk import AccessToken, TokenVerifier, require_permissions


def verifier_from_environment() -> TokenVerifier:
    introspection = os.environ.get("PROFILE_API_INTROSPECTION")
    credentials = None
    if introspection:
        client_id, _, client_secret = introspection.partition(":")
        credentials = (client_id, client_secret)
    return TokenVerifier(
        os.environ.get("GRANTD_ISSUER", "http://127.0.0.1:8000"),
        audience=os.environ.get("PROFILE_API_AUDIENCE") or None,
        introspection=credentials,
    )


def create_app(verifier: TokenVerifier | None = None) -> FastAPI:
    app = FastAPI(title="Profile API", summary="An example resource server protected by grantd.")
    app.state.token_verifier = verifier or verifier_from_environment()
    data: dict[str, dict[str, Any]] = {}

    def user_of(token: AccessToken) -> str:
        if token.user_id is None:
            raise HTTPException(403, detail={"error": "user_required", "error_description": "This route needs a user's token."})
        return token.user_id

    @app.get("/me")
    async def me(token: Annotated[AccessToken, Depends(require_permissions("read_profile"))]) -> dict[str, Any]:
        user_id = user_of(token)
        return {
            "user_id": user_id,
            "app_id": token.app_id,
            "permissions": list(token.permissions),
            "expires_at": token.expires_at.isoformat(),
            "data": data.get(user_id, {}),
        }

    @app.put("/me/data")
    async def put_data(
        token: Annotated[AccessToken, Depends(require_permissions("write_data"))],
        body: Annotated[dict[str, Any], Body()],
    ) -> dict[str, Any]:
        user_id = user_of(token)
        data[user_id] = body
        return {"user_id": user_id, "data": body}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


app = create_app()
