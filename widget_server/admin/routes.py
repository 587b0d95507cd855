"""Every route of the admin, each response with the admin's security headers (a strict CSP;
scripts are static files)."""

from __future__ import annotations

from starlette.responses import PlainTextResponse
from starlette.routing import BaseRoute, Mount, Router
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from .guard import Guard
from .pages import (
    accounts,
    campaigns,
    catalog,
    dashboard,
    gallery,
    live,
    mail,
    mail_fields,
    report,
    sites,
    versions,
    visitors,
)
from .pages.login import LoginViews
from .web import ADMIN, STATIC_DIR, SecurityHeaders, Templates


def admin_routes() -> list[BaseRoute]:
    """``/admin`` and everything under it."""
    templates = Templates()
    guard = Guard(templates)
    routes: list[BaseRoute] = [
        *LoginViews(templates, guard).routes(),
        *sites.routes(guard),
        *dashboard.routes(guard),
        *gallery.routes(guard),
        *campaigns.routes(guard),
        *versions.routes(guard),
        *report.routes(guard),
        *live.routes(guard),
        *visitors.routes(guard),
        *catalog.routes(guard),
        *mail_fields.routes(guard),
        *mail.routes(guard),
        *accounts.routes(guard),
        Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="admin-static"),
    ]
    return [Mount(ADMIN, app=SecurityHeaders(Router(routes=routes, default=_not_found)))]


async def _not_found(scope: Scope, receive: Receive, send: Send) -> None:
    # Answered here rather than by the outer app, so that it carries the admin's headers too.
    await PlainTextResponse("Not found", status_code=404)(scope, receive, send)
