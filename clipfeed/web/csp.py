"""Security headers on every HTML response, whichever router made it.

Pages built by clipfeed.web set their own (stricter or looser, e.g. the embeddable player);
this middleware fills in the strict policy wherever an HTML response has none, so a new page
cannot ship without a Content-Security-Policy. Pure ASGI: it never buffers bodies, so media
streaming and Server-Sent Events pass through untouched.
"""

from __future__ import annotations

from clipfeed.web.pages import CONTENT_SECURITY_POLICY

_HEADERS = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
)


class ContentSecurityPolicyMiddleware:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                content_type = next((value for name, value in headers if name.lower() == b"content-type"), b"")
                if content_type.startswith(b"text/html"):
                    headers += [(name, value) for name, value in _HEADERS if name not in names]
                    message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
