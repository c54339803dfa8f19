"""The device authorization grant at the token endpoint (RFC 8628 §3.4): a device polls with its
``device_code`` until the person approved or denied its request. The rules are ``core.device``'s."""

from __future__ import annotations

from collections.abc import Awaitable, Mapping

from grantd.core import device, resources
from grantd.core.access_token import IssuedToken
from grantd.core.client_auth import ClientAuthentication, missing
from grantd.core.context import Context

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:device_code"


def token_request(
    ctx: Context, auth: ClientAuthentication, params: Mapping[str, str], address: str | None
) -> Awaitable[IssuedToken]:
    """``grant_type=urn:ietf:params:oauth:grant-type:device_code`` with ``device_code``; ``resource``
    (RFC 8707) the access token's audience, then the grant's."""
    device_code = params.get("device_code")
    if device_code is None:
        return missing(ctx, auth, "device_code")
    return device.poll(ctx, auth, device_code, address, params.get(resources.PARAMETER))
