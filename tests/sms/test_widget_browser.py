"""The widget's SMS capture in a real Chromium against a real server that texts through a local
server speaking the Twilio Messages API: number and consent, the code, the thanks."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest
import redis

from widget_server.wire import protocol as p

from ..realtime import test_widget_browser as wb
from ..realtime.test_widget_browser import (
    KEYS,
    SCREENSHOTS,
    StaticSite,
    Tab,
    deliver,
    offer,
    welcomed,
)
from ..sms_support import FakeMessagesApi
from ..support import ServerProcess

pytestmark = pytest.mark.browser
# The browser tests' fixtures: a Chromium, tabs, the shop's static origin, a site on it.
browser, new_tab, shop, site = wb.browser, wb.new_tab, wb.shop, wb.site


@pytest.fixture(scope="module")
def sms_api() -> Iterator[FakeMessagesApi]:
    with FakeMessagesApi() as fake:
        yield fake


@pytest.fixture(scope="module")
def server(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory, sms_api: FakeMessagesApi
) -> Iterator[ServerProcess]:
    process = ServerProcess(redis_url, tmp_path_factory.mktemp("server"), **sms_api.env())
    process.start()
    yield process
    process.stop()


def test_a_visitor_confirms_their_phone_in_the_overlay(
    new_tab: Callable[..., Tab],
    shop: StaticSite,
    server: ServerProcess,
    site: str,
    r: redis.Redis,
    redis_url: str,
    sms_api: FakeMessagesApi,
) -> None:
    tab = new_tab()
    page = tab.page
    page.goto(shop.page(server.url, site))
    welcomed(tab)
    visitor, _ = tab.ids()
    body = offer(
        "sms_capture",
        headline="Get our offers by text",
        body="One or two texts a month, never at night.",
        consent_label="Text me offers. I can reply STOP at any time.",
        thanks="Thanks! Your number is confirmed.",
        phone=p.OfferPhone(submit="Text me a code", code="The code we texted you",
                           confirm="Confirm"),
    )  # fmt: skip
    deliver(redis_url, site, visitor, p.Offer(offer=body))
    dialog = page.get_by_role("dialog", name=body.headline)
    dialog.wait_for(state="visible")
    checkbox = page.locator("exit-widget input[type=checkbox]")
    assert not checkbox.is_checked()  # consent is never pre-ticked
    number = page.get_by_label("Phone")
    number.fill("0170 1234567")
    checkbox.check()
    page.get_by_role("button", name="Text me a code").click()
    page.get_by_role("alert").filter(has_text="country code").wait_for()  # no country code
    assert sms_api.to("+491701234567") == []
    number.fill("+49 170 1234567")
    page.screenshot(path=str(SCREENSHOTS / "overlay-sms_capture.png"))
    page.get_by_role("button", name="Text me a code").click()
    code_field = page.get_by_label("The code we texted you")
    code_field.wait_for()
    [texted] = tab.wait(lambda: sms_api.to("+491701234567"), "the code SMS")
    code = re.findall(r"\d{6}", texted.body)[0]
    code_field.fill("000000" if code != "000000" else "111111")
    page.get_by_role("button", name="Confirm").click()
    page.get_by_role("alert").filter(has_text="not right").wait_for()
    code_field.fill(code)
    page.get_by_role("button", name="Confirm").click()
    page.get_by_role("status").filter(has_text="Your number is confirmed").wait_for()
    profile = r.hgetall(KEYS.profile(site, visitor))
    assert profile["phone"] == "+491701234567" and profile["sms_consent"] == "1"
    assert profile["sms_confirmed_at"] and profile["sms_consent_source"] == "widget"
    captured = [m for m in tab.sent_of("phone_capture") if m["phone"].startswith("+")]
    assert captured[-1]["consent"] is True and captured[-1]["offer"] == "test-sms_capture"
