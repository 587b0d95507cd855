"""Offer layouts in a real Chromium: the popup, the slide-in card and the two bars, on a desktop
and on a phone (where the popup and the card are a sheet at the bottom of the screen), and the
two-step email capture (a yes/no question first) with a real campaign."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis

from widget_server.wire import protocol as p

from ..mail.test_capture_reward import capture_campaign
from ..support import SCREENSHOTS, ServerProcess, save_campaigns
from . import test_widget_browser as wb
from .test_widget_browser import (
    KEYS,
    StaticSite,
    Tab,
    deliver,
    offer,
    reports,
    wait_session,
    welcomed,
)

pytestmark = pytest.mark.browser

# The browser, the shop's origin, a site and tabs: the widget tests' own fixtures.
browser = wb.browser
shop = wb.shop
site = wb.site
new_tab = wb.new_tab

LAYOUTS = ("popup", "slide_in", "bar_top", "bar_bottom")
DEVICES: dict[str, dict[str, Any]] = {
    # Without the entrance animation: the geometry is final as soon as the offer paints.
    "desktop": {"viewport": {"width": 1280, "height": 800}, "reduced_motion": "reduce"},
    "phone": {"mobile": True, "reduced_motion": "reduce"},
}
HEADLINE = "Before you go: 10% off your order"
# The overlay's controls and each one's box, in CSS pixels of the viewport.
CONTROLS = """return [...root.querySelectorAll('.d button, .d input, .d a')].map(e => {
  const r = e.getBoundingClientRect();
  return {what: e.outerHTML.slice(0, 60), product: !!e.closest('.g'),
          left: r.left, top: r.top, right: r.right, bottom: r.bottom};
})"""
BOX = """const r = root.querySelector('.d').getBoundingClientRect();
return {left: r.left, top: r.top, right: r.right, bottom: r.bottom, width: r.width,
        height: r.height}"""
CARDS = """const g = root.querySelector('.g');
return {tops: [...g.children].map(c => Math.round(c.getBoundingClientRect().top)),
        scrolls: g.scrollWidth > g.clientWidth + 1,
        widths: [...g.children].map(c => Math.round(c.getBoundingClientRect().width))}"""
INSIDE = "return !!root.activeElement && root.querySelector('.d').contains(root.activeElement)"


def _products(shop: StaticSite) -> list[p.OfferProduct]:
    colours = ["#c8553d", "#2d7dd2", "#97cc04", "#f45d01", "#6a4c93", "#1b998b"]
    for n, colour in enumerate(colours, 1):
        (shop.root / f"l{n}.svg").write_text(
            f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 10 10">'
            f'<rect width="10" height="10" fill="{colour}"/></svg>'
        )
    return [
        p.OfferProduct(id=f"l{n}", title=f"Desk lamp no. {n}", price=39 + 10 * n, currency="EUR",
                       url=f"{shop.origin}/l{n}", image=f"{shop.origin}/l{n}.svg")
        for n in range(1, 7)
    ]  # fmt: skip


def _viewport(tab: Tab) -> tuple[float, float]:
    size = tab.page.evaluate("[innerWidth, innerHeight]")
    return float(size[0]), float(size[1])


def _controls_on_screen(tab: Tab) -> None:
    """Every control of the overlay is wholly inside the viewport (a product card may be off to
    the side of its carousel: the visitor scrolls the row; the first one is on screen)."""
    width, height = _viewport(tab)
    controls = tab.in_shadow(CONTROLS)
    first_product = next((c for c in controls if c["product"]), None)
    checked = [c for c in controls if not c["product"]] + ([first_product] if first_product else [])
    assert len(checked) >= 2
    for c in checked:
        inside = c["left"] >= -0.5 and c["top"] >= -0.5
        inside = inside and c["right"] <= width + 0.5 and c["bottom"] <= height + 0.5
        assert inside, (c, width, height)


def _placed(tab: Tab, layout: str, device: str) -> None:
    """Where the layout puts the overlay on this device."""
    width, height = _viewport(tab)
    box = tab.in_shadow(BOX)
    backdrop = tab.in_shadow("return !!root.querySelector('.b')")
    assert backdrop == (layout == "popup")
    if layout.startswith("bar_"):
        assert box["left"] == 0 and box["width"] == width  # full width, as on a desktop
        assert box["height"] <= height / 2
        assert box["top"] == 0 if layout == "bar_top" else abs(box["bottom"] - height) < 1
    elif device == "phone":
        # A sheet: at the bottom, full width, the page visible above it.
        assert abs(box["bottom"] - height) < 1 and box["left"] == 0 and box["width"] == width
        assert box["top"] >= 0.4 * height, box
    elif layout == "popup":
        assert abs((box["left"] + box["right"]) / 2 - width / 2) < 1
        assert abs((box["top"] + box["bottom"]) / 2 - height / 2) < 1
    else:  # the card in the bottom right corner
        assert width - 40 < box["right"] < width and height - 40 < box["bottom"] < height
        assert box["width"] <= 400


@pytest.mark.parametrize("device", list(DEVICES))
@pytest.mark.parametrize("layout", LAYOUTS)
def test_each_layout_paints_where_it_should_and_behaves_by_its_role(
    new_tab: Callable[..., Tab],
    shop: StaticSite,
    server: ServerProcess,
    site: str,
    r: redis.Redis,
    redis_url: str,
    layout: str,
    device: str,
) -> None:
    tab = new_tab(**DEVICES[device])
    page = tab.page
    page.goto(shop.page(server.url, site, body='<input id="before" aria-label="Search">'))
    welcomed(tab)
    visitor, _ = tab.ids()
    modal = layout == "popup"
    role = "dialog" if modal else "complementary"
    page.focus("#before")

    # A discount: code, copy button, call to action, countdown.
    body = offer(
        "discount",
        layout=None if modal else layout,
        code="SAVE10-K7Q2",
        expires_at=int(time.time() * 1000) + 14 * 60 * 1000,
        cta=p.OfferCta(label="Back to my cart", url=f"{shop.origin}/cart"),
    )
    deliver(redis_url, site, visitor, p.Offer(offer=body))
    overlay = page.get_by_role(role, name=HEADLINE)
    overlay.wait_for(state="visible")
    tab.wait(lambda: reports(tab), "offer_shown")
    assert overlay.get_attribute("aria-modal") == ("true" if modal else None)
    if not modal:
        assert page.get_by_role("dialog").count() == 0
    _placed(tab, layout, device)
    _controls_on_screen(tab)

    if modal:
        # The popup takes the focus and keeps it: Tab cycles inside, focus pulled out returns.
        assert tab.in_shadow(INSIDE)
        for key in ["Tab"] * 5 + ["Shift+Tab"] * 5:
            page.keyboard.press(key)
            assert tab.in_shadow(INSIDE), key
        page.focus("#before")
        assert tab.in_shadow(INSIDE)
        page.keyboard.press("Escape")
    else:
        # The page keeps the focus and the keyboard: the visitor goes on typing.
        assert page.evaluate("document.activeElement.id") == "before"
        page.keyboard.type("lamp")
        assert page.input_value("#before") == "lamp"
        # Tab reaches the overlay's controls and leaves them again, nothing pulls it back.
        page.locator("exit-widget .x").focus()
        assert tab.in_shadow(INSIDE)
        page.focus("#before")
        assert page.evaluate("document.activeElement.id") == "before"
        assert not tab.in_shadow(INSIDE)
        # Escape dismisses it when the focus is inside; then the focus goes back.
        page.locator("exit-widget .c").focus()
        page.keyboard.press("Escape")
    overlay.wait_for(state="detached")
    assert page.evaluate("document.activeElement.id") == "before"
    assert tab.sent_of("offer_dismissed")[-1]["how"] == "escape"

    # The teaser pill reopens it in its layout; the close button closes it.
    page.locator("exit-widget .p button").first.click()
    overlay.wait_for(state="visible")
    page.locator("exit-widget .x").click()
    overlay.wait_for(state="detached")
    assert [m["how"] for m in tab.sent_of("offer_dismissed")] == ["escape", "close_button"]
    wait_session(r, site, tab, lambda s: s.get("offers_dismissed") == "2", "two dismissals")
    page.locator("exit-widget .p [aria-label=Close]").click()  # the pill goes too

    # Similar products: a grid on the desktop, one row that scrolls sideways on a phone.
    products = offer(
        "similar_products",
        id="test-products",
        claim="claim-products",
        layout=None if modal else layout,
        headline="Still looking? You might like these",
        body="Hand-picked lamps similar to the one you viewed.",
        products=_products(shop),
        cta=p.OfferCta(label="See all lamps", url=f"{shop.origin}/lamps"),
    )
    deliver(redis_url, site, visitor, p.Offer(offer=products))
    overlay = page.get_by_role(role, name=products.headline)
    overlay.wait_for(state="visible")
    page.wait_for_function(
        "() => [...document.querySelector('exit-widget').shadowRoot"
        ".querySelectorAll('img')].every(i => i.complete && i.naturalWidth > 0)"
    )
    cards = tab.in_shadow(CARDS)
    assert len(cards["tops"]) == 6
    if layout.startswith("bar_"):
        assert len(set(cards["tops"])) == 1, cards  # a bar keeps to one row of small cards
    elif device == "phone":
        assert len(set(cards["tops"])) == 1, cards  # one row, that scrolls sideways
        assert cards["scrolls"]
        width, _ = _viewport(tab)
        assert all(abs(w - 0.4 * width) < 2 for w in cards["widths"]), cards
    else:
        assert len(set(cards["tops"])) > 1 and not cards["scrolls"]  # the grid
    _placed(tab, layout, device)
    _controls_on_screen(tab)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"layout-{layout}-{device}.png"))
    page.locator("exit-widget .x").click()
    overlay.wait_for(state="detached")


def _two_step_offer(tab: Tab, shop: StaticSite, server: ServerProcess, site: str) -> None:
    page = tab.page
    page.goto(shop.page(server.url, site))
    welcomed(tab)
    tab.wait(lambda: tab.received_of("arm"), "the armed capture")
    # An exit intent through the top edge, as leave_through_top, inside a narrow window too.
    page.mouse.move(200, 420)
    while page.evaluate("() => performance.now()") < 3300:
        page.wait_for_timeout(50)
    page.wait_for_timeout(550)
    page.mouse.move(200, 420, steps=2)
    page.mouse.move(200, -5, steps=6)
    page.get_by_role("complementary", name="Want 5 EUR off?").wait_for()
    tab.wait(lambda: tab.sent_of("offer_shown"), "offer_shown")  # the claimed copy
    # The question first: no form yet.
    assert page.locator("exit-widget input[type=email]").count() == 0


def test_a_two_step_capture_asks_first_then_works_as_a_capture_or_is_declined(
    new_tab: Callable[..., Tab],
    shop: StaticSite,
    server: ServerProcess,
    site: str,
    r: redis.Redis,
    redis_url: str,
) -> None:
    campaign = capture_campaign(
        "ask", headline="Want 5 EUR off?", layout="slide_in",
        two_step={"yes_label": "Yes, please", "no_label": "No, thanks"},
    )  # fmt: skip
    with ThreadPoolExecutor(1) as pool:
        pool.submit(save_campaigns, redis_url, site, [campaign]).result()

    # Yes: the email form takes the question's place, the focus in its address field; the
    # capture then goes as without the question (the code on screen, no consent given). In a
    # phone-sized window (the exit intent is the pointer's, as on a desktop): a sheet.
    tab = new_tab(viewport={"width": 390, "height": 844}, reduced_motion="reduce")
    page = tab.page
    _two_step_offer(tab, shop, server, site)
    assert tab.received_of("offer")[-1]["offer"]["two_step"] == {
        "yes": "Yes, please", "no": "No, thanks"
    }  # fmt: skip
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "layout-two-step-phone.png"))
    page.locator("exit-widget button", has_text="Yes, please").click()
    email = page.locator("exit-widget input[type=email]")
    email.wait_for()
    assert tab.in_shadow("return root.activeElement && root.activeElement.type") == "email"
    assert page.locator("exit-widget button", has_text="No, thanks").count() == 0
    assert tab.sent_of("offer_clicked")[-1]["action"] == "yes"
    _controls_on_screen(tab)
    page.keyboard.type("ada@example.com")
    page.locator("exit-widget button[type=submit]").click()
    code_box = page.locator("exit-widget .d input[readonly]")
    code_box.wait_for()
    assert code_box.input_value().startswith("HELLO-")
    visitor, _ = tab.ids()
    tab.wait(
        lambda: r.hget(KEYS.profile(site, visitor), "email") == "ada@example.com", "the address"
    )
    assert [m["action"] for m in tab.sent_of("offer_clicked")] == ["yes", "email_submit"]

    # No: the offer goes, reported as declined, and leaves no teaser behind.
    other = new_tab()
    _two_step_offer(other, shop, server, site)
    other.page.locator("exit-widget button", has_text="No, thanks").click()
    other.page.get_by_role("complementary").wait_for(state="detached")
    dismissed = other.sent_of("offer_dismissed")
    assert [(m["offer"], m["how"]) for m in dismissed] == [("ask.a", "declined")]
    wait_session(r, site, other, lambda s: s.get("offers_dismissed") == "1", "the dismissal")
    assert other.page.locator("exit-widget .p").count() == 0
