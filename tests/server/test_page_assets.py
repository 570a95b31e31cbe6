"""``GET /`` and ``GET /static/...`` over a real socket: the page's Content-Security-Policy, its
files with their content types and validators, and nothing outside the package's web folder."""

from __future__ import annotations

import re
from importlib import resources

import aiohttp
import pytest

from tests.conftest import Running

PAGE_FILES = [
    "app.js",
    "markdown.js",
    "view.js",
    "storage.js",
    "uploads.js",
    "page.css",
    "icon.svg",
    "vendor/marked/marked.umd.js",
    "vendor/dompurify/purify.min.js",
]


async def test_the_page_allows_only_its_own_scripts_and_no_framing(
    gateway: Running, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{gateway.http}/") as resp:
        assert resp.status == 200
        assert resp.content_type == "text/html"
        csp = {
            d.split()[0]: d.split()[1:] for d in resp.headers["Content-Security-Policy"].split("; ")
        }
        page = await resp.text()
    assert csp["script-src"] == ["'self'"] and csp["style-src"] == ["'self'"]
    assert csp["frame-ancestors"] == ["'none'"] and csp["default-src"] == ["'none'"]
    assert csp["connect-src"] == ["'self'"]
    assert "'unsafe-inline'" not in str(csp) and "'unsafe-eval'" not in str(csp)
    # no inline script or style left in the page: every one is a file of the package
    assert not re.search(r"<script(?![^>]*\bsrc=)", page) and "<style" not in page
    assert not re.search(r"<[^>]*\s(?:style|on\w+)=", page)  # no inline style or handler
    for src in re.findall(r'(?:src|href)="(/static/[^"]+)"', page):
        async with http.get(f"{gateway.http}{src}") as asset:
            assert asset.status == 200, src


@pytest.mark.parametrize("name", PAGE_FILES)
async def test_static_files_have_their_type_and_revalidate(
    gateway: Running, http: aiohttp.ClientSession, name: str
) -> None:
    url = f"{gateway.http}/static/{name}"
    async with http.get(url) as resp:
        assert resp.status == 200
        body = await resp.read()
        etag = resp.headers["ETag"]
        assert resp.headers["Cache-Control"] == "no-cache"
        expected = {"js": "text/javascript", "css": "text/css", "svg": "image/svg+xml"}
        assert resp.content_type == expected[name.rsplit(".", 1)[1]]
    assert body == resources.files("qa_ws_cli.server.web").joinpath(name).read_bytes()
    async with http.get(url, headers={"If-None-Match": etag}) as again:
        assert again.status == 304 and await again.read() == b""
        assert again.headers["ETag"] == etag
    async with http.get(url, headers={"If-None-Match": '"stale"'}) as changed:
        assert changed.status == 200 and await changed.read() == body
    async with http.get(url, headers={"If-None-Match": "*"}) as any_version:
        assert any_version.status == 304


@pytest.mark.parametrize(
    "path",
    [
        "/static/",
        "/static/index.html",  # the page is served at / with its CSP, not as a file
        "/static/__init__.py",
        "/static/vendor/README.md",
        "/static/../handlers.py",
        "/static/%2e%2e/handlers.py",
        "/static/..%2fhandlers.py",
        "/static/vendor/marked/LICENSE",
        "/static/nope.js",
    ],
)
async def test_only_the_page_files_are_served(
    gateway: Running, http: aiohttp.ClientSession, path: str
) -> None:
    async with http.get(f"{gateway.http}{path}") as resp:
        assert resp.status == 404
        assert "Traceback" not in await resp.text()


def test_the_vendored_libraries_ship_with_their_licenses() -> None:
    vendor = resources.files("qa_ws_cli.server.web").joinpath("vendor")
    for name in ("marked/LICENSE", "dompurify/LICENSE", "dompurify/LICENSE-MPL", "README.md"):
        assert vendor.joinpath(name).is_file(), name
    notes = vendor.joinpath("README.md").read_text("utf-8")
    assert "marked" in notes and "18.2.1" in notes and "3.5.0" in notes
