"""The widget's scripts as served: size budgets, the overlay the core loads, built files that match
their sources, hashed URLs, gzip negotiation, validators, caching."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from widget_server.realtime.widget_asset import (
    IMMUTABLE_CACHE,
    SHORT_CACHE,
    WidgetAsset,
    accepts_gzip,
    load_asset,
    widget_routes,
)
from widget_server.shipped import STATIC_DIR

from ..support import ROOT, ServerProcess

BUILT = STATIC_DIR / "widget"
CORE_FILE = BUILT / "widget.js"
OVERLAY_FILE = BUILT / "widget-overlay.js"
# Gzipped bytes. The core loads on every page of every shop; the overlay only with an offer.
CORE_BUDGET = 6 * 1024
OVERLAY_BUDGET = 5 * 1024
SOURCES = ROOT / "widget"
BUILD_INPUTS = ("build.mjs", "package.json", "package-lock.json")
OVERLAY_PATH = re.compile(rb"/widget-overlay\.([0-9a-f]{12})\.js")
STALE = "the built widget does not match widget/: run `make widget` and commit the result"


def _asset(path: Path) -> WidgetAsset:
    asset = load_asset(path)
    assert asset is not None, f"{path} is missing: run `make widget`"
    return asset


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


# --- the built files ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "budget"), [(CORE_FILE, CORE_BUDGET), (OVERLAY_FILE, OVERLAY_BUDGET)]
)
def test_gzipped_scripts_fit_their_size_budgets(path: Path, budget: int) -> None:
    asset = _asset(path)
    print(f"{path.name}: {len(asset.body)} B, {len(asset.gzipped)} B gzipped (budget {budget})")
    assert len(asset.gzipped) <= budget, f"{path.name}: {len(asset.gzipped)} B gzipped"
    assert gzip.decompress(asset.gzipped) == asset.body
    # Built minified: the source hash, then the code on one line; the sources' documentation
    # comments do not ship.
    assert len(asset.body.splitlines()) == 2
    assert b"Offer object" not in asset.body


def source_hash() -> str:
    """The hash widget/build.mjs records: SHA-256 of "<sha256>  <path>\\n" per input, sorted."""
    paths = sorted(
        [p.relative_to(SOURCES).as_posix() for p in (SOURCES / "src").rglob("*") if p.is_file()]
        + list(BUILD_INPUTS)
    )
    lines = "".join(
        f"{hashlib.sha256((SOURCES / path).read_bytes()).hexdigest()}  {path}\n" for path in paths
    )
    return hashlib.sha256(lines.encode()).hexdigest()


def test_built_scripts_match_the_sources() -> None:
    """The core records the hash of every input, the overlay's sources among them; the core names
    the overlay by the hash of its bytes (the next test), so the pair is checked."""
    first_line = CORE_FILE.read_text().partition("\n")[0]
    recorded = re.search(r"\bsrc:([0-9a-f]{64})\b", first_line)
    assert recorded, f"{CORE_FILE.name} records no source hash; {STALE}"
    assert recorded.group(1) == source_hash(), STALE


@pytest.mark.skipif(
    shutil.which("node") is None or not (SOURCES / "node_modules" / "esbuild").is_dir(),
    reason="needs node and widget/node_modules (`make widget`)",
)
def test_building_again_gives_the_same_bytes(tmp_path: Path) -> None:
    subprocess.run(
        ["node", "build.mjs", "--outdir", str(tmp_path)],
        cwd=SOURCES,
        check=True,
        capture_output=True,
        timeout=120,
    )
    for path in (CORE_FILE, OVERLAY_FILE):
        assert (tmp_path / path.name).read_bytes() == path.read_bytes(), f"{path.name}: {STALE}"


def test_core_names_the_overlay_by_its_hash() -> None:
    core, overlay = _asset(CORE_FILE), _asset(OVERLAY_FILE)
    assert [m.group(0).decode() for m in OVERLAY_PATH.finditer(core.body)] == [overlay.hashed_path]
    assert overlay.hashed_path == f"/widget-overlay.{overlay.digest}.js"


# --- serving --------------------------------------------------------------------------------------


def test_served_gzip_bodies_are_the_budgeted_ones(server: ServerProcess) -> None:
    core, overlay = _asset(CORE_FILE), _asset(OVERLAY_FILE)
    for path, asset, budget in [
        ("/widget.js", core, CORE_BUDGET),
        (overlay.hashed_path, overlay, OVERLAY_BUDGET),
    ]:
        response, wire = _wire_bytes(server, path, **{"Accept-Encoding": "gzip"})
        assert response.status_code == 200, path
        assert response.headers["content-encoding"] == "gzip"
        assert len(wire) <= budget
        assert gzip.decompress(wire) == asset.body


def test_the_overlay_the_core_loads_is_served(server: ServerProcess) -> None:
    core = _get(server, "/widget.js").content
    match = OVERLAY_PATH.search(core)
    assert match is not None
    response = _get(server, match.group(0).decode(), **{"Accept-Encoding": "gzip"})
    assert response.status_code == 200
    assert response.content == OVERLAY_FILE.read_bytes()
    assert response.headers["content-type"].startswith("text/javascript")
    assert response.headers["cache-control"] == IMMUTABLE_CACHE
    assert response.headers["vary"] == "Accept-Encoding"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cross-origin-resource-policy"] == "cross-origin"
    assert response.headers["etag"] == f'"{match.group(1).decode()}-gz"'
    again = _get(server, match.group(0).decode(), **{"If-None-Match": response.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    # Only the hashed path of the overlay that is there.
    assert _get(server, "/widget-overlay.0123456789ab.js").status_code == 404
    assert _get(server, "/widget-overlay.js").status_code == 404


def test_widget_js_headers(server: ServerProcess) -> None:
    response = _get(server, "/widget.js", **{"Accept-Encoding": "gzip, deflate, br"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert response.headers["cache-control"] == SHORT_CACHE == "public, max-age=300"
    assert response.headers["vary"] == "Accept-Encoding"
    assert response.headers["content-encoding"] == "gzip"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cross-origin-resource-policy"] == "cross-origin"
    assert re.fullmatch(r'"[0-9a-f]{12}-gz"', response.headers["etag"])
    assert response.content.startswith(b"/* exit-widget src:")
    assert b"\n(()=>{" in response.content


def test_identity_when_gzip_is_not_accepted(server: ServerProcess) -> None:
    asset = _asset(CORE_FILE)
    for header in ("identity", "gzip;q=0, identity", "br"):
        response, wire = _wire_bytes(server, "/widget.js", **{"Accept-Encoding": header})
        assert "content-encoding" not in response.headers, header
        assert response.headers["vary"] == "Accept-Encoding"
        assert response.headers["etag"] == f'"{asset.digest}"'
        assert wire == asset.body


def test_hashed_url_is_immutable(server: ServerProcess) -> None:
    asset = _asset(CORE_FILE)
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


def test_missing_scripts_answer_404(tmp_path: Path) -> None:
    assert load_asset(tmp_path / "widget" / "widget.js") is None
    app = Starlette(routes=widget_routes(tmp_path))
    assert _asgi_get(app, "/widget.js").status_code == 404
    assert _asgi_get(app, "/widget-overlay.0123456789ab.js").status_code == 404


def test_scripts_are_read_once_at_startup_and_served_as_they_are(tmp_path: Path) -> None:
    folder = tmp_path / "widget"
    folder.mkdir()
    core = b"/* doc */\n(() => {\n  const a = 1;\n})();\n"
    overlay = b"(() => { overlay(); })();"
    (folder / "widget.js").write_bytes(core)
    (folder / "widget-overlay.js").write_bytes(overlay)
    app = Starlette(routes=widget_routes(tmp_path))
    (folder / "widget.js").write_text("changed();")
    (folder / "widget-overlay.js").write_text("changed();")
    response = _asgi_get(app, "/widget.js", **{"Accept-Encoding": "identity"})
    assert response.content == core
    digest = hashlib.sha256(overlay).hexdigest()[:12]
    response = _asgi_get(app, f"/widget-overlay.{digest}.js", **{"Accept-Encoding": "identity"})
    assert response.content == overlay
