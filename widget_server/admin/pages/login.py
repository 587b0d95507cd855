"""The sign-in and sign-out pages.

The sign-in form has no session yet, so its CSRF token is the HMAC of a random value kept in a
short-lived cookie (a signed double submit).
"""

from __future__ import annotations

import hmac
import secrets

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from ...realtime.services import Services
from ..accounts import AccountStore
from ..auth import (
    COOKIE,
    DEVICE_COOKIE,
    DEVICE_COOKIE_S,
    LOGIN_COOKIE,
    AdminSessions,
    LoginThrottle,
    Signer,
    clear_cookie,
    client_ip,
    device_cookie,
    safe_next,
    set_cookie,
    trusted_device,
)
from ..guard import Admin, Guard, same_origin
from ..web import ADMIN, FormTooLarge, Templates, read_form


class LoginViews:
    def __init__(self, templates: Templates, guard: Guard) -> None:
        self.templates = templates
        self.guard = guard

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/login", self.login, methods=["GET", "POST"]),
            Route("/logout", self.guard(self.logout, own_session=True), methods=["POST"]),
        ]

    async def login(self, request: Request) -> Response:
        services: Services = request.app.state.services
        signer = Signer(services.settings.secret_key)
        if request.method == "GET":
            return self._form(request, signer)
        try:
            form = await read_form(request)
        except FormTooLarge:
            return self._form(request, signer, error="The form is too large.", status=413)
        nonce = request.cookies.get(LOGIN_COOKIE, "")
        token = form.get("csrf")
        expected = signer.mac("login", nonce) if nonce else ""
        if not same_origin(request) or not token or not hmac.compare_digest(token, expected):
            return self._form(
                request, signer, error="The sign-in form expired. Please try again.", status=403,
                next_url=form.get("next"),
            )  # fmt: skip
        email, password = form.get("email").strip().lower(), form.get("password")
        throttle = LoginThrottle(services.redis, services.keys)
        device = trusted_device(signer, request.cookies.get(DEVICE_COOKIE), email)
        attempt = await throttle.begin(email, client_ip(request), device)
        if attempt.wait_s:
            minutes = max(1, (attempt.wait_s + 59) // 60)
            message = (
                "Too many failed sign-ins for this account or from this network. "
                f"Try again in {minutes} minute{'s' if minutes != 1 else ''}."
            )
            return self._form(
                request, signer, error=message, email=email, status=429, next_url=form.get("next")
            )
        user = await AccountStore(services.redis, services.keys).authenticate(email, password)
        if user is None:  # the reservation stays: a failure
            return self._form(
                request, signer, error="Wrong email or password.", email=email, status=400,
                next_url=form.get("next"),  # a typo keeps the page asked for
            )  # fmt: skip
        await throttle.succeeded(attempt)
        sessions = AdminSessions(services.redis, services.keys, signer)
        cookie = await sessions.start(user)
        response = RedirectResponse(safe_next(form.get("next")), status_code=303)
        set_cookie(request, response, COOKIE, cookie)
        if device is None:
            known = device_cookie(signer, email)
            set_cookie(request, response, DEVICE_COOKIE, known, max_age=DEVICE_COOKIE_S)
        clear_cookie(request, response, LOGIN_COOKIE)
        return response

    def _form(
        self,
        request: Request,
        signer: Signer,
        *,
        error: str = "",
        email: str = "",
        status: int = 200,
        next_url: str | None = None,
    ) -> Response:
        nonce = secrets.token_urlsafe(24)
        context = {
            "csrf": signer.mac("login", nonce),
            "error": error,
            "email": email,
            "next": next_url if next_url is not None else request.query_params.get("next", ""),
            "expired": request.query_params.get("expired") == "1",
            "signed_out": request.query_params.get("signed_out") == "1",
        }
        response = self.templates.render("login.html", context, status=status)
        set_cookie(request, response, LOGIN_COOKIE, nonce)
        return response

    async def logout(self, admin: Admin) -> Response:
        services = admin.services
        signer = Signer(services.settings.secret_key)
        await AdminSessions(services.redis, services.keys, signer).end(admin.session)
        response = RedirectResponse(f"{ADMIN}/login?signed_out=1", status_code=303)
        clear_cookie(admin.request, response, COOKIE)
        return response
