"""The Lua scripts: one loader knows them all, and no script makes up a key name."""

from __future__ import annotations

import re

import redis
from redis.commands.core import Script

from widget_server.store.scripts import COMMON, LUA, Scripts, names, source

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
