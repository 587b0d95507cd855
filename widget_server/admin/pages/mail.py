"""The Emails tab of a site: its email flows in plain words with their counts, a preview of every
step as a recipient would see it, and (for editors) the flow configuration as JSON.

The preview page frames the email from its own route, which answers with a policy that forbids
scripts, forms and plugins, and the frame is sandboxed too: the email HTML is the product's own
template, but subjects, sender names and product titles in it come from people.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from ...errors import ConfigurationError
from ...experiments import reports
from ...mail.flows import DEFAULT_CONFIG, Flow, FlowStep, MailConfig, MailConfigError, load_config
from ...mail.message import MailAddressError, TemplateError, render_preview
from ...mail.preview import send_test
from ...mail.send import SendError
from ...mail.worker import default_shop_url
from ...realtime.services import Services
from ...sms.text import sms_size
from ...store.replies import reply_text
from ...store.sites import Site
from ..guard import Admin, Guard
from ..web import redirect
from .report import sentences
from .sites import not_found, site_or_none

# The email frame: inline styles and remote images (as a mail client shows them), nothing else.
EMAIL_CSP = (
    "default-src 'none'; script-src 'none'; style-src 'unsafe-inline'; img-src https: http: data:;"
    " frame-ancestors 'self'; base-uri 'none'; form-action 'none'; sandbox"
)
MAX_CONFIG_CHARS = 200_000
EDIT_FORM_LIMIT = 1024 * 1024
SCAN_ROUNDS = 20  # pending jobs are counted from at most 20 x 500 queue entries per page view
SCAN_COUNT = 500
PREVIEW_FALLBACK_SHOP = "https://shop.example.com"

KIND_WORDS = {
    "cart": "Abandoned cart: visitors who leave with items in their cart",
    "checkout": "Abandoned checkout: visitors who reached the checkout with a cart",
    "browse": "Browse abandonment: visitors who viewed products without adding any to the cart",
    "welcome": "Welcome series: visitors who just gave their address with marketing consent",
    "cross_sell": "After an order: products that go with it (never what was bought)",
    "review": "Review request: some days after an order",
    "replenishment": "Replenishment: when a consumable bought is likely running out",
    "winback": "Win-back: visitors who have not come back for a while",
    "price_drop": "Price drop: a product the visitor viewed or carted got cheaper",
    "back_in_stock": "Back in stock: a product the visitor viewed is available again",
    "low_stock": "Low stock: a product the visitor viewed is running out",
    "category_interest": "Category interest: new products in the visitor's favourite categories",
}
SKIP_WORDS = {
    "flow_disabled": "the flow was turned off or changed before the email was due",
    "poison": "the email failed again and again and was given up",
    "no_profile": "the visitor's data was erased or has expired",
    "purchased": "the visitor bought something in the meantime",
    "no_consent": "the visitor no longer gives marketing consent",
    "email_changed": "the visitor's email address changed",
    "no_email": "the visitor can get texts but gave no address with marketing consent",
    "no_products": "none of the products could be shown any more",
    "unrenderable": "the email template could not be rendered",
    "suppressed": "the address unsubscribed, bounced or complained",
    "withdrawn": "consent was withdrawn after the email was scheduled",
    "already_sent": "this email had gone out to the visitor before",
    "capped": "the visitor had reached the daily email cap",
    "budget": "the visitor's email budget stayed spent for more than three days",
    "quiet_hours": "quiet hours would have held it more than three days",
    "priority": "emails of a higher priority kept it waiting for more than three days",
    "sms_off": (
        "SMS is not set up on the server (SMS_ACCOUNT_SID, SMS_AUTH_TOKEN and SMS_FROM, or "
        "SMS_OUTBOX_DIR)"
    ),
    "sms_no_phone": "the visitor has no confirmed phone number with SMS consent",
    "sms_holdout": "the visitor is in the flow's SMS holdout (emails only, to measure the texts)",
    "sms_suppressed": "the number texted STOP or cannot get texts",
    "sms_purchased": "the visitor bought something before the SMS was due",
    "sms_no_profile": "the visitor's data was erased or has expired (SMS)",
}
_TYPE_TAGS = {"str", "int", "float", "bool", "dict", "list", "none"}


def routes(guard: Guard) -> list[BaseRoute]:
    base = "/sites/{site}/emails"
    return [
        Route(base, guard(overview)),
        Route(
            base + "/edit",
            guard(edit, "editor", form_limit=EDIT_FORM_LIMIT),
            methods=["GET", "POST"],
        ),
        Route(base + "/reset", guard(reset, "editor"), methods=["POST"]),
        Route(base + "/{flow}/{step}/preview", guard(preview)),
        Route(base + "/{flow}/{step}/email", guard(email_frame)),
        Route(base + "/{flow}/{step}/test", guard(send_test_email, "editor"), methods=["POST"]),
        Route("/api" + base + "/{flow}/report.json", guard(results_json)),
        Route("/api" + base + "/{flow}/report.csv", guard(results_csv)),
    ]


# --- the stored configuration ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Stored:
    """A site's flow configuration as stored: ``config`` is what the site uses (the defaults
    when nothing is stored), None when the stored text cannot be read (``broken`` says why)."""

    config: MailConfig | None
    raw: str = ""
    broken: str = ""

    @property
    def custom(self) -> bool:
        return bool(self.raw)

    @property
    def version(self) -> str:
        """Names what the edit form started from, so that a save over a newer one is stopped."""
        return hashlib.sha256(self.raw.encode()).hexdigest()[:16]


async def load_stored(services: Services, site: str) -> Stored:
    """Read the site's configuration like :class:`MailFlowStore` does, keeping the raw text."""
    raw = reply_text(await services.redis.get(services.keys.mail_flows(site)) or "")
    if not raw:
        return Stored(DEFAULT_CONFIG)
    try:
        return Stored(load_config(raw), raw)
    except MailConfigError as exc:
        return Stored(None, raw, str(exc))


def config_json(config: MailConfig) -> str:
    """The configuration as the editor shows it: every field, indented."""
    return json.dumps(config.model_dump(mode="json"), indent=2, ensure_ascii=False)


def templates_dir(services: Services) -> Path:
    return services.settings.email_templates_dir


def locales(services: Services) -> list[str]:
    """The locales the email texts exist in (``messages.json``), English first."""
    try:
        found = json.loads((templates_dir(services) / "messages.json").read_text("utf-8"))
    except (OSError, ValueError):
        return ["en"]
    names = [name for name in found if isinstance(name, str)] if isinstance(found, dict) else []
    return sorted(names, key=lambda name: (name != "en", name)) or ["en"]


def template_exists(services: Services, name: str) -> bool:
    folder = templates_dir(services)
    return (folder / f"{name}.html").is_file() and (folder / f"{name}.txt").is_file()


# --- the overview ----------------------------------------------------------------------------


@dataclass(slots=True)
class StepView:
    """One email of a flow in words, with its counts."""

    number: int
    step: FlowStep
    when: str
    subject: str
    other_subjects: list[tuple[str, str]]
    template_ok: bool
    sent: int = 0
    clicks: int = 0
    restores: int = 0
    scheduled: int = 0

    @property
    def click_rate(self) -> float | None:
        """Clicks per email sent (every counted click, so it can exceed 100%)."""
        return self.clicks / self.sent if self.sent else None


@dataclass(slots=True)
class FlowView:
    """One flow with its steps, skip reasons and counts of steps it no longer has."""

    flow: Flow
    steps: list[StepView]
    skipped: list[tuple[str, str, int]] = field(default_factory=list)
    gone: list[tuple[str, int]] = field(default_factory=list)
    other: list[tuple[str, int]] = field(default_factory=list)

    @property
    def sent(self) -> int:
        return sum(step.sent for step in self.steps)


@dataclass(slots=True)
class Counts:
    """A flow's stats hash, read: per-step counters by event, skip reasons, anything else."""

    steps: dict[str, dict[int, int]] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    other: dict[str, int] = field(default_factory=dict)


def parse_counts(raw: Mapping[Any, Any]) -> Counts:
    """``sent:0``, ``clicks:1``, ``restores:0`` per step (0 = the first email; an SMS step's
    ``sms_sent:N`` and ``sms_clicks:N`` count as its sent and clicks), and ``skipped:<reason>``;
    values that are not whole numbers are left out."""
    counts = Counts()
    for key, value in raw.items():
        name, number = reply_text(key), _int(value)
        if number is None:
            continue
        event, _, detail = name.partition(":")
        event = {"sms_sent": "sent", "sms_clicks": "clicks"}.get(event, event)  # an SMS step's
        if event == "skipped" and detail:
            counts.skipped[detail] = number
        elif event in ("sent", "clicks", "restores") and detail.isdigit():
            counts.steps.setdefault(event, {})[int(detail)] = number
        else:
            counts.other[name] = number
    return counts


def delay_words(minutes: float) -> str:
    """``90`` -> ``1 h 30 min after the visitor left``; whole days from two days on."""
    if minutes <= 0:
        return "Right after the visitor left"
    if minutes < 1:
        return f"{round(minutes * 60)} s after the visitor left"
    total = round(minutes)
    if total < 60:
        return f"{total} min after the visitor left"
    hours, rest = divmod(total, 60)
    if not rest and hours >= 48 and hours % 24 == 0:
        return f"{hours // 24} days after the visitor left"
    return f"{hours} h{f' {rest} min' if rest else ''} after the visitor left"


def step_view(services: Services, site: Site, number: int, step: FlowStep) -> StepView:
    subjects = step.subject if isinstance(step.subject, dict) else {}
    main = step.subject_for(site.locale)
    return StepView(
        number=number,
        step=step,
        when=delay_words(step.delay_minutes),
        subject=main,
        other_subjects=[(loc, text) for loc, text in subjects.items() if text != main],
        template_ok=template_exists(services, step.template),
    )


def flow_view(
    services: Services, site: Site, flow: Flow, counts: Counts, scheduled: Mapping[int, int]
) -> FlowView:
    steps = [step_view(services, site, i + 1, step) for i, step in enumerate(flow.steps)]
    for index, view in enumerate(steps):
        view.sent = counts.steps.get("sent", {}).get(index, 0)
        view.clicks = counts.steps.get("clicks", {}).get(index, 0)
        view.restores = counts.steps.get("restores", {}).get(index, 0)
        view.scheduled = scheduled.get(index, 0)
    gone = [
        (f"{event} for email {index + 1}", number)
        for event, by_step in sorted(counts.steps.items())
        for index, number in sorted(by_step.items())
        if index >= len(flow.steps) and number
    ]
    skipped = sorted(
        ((reason, SKIP_WORDS.get(reason, reason.replace("_", " ")), number)
         for reason, number in counts.skipped.items() if number),
        key=lambda item: -item[2],
    )  # fmt: skip
    return FlowView(flow, steps, skipped, gone, sorted(counts.other.items()))


async def read_counts(services: Services, site: str, flows: Sequence[Flow]) -> list[Counts]:
    if not flows:
        return []
    async with services.redis.pipeline(transaction=False) as pipe:
        for flow in flows:
            pipe.hgetall(services.keys.mail_stats(site, flow.name))
        rows = await pipe.execute()
    return [parse_counts(row or {}) for row in rows]


async def scheduled_counts(services: Services, site: str) -> tuple[dict[str, dict[int, int]], bool]:
    """Emails waiting in the queue (or being sent) per flow and step, and whether the whole
    queue was looked at: a very long queue is counted in part (the page says so)."""
    counts: dict[str, dict[int, int]] = {}
    complete = True
    keys = services.keys
    for queue in (keys.mail_due(), keys.mail_leases()):
        cursor: int = 0
        for _ in range(SCAN_ROUNDS):
            cursor, items = await services.redis.zscan(
                queue, cursor, match=f"{site}:*", count=SCAN_COUNT
            )
            for member, _score in items:
                parts = reply_text(member).rsplit(":", 2)
                if len(parts) == 3 and parts[2].isdigit():
                    by_step = counts.setdefault(parts[1], {})
                    by_step[int(parts[2])] = by_step.get(int(parts[2]), 0) + 1
            if not cursor:
                break
        else:
            complete = False
    return counts, complete


def sending_problem(services: Services) -> str:
    """What this server still needs to send emails, or "" when it can."""
    try:
        services.mail.require_sending()
    except ConfigurationError as exc:
        return str(exc)
    return ""


async def overview(admin: Admin) -> Response:
    site = await site_or_none(admin)
    if site is None:
        return not_found(admin)
    services = admin.services
    stored = await load_stored(services, site.key)
    flows = list(stored.config.flows) if stored.config else []
    counts = await read_counts(services, site.key, flows)
    scheduled, complete = await scheduled_counts(services, site.key)
    views = [
        flow_view(services, site, flow, counts[i], scheduled.get(flow.name, {}))
        for i, flow in enumerate(flows)
    ]
    now = time.time()
    results = {
        view.flow.name: await reports.flow_report(services.redis, services.keys, site.key,
                                                  view.flow, now)
        for view in views
    }  # fmt: skip
    config = stored.config
    activity = any(view.sent or view.skipped or any(s.scheduled for s in view.steps)
                   for view in views)  # fmt: skip
    return admin.page(
        "mail_overview.html",
        site=site,
        stored=stored,
        config=config,
        flows=views,
        results={view.flow.name: _results(results[view.flow.name], view.flow) for view in views},
        activity=activity,
        locale=default_locale(site, locales(services)),
        kinds=KIND_WORDS,
        sms_size=sms_size,
        counted_all=complete,
        sending_problem=sending_problem(services),
        from_address=services.mail.settings.from_address,
        suppressed=int(await services.redis.hlen(services.keys.mail_suppressed(site.key))),
        sender=(config.sender_name if config else "") or site.name,
        shop_url=(config.shop_url if config else "") or default_shop_url(site),
        config_text=config_json(config) if config else stored.raw,
    )


# --- the preview -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StepRef:
    """A flow step named in the URL (``number`` counts from 1, as on the page)."""

    site: Site
    config: MailConfig
    flow: Flow
    number: int


async def step_or_none(admin: Admin) -> StepRef | Response:
    site = await site_or_none(admin)
    if site is None:
        return not_found(admin)
    stored = await load_stored(admin.services, site.key)
    flow = stored.config.flow(admin.param("flow")) if stored.config else None
    raw = admin.param("step")
    number = int(raw) if raw.isdigit() and len(raw) < 3 else 0
    if stored.config is None or flow is None or not 1 <= number <= len(flow.steps):
        return not_found(admin, "email in this site's flows")
    return StepRef(site, stored.config, flow, number)


def chosen_locale(admin: Admin, site: Site, available: Sequence[str]) -> str:
    """The ``locale`` asked for when the texts exist in it; else the site's, else English."""
    asked = admin.request.query_params.get("locale", "")
    return asked if asked in available else default_locale(site, available)


def default_locale(site: Site, available: Sequence[str]) -> str:
    for candidate in (site.locale, site.locale.split("-")[0], "en"):
        if candidate in available:
            return candidate
    return available[0]


def sample_data(ref: StepRef, locale: str, now: float, public_url: str = "") -> dict[str, Any]:
    """What the preview fills in: the site's sender name, currency, time zone and shop URL
    (as the worker does), sample products, and the step's code if it has one. The unsubscribe
    link points to this server (``public_url``) when it is known, as in real emails."""
    step = ref.flow.steps[ref.number - 1]
    shop = (ref.config.shop_url or default_shop_url(ref.site) or PREVIEW_FALLBACK_SHOP).rstrip("/")
    sample: dict[str, Any] = {
        "locale": locale,
        "shop_name": ref.config.sender_name or ref.site.name,
        "currency": ref.site.currency,
        "timezone": ref.site.timezone,
        "shop_url": shop + "/",
        "words": ref.config.words_for(locale),
    }
    if public_url:
        sample["unsubscribe_url"] = public_url + "/v1/mail/unsubscribe?t=preview"
    if ref.flow.kind != "browse":
        sample["action_url"] = shop + ref.config.restore_path + "?items=sku-1:1,sku-2:2"
    if step.code:
        sample["code"] = step.code
        sample["code_expires"] = now + step.code_valid_hours * 3600 if step.code_valid_hours else 0
    return sample


def render_step(services: Services, ref: StepRef, locale: str) -> tuple[str, str, str]:
    """``(subject, html, text)`` of the step with sample data; raises TemplateError."""
    return render_preview(
        ref.flow,
        ref.number - 1,
        sample_data(ref, locale, time.time(), services.mail.settings.public_url),
        templates_dir=templates_dir(services),
    )


async def preview(
    admin: Admin, *, test_sent: str = "", test_error: str = "", test_to: str = "", status: int = 200
) -> Response:
    ref = await step_or_none(admin)
    if isinstance(ref, Response):
        return ref
    services = admin.services
    available = locales(services)
    locale = chosen_locale(admin, ref.site, available)
    problem, subject, text = "", "", ""
    try:
        subject, _, text = render_step(services, ref, locale)
    except TemplateError as exc:
        problem = str(exc)
    step = ref.flow.steps[ref.number - 1]
    return admin.page(
        "mail_preview.html",
        site=ref.site,
        flow=ref.flow,
        number=ref.number,
        step=step_view(services, ref.site, ref.number, step),
        locale=locale,
        locales=available,
        subject=subject,
        text=text,
        problem=problem,
        sender=ref.config.sender_name or ref.site.name,
        from_address=services.mail.settings.from_address,
        test_sent=test_sent,
        test_error=test_error,
        test_to=test_to,
        status=status,
    )


async def send_test_email(admin: Admin) -> Response:
    """Send this step to one address as a test (:func:`~widget_server.mail.preview.send_test`:
    no job, no sent mark, no statistics); the outcome is shown on the preview page."""
    ref = await step_or_none(admin)
    if isinstance(ref, Response):
        return ref
    to = admin.form.get("to").strip()[:254]
    locale = chosen_locale(admin, ref.site, locales(admin.services))
    try:
        report = await send_test(
            admin.services.mail, ref.site.key, ref.flow.name, ref.number, to, locale
        )
    except (MailAddressError, ConfigurationError, SendError) as exc:
        return await preview(admin, test_error=str(exc), test_to=to, status=422)
    await admin.record(
        "mail.test_send", ref.site.key, site=ref.site.key, after={"flow": ref.flow.name,
        "step": ref.number, "locale": locale}
    )  # fmt: skip
    return await preview(admin, test_sent=report, test_to=to)


async def email_frame(admin: Admin) -> Response:
    """The email's HTML alone, for the preview's sandboxed frame."""
    ref = await step_or_none(admin)
    if isinstance(ref, Response):
        return ref
    locale = chosen_locale(admin, ref.site, locales(admin.services))
    headers = {"Content-Security-Policy": EMAIL_CSP}
    try:
        _, html, _ = render_step(admin.services, ref, locale)
    except TemplateError:
        html, status = "<!doctype html><p>This email cannot be rendered.</p>", 422
    else:
        status = 200
    return HTMLResponse(html, status_code=status, headers=headers)


# --- editing ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Problem:
    """One reason a configuration was refused: where (flow, email, field) and what is wrong."""

    where: str
    message: str


def parse_config(text: str) -> tuple[MailConfig | None, list[Problem]]:
    """The configuration in ``text``, or the problems with it in plain words."""
    if not text.strip():
        return None, [Problem("The configuration", "It is empty. Paste a JSON object.")]
    if len(text) > MAX_CONFIG_CHARS:
        return None, [Problem("The configuration", f"It is {len(text):,} characters long;"
                              f" at most {MAX_CONFIG_CHARS:,} are allowed.")]  # fmt: skip
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}"
        return None, [Problem("The JSON", f"It is not valid JSON at {where}: {exc.msg}.")]
    except RecursionError:
        return None, [Problem("The JSON", "It is nested too deeply to be a configuration.")]
    try:
        return load_config(text), []
    except MailConfigError as exc:
        return None, describe_errors(text, data) or [Problem("The configuration", str(exc))]


def describe_errors(text: str, data: Any) -> list[Problem]:
    """The validation errors of ``text`` (the ones :func:`load_config` reports), each named by
    flow, email and field; errors at the same place are joined."""
    try:
        MailConfig.model_validate_json(text)
    except ValidationError as exc:
        merged: dict[str, list[str]] = {}
        for error in exc.errors():
            where = place(error["loc"], data)
            message = plain_message(str(error["msg"]))
            if message not in merged.setdefault(where, []):
                merged[where].append(message)
        return [Problem(where, " Or: ".join(messages)) for where, messages in merged.items()]
    return []


def place(loc: Sequence[int | str], data: Any) -> str:
    """``("flows", 0, "steps", 1, "subject")`` -> ``Flow 1 "cart", email 2, field subject``."""
    parts = [p for p in loc if not (isinstance(p, str) and ("[" in p or p in _TYPE_TAGS))]
    words: list[str] = []
    if len(parts) > 1 and parts[0] == "flows" and isinstance(parts[1], int):
        words.append(f"Flow {parts[1] + 1}{_flow_name(data, parts[1])}")
        parts = parts[2:]
        if len(parts) > 1 and parts[0] == "steps" and isinstance(parts[1], int):
            words.append(f"email {parts[1] + 1}")
            parts = parts[2:]
    if parts:
        words.append("field " + ".".join(str(p) for p in parts))
    text = ", ".join(words) or "The configuration"
    return text[:1].upper() + text[1:]


def _flow_name(data: Any, index: int) -> str:
    try:
        name = data["flows"][index]["name"]
    except (KeyError, IndexError, TypeError):
        return ""
    return f' "{name[:40]}"' if isinstance(name, str) and name else ""


def plain_message(message: str) -> str:
    message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    message = {
        "Field required": "This field is missing.",
        "Extra inputs are not permitted": "There is no field by this name: check the spelling.",
        "Input should be an object": "It should be a JSON object {…}.",
        "Input should be a valid dictionary": "It should be a JSON object {…}.",
        "Input should be a valid array": "It should be a list […].",
        "Input should be a valid string": "It should be a text in double quotes.",
    }.get(message, message)
    message = message[:1].upper() + message[1:]
    return message if message.endswith((".", "?", "!")) else message + "."


async def edit(admin: Admin) -> Response:
    site = await site_or_none(admin)
    if site is None:
        return not_found(admin)
    stored = await load_stored(admin.services, site.key)
    current = config_json(stored.config) if stored.config else stored.raw
    if admin.request.method == "GET":
        return edit_page(admin, site, stored, current)
    text = admin.form.get("config")
    if admin.form.get("version") != stored.version:
        conflict = "Someone saved the flows after you opened this page. Your text is below, not" \
            " saved: compare it with the current configuration and save again."  # fmt: skip
        return edit_page(admin, site, stored, text, conflict=conflict, status=409)
    config, problems = parse_config(text)
    if config is None:
        return edit_page(admin, site, stored, text, problems=problems, status=422)
    if stored.config == config:  # nothing changed: a site on the defaults stays on them
        return redirect(f"/sites/{site.key}/emails", "saved")
    await admin.services.mail.flows.save(site.key, config)
    await admin.record(
        "mail.flows.update",
        site.key,
        site=site.key,
        before=audit_value(stored),
        after=config.model_dump(mode="json"),
    )
    return redirect(f"/sites/{site.key}/emails", "saved")


def edit_page(
    admin: Admin,
    site: Site,
    stored: Stored,
    text: str,
    *,
    problems: Sequence[Problem] = (),
    conflict: str = "",
    status: int = 200,
) -> Response:
    return admin.page(
        "mail_edit.html",
        status=status,
        site=site,
        stored=stored,
        text=text,
        problems=problems,
        conflict=conflict,
        current=config_json(stored.config) if stored.config else stored.raw,
        default_text=config_json(DEFAULT_CONFIG),
    )


async def reset(admin: Admin) -> Response:
    """Remove the site's own configuration: the site follows the defaults again."""
    site = await site_or_none(admin)
    if site is None:
        return not_found(admin)
    if admin.form.get("confirm") != "yes":
        return admin.refuse(400, "Tick the box to confirm that the site's own flows are replaced.")
    stored = await load_stored(admin.services, site.key)
    if stored.custom:
        await admin.services.redis.delete(admin.services.keys.mail_flows(site.key))
        await admin.record(
            "mail.flows.reset",
            site.key,
            site=site.key,
            before=audit_value(stored),
            after=DEFAULT_CONFIG.model_dump(mode="json"),
        )
    return redirect(f"/sites/{site.key}/emails", "saved")


def audit_value(stored: Stored) -> Any:
    """The configuration as the audit log keeps it (the stored text when it cannot be read)."""
    if stored.config is not None:
        return stored.config.model_dump(mode="json")
    return {"unreadable": stored.raw[:2000]}


# --- helpers ---------------------------------------------------------------------------------


def _int(value: Any) -> int | None:
    try:
        return int(reply_text(value))
    except ValueError:
        return None


# --- results: the flow against its holdout ------------------------------------------------------
QUALIFY_WORDS = {
    "cart": "when they leave with a cart",
    "checkout": "when they leave after reaching the checkout with a cart",
    "browse": "when they leave after viewing products",
    "welcome": "when their consent first counts",
    "cross_sell": "when they order",
    "review": "when they order",
    "replenishment": "when they order a product of a category with a reminder interval",
    "winback": "at each visit's end",
    "price_drop": "when a feed import lowers the price of a product they viewed",
    "back_in_stock": "when a feed import brings back a product they viewed",
    "low_stock": "when a feed import shows a product they viewed running out",
    "category_interest": "when a feed import adds products to their favourite categories",
}


def _results(document: dict[str, Any], flow: Flow) -> dict[str, Any]:
    """What the results block of one flow shows: the report's rows and sentences, the email
    counts of the ``email`` arm, the figures per channel and the ``sms_reach`` segment's rows."""
    report = document["report"]
    has_sms = any(step.channel == "sms" for step in flow.steps) or bool(
        document["channels"]["sms"]["sent"]
    )
    reach, value = document["sms_reach"], document["sms_value"]
    return {
        "document": document,
        "rows": report["variants"],
        "sentences": sentences(report),
        "email": document["email"].get("email", {}),
        "level": 1 - report["decision_alpha"],  # the rule's intervals
        "has_sms": has_sms,
        "noun": "message" if has_sms else "email",
        "qualifies": QUALIFY_WORDS.get(flow.kind, "when they qualify"),
        "reach_rows": reach["variants"] if has_sms and reach else [],
        "value_rows": value["variants"] if has_sms and value else [],
        "value_sentences": sentences(value) if has_sms and value else [],
    }


async def _flow_document(admin: Admin) -> tuple[str, Flow, dict[str, Any]] | Response:
    site = await site_or_none(admin)
    if site is None:
        return not_found(admin)
    config = (await load_stored(admin.services, site.key)).config
    flow = config.flow(admin.param("flow")) if config else None
    if flow is None:
        return not_found(admin, "email flow")
    services = admin.services
    document = await reports.flow_report(services.redis, services.keys, site.key, flow, time.time())
    return site.key, flow, document


async def results_json(admin: Admin) -> Response:
    found = await _flow_document(admin)
    if isinstance(found, Response):
        return found
    site, flow, document = found
    disposition = f'attachment; filename="{site}-email-{flow.name}-report.json"'
    return JSONResponse(document, headers={"Content-Disposition": disposition})


async def results_csv(admin: Admin) -> Response:
    found = await _flow_document(admin)
    if isinstance(found, Response):
        return found
    site, flow, _ = found
    services = admin.services
    built = await reports.build_flow_report(services.redis, services.keys, site, flow, time.time())
    disposition = f'attachment; filename="{site}-email-{flow.name}-report.csv"'
    return PlainTextResponse(
        reports.report_csv(built.report),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": disposition},
    )
