"""The widget's two scripts: read once at startup, gzipped and hashed; served from memory.

Both are built from ``widget/src/`` by ``make widget`` (esbuild: bundled and minified) and served
as they are. ``widget.js`` is the core every page loads; ``/widget.js`` is the URL shops embed, so
it is cached briefly (five minutes), and the content-hashed ``/widget.<hash>.js`` never changes and
is cached for a year. ``widget-overlay.js`` draws offers; the core loads it when the first offer
arrives, from ``/widget-overlay.<hash>.js`` (cached for a year), a path the build writes into the
core. Every response negotiates gzip, carries an ETag per encoding and answers ``If-None-Match``
with 304.
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

MEDIA_TYPE = "text/javascript; charset=utf-8"
SHORT_CACHE = "public, max-age=300"
IMMUTABLE_CACHE = "public, max-age=31536000, immutable"
HASH_LENGTH = 12  # as widget/build.mjs, which writes the overlay's hashed path into the core
CORE = "widget"
OVERLAY = "widget-overlay"


@dataclass(frozen=True, slots=True)
class WidgetAsset:
    name: str
    body: bytes
    gzipped: bytes
    digest: str

    @property
    def hashed_path(self) -> str:
        return f"/{self.name}.{self.digest}.js"

    def etag(self, gzipped: bool) -> str:
        return f'"{self.digest}-gz"' if gzipped else f'"{self.digest}"'


def build_asset(body: bytes, name: str = CORE) -> WidgetAsset:
    return WidgetAsset(
        name=name,
        body=body,
        gzipped=gzip.compress(body, compresslevel=9, mtime=0),
        digest=hashlib.sha256(body).hexdigest()[:HASH_LENGTH],
    )


def load_asset(path: Path) -> WidgetAsset | None:
    """The script at ``path`` (named after its file), or None when it is missing."""
    try:
        body = path.read_bytes()
    except FileNotFoundError:
        return None
    return build_asset(body, path.name.removesuffix(".js"))


def accepts_gzip(header: str) -> bool:
    """Whether an ``Accept-Encoding`` header allows gzip (``gzip;q=0`` refuses it)."""
    for part in header.lower().split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip() not in ("gzip", "*"):
            continue
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if q > 0:
            return True
    return False


def _etag_matches(header: str, etags: tuple[str, ...]) -> bool:
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    return "*" in tags or any(t in etags for t in tags)


def _respond(asset: WidgetAsset, request: Request, cache_control: str) -> Response:
    gzipped = accepts_gzip(request.headers.get("accept-encoding", ""))
    headers = {
        "Cache-Control": cache_control,
        "ETag": asset.etag(gzipped),
        "Vary": "Accept-Encoding",
        "X-Content-Type-Options": "nosniff",
        "Cross-Origin-Resource-Policy": "cross-origin",
    }
    if_none_match = request.headers.get("if-none-match")
    if if_none_match and _etag_matches(if_none_match, (asset.etag(True), asset.etag(False))):
        return Response(status_code=304, headers=headers)
    if gzipped:
        headers["Content-Encoding"] = "gzip"
    return Response(
        asset.gzipped if gzipped else asset.body, media_type=MEDIA_TYPE, headers=headers
    )


def _hashed(asset: WidgetAsset | None) -> Callable[[Request], Awaitable[Response]]:
    """The endpoint of ``asset``'s content-hashed path: any other hash is not found."""

    async def hashed_js(request: Request) -> Response:
        if asset is None or request.path_params["digest"] != asset.digest:
            return PlainTextResponse("not found", status_code=404)
        return _respond(asset, request, IMMUTABLE_CACHE)

    return hashed_js


def widget_routes(static_dir: Path) -> list[BaseRoute]:
    """``/widget.js``, ``/widget.<hash>.js`` and ``/widget-overlay.<hash>.js``, read from
    ``static_dir/widget/`` now."""
    core = load_asset(static_dir / "widget" / f"{CORE}.js")
    overlay = load_asset(static_dir / "widget" / f"{OVERLAY}.js")

    async def widget_js(request: Request) -> Response:
        if core is None:
            return PlainTextResponse("widget not built", status_code=404)
        return _respond(core, request, SHORT_CACHE)

    return [
        Route("/widget.js", widget_js),
        Route(f"/{CORE}.{{digest}}.js", _hashed(core)),
        Route(f"/{OVERLAY}.{{digest}}.js", _hashed(overlay)),
    ]
