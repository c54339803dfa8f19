"""``JSONBody``: the one JSON response class of both dialects' API answers.

A Starlette ``Response``, built in one step: the body encoded by orjson and the header list
written out directly. Starlette's generic constructor (``render``, then header normalisation)
and the standard library's encoder cost the token endpoint more than the fields they produce.
Bodies are compact UTF-8 JSON, as ``JSONResponse`` writes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from starlette.responses import Response

_CONTENT_TYPE = (b"content-type", b"application/json")


class JSONBody(Response):
    media_type = "application/json"

    def __init__(self, content: Any, status_code: int = 200, headers: Mapping[str, str] | None = None) -> None:
        self.status_code = status_code
        self.background = None
        self.body = orjson.dumps(content)
        raw = [(b"content-length", str(len(self.body)).encode()), _CONTENT_TYPE]
        if headers:
            raw += [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
        self.raw_headers = raw

