"""The audit log: every change made in the admin (who, what, when, before and after), in Redis.

Also the field-by-field diff that the log and the campaign history show.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from .keys import Keys

AUDIT_LIMIT = 10_000
PAGE_SIZE = 50
_MISSING = object()


@dataclass(frozen=True, slots=True)
class Change:
    path: str
    before: Any
    after: Any


class AuditLog:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys

    async def record(
        self,
        actor: str,
        action: str,
        target: str,
        *,
        site: str = "",
        before: Any = None,
        after: Any = None,
        at: float | None = None,
    ) -> None:
        entry = {
            "at": at or time.time(),
            "actor": actor,
            "action": action,
            "target": target,
            "site": site,
            "before": before,
            "after": after,
        }
        key = self._keys.admin_audit()
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.lpush(key, json.dumps(entry))
            pipe.ltrim(key, 0, AUDIT_LIMIT - 1)
            await pipe.execute()

    async def page(self, number: int) -> tuple[list[dict[str, Any]], bool]:
        """One page of entries, newest first, and whether an older page exists."""
        start = max(0, number - 1) * PAGE_SIZE
        raw = await self._redis.lrange(self._keys.admin_audit(), start, start + PAGE_SIZE)
        entries = [json.loads(item) for item in raw]
        for entry in entries:
            entry["changes"] = changes(entry.get("before"), entry.get("after"))
        return entries[:PAGE_SIZE], len(entries) > PAGE_SIZE


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts and lists as ``{"variants.0.offer.headline": ...}``; lists of plain values
    stay one entry, so a changed weekday list reads as one change."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, list) and any(isinstance(item, dict | list) for item in value):
        out = {}
        for index, item in enumerate(value):
            out.update(flatten(item, f"{prefix}.{index}" if prefix else str(index)))
        return out
    return {prefix or "value": value}


def changes(before: Any, after: Any, *, ignore: tuple[str, ...] = ()) -> list[Change]:
    """The fields that differ between two versions, in a stable order."""
    old = flatten(before) if before is not None else {}
    new = flatten(after) if after is not None else {}
    paths = sorted(set(old) | set(new), key=_path_order)
    return [
        Change(path, old.get(path), new.get(path))
        for path in paths
        if path not in ignore and old.get(path, _MISSING) != new.get(path, _MISSING)
    ]


def _path_order(path: str) -> list[tuple[int, int | str]]:
    return [(0, int(part)) if part.isdigit() else (1, part) for part in path.split(".")]
