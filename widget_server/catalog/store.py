"""The product catalog of a site in Redis, the shopping signals around it, and the feed import.

Feed products live in one hash per site (id -> JSON) beside a hash of content hashes, so importing
the same feed again writes nothing. Products seen on product pages but missing from the feed are
kept apart and never override feed data. Co-view and co-cart counts are sorted sets per product,
trimmed to their strongest members. A version counter changes with the catalog, so each node
rebuilds its in-process :class:`~widget_server.catalog.recommend.SimilarityIndex` only when needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import os
import re
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TextIO

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError

from ..errors import StoreUnavailable
from ..store.client import open_store
from ..store.keys import Keys
from ..store.replies import reply_text
from ..wire import protocol as p
from .changes import CHANGE_KINDS, ImportChanges, ImportTriggers
from .feeds import (
    DEFAULT_LIMITS,
    FeedError,
    FeedItem,
    FeedLimits,
    Product,
    RowError,
    normalize_category,
    parse_feed,
    safe_url,
)
from .recommend import DEFAULT_WEIGHTS, SimilarityIndex, SimilarityWeights

__all__ = [
    "CatalogStore",
    "CoCounts",
    "FeedError",
    "FeedLimits",
    "ImportRecord",
    "ImportReport",
    "Product",
    "RowError",
    "SimilarityIndexCache",
    "UpsertResult",
    "content_hash",
    "import_feed",
    "import_parsed",
    "run_catalog_import",
]

CHUNK_SIZE = 500
_SITE_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")
_encode = msgspec.json.Encoder()
_decode = msgspec.json.Decoder(Product)


def content_hash(product: Product) -> str:
    """A digest of everything but ``updated``: the same row imported twice hashes the same. A
    product without a ``quantity`` hashes as it did before products had one."""
    fields = msgspec.structs.asdict(msgspec.structs.replace(product, updated=0.0))
    if fields["quantity"] is None:
        del fields["quantity"]
    return hashlib.blake2b(_encode.encode(fields), digest_size=16).hexdigest()


# Called with (the stored product before, or None for a new one; the product imported) for
# each product an upsert changes, before it is written.
ChangeObserver = Callable[[Sequence[tuple[Product | None, Product]]], None]


@dataclass(frozen=True, slots=True)
class UpsertResult:
    """What an upsert did, counted per distinct product id."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0

    def __add__(self, other: UpsertResult) -> UpsertResult:
        return UpsertResult(
            self.added + other.added, self.updated + other.updated, self.unchanged + other.unchanged
        )


@dataclass(frozen=True, slots=True)
class CoCounts:
    """How often other products were viewed / carted together with the asked ones."""

    coview: dict[str, float]
    cocart: dict[str, float]


@contextlib.contextmanager
def _unavailable(action: str) -> Iterator[None]:
    try:
        yield
    except RedisError as exc:
        raise StoreUnavailable(f"could not {action}: {exc}") from exc


class CatalogStore:
    """The Redis adapter for products and co-view/co-cart counts; every method raises
    :class:`~widget_server.errors.StoreUnavailable` when Redis fails."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        *,
        co_top: int = 200,
        co_ttl_s: int = 180 * 86_400,
        max_pairs: int = 10,
        max_learned: int = 50_000,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._co_top = co_top
        self._co_ttl = co_ttl_s
        self._max_pairs = max_pairs
        self._max_learned = max_learned

    @property
    def keys(self) -> Keys:
        return self._keys

    async def upsert(
        self,
        site: str,
        products: Iterable[Product],
        *,
        now: float | None = None,
        on_change: ChangeObserver | None = None,
    ) -> UpsertResult:
        """Store feed products, writing only those whose content changed (idempotent).

        Works in pipelined chunks of 500; a repeated id keeps its last product. A product that
        was learned from page views is replaced by the feed's. Bumps the version if anything
        changed. ``on_change`` gets each changed product with the feed product it replaces
        (read in the same round trip that writes it; None for a product new to the feed).
        """
        stamp = time.time() if now is None else now
        total, chunk = UpsertResult(), []
        for product in products:
            chunk.append(product)
            if len(chunk) == CHUNK_SIZE:
                total += await self._upsert_chunk(site, chunk, stamp, on_change)
                chunk = []
        if chunk:
            total += await self._upsert_chunk(site, chunk, stamp, on_change)
        if total.added or total.updated:
            with _unavailable("bump the catalog version"):
                await self._redis.incr(self._keys.catalog_version(site))
        return total

    async def _upsert_chunk(
        self, site: str, chunk: list[Product], now: float, on_change: ChangeObserver | None
    ) -> UpsertResult:
        k = self._keys
        latest = {product.id: product for product in chunk}
        digests = {product_id: content_hash(product) for product_id, product in latest.items()}
        with _unavailable("read the catalog"):
            before = await self._redis.hmget(k.catalog_hashes(site), list(digests))
        changed = {
            product_id: digest
            for (product_id, digest), old in zip(digests.items(), before, strict=True)
            if old is None or reply_text(old) != digest
        }
        added = sum(old is None for old in before)
        if changed:
            bodies = {
                i: _encode.encode(msgspec.structs.replace(latest[i], updated=now)) for i in changed
            }
            with _unavailable("store products"):
                async with self._redis.pipeline(transaction=False) as pipe:
                    if on_change is not None:
                        pipe.hmget(k.catalog(site), list(changed))  # before the write below
                    pipe.hset(k.catalog(site), mapping=bodies)  # type: ignore[arg-type]
                    pipe.hset(k.catalog_hashes(site), mapping=changed)  # type: ignore[arg-type]
                    pipe.hdel(k.catalog_learned(site), *changed)
                    replies = await pipe.execute()
            if on_change is not None:
                olds = [_product(raw) if raw is not None else None for raw in replies[0]]
                on_change([(old, latest[i]) for i, old in zip(changed, olds, strict=True)])
        return UpsertResult(added, len(changed) - added, len(latest) - len(changed))

    async def get(self, site: str, ids: Sequence[str]) -> dict[str, Product]:
        """The known products among ``ids`` (feed data first, else learned data), by id."""
        if not ids:
            return {}
        k = self._keys
        with _unavailable("read products"):
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hmget(k.catalog(site), list(ids))
                pipe.hmget(k.catalog_learned(site), list(ids))
                feed, learned = await pipe.execute()
        found: dict[str, Product] = {}
        for product_id, raw in zip(ids, map(_either, feed, learned), strict=True):
            if raw is not None and (product := _product(raw)) is not None:
                found[product_id] = product
        return found

    async def all_ids(self, site: str) -> set[str]:
        """Every product id of the site, from the feed and learned from page views."""
        k = self._keys
        with _unavailable("list products"):
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hkeys(k.catalog(site))
                pipe.hkeys(k.catalog_learned(site))
                feed, learned = await pipe.execute()
        return {reply_text(product_id) for product_id in (*feed, *learned)}

    async def products(self, site: str) -> list[Product]:
        """Every product of the site (feed first; learned only for ids not in the feed)."""
        found: dict[str, Product] = {}
        with _unavailable("load the catalog"):
            for key in (self._keys.catalog(site), self._keys.catalog_learned(site)):
                async for product_id, raw in self._redis.hscan_iter(key, count=1000):
                    if (product := _product(raw)) is not None:
                        found.setdefault(reply_text(product_id), product)
        return list(found.values())

    async def counts(self, site: str) -> tuple[int, int]:
        """How many products the site has from the feed, and how many learned from page views
        (for ids the feed does not have)."""
        k = self._keys
        with _unavailable("count products"):
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hlen(k.catalog(site))
                pipe.hlen(k.catalog_learned(site))
                feed, learned = await pipe.execute()
        return int(feed), int(learned)

    async def record_import(self, site: str, record: ImportRecord) -> None:
        """Remember ``record`` as the site's latest feed import (it replaces the one before)."""
        with _unavailable("record the import"):
            await self._redis.set(self._keys.catalog_last_import(site), _encode.encode(record))

    async def last_import(self, site: str) -> ImportRecord | None:
        """The site's latest feed import, or ``None`` when none was recorded."""
        with _unavailable("read the last import"):
            raw = await self._redis.get(self._keys.catalog_last_import(site))
        if raw is None:
            return None
        try:
            return _decode_record.decode(raw)
        except msgspec.DecodeError:
            return None

    async def version(self, site: str) -> int:
        """The catalog version: it changes whenever products are added, changed or removed."""
        with _unavailable("read the catalog version"):
            raw = await self._redis.get(self._keys.catalog_version(site))
        return int(raw or 0)

    async def remove_missing(self, site: str, keep_ids: Collection[str]) -> int:
        """Delete feed products whose id is not in ``keep_ids``, with their co-counts.

        Returns how many were removed; learned products stay.
        """
        k = self._keys
        with _unavailable("list products"):
            stored = [reply_text(i) for i in await self._redis.hkeys(k.catalog_hashes(site))]
        missing = [product_id for product_id in stored if product_id not in keep_ids]
        with _unavailable("remove products"):
            for start in range(0, len(missing), CHUNK_SIZE):
                ids = missing[start : start + CHUNK_SIZE]
                async with self._redis.pipeline(transaction=False) as pipe:
                    pipe.hdel(k.catalog(site), *ids)
                    pipe.hdel(k.catalog_hashes(site), *ids)
                    pipe.delete(*(k.coview(site, i) for i in ids))
                    pipe.delete(*(k.cocart(site, i) for i in ids))
                    await pipe.execute()
            if missing:
                await self._redis.incr(k.catalog_version(site))
        return len(missing)

    async def learn_from_product_view(
        self, site: str, viewed: p.Product, *, now: float | None = None
    ) -> bool:
        """Remember a product shown on a product page when the feed does not have it.

        Non-empty fields of the view fill in or refresh the learned product; feed products are
        never touched, and at most ``max_learned`` products are learned per site. Unsafe links
        are dropped. Returns whether anything was stored.
        """
        k = self._keys
        with _unavailable("read the catalog"):
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hexists(k.catalog(site), viewed.id)
                pipe.hget(k.catalog_learned(site), viewed.id)
                pipe.hlen(k.catalog_learned(site))
                in_feed, raw, learned = await pipe.execute()
        if in_feed or (raw is None and learned >= self._max_learned):
            return False
        before = (_product(raw) if raw is not None else None) or Product(id=viewed.id)
        after = _merge_view(before, viewed)
        if raw is not None and content_hash(after) == content_hash(before):
            return False
        after = msgspec.structs.replace(after, updated=time.time() if now is None else now)
        with _unavailable("learn a product"):
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hset(k.catalog_learned(site), viewed.id, _encode.encode(after))
                pipe.incr(k.catalog_version(site))
                await pipe.execute()
        return True

    async def record_coview(self, site: str, product_ids: Sequence[str]) -> None:
        """Count the newest of ``product_ids`` (ordered oldest to newest, as the session keeps
        its ``viewed`` list) as viewed together with each of the ``max_pairs`` before it.

        Call it once per product view, so every pair is counted once per session.
        """
        await self._record_pairs(site, product_ids, self._keys.coview)

    async def record_cocart(self, site: str, product_ids: Sequence[str]) -> None:
        """Like :meth:`record_coview` for the cart: the newest product is the one just added."""
        await self._record_pairs(site, product_ids, self._keys.cocart)

    def pairs(self, product_ids: Sequence[str]) -> list[tuple[str, str]]:
        """Both directions of (newest id, each of the ``max_pairs`` distinct ids before it)."""
        distinct = list(dict.fromkeys(reversed([i for i in product_ids if i])))
        newest, others = (distinct[0], distinct[1 : 1 + self._max_pairs]) if distinct else ("", [])
        return [pair for other in others for pair in ((newest, other), (other, newest))]

    async def _record_pairs(
        self, site: str, product_ids: Sequence[str], key: Callable[[str, str], str]
    ) -> None:
        await self.add_pair_counts(site, key, dict.fromkeys(self.pairs(product_ids), 1))

    async def add_pair_counts(
        self, site: str, key: Callable[[str, str], str], counts: Mapping[tuple[str, str], int]
    ) -> None:
        """Add counted pairs in one pipeline; trim and expire each touched product once."""
        if not counts:
            return
        touched = {a for a, _ in counts}
        with _unavailable("record co-occurrences"):
            async with self._redis.pipeline(transaction=False) as pipe:
                for (a, b), n in counts.items():
                    pipe.zincrby(key(site, a), n, b)
                for product_id in touched:
                    pipe.zremrangebyrank(key(site, product_id), 0, -(self._co_top + 1))
                    pipe.expire(key(site, product_id), self._co_ttl)
                await pipe.execute()

    async def co_counts(self, site: str, product_ids: Sequence[str], *, top: int = 50) -> CoCounts:
        """The ``top`` co-viewed and co-carted products of each id, counts summed over the ids."""
        k = self._keys
        with _unavailable("read co-occurrences"):
            async with self._redis.pipeline(transaction=False) as pipe:
                for product_id in product_ids:
                    pipe.zrevrange(k.coview(site, product_id), 0, top - 1, withscores=True)
                    pipe.zrevrange(k.cocart(site, product_id), 0, top - 1, withscores=True)
                replies = await pipe.execute()
        coview: dict[str, float] = {}
        cocart: dict[str, float] = {}
        for n, reply in enumerate(replies):
            counts = coview if n % 2 == 0 else cocart
            for member, score in reply:
                counts[reply_text(member)] = counts.get(reply_text(member), 0.0) + float(score)
        return CoCounts(coview, cocart)


def _either(feed: bytes | None, learned: bytes | None) -> bytes | None:
    return feed if feed is not None else learned


def _product(raw: bytes | str) -> Product | None:
    try:
        return _decode.decode(raw)
    except msgspec.DecodeError:
        return None


def _merge_view(before: Product, viewed: p.Product) -> Product:
    return msgspec.structs.replace(
        before,
        title=viewed.title or before.title,
        price=viewed.price if viewed.price is not None else before.price,
        currency=viewed.currency or before.currency,
        product_type=normalize_category(viewed.category) or before.product_type,
        brand=viewed.brand or before.brand,
        link=safe_url(viewed.url) or before.link,
        image_link=safe_url(viewed.image) or before.image_link,
    )


@dataclass(slots=True)
class _CachedIndex:
    version: int
    index: SimilarityIndex
    checked: float


@dataclass(slots=True)
class SimilarityIndexCache:
    """One :class:`SimilarityIndex` per site, rebuilt when the catalog version changes.

    The version is read at most every ``check_every_s`` seconds (or after :meth:`invalidate`);
    the rebuild runs in a worker thread, and callers keep getting the previous index meanwhile.
    """

    store: CatalogStore
    check_every_s: float = 5.0
    weights: SimilarityWeights = DEFAULT_WEIGHTS
    clock: Callable[[], float] = time.monotonic
    _entries: dict[str, _CachedIndex] = field(default_factory=dict)
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    async def get(self, site: str) -> SimilarityIndex:
        """The site's index; a stale one when Redis fails, StoreUnavailable when there is none."""
        entry = self._entries.get(site)
        if entry is not None and self.clock() - entry.checked < self.check_every_s:
            return entry.index
        lock = self._locks.setdefault(site, asyncio.Lock())
        if entry is not None and lock.locked():
            return entry.index
        async with lock:
            entry = self._entries.get(site)
            if entry is not None and self.clock() - entry.checked < self.check_every_s:
                return entry.index
            try:
                entry = await self._refresh(site, entry)
            except StoreUnavailable:
                if entry is None:
                    raise
            entry.checked = self.clock()
            self._entries[site] = entry
            return entry.index

    async def _refresh(self, site: str, entry: _CachedIndex | None) -> _CachedIndex:
        version = await self.store.version(site)
        if entry is not None and entry.version == version:
            return entry
        products = await self.store.products(site)
        index = await asyncio.to_thread(SimilarityIndex.build, products, self.weights)
        return _CachedIndex(version, index, 0.0)

    def invalidate(self, site: str) -> None:
        """Make the next :meth:`get` check the version (e.g. on a catalog-changed broadcast)."""
        if (entry := self._entries.get(site)) is not None:
            entry.checked = float("-inf")


# --- feed import -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ImportReport:
    """The outcome of one feed import; ``failed`` says why the feed was not read to its end.

    ``row_errors`` holds the first row errors in feed order (as many as the import was asked to
    report); ``errors`` counts them all.
    """

    rows: int
    added: int
    updated: int
    unchanged: int
    errors: int
    removed: int = 0
    seconds: float = 0.0
    failed: str | None = None
    row_errors: tuple[RowError, ...] = ()
    # Products whose price dropped, back in stock, low in stock, new (see catalog/changes.py),
    # and the visitors an email was scheduled for because of them.
    changes: dict[str, int] = field(default_factory=dict)
    emails: int = 0

    @property
    def ok(self) -> bool:
        return self.failed is None

    def summary(self) -> str:
        text = (
            f"{self.rows:,} rows read: {self.added:,} added, {self.updated:,} updated, "
            f"{self.unchanged:,} unchanged, {self.errors:,} errors"
        )
        if self.removed:
            text += f", {self.removed:,} removed"
        if changed := changes_text(self.changes):
            text += f"; {changed}; emails for {_plural(self.emails, 'visitor', 'visitors')}"
        return f"{text} ({self.seconds:.1f} s)"


CHANGE_WORDS = {
    "price_drop": ("price drop", "price drops"),
    "back_in_stock": ("back in stock", "back in stock"),
    "low_stock": ("low in stock", "low in stock"),
    "category_interest": ("new product", "new products"),
}


def _plural(count: int, one: str, many: str) -> str:
    return f"{count:,} {one if count == 1 else many}"


def changes_text(changes: Mapping[str, int]) -> str:
    """``"3 price drops, 1 back in stock"``: the changes of an import that happened."""
    return ", ".join(
        _plural(changes[kind], *CHANGE_WORDS[kind]) for kind in CHANGE_KINDS if changes.get(kind)
    )


class ImportRecord(msgspec.Struct, frozen=True, kw_only=True):
    """The latest import of a site's feed as it is kept in Redis: when, from where (``source``,
    such as ``"command line (feed.tsv)"``) and what it did."""

    at: float
    source: str
    rows: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    errors: int = 0
    removed: int = 0
    failed: str | None = None
    changes: dict[str, int] = {}
    emails: int = 0

    @classmethod
    def of(cls, report: ImportReport, source: str, at: float) -> ImportRecord:
        return cls(
            at=at, source=source, rows=report.rows, added=report.added, updated=report.updated,
            unchanged=report.unchanged, errors=report.errors, removed=report.removed,
            failed=report.failed, changes=dict(report.changes), emails=report.emails,
        )  # fmt: skip


_decode_record = msgspec.json.Decoder(ImportRecord)


class _Progress:
    """Progress on ``out``: a redrawn bar on a terminal, else a plain line every few seconds."""

    def __init__(self, out: TextIO, clock: Callable[[], float]) -> None:
        self._out, self._clock = out, clock
        isatty = getattr(out, "isatty", None)
        self._tty = bool(isatty and isatty())
        self._every = 0.1 if self._tty else 5.0
        self._last = clock()
        self._drawn = False

    def update(self, share: float, rows: int, errors: int) -> None:
        if self._clock() - self._last < self._every:
            return
        self._last = self._clock()
        counts = f"{share:4.0%}  {rows:,} rows, {errors:,} errors"
        if self._tty:
            bar = "#" * int(share * 30)
            self._out.write(f"\r[{bar:<30}] {counts}")
            self._drawn = True
        else:
            self._out.write(f"importing: {counts}\n")
        self._out.flush()

    def line(self, text: str) -> None:
        self._clear()
        self._out.write(text + "\n")

    def _clear(self) -> None:
        if self._drawn:
            self._out.write("\r\x1b[K")
            self._drawn = False


@dataclass(slots=True)
class _FeedImport:
    store: CatalogStore
    site: str
    progress: _Progress
    max_error_lines: int
    now: float | None
    triggers: ImportTriggers | None = None
    changes: ImportChanges | None = None
    rows: int = 0
    errors: int = 0
    result: UpsertResult = field(default_factory=UpsertResult)
    seen_ids: set[str] = field(default_factory=set)
    pending: list[Product] = field(default_factory=list)
    row_errors: list[RowError] = field(default_factory=list)

    async def take(self, item: FeedItem) -> None:
        self.rows += 1
        if isinstance(item, RowError):
            self.errors += 1
            self.seen_ids.add(item.product_id)
            if self.errors <= self.max_error_lines:
                self.row_errors.append(item)
                self.progress.line(str(item))
            elif self.errors == self.max_error_lines + 1:
                self.progress.line("(further row errors are counted but not shown)")
            return
        self.seen_ids.add(item.id)
        self.pending.append(item)
        if len(self.pending) == CHUNK_SIZE:
            await self.flush()

    async def start(self) -> None:
        """Read the thresholds of the changes to look for (only with ``triggers``)."""
        if self.triggers is not None:
            rules = await self.triggers.rules(self.site)
            had_products, _ = await self.store.counts(self.site)
            self.changes = ImportChanges(replace(rules, new_products=had_products > 0))

    async def flush(self) -> None:
        if self.pending:
            observe = self.changes.observe if self.changes is not None else None
            self.result += await self.store.upsert(
                self.site, self.pending, now=self.now, on_change=observe
            )
            self.pending = []

    async def finish(
        self, *, prune: bool, failed: str | None, seconds: float, source: str
    ) -> ImportReport:
        """Store what is pending, prune when asked (only after a fully read feed), print the
        summary, and record the import when it read anything into a valid site."""
        await self.flush()
        removed = 0
        if prune and failed is None:
            removed = await self.store.remove_missing(self.site, self.seen_ids)
        result = self.result
        at = time.time() if self.now is None else self.now
        emails = 0
        if self.triggers is not None and self.changes is not None and self.changes.any():
            emails = await self.triggers.after_import(self.site, self.changes, at=at)
        report = ImportReport(
            self.rows, result.added, result.updated, result.unchanged, self.errors, removed,
            seconds, failed, tuple(self.row_errors),
            dict(self.changes.counts) if self.changes is not None else {}, emails,
        )  # fmt: skip
        if failed:
            self.progress.line(f"error: {failed}")
        self.progress.line(report.summary())
        if _SITE_KEY.fullmatch(self.site) and (failed is None or self.rows):
            await self.store.record_import(self.site, ImportRecord.of(report, source, at))
        return report


async def import_feed(
    store: CatalogStore,
    site: str,
    path: Path,
    *,
    out: TextIO,
    limits: FeedLimits = DEFAULT_LIMITS,
    prune: bool = False,
    max_error_lines: int = 1000,
    now: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    source: str | None = None,
    triggers: ImportTriggers | None = None,
) -> ImportReport:
    """Import the feed at ``path`` into the site's catalog, reporting on ``out`` as it goes.

    Valid rows are stored even when others fail; a repeated id is a row error. With ``prune``,
    feed products missing from a fully read feed are removed. A feed that cannot be read to its
    end (or an invalid site key) does not raise: the report's ``failed`` says why. An import
    that read anything is recorded as the site's latest, from ``source`` (by default
    ``"command line (FILE NAME)"``). With ``triggers``, the products whose price dropped,
    that came back in stock or run low, and new ones are counted and handed to them at the end
    (:mod:`widget_server.catalog.changes`). Raises StoreUnavailable.
    """
    started = clock()
    job = _FeedImport(store, site, _Progress(out, clock), max_error_lines, now, triggers)
    failed: str | None = None
    try:
        if not _SITE_KEY.fullmatch(site):
            raise FeedError(f"{site[:80]!r} is not a site key (letters, digits, - and _)")
        await job.start()
        with path.open("rb") as stream:
            size = os.fstat(stream.fileno()).st_size
            if size > limits.max_file_bytes:
                raise FeedError(f"the feed is larger than {limits.max_file_bytes} bytes")
            for item in parse_feed(stream, limits):
                await job.take(item)
                job.progress.update(stream.tell() / max(size, 1), job.rows, job.errors)
    except FeedError as exc:
        failed = str(exc)
    except OSError as exc:
        failed = f"cannot read {path}: {exc.strerror or exc}"
    return await job.finish(
        prune=prune,
        failed=failed,
        seconds=clock() - started,
        source=source or f"command line ({path.name})",
    )


async def import_parsed(
    store: CatalogStore,
    site: str,
    items: Iterable[FeedItem],
    *,
    source: str,
    prune: bool = False,
    max_error_lines: int = 1000,
    now: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    triggers: ImportTriggers | None = None,
) -> ImportReport:
    """Import the items of a feed that was already parsed to its end (:func:`parse_feed`).

    For callers that parse first, so that a feed which cannot be read changes nothing (the
    admin's upload). Counts, row errors, ``prune`` and the latest-import record work as in
    :func:`import_feed`, and so do ``triggers``; nothing is printed. An invalid site key comes
    back as ``failed``. Raises StoreUnavailable.
    """
    started = clock()
    job = _FeedImport(store, site, _Progress(io.StringIO(), clock), max_error_lines, now, triggers)
    if not _SITE_KEY.fullmatch(site):
        failed = f"{site[:80]!r} is not a site key (letters, digits, - and _)"
        return await job.finish(prune=False, failed=failed, seconds=0.0, source=source)
    await job.start()
    for item in items:
        await job.take(item)
    return await job.finish(prune=prune, failed=None, seconds=clock() - started, source=source)


def run_catalog_import(
    settings_redis_url: str,
    prefix: str,
    redis_mode: str,
    site: str,
    path: Path,
    *,
    out: TextIO,
    limits: FeedLimits = DEFAULT_LIMITS,
    prune: bool = False,
    triggers_for: Callable[[Redis, Keys], ImportTriggers] | None = None,
) -> ImportReport:
    """Import a feed file into a site's catalog from synchronous code (the CLI).

    Runs its own event loop; see :func:`import_feed` for what it prints and guarantees (with
    the triggers ``triggers_for`` makes from the connection). Raises StoreUnavailable when
    Redis cannot be reached.
    """

    async def main() -> ImportReport:
        redis = open_store(settings_redis_url, redis_mode)
        try:
            keys = Keys(prefix)
            store = CatalogStore(redis, keys)
            triggers = triggers_for(redis, keys) if triggers_for is not None else None
            return await import_feed(
                store, site, path, out=out, limits=limits, prune=prune, triggers=triggers
            )
        finally:
            await redis.aclose()

    return asyncio.run(main())
