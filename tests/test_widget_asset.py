"""The widget script as served: size budget, hashed URL, gzip negotiation, validators, caching."""

from __future__ import annotations

import asyncio
import gzip
import re
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from widget_server.realtime.widget_asset import (
    IMMUTABLE_CACHE,
    SHORT_CACHE,
    accepts_gzip,
    build_asset,
    load_asset,
    widget_routes,
)
from widget_server.shipped import STATIC_DIR

from .support import ServerProcess

SOURCE = STATIC_DIR / "widget" / "widget.js"
BUDGET_BYTES = 8 * 1024


def _get(server: ServerProcess, path: str, **headers: str) -> httpx.Response:
    with httpx.Client(base_url=server.url, timeout=5) as client:
        request = client.build_request("GET", path, headers=headers)
        response = client.send(request, stream=True)
        response.read()  # .content is decoded; _wire_bytes keeps the bytes as sent
        return response


def _wire_bytes(server: ServerProcess, path: str, **headers: str) -> tuple[httpx.Response, bytes]:
    with (
        httpx.Client(base_url=server.url, timeout=5) as client,
        client.stream("GET", path, headers=headers) as response,
    ):
        return response, b"".join(response.iter_raw())


def test_minified_and_gzipped_widget_fits_the_size_budget() -> None:
    asset = build_asset(SOURCE.read_text())
    assert len(asset.gzipped) <= BUDGET_BYTES, f"{len(asset.gzipped)} bytes gzipped"
    assert len(asset.body) < len(SOURCE.read_bytes())
    assert gzip.decompress(asset.gzipped) == asset.body
    # Comments (the offer documentation) do not ship.
    assert b"Offer object" not in asset.body


def test_served_gzip_body_is_the_budgeted_one(server: ServerProcess) -> None:
    asset = build_asset(SOURCE.read_text())
    response, wire = _wire_bytes(server, "/widget.js", **{"Accept-Encoding": "gzip"})
    assert response.status_code == 200
    assert response.headers["content-encoding"] == "gzip"
    assert len(wire) <= BUDGET_BYTES
    assert gzip.decompress(wire) == asset.body


def test_widget_js_headers(server: ServerProcess) -> None:
    response = _get(server, "/widget.js", **{"Accept-Encoding": "gzip, deflate, br"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert response.headers["cache-control"] == SHORT_CACHE == "public, max-age=300"
    assert response.headers["vary"] == "Accept-Encoding"
    assert response.headers["content-encoding"] == "gzip"
    assert re.fullmatch(r'"[0-9a-f]{12}-gz"', response.headers["etag"])
    assert response.content.startswith(b"(()=>{")


def test_identity_when_gzip_is_not_accepted(server: ServerProcess) -> None:
    asset = build_asset(SOURCE.read_text())
    for header in ("identity", "gzip;q=0, identity", "br"):
        response, wire = _wire_bytes(server, "/widget.js", **{"Accept-Encoding": header})
        assert "content-encoding" not in response.headers, header
        assert response.headers["vary"] == "Accept-Encoding"
        assert response.headers["etag"] == f'"{asset.digest}"'
        assert wire == asset.body


def test_hashed_url_is_immutable(server: ServerProcess) -> None:
    asset = build_asset(SOURCE.read_text())
    response = _get(server, asset.hashed_path, **{"Accept-Encoding": "gzip"})
    assert response.status_code == 200
    assert response.headers["cache-control"] == IMMUTABLE_CACHE
    assert "immutable" in response.headers["cache-control"]
    assert "max-age=31536000" in response.headers["cache-control"]
    assert response.content == asset.body
    assert _get(server, "/widget.0123456789ab.js").status_code == 404
    assert _get(server, "/widget.js").content == asset.body


def test_etag_revalidation_answers_304(server: ServerProcess) -> None:
    first = _get(server, "/widget.js", **{"Accept-Encoding": "gzip"})
    etag = first.headers["etag"]
    again = _get(server, "/widget.js", **{"Accept-Encoding": "gzip", "If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag
    assert again.headers["cache-control"] == SHORT_CACHE
    assert again.headers["vary"] == "Accept-Encoding"
    # A weak validator or a list containing the tag matches too; another tag does not.
    weak = _get(server, "/widget.js", **{"If-None-Match": f'"x", W/{etag}'})
    assert weak.status_code == 304
    stale = _get(server, "/widget.js", **{"If-None-Match": '"0123456789ab"'})
    assert stale.status_code == 200


def test_head_request(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=5) as client:
        response = client.head("/widget.js")
    assert response.status_code == 200
    assert response.headers["cache-control"] == SHORT_CACHE


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("gzip", True),
        ("GZIP", True),
        ("deflate, gzip;q=0.5", True),
        ("*", True),
        ("gzip;q=0", False),
        ("gzip; q=0.0", False),
        ("identity", False),
        ("", False),
        ("gzip;q=bogus", False),
    ],
)
def test_accepts_gzip(header: str, expected: bool) -> None:
    assert accepts_gzip(header) is expected


def _asgi_get(app: Starlette, path: str, **headers: str) -> httpx.Response:
    async def get() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get(path, headers=headers)

    return asyncio.run(get())


def test_missing_script_answers_404(tmp_path: Path) -> None:
    assert load_asset(tmp_path / "widget" / "widget.js") is None
    assert _asgi_get(Starlette(routes=widget_routes(tmp_path)), "/widget.js").status_code == 404


def test_script_is_read_once_at_startup(tmp_path: Path) -> None:
    script = tmp_path / "widget" / "widget.js"
    script.parent.mkdir()
    script.write_text("/* doc */\n(() => {\n  const a = 1;\n})();\n")
    app = Starlette(routes=widget_routes(tmp_path))
    script.write_text("changed();")
    response = _asgi_get(app, "/widget.js", **{"Accept-Encoding": "identity"})
    assert response.text == "(()=>{const a=1;})();"
