"""One email flow edited with form fields: its settings (the priority among emails due at once,
and per kind the reminder days by category, the least price drop, the low-stock quantity), its
emails (delay, template, code) and each email's words per language (subject, preheader, heading,
text, button), with the email rendered beside the form from what is typed, before anything is
saved.

The whole site configuration is validated before a save (nothing is saved half-way), errors
stand next to their fields, and a save over a configuration someone else saved meanwhile is
refused (the form carries the version it started from). The layout stays the Jinja2 files in
``widget_server/emails``; only the words are edited here.
"""

from __future__ import annotations

import re
import time
from typing import Any

from pydantic import ValidationError
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from ...mail.flows import (
    CATEGORY_NAME_LIMIT,
    KIND_PRIORITY,
    MAX_REMINDER_DAYS,
    STEP_TEXTS,
    Flow,
    MailConfig,
    text_problem,
)
from ...mail.message import TemplateError, render_preview
from ...sms.segments import measure
from ...sms.text import SAMPLE_LINK, SAMPLE_SHOP, sms_size, sms_text_problem
from ...store.sites import Site
from ..guard import Admin, Guard
from ..web import redirect
from .mail import (
    EMAIL_CSP,
    KIND_WORDS,
    StepRef,
    Stored,
    audit_value,
    load_stored,
    locales,
    sample_data,
    template_exists,
    templates_dir,
)
from .sites import not_found, site_or_none

TEMPLATES = (
    "cart", "browse", "welcome", "cross_sell", "review", "replenishment", "winback",
    "price_drop", "back_in_stock", "low_stock", "category_interest",
)  # fmt: skip
TEXT_WORDS = {
    "preheader": "Preheader (the line inboxes show after the subject)",
    "heading": "Heading",
    "intro": "Text",
    "cta": "Button",
}
FORM_LIMIT = 256 * 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")
_STEP_FIELD = re.compile(r"^steps\.(\d{1,2})\.")
_CATEGORY_FIELD = re.compile(r"^categories\.(\d{1,5})\.(?:name|days)$")
# Empty category rows under the typed ones, so a row is added without a script ("More rows"
# shows more, up to MAX_BLANK_ROWS empty ones).
BLANK_CATEGORY_ROWS = 3
MAX_BLANK_ROWS = 30
# What a number out of its range is told (the model's limits, see mail/flows.py Flow).
RANGE_WORDS = {
    "holdout": "Use a percentage from 0 to 90.",
    "sms_holdout": "Use a percentage from 0 to 50.",
    "priority": "Use a whole number from 0 to 100, or leave it empty for the default.",
    "min_drop_percent": "Use a percentage from 0.1 to 90.",
    "low_stock_quantity": "Use a whole number of units from 1 to 10000.",
}
_WORDS_FIELD = re.compile(
    r"^steps\.(\d{1,2})\.(?:texts|subject|sms_text)\.([a-z]{2}(?:-[A-Z]{2})?)"
)


# The groups of the templates' words on the site's words page, by key prefix.
WORD_GROUPS = (
    ("", "In every email"),
    ("cart_", "Cart emails (each email can override them)"),
    ("browse_", "Browse emails (each email can override them)"),
    ("welcome_", "Welcome emails"),
    ("cross_sell_", "Emails after an order: products to go with it"),
    ("review_", "Review requests"),
    ("replenishment_", "Replenishment reminders"),
    ("winback_", "Win-back emails"),
    ("price_drop_", "Price-drop emails"),
    ("back_in_stock_", "Back-in-stock emails"),
    ("low_stock_", "Low-stock emails"),
    ("category_interest_", "New in the visitor's favourite categories"),
    ("reward_", "The email with a reward code"),
    ("confirm_", "The confirmation email and page (double opt-in)"),
    ("unsubscribe_", "The unsubscribe page"),
)


def routes(guard: Guard) -> list[BaseRoute]:
    base = "/sites/{site}/emails/{flow}"
    return [
        Route("/sites/{site}/emails/words", guard(edit_words, "editor", form_limit=FORM_LIMIT),
              methods=["GET", "POST"]),
        Route(base + "/fields", guard(edit_flow, "editor", form_limit=FORM_LIMIT),
              methods=["GET", "POST"]),
        Route(base + "/draft", guard(draft_email, "editor", form_limit=FORM_LIMIT),
              methods=["POST"]),
    ]  # fmt: skip


# --- the form's state --------------------------------------------------------------------------


def state_of(flow: Flow, languages: list[str]) -> dict[str, Any]:
    """The editor's fields for a stored flow (empty words: the template's own words apply)."""
    steps = []
    for step in flow.steps:
        subjects = step.subject if isinstance(step.subject, dict) else {"": step.subject}
        steps.append({
            "delay_minutes": f"{step.delay_minutes:g}",
            "template": step.template,
            "code": step.code or "",
            "code_valid_hours": str(step.code_valid_hours or ""),
            "subject": {loc: subjects.get(loc, "") for loc in languages},
            "any_subject": subjects.get("", ""),
            "texts": {loc: {name: step.texts.get(loc, {}).get(name, "") for name in STEP_TEXTS}
                      for loc in languages},
            "channel": step.channel,
            "sms_text": {loc: step.sms_text.get(loc, "") for loc in languages},
        })  # fmt: skip
    return {
        "enabled": flow.enabled,
        "holdout": f"{flow.holdout * 100:g}",
        "sms_holdout": f"{flow.sms_holdout * 100:g}",
        "daily_cap": str(flow.daily_cap),
        "attribution_days": str(flow.attribution_days),
        "cancel_on_return": flow.cancel_on_return,
        "priority": "" if flow.priority is None else str(flow.priority),
        "categories": [{"name": name, "days": str(days)} for name, days in flow.categories.items()],
        "min_drop_percent": f"{flow.min_drop_percent:g}",
        "low_stock_quantity": str(flow.low_stock_quantity),
        "steps": steps,
    }


def state_from_form(admin: Admin, languages: list[str]) -> dict[str, Any]:
    """The fields as submitted; an email's number comes from its field names, and so does a
    category row's (rows left empty are dropped)."""
    form = admin.form
    rows = sorted({int(m.group(1)) for name in form.fields if (m := _CATEGORY_FIELD.match(name))})
    categories = [
        {"name": form.get(f"categories.{n}.name").strip(),
         "days": form.get(f"categories.{n}.days").strip()}
        for n in rows
    ]  # fmt: skip
    numbers = sorted({int(m.group(1)) for name in form.fields if (m := _STEP_FIELD.match(name))})
    steps = []
    for n in numbers[:5]:

        def get(name: str, n: int = n) -> str:
            return form.get(f"steps.{n}.{name}").strip()

        steps.append({
            "delay_minutes": get("delay_minutes"),
            "template": get("template"),
            "code": get("code"),
            "code_valid_hours": get("code_valid_hours"),
            "subject": {loc: get(f"subject.{loc}") for loc in languages},
            "any_subject": get("any_subject"),
            "texts": {loc: {name: form.get(f"steps.{n}.texts.{loc}.{name}").strip()
                            for name in STEP_TEXTS} for loc in languages},
            "channel": "sms" if get("channel") == "sms" else "email",
            "sms_text": {loc: get(f"sms_text.{loc}") for loc in languages},
        })  # fmt: skip
    return {
        "enabled": "enabled" in form.fields,
        "holdout": form.get("holdout").strip(),
        "sms_holdout": form.get("sms_holdout").strip(),
        "daily_cap": form.get("daily_cap").strip(),
        "attribution_days": form.get("attribution_days").strip(),
        "cancel_on_return": "cancel_on_return" in form.fields,
        "priority": form.get("priority").strip(),
        "categories": [row for row in categories if row["name"] or row["days"]],
        "min_drop_percent": form.get("min_drop_percent").strip(),
        "low_stock_quantity": form.get("low_stock_quantity").strip(),
        "steps": steps,
    }


def flow_data(flow: Flow, state: dict[str, Any], errors: dict[str, str]) -> dict[str, Any]:
    """The flow the fields describe, as the model takes it; numbers that are not numbers are
    errors next to their fields."""

    def number(value: str, path: str, whole: bool = False) -> Any:
        try:
            parsed = float(value)
        except ValueError:
            errors[path] = "Enter a number."
            return None
        return int(parsed) if whole and parsed.is_integer() else parsed

    steps = []
    for i, step in enumerate(state["steps"]):
        if step.get("channel") == "sms":
            steps.append(_sms_step_data(i, step, errors, number))
            continue
        subject = {loc: text for loc, text in step["subject"].items() if text}
        if step["any_subject"]:
            subject[""] = step["any_subject"]
        texts = {loc: {k: v for k, v in words.items() if v} for loc, words in step["texts"].items()}
        for loc, words in texts.items():
            for name, text in words.items():
                if problem := text_problem(name, text):
                    errors[f"steps.{i}.texts.{loc}.{name}"] = problem[0].upper() + problem[1:] + "."
        data: dict[str, Any] = {
            "delay_minutes": number(step["delay_minutes"], f"steps.{i}.delay_minutes"),
            "template": step["template"],
            "subject": subject if set(subject) != {""} else subject[""],
            "texts": {loc: words for loc, words in texts.items() if words},
        }
        if not subject:
            errors[f"steps.{i}.subject"] = "Write a subject in at least one language."
        if step["code"]:
            data["code"] = step["code"]
        if step["code_valid_hours"]:
            hours = f"steps.{i}.code_valid_hours"
            data["code_valid_hours"] = number(step["code_valid_hours"], hours, whole=True)
        steps.append(data)
    holdout = number(state["holdout"] or "0", "holdout")
    sms_holdout = number(state["sms_holdout"] or "0", "sms_holdout")
    # Empty: the kind's priority (KIND_PRIORITY).
    priority = number(state["priority"], "priority", whole=True) if state["priority"] else None
    data = {
        **flow.model_dump(mode="json"),
        "enabled": state["enabled"],
        "holdout": round(holdout / 100, 4) if holdout is not None else None,
        "sms_holdout": round(sms_holdout / 100, 4) if sms_holdout is not None else None,
        "daily_cap": number(state["daily_cap"], "daily_cap", whole=True),
        "attribution_days": number(state["attribution_days"], "attribution_days", whole=True),
        "cancel_on_return": state["cancel_on_return"],
        "priority": priority,
        "steps": steps,
    }
    # The settings of one kind are only on its form; other flows keep what they have stored.
    if flow.kind == "replenishment":
        data["categories"] = _categories_data(state["categories"], errors, number)
    elif flow.kind == "price_drop":
        data["min_drop_percent"] = number(state["min_drop_percent"], "min_drop_percent")
    elif flow.kind == "low_stock":
        data["low_stock_quantity"] = number(
            state["low_stock_quantity"], "low_stock_quantity", whole=True
        )
    return data


def _categories_data(
    rows: list[dict[str, str]], errors: dict[str, str], number: Any
) -> dict[str, Any]:
    """The reminder days by category of a replenishment flow, from its rows (row ``i``'s errors
    at ``categories.i.name`` and ``categories.i.days``). Names are matched without regard to
    case (see MailScheduler.after_order), so two rows may not differ by case only."""
    chosen: dict[str, Any] = {}
    seen: dict[str, int] = {}
    for i, row in enumerate(rows):
        name, days = row["name"], row["days"]
        name_path, days_path = f"categories.{i}.name", f"categories.{i}.days"
        if not name:
            errors[name_path] = "Name the category (or empty the row to remove it)."
        elif len(name) > CATEGORY_NAME_LIMIT or _CONTROL.search(name):
            errors[name_path] = f"Use at most {CATEGORY_NAME_LIMIT} characters, on one line."
        elif name.lower() in seen:
            errors[name_path] = f"This category is in row {seen[name.lower()] + 1} already."
        else:
            seen[name.lower()] = i
        value = number(days, days_path, whole=True) if days else None
        if not days or (value is not None and (
            not isinstance(value, int) or not 1 <= value <= MAX_REMINDER_DAYS
        )):  # fmt: skip
            errors[days_path] = f"Use a whole number of days from 1 to {MAX_REMINDER_DAYS}."
        chosen[name] = value
    return chosen


def _sms_step_data(
    i: int, step: dict[str, Any], errors: dict[str, str], number: Any
) -> dict[str, Any]:
    """An SMS step as the model takes it: its delay and its text per language."""
    texts = {loc: text for loc, text in step["sms_text"].items() if text}
    for loc, text in texts.items():
        if problem := sms_text_problem(text):
            errors[f"steps.{i}.sms_text.{loc}"] = problem[0].upper() + problem[1:] + "."
    if not texts:
        errors[f"steps.{i}.sms_text"] = "Write the SMS in at least one language."
    return {
        "delay_minutes": number(step["delay_minutes"], f"steps.{i}.delay_minutes"),
        "channel": "sms",
        "template": step["template"] or "cart",
        "sms_text": texts,
    }


def validated(
    config: MailConfig, flow: Flow, state: dict[str, Any]
) -> tuple[MailConfig | None, dict[str, str]]:
    """The site's configuration with this flow as the fields describe it, or the errors by
    field (``steps.0.delay_minutes``, ``holdout``...; ``""`` for the flow as a whole)."""
    errors: dict[str, str] = {}
    data = flow_data(flow, state, errors)
    if errors:
        return None, errors
    flows = [data if f.name == flow.name else f.model_dump(mode="json") for f in config.flows]
    try:
        return MailConfig.model_validate({**config.model_dump(mode="json"), "flows": flows}), {}
    except ValidationError as exc:
        for error in exc.errors():
            loc = list(error["loc"])
            if loc[:2] == ["flows", config.flows.index(flow)]:
                path = ".".join(str(part) for part in loc[2:])
            else:
                path = ""
            path = _field_of(path) if path != "steps" else ""  # the order of the emails
            errors.setdefault(path, _words(error["msg"], path))
        return None, errors


def _field_of(path: str) -> str:
    """The form field an error's location names (``steps.0.subject.de`` -> ``steps.0.subject``;
    a category's, keyed by its name, the category rows as a whole)."""
    parts = path.split(".")
    if parts[0] == "categories":
        return "categories"
    if len(parts) >= 3 and parts[0] == "steps" and parts[2] in ("subject", "texts", "sms_text"):
        return ".".join(parts[:3])
    return path


def _words(message: str, path: str) -> str:
    text = message.removeprefix("Value error, ")
    if path in RANGE_WORDS:
        return RANGE_WORDS[path]
    return text[0].upper() + text[1:] if text else "This value is not allowed."


# --- the pages ---------------------------------------------------------------------------------


async def _flow(admin: Admin) -> tuple[Site, Stored, Flow] | Response:
    site = await site_or_none(admin)
    if site is None:
        return not_found(admin)
    stored = await load_stored(admin.services, site.key)
    flow = stored.config.flow(admin.param("flow")) if stored.config else None
    if flow is None:
        return not_found(admin, "email flow")
    return site, stored, flow


async def edit_flow(admin: Admin) -> Response:
    found = await _flow(admin)
    if isinstance(found, Response):
        return found
    site, stored, flow = found
    assert stored.config is not None
    languages = locales(admin.services)
    if admin.request.method == "GET":
        return _page(admin, site, stored, flow, state_of(flow, languages), {})
    state = state_from_form(admin, languages)
    action = admin.form.get("action")
    if action == "add" and len(state["steps"]) < 5:
        last = state["steps"][-1] if state["steps"] else state_of(flow, languages)["steps"][0]
        state["steps"].append({**last, "delay_minutes": ""})
        return _page(admin, site, stored, flow, state, {})
    if action == "channel":  # the channel of an email changed: show its fields
        return _page(admin, site, stored, flow, state, {})
    if action == "categories":  # as many rows as were shown, and more empty ones
        shown = admin.form.get("category_rows")
        rows = (int(shown) if shown.isdigit() else 0) + BLANK_CATEGORY_ROWS
        blank = min(max(rows - len(state["categories"]), BLANK_CATEGORY_ROWS), MAX_BLANK_ROWS)
        return _page(admin, site, stored, flow, state, {}, blank_rows=blank)
    if action.startswith("remove:") and action[7:].isdigit():
        index = int(action[7:])
        if 0 <= index < len(state["steps"]) and len(state["steps"]) > 1:
            del state["steps"][index]
        return _page(admin, site, stored, flow, state, {})
    if admin.form.get("version") != stored.version:
        conflict = (
            "Someone saved the email flows after you opened this page. Your changes are below,"
            " not saved: compare them with the flow as it is now and save again."
        )
        return _page(admin, site, stored, flow, state, {}, conflict=conflict, status=409)
    config, errors = validated(stored.config, flow, state)
    if config is None:
        return _page(admin, site, stored, flow, state, errors, status=422)
    return await _saved(admin, site, stored, config)


async def _saved(admin: Admin, site: Site, stored: Stored, config: MailConfig) -> Response:
    """Save ``config`` when it differs from what was stored (with its audit entry), then go
    back to the emails page."""
    if config != stored.config:
        await admin.services.mail.flows.save(site.key, config)
        after = config.model_dump(mode="json")
        await admin.record(
            "mail.flows.update", site.key, site=site.key, before=audit_value(stored), after=after
        )
    return redirect(f"/sites/{site.key}/emails", "saved")


def _page(
    admin: Admin,
    site: Site,
    stored: Stored,
    flow: Flow,
    state: dict[str, Any],
    errors: dict[str, str],
    *,
    conflict: str = "",
    status: int = 200,
    blank_rows: int = BLANK_CATEGORY_ROWS,
) -> Response:
    services = admin.services
    languages = locales(services)
    placeholders = {  # the template's own words, shown where nothing is typed
        loc: {t: {name: services.mail.renderer.texts(loc).get(f"{t}_{name}", "")
                  for name in STEP_TEXTS} for t in TEMPLATES}
        for loc in languages
    }  # fmt: skip
    return admin.page(
        "mail_fields.html",
        status=status,
        site=site,
        flow=flow,
        kind_words=KIND_WORDS.get(flow.kind, flow.kind),
        kind_priority=KIND_PRIORITY.get(flow.kind, 0),
        blank_rows=blank_rows,
        state=state,
        errors=errors,
        version=stored.version,
        languages=languages,
        templates=[t for t in TEMPLATES if template_exists(services, t)],
        text_words=TEXT_WORDS,
        placeholders=placeholders,
        flagged={f"{m.group(1)}:{m.group(2)}" for key in errors if (m := _WORDS_FIELD.match(key))},
        sms_size=sms_size,
        sms_sample=f"{len(SAMPLE_SHOP)} {len(SAMPLE_LINK)}",
        conflict=conflict,
    )


async def draft_email(admin: Admin) -> Response:
    """The email the fields describe, unsaved, for the preview frame beside the form (its step
    and language from ``preview``, ``step.N:LOCALE``)."""
    found = await _flow(admin)
    if isinstance(found, Response):
        return found
    site, stored, flow = found
    assert stored.config is not None
    languages = locales(admin.services)
    state = state_from_form(admin, languages)
    asked = admin.form.get("preview")
    number, _, locale = asked.partition(":")
    index = int(number) if number.isdigit() else 0
    locale = locale if locale in languages else languages[0]
    config, errors = validated(stored.config, flow, state)
    headers = {"Content-Security-Policy": EMAIL_CSP}
    if config is None:
        listed = "".join(f"<li>{_escape(text)}</li>" for text in errors.values())
        return HTMLResponse(
            f"<!doctype html><meta charset=utf-8><p>Fix these to see the email:</p><ul>{listed}"
            "</ul>", status_code=422, headers=headers,
        )  # fmt: skip
    draft = config.flow(flow.name)
    assert draft is not None
    index = min(index, len(draft.steps) - 1)
    if draft.steps[index].channel == "sms":
        return _sms_preview(site, config, draft.steps[index].sms_text_for(locale), headers)
    ref = StepRef(site, config, draft, index + 1)
    try:
        subject, html, _ = render_preview(
            draft, index,
            sample_data(ref, locale, time.time(), admin.services.mail.settings.public_url),
            templates_dir=templates_dir(admin.services),
        )  # fmt: skip
    except TemplateError as exc:
        return HTMLResponse(f"<!doctype html><p>{_escape(str(exc))}</p>", status_code=422,
                            headers=headers)  # fmt: skip
    title = f"<title>{_escape(subject)}</title>"
    return HTMLResponse(html.replace("<head>", "<head>" + title, 1), headers=headers)


def _sms_preview(site: Site, config: MailConfig, text: str, headers: dict[str, str]) -> Response:
    """An SMS step's text as the phone shows it, with its encoding and segment count."""
    filled = text.replace("{shop}", config.sender_name or site.name).replace("{link}", SAMPLE_LINK)
    size = measure(filled)
    segments = "1 segment" if size.segments == 1 else f"{size.segments} segments"
    return HTMLResponse(
        "<!doctype html><meta charset=utf-8><title>SMS</title>"
        "<body style='font:16px system-ui;margin:1.5rem'>"
        "<p style='white-space:pre-wrap;background:#e9e9eb;border-radius:1rem;padding:.75rem 1rem;"
        f"max-width:22rem'>{_escape(filled)}</p>"
        f"<p id='sms-size'>{size.encoding}, {segments} ({size.units} "
        f"{'septets' if size.encoding == 'GSM-7' else 'UTF-16 units'})</p>",
        headers=headers,
    )


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# --- the site's own words ------------------------------------------------------------------------


def word_groups(keys: list[str]) -> list[tuple[str, list[str]]]:
    """The templates' words by group (see :data:`WORD_GROUPS`), in the templates' order."""
    groups: dict[str, list[str]] = {prefix: [] for prefix, _ in WORD_GROUPS}
    for key in keys:
        prefix = next((p for p, _ in WORD_GROUPS[1:] if key.startswith(p)), "")
        groups[prefix].append(key)
    return [(title, groups[prefix]) for prefix, title in WORD_GROUPS if groups[prefix]]


async def edit_words(admin: Admin) -> Response:
    """The site's own words over the templates', per language, in every email and page."""
    site = await site_or_none(admin)
    if site is None:
        return not_found(admin)
    stored = await load_stored(admin.services, site.key)
    if stored.config is None:
        return redirect(f"/sites/{site.key}/emails/edit")  # unreadable: fix it as JSON first
    config = stored.config
    languages = locales(admin.services)
    renderer = admin.services.mail.renderer
    keys = list(renderer.texts("en"))
    if admin.request.method == "GET":
        words = {loc: {k: config.words.get(loc, {}).get(k, "") for k in keys} for loc in languages}
        return _words_page(admin, site, stored, words, {})
    words = {loc: {k: admin.form.get(f"words.{loc}.{k}").strip() for k in keys}
             for loc in languages}  # fmt: skip
    if admin.form.get("version") != stored.version:
        conflict = ("Someone saved the email settings after you opened this page. Your words are"
                    " below, not saved: compare them and save again.")  # fmt: skip
        return _words_page(admin, site, stored, words, {}, conflict=conflict, status=409)
    errors = {
        f"words.{loc}.{key}": "Use at most 600 characters, on one line."
        for loc, typed in words.items() for key, text in typed.items()
        if len(text) > 600 or _CONTROL.search(text)
    }  # fmt: skip
    if errors:
        return _words_page(admin, site, stored, words, errors, status=422)
    kept = {loc: {k: v for k, v in typed.items() if v} for loc, typed in words.items()}
    try:
        updated = config.model_copy(update={"words": {loc: w for loc, w in kept.items() if w}})
        updated = MailConfig.model_validate(updated.model_dump(mode="json"))
    except ValidationError as exc:
        errors = {"": exc.errors()[0]["msg"].removeprefix("Value error, ")}
        return _words_page(admin, site, stored, words, errors, status=422)
    return await _saved(admin, site, stored, updated)


def _words_page(
    admin: Admin,
    site: Site,
    stored: Stored,
    words: dict[str, dict[str, str]],
    errors: dict[str, str],
    *,
    conflict: str = "",
    status: int = 200,
) -> Response:
    renderer = admin.services.mail.renderer
    languages = locales(admin.services)
    return admin.page(
        "mail_words.html",
        status=status,
        site=site,
        words=words,
        errors=errors,
        version=stored.version,
        languages=languages,
        groups=word_groups(list(renderer.texts("en"))),
        placeholders={loc: renderer.texts(loc) for loc in languages},
        conflict=conflict,
    )
