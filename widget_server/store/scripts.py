"""Every Lua script of the product, registered once per Redis client: the one place Lua is loaded.

A script lives in ``lua/<owner>_<verb>.lua``, named for the module that runs it (``session_open``
is run by :mod:`widget_server.visitors.sessions`), with ``lua/common.lua`` prepended. A script
reaches keys only through ``KEYS``, formatted by :class:`~widget_server.store.keys.Keys`; every
script's keys share one hash slot, so each is atomic on a Redis Cluster too.

Registering computes each script's SHA-1 locally (no round trip); the first call of a script that
the server has not cached sends its source once (EVALSHA falls back to EVAL).
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass, fields
from importlib import resources
from typing import Any

from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

LUA = resources.files(__package__) / "lua"
COMMON = "common"


def source(name: str) -> str:
    """The full text of script ``name``: the shared helpers, then the script."""
    return (LUA / f"{COMMON}.lua").read_text() + "\n" + (LUA / f"{name}.lua").read_text()


@dataclass(frozen=True, slots=True)
class Scripts:
    """One field per file in ``lua/`` (a test checks that they match)."""

    # visitors.sessions
    session_open: AsyncScript
    session_event: AsyncScript
    session_forget: AsyncScript
    session_order: AsyncScript
    # offers.engine
    offer_claim: AsyncScript
    offer_confirm: AsyncScript
    offer_reward: AsyncScript
    offer_attribute: AsyncScript
    offer_reserve: AsyncScript
    offer_release: AsyncScript
    # realtime.erasure
    erasure_index: AsyncScript
    erasure_campaign: AsyncScript
    # mail.jobs
    mailjob_schedule: AsyncScript
    mailjob_cancel: AsyncScript
    mailjob_claim: AsyncScript
    mailjob_commit: AsyncScript
    mailjob_finish: AsyncScript
    # mail.optin
    optin_schedule: AsyncScript
    optin_commit: AsyncScript
    optin_confirm: AsyncScript
    # mail.experiments
    flow_expose: AsyncScript
    flow_click: AsyncScript
    flow_attribute: AsyncScript
    # mail.send
    sendrate_wait: AsyncScript
    # admin.auth
    throttle_reserve: AsyncScript

    @classmethod
    def of(cls, redis: Any) -> Scripts:
        """The scripts bound to ``redis``, registered on first use and kept while it lives."""
        scripts: Scripts | None = _REGISTERED.get(redis)
        if scripts is None:
            scripts = cls(**{f.name: redis.register_script(source(f.name)) for f in fields(cls)})
            _REGISTERED[redis] = scripts
        return scripts


ScriptCall = tuple[AsyncScript, Sequence[str], Sequence[Any]]


async def pipelined(redis: Any, calls: Sequence[ScriptCall]) -> list[Any]:
    """Run many script calls in one pipelined round trip (non-transactional: each call is atomic
    on its own slot). Each result is the call's reply or its error. A cluster pipeline does not
    load scripts a node has not seen yet: the calls answered NOSCRIPT are run again once their
    scripts are loaded on every master."""
    if not calls:
        return []
    results = await _pipeline(redis, calls)
    missing = [n for n, r in enumerate(results) if isinstance(r, NoScriptError)]
    if missing:
        for script in {id(calls[n][0]): calls[n][0] for n in missing}.values():
            await redis.script_load(script.script)
        again = await _pipeline(redis, [calls[n] for n in missing])
        for n, result in zip(missing, again, strict=True):
            results[n] = result
    return results


async def _pipeline(redis: Any, calls: Sequence[ScriptCall]) -> list[Any]:
    async with redis.pipeline(transaction=False) as pipe:
        for script, keys, args in calls:
            await script(keys=list(keys), args=list(args), client=pipe)
        return list(await pipe.execute(raise_on_error=False))


def names() -> list[str]:
    return [f.name for f in fields(Scripts)]


_REGISTERED: weakref.WeakKeyDictionary[Any, Scripts] = weakref.WeakKeyDictionary()
