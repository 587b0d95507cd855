"""The Lua scripts: one loader knows them all, and no script makes up a key name."""

from __future__ import annotations

import asyncio
import re
import secrets

import pytest
import redis
from redis.commands.core import Script
from redis.exceptions import ResponseError

from widget_server.store.client import open_store
from widget_server.store.scripts import COMMON, LUA, Scripts, names, pipelined, source

# Commands whose first argument is not a key.
NOT_A_KEY = {"PUBLISH", "SPUBLISH", "TIME", "INFO"}
CALL = re.compile(r"redis\.(?:p?call)\(\s*'(\w+)'\s*,\s*([^,)]+)")
BUILT = re.compile(r"local\s+(\w+)\s*=\s*[^\n]*\.\.")


def _files() -> set[str]:
    return {p.name.removesuffix(".lua") for p in LUA.iterdir() if p.name.endswith(".lua")}


def test_every_script_file_is_loaded_and_every_loaded_script_has_a_file() -> None:
    assert set(names()) == _files() - {COMMON}


def test_scripts_are_named_for_their_owner() -> None:
    owners = {"session", "offer", "erasure", "mailjob", "optin", "flow", "sendrate"}
    owners.add("throttle")
    assert {name.split("_")[0] for name in names()} <= owners


def test_keys_reach_a_script_only_through_KEYS() -> None:
    """The first argument of every key command is ``KEYS[n]`` or a local holding one, never a
    name put together in Lua (it could hash to another slot on a cluster)."""
    wrong = {name: _made_up_keys((LUA / f"{name}.lua").read_text()) for name in sorted(_files())}
    assert not any(wrong.values()), wrong


def _made_up_keys(text: str) -> list[str]:
    built = set(BUILT.findall(text))
    found = []
    for command, first in CALL.findall(text):
        first = first.strip()
        if command.upper() in NOT_A_KEY:
            continue
        if ".." in first or first.startswith(("'", '"', "ARGV")) or first in built:
            found.append(f"{command} {first}")
    return found


def test_the_checker_sees_a_key_built_in_lua() -> None:
    made_up = "redis.call('DEL', ARGV[1] .. ':s:' .. sid)"
    assert [(c, f.strip()) for c, f in CALL.findall(made_up)] == [
        ("DEL", "ARGV[1] .. ':s:' .. sid")
    ]


def test_one_registration_per_client() -> None:
    client = redis.Redis()  # never connects: registering only hashes the sources
    scripts = Scripts.of(client)  # type: ignore[arg-type]
    assert Scripts.of(client) is scripts  # type: ignore[arg-type]
    assert Scripts.of(redis.Redis()) is not scripts  # type: ignore[arg-type]
    claim = scripts.offer_claim
    assert isinstance(claim, Script)
    assert claim.script == source("offer_claim")
    assert source("offer_claim").startswith((LUA / "common.lua").read_text())


@pytest.mark.parametrize("store", ["single", pytest.param("cluster", marks=pytest.mark.cluster)])
def test_calls_sent_together_answer_as_one_by_one(
    store: str, request: pytest.FixtureRequest
) -> None:
    """Calls of one script on one slot go as one call of its batch form; each still gets its
    own reply, a failing call its own error, and the others still run; scripts the store has
    forgotten are loaded again."""
    if store == "cluster":
        url = request.getfixturevalue("valkey_cluster").seed_url
    else:
        url = request.getfixturevalue("valkey").url
    run = secrets.token_hex(4)
    # Four traces on one slot (one hash tag), three on slots of their own, one on a key that
    # holds a string: the script fails there.
    keys = [f"t:{{{run}}}:trace:{n}" for n in range(4)] + [
        f"t:{{{run}{n}}}:trace" for n in range(3)
    ]
    wrong = f"t:{{{run}}}:string"

    async def calls() -> tuple[list[object], list[object]]:
        client = open_store(url)
        try:
            scripts = Scripts.of(client)
            await client.set(wrong, "x")
            await client.script_flush()  # as after a restart: the scripts are loaded again
            together = await pipelined(client, [
                (scripts.offer_trace, [key], [f"entry {n}", 2, 60])
                for n, key in enumerate([*keys, wrong, keys[0], keys[0]])
            ])  # fmt: skip
            lists = [await client.lrange(key, 0, -1) for key in keys]
            return together, lists
        finally:
            await client.aclose()

    together, lists = asyncio.run(calls())
    assert together[:7] == [1] * 7
    assert isinstance(together[7], ResponseError) and "WRONGTYPE" in str(together[7])
    # The calls on keys[0] after the failing one ran, in order, and the script's trim held.
    assert together[8:] == [2, 2]
    assert lists[0] == [b"entry 9", b"entry 8"]
    assert lists[1:] == [[f"entry {n}".encode()] for n in range(1, 7)]
