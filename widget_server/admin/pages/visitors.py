"""The decision trace: find a visitor by id, session id or email, and show their profile, their
sessions as far as they can be reconstructed, and every recorded decision in plain words. Owners
can erase a visitor from here (a privacy request), after a confirmation."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import RedisError
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ...errors import StoreUnavailable
from ...realtime.erasure import erase_visitor
from ...realtime.services import Services
from ...store.replies import reply_text
from ...visitors.session_view import SessionView
from .. import explain
from ..guard import Admin, Guard
from .sites import not_found, site_or_none

ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
MAX_SESSIONS = 20
MAX_CHECKED = 500  # session ids read for one visitor (a bot may have thousands)
SCAN_SECONDS = 2.0  # how long a session id without traces is looked for
SCAN_COUNT = 1000


def routes(guard: Guard) -> list[BaseRoute]:
    return [
        Route("/sites/{site}/visitors", guard(visitors)),
        Route("/sites/{site}/visitors/erase", guard(erase, "owner"), methods=["POST"]),
    ]


@dataclass(slots=True)
class Found:
    visitor: str
    how: str  # "visitor id", "session id" or "email"
    session: str = ""


@dataclass(slots=True)
class SessionTrace:
    """One session: what its hash still says (when it has not expired) and its decisions."""

    id: str
    view: SessionView | None
    decisions: list[dict[str, Any]] = field(default_factory=list)

    @property
    def started(self) -> float:
        if self.view is not None:
            return _float(self.view.session.get("started"))
        return max((_float(d.get("at")) for d in self.decisions), default=0.0)


async def find(services: Services, site: str, query: str) -> Found | None:
    """The visitor an email, a visitor id or a session id belongs to."""
    redis, keys = services.redis, services.keys
    if "@" in query:
        visitor = await redis.hget(keys.email_index(site), query.lower())
        return Found(reply_text(visitor), "email") if visitor else None
    if not ID_PATTERN.match(query):
        return None
    if await redis.exists(keys.profile(site, query), keys.sessions(site, query)):
        return Found(query, "visitor id")
    owner = await redis.get(keys.session_owner(site, query))
    if owner:
        return Found(reply_text(owner), "session id", query)
    # A session without decisions has no owner marker: look for its key (bounded; on a cluster
    # every master is scanned).
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(SCAN_SECONDS):
            pattern = keys.session(site, "*", query)
            async for key in redis.scan_iter(match=pattern, count=SCAN_COUNT):
                visitor = keys.visitor_in(site, reply_text(key))
                if visitor:
                    return Found(visitor, "session id", query)
    return None


async def load_sessions(
    services: Services, site: str, visitor: str, profile: dict[str, str]
) -> tuple[list[SessionTrace], int]:
    """The visitor's sessions, newest first (at most :data:`MAX_SESSIONS`), and how many others
    have expired without leaving decisions behind."""
    redis, keys = services.redis, services.keys
    members = await redis.smembers(keys.sessions(site, visitor))
    ids = sorted(reply_text(sid) for sid in members)[:MAX_CHECKED]
    if not ids:
        return [], 0
    async with redis.pipeline(transaction=False) as pipe:
        for sid in ids:
            pipe.hgetall(keys.session(site, visitor, sid))
            pipe.lrange(keys.trace(site, visitor, sid), 0, -1)
        rows = await pipe.execute()
    traces: list[SessionTrace] = []
    for i, sid in enumerate(ids):
        raw, decisions = rows[2 * i], rows[2 * i + 1]
        view = None
        if raw:
            view = SessionView({reply_text(k): reply_text(v) for k, v in raw.items()}, profile)
        if view is not None or decisions:
            traces.append(SessionTrace(sid, view, [json.loads(d) for d in decisions]))
    traces.sort(key=lambda t: t.started, reverse=True)
    return traces[:MAX_SESSIONS], len(ids) - len(traces)


def timeline(trace: SessionTrace, names: Mapping[str, str]) -> list[tuple[float, str]]:
    """What can be reconstructed in order: the latest moment of each kind of activity that the
    session keeps, and every decision."""
    moments: list[tuple[float, str]] = []
    s = trace.view.session if trace.view is not None else {}

    def add(field_name: str, text: str) -> None:
        at = _float(s.get(field_name))
        if at:
            moments.append((at, text))

    add("started", f"Session started on {s.get('landing') or 'an unknown page'}")
    add("page_started", f"Opened {s.get('page_title') or s.get('page_url') or 'a page'}"
        f" ({s.get('page_type', 'other').replace('_', ' ')} page)")  # fmt: skip
    if trace.view is not None:
        view = trace.view
        add("cart_changed", f"Cart changed: {view.cart_items} item(s), {view.cart_value:,.2f}")
    kind = s.get("last_signal_kind", "")
    add("last_signal", f"Exit intent: {explain.EXIT_KINDS.get(kind, kind.replace('_', ' '))}")
    add("last_hesitation", f"Hesitated {s.get('last_hesitation_s', '?')} s")
    add("last_scroll", f"Scrolled {s.get('last_scroll_percent', '?')}% of the page")
    add("last_time_on_page", f"{s.get('last_time_on_page_s', '?')} s on the page")
    add("last_offer_shown", f"Saw the offer {_offer_name(s.get('last_offer', ''), names)}")
    add("last_offer_click", f"Clicked the offer ({s.get('last_offer_action', 'cta')})")
    add("last_dismiss", "Closed an offer")
    for decision in trace.decisions:
        moments.append((_float(decision.get("at")), "Decision: " + explain.outcome_text(
            decision, names)))  # fmt: skip
    return sorted(moments)


async def visitors(admin: Admin) -> Response:
    site = await site_or_none(admin)
    if site is None:
        return not_found(admin)
    query = admin.request.query_params.get("q", "").strip()[:254]
    if not query:
        return admin.page("visitors.html", site=site, query=query, found=None)
    found = await find(admin.services, site.key, query)
    if found is None:
        return admin.page("visitors.html", status=404, site=site, query=query, found=None)
    services = admin.services
    raw = await services.redis.hgetall(services.keys.profile(site.key, found.visitor))
    profile = {reply_text(k): reply_text(v) for k, v in raw.items()}
    sessions, expired = await load_sessions(services, site.key, found.visitor, profile)
    if found.session:
        sessions.sort(key=lambda t: t.id != found.session)  # the session asked for first
    names = {c.id: c.name for c in await services.offers.campaigns.for_site(site.key)}
    return admin.page(
        "visitors.html",
        site=site,
        query=query,
        found=found,
        profile=profile,
        sessions=sessions,
        expired=expired,
        names=names,
        timeline=lambda trace: timeline(trace, names),
        explain=explain,
        now=time.time(),
    )


async def erase(admin: Admin) -> Response:
    """First POST: a confirmation page; the second (``confirm=yes``) erases the visitor, records
    it in the audit log (the visitor id and the counts, never the email) and shows the counts."""
    site = await site_or_none(admin)
    if site is None:
        return not_found(admin)
    visitor = admin.form.get("visitor")
    if not ID_PATTERN.match(visitor):
        return admin.refuse(400, "That is not a visitor id.")
    if admin.form.get("confirm") != "yes":
        return admin.page("visitor_erase_confirm.html", site=site, visitor=visitor)
    try:
        report = await erase_visitor(admin.services, site.key, visitor)
    except (RedisError, StoreUnavailable):
        admin.services.metrics.redis_errors.inc()
        return admin.refuse(503, "The erasure did not finish: the store is unavailable. Try again.")
    await admin.record("visitor.erase", visitor, site=site.key, after=report.counts())
    return admin.page("visitor_erased.html", site=site, report=report)


def _offer_name(offer: str, names: Mapping[str, str]) -> str:
    campaign, _, variant = offer.partition(".")
    return f"{names.get(campaign, campaign)} (variant {variant})" if variant else campaign


def _float(value: Any) -> float:
    try:
        return float(value) if value else 0.0
    except (TypeError, ValueError):
        return 0.0
