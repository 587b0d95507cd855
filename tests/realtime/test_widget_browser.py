"""The widget in a real Chromium against the real server, on pages served from another origin."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import pytest
import redis
from playwright.sync_api import (
    Browser,
    Page,
    Route,
    WebSocket,
    WebSocketRoute,
    sync_playwright,
)
from redis.asyncio import Redis

from widget_server.metrics import Metrics
from widget_server.offers.campaign_store import CampaignStore
from widget_server.realtime.hub import Hub
from widget_server.shipped import STATIC_DIR
from widget_server.store.embedded import free_port
from widget_server.store.keys import Keys
from widget_server.wire import protocol as p

from ..support import (
    ROOT,
    SCREENSHOTS,
    ServerProcess,
    add_site,
    discount_campaign,
    message_campaign,
    save_campaigns,
)

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
DESKTOP: dict[str, Any] = {"viewport": {"width": 1100, "height": 720}}
MOBILE: dict[str, Any] = {
    "viewport": {"width": 390, "height": 844},
    "device_scale_factor": 2,
    "is_mobile": True,
    "has_touch": True,
}
# What Chromium itself logs when a connection fails; the widget cannot (and need not) prevent it.
NETWORK_NOISE = re.compile(r"^(WebSocket connection to .* failed|Failed to load resource)")
KEYS = Keys()
T = TypeVar("T")


def in_thread(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion off the Playwright thread (its event loop is running)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def new_site(redis_url: str, origin: str) -> str:
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(add_site, redis_url, [origin]).result()


async def _deliver(redis_url: str, site: str, visitor: str, message: p.Push) -> int:
    client = Redis.from_url(redis_url)
    try:
        hub = Hub(
            client,
            Keys(),
            Metrics(),
            presence_ttl_s=90,
            on_site_changed=lambda s: None,
        )
        return await hub.send_to_visitor(site, visitor, message)
    finally:
        await client.aclose()


def deliver(redis_url: str, site: str, visitor: str, message: p.Push) -> None:
    """Push a server message to the visitor's live sockets through the cross-node path."""
    assert in_thread(_deliver(redis_url, site, visitor, message)) >= 1


def route_socket(page: Page) -> Callable[[dict[str, Any]], None]:
    """Route the widget's socket through the test, frames passing both ways unchanged; the
    function returned hands the page a frame of the test's own as if the server had sent it
    (for frames the server never sends: fields of the wrong type, fields it does not know)."""
    routes: list[WebSocketRoute] = []

    def relay(route: WebSocketRoute) -> None:
        route.connect_to_server()
        routes.append(route)

    page.route_web_socket(re.compile(r".*/v1/ws\?.*"), relay)
    return lambda frame: routes[-1].send(json.dumps(frame))


# --- a static origin for the shop pages ---------------------------------------------------------


class StaticSite:
    """Pages written to a directory and served by http.server on their own origin."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.csp: dict[str, str] = {}
        (root / "favicon.ico").write_bytes(b"")
        site = self

        class Handler(SimpleHTTPRequestHandler):
            def end_headers(self) -> None:
                policy = site.csp.get(self.path.split("?")[0])
                if policy:
                    self.send_header("Content-Security-Policy", policy)
                self.send_header("Cache-Control", "no-store")
                super().end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(Handler, directory=str(root))
        )
        self.origin = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        self._count = 0

    def write(self, html: str, *, csp: str | None = None, name: str | None = None) -> str:
        self._count += 1
        name = name or f"page{self._count}.html"
        (self.root / name).write_text(html)
        if csp:
            self.csp["/" + name] = csp
        return f"{self.origin}/{name}"

    def page(
        self,
        widget_origin: str,
        site: str,
        *,
        body: str = "",
        head: str = "",
        page_type: str | None = "product",
        script_attrs: str = "",
        csp: str | None = None,
    ) -> str:
        body_attr = f' data-page-type="{page_type}"' if page_type else ""
        return self.write(
            f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Test shop</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
{head}
<script async src="{widget_origin}/widget.js" data-site="{site}"{script_attrs}></script>
</head><body{body_attr}>
<h1>Walnut desk lamp</h1>
<p>A warm, dimmable lamp for late evenings. Free shipping from 50 EUR.</p>
{body}
</body></html>""",
            csp=csp,
        )

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StaticSite]:
    site = StaticSite(tmp_path_factory.mktemp("shop"))
    yield site
    site.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def site(redis_url: str, shop: StaticSite) -> str:
    return new_site(redis_url, shop.origin)


# --- tabs ---------------------------------------------------------------------------------------


@dataclass
class Tab:
    page: Page
    sent: list[dict[str, Any]] = field(default_factory=list)
    received: list[dict[str, Any]] = field(default_factory=list)
    sockets: list[WebSocket] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    @classmethod
    def attach(cls, page: Page) -> Tab:
        tab = cls(page)

        def on_socket(ws: WebSocket) -> None:
            tab.sockets.append(ws)
            ws.on("framesent", lambda payload: tab.sent.append(_frame(payload)))
            ws.on("framereceived", lambda payload: tab.received.append(_frame(payload)))

        page.on("websocket", on_socket)
        page.on("request", lambda request: tab.requests.append(request.url))
        page.on("pageerror", lambda error: tab.page_errors.append(str(error)))
        page.on(
            "console",
            lambda message: message.type == "error" and tab.console_errors.append(message.text),
        )

        def on_dialog(dialog: Any) -> None:
            tab.dialogs.append(dialog.message)
            dialog.dismiss()

        page.on("dialog", on_dialog)
        return tab

    def wait(self, probe: Callable[[], T], what: str, timeout: float = 15.0) -> T:
        """Poll ``probe`` until it returns a truthy value, letting Playwright deliver events."""
        deadline = time.monotonic() + timeout
        while True:
            value = probe()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; last value {value!r}")
            self.page.wait_for_timeout(40)

    def storage(self, key: str) -> str | None:
        value = self.page.evaluate(
            "k => { try { return localStorage.getItem(k) } catch (e) {} }", key
        )
        return value if isinstance(value, str) else None

    def ids(self) -> tuple[str, str]:
        """The visitor and session ids the widget uses (from its storage, once welcomed)."""
        return self.wait(
            lambda: (
                (v, s) if (v := self.storage("exw_v")) and (s := self.storage("exw_s")) else None
            ),
            "the widget's visitor and session ids",
        )

    def sent_of(self, type_: str, name: str | None = None) -> list[dict[str, Any]]:
        """Messages the widget sent, once per id (a message re-sent after an error counts once)."""
        unique = {m.get("id"): m for m in self.sent if m.get("type") == type_}
        return [m for m in unique.values() if m.get("name", name) == name]

    def received_of(self, type_: str) -> list[dict[str, Any]]:
        return [m for m in self.received if m.get("type") == type_]

    def in_shadow(self, script: str) -> Any:
        """Evaluate ``script`` with ``root`` bound to the widget's shadow root (or null)."""
        return self.page.evaluate(
            "s => { const h = document.querySelector('exit-widget');"
            " const root = h && h.shadowRoot; return new Function('root', s)(root) }",
            script,
        )


def _frame(payload: str | bytes) -> dict[str, Any]:
    try:
        value = json.loads(payload)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


@pytest.fixture
def new_tab(browser: Browser) -> Iterator[Callable[..., Tab]]:
    contexts = []
    tabs: list[Tab] = []

    def make(mobile: bool = False, **options: Any) -> Tab:
        context = browser.new_context(**{**(MOBILE if mobile else DESKTOP), **options})
        contexts.append(context)
        tab = Tab.attach(context.new_page())
        tabs.append(tab)
        return tab

    yield make
    try:
        for tab in tabs:
            assert tab.page_errors == [], "the page saw uncaught errors"
            assert [m for m in tab.console_errors if not NETWORK_NOISE.match(m)] == []
            assert tab.dialogs == []
    finally:
        for context in contexts:
            context.close()


def session_of(r: redis.Redis, site: str, tab: Tab) -> dict[str, str]:
    visitor, session = tab.ids()
    return r.hgetall(KEYS.session(site, visitor, session))


def wait_session(
    r: redis.Redis, site: str, tab: Tab, check: Callable[[dict[str, str]], bool], what: str
) -> dict[str, str]:
    return tab.wait(lambda: (s := session_of(r, site, tab)) and check(s) and s, what)


def welcomed(tab: Tab) -> dict[str, str]:
    tab.wait(lambda: tab.received_of("welcome"), "welcome")
    return tab.wait(lambda: tab.sent_of("event", "page_view"), "page_view")[0]


def exit_through_top(page: Page) -> None:
    """A quick upward flick out of the top edge of the viewport."""
    page.mouse.move(550, 420, steps=2)
    page.mouse.move(550, -5, steps=6)


THEME = p.OfferTheme(accent="#0b6e4f", background="#ffffff", text="#1d1d1f", radius=14)


def offer(kind: str, **fields: Any) -> p.OfferBody:
    base: dict[str, Any] = {
        "id": f"test-{kind}",
        "campaign": "test",
        "variant": "a",
        "kind": kind,
        "headline": "Before you go: 10% off your order",
        "body": "Use this code at checkout. It is valid for this visit only.",
        "cta": p.OfferCta(label="", url=""),
        "theme": THEME,
        "claim": f"claim-{kind}",  # what the server's reservation would carry
        "show_within": 120,
    }
    return p.OfferBody(**{**base, **fields})


def reports(tab: Tab) -> list[tuple[str, str]]:
    """The ``offer_shown`` reports the widget sent: (offer id, claim)."""
    return [(m["offer"], m.get("claim", "")) for m in tab.sent_of("offer_shown")]


def discount(shop: StaticSite) -> p.OfferBody:
    return offer(
        "discount",
        code="SAVE10-K7Q2",
        expires_at=int(time.time() * 1000) + 14 * 60 * 1000 + 59_000,
        cta=p.OfferCta(label="Back to my cart", url=f"{shop.origin}/cart"),
    )


# --- connection and events ----------------------------------------------------------------------


def test_hello_welcome_and_page_views_reach_the_server(
    new_tab: Callable[..., Tab], shop: StaticSite, server: ServerProcess, site: str, r: redis.Redis
) -> None:
    tab = new_tab()
    tab.page.goto(shop.page(server.url, site, page_type="product"))
    page_view = welcomed(tab)
    hello = tab.sent[0]
    assert hello["type"] == "hello" and hello["v"] == 1 and hello["site"] == site
    assert hello["device"] == "desktop"
    assert hello["page"]["page_type"] == "product"
    assert hello["consent"] == {"analytics": True, "marketing": False}
    assert page_view["url"].endswith(".html") and page_view["title"] == "Test shop"
    session = wait_session(r, site, tab, lambda s: s.get("pages") == "1", "pages == 1")
    assert session["page_type"] == "product"
    assert session["device"] == "desktop"
    visitor, session_id = tab.ids()
    assert tab.received_of("welcome")[0]["session"] == session_id
    assert re.fullmatch(r"[a-z0-9]{22}", visitor)
    # Every message carries a distinct id; the server acknowledges them.
    ids = [m["id"] for m in tab.sent]
    assert len(ids) == len(set(ids))
    tab.wait(lambda: any(page_view["id"] in a["ids"] for a in tab.received_of("ack")), "ack")

    # SPA navigation: pushState and popstate are page views; replaceState to the same URL is not.
    tab.page.evaluate("history.pushState({}, '', '/spa/cart')")
    session = wait_session(r, site, tab, lambda s: s.get("pages") == "2", "pages == 2")
    assert session["page_url"].endswith("/spa/cart")
    tab.page.evaluate("history.replaceState({}, '', location.href)")
    tab.page.evaluate("history.back()")
    session = wait_session(r, site, tab, lambda s: s.get("pages") == "3", "pages == 3")
    assert session["page_url"].endswith(".html")
    views = tab.sent_of("event", "page_view")
    assert views[1]["referrer"] == views[0]["url"]

    # A second tab of the same visitor shares visitor and session ids.
    second = Tab.attach(tab.page.context.new_page())
    second.page.goto(tab.page.url)
    welcomed(second)
    assert second.ids() == tab.ids()
    assert second.received_of("welcome")[0]["resumed"] is True


def test_datalayer_ga4_ecommerce_events(
    new_tab: Callable[..., Tab], shop: StaticSite, server: ServerProcess, site: str, r: redis.Redis
) -> None:
    head = """<script>
window.dataLayer = window.dataLayer || [];
function gtag(){dataLayer.push(arguments);}
dataLayer.push({ecommerce: null});
dataLayer.push({event: "view_item", ecommerce: {currency: "EUR", value: 19.5, items: [
  {item_id: "SKU-1", item_name: "Blue mug", price: 19.5, item_category: "Kitchen",
   item_brand: "Acme"}]}});
</script>"""
    tab = new_tab()
    tab.page.goto(shop.page(server.url, site, head=head, page_type=None))
    welcomed(tab)
    session = wait_session(r, site, tab, lambda s: s.get("products_viewed") == "1", "product_view")
    assert session["page_type"] == "product"  # from the GA4 view_item, no data-page-type
    last_product = json.loads(session["last_product"])
    assert last_product == {
        **last_product,
        "id": "SKU-1",
        "title": "Blue mug",
        "price": 19.5,
        "currency": "EUR",
        "category": "Kitchen",
        "brand": "Acme",
    }
    tab.page.evaluate(
        """() => {
        dataLayer.push({ecommerce: null});
        dataLayer.push({event: "add_to_cart", ecommerce: {currency: "EUR", items: [
          {item_id: "SKU-1", item_name: "Blue mug", price: 19.5, quantity: 2}]}});
        gtag("event", "add_to_cart", {currency: "EUR", items: [
          {item_id: "SKU-2", item_name: "Tea", price: "5.25", quantity: 1},
          {item_name: "no id, ignored"}]});
    }"""
    )
    session = wait_session(
        r, site, tab, lambda s: float(s.get("cart_value", 0)) == 44.25, "cart_value 44.25"
    )
    assert session["cart_items"] == "3"
    tab.page.evaluate(
        """() => dataLayer.push({event: "remove_from_cart", ecommerce: {items: [
          {item_id: "SKU-2", price: 5.25, quantity: 1}]}})"""
    )
    wait_session(r, site, tab, lambda s: float(s["cart_value"]) == 39, "cart_value 39")
    tab.page.evaluate("() => dataLayer.push({event: 'begin_checkout', ecommerce: {items: []}})")
    wait_session(r, site, tab, lambda s: s.get("checkout") == "1", "checkout_start")
    tab.page.evaluate(
        """() => dataLayer.push({event: "purchase", ecommerce: {transaction_id: "T-1001",
          value: 39, currency: "EUR", coupon: "SPRING", items: [
          {item_id: "SKU-1", item_name: "Blue mug", price: 19.5, quantity: 2}]}})"""
    )
    session = wait_session(r, site, tab, lambda s: s.get("purchased") == "1", "purchase")
    assert session["last_order"] == "T-1001" and session["coupon"] == "SPRING"
    assert float(session["cart_value"]) == 0
    # Nothing the widget sent was refused by the server.
    assert tab.received_of("error") == []


def test_command_queue_before_and_after_load(
    new_tab: Callable[..., Tab], shop: StaticSite, server: ServerProcess, site: str, r: redis.Redis
) -> None:
    head = """<script>
window.exitwidget = window.exitwidget || [];
exitwidget.push(["track", "cart_add", {item: {id: "Q-1", quantity: 3, price: 2}}]);
exitwidget.push(["identify", {email: "not an email"}]);
exitwidget.push(["track", "cart_add", {quantity: 1}], ["track", "toString", {}]);
</script>"""
    tab = new_tab()
    tab.page.goto(shop.page(server.url, site, head=head))
    welcomed(tab)
    wait_session(r, site, tab, lambda s: float(s.get("cart_value", 0)) == 6, "queued cart_add")
    assert tab.sent_of("event", "identify") == []  # refused before sending
    assert len(tab.sent_of("event", "cart_add")) == 1
    assert tab.sent_of("event", "toString") == []
    tab.page.evaluate(
        """() => {
        exitwidget.push(["identify", {email: "ada@example.com", consent: true}]);
        exitwidget.push(["track", "no_such_event", {}], ["page"]);
    }"""
    )
    wait_session(r, site, tab, lambda s: s.get("identified") == "1", "identify")
    wait_session(r, site, tab, lambda s: s.get("pages") == "2", "forced page view")
    visitor, _ = tab.ids()
    profile = r.hgetall(KEYS.profile(site, visitor))
    assert profile["email"] == "ada@example.com" and profile["email_consent"] == "1"
    assert tab.received_of("error") == []


def test_storage_that_throws_keeps_ids_in_memory(
    new_tab: Callable[..., Tab], shop: StaticSite, server: ServerProcess, site: str, r: redis.Redis
) -> None:
    tab = new_tab()
    tab.page.add_init_script(
        """Object.defineProperty(window, "localStorage", {get() {
            throw new DOMException("blocked", "SecurityError") }})"""
    )
    tab.page.goto(shop.page(server.url, site))
    welcomed(tab)
    hello = tab.sent[0]
    session = tab.received_of("welcome")[0]["session"]
    key = KEYS.session(site, hello["visitor"], session)
    tab.wait(lambda: r.hget(key, "pages") == "1", "page view recorded")


# --- exit intent ------------------------------------------------------------------------------


def test_desktop_exit_intent_from_real_mouse_movement(
    new_tab: Callable[..., Tab], shop: StaticSite, server: ServerProcess, site: str, r: redis.Redis
) -> None:
    tab = new_tab()
    tab.page.clock.install()
    tab.page.goto(shop.page(server.url, site))
    welcomed(tab)
    tab.page.mouse.move(550, 420)
    tab.page.clock.fast_forward(3500)  # past min_dwell_ms
    tab.page.wait_for_timeout(550)  # past the guard after the pointer entered the page
    exit_through_top(tab.page)
    session = wait_session(r, site, tab, lambda s: s.get("signals") == "1", "an exit signal")
    assert session["last_signal_kind"] == "top_edge"
    assert [m["kind"] for m in tab.sent_of("signal", "exit_intent")] == ["top_edge"]
    # At most one exit-intent signal per 10 s.
    tab.page.mouse.move(550, 420)
    tab.page.wait_for_timeout(550)
    exit_through_top(tab.page)
    tab.page.keyboard.press("Alt+ArrowLeft")
    tab.page.wait_for_timeout(150)
    assert len(tab.sent_of("signal", "exit_intent")) == 1
    tab.page.clock.fast_forward(10_500)
    tab.page.keyboard.press("Control+l")
    session = wait_session(r, site, tab, lambda s: s.get("signals") == "2", "a keyboard signal")
    assert session["last_signal_kind"] == "keyboard"


def test_no_exit_intent_while_a_select_or_autocomplete_input_is_focused(
    new_tab: Callable[..., Tab], shop: StaticSite, server: ServerProcess, site: str, r: redis.Redis
) -> None:
    body = """<label>Size <select id="size"><option>S</option><option>M</option>
<option>L</option></select></label>
<label>Email <input id="email" type="email" autocomplete="email"></label>
<button id="other">Other</button>"""
    tab = new_tab()
    tab.page.clock.install()
    tab.page.goto(shop.page(server.url, site, body=body))
    welcomed(tab)
    tab.page.clock.fast_forward(3500)
    tab.page.click("#size")  # opens the native dropdown and focuses the select
    tab.page.wait_for_timeout(550)
    exit_through_top(tab.page)
    tab.page.keyboard.press("Escape")
    tab.page.focus("#email")
    tab.page.wait_for_timeout(1100)  # past the guard after the dropdown was used
    exit_through_top(tab.page)
    tab.page.wait_for_timeout(200)
    assert tab.sent_of("signal", "exit_intent") == []
    tab.page.focus("#other")
    tab.page.mouse.move(550, 420)
    tab.page.wait_for_timeout(550)
    exit_through_top(tab.page)
    session = wait_session(r, site, tab, lambda s: s.get("signals") == "1", "the real exit")
    assert session["last_signal_kind"] == "top_edge"


def test_no_exit_intent_for_entry_bursts_scrolls_or_slow_movement(
    new_tab: Callable[..., Tab], shop: StaticSite, server: ServerProcess, site: str, r: redis.Redis
) -> None:
    tab = new_tab()
    tab.page.clock.install()
    tab.page.goto(shop.page(server.url, site, body='<div style="height:3000px"></div>'))
    page = tab.page
    # At load: the pointer comes in from the top and straight back out (before the dwell time).
    page.mouse.move(550, 0)
    page.mouse.move(550, 60, steps=3)
    page.mouse.move(550, -5, steps=3)
    welcomed(tab)
    page.clock.fast_forward(3500)
    # An enter/leave burst: in through the top edge and out again at once.
    page.mouse.move(550, 40, steps=2)
    page.mouse.move(550, -5, steps=2)
    # Right after a scroll.
    page.mouse.move(550, 420)
    page.wait_for_timeout(550)
    page.mouse.wheel(0, 120)
    page.wait_for_timeout(60)
    exit_through_top(page)
    # A slow drift out of the top (about 0.15 px/ms).
    page.wait_for_timeout(700)
    page.mouse.move(550, 90)
    for y in range(80, -10, -10):
        page.wait_for_timeout(65)
        page.mouse.move(550, y)
    page.wait_for_timeout(200)
    assert tab.sent_of("signal", "exit_intent") == []
    page.mouse.move(550, 420)
    page.wait_for_timeout(700)
    exit_through_top(page)
    wait_session(r, site, tab, lambda s: s.get("signals") == "1", "the deliberate exit")


def test_mobile_tab_switch_is_reported_on_return(
    new_tab: Callable[..., Tab], shop: StaticSite, server: ServerProcess, site: str, r: redis.Redis
) -> None:
    tab = new_tab(mobile=True)
    tab.page.goto(shop.page(server.url, site))
    assert welcomed(tab)
    assert tab.sent[0]["device"] == "mobile"
    tab.page.evaluate(
        """() => {
        const set = (state) => {
            Object.defineProperty(document, "visibilityState", {value: state, configurable: true});
            document.dispatchEvent(new Event("visibilitychange"));
        };
        set("hidden");
        set("visible");
    }"""
    )
    session = wait_session(r, site, tab, lambda s: s.get("signals") == "1", "tab_switch")
    assert session["last_signal_kind"] == "tab_switch"
    assert session["device"] == "mobile"


def test_mobile_back_button_intent_fires_once_then_lets_go(
    new_tab: Callable[..., Tab], shop: StaticSite, server: ServerProcess, site: str, r: redis.Redis
) -> None:
    tab = new_tab(mobile=True)
    previous = shop.write("<!doctype html><title>Previous</title><p>previous page</p>")
    tab.page.goto(previous)
    url = shop.page(server.url, site)
    tab.page.goto(url)
    welcomed(tab)
    length = tab.page.evaluate("history.length")
    tab.page.tap("h1")  # first interaction: one guard entry
    tab.page.tap("h1")
    tab.wait(lambda: tab.page.evaluate("history.length") == length + 1, "the history guard")
    tab.page.evaluate("history.back()")
    session = wait_session(r, site, tab, lambda s: s.get("signals") == "1", "back_button")
    assert session["last_signal_kind"] == "back_button"
    assert tab.page.url == url
    tab.page.go_back()
    assert tab.page.url == previous
    assert len(tab.sent_of("signal", "exit_intent")) == 1


def test_mobile_fast_scroll_up(
    new_tab: Callable[..., Tab], shop: StaticSite, server: ServerProcess, site: str, r: redis.Redis
) -> None:
    tab = new_tab(mobile=True)
    tab.page.clock.install()
    tab.page.goto(shop.page(server.url, site, body='<div style="height:6000px"></div>'))
    welcomed(tab)
    tab.page.clock.fast_forward(3500)
    tab.page.evaluate("scrollTo(0, 4500)")
    tab.page.wait_for_timeout(150)
    for _ in range(6):  # a fling: 500 px per frame or so, far above 2.5 px/ms
        tab.page.evaluate("scrollBy(0, -500)")
        tab.page.wait_for_timeout(15)
    session = wait_session(r, site, tab, lambda s: s.get("signals") == "1", "scroll_up")
    assert session["last_signal_kind"] == "scroll_up"


def test_hesitation_on_a_product_page(
    new_tab: Callable[..., Tab], shop: StaticSite, server: ServerProcess, site: str, r: redis.Redis
) -> None:
    tab = new_tab()
    tab.page.clock.install()
    tab.page.goto(shop.page(server.url, site, page_type="product"))
    welcomed(tab)
    tab.page.clock.run_for(21_000)  # product pages: 20 s without pointer, scroll or key
    session = wait_session(r, site, tab, lambda s: s.get("hesitations") == "1", "hesitation")
    first = float(session["last_hesitation_s"])
    assert 20 <= first <= 23
    tab.page.clock.run_for(20_000)
    session = wait_session(r, site, tab, lambda s: s.get("hesitations") == "2", "again, longer")
    assert float(session["last_hesitation_s"]) >= 40 > first
    assert {m["page_type"] for m in tab.sent_of("signal", "hesitation")} == {"product"}
    # Activity resets the idle clock.
    tab.page.mouse.move(300, 300)
    tab.page.clock.run_for(15_000)
    tab.page.wait_for_timeout(100)
    assert len(tab.sent_of("signal", "hesitation")) == 2


# --- consent ----------------------------------------------------------------------------------


def test_consent_required_sends_and_stores_nothing_until_granted(
    new_tab: Callable[..., Tab], shop: StaticSite, server: ServerProcess, site: str, r: redis.Redis
) -> None:
    head = """<script>
window.dataLayer = [{event: "add_to_cart", ecommerce: {items: [
  {item_id: "C-1", price: 10, quantity: 1}]}}];
window.exitwidget = [["identify", {email: "early@example.com", consent: true}]];
</script>"""
    tab = new_tab()
    page = tab.page
    page.goto(shop.page(server.url, site, head=head, script_attrs=' data-consent="required"'))
    page.wait_for_function("window.exitwidget && window.exitwidget.exw === 1")
    page.evaluate("dataLayer.push({event: 'begin_checkout'})")
    page.mouse.move(500, 400)
    page.keyboard.press("Control+l")
    page.wait_for_timeout(300)
    to_server = [u for u in tab.requests if u.startswith(server.url)]
    assert to_server == [f"{server.url}/widget.js"]
    assert tab.sockets == []
    assert page.evaluate("localStorage.length + sessionStorage.length") == 0
    assert page.context.cookies() == []

    page.evaluate("exitwidget.push(['consent', {analytics: true, marketing: false}])")
    welcomed(tab)
    assert tab.sent[0]["consent"] == {"analytics": True, "marketing": False}
    # Events already in the dataLayer count from the moment consent is given.
    session = wait_session(r, site, tab, lambda s: s.get("checkout") == "1", "replayed events")
    assert float(session["cart_value"]) == 10
    assert tab.storage("exw_c") == "10"
    visitor, session_id = tab.ids()

    # Withdrawal: the protocol consent message, erasure on the server, storage cleared.
    page.evaluate("exitwidget.push(['consent', {analytics: false}])")
    tab.wait(lambda: tab.sockets[0].is_closed(), "the server to close the socket")
    withdrawal = tab.sent_of("consent")
    assert len(withdrawal) == 1 and withdrawal[0]["analytics"] is False
    assert r.exists(KEYS.session(site, visitor, session_id)) == 0
    assert r.exists(KEYS.profile(site, visitor)) == 0
    assert tab.storage("exw_v") is None and tab.storage("exw_s") is None
    assert tab.storage("exw_c") == "00"  # the refusal itself is remembered, nothing else
    sent = len(tab.sent)
    page.evaluate("dataLayer.push({event: 'begin_checkout'})")
    page.wait_for_timeout(200)
    assert len(tab.sent) == sent and len(tab.sockets) == 1


def test_consent_mode_v2_grants_and_withdraws(
    new_tab: Callable[..., Tab], shop: StaticSite, server: ServerProcess, site: str, r: redis.Redis
) -> None:
    head = """<script>
window.dataLayer = window.dataLayer || [];
function gtag(){dataLayer.push(arguments);}
gtag("consent", "default", {analytics_storage: "denied", ad_storage: "denied"});
</script>"""
    tab = new_tab()
    page = tab.page
    page.goto(shop.page(server.url, site, head=head, script_attrs=' data-consent="required"'))
    page.wait_for_function("window.exitwidget && window.exitwidget.exw === 1")
    page.wait_for_timeout(200)
    assert tab.sockets == [] and page.evaluate("localStorage.length") == 0
    page.evaluate(
        "gtag('consent', 'update', {analytics_storage: 'granted', ad_storage: 'granted'})"
    )
    welcomed(tab)
    assert tab.sent[0]["consent"] == {"analytics": True, "marketing": True}
    visitor, _ = tab.ids()
    tab.wait(lambda: r.hget(KEYS.profile(site, visitor), "consent_marketing") == "1", "consent")
    page.evaluate("gtag('consent', 'update', {analytics_storage: 'denied'})")
    tab.wait(lambda: tab.sockets[0].is_closed(), "the server to close the socket")
    tab.wait(lambda: r.exists(KEYS.profile(site, visitor)) == 0, "erasure")
    assert tab.storage("exw_v") is None


# --- offers -----------------------------------------------------------------------------------


def test_offer_dialog_is_accessible_and_reported(
    new_tab: Callable[..., Tab],
    shop: StaticSite,
    server: ServerProcess,
    site: str,
    r: redis.Redis,
    redis_url: str,
) -> None:
    tab = new_tab()
    page = tab.page
    page.goto(shop.page(server.url, site, body='<button id="before">Add to cart</button>'))
    welcomed(tab)
    visitor, _ = tab.ids()
    page.focus("#before")
    deliver(redis_url, site, visitor, p.Offer(offer=discount(shop)))
    dialog = page.get_by_role("dialog", name="Before you go: 10% off your order")
    dialog.wait_for(state="visible")
    assert dialog.get_attribute("aria-modal") == "true"
    assert tab.in_shadow("return root.querySelector('input').value") == "SAVE10-K7Q2"
    assert re.fullmatch(
        r"Ends in 1[45]:\d\d", page.locator("exit-widget [role=timer]").inner_text()
    )
    page.wait_for_timeout(250)  # let the entrance animation settle for the screenshot
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "overlay-discount.png"))
    tab.wait(lambda: reports(tab), "offer_shown")
    assert reports(tab) == [("test-discount", "claim-discount")]

    # Focus is inside the dialog and Tab / Shift+Tab cannot leave it.
    inside = (
        "return !!root.activeElement"
        " && root.querySelector('[role=dialog]').contains(root.activeElement)"
    )
    assert tab.in_shadow(inside)
    for key in ["Tab"] * 6 + ["Shift+Tab"] * 6:
        page.keyboard.press(key)
        assert tab.in_shadow(inside), key
        assert page.evaluate("document.activeElement.tagName") == "EXIT-WIDGET"
    page.focus("#before")  # focus pulled out programmatically comes back
    assert tab.in_shadow(inside)

    # Copy the code.
    page.locator("exit-widget button", has_text="Copy").click()
    page.locator("exit-widget button", has_text="Copied").wait_for()
    wait_session(r, site, tab, lambda s: s.get("last_offer_action") == "code_copy", "code_copy")

    # Escape closes it, focus returns, a teaser pill remains and reopens it.
    page.keyboard.press("Escape")
    dialog.wait_for(state="detached")
    assert page.evaluate("document.activeElement.id") == "before"
    wait_session(r, site, tab, lambda s: s.get("offers_dismissed") == "1", "dismissed")
    dismissed = tab.sent_of("offer_dismissed")[0]
    assert dismissed["how"] == "escape" and dismissed["offer"] == "test-discount"
    assert dismissed["visible_ms"] > 200
    pill = page.locator("exit-widget .p button").first
    pill.click()
    dialog.wait_for(state="visible")
    page.locator("exit-widget [aria-label=Close]").first.click()
    dialog.wait_for(state="detached")
    wait_session(r, site, tab, lambda s: s.get("offers_dismissed") == "2", "closed")
    assert [m["how"] for m in tab.sent_of("offer_dismissed")] == ["escape", "close_button"]
    assert len(reports(tab)) == 1  # reopening the teaser is not a second exposure

    # The backdrop dismisses too; a withdrawn offer disappears.
    page.locator("exit-widget .p button").first.click()
    page.mouse.click(20, 20)
    dialog.wait_for(state="detached")
    assert tab.sent_of("offer_dismissed")[-1]["how"] == "backdrop"
    deliver(redis_url, site, visitor, p.Withdraw(offer="test-discount"))
    page.locator("exit-widget .p").wait_for(state="detached")


def test_offer_text_is_never_markup(
    new_tab: Callable[..., Tab],
    shop: StaticSite,
    server: ServerProcess,
    site: str,
) -> None:
    tab = new_tab()
    page = tab.page
    inject = route_socket(page)  # the server relays only well-formed offers; this one is not
    page.goto(shop.page(server.url, site))
    welcomed(tab)
    xss = '<img src=x onerror="alert(1)"><script>alert(2)</script>'
    hostile = {
        "id": "xss",
        "kind": "similar_products",
        "headline": xss,
        "body": '<b onclick="alert(3)">bold</b>',
        "cta": {"label": "<i>go</i>", "url": "javascript:alert(4)"},
        "products": [
            {"id": "p1", "title": xss, "url": "javascript:alert(5)", "image": "data:image/png,x"},
            {"id": "p2", "title": "ok", "url": "https://example.com/p2", "price": "oops"},
        ],
        "theme": {"accent": "red;background:url(https://evil.example/x)", "radius": "9px;x"},
    }
    inject({"type": "offer", "offer": hostile})
    dialog = page.get_by_role("dialog")
    dialog.wait_for(state="visible")
    assert tab.in_shadow("return root.querySelector('h2').textContent") == xss
    counts = tab.in_shadow(
        "return ['img','script','b','i','[onerror]','[onclick]']"
        ".map(s => root.querySelectorAll('.d ' + s).length)"
    )
    assert counts == [0, 0, 0, 0, 0, 0]
    hrefs = tab.in_shadow("return [...root.querySelectorAll('a')].map(a => a.href)")
    assert hrefs == ["https://example.com/p2"]
    assert tab.in_shadow("return root.querySelector('.w').style.getPropertyValue('--ac')") == ""
    page.wait_for_timeout(150)
    assert page.evaluate("document.querySelectorAll('body img, body script').length") == 0
    assert tab.dialogs == []


def test_offer_kinds_render_and_screenshots(
    new_tab: Callable[..., Tab],
    shop: StaticSite,
    server: ServerProcess,
    site: str,
    r: redis.Redis,
    redis_url: str,
) -> None:
    colours = ["#c8553d", "#2d7dd2", "#97cc04", "#f45d01"]
    for n, colour in enumerate(colours, 1):
        (shop.root / f"p{n}.svg").write_text(
            f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 10 10">'
            f'<rect width="10" height="10" fill="{colour}"/></svg>'
        )
    titles = ["Walnut lamp, small", "Oak desk lamp", "Linen lamp shade", "Brass floor lamp"]
    products = [
        p.OfferProduct(
            id=f"p{n}",
            title=title,
            price=39 + 10 * n,
            currency="EUR",
            url=f"{shop.origin}/p{n}",
            image=f"{shop.origin}/p{n}.svg",
        )
        for n, title in enumerate(titles, 1)
    ]
    kinds = {
        "similar_products": offer(
            "similar_products",
            headline="Still looking? You might like these",
            body="Hand-picked lamps similar to the one you viewed.",
            products=products[:3],
        ),
        "email_capture": offer(
            "email_capture",
            headline="Get 10% off your first order",
            body="Join our newsletter and we will send your code right away.",
            cta=p.OfferCta(label="Send my code", url=""),
        ),
        "message": offer(
            "message",
            headline="Free shipping ends tonight",
            body="Orders over 50 EUR ship free until midnight.",
            cta=p.OfferCta(label="Continue shopping", url=f"{shop.origin}/"),
            theme=p.OfferTheme(accent="#6a4c93", background="#ffffff", text="#1d1d1f", radius=6),
        ),
    }
    tab = new_tab()
    page = tab.page
    page.goto(shop.page(server.url, site))
    welcomed(tab)
    visitor, _ = tab.ids()
    for kind, body in kinds.items():
        deliver(redis_url, site, visitor, p.Offer(offer=body))
        dialog = page.get_by_role("dialog", name=body.headline)
        dialog.wait_for(state="visible")
        if kind == "similar_products":
            page.wait_for_function(
                "() => [...document.querySelector('exit-widget').shadowRoot"
                ".querySelectorAll('img')].every(i => i.complete && i.naturalWidth > 0)"
            )
            cards = page.locator("exit-widget .g a")
            assert cards.count() == 3
            assert "€49.00" in cards.first.inner_text()
        page.wait_for_timeout(250)
        page.screenshot(path=str(SCREENSHOTS / f"overlay-{kind}.png"))
        if kind == "email_capture":
            checkbox = page.locator("exit-widget input[type=checkbox]")
            assert not checkbox.is_checked()  # consent is never pre-ticked
            page.locator("exit-widget input[type=email]").fill("grace@example.com")
            checkbox.check()
            page.locator("exit-widget button[type=submit]").click()
            page.locator("exit-widget p", has_text="Thank you!").wait_for()
            tab.wait(
                lambda: r.hget(KEYS.profile(site, visitor), "email") == "grace@example.com",
                "identify",
            )
            assert r.hget(KEYS.profile(site, visitor), "email_consent") == "1"
            clicked = tab.sent_of("offer_clicked")[-1]
            assert clicked == {**clicked, "offer": "test-email_capture", "action": "email_submit"}
        if kind == "message":
            # Only one overlay at a time: an offer arriving now waits until this one closes.
            tab.wait(lambda: len(reports(tab)) == 3, "the message's report")
            waiting = offer("message", id="2", headline="Second message", claim="claim-2")
            deliver(redis_url, site, visitor, p.Offer(offer=waiting))
            page.wait_for_timeout(150)
            assert page.get_by_role("dialog").count() == 1
            assert len(reports(tab)) == 3  # the waiting one is not painted, so not reported
            deliver(redis_url, site, visitor, p.Withdraw(offer="test-message"))
            dialog = page.get_by_role("dialog", name="Second message")
            dialog.wait_for()
            tab.wait(lambda: len(reports(tab)) == 4, "the waiting offer's report")
            assert reports(tab)[-1] == ("2", "claim-2")
        page.keyboard.press("Escape")
        dialog.wait_for(state="detached")
    assert [claim for _, claim in reports(tab)] == [
        "claim-similar_products", "claim-email_capture", "claim-message", "claim-2"
    ]  # fmt: skip


def test_armed_offer_shows_in_the_frame_of_the_exit_signal(
    new_tab: Callable[..., Tab],
    shop: StaticSite,
    server: ServerProcess,
    site: str,
    r: redis.Redis,
    redis_url: str,
) -> None:
    tab = new_tab()
    page = tab.page
    page.goto(shop.page(server.url, site))
    welcomed(tab)
    visitor, _ = tab.ids()
    deliver(redis_url, site, visitor, p.Arm(offer=discount(shop)))
    tab.wait(lambda: tab.received_of("arm"), "the armed offer")
    assert page.get_by_role("dialog").count() == 0  # armed, not shown
    # The shadow host is mounted (stylesheet parsed) when an offer is armed, so the exit path
    # only builds the dialog.
    tab.wait(lambda: tab.in_shadow("return !!root"), "the pre-mounted host")
    page.mouse.move(550, 420)
    page.evaluate(
        """() => {
        window.__t = {};
        window.addEventListener("mouseout", (e) => {
            if (e.relatedTarget || __t.signal) return;
            __t.signal = e.timeStamp;  // when the input event was created
            __t.dispatch = performance.now();  // when the page started handling it
            setTimeout(() => { __t.nextTask = performance.now(); }, 0);  // the page's next task
        }, true);
        const root = document.querySelector("exit-widget").shadowRoot;
        new MutationObserver(() => {
            if (__t.dom) return;
            __t.dom = performance.now();
            __t.sameTask = __t.nextTask === undefined;  // built before anything else could run
            __t.size = root.querySelector("[role=dialog]").getBoundingClientRect().height;
            requestAnimationFrame(() => { __t.frame = performance.now(); });
        }).observe(root, {childList: true});
    }"""
    )
    page.wait_for_function("performance.now() > 3300")  # past min_dwell_ms since load
    page.wait_for_timeout(550)  # and past the guard after the pointer entered the page
    exit_through_top(page)
    timing = tab.wait(lambda: page.evaluate("__t.frame && __t"), "the overlay frame")
    visible_ms = timing["frame"] - timing["signal"]
    print(
        f"signal -> visible: {visible_ms:.1f} ms; handler -> DOM"
        f" {timing['dom'] - timing['dispatch']:.1f} ms, handler -> frame"
        f" {timing['frame'] - timing['dispatch']:.1f} ms"
    )
    assert timing["size"] > 100
    # The dialog is built while the exit event is handled: no answer from the server (nor any
    # other task) comes in between, so it paints in the next frame however busy the machine is.
    assert timing["sameTask"] is True
    page.get_by_role("dialog").wait_for(state="visible")
    wait_session(r, site, tab, lambda s: s.get("signals") == "1", "the signal")
    # The armed copy has no code and no claim: it is reported when the claimed copy the
    # server sends for the signal replaces it.
    assert reports(tab) == []
    deliver(redis_url, site, visitor, p.Offer(offer=discount(shop)))
    tab.wait(lambda: reports(tab), "offer_shown")
    assert reports(tab) == [("test-discount", "claim-discount")]
    assert page.get_by_role("dialog").count() == 1
    order = [m["type"] for m in tab.sent if m.get("type") in ("signal", "offer_shown")]
    assert order == ["signal", "offer_shown"]


OVERLAY_URL = re.compile(r".*/widget-overlay\.[0-9a-f]{12}\.js$")


def overlay_requests(tab: Tab) -> list[str]:
    return [u for u in tab.requests if OVERLAY_URL.match(u)]


def test_overlay_loads_with_the_first_offer_and_an_early_offer_paints_once_it_has(
    new_tab: Callable[..., Tab],
    shop: StaticSite,
    server: ServerProcess,
    site: str,
    r: redis.Redis,
    redis_url: str,
) -> None:
    tab = new_tab()
    page = tab.page
    held: list[Route] = []
    page.route(OVERLAY_URL, lambda route: held.append(route))  # answered later, by the test
    page.goto(shop.page(server.url, site))
    page_view = welcomed(tab)
    tab.wait(lambda: any(page_view["id"] in a["ids"] for a in tab.received_of("ack")), "ack")
    # A visitor who gets no offer never loads the overlay.
    assert overlay_requests(tab) == []
    visitor, _ = tab.ids()
    deliver(redis_url, site, visitor, p.Offer(offer=discount(shop)))
    tab.wait(lambda: held, "the overlay request")
    # Not painted yet, so not reported shown.
    assert page.get_by_role("dialog").count() == 0
    assert tab.sent_of("offer_shown") == []
    held[0].continue_()
    page.get_by_role("dialog").wait_for(state="visible")
    assert tab.in_shadow("return root.querySelector('input').value") == "SAVE10-K7Q2"
    tab.wait(lambda: reports(tab), "offer_shown")
    # Loaded once: the next offer uses it.
    page.keyboard.press("Escape")
    deliver(redis_url, site, visitor, p.Offer(offer=offer("message", id="next")))
    page.get_by_role("dialog", name="Before you go: 10% off your order").wait_for()
    tab.wait(lambda: len(reports(tab)) == 2, "the second offer_shown")
    assert len(overlay_requests(tab)) == 1


def test_an_overlay_that_fails_to_load_is_tried_again_and_the_page_keeps_working(
    new_tab: Callable[..., Tab],
    shop: StaticSite,
    server: ServerProcess,
    site: str,
    r: redis.Redis,
    redis_url: str,
) -> None:
    tab = new_tab()
    page = tab.page
    attempts: list[str] = []

    def first_fails(route: Route) -> None:
        attempts.append(route.request.url)
        if len(attempts) == 1:
            route.abort()
        else:
            route.continue_()

    page.route(OVERLAY_URL, first_fails)
    page.goto(shop.page(server.url, site))
    welcomed(tab)
    visitor, _ = tab.ids()
    deliver(redis_url, site, visitor, p.Arm(offer=discount(shop)))
    tab.wait(lambda: attempts, "the overlay request")
    # The core carries on: events are recorded.
    page.evaluate(
        """() => dataLayer.push({event: "add_to_cart", ecommerce: {items: [
          {item_id: "F-1", price: 4, quantity: 1}]}})"""
    )
    wait_session(r, site, tab, lambda s: s.get("cart_value") == "4", "the cart_add")
    assert page.evaluate("document.querySelectorAll('exit-widget').length") == 0
    # The exit intent tries again, and the armed offer paints once the overlay is there.
    page.mouse.move(550, 420)
    page.wait_for_function("performance.now() > 3300")
    page.wait_for_timeout(550)
    exit_through_top(page)
    page.get_by_role("dialog").wait_for(state="visible")
    assert len(attempts) == 2
    wait_session(r, site, tab, lambda s: s.get("signals") == "1", "the signal")
    deliver(redis_url, site, visitor, p.Offer(offer=discount(shop)))  # the claimed copy
    tab.wait(lambda: reports(tab), "offer_shown")
    order = [m["type"] for m in tab.sent if m.get("type") in ("signal", "offer_shown")]
    assert order == ["signal", "offer_shown"]


def test_hostile_page_css_cannot_hide_the_overlay(
    new_tab: Callable[..., Tab],
    shop: StaticSite,
    server: ServerProcess,
    site: str,
    redis_url: str,
) -> None:
    head = """<style>
* { all: unset !important; }
div { display: none !important; }
html, body { overflow: hidden !important; }
exit-widget, :host, [role=dialog] { display: none !important; opacity: 0 !important; }
</style>"""
    tab = new_tab()
    page = tab.page
    page.goto(shop.page(server.url, site, head=head))
    welcomed(tab)
    visitor, _ = tab.ids()
    deliver(redis_url, site, visitor, p.Offer(offer=discount(shop)))
    dialog = page.get_by_role("dialog")
    dialog.wait_for(state="visible")
    box = dialog.bounding_box()
    assert box is not None and box["width"] > 300 and box["height"] > 200
    hit = page.evaluate(
        "([x, y]) => document.elementFromPoint(x, y).tagName", [box["x"] + 20, box["y"] + 20]
    )
    assert hit == "EXIT-WIDGET"
    style = tab.in_shadow(
        "const s = getComputedStyle(root.querySelector('[role=dialog]'));"
        "return [s.position, s.backgroundColor, s.opacity]"
    )
    assert style == ["fixed", "rgb(255, 255, 255)", "1"]


def test_strict_csp_page_without_violations(
    new_tab: Callable[..., Tab],
    shop: StaticSite,
    server: ServerProcess,
    site: str,
    r: redis.Redis,
    redis_url: str,
) -> None:
    csp = (
        f"default-src 'self'; script-src 'self' {server.url}; "
        f"connect-src {server.url} ws://127.0.0.1:{server.port}; style-src 'self'"
    )
    tab = new_tab()
    page = tab.page
    page.add_init_script(
        """window.__violations = [];
        document.addEventListener("securitypolicyviolation",
            (e) => __violations.push(e.violatedDirective + " " + e.blockedURI));"""
    )
    url = shop.page(server.url, site, csp=csp)
    response = page.goto(url)
    assert response is not None and response.headers["content-security-policy"] == csp
    welcomed(tab)
    visitor, _ = tab.ids()
    deliver(redis_url, site, visitor, p.Offer(offer=discount(shop)))
    page.get_by_role("dialog").wait_for(state="visible")
    style = tab.in_shadow(
        "const s = getComputedStyle(root.querySelector('[role=dialog]'));"
        "return [s.position, s.borderRadius]"
    )
    assert style == ["fixed", "14px"]  # the constructed stylesheet and theme applied
    page.keyboard.press("Escape")
    wait_session(r, site, tab, lambda s: s.get("offers_dismissed") == "1", "dismissed")
    # pagehide flushes through the beacon endpoint (connect-src allows it).
    page.goto(shop.write("<!doctype html><p>bye</p>"))
    assert page.evaluate("1") == 1
    assert tab.page_errors == []
    violations = page.evaluate("window.__violations")
    assert violations == []


def test_nonce_csp_page_lets_the_overlay_in_through_the_widgets_nonce(
    new_tab: Callable[..., Tab],
    shop: StaticSite,
    server: ServerProcess,
    site: str,
    redis_url: str,
) -> None:
    """A policy that allows scripts by nonce only: the widget's tag has the nonce, and the widget
    gives it to the overlay's script."""
    csp = (
        "default-src 'self'; script-src 'nonce-r4nd0m'; "
        f"connect-src {server.url} ws://127.0.0.1:{server.port}; style-src 'self'"
    )
    tab = new_tab()
    page = tab.page
    page.add_init_script(
        """window.__violations = [];
        document.addEventListener("securitypolicyviolation",
            (e) => __violations.push(e.violatedDirective + " " + e.blockedURI));"""
    )
    page.goto(shop.page(server.url, site, csp=csp, script_attrs=' nonce="r4nd0m"'))
    welcomed(tab)
    visitor, _ = tab.ids()
    deliver(redis_url, site, visitor, p.Offer(offer=discount(shop)))
    page.get_by_role("dialog").wait_for(state="visible")
    assert page.evaluate("window.__violations") == []


# --- failure --------------------------------------------------------------------------------------


def test_pagehide_flushes_unacked_messages_with_a_beacon(
    new_tab: Callable[..., Tab], shop: StaticSite, server: ServerProcess, site: str, r: redis.Redis
) -> None:
    tab = new_tab()
    page = tab.page
    swallowed: list[str] = []

    def relay(route: WebSocketRoute) -> None:
        """Forward the socket both ways, except cart_add frames, which are never acked."""
        upstream = route.connect_to_server()

        def from_page(message: str | bytes) -> None:
            if '"cart_add"' in str(message):
                swallowed.append(str(message))
            else:
                upstream.send(message)

        route.on_message(from_page)
        upstream.on_message(route.send)

    page.route_web_socket(re.compile(r".*/v1/ws\?.*"), relay)
    page.goto(shop.page(server.url, site))
    welcomed(tab)
    visitor, session_id = tab.ids()
    page.evaluate(
        """() => dataLayer.push({event: "add_to_cart", ecommerce: {items: [
          {item_id: "B-1", price: 12.5, quantity: 2}]}})"""
    )
    tab.wait(lambda: swallowed, "the cart_add frame")
    key = KEYS.session(site, visitor, session_id)
    assert r.hget(key, "cart_items") == "0"
    page.goto(shop.write("<!doctype html><p>next page</p>"))
    tab.wait(lambda: r.hget(key, "cart_items") == "2", "the beacon to deliver the cart_add")
    assert float(r.hget(key, "cart_value") or 0) == 25


def serve_widget_from(page: Page, origin: str) -> None:
    """Answer ``origin/widget.js`` with the built widget, whether or not a server listens there."""
    body = (STATIC_DIR / "widget" / "widget.js").read_bytes()
    page.route(
        f"{origin}/widget.js",
        lambda route: route.fulfill(body=body, content_type="text/javascript"),
    )


def test_widget_never_throws_when_the_server_is_down(
    new_tab: Callable[..., Tab], shop: StaticSite, site: str
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    tab = new_tab()
    page = tab.page
    serve_widget_from(page, closed)
    head = """<script>
window.dataLayer = [{event: "view_item", ecommerce: {items: [{item_id: "A", price: 3}]}}];
window.exitwidget = [["identify", {email: "x@example.com"}]];
</script>"""
    page.goto(shop.page(closed, site, head=head))
    page.wait_for_function("window.exitwidget && window.exitwidget.exw === 1")
    page.evaluate(
        """() => {
        dataLayer.push({event: "add_to_cart", ecommerce: {items: [{item_id: "A", price: 3}]}});
        exitwidget.push(["track", "checkout_start", {}], ["consent", {analytics: true}]);
        history.pushState({}, "", "/elsewhere");
    }"""
    )
    page.mouse.move(500, 400)
    exit_through_top(page)
    # Three failed connections in a row switch to the HTTP fallback, which fails quietly too.
    tab.wait(lambda: len(tab.sockets) >= 4, "reconnect attempts", timeout=10)
    tab.wait(
        lambda: any(u.startswith(f"{closed}/v1/events") for u in tab.requests),
        "the HTTP fallback",
    )
    page.goto(shop.write("<!doctype html><p>next page</p>"))
    assert tab.page_errors == []
    assert [m for m in tab.console_errors if not NETWORK_NOISE.match(m)] == []


def test_reconnects_wait_a_random_share_of_a_doubling_delay_up_to_30_s(
    new_tab: Callable[..., Tab], shop: StaticSite, site: str
) -> None:
    """The rule of docs/protocol.md: before reconnect attempt n (n = 0 after a welcome) the widget
    waits random() x min(30 s, 0.5 s x 2^n) (full jitter), so a restart does not bring every
    widget back at the same moment."""
    closed = f"http://127.0.0.1:{free_port()}"
    tab = new_tab()
    page = tab.page
    serve_widget_from(page, closed)
    page.add_init_script(
        """(() => {
        Math.random = () => 0.75;  // the jitter's draw, fixed so the delays can be checked
        const Native = WebSocket;
        window.__opened = [];
        window.__closed = [];
        window.WebSocket = function (url, protocols) {
            __opened.push(Date.now());
            const socket = new Native(url, protocols);
            socket.addEventListener("close", () => __closed.push(Date.now()));
            return socket;
        };
        window.WebSocket.prototype = Native.prototype;
    })()"""
    )
    page.clock.install()
    page.clock.pause_at(1_900_000_000_000)  # time moves only when the test moves it
    page.goto(shop.page(closed, site))
    for n in range(1, 9):
        tab.wait(lambda n=n: page.evaluate("__closed.length") >= n, f"failure {n}")
        page.clock.run_for(31_000)  # the widget's timer fires within this
    tab.wait(lambda: page.evaluate("__opened.length") >= 9, "the ninth attempt")
    opened, closed_at = page.evaluate("__opened"), page.evaluate("__closed")
    waits = [round(opened[n + 1] - closed_at[n]) for n in range(8)]
    assert waits == [round(0.75 * min(30_000, 500 * 2**n)) for n in range(8)]


def test_reconnect_replays_unacked_messages_into_the_same_session(
    new_tab: Callable[..., Tab],
    shop: StaticSite,
    redis_url: str,
    r: redis.Redis,
    tmp_path: Path,
) -> None:
    first = ServerProcess(redis_url, tmp_path / "node").start()
    second: ServerProcess | None = None
    try:
        site = new_site(redis_url, shop.origin)
        tab = new_tab()
        page = tab.page
        page.clock.install()
        page.goto(shop.page(first.url, site))
        welcomed(tab)
        visitor, session_id = tab.ids()
        first.stop()
        tab.wait(lambda: tab.sockets[0].is_closed(), "the socket to drop")
        page.evaluate(
            """() => dataLayer.push({event: "add_to_cart", ecommerce: {items: [
              {item_id: "R-1", price: 7, quantity: 1}]}})"""
        )
        second = ServerProcess(redis_url, tmp_path / "node")
        second.port = first.port
        second.start()
        key = KEYS.session(site, visitor, session_id)

        def replayed() -> bool:
            page.clock.fast_forward(31_000)  # past any backoff delay
            return r.hget(key, "cart_value") == "7"

        tab.wait(replayed, "the queued cart_add to reach the resumed session", timeout=15)
        assert tab.received_of("welcome")[-1]["resumed"] is True
    finally:
        first.stop()
        if second is not None:
            with contextlib.suppress(Exception):
                second.stop()


def test_real_campaign_arm_claim_code_and_purchase_withdraw(
    new_tab: Callable[..., Tab], shop: StaticSite, server: ServerProcess, site: str, redis_url: str
) -> None:
    """The whole loop with the offers engine: armed on load, shown on exit in the same frame,
    completed with the claimed code, withdrawn when the visitor buys."""
    campaign = discount_campaign("e2e")
    campaign["variants"][0]["offer"]["headline"] = "Wait! 10% off"
    with ThreadPoolExecutor(1) as pool:
        pool.submit(save_campaigns, redis_url, site, [campaign]).result()
    tab = new_tab()
    page = tab.page
    page.goto(shop.page(server.url, site))
    welcomed(tab)
    tab.wait(lambda: tab.received_of("arm"), "the armed campaign")
    page.mouse.move(550, 420)
    page.wait_for_function("performance.now() > 3300")
    page.wait_for_timeout(550)
    exit_through_top(page)
    dialog = page.get_by_role("dialog")
    dialog.wait_for(state="visible")
    offer_msg = tab.wait(lambda: tab.received_of("offer"), "the claimed offer")[0]["offer"]
    assert offer_msg["id"] == "e2e.a" and offer_msg["code"].startswith("SAVE-")
    shown_code = "const i = root.querySelector('[role=dialog] input'); return i && i.value"
    tab.wait(lambda: tab.in_shadow(shown_code) == offer_msg["code"], "the code in the dialog")
    page.evaluate(
        """() => { window.dataLayer = window.dataLayer || []; dataLayer.push({ecommerce: null});
        dataLayer.push({event: "purchase", ecommerce: {transaction_id: "T-9", value: 40,
        currency: "EUR", items: [{item_id: "L1", item_name: "Lamp", price: 40, quantity: 1}]}}) }"""
    )
    tab.wait(lambda: tab.received_of("withdraw"), "the withdraw after the purchase")
    dialog.wait_for(state="detached")


def impressions(r: redis.Redis, site: str, campaign: str) -> int:
    pattern = KEYS.campaign_stats(site, campaign, "*").replace("{", "[{]").replace("}", "[}]")
    return sum(int(r.hget(key, "impressions:a") or 0) for key in r.scan_iter(pattern))


def leave_through_top(page: Page) -> None:
    """An exit intent the widget accepts: past its minimum dwell time and pointer guard."""
    page.mouse.move(550, 420)
    while page.evaluate("() => performance.now()") < 3300:  # no eval: pages may forbid it
        page.wait_for_timeout(50)
    page.wait_for_timeout(550)
    exit_through_top(page)


def test_two_campaigns_give_one_overlay_per_visit_counted_when_painted(
    new_tab: Callable[..., Tab], shop: StaticSite, server: ServerProcess, site: str, r: redis.Redis,
    redis_url: str,
) -> None:  # fmt: skip
    """The site's default policy, one offer per visit: after the first campaign's overlay, the
    second campaign neither arms nor shows, and the report counts what was painted."""
    first = discount_campaign("new15", priority=50)
    first["variants"][0]["offer"]["headline"] = "15% off your first order"
    second = message_campaign("saver", priority=10)
    with ThreadPoolExecutor(1) as pool:
        pool.submit(save_campaigns, redis_url, site, [first, second]).result()
    tab = new_tab()
    page = tab.page
    page.goto(shop.page(server.url, site))
    welcomed(tab)
    tab.wait(lambda: tab.received_of("arm"), "the armed campaign")
    assert impressions(r, site, "new15") == 0  # armed is not shown
    leave_through_top(page)
    page.get_by_role("dialog", name="15% off your first order").wait_for()
    tab.wait(lambda: tab.sent_of("offer_shown"), "offer_shown")
    claim = tab.received_of("offer")[0]["offer"]["claim"]
    assert [m["claim"] for m in tab.sent_of("offer_shown")] == [claim]
    tab.wait(lambda: impressions(r, site, "new15") == 1, "the impression")
    page.keyboard.press("Escape")
    page.get_by_role("dialog").wait_for(state="detached")
    arms = len(tab.received_of("arm"))
    page.reload()  # the next page of the same visit
    tab.wait(lambda: len(tab.received_of("welcome")) == 2, "the second welcome")
    leave_through_top(page)
    wait_session(r, site, tab, lambda s: s.get("signals") == "2", "the second exit intent")
    page.wait_for_timeout(300)
    assert page.get_by_role("dialog").count() == 0
    assert len(tab.received_of("arm")) == arms and len(tab.received_of("offer")) == 1
    visitor, session = tab.ids()
    last = json.loads(r.lindex(KEYS.trace(site, visitor, session), 0) or "{}")
    assert {x["campaign"]: x["reason"] for x in last["rejected"]} == {
        "new15": "capped_session", "saver": "site_session"
    }  # fmt: skip
    assert impressions(r, site, "saver") == 0 and impressions(r, site, "new15") == 1


def test_a_live_offer_during_an_open_overlay_shows_after_it_closes_and_counts_once(
    new_tab: Callable[..., Tab], shop: StaticSite, server: ServerProcess, site: str, r: redis.Redis,
    redis_url: str,
) -> None:  # fmt: skip
    exit_offer = message_campaign("exit")
    exit_offer["variants"][0]["offer"]["headline"] = "Before you go"
    flash = message_campaign("flash", trigger={"exit_intent": [], "live": True})
    flash["variants"][0]["offer"]["headline"] = "Flash sale: 20% off for an hour"
    with ThreadPoolExecutor(1) as pool:
        pool.submit(save_campaigns, redis_url, site, [exit_offer, flash]).result()
    tab = new_tab()
    page = tab.page
    page.goto(shop.page(server.url, site))
    welcomed(tab)
    tab.wait(lambda: tab.received_of("arm"), "the armed campaign")
    leave_through_top(page)
    page.get_by_role("dialog", name="Before you go").wait_for()
    tab.wait(lambda: tab.sent_of("offer_shown"), "the exit offer's report")
    started = subprocess.run(
        [sys.executable, "-m", "widget_server.cli", "live", "start", "flash", "--site", site,
         "--minutes", "5"], env={**os.environ, "REDIS_URL": redis_url},
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    tab.wait(lambda: len(tab.received_of("offer")) == 2, "the live offer")
    page.wait_for_timeout(300)
    # It waits: the visitor is reading the exit offer, which stays.
    assert page.get_by_role("dialog").count() == 1
    assert page.get_by_role("dialog", name="Before you go").count() == 1
    assert len(tab.sent_of("offer_shown")) == 1 and impressions(r, site, "flash") == 0
    page.keyboard.press("Escape")
    page.get_by_role("dialog", name="Flash sale: 20% off for an hour").wait_for()
    tab.wait(lambda: len(tab.sent_of("offer_shown")) == 2, "the live offer's report")
    assert tab.sent_of("offer_shown")[1]["offer"] == "flash.a"
    tab.wait(lambda: impressions(r, site, "flash") == 1, "the live offer's impression")
    page.keyboard.press("Escape")
    page.wait_for_timeout(300)
    assert impressions(r, site, "flash") == 1 and impressions(r, site, "exit") == 1


def test_an_email_capture_shows_its_code_and_emails_it_with_consent(
    new_tab: Callable[..., Tab], shop: StaticSite, redis_url: str, r: redis.Redis, tmp_path: Path
) -> None:
    """The demo's promise, kept: "Get 5 EUR off / Send me the code" shows the code right after
    submitting and emails it (a real SMTP server); an address given without consent gets the
    code on screen and no email, and the report counts the two apart."""
    from ..mail.test_capture_reward import capture_campaign, mails_to, stats, text_of
    from ..mail_support import isolated_shop

    with isolated_shop(redis_url, tmp_path) as mail_shop, ThreadPoolExecutor(1) as pool:

        def prepare() -> str:
            key = add_site(redis_url, [shop.origin], keys=mail_shop.keys)
            mail_shop.sites.add(key)

            async def save() -> None:
                client = Redis.from_url(redis_url)
                try:
                    await CampaignStore(client, mail_shop.keys).save(
                        key, capture_campaign("news", privacy_url="/privacy"), author="tests"
                    )
                finally:
                    await client.aclose()

            asyncio.run(save())
            return key

        site = pool.submit(prepare).result()
        for n, consent in enumerate((True, False)):
            address = f"visitor{n}@{site}.test"
            code = _capture_in_the_browser(new_tab(), shop, mail_shop.server, site, address,
                                           consent)  # fmt: skip
            if consent:
                mail = new_tab().wait(
                    functools.partial(mails_to, mail_shop, address), "the code's email"
                )
                assert code in text_of(mail[0])
        assert mails_to(mail_shop, f"visitor1@{site}.test") == []
        counts = stats(r, mail_shop, site)
        assert (counts["captures:a"], counts["consented_captures:a"]) == (2, 1)


def _capture_in_the_browser(
    tab: Tab, shop: StaticSite, server: ServerProcess, site: str, address: str, consent: bool
) -> str:
    """A visitor leaves, sees the capture, gives ``address``; returns the code on screen."""
    page = tab.page
    page.goto(shop.page(server.url, site))
    welcomed(tab)
    tab.wait(lambda: tab.received_of("arm"), "the armed capture")
    leave_through_top(page)
    page.get_by_role("dialog", name="Get 5 EUR off").wait_for()
    tab.wait(lambda: tab.sent_of("offer_shown"), "offer_shown")  # the claimed copy
    button = page.locator("exit-widget button[type=submit]")
    assert button.inner_text() == "Show my code"  # the box is never ticked in advance
    if consent:
        page.locator("exit-widget input[type=checkbox]").check()
        assert button.inner_text() == "Send me the code"
    policy = page.locator("exit-widget a", has_text="Privacy policy")
    assert policy.get_attribute("href") == f"{shop.origin}/privacy"
    page.locator("exit-widget input[type=email]").fill(address)
    button.click()
    code_box = page.locator("exit-widget [role=dialog] input[readonly]")
    code_box.wait_for()
    code = code_box.input_value()
    assert code.startswith("HELLO-")
    assert page.locator("exit-widget p", has_text="Here is your code").count() == 1
    emailed = page.locator("exit-widget p", has_text=f"We have also sent it to {address}")
    assert emailed.count() == (1 if consent else 0)
    return code


def test_the_demo_shop_applies_the_code_it_is_given(
    new_tab: Callable[..., Tab], tmp_path: Path
) -> None:
    """The demo site applies codes through its own script: "Back to my cart" on the cart page
    closes the overlay (no reload) and the cart shows the code and the discounted total; the
    checkout has it in its coupon field. The copy button stays."""
    with demo_with_a_cart(tmp_path, new_tab) as (base, tab):
        page = tab.page
        tab.wait(lambda: any(m["offer"]["campaign"] == "cart-saver"
                             for m in tab.received_of("arm")), "the cart saver armed")  # fmt: skip
        subtotal = page.locator("[data-cart-subtotal]").inner_text()
        leave_through_top(page)
        dialog = page.get_by_role("dialog")
        dialog.wait_for()
        code_box = page.locator("exit-widget [role=dialog] input[readonly]")
        tab.wait(lambda: code_box.count() and code_box.input_value().startswith("SAVE10-"),
                 "the claimed code")  # fmt: skip
        code = code_box.input_value()
        assert page.locator("exit-widget button", has_text="Copy").count() == 1
        page.evaluate("window.__sameDocument = 1")
        page.locator("exit-widget [role=dialog] .c", has_text="Back to my cart").click()
        dialog.wait_for(state="detached")
        assert page.evaluate("window.__sameDocument") == 1  # closed, not reloaded
        assert page.locator("[data-discount-code]").first.inner_text() == code
        amount = float(subtotal.replace("€", "").replace(",", ""))
        total = page.locator("[data-cart-total]").inner_text()
        assert total == f"€{amount - round(amount * 0.10, 2):,.2f}"
        page.goto(base + "/demo/checkout")
        assert page.locator("#coupon").input_value() == code
        assert page.locator("[data-summary-total]").inner_text() == total


@contextlib.contextmanager
def demo_with_a_cart(tmp_path: Path, new_tab: Callable[..., Tab]) -> Iterator[tuple[str, Tab]]:
    """``widget-server demo`` on a free port, and a tab on its cart page with an item in the cart,
    for a visitor the demo's cart saver shows its "ten" variant to (in neither holdout). Yields
    the demo's base URL and the tab."""
    from widget_server.cli.main import DEMO_HOLDOUT
    from widget_server.offers.assign import assign, in_site_holdout
    from widget_server.offers.campaigns import parse_campaign
    from widget_server.shipped import EXAMPLES_DIR

    from ..support import new_visitor

    saver = parse_campaign(json.loads((EXAMPLES_DIR / "demo-campaigns.json").read_text())[0])
    visitor = next(v for v in (new_visitor() for _ in range(200))
                   if assign(saver, v) == "ten"
                   and not in_site_holdout("demo", 1, DEMO_HOLDOUT, v))  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(WIDGET_DATA_DIR=str(tmp_path), WIDGET_LOG_LEVEL="warning")
    port = free_port()
    demo = subprocess.Popen(
        [sys.executable, "-m", "widget_server.cli", "demo", "--no-traffic", "--port", str(port)],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while not _ready(base):
            assert demo.poll() is None and time.monotonic() < deadline, "the demo did not start"
            time.sleep(0.2)
        tab = new_tab()
        page = tab.page
        page.add_init_script(f"localStorage.setItem('exw_v', {json.dumps(visitor)})")
        page.goto(base + "/demo/p/P1002")
        welcomed(tab)
        page.get_by_role("button", name="Add to cart").click()
        page.get_by_text("Added to cart").wait_for()
        tab.wait(lambda: tab.sent_of("event", "cart_add"), "the cart_add")
        page.goto(base + "/demo/cart")
        yield base, tab
    finally:
        demo.terminate()
        demo.wait(20)


def _ready(base: str) -> bool:
    import httpx

    try:
        return httpx.get(base + "/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_codes_are_applied_the_shops_way(
    new_tab: Callable[..., Tab], shop: StaticSite, server: ServerProcess, site: str, redis_url: str
) -> None:
    """Shopify's /discount/CODE link, a URL parameter, or the shop's own function."""
    tab = new_tab()
    page = tab.page
    page.goto(shop.page(server.url, site, body="""<script>
      window.exitwidget = window.exitwidget || [];
      exitwidget.push(["on", "code", (d) => { window.applied = d; }]);
    </script>"""))  # fmt: skip
    welcomed(tab)
    visitor, _ = tab.ids()
    cart = p.OfferCta(label="Back to my cart", url=f"{shop.origin}/cart?step=1")
    for n, (apply, href) in enumerate([
        (p.OfferApply(mode="shopify"),
         f"{shop.origin}/discount/SAVE10-K7Q2?redirect=%2Fcart%3Fstep%3D1"),
        (p.OfferApply(mode="url", param="coupon_code"),
         f"{shop.origin}/cart?step=1&coupon_code=SAVE10-K7Q2"),
        (None, f"{shop.origin}/cart?step=1"),
    ]):  # fmt: skip
        body = msgspec.structs.replace(discount(shop), id=f"d{n}", cta=cart, apply=apply,
                                       claim=f"claim-{n}")  # fmt: skip
        deliver(redis_url, site, visitor, p.Offer(offer=body))
        link = page.locator("exit-widget [role=dialog] a.c")
        link.wait_for()
        assert link.get_attribute("href") == href
        page.keyboard.press("Escape")
        page.get_by_role("dialog").wait_for(state="detached")
    body = msgspec.structs.replace(discount(shop), id="d9", claim="claim-9",
                                   apply=p.OfferApply(mode="callback"),
                                   discount=p.OfferDiscount(type="percent", amount=10))  # fmt: skip
    deliver(redis_url, site, visitor, p.Offer(offer=body))
    page.locator("exit-widget button", has_text="Copy").click()
    applied = tab.wait(lambda: page.evaluate("() => window.applied"), "the shop's function")
    assert applied == {"code": "SAVE10-K7Q2", "offer": "d9", "campaign": "test",
                       "discount": {"type": "percent", "amount": 10}}  # fmt: skip


# --- scroll depth and time on page ----------------------------------------------------------

# A box of its own that scrolls (a list, reviews): not the page.
SMALL_BOX = (
    '<div id="box" style="height: 150px; overflow: auto"><p style="height: 900px"></p></div>'
)
# A shop whose body does not scroll: a full-height container does (overflow: auto).
OWN_CONTAINER = """<style>html, body { height: 100%; margin: 0; overflow: hidden; }
#app { position: fixed; inset: 0; overflow: auto; }</style>
<div id="app">{SMALL_BOX}<div style="height: 5000px">Long read</div></div>"""
DOCUMENT = '{SMALL_BOX}<div style="height: 5000px">Long read</div>'
# Scroll the page's scroller so that the bottom of the view is at `percent` of its height;
# resolved once the scroll event has been handled (the widget listened first).
SCROLL_TO = """percent => new Promise(done => {
    const box = document.getElementById("app") || document.scrollingElement;
    addEventListener("scroll", () => done(), {capture: true, once: true});
    box.scrollTop = Math.round(box.scrollHeight * percent / 100 - box.clientHeight);
})"""


SCROLL_BOX = """() => new Promise(done => {
    addEventListener("scroll", () => done(), {capture: true, once: true});
    document.getElementById("box").scrollTop = 10000;
})"""


def last_decision(r: redis.Redis, site: str, tab: Tab, signal: str) -> dict[str, Any]:
    """The server's trace of its latest decision, once it is for a ``signal`` signal."""
    visitor, session = tab.ids()

    def decided() -> dict[str, Any] | None:
        last = json.loads(r.lindex(KEYS.trace(site, visitor, session), 0) or "{}")
        return last if last.get("signal", {}).get("type") == signal else None

    return tab.wait(decided, f"the decision for {signal}")


@pytest.mark.parametrize("scroller", ["own container", "document"])
def test_scroll_depth_shows_its_campaign_once_the_visitor_scrolled_far_enough(
    new_tab: Callable[..., Tab], shop: StaticSite, server: ServerProcess, site: str, r: redis.Redis,
    redis_url: str, scroller: str,
) -> None:  # fmt: skip
    reading = message_campaign("reading", trigger={"exit_intent": [], "scroll_depth": 50})
    reading["variants"][0]["offer"]["headline"] = "Enjoying the read?"
    # Shows nowhere (its page never matches): its threshold makes 30% a scroll-depth report.
    elsewhere = message_campaign(
        "elsewhere", trigger={"exit_intent": [], "scroll_depth": 20},
        targeting={"any": [{"all": [{"field": "url", "op": "contains", "value": "/nowhere"}]}]},
    )  # fmt: skip
    with ThreadPoolExecutor(1) as pool:
        pool.submit(save_campaigns, redis_url, site, [reading, elsewhere]).result()
    tab = new_tab()
    page = tab.page
    body = OWN_CONTAINER if scroller != "document" else DOCUMENT
    page.goto(shop.page(server.url, site, body=body.replace("{SMALL_BOX}", SMALL_BOX)))
    welcomed(tab)
    assert tab.received_of("welcome")[0]["config"]["scroll_depth"] == [20, 50]
    page.evaluate(SCROLL_BOX)  # to its end: a small box is not the page, nothing is reported
    page.evaluate(SCROLL_TO, 30)
    decided = last_decision(r, site, tab, "scroll_depth")
    assert decided["signal"]["percent"] == 30 and decided["chosen"] is None
    assert page.get_by_role("dialog").count() == 0  # the answer (nothing) has come
    page.evaluate(SCROLL_TO, 60)
    page.get_by_role("dialog", name="Enjoying the read?").wait_for(state="visible")
    assert [m["percent"] for m in tab.sent_of("signal", "scroll_depth")] == [30, 60]
    session = wait_session(r, site, tab, lambda s: s.get("offers_shown") == "1", "the report")
    assert session["last_scroll_percent"] == "60"
    # Each threshold once per page view: scrolling back and down again reports nothing new.
    page.keyboard.press("Escape")
    page.evaluate(SCROLL_TO, 10)
    page.evaluate(SCROLL_TO, 90)
    page.evaluate("history.pushState({}, '', '/spa/next-article')")  # a new page view
    page.evaluate(SCROLL_TO, 10)
    page.evaluate(SCROLL_TO, 25)
    tab.wait(lambda: len(tab.sent_of("signal", "scroll_depth")) == 3, "the next page's report")
    assert [m["percent"] for m in tab.sent_of("signal", "scroll_depth")] == [30, 60, 25]


def test_time_on_page_shows_its_campaign_without_any_other_signal(
    new_tab: Callable[..., Tab], shop: StaticSite, server: ServerProcess, site: str, r: redis.Redis,
    redis_url: str,
) -> None:  # fmt: skip
    lingering = message_campaign("lingering", trigger={"exit_intent": [], "time_on_page": 2})
    lingering["variants"][0]["offer"]["headline"] = "Still deciding?"
    with ThreadPoolExecutor(1) as pool:
        pool.submit(save_campaigns, redis_url, site, [lingering]).result()
    tab = new_tab()
    page = tab.page
    page.goto(shop.page(server.url, site))
    welcomed(tab)
    assert tab.received_of("welcome")[0]["config"]["time_on_page"] == [2]
    page.get_by_role("dialog", name="Still deciding?").wait_for(state="visible", timeout=30_000)
    reported = tab.sent_of("signal", "time_on_page")
    assert len(reported) == 1 and reported[0]["seconds"] >= 2
    assert tab.sent_of("signal", "exit_intent") == tab.sent_of("signal", "hesitation") == []
    session = wait_session(r, site, tab, lambda s: s.get("offers_shown") == "1", "the report")
    assert int(session["last_time_on_page_s"]) >= 2


def test_an_armed_offer_shows_in_the_frame_its_scroll_depth_is_reached(
    new_tab: Callable[..., Tab], shop: StaticSite, server: ServerProcess, site: str, r: redis.Redis,
    redis_url: str,
) -> None:  # fmt: skip
    both = message_campaign("both", trigger={"exit_intent": ["top_edge"], "scroll_depth": 50})
    both["variants"][0]["offer"]["headline"] = "Leaving or reading, here is 10% off"
    with ThreadPoolExecutor(1) as pool:
        pool.submit(save_campaigns, redis_url, site, [both]).result()
    tab = new_tab()
    page = tab.page
    page.goto(shop.page(server.url, site, body=OWN_CONTAINER))
    welcomed(tab)
    armed = tab.wait(lambda: tab.received_of("arm"), "the armed campaign")[0]["offer"]
    assert armed["scroll_depth"] == 50 and armed["kinds"] == ["top_edge"]
    tab.wait(lambda: tab.in_shadow("return !!root"), "the pre-mounted host")
    page.evaluate(
        """() => {
        window.__t = {};
        window.addEventListener("scroll", () => {
            if (__t.scrolled) return;
            __t.scrolled = 1;
            setTimeout(() => { __t.nextTask = 1; }, 0);  // the page's next task
        }, true);
        const root = document.querySelector("exit-widget").shadowRoot;
        new MutationObserver(() => {
            if (__t.dom) return;
            __t.dom = 1;
            __t.sameTask = __t.nextTask === undefined;  // built before anything else could run
        }).observe(root, {childList: true});
    }"""
    )
    page.evaluate(SCROLL_TO, 60)
    timing = tab.wait(lambda: page.evaluate("__t.dom && __t"), "the armed offer drawn")
    assert timing["sameTask"] is True  # drawn while the scroll was handled, not on an answer
    page.get_by_role("dialog", name="Leaving or reading, here is 10% off").wait_for()
    # The claimed copy the server sends for the signal replaces it and is reported.
    tab.wait(lambda: tab.sent_of("offer_shown"), "offer_shown")
    assert tab.sent_of("offer_shown")[0]["offer"] == "both.a"
    assert page.get_by_role("dialog").count() == 1
    wait_session(r, site, tab, lambda s: s.get("offers_shown") == "1", "the report counted")
