"""Caps request bodies before they are buffered in memory.

JSON endpoints get ``max_json_bytes``; streaming upload endpoints (which enforce their
own per-file caps while writing to disk) get ``max_request_bytes``; dataset imports, one
zip of up to ``max_import_bytes``, get that plus room for the multipart envelope.
"""

from __future__ import annotations

import re

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

UPLOAD_PATHS = re.compile(r"^/api/(projects/[^/]+/images|models|models/[^/]+/predict)/?$")
IMPORT_PATHS = re.compile(r"^/api/projects/[^/]+/imports/?$")
# Multipart boundaries and part headers around the one zip of an import.
IMPORT_ENVELOPE_BYTES = 1024 * 1024


class BodyLimitMiddleware:
    def __init__(
        self, app: ASGIApp, *, json_limit: int, upload_limit: int, import_limit: int | None = None
    ) -> None:
        self.app = app
        self.json_limit = json_limit
        self.upload_limit = upload_limit
        self.import_limit = upload_limit if import_limit is None else import_limit

    def _limit(self, path: str) -> int:
        if IMPORT_PATHS.match(path):
            return self.import_limit
        if UPLOAD_PATHS.match(path):
            return self.upload_limit
        return self.json_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit(scope["path"])
        declared = None
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = None
                break
        if declared is not None and declared > limit:
            response = JSONResponse(
                {"detail": f"request body too large (limit {limit} bytes)"}, status_code=413
            )
            await response(scope, receive, send)
            return

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(413, f"request body too large (limit {limit} bytes)")
            return message

        await self.app(scope, limited_receive, send)
