"""Erasing one visitor of one site on request (a privacy request from the admin or the shop).

:func:`erase_visitor` removes everything stored about the visitor: the profile, every session
and its replay set, the orders, the email index entries, pending email jobs and sent marks, the
short links of the SMS sent to them (a link opened afterwards answers like an unknown one), the
per-campaign state of every campaign of the site (archived ones too: caps, variant, exposure
time, held code), the decision traces and their entries in the site's live feed, and the
visitor's entries in the product and category interest sets (``catalog/interest.py``). Codes
issued to the visitor stay valid (the shop may still redeem them) but lose the visitor and
session ids.

Kept on purpose: aggregate counters (experiment and email statistics hold no personal data, and
removing one visitor's share would falsify finished reports) and the site's email suppression
list (an unsubscribe must outlive erasure), like its SMS suppression list (a STOP too).

A visitor still connected, on any node, gets every offer on screen withdrawn and the socket
closed (:meth:`~widget_server.realtime.hub.Hub.end_visitor`); the connection forgets its
in-memory view first, so closing schedules no email. A page that stays open starts a new, empty
session when it reconnects.

Every step is idempotent: running the erasure again finishes what a failed run left.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any

from redis.asyncio import Redis

from ..catalog.interest import InterestIndex
from ..mail.message import email_digest
from ..mail.sms_steps import forget_links, sms_store
from ..store.replies import reply_text
from ..store.scripts import Scripts
from .consent import forget as forget_email
from .services import Services

SCAN_COUNT = 1000


@dataclass(slots=True)
class ErasureReport:
    """What one erasure deleted, by kind (every count is 0 for an unknown visitor)."""

    visitor: str
    sessions: int = 0  # session ids of the visitor found (live, ended or only in traces)
    visitor_keys: int = 0  # profile, sessions, replay sets, orders, trace-lookup markers
    traces: int = 0  # decision trace lists (one per session with decisions)
    feed_entries: int = 0  # the visitor's decisions in the site's live feed
    emails: int = 0  # email index entries pointing at the visitor
    email_jobs: int = 0  # scheduled emails cancelled
    sent_marks: int = 0  # records of emails already sent
    sms_links: int = 0  # short links of the SMS sent (they name the visitor and lead to the cart)
    campaign_states: int = 0  # per-campaign caps, variant, exposure and held code
    codes_unlinked: int = 0  # issued codes that no longer name the visitor
    site_records: int = 0  # the visitor's arm and exposure in the site-wide experiment
    interest: int = 0  # entries in the sets of who viewed a product or category (catalog emails)
    live_sockets: int = 0  # connected sockets closed after withdrawing their offers

    def counts(self) -> dict[str, int]:
        """Every count by name (without the visitor id)."""
        return {k: v for k, v in asdict(self).items() if k != "visitor"}


def total(reports: list[ErasureReport]) -> dict[str, int]:
    """The counts of several erasures added up."""
    names = [f.name for f in fields(ErasureReport) if f.name != "visitor"]
    return {name: sum(getattr(r, name) for r in reports) for name in names}


async def visitors_for_email(services: Services, site: str, email: str) -> list[str]:
    """Every visitor of ``site`` known under ``email``: the one the email index names and those
    with emails scheduled to the address."""
    redis, keys = services.redis, services.keys
    address = email.strip().lower()
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hget(keys.email_index(site), address)
        pipe.smembers(keys.mail_email_visitors(site, email_digest(address)))
        indexed, scheduled = await pipe.execute()
    found = {reply_text(v) for v in scheduled or ()}
    if indexed:
        found.add(reply_text(indexed))
    return sorted(found)


async def erase_visitor(
    services: Services, site: str, visitor: str, *, close_sockets: bool = True
) -> ErasureReport:
    """Erase everything stored about ``visitor`` of ``site``; see the module docstring.
    ``close_sockets=False`` leaves the visitor's sockets to the caller (the socket that
    withdrew consent closes itself once it has acknowledged).

    Raises ``RedisError`` or :class:`~widget_server.errors.StoreUnavailable` when Redis fails;
    what was erased until then stays erased, and a second call completes the rest.
    """
    report = ErasureReport(visitor)
    redis, keys = services.redis, services.keys
    if close_sockets:
        report.live_sockets = await services.hub.end_visitor(site, visitor)
    report.emails = await _erase_email_index(services, site, visitor)
    phone = reply_text(await redis.hget(keys.profile(site, visitor), "phone") or b"")
    if phone:  # the number's list of visitors (STOP finds their SMS by it)
        await sms_store(services.mail).forget_phone(site, visitor, phone)
    # Before the keys under the visitor's tag go: their list of links finds the links.
    report.sms_links = await forget_links(services.mail, site, visitor)
    session_ids = {reply_text(s) for s in await redis.smembers(keys.sessions(site, visitor))}
    report.feed_entries, in_feed = await _erase_feed_entries(services, site, visitor)
    session_ids |= in_feed
    report.visitor_keys = await services.sessions.forget(site, visitor)
    swept, report.traces, in_keys = await _sweep_visitor_keys(services, site, visitor)
    report.visitor_keys += swept
    session_ids |= in_keys
    report.visitor_keys += await _erase_session_owners(services, site, visitor, session_ids)
    report.sessions = len(session_ids)
    report.sent_marks = int(await redis.hlen(keys.mail_sent(site, visitor)))
    report.email_jobs = await forget_email(services.mail, site, visitor)
    report.interest = await forget_interest(services, site, visitor)
    report.campaign_states, report.codes_unlinked = await _erase_campaign_states(
        services, site, visitor
    )
    # The site-wide experiment's record of the visitor (its buyers' records name no one).
    report.site_records = int(await redis.delete(keys.site_experiment_visitor(site, visitor)))
    return report


async def forget_interest(services: Services, site: str, visitor: str) -> int:
    """Take the visitor out of every product and category interest set (and out of the notes
    this node has not written yet). Returns the entries removed."""
    interest = services.interest or InterestIndex(services.redis, services.keys)
    return await interest.forget(site, visitor)


async def _erase_email_index(services: Services, site: str, visitor: str) -> int:
    """Remove every address of the site's email index that points at the visitor (a visitor who
    identified with several addresses has several), so a lookup by any of them finds nothing."""
    redis, index = services.redis, services.keys.email_index(site)
    mine: list[str] = []
    cursor = 0
    while True:
        cursor, chunk = await redis.hscan(index, cursor, count=SCAN_COUNT)
        mine += [
            reply_text(email) for email, owner in _pairs(chunk) if reply_text(owner) == visitor
        ]
        if not cursor:
            break
    if not mine:
        return 0
    return int(await Scripts.of(redis).erasure_index(keys=[index], args=[visitor, *mine]))


async def _erase_feed_entries(services: Services, site: str, visitor: str) -> tuple[int, set[str]]:
    """Remove the visitor's decisions from the site's live feed; their session ids too."""
    redis, key = services.redis, services.keys.decisions(site)
    entries = await redis.lrange(key, 0, -1)
    removed, session_ids = 0, set()
    for raw in entries:
        try:
            entry = json.loads(raw)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("visitor") == visitor:
            removed += int(await redis.lrem(key, 1, reply_text(raw)))
            if entry.get("session"):
                session_ids.add(str(entry["session"]))
    return removed, session_ids


async def _sweep_visitor_keys(
    services: Services, site: str, visitor: str
) -> tuple[int, int, set[str]]:
    """Delete every key left under the visitor's hash tag: decision traces, and sessions whose id
    is no longer listed (an earlier erasure, say). The live-connection list stays: it names no
    one and expires with presence. Returns (other keys, traces, session ids seen)."""
    redis, keys = services.redis, services.keys
    trace_head = keys.trace(site, visitor, "")
    heads = (trace_head, keys.session(site, visitor, ""), keys.seen(site, visitor, ""))
    connections = keys.connections(site, visitor)
    pattern = _glob_escape(keys.tag(site, visitor)) + ":*"
    # On a cluster every master is scanned (the keys are all on one of them).
    names = [reply_text(n) async for n in redis.scan_iter(match=pattern, count=SCAN_COUNT)]
    found = [name for name in names if name != connections]
    session_ids = {name[len(h) :] for name in found for h in heads if name.startswith(h)}
    traces = [name for name in found if name.startswith(trace_head)]
    others = [name for name in found if not name.startswith(trace_head)]
    deleted_traces = int(await redis.delete(*traces)) if traces else 0
    deleted_others = int(await redis.delete(*others)) if others else 0
    return deleted_others, deleted_traces, session_ids


async def _erase_session_owners(
    services: Services, site: str, visitor: str, session_ids: set[str]
) -> int:
    """Delete the markers that let the admin find a session's traces by session id."""
    if not session_ids:
        return 0
    redis, keys = services.redis, services.keys
    names = [keys.session_owner(site, sid) for sid in sorted(session_ids)]
    async with redis.pipeline(transaction=False) as pipe:  # each marker has a slot of its own
        for name in names:
            pipe.get(name)
        owners = await pipe.execute()
    mine = [name for name, owner in zip(names, owners, strict=True) if owner and
            reply_text(owner) == visitor]  # fmt: skip
    return int(await redis.delete(*mine)) if mine else 0


async def _erase_campaign_states(services: Services, site: str, visitor: str) -> tuple[int, int]:
    """Delete the visitor's state in every campaign of the site and unlink their codes (one
    atomic script per campaign, on its slot). Returns (states deleted, codes unlinked)."""
    redis, keys = services.redis, services.keys
    store = services.offers.campaigns
    store.invalidate(site)  # another node may have just added a campaign
    script = Scripts.of(redis).erasure_campaign
    states = unlinked = 0
    for campaign in await store.for_site(site):
        codes_key = keys.issued_codes(site, campaign.id)
        codes = await _codes_of(redis, codes_key, visitor)
        deleted, freed = await script(
            keys=[keys.campaign_visitor(site, campaign.id, visitor), codes_key],
            args=[visitor, json.dumps(codes)],
        )
        states += int(deleted)
        unlinked += int(freed)
    return states, unlinked


async def _codes_of(redis: Redis, codes_key: str, visitor: str) -> list[str]:
    """The codes of one campaign issued to the visitor (records name the visitor)."""
    mine: list[str] = []
    cursor = 0
    while True:
        cursor, chunk = await redis.hscan(codes_key, cursor, count=SCAN_COUNT)
        for code, raw in _pairs(chunk):
            try:
                record = json.loads(raw)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("visitor") == visitor:
                mine.append(reply_text(code))
        if not cursor:
            break
    return mine


def _pairs(chunk: Any) -> list[tuple[Any, Any]]:
    """The field/value pairs of one HSCAN reply."""
    return list(chunk.items()) if isinstance(chunk, dict) else []


def _glob_escape(text: str) -> str:
    """``text`` matched literally by a SCAN pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
