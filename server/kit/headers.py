"""Security headers on every HTTP response the API sends (JSON, files, the docs pages).

A response that sets one of these itself (image files carry their own sandboxing CSP)
keeps its own value.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# One year; sent only when the public URL is https, so a plain-http lab install is
# never pinned to a scheme it cannot serve.
HSTS_MAX_AGE = 365 * 24 * 3600


def security_headers(*, https: bool) -> list[tuple[str, str]]:
    headers = [
        # Browsers must not second-guess the Content-Type (an upload served as an image
        # must never run as HTML or script).
        ("X-Content-Type-Options", "nosniff"),
        # No page may frame ours (clickjacking); the CSP form is the current one, the
        # X-Frame-Options form is for older browsers.
        ("X-Frame-Options", "DENY"),
        ("Content-Security-Policy", "frame-ancestors 'none'"),
        # URLs carry project and image ids; they stay inside the lab.
        ("Referrer-Policy", "no-referrer"),
    ]
    if https:
        headers.append(("Strict-Transport-Security", f"max-age={HSTS_MAX_AGE}"))
    return headers


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp, *, https: bool) -> None:
        self.app = app
        self.headers = security_headers(https=https)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self.headers:
                    if name not in headers:
                        headers.append(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)
