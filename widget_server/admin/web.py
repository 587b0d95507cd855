"""What every admin page shares: templates, security headers and reading form bodies."""

from __future__ import annotations

import email.parser
import email.policy
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..bodies import read_bounded
from ..experiments.adjust import COVARIATE_WORDS
from ..offers.audience import audience_sentence
from .form import Form

ADMIN = "/admin"
PACKAGE_DIR = Path(__file__).resolve().parent
TEMPLATE_DIR = PACKAGE_DIR / "templates"
STATIC_DIR = PACKAGE_DIR / "static"

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: https: http:; "
    "frame-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
)
# The campaign preview is framed by the admin's own pages, and by nothing else.
PREVIEW_CSP = CSP.replace("frame-ancestors 'none'", "frame-ancestors 'self'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
MAX_FORM_BYTES = 256 * 1024
MAX_UPLOAD_BYTES = 8 * 1024 * 1024


class SecurityHeaders:
    """ASGI wrapper: every admin response carries the CSP and friends; pages are not cached."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
                if headers.get("content-type", "").startswith("text/html"):
                    headers.setdefault("Cache-Control", "no-store")
            await send(message)

        await self.app(scope, receive, send_with_headers)


class Templates:
    """The admin's Jinja2 environment (autoescaped) and a helper to render a page."""

    def __init__(self, directory: Path = TEMPLATE_DIR) -> None:
        self.env = Environment(
            loader=FileSystemLoader(directory),
            autoescape=True,
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.globals["ADMIN"] = ADMIN
        self.env.filters["when"] = format_time
        self.env.filters["moment"] = format_moment
        self.env.filters["money"] = format_money
        self.env.filters["audience"] = audience_sentence
        self.env.filters["covariates"] = lambda names: ", ".join(
            COVARIATE_WORDS.get(name, name) for name in names
        )
        self.env.filters["share"] = format_share
        self.env.filters["ago"] = format_ago
        self.env.filters["pretty"] = lambda value: json.dumps(value, indent=2, ensure_ascii=False)
        self.env.filters["pair"] = lambda value: (value, str(value).replace("_", " "))

    def render(
        self,
        name: str,
        context: dict[str, Any],
        *,
        status: int = 200,
        headers: dict[str, str] | None = None,
    ) -> HTMLResponse:
        body = self.env.get_template(name).render(**context)
        return HTMLResponse(body, status_code=status, headers=headers)


def format_time(moment: float | None) -> str:
    if not moment:
        return "never"
    return datetime.fromtimestamp(float(moment), UTC).strftime("%Y-%m-%d %H:%M UTC")


def format_moment(moment: float | None) -> str:
    """A time to the second, for timelines."""
    if not moment:
        return "never"
    return datetime.fromtimestamp(float(moment), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def format_money(value: Any, signed: bool = False) -> str:
    """``1,234.50`` (``+1,234.50`` when signed); "—" when there is no value."""
    if value is None or value == "":
        return "—"
    return f"{float(value):+,.2f}" if signed else f"{float(value):,.2f}"


def format_share(value: Any, signed: bool = False, digits: int = 1) -> str:
    """A proportion as a percentage: ``0.1234`` -> ``12.3%`` (``+12.3%`` when signed)."""
    if value is None or value == "":
        return "—"
    return f"{float(value) * 100:{'+' if signed else ''}.{digits}f}%"


def format_ago(moment: float | None, now: float | None = None) -> str:
    if not moment:
        return "never"
    seconds = max(0, int((now or time.time()) - float(moment)))
    for unit, size in (("day", 86_400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''} ago"
    return "just now"


def redirect(path: str, notice: str | None = None) -> RedirectResponse:
    """303 to an admin path; ``notice`` names one of the fixed messages in base.html."""
    location = ADMIN + path
    if notice:
        location += ("&" if "?" in location else "?") + f"notice={notice}"
    return RedirectResponse(location, status_code=303)


# --- form bodies -------------------------------------------------------------------------------


class FormTooLarge(Exception):
    """The request body is larger than the form may be."""


async def read_form(request: Request, limit: int = MAX_FORM_BYTES) -> Form:
    """Parse an urlencoded or multipart body of at most ``limit`` bytes."""
    body = await read_bounded(request, limit)
    if body is None:
        raise FormTooLarge
    content_type = request.headers.get("content-type", "")
    form = Form()
    if content_type.startswith("multipart/form-data"):
        _parse_multipart(content_type, body, form)
    else:
        for name, value in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
            form.fields.setdefault(name, []).append(value)
    return form


def _parse_multipart(content_type: str, body: bytes, form: Form) -> None:
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not message.is_multipart():
        return
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        if part.get_filename() is not None:
            form.files[name] = data
        else:
            form.fields.setdefault(name, []).append(data.decode("utf-8", "replace"))
