"""A site's product catalog: how many products it has, its latest feed import, and (for editors)
uploading a feed with a report of every row that was skipped and why.

An upload is parsed to its end before anything is stored, so a file that cannot be read as a
feed (garbage, wrong encoding, a DTD, a limit exceeded) changes nothing. Uploads of one site
take turns through a Redis lock, so "remove products missing from this feed" never races another
upload. Every upload, stored or refused, goes into the audit log.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from dataclasses import dataclass
from typing import Any

from redis.exceptions import LockError
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ...catalog.feeds import (
    NOT_UTF8,
    FeedError,
    FeedFormat,
    FeedItem,
    FeedLimits,
    Product,
    detect_format,
    parse_feed,
)
from ...catalog.store import CatalogStore, ImportReport, changes_text, import_parsed
from ...mail.catalog_triggers import catalog_triggers
from ..guard import Admin, Guard
from ..web import MAX_UPLOAD_BYTES
from .sites import not_found, site_or_none

MAX_SHOWN_ERRORS = 100  # rows listed on the page; the rest are counted
UPLOAD_LIMITS = FeedLimits(max_file_bytes=MAX_UPLOAD_BYTES)
LOCK_TTL_S = 300  # an upload that dies keeps the site's catalog locked at most this long
LOCK_WAIT_S = 10  # how long an upload waits for the one before it to finish writing
FORMAT_NAMES: dict[FeedFormat, str] = {
    "xml": "XML (RSS 2.0 or Atom)",
    "delimited": "TSV/CSV (tab- or comma-separated)",
}
BUSY = "another upload to this catalog is still running; try again in a minute"
EMPTY = "the file is empty; choose the feed file to upload"
NO_PRODUCT = "Nothing was removed: the file has no valid product."


def routes(guard: Guard) -> list[BaseRoute]:
    return [
        Route(
            "/sites/{site}/catalog",
            guard(catalog, form_limit=MAX_UPLOAD_BYTES),
            methods=["GET", "POST"],
        )
    ]


@dataclass(frozen=True, slots=True)
class Upload:
    """What one upload did: the import report, or why the file was refused (nothing stored)."""

    format: str = ""
    report: ImportReport | None = None
    failed: str = ""
    note: str = ""  # why "remove missing products" was not applied
    utf8_errors: bool = False  # some rows were skipped for not being UTF-8 text

    def audit(self, prune: bool, products: int) -> dict[str, Any]:
        """The upload as the audit log keeps it."""
        if self.report is None:
            return {"failed": self.failed, "remove_missing": prune}
        r = self.report
        return {
            "products": products,
            "format": self.format,
            "remove_missing": prune and not self.note,
            "rows": r.rows,
            "added": r.added,
            "updated": r.updated,
            "unchanged": r.unchanged,
            "errors": r.errors,
            "removed": r.removed,
            "changes": r.changes,
            "emails": r.emails,
        }


def store(admin: Admin) -> CatalogStore:
    return CatalogStore(admin.services.redis, admin.services.keys)


async def catalog(admin: Admin) -> Response:
    site = await site_or_none(admin)
    if site is None:
        return not_found(admin)
    upload: Upload | None = None
    if admin.request.method == "POST":
        upload = await upload_feed(admin, site.key)
    feed_count, learned_count = await store(admin).counts(site.key)
    return admin.page(
        "catalog.html",
        status=422 if upload is not None and upload.failed else 200,
        site=site,
        feed_count=feed_count,
        learned_count=learned_count,
        last=await store(admin).last_import(site.key),
        upload=upload,
        max_megabytes=MAX_UPLOAD_BYTES // (1024 * 1024),
        now=time.time(),
        changes_text=changes_text,
    )


async def upload_feed(admin: Admin, site: str) -> Upload:
    """Import the uploaded feed (field ``feed``) and record the upload in the audit log."""
    data = admin.form.files.get("feed", b"")
    prune = admin.form.get("remove_missing") == "yes"
    before, _ = await store(admin).counts(site)
    upload = await _import(admin, site, data, prune) if data.strip() else Upload(failed=EMPTY)
    after, _ = await store(admin).counts(site)
    await admin.record(
        "catalog.import",
        site,
        site=site,
        before={"products": before},
        after=upload.audit(prune, after),
    )
    return upload


async def _import(admin: Admin, site: str, data: bytes, prune: bool) -> Upload:
    try:
        name = FORMAT_NAMES[detect_format(io.BytesIO(data))]
        items = await asyncio.to_thread(parse_all, data)
    except FeedError as exc:
        return Upload(failed=str(exc))
    note = ""
    if prune and not any(isinstance(item, Product) for item in items):
        prune, note = False, NO_PRODUCT
    services = admin.services
    lock = services.redis.lock(
        services.keys.catalog_import_lock(site), timeout=LOCK_TTL_S, blocking_timeout=LOCK_WAIT_S
    )
    if not await lock.acquire():
        return Upload(failed=BUSY)
    try:
        report = await import_parsed(
            store(admin),
            site,
            items,
            prune=prune,
            source=f"uploaded in the admin by {admin.user.email}",
            max_error_lines=MAX_SHOWN_ERRORS,
            triggers=catalog_triggers(services.mail, services.interest),
        )
    finally:
        with contextlib.suppress(LockError):  # it expired: the next upload may already run
            await lock.release()
    utf8 = any(error.reason == NOT_UTF8 for error in report.row_errors)
    return Upload(format=name, report=report, note=note, utf8_errors=utf8)


def parse_all(data: bytes) -> list[FeedItem]:
    """Every item of a feed held in memory; raises FeedError when it cannot be read to its end.

    Runs in a worker thread: a large feed takes a while to parse.
    """
    return list(parse_feed(io.BytesIO(data), UPLOAD_LIMITS))
