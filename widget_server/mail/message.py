"""Email content: safe addresses and headers, templates, and the MIME message.

Templates are Jinja2 files in ``widget_server/emails`` (``cart``, ``browse``; ``.html`` autoescaped,
``.txt`` plain) with texts per locale in ``messages.json``. Every value that comes from a visitor
or a catalog (names, titles, subjects) is escaped in HTML, and no header can carry a line break:
addresses with control characters are refused (:class:`MailAddressError`), display names and
subjects are flattened to one line.
"""

from __future__ import annotations

import email.policy
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jinja2 import FileSystemLoader, StrictUndefined, TemplateNotFound, select_autoescape
from jinja2.sandbox import SandboxedEnvironment

from ..errors import WidgetServerError
from ..shipped import EMAIL_TEMPLATES_DIR
from .flows import Flow

DEFAULT_TEMPLATES = EMAIL_TEMPLATES_DIR
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u0085\u2028\u2029]")
_ATEXT = r"[A-Za-z0-9!#$%&*+/=?^_`{|}~-]+"
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_ADDRESS = re.compile(rf"^(?=[^@]{{1,64}}@){_ATEXT}(?:\.{_ATEXT})*@{_LABEL}(?:\.{_LABEL})+$")
_SYMBOLS = {
    "EUR": "€",
    "USD": "$",
    "GBP": "£",
    "JPY": "¥",
    "CHF": "CHF ",
    "SEK": "kr ",
    "PLN": "zł ",
}
# Long List-Unsubscribe URLs must stay on one line: folding would turn them into encoded-words.
_POLICY = email.policy.SMTP.clone(refold_source="none")


class MailAddressError(WidgetServerError):
    """An email address that cannot be used in a header: malformed or carrying control chars."""


class TemplateError(WidgetServerError):
    """An email template that is missing or fails to render."""


def normalize_address(value: str) -> str:
    """Return ``value`` as ``local@domain`` with the domain lower-cased, or raise MailAddressError.

    Anything with a control character (CR/LF included), whitespace, brackets, quotes, commas or
    more than one ``@`` is refused rather than repaired: a repaired address is a guess.
    """
    if not isinstance(value, str) or _CONTROL.search(value) or len(value) > 254:
        raise MailAddressError("the address contains control characters or is too long")
    local, _, domain = value.strip().rpartition("@")
    candidate = f"{local}@{domain.lower()}"
    if not local or not _ADDRESS.match(candidate):
        raise MailAddressError(f"not a usable email address: {value[:80]!r}")
    return candidate


def email_digest(address: str) -> str:
    """A stable, non-reversible id of a lower-cased address, for key names and indexes."""
    return hashlib.sha256(address.strip().lower().encode()).hexdigest()[:32]


def one_line(value: str, limit: int = 200) -> str:
    """``value`` with control characters (line breaks included) turned into single spaces."""
    return " ".join(_CONTROL.sub(" ", value).split())[:limit]


def format_money(amount: float, currency: str, locale: str) -> str:
    symbol = _SYMBOLS.get(currency, f"{currency} " if currency else "")
    number = f"{amount:,.2f}"
    if locale.split("-")[0] == "de":
        number = number.replace(",", "\x00").replace(".", ",").replace("\x00", ".")
        return f"{number} {symbol.strip()}".strip()
    return f"{symbol}{number}"


def format_time(unix: float, locale: str, timezone: str) -> str:
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    moment = datetime.fromtimestamp(unix, zone)
    if locale.split("-")[0] == "de":
        return moment.strftime("%d.%m.%Y, %H:%M Uhr")
    return moment.strftime("%d %b %Y, %H:%M")


@dataclass(frozen=True, slots=True)
class MailProduct:
    """A product line of an email; ``url`` and ``image`` are absolute http(s) URLs or empty."""

    id: str
    title: str
    price: float = 0.0
    quantity: int = 1
    image: str = ""
    url: str = ""


@dataclass(frozen=True, slots=True)
class MailView:
    """Everything a template shows. Links are final (signed, with UTM tags)."""

    shop_name: str
    locale: str
    currency: str
    action_url: str
    unsubscribe_url: str
    shop_url: str
    lines: Sequence[MailProduct] = ()
    similar: Sequence[MailProduct] = ()
    code: str = ""
    code_expires: float = 0.0
    timezone: str = "UTC"
    extra: Mapping[str, str] = field(default_factory=dict)
    words: Mapping[str, str] = field(default_factory=dict)  # the site's own, by message key


@dataclass(frozen=True, slots=True)
class RenderedEmail:
    subject: str
    html: str
    text: str


def _safe_url(value: str) -> str:
    return value if value.startswith(("https://", "http://")) and not _CONTROL.search(value) else ""


class MailRenderer:
    """Renders flow steps from the templates in ``templates_dir`` (read once)."""

    def __init__(self, templates_dir: Path = DEFAULT_TEMPLATES) -> None:
        self._env = SandboxedEnvironment(
            loader=FileSystemLoader(templates_dir),
            autoescape=select_autoescape(enabled_extensions=("html",), default=False),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self._messages: dict[str, dict[str, str]] = json.loads(
            (templates_dir / "messages.json").read_text(encoding="utf-8")
        )

    def texts(
        self, locale: str, overrides: Mapping[str, str] | None = None, /, **values: str
    ) -> dict[str, str]:
        """The translated texts for ``locale`` (falling back to English), then ``overrides``
        (a step's own words, by message key), with values filled in."""
        base = dict(self._messages["en"])
        base.update(self._messages.get(locale.split("-")[0], {}))
        base.update(self._messages.get(locale, {}))
        base.update(overrides or {})
        for name, text in base.items():
            for key, value in values.items():
                text = text.replace("{" + key + "}", value)
            base[name] = text
        return base

    def render_page(self, name: str, **context: Any) -> str:
        """Render a web page template (autoescaped) from the same directory."""
        return self._env.get_template(name).render(context)

    def render(self, flow: Flow, step: int, view: MailView) -> RenderedEmail:
        """Render one step; raise TemplateError when the template is missing or broken."""
        spec = flow.steps[step]
        shop = one_line(view.shop_name, 100)
        first = one_line(view.lines[0].title, 80) if view.lines else ""
        count = str(sum(line.quantity for line in view.lines))
        subject = spec.subject_for(view.locale)
        for key, value in (("shop", shop), ("product", first), ("count", count)):
            subject = subject.replace("{" + key + "}", value)
        expires = format_time(view.code_expires, view.locale, view.timezone)
        words = spec.texts_for(view.locale)
        own = {**view.words, **{f"{spec.template}_{name}": text for name, text in words.items()}}
        texts = self.texts(view.locale, own, shop=shop, date=expires, product=first, count=count)
        context = self._context(view, texts, flow, step)
        # The template's own four words, for the layouts shared by several kinds of email.
        context["w"] = {
            name: texts.get(f"{spec.template}_{name}", "")
            for name in ("preheader", "heading", "intro", "cta")
        }
        try:
            html = self._env.get_template(f"{spec.template}.html").render(context)
            text = self._env.get_template(f"{spec.template}.txt").render(context)
        except TemplateNotFound as exc:
            raise TemplateError(f"email template {exc.name} not found") from None
        except Exception as exc:  # a template bug must not stop the worker
            raise TemplateError(f"template {spec.template} failed: {exc}") from exc
        return RenderedEmail(one_line(subject, 200) or shop, html, text)

    def _context(
        self, view: MailView, texts: dict[str, str], flow: Flow, step: int
    ) -> dict[str, Any]:
        def product(p: MailProduct) -> dict[str, Any]:
            return {
                "title": one_line(p.title, 200),
                "quantity": p.quantity,
                "price": format_money(p.price, view.currency, view.locale),
                "total": format_money(p.price * p.quantity, view.currency, view.locale),
                "image": _safe_url(p.image),
                "url": _safe_url(p.url),
            }

        total = sum(line.price * line.quantity for line in view.lines)
        return {
            "t": texts,
            "shop": one_line(view.shop_name, 100),
            "lines": [product(p) for p in view.lines],
            "similar": [product(p) for p in view.similar],
            "total": format_money(total, view.currency, view.locale),
            "code": view.code,
            "code_expires": bool(view.code and view.code_expires),
            "action_url": _safe_url(view.action_url),
            "shop_url": _safe_url(view.shop_url),
            "unsubscribe_url": _safe_url(view.unsubscribe_url),
            "lang": view.locale.split("-")[0],
            "flow": flow.name,
            "step": step,
            **view.extra,
        }


def build_message(
    *,
    from_address: str,
    from_name: str,
    to: str,
    rendered: RenderedEmail,
    unsubscribe_url: str,
    unsubscribe_mailto: str = "",
    now: float,
) -> EmailMessage:
    """A multipart/alternative message (text first, then HTML) with RFC 8058 one-click unsubscribe.

    Raises MailAddressError for an unusable sender or recipient. Display name and subject are
    flattened to one line; the unsubscribe URL must be an http(s) URL without control characters.
    """
    sender = normalize_address(from_address)
    recipient = normalize_address(to)
    if not _safe_url(unsubscribe_url) or " " in unsubscribe_url or ">" in unsubscribe_url:
        raise MailAddressError("the unsubscribe URL is not a plain http(s) URL")
    message = EmailMessage(policy=_POLICY)
    message["From"] = Address(display_name=one_line(from_name, 100), addr_spec=sender)
    message["To"] = Address(addr_spec=recipient)
    message["Subject"] = one_line(rendered.subject, 200)
    message["Date"] = format_datetime(datetime.fromtimestamp(now, UTC))
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2])
    targets = [f"<{unsubscribe_url}>"]
    if unsubscribe_mailto:
        targets.append(f"<mailto:{normalize_address(unsubscribe_mailto)}?subject=unsubscribe>")
    message.set_raw("List-Unsubscribe", ", ".join(targets))
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    # Quoted-printable keeps the body 7-bit clean for relays without 8BITMIME.
    message.set_content(rendered.text, cte="quoted-printable")
    message.add_alternative(rendered.html, subtype="html", cte="quoted-printable")
    return message


SAMPLE_LINES = (
    MailProduct("sku-1", "Merino wool sweater", 89.0, 1),
    MailProduct("sku-2", "Organic cotton socks (3 pairs)", 19.5, 2),
)
SAMPLE_SIMILAR = (
    MailProduct("sku-3", "Cashmere scarf", 59.0),
    MailProduct("sku-4", "Wool beanie", 29.0),
)


def render_preview(
    flow: Flow,
    step: int,
    sample_data: Mapping[str, Any] | None = None,
    *,
    templates_dir: Path = DEFAULT_TEMPLATES,
) -> tuple[str, str, str]:
    """Render a step with sample data (any :class:`MailView` field may be overridden) for the
    admin preview. Returns ``(subject, html, text)``; raises TemplateError."""
    sample = dict(sample_data or {})
    for name in ("lines", "similar"):
        if name in sample:
            sample[name] = [
                p if isinstance(p, MailProduct) else MailProduct(**p) for p in sample[name]
            ]
    values: dict[str, Any] = {
        "shop_name": "Example Shop",
        "locale": "en",
        "currency": "EUR",
        "action_url": "https://shop.example.com/cart?utm_medium=email",
        "unsubscribe_url": "https://shop.example.com/unsubscribe",
        "shop_url": "https://shop.example.com/",
        "lines": list(SAMPLE_LINES),
        "similar": list(SAMPLE_SIMILAR),
        "code": "",
        "code_expires": 0.0,
    }
    values.update(sample)
    rendered = MailRenderer(templates_dir).render(flow, step, MailView(**values))
    return rendered.subject, rendered.html, rendered.text
