"""The admin in a real Chromium: a marketer's whole journey (with screenshots),
the live preview in its frame, JavaScript enhancements, XSS payloads, roles and small screens."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis
from playwright.sync_api import Browser, BrowserContext, Frame, Page, expect, sync_playwright
from redis.asyncio import Redis

from widget_server.admin.accounts import AccountStore, Role
from widget_server.store.keys import Keys

from ..support import SCREENSHOTS, ServerProcess
from .test_admin import PASSWORD, XSS

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]  # fmt: skip
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 375, "height": 740}


@pytest.fixture(scope="module")
def prefix() -> str:
    """A key prefix of its own, so these pages show only what these tests made."""
    return "adm" + secrets.token_hex(3)


@pytest.fixture(scope="module")
def admin_server(
    redis_url: str, prefix: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    process = ServerProcess(
        redis_url, tmp_path_factory.mktemp("admin"), WIDGET_REDIS_PREFIX=prefix
    ).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def keys(prefix: str) -> Keys:
    return Keys(prefix)


@pytest.fixture
def rk(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


def make_account(redis_url: str, keys: Keys, role: Role, email: str | None = None) -> str:
    email = email or f"{role}-{secrets.token_hex(3)}@myshop.example"

    async def create() -> None:
        client = Redis.from_url(redis_url)
        try:
            await AccountStore(client, keys).create(email, PASSWORD, role)
        finally:
            await client.aclose()

    with ThreadPoolExecutor(1) as pool:  # Playwright's event loop runs on this thread
        pool.submit(asyncio.run, create()).result()
    return email


class Watched:
    """A page with everything that must never happen recorded: dialogs, errors, CSP reports."""

    def __init__(self, context: BrowserContext) -> None:
        self.page = context.new_page()
        self.dialogs: list[str] = []
        self.errors: list[str] = []

        def on_dialog(dialog: Any) -> None:
            self.dialogs.append(dialog.message)
            dialog.dismiss()

        self.page.on("dialog", on_dialog)
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on(
            "console",
            lambda message: message.type == "error" and self.errors.append(message.text),
        )

    def check(self) -> None:
        assert self.dialogs == [], "a dialog opened"
        # Chromium logs every 4xx answer (a form with errors is a 422); anything else, such as a
        # CSP violation, is a failure.
        errors = [e for e in self.errors if not e.startswith("Failed to load resource")]
        assert errors == [], "the page logged errors"


@pytest.fixture
def new_page(browser: Browser) -> Iterator[Callable[..., Watched]]:
    contexts: list[BrowserContext] = []
    pages: list[Watched] = []

    def make(viewport: dict[str, int] = DESKTOP) -> Watched:
        context = browser.new_context(viewport=viewport)  # type: ignore[arg-type]
        context.grant_permissions(["clipboard-read", "clipboard-write"])
        contexts.append(context)
        pages.append(Watched(context))
        return pages[-1]

    yield make
    try:
        for watched in pages:
            watched.check()
    finally:
        for context in contexts:
            context.close()


@contextlib.contextmanager
def signed_in_page(server: ServerProcess, email: str) -> Iterator[tuple[Page, Watched]]:
    """A desktop Chromium page signed in as ``email`` and its watcher (checked at the end of a
    test that did not fail)."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport=DESKTOP)  # type: ignore[arg-type]
            watched = Watched(context)
            sign_in(watched.page, server, email)
            yield watched.page, watched
            watched.check()
        finally:
            browser.close()


def sign_in(page: Page, server: ServerProcess, email: str) -> None:
    page.goto(f"{server.url}/admin/sites")
    assert "/admin/login" in page.url
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_label("Password").press("Enter")
    page.wait_for_url(f"{server.url}/admin/sites")


def shot(page: Page, name: str, *, full_page: bool = False) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"admin-{name}.png"), full_page=full_page)


def preview_frame(page: Page) -> Frame:
    handle = page.wait_for_selector("#preview-frame")
    assert handle is not None
    frame = handle.content_frame()
    assert frame is not None
    return frame


def preview_dialog(frame: Frame) -> dict[str, Any]:
    """The overlay the widget rendered inside the preview frame, read from its shadow root."""
    frame.wait_for_function(
        "() => { const h = document.querySelector('exit-widget');"
        " return h && h.shadowRoot && h.shadowRoot.querySelector('[role=dialog]') }"
    )
    result: dict[str, Any] = frame.evaluate(
        "() => { const d = document.querySelector('exit-widget').shadowRoot"
        ".querySelector('[role=dialog]'); const code = d.querySelector('input');"
        " return {headline: d.querySelector('h2').textContent,"
        " text: d.textContent, code: code ? code.value : null,"
        " images: d.querySelectorAll('img').length, modal: d.getAttribute('aria-modal')} }"
    )
    return result


def field(page: Page, name: str) -> Any:
    return page.locator(f'[name="{name}"]')


# --- the journey ----------------------------------------------------------------------------------


def test_a_marketer_sets_up_a_site_and_a_campaign(
    new_page: Callable[..., Watched],
    admin_server: ServerProcess,
    redis_url: str,
    keys: Keys,
    rk: redis.Redis,
) -> None:
    email = make_account(redis_url, keys, "owner", "ada@myshop.example")
    watched = new_page()
    page = watched.page
    page.goto(f"{admin_server.url}/admin/login")
    shot(page, "login")
    sign_in(page, admin_server, email)

    # An empty admin says what to do next.
    expect(page.get_by_role("heading", name="No sites yet")).to_be_visible()
    page.get_by_role("link", name="Add your first site").click()
    page.get_by_label("Key").fill("myshop")
    page.get_by_label("Name").fill("My Shop")
    page.get_by_label("Allowed origins, one per line").fill("https://www.myshop.com\nmyshop.com")
    page.get_by_label("Time zone").fill("Europe/Berlin")
    page.get_by_role("button", name="Add the site").click()
    expect(page.locator('[id="err-origins"]')).to_be_visible()  # an origin needs its scheme
    assert page.get_by_label("Name").input_value() == "My Shop"
    page.get_by_label("Allowed origins, one per line").fill("https://www.myshop.com")
    page.get_by_role("button", name="Add the site").click()
    page.wait_for_url(f"{admin_server.url}/admin/sites/myshop?notice=created")
    rk.set(keys.site_seen("myshop"), str(time.time() - 120))
    page.reload()
    assert "connected from this site 2 minutes ago" in page.locator("#install-check").inner_text()
    shot(page, "site", full_page=True)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Sites").click()
    shot(page, "sites")
    page.go_back()
    page.locator('button[data-copy="snippet-html"]').click()
    page.wait_for_function("() => document.querySelector('[data-copy=snippet-html]')"
                           ".textContent === 'Copied'")  # fmt: skip
    copied = page.evaluate("() => navigator.clipboard.readText()")
    assert copied == (
        f'<script async src="{admin_server.url}/widget.js" data-site="myshop"></script>'
    )

    # A campaign with a mistake: the error sits next to the field, what was typed stays.
    page.get_by_role("navigation", name="Site").get_by_role("link", name="Campaigns").click()
    page.get_by_role("link", name="Start from a blank campaign").click()
    field(page, "id").fill("cart-saver")
    field(page, "name").fill("Cart saver")
    field(page, "variants.0.offer.headline").fill("Wait! 10% off your cart")
    field(page, "variants.0.offer.body").fill("Your code is reserved for 30 minutes.")
    field(page, "variants.0.offer.cta_label").fill("Back to my cart")
    field(page, "variants.0.offer.cta_url").fill("javascript:alert(1)")
    page.get_by_role("button", name="Create the campaign").click()
    error = page.locator('[id="err-variants.0.offer.cta_url"]')
    assert "http(s) URL" in error.inner_text()
    described = field(page, "variants.0.offer.cta_url").get_attribute("aria-describedby") or ""
    assert "err-variants.0.offer.cta_url" in described
    assert field(page, "variants.0.offer.cta_url").get_attribute("aria-invalid") == "true"
    assert field(page, "name").input_value() == "Cart saver"
    assert field(page, "variants.0.offer.body").input_value().startswith("Your code is reserved")
    assert page.evaluate("() => document.activeElement.id") == "error-summary"
    error.scroll_into_view_if_needed()
    page.mouse.wheel(0, 120)
    shot(page, "campaign-editor-error")

    # Fix it; add targeting (the first group through the server, the next row in place).
    field(page, "variants.0.offer.cta_url").fill("/cart")
    page.get_by_role("button", name="Add a group (or)").click()
    field(page, "targeting.any.0.all.0.field").select_option("page_type")
    field(page, "targeting.any.0.all.0.op").select_option("not_in")
    field(page, "targeting.any.0.all.0.value").fill("thank_you, payment")
    url_before = page.url
    page.get_by_role("button", name="Add a condition to group 1 (and)").click()
    row = field(page, "targeting.any.0.all.1.field")
    expect(row).to_be_visible()
    assert page.url == url_before
    assert page.evaluate("() => document.activeElement.name") == "targeting.any.0.all.1.field"
    page.get_by_role("button", name="Add a condition to group 1 (and)").click()
    page.get_by_role("button", name="Remove condition 3 of group 1").click()
    assert field(page, "targeting.any.0.all.2.field").count() == 0 and page.url == url_before
    row.select_option("utm_source")
    field(page, "targeting.any.0.all.1.op").select_option("is_not")
    field(page, "targeting.any.0.all.1.value").fill("newsletter")
    page.get_by_role("button", name="Add a variant").click()
    field(page, "variants.1.offer.headline").fill("Free shipping if you order now")
    field(page, "variants.1.discount.type").select_option("free_shipping")
    page.get_by_role("button", name="Create the campaign").click()
    page.wait_for_url(f"{admin_server.url}/admin/sites/myshop/campaigns/cart-saver?notice=saved")

    # The preview: the real widget renders the real offer object inside the frame.
    dialog = preview_dialog(preview_frame(page))
    # The preview does not take the keyboard focus away from the admin page.
    assert page.evaluate("() => document.activeElement.tagName") != "IFRAME"
    assert dialog["headline"] == "Wait! 10% off your cart" and dialog["modal"] == "true"
    assert dialog["code"] and dialog["code"].startswith("SAVE-")
    page.locator("section[aria-labelledby=preview-h]").screenshot(
        path=str(SCREENSHOTS / "admin-preview.png")
    )
    page.get_by_role("link", name="Variant v2").click()
    assert preview_dialog(preview_frame(page))["headline"] == "Free shipping if you order now"
    page.get_by_role("link", name="Mobile").click()
    expect(page.locator("iframe.preview-mobile")).to_be_visible()
    assert preview_dialog(preview_frame(page))["headline"] == "Free shipping if you order now"

    # Activate it; today's numbers show up in the list.
    page.get_by_role("button", name="Activate").click()
    assert page.locator("h1 .badge").inner_text() == "active"
    day = datetime.now(ZoneInfo("UTC")).strftime("%Y%m%d")
    rk.hset(keys.campaign_stats("myshop", "cart-saver", day), mapping={
        "exposures:a": 412, "exposures:v2": 398, "impressions:a": 377, "impressions:v2": 365,
        "conversions:a": 31, "conversions:v2": 22,
    })  # fmt: skip
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Campaigns").click()
    expect(page.locator("table.campaigns").get_by_text("810")).to_be_visible()
    shot(page, "campaigns")

    # A second version, then the history shows what changed.
    page.get_by_role("link", name="Cart saver").click()
    page.get_by_role("navigation", name="Campaign").get_by_role("link", name="Edit").click()
    field(page, "variants.0.offer.headline").fill("Wait! 15% off your cart")
    field(page, "variants.0.discount.amount").fill("15")
    page.get_by_role("button", name="Save a new version").click()
    page.get_by_role("navigation", name="Campaign").get_by_role("link", name="History").click()
    latest = page.locator("#v3")
    assert "variants.0.offer.headline" in latest.inner_text()
    assert "Wait! 15% off your cart" in latest.inner_text()
    expect(page.get_by_role("button", name="Restore version 2")).to_be_visible()
    shot(page, "history", full_page=True)


def test_xss_payloads_render_as_text_everywhere(
    new_page: Callable[..., Watched], admin_server: ServerProcess, redis_url: str, keys: Keys
) -> None:
    page = new_page().page
    sign_in(page, admin_server, make_account(redis_url, keys, "owner"))
    key = "x" + secrets.token_hex(3)
    page.goto(f"{admin_server.url}/admin/sites/new")
    page.get_by_label("Key").fill(key)
    page.get_by_label("Name").fill(XSS[0])
    page.get_by_label("Allowed origins, one per line").fill(XSS[1])
    page.get_by_label("Currency").fill(XSS[0])
    page.get_by_role("button", name="Add the site").click()
    assert page.get_by_label("Allowed origins, one per line").input_value() == XSS[1]
    page.get_by_label("Allowed origins, one per line").fill("https://shop.test")
    page.get_by_label("Currency").fill("EUR")
    page.get_by_role("button", name="Add the site").click()

    page.goto(f"{admin_server.url}/admin/sites/{key}/campaigns/new")
    texts = {
        "id": "xss", "name": XSS[0], "variants.0.offer.headline": XSS[0],
        "variants.0.offer.body": XSS[1], "variants.0.offer.cta_label": XSS[1],
        "variants.0.discount.static_code": XSS[1], "variants.0.discount.code_format":
        XSS[1] + "{XXXX}", "schedule.timezone": XSS[0],
    }  # fmt: skip
    page.get_by_role("button", name="Schedule", exact=True).click()  # a folded section
    for name, value in texts.items():
        field(page, name).fill(value)
    field(page, "variants.0.discount.code_strategy").select_option("static")
    page.get_by_role("button", name="Add a group (or)").click()
    field(page, "targeting.any.0.all.0.field").select_option("utm_source")
    field(page, "targeting.any.0.all.0.value").fill(XSS[0])
    page.get_by_role("button", name="Create the campaign").click()
    assert "unknown time zone" in page.locator('[id="err-schedule.timezone"]').inner_text()
    assert field(page, "schedule.timezone").input_value() == XSS[0]
    field(page, "schedule.timezone").fill("UTC")
    page.get_by_role("button", name="Create the campaign").click()
    page.wait_for_url("**/campaigns/xss?notice=saved")

    dialog = preview_dialog(preview_frame(page))
    assert dialog["headline"] == XSS[0] and XSS[1] in dialog["text"]
    assert dialog["code"] == XSS[1] and dialog["images"] == 0
    base = f"{admin_server.url}/admin"
    for path in ("/sites", f"/sites/{key}", f"/sites/{key}/campaigns", "/campaigns",
                 f"/sites/{key}/campaigns/xss/edit", f"/sites/{key}/campaigns/xss/history",
                 "/audit"):  # fmt: skip
        page.goto(base + path)
        assert XSS[0] in (page.locator("main").text_content() or ""), path
        injected = page.evaluate(
            "() => document.querySelectorAll('img[src=x], main script').length"
        )
        assert injected == 0, path


def test_viewers_get_no_controls_and_pages_fit_a_phone(
    new_page: Callable[..., Watched],
    admin_server: ServerProcess,
    redis_url: str,
    keys: Keys,
) -> None:
    owner = new_page(PHONE).page
    sign_in(owner, admin_server, make_account(redis_url, keys, "owner"))
    key = "p" + secrets.token_hex(3)
    owner.goto(f"{admin_server.url}/admin/sites/new")
    owner.get_by_label("Key").fill(key)
    owner.get_by_label("Allowed origins, one per line").fill("https://shop.test")
    owner.get_by_role("button", name="Add the site").click()
    owner.goto(f"{admin_server.url}/admin/sites/{key}/campaigns/new")
    field(owner, "id").fill("phone")
    field(owner, "name").fill("Phone campaign")
    field(owner, "variants.0.offer.headline").fill("Hello from a phone")
    owner.get_by_role("button", name="Create the campaign").click()
    owner.wait_for_url("**/campaigns/phone?notice=saved")

    viewer = new_page(PHONE).page
    sign_in(viewer, admin_server, make_account(redis_url, keys, "viewer"))
    base = f"{admin_server.url}/admin/sites/{key}"
    pages = {"/admin/sites": owner, f"/admin/sites/{key}": owner,
             f"/admin/sites/{key}/campaigns/new": owner,
             f"/admin/sites/{key}/campaigns/phone": owner, "/admin/audit": viewer,
             f"/admin/sites/{key}/campaigns": viewer}  # fmt: skip
    for path, page in pages.items():
        page.goto(admin_server.url + path)
        width = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= PHONE["width"], (path, width)
    for path in ("", "/campaigns", "/campaigns/phone", "/campaigns/phone/history"):
        viewer.goto(base + path)
        assert viewer.locator("main form").count() == 0, path
        for name in ("Edit", "Activate", "Duplicate", "Archive", "New campaign", "Edit site"):
            assert viewer.get_by_role("button", name=name).count() == 0, (path, name)
            assert viewer.get_by_role("link", name=name, exact=True).count() == 0, (path, name)
    assert viewer.get_by_role("link", name="Accounts").count() == 0
    # Keyboard: the skip link comes first and leads to the content.
    viewer.keyboard.press("Tab")
    assert viewer.evaluate("() => document.activeElement.textContent") == "Skip to the content"
    # The preview on a phone-sized admin.
    owner.goto(base + "/campaigns/phone?width=mobile")
    assert preview_dialog(preview_frame(owner))["headline"] == "Hello from a phone"


def test_signing_out_ends_the_session_in_the_browser(
    new_page: Callable[..., Watched], admin_server: ServerProcess, redis_url: str, keys: Keys
) -> None:
    page = new_page().page
    sign_in(page, admin_server, make_account(redis_url, keys, "editor"))
    page.get_by_role("button", name="Sign out").click()
    assert "You are signed out." in page.locator("main").inner_text()
    page.goto(f"{admin_server.url}/admin/campaigns")
    assert "/admin/login" in page.url
