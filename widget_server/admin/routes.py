"""Every route of the admin, each response with the admin's security headers (a strict CSP;
scripts are static files)."""

from __future__ import annotations

from starlette.responses import PlainTextResponse
from starlette.routing import BaseRoute, Mount, Router
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from . import (
    views_accounts,
    views_campaigns,
    views_catalog,
    views_live,
    views_mail,
    views_report,
    views_sites,
    views_versions,
    views_visitors,
)
from .guard import Guard
from .views_login import LoginViews
from .web import ADMIN, STATIC_DIR, SecurityHeaders, Templates


def admin_routes() -> list[BaseRoute]:
    """``/admin`` and everything under it."""
    templates = Templates()
    guard = Guard(templates)
    routes: list[BaseRoute] = [
        *LoginViews(templates, guard).routes(),
        *views_sites.routes(guard),
        *views_campaigns.routes(guard),
        *views_versions.routes(guard),
        *views_report.routes(guard),
        *views_live.routes(guard),
        *views_visitors.routes(guard),
        *views_catalog.routes(guard),
        *views_mail.routes(guard),
        *views_accounts.routes(guard),
        Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="admin-static"),
    ]
    return [Mount(ADMIN, app=SecurityHeaders(Router(routes=routes, default=_not_found)))]


async def _not_found(scope: Scope, receive: Receive, send: Send) -> None:
    # Answered here rather than by the outer app, so that it carries the admin's headers too.
    await PlainTextResponse("Not found", status_code=404)(scope, receive, send)
