"""The browser chat page and the static files it loads, read once from the package.

Every asset is loaded into memory when the app is made (about 200 KB), so a request never
touches the disk and a name outside this package's ``web`` folder cannot be asked for: the
static route serves the names in ``Assets.files`` and nothing else.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

from aiohttp import web

# what the page is allowed to load: its own scripts and styles, images it makes (thumbnails of
# attachments) and the WebSocket and upload endpoint of the server that served it
PAGE_CSP = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' blob:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
CONTENT_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# revalidated on every load (a 304 costs a few bytes), so an upgraded package is used at once
CACHE_CONTROL = "no-cache"


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: str
    etag: str  # a strong validator: the content's hash, quoted


def _asset(body: bytes, content_type: str) -> Asset:
    return Asset(body, content_type, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')


def _walk(folder: Traversable, prefix: str = "") -> dict[str, Asset]:
    found: dict[str, Asset] = {}
    for entry in folder.iterdir():
        name = prefix + entry.name
        if entry.is_dir():
            found.update(_walk(entry, name + "/"))
            continue
        suffix = "." + entry.name.rsplit(".", 1)[-1] if "." in entry.name else ""
        if suffix in CONTENT_TYPES:
            found[name] = _asset(entry.read_bytes(), CONTENT_TYPES[suffix])
    return found


@dataclass(frozen=True)
class Assets:
    page: Asset
    files: dict[str, Asset]  # by path under /static/, e.g. "app.js", "vendor/marked/marked.umd.js"

    @classmethod
    def load(cls) -> Assets:
        folder = resources.files(__name__)
        page = _asset(folder.joinpath("index.html").read_bytes(), "text/html; charset=utf-8")
        return cls(page, _walk(folder))


ASSETS = web.AppKey("assets", Assets)


def respond(request: web.Request, asset: Asset, headers: dict[str, str]) -> web.Response:
    """The asset, or ``304 Not Modified`` when the browser already holds this version."""
    headers = {"ETag": asset.etag, "Cache-Control": CACHE_CONTROL, **headers}
    offered = [
        tag.strip().removeprefix("W/")
        for tag in request.headers.get("If-None-Match", "").split(",")
    ]
    if asset.etag in offered or "*" in offered:  # RFC 9110 13.1.2: "*" matches any version
        return web.Response(status=304, headers=headers)
    return web.Response(body=asset.body, headers={"Content-Type": asset.content_type, **headers})
