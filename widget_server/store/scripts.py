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

import msgspec
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.crc import key_slot
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
    offer_visit: AsyncScript
    offer_confirm: AsyncScript
    offer_reward: AsyncScript
    offer_attribute: AsyncScript
    offer_reserve: AsyncScript
    offer_release: AsyncScript
    offer_trace: AsyncScript
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
    flow_sent: AsyncScript
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

# The batch form of a script: the script as a function, called once per call. KEYS are every
# call's keys in order; ARGV[1] is a JSON array with, per call, its number of keys and its
# arguments (strings, as ARGV always holds): one argument to pack and send, decoded in C. A call
# that fails gives its error in its place and the others go on, as they would one by one.
_BATCH_DRIVER = """
local out, ki = {}, 1
for i, call in ipairs(cjson.decode(ARGV[1])) do
  local keys = {}
  for j = 1, call[1] do keys[j] = KEYS[ki]; ki = ki + 1 end
  local ok, result = pcall(one, keys, call[2])
  if not ok then
    result = redis.error_reply(type(result) == 'table' and result.err or tostring(result))
  elseif result == nil then
    result = false
  end
  out[i] = result
end
return out
"""


def batch_source(script_source: str) -> str:
    """The batch form of a script (see :data:`_BATCH_DRIVER`)."""
    return f"local function one(KEYS, ARGV)\n{script_source}\nend\n{_BATCH_DRIVER}"


def batched(redis: Any, calls: Sequence[ScriptCall]) -> ScriptCall:
    """Many calls of one script whose keys share one hash slot, as one call of its batch form:
    one command to pack, send and run instead of one per call. Its reply is the list of the
    calls' replies (an error in the place of a call that failed)."""
    script = calls[0][0]
    forms = _BATCHED.setdefault(redis, {})
    batch = forms.get(script.sha)
    if batch is None:
        text = script.script if isinstance(script.script, str) else bytes(script.script).decode()
        batch = forms[script.sha] = redis.register_script(batch_source(text))
    keys: list[str] = []
    spec: list[tuple[int, list[str]]] = []
    for _, call_keys, call_args in calls:
        keys.extend(call_keys)
        spec.append((len(call_keys), [a if type(a) is str else _as_text(a) for a in call_args]))
    return batch, keys, [msgspec.json.encode(spec)]


def _as_text(arg: Any) -> str:
    """An argument as Redis would hand it to a script: its text."""
    if isinstance(arg, str):
        return arg
    if isinstance(arg, bytes | bytearray | memoryview):
        return bytes(arg).decode()
    if isinstance(arg, float):
        return repr(arg)
    return str(arg)


async def pipelined(redis: Any, calls: Sequence[ScriptCall]) -> list[Any]:
    """Run many script calls in one pipelined round trip (non-transactional: each call is atomic
    on its own slot). Calls of one script on one hash slot go as one call of its batch form
    (:func:`batched`): on one server that is every call of a script; on a cluster, the calls
    that share a slot (the claims of one campaign). Each result is the call's reply or its error.
    A cluster pipeline does not load scripts a node has not seen yet: the calls answered
    NOSCRIPT are run again once their scripts are loaded on every master."""
    if not calls:
        return []
    groups: dict[tuple[str, int], list[int]] = {}
    cluster = isinstance(redis, RedisCluster)
    for n, (script, keys, _) in enumerate(calls):
        slot = key_slot(str(keys[0]).encode()) if cluster and keys else 0
        groups.setdefault((script.sha, slot), []).append(n)
    members = list(groups.values())
    sent = [calls[m[0]] if len(m) == 1 else batched(redis, [calls[n] for n in m]) for m in members]
    replies = await _with_scripts_loaded(redis, sent)
    results: list[Any] = [None] * len(calls)
    for group, reply in zip(members, replies, strict=True):
        if len(group) == 1:
            results[group[0]] = reply
            continue
        for position, n in enumerate(group):
            results[n] = reply if isinstance(reply, Exception) else reply[position]
    return results


async def _with_scripts_loaded(redis: Any, calls: Sequence[ScriptCall]) -> list[Any]:
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
    # EVALSHA itself: a script called on a pipeline makes redis-py ask SCRIPT EXISTS first, a
    # round trip more per pipeline. A script the server does not know is answered NOSCRIPT and
    # loaded then (_with_scripts_loaded).
    async with redis.pipeline(transaction=False) as pipe:
        for script, keys, args in calls:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        return list(await pipe.execute(raise_on_error=False))


def names() -> list[str]:
    return [f.name for f in fields(Scripts)]


_REGISTERED: weakref.WeakKeyDictionary[Any, Scripts] = weakref.WeakKeyDictionary()
_BATCHED: weakref.WeakKeyDictionary[Any, dict[str, AsyncScript]] = weakref.WeakKeyDictionary()
