"""The door every admin page goes through: a live session, a role that allows the request, and on
POST a same-origin request carrying the session's CSRF token. Handlers get an :class:`Admin`."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from ..realtime.services import Services
from ..store.audit import AuditLog
from .accounts import AccountStore, Role, User, role_at_least
from .auth import COOKIE, AdminSession, AdminSessions, Signer, clear_cookie, login_location
from .form import Form
from .web import MAX_FORM_BYTES, FormTooLarge, Templates, read_form

NOTICES = {
    "saved": "Saved.",
    "created": "Created.",
    "rotated": "A new secret was generated. Update the shop's backend with it.",
    "status": "Status changed.",
    "restored": "The earlier version was restored as a new version.",
    "duplicated": "Copied. The copy is a draft.",
    "removed": "Removed.",
    "signed_in": "Signed in.",
    "live_started": "The live offer is going out to every connected visitor now.",
    "live_stopped": "The live offer stopped. No one new gets it; offers already on screen stay"
    " until closed.",
    "winner": "The winner was declared: all traffic goes to it, and a new experiment version"
    " started. Below is the report of the experiment that just closed.",
}


@dataclass(slots=True)
class Admin:
    """One authenticated admin request."""

    request: Request
    services: Services
    templates: Templates
    user: User
    session: AdminSession
    form: Form = field(default_factory=Form)

    @property
    def can_edit(self) -> bool:
        return role_at_least(self.user.role, "editor")

    @property
    def is_owner(self) -> bool:
        return role_at_least(self.user.role, "owner")

    @property
    def accounts(self) -> AccountStore:
        return AccountStore(self.services.redis, self.services.keys)

    @property
    def audit(self) -> AuditLog:
        return AuditLog(self.services.redis, self.services.keys)

    def param(self, name: str) -> str:
        return str(self.request.path_params.get(name, ""))

    def page(self, template: str, *, status: int = 200, **context: Any) -> HTMLResponse:
        notice = NOTICES.get(self.request.query_params.get("notice", ""), "")
        parts = self.request.url.path.split("/")
        section = "campaigns" if "campaigns" in parts else (parts[2] if len(parts) > 2 else "")
        base = {
            "section": section,
            "user": self.user,
            "csrf": self.session.csrf,
            "can_edit": self.can_edit,
            "is_owner": self.is_owner,
            "notice": notice,
            "path": self.request.url.path,
        }
        return self.templates.render(template, {**base, **context}, status=status)

    def refuse(self, status: int, message: str) -> HTMLResponse:
        return self.page("error.html", status=status, status_code=status, message=message)

    async def record(
        self, action: str, target: str, *, site: str = "", before: Any = None, after: Any = None
    ) -> None:
        await self.audit.record(
            self.user.email, action, target, site=site, before=before, after=after
        )


Handler = Callable[[Admin], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]


class Guard:
    """Wraps handlers: ``guard(handler, "editor")``. POSTs need at least an editor, except the
    few that change nothing shared (``own_session=True``: signing out)."""

    def __init__(self, templates: Templates) -> None:
        self.templates = templates

    def __call__(
        self,
        handler: Handler,
        role: Role = "viewer",
        *,
        form_limit: int = MAX_FORM_BYTES,
        own_session: bool = False,
    ) -> Endpoint:
        post_role = role if own_session else _at_least_editor(role)

        async def endpoint(request: Request) -> Response:
            return await self._handle(request, handler, role, post_role, form_limit)

        endpoint.__name__ = handler.__name__
        return endpoint

    async def _handle(
        self, request: Request, handler: Handler, role: Role, post_role: Role, form_limit: int
    ) -> Response:
        services: Services = request.app.state.services
        found = await self._session(request, services)
        if found is None:
            response = RedirectResponse(
                login_location(request, expired=COOKIE in request.cookies), status_code=303
            )
            clear_cookie(request, response, COOKIE)
            return response
        user, session = found
        admin = Admin(request, services, self.templates, user, session)
        if request.method == "POST":
            refused = await self._check_post(admin, form_limit)
            if refused is not None:
                return refused
        needed = role if request.method in ("GET", "HEAD") else post_role
        if not role_at_least(user.role, needed):
            return admin.refuse(403, f"Your role ({user.role}) cannot do this.")
        return await handler(admin)

    async def _session(
        self, request: Request, services: Services
    ) -> tuple[User, AdminSession] | None:
        cookie = request.cookies.get(COOKIE, "")
        if not cookie:
            return None
        signer = Signer(services.settings.secret_key)
        sessions = AdminSessions(services.redis, services.keys, signer)
        session = await sessions.load(cookie)
        if session is None:
            return None
        user = await AccountStore(services.redis, services.keys).get(session.email)
        if user is None or user.generation != session.generation:
            await sessions.end(session)
            return None
        return user, session

    async def _check_post(self, admin: Admin, form_limit: int) -> Response | None:
        if not same_origin(admin.request):
            return admin.refuse(403, "This request came from another site.")
        try:
            admin.form = await read_form(admin.request, form_limit)
        except FormTooLarge:
            return admin.refuse(413, "The form is too large.")
        token = admin.form.get("csrf")
        if not token or not hmac.compare_digest(token, admin.session.csrf):
            return admin.refuse(
                403, "This form has expired or was not sent from the admin. Reload and try again."
            )
        return None


def same_origin(request: Request) -> bool:
    """A browser's Origin header, when present, must be this server."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    return origin == f"{request.url.scheme}://{request.url.netloc}"


def _at_least_editor(role: Role) -> Role:
    return role if role_at_least(role, "editor") else "editor"
