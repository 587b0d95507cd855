"""The site-wide frequency policy and "shown means seen", through real sockets to a real server.

An offer is reserved when the signal comes and counted when the widget reports it painted:
impressions, caps and the site's limits follow ``offer_shown``; exposures do not.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import redis

from widget_server.store.frequency import Frequency

from ..support import (
    ROOT,
    Client,
    ServerProcess,
    add_site,
    campaign_counts,
    discount_campaign,
    message_campaign,
    new_visitor,
    running_server,
    save_campaigns,
)

EXIT = {"type": "signal", "name": "exit_intent", "kind": "top_edge"}
LIVE = {"exit_intent": [], "live": True}


stats = campaign_counts


def reasons(r: redis.Redis, site: str, visitor: str, session: str) -> dict[str, str]:
    """Why each campaign was not shown in the session's last decision."""
    import json

    from widget_server.store.keys import Keys

    last = json.loads(r.lindex(Keys().trace(site, visitor, session), 0) or "{}")
    return {x["campaign"]: x["reason"] for x in last.get("rejected", [])}


def refused_reports(server: ServerProcess) -> dict[str, float]:
    found: dict[str, float] = {}
    for line in httpx.get(server.url + "/metrics").text.splitlines():
        if line.startswith("widget_offer_reports_refused_total{"):
            why = line.split('why="', 1)[1].split('"', 1)[0]
            found[why] = float(line.split()[-1])
    return found


def test_two_campaigns_one_overlay_per_visit_and_the_trace_says_why(
    server: ServerProcess, r: redis.Redis
) -> None:
    site = add_site(server.redis_url)  # the default policy: one offer per visit, two per day
    save_campaigns(server.redis_url, site, [
        discount_campaign("new15", priority=50),
        message_campaign("saver", priority=10),
    ])  # fmt: skip
    visitor = new_visitor()
    with Client(server.ws_url) as c:
        session = c.hello(site, visitor)["session"]
        first = c.signal_answer(EXIT)
        assert first is not None and first["campaign"] == "new15"
        c.painted(first)
        assert c.signal_answer(EXIT) is None  # the other campaign may not follow it
    assert reasons(r, site, visitor, session) == {
        "new15": "capped_session", "saver": "site_session"
    }  # fmt: skip
    with Client(server.ws_url) as c:  # a new visit: one more, but not a second discount
        c.hello(site, visitor)
        second = c.signal_answer(EXIT)
        assert second is not None and second["campaign"] == "saver"
        c.painted(second)
    with Client(server.ws_url) as c:  # a third visit the same day: the day's two are spent
        session = c.hello(site, visitor)["session"]
        assert c.signal_answer(EXIT) is None
    assert reasons(r, site, visitor, session) == {"new15": "site_day", "saver": "site_day"}
    assert stats(r, site, "new15")["impressions:a"] == 1
    assert stats(r, site, "saver")["impressions:a"] == 1


def test_two_tabs_asking_at_once_get_one_offer(server: ServerProcess, r: redis.Redis) -> None:
    site = add_site(server.redis_url)
    save_campaigns(server.redis_url, site, [
        message_campaign("one", priority=50), message_campaign("two", priority=10),
    ])  # fmt: skip
    visitor = new_visitor()
    with Client(server.ws_url) as a, Client(server.ws_url) as b:
        session = a.hello(site, visitor)["session"]
        assert b.hello(site, visitor, session)["session"] == session  # a second tab
        first = a.signal_answer(EXIT)
        # Not painted yet, but reserved: the other tab gets nothing.
        assert first is not None and b.signal_answer(EXIT) is None
        a.painted(first)
    assert stats(r, site, "one") == {"exposures:a": 1.0, "impressions:a": 1.0}
    assert stats(r, site, "two") == {}


def test_impressions_follow_offer_shown_and_exposures_the_claim(
    server: ServerProcess, r: redis.Redis
) -> None:
    site = add_site(server.redis_url, frequency=Frequency(per_session=0, per_day=0))
    save_campaigns(server.redis_url, site, [discount_campaign("ten", holdout=0.0)])
    visitor = new_visitor()
    with Client(server.ws_url) as c:
        c.hello(site, visitor)
        offer = c.signal_answer(EXIT)
        assert offer is not None and offer["claim"] and offer["show_within"] == 120
        # Exposed at the claim, so that the arms stay comparable; not yet an impression.
        assert stats(r, site, "ten") == {"exposures:a": 1.0}
        c.painted(offer)
        assert stats(r, site, "ten") == {"exposures:a": 1.0, "impressions:a": 1.0}
        before = refused_reports(server)
        c.painted(offer)  # the same report again, as a new message: replayed
        forged = {**offer, "claim": "0123456789abcdef"}
        c.painted(forged)  # a claim this visitor was never given
        c.painted({**offer, "claim": ""})  # no claim at all
        after = refused_reports(server)
        assert after.get("replayed", 0) - before.get("replayed", 0) == 1
        assert after.get("forged", 0) - before.get("forged", 0) == 2
    assert stats(r, site, "ten") == {"exposures:a": 1.0, "impressions:a": 1.0}


def test_an_offer_never_painted_counts_nowhere_and_frees_its_place(
    redis_url: str, r: redis.Redis, tmp_path: Path
) -> None:
    with running_server(redis_url, tmp_path, WIDGET_OFFER_SEEN_TIMEOUT="5") as server:
        site = add_site(redis_url)  # one offer per visit
        save_campaigns(redis_url, site, [discount_campaign("ten", caps={"per_session": 1})])
        visitor = new_visitor()
        with Client(server.ws_url) as c:
            c.hello(site, visitor)
            dropped = c.signal_answer(EXIT)
            assert dropped is not None and dropped["show_within"] == 5
            assert c.signal_answer(EXIT) is None  # its place is held while it may still paint
            time.sleep(5.5)
            c.painted(dropped)  # too late: the widget would not paint it any more
            assert refused_reports(server).get("late") == 1
            again = c.signal_answer(EXIT)  # the place and the campaign's cap are free again
            assert again is not None and again["claim"] != dropped["claim"]
            assert again["code"] == dropped["code"]  # the code stayed the visitor's
            c.painted(again)
        assert stats(r, site, "ten") == {"exposures:a": 1.0, "impressions:a": 1.0}


def test_live_offers_have_their_own_budget(server: ServerProcess, r: redis.Redis) -> None:
    site = add_site(server.redis_url)
    save_campaigns(server.redis_url, site, [
        message_campaign("exit"),
        message_campaign("flash", trigger=LIVE),
    ])  # fmt: skip
    with Client(server.ws_url) as c:
        c.hello(site, new_visitor())
        offer = c.signal_answer(EXIT)
        assert offer is not None
        c.painted(offer)
        started = subprocess.run(
            [sys.executable, "-m", "widget_server.cli", "live", "start", "flash", "--site", site,
             "--minutes", "5"], env={**os.environ, "REDIS_URL": server.redis_url},
            capture_output=True, text=True, cwd=ROOT, timeout=60,
        )  # fmt: skip
        assert started.returncode == 0, started.stderr
        live = c.recv_until("offer")["offer"]  # the visit's exit offer does not hold it back
        assert live["campaign"] == "flash"
        c.painted(live)
        assert c.signal_answer(EXIT) is None  # nor does it open a place for another exit offer
    assert stats(r, site, "flash")["impressions:a"] == 1
    assert stats(r, site, "exit")["impressions:a"] == 1
