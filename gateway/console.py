"""The console: a browser view of the API for admins, auditors and operators.

Static files only (``gateway/console/``: one page, one ES module, one stylesheet), served with
a Content-Security-Policy that lets the page load nothing but them and talk to nothing but this
gateway. The page holds the caller's key in ``sessionStorage`` and sends it as the bearer header
of the API calls it makes; the key never travels in a URL, so it reaches no log.
"""

from __future__ import annotations

from pathlib import Path

from werkzeug.wrappers import Request, Response

from gateway.http import api
from kernel.errors import NotFound

FOLDER = Path(__file__).parent / "console"
# Served by name from this table only: a path from the request never reaches the file system.
ASSETS: dict[str, str] = {
    "app.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
    "icon.svg": "image/svg+xml",
}
POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
HEADERS = {
    "Content-Security-Policy": POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def _read(name: str) -> bytes:
    return (FOLDER / name).read_bytes()


class ConsoleRoutes:
    """Mixed into the gateway service: the console's page and its assets."""

    @api("GET", "/console", documented=False)
    def console_page(self, request: Request) -> Response:
        return Response(
            _read("index.html"), headers=HEADERS, content_type="text/html; charset=utf-8"
        )

    @api("GET", "/console/<string:asset>", documented=False)
    def console_asset(self, request: Request, asset: str) -> Response:
        content_type = ASSETS.get(asset)
        if content_type is None:
            raise NotFound("no such console file")
        return Response(_read(asset), headers=HEADERS, content_type=content_type)
