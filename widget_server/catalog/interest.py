"""Who is interested in a product or a category: the reverse of the visitors' recent views.

A product view or a cart add puts the visitor into the product's sorted set (visitor -> time)
and into its category's (the catalog's ``product_type``, else Google product category, else the
page's category; by digest of the lower-cased name), keeping the latest
:data:`PER_PRODUCT` visitors of the last :data:`WINDOW_S` (30 days). A third sorted set per
visitor lists their entries, so :meth:`InterestIndex.forget` (part of every erasure, see
``realtime/consent.forget``) removes them from every set; it holds at most
:data:`PER_VISITOR` entries, the oldest leaving every set as newer ones come.

Off the hot path: the WebSocket answers first; :meth:`InterestIndex.observe` only notes the
event in memory, and the notes are written once a second in pipelines, each key on a slot of
its own (no multi-key script). A visitor whose profile is gone (erased) when the notes are
written is left out; one erased in the instant between that check and the write stays in the
sets until they expire (30 days after their last write), and gets no email from them, since
every email is scheduled from the profile. A node that stops loses at most a second of notes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable, Mapping

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from ..errors import StoreUnavailable
from ..store.keys import Keys
from ..store.replies import reply_text
from ..visitors.session_view import SessionView
from ..wire import protocol as p
from .changes import category_of
from .feeds import normalize_category
from .store import CatalogStore

log = logging.getLogger("widget_server.interest")
WINDOW_S = 30 * 86400
PER_PRODUCT = 500
PER_VISITOR = 300
FLUSH_EVERY_S = 1.0
# Notes kept in memory between writes; beyond this, a write starts at once.
MAX_PENDING = 20_000
# Visitors whose notes are written in one pipeline.
FLUSH_CHUNK = 25


def category_digest(category: str) -> str:
    """The key part of a category: a digest of its lower-cased, normalised name."""
    name = normalize_category(category).lower()
    return hashlib.blake2b(name.encode(), digest_size=8).hexdigest()


class InterestIndex:
    """The interest sets of every site; every method raises nothing but StoreUnavailable."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        catalog: CatalogStore | None = None,
        *,
        per_product: int = PER_PRODUCT,
        per_visitor: int = PER_VISITOR,
        window_s: int = WINDOW_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._catalog = catalog or CatalogStore(redis, keys)
        self._per_product = per_product
        self._per_visitor = per_visitor
        self._window = window_s
        self._clock = clock
        # site -> visitor -> product id -> (time, the page's category)
        self._notes: dict[str, dict[str, dict[str, tuple[float, str]]]] = {}
        self._size = 0
        self._flush: asyncio.Task[None] | None = None

    # --- writing --------------------------------------------------------------------------
    def observe(self, site: str, visitor: str, message: p.ClientMessage, view: SessionView) -> None:
        """Note a product view or cart add that was just recorded; written within a second."""
        if view.duplicate:
            return
        if isinstance(message, p.ProductView):
            product_id, category = message.product.id, message.product.category
        elif isinstance(message, p.CartAdd):
            product_id, category = message.item.id, message.item.category
        else:
            return
        visitors = self._notes.setdefault(site, {})
        visitors.setdefault(visitor, {})[product_id] = (self._clock(), category)
        self._size += 1
        if self._flush is None:
            delay = 0.0 if self._size >= MAX_PENDING else FLUSH_EVERY_S
            self._flush = asyncio.create_task(self._flush_later(delay))

    async def _flush_later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self._flush = None
        try:
            await self.flush()
        except StoreUnavailable as exc:
            log.warning("interest notes lost", extra={"error": str(exc)})

    async def flush(self) -> None:
        """Write every note taken so far, a few visitors per pipeline: one second of a busy
        node's notes in one pipeline kept the event loop packing and parsing thousands of
        commands at once, which every visitor's next answer waited for."""
        notes, self._notes, self._size = self._notes, {}, 0
        for site, visitors in notes.items():
            names = list(visitors)
            for start in range(0, len(names), FLUSH_CHUNK):
                chunk = {v: visitors[v] for v in names[start : start + FLUSH_CHUNK]}
                await self.record(site, chunk)
                await asyncio.sleep(0)  # let the sockets' messages through in between

    async def record(
        self, site: str, visitors: Mapping[str, Mapping[str, tuple[float, str]]]
    ) -> None:
        """Add ``visitor -> product id -> (time, page category)`` to the site's sets."""
        if not visitors:
            return
        k = self._keys
        product_ids = sorted({pid for products in visitors.values() for pid in products})
        known = await self._catalog.get(site, product_ids)
        categories = {pid: category_of(known[pid]) if pid in known else "" for pid in product_ids}
        try:
            names = list(visitors)
            async with self._redis.pipeline(transaction=False) as pipe:
                for visitor in names:
                    pipe.exists(k.profile(site, visitor))
                exists = await pipe.execute()
            by_product: dict[str, dict[str, float]] = {}
            by_category: dict[str, dict[str, float]] = {}
            mine: dict[str, dict[str, float]] = {}
            for visitor, alive in zip(names, exists, strict=True):
                if not alive:
                    continue
                for pid, (at, page_category) in visitors[visitor].items():
                    by_product.setdefault(pid, {})[visitor] = at
                    entries = mine.setdefault(visitor, {})
                    entries[f"p:{pid}"] = at
                    category = categories.get(pid) or normalize_category(page_category)
                    if category:
                        digest = category_digest(category)
                        by_category.setdefault(digest, {})[visitor] = at
                        entries[f"c:{digest}"] = at
            if not mine:
                return
            now = self._clock()
            oldest = now - self._window
            async with self._redis.pipeline(transaction=False) as pipe:
                for pid, members in by_product.items():
                    self._add(pipe, k.interest(site, pid), members, oldest, self._per_product)
                for digest, members in by_category.items():
                    key = k.interest_category(site, digest)
                    self._add(pipe, key, members, oldest, self._per_product)
                for visitor, entries in mine.items():
                    key = k.interest_of(site, visitor)
                    pipe.zadd(key, entries)
                    pipe.zremrangebyscore(key, "-inf", f"({oldest!r}")
                    pipe.expire(key, self._window)
                    pipe.zcard(key)
                replies = await pipe.execute()
            sizes = [int(r) for r in replies[-len(mine) * 4 :][3::4]]
            over = {v: n - self._per_visitor for v, n in zip(mine, sizes, strict=True)}
            for visitor, excess in over.items():
                if excess > 0:
                    await self._drop_oldest(site, visitor, excess)
        except RedisError as exc:
            raise StoreUnavailable(f"could not record interest: {exc}") from exc

    def _add(
        self, pipe: Pipeline, key: str, members: Mapping[str, float], oldest: float, top: int
    ) -> None:
        """Add, drop what left the window, keep the latest ``top``, expire with the window."""
        pipe.zadd(key, dict(members))
        pipe.zremrangebyscore(key, "-inf", f"({oldest!r}")
        pipe.zremrangebyrank(key, 0, -(top + 1))
        pipe.expire(key, self._window)

    async def _drop_oldest(self, site: str, visitor: str, count: int) -> None:
        k = self._keys
        popped = await self._redis.zpopmin(k.interest_of(site, visitor), count)
        names = [reply_text(pair[0] if isinstance(pair, list | tuple) else pair) for pair in popped]
        await self._remove(site, visitor, names)

    async def _remove(self, site: str, visitor: str, entries: list[str]) -> int:
        k = self._keys
        if not entries:
            return 0
        async with self._redis.pipeline(transaction=False) as pipe:
            for entry in entries:
                kind, _, name = entry.partition(":")
                key = k.interest(site, name) if kind == "p" else k.interest_category(site, name)
                pipe.zrem(key, visitor)
            removed = await pipe.execute()
        return sum(int(n) for n in removed)

    # --- reading --------------------------------------------------------------------------
    async def interested(self, site: str, product_id: str, *, now: float, limit: int) -> list[str]:
        """The visitors who viewed or carted the product in the window, latest first."""
        return await self._latest(self._keys.interest(site, product_id), now, limit)

    async def interested_in_category(
        self, site: str, category: str, *, now: float, limit: int
    ) -> list[str]:
        """The visitors who viewed or carted a product of ``category`` in the window."""
        key = self._keys.interest_category(site, category_digest(category))
        return await self._latest(key, now, limit)

    async def _latest(self, key: str, now: float, limit: int) -> list[str]:
        try:
            found = await self._redis.zrevrangebyscore(
                key, "+inf", repr(now - self._window), start=0, num=limit
            )
        except RedisError as exc:
            raise StoreUnavailable(f"could not read interest: {exc}") from exc
        return [reply_text(visitor) for visitor in found]

    # --- erasure --------------------------------------------------------------------------
    async def forget(self, site: str, visitor: str) -> int:
        """Remove the visitor from every interest set (and notes not yet written on this
        node). Returns the set entries removed."""
        with contextlib.suppress(KeyError):
            del self._notes[site][visitor]
        key = self._keys.interest_of(site, visitor)
        try:
            entries = [reply_text(e) for e in await self._redis.zrange(key, 0, -1)]
            removed = await self._remove(site, visitor, entries)
            await self._redis.delete(key)
        except RedisError as exc:
            raise StoreUnavailable(f"could not erase interest: {exc}") from exc
        return removed
