"""The widget script: read once at startup, minified, gzipped and hashed; served from memory.

``/widget.js`` is the URL shops embed, so it is cached briefly (five minutes); the content-hashed
``/widget.<hash>.js`` never changes and is cached for a year. Both negotiate gzip, carry an ETag
per encoding and answer ``If-None-Match`` with 304.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from pathlib import Path

import rjsmin  # type: ignore[import-untyped]
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

MEDIA_TYPE = "text/javascript; charset=utf-8"
SHORT_CACHE = "public, max-age=300"
IMMUTABLE_CACHE = "public, max-age=31536000, immutable"
HASH_LENGTH = 12


def minify(source: str) -> str:
    """Strip comments and whitespace (no renaming: the output stays debuggable)."""
    return str(rjsmin.jsmin(source))


@dataclass(frozen=True, slots=True)
class WidgetAsset:
    body: bytes
    gzipped: bytes
    digest: str

    @property
    def hashed_path(self) -> str:
        return f"/widget.{self.digest}.js"

    def etag(self, gzipped: bool) -> str:
        return f'"{self.digest}-gz"' if gzipped else f'"{self.digest}"'


def build_asset(source: str) -> WidgetAsset:
    body = minify(source).encode()
    return WidgetAsset(
        body=body,
        gzipped=gzip.compress(body, compresslevel=9, mtime=0),
        digest=hashlib.sha256(body).hexdigest()[:HASH_LENGTH],
    )


def load_asset(path: Path) -> WidgetAsset | None:
    """The built asset, or None when the script is missing."""
    try:
        source = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    return build_asset(source)


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


def widget_routes(static_dir: Path) -> list[BaseRoute]:
    """``/widget.js`` and ``/widget.<hash>.js``, built from ``static_dir/widget/widget.js`` now."""
    asset = load_asset(static_dir / "widget" / "widget.js")

    async def widget_js(request: Request) -> Response:
        if asset is None:
            return PlainTextResponse("widget not built", status_code=404)
        return _respond(asset, request, SHORT_CACHE)

    async def hashed_widget_js(request: Request) -> Response:
        if asset is None or request.path_params["digest"] != asset.digest:
            return PlainTextResponse("not found", status_code=404)
        return _respond(asset, request, IMMUTABLE_CACHE)

    return [
        Route("/widget.js", widget_js),
        Route("/widget.{digest}.js", hashed_widget_js),
    ]
