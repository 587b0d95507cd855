"""The Lua scripts, loaded once from ``widget_server/lua`` with the shared helpers prepended."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

from redis.asyncio import Redis
from redis.commands.core import AsyncScript


def _source(name: str) -> str:
    lua = resources.files("widget_server") / "lua"
    return (lua / "common.lua").read_text() + "\n" + (lua / f"{name}.lua").read_text()


@dataclass(frozen=True, slots=True)
class Scripts:
    open_session: AsyncScript
    apply_event: AsyncScript
    forget: AsyncScript
    deliver: AsyncScript
    claim: AsyncScript
    record_order: AsyncScript
    attribute: AsyncScript

    @classmethod
    def register(cls, redis: Redis) -> Scripts:
        return cls(
            open_session=redis.register_script(_source("open_session")),
            apply_event=redis.register_script(_source("apply_event")),
            forget=redis.register_script(_source("forget")),
            deliver=redis.register_script(_source("deliver")),
            claim=redis.register_script(_source("claim")),
            record_order=redis.register_script(_source("record_order")),
            attribute=redis.register_script(_source("attribute")),
        )
