"""The widget in a real Chromium sends the visitor's locale (its script tag's data-locale, else
the page's <html lang>) and paints the campaign's words in it, page after page of one visit."""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import pytest

from ..support import (
    NO_SITE_LIMITS,
    ServerProcess,
    add_site,
    message_campaign,
    save_campaigns,
)
from .test_widget_browser import (
    StaticSite,
    Tab,
    browser,  # noqa: F401 (fixture)
    demo_with_a_cart,
    leave_through_top,
    new_tab,  # noqa: F401 (fixture)
    shop,  # noqa: F401 (fixture)
    welcomed,
)

pytestmark = pytest.mark.browser

ENGLISH, GERMAN, AUSTRIAN = "Wait! 10% off", "Warte! 10 % Rabatt", "Geh bitte! 10 % Rabatt"
CAMPAIGN = message_campaign(
    "sale",
    caps={"per_session": 0, "per_visitor_day": 0, "per_visitor_week": 0,
          "dismiss_cooldown_minutes": 0},
    variants=[{"key": "a", "offer": {
        "kind": "message", "headline": ENGLISH, "cta_label": "Get it",
        "translations": {"de": {"headline": GERMAN, "cta_label": "Holen"},
                         "de-AT": {"headline": AUSTRIAN}}}}],
)  # fmt: skip


def shop_page(static: StaticSite, server: ServerProcess, site: str, lang: str, attrs: str) -> str:
    return static.write(
        f"""<!doctype html>
<html lang="{lang}"><head><meta charset="utf-8"><title>Shop</title>
<script async src="{server.url}/widget.js" data-site="{site}"{attrs}></script>
</head><body data-page-type="product"><h1>Walnut desk lamp</h1></body></html>"""
    )


def welcomes(tab: Tab, n: int) -> bool:
    return len(tab.received_of("welcome")) >= n


def armed_with(tab: Tab, headline: str) -> bool:
    arms = tab.received_of("arm")
    return bool(arms) and arms[-1]["offer"]["headline"] == headline


def test_one_visit_sees_the_campaign_in_each_pages_language(
    new_tab: Callable[..., Tab],  # noqa: F811
    shop: StaticSite,  # noqa: F811
    server: ServerProcess,
    redis_url: str,
) -> None:
    def make() -> str:
        key = add_site(redis_url, [shop.origin], frequency=NO_SITE_LIMITS)
        save_campaigns(redis_url, key, [CAMPAIGN])
        return key

    with ThreadPoolExecutor(1) as pool:
        site = pool.submit(make).result()
    tab = new_tab()
    page = tab.page
    # (<html lang>, the script tag's attributes, the locale sent, the headline painted)
    cases = [
        ("de", ' data-locale="../de"', None, ENGLISH),  # malformed: none sent, the site's
        ("en", "", "en", ENGLISH),
        ("de", "", "de", GERMAN),
        ("en", ' data-locale="de-AT"', "de-AT", AUSTRIAN),  # data-locale wins
        ("de-AT", ' data-locale="en"', "en", ENGLISH),
        ("fr", "", "fr", ENGLISH),  # no French texts: the site's
        ("de_DE", "", "de-DE", GERMAN),  # the widget writes de_DE as de-DE
    ]
    for n, (lang, attrs, sent, headline) in enumerate(cases, start=1):
        page.goto(shop_page(shop, server, site, lang, attrs))
        tab.wait(partial(welcomes, tab, n), f"welcome {n}")
        hellos = [m for m in tab.sent if m.get("type") == "hello"]
        assert hellos[-1].get("lang") == sent, (lang, attrs)
        tab.wait(partial(armed_with, tab, headline), f"the armed offer in {lang}{attrs}")
        leave_through_top(page)
        page.get_by_role("dialog", name=headline).wait_for()
        page.keyboard.press("Escape")
        page.get_by_role("dialog").wait_for(state="detached")
    assert welcomed(tab)["type"] == "event"


def test_the_demo_shop_switches_the_exit_offer_to_german(
    new_tab: Callable[..., Tab],  # noqa: F811
    tmp_path: Path,
) -> None:
    """On ``make demo``: the cart saver is armed in English, then "Deutsch" in the shop's header
    arms it in German, and the exit offer shows the campaign's German text (one offer per
    visit: the demo site's policy)."""
    from widget_server.offers.campaigns import parse_campaign
    from widget_server.shipped import EXAMPLES_DIR

    saver = parse_campaign(json.loads((EXAMPLES_DIR / "demo-campaigns.json").read_text())[0])
    english = saver.variants[0].offer.words("en").headline
    german = saver.variants[0].offer.words("de").headline
    with demo_with_a_cart(tmp_path, new_tab) as (base, tab):
        page = tab.page
        tab.wait(partial(armed_with, tab, english), "the cart saver armed in English")
        page.get_by_role("link", name="Deutsch").click()
        page.wait_for_url("**/demo/cart?lang=de")
        assert page.evaluate("document.documentElement.lang") == "de"
        tab.wait(partial(welcomes, tab, 3), "the German page's welcome")
        assert [m for m in tab.sent if m.get("type") == "hello"][-1]["lang"] == "de"
        leave_through_top(page)
        page.get_by_role("dialog", name=german).wait_for()
        page.goto(base + "/demo/checkout")  # the language stays for the visit
        assert page.evaluate("document.documentElement.lang") == "de"
