"""Previewing unsaved edits in the campaign editor: the real widget renders the form's content in
a frame of the editor, with no script of the admin involved, and nothing is saved. In a real
Chromium (with a screenshot) and over plain HTTP for roles, CSRF and bad input."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytest
import redis
from playwright.sync_api import Frame, Page, expect

from widget_server.store.keys import Keys

from ..support import ServerProcess, add_site, discount_campaign, save_campaigns
from .test_admin import XSS, AdminClient, editor_fields, signed_in
from .test_browser import (
    PHONE,
    SCREENSHOTS,
    Watched,
    browser,  # noqa: F401 (fixture)
    field,
    make_account,
    new_page,  # noqa: F401 (fixture)
    preview_dialog,
    sign_in,
)

KEYS = Keys()
T = TypeVar("T")
NEW_HEADLINE = "Spring: 20% off everything today"


def spring_campaign(site: str, redis_url: str) -> None:
    """A saved campaign with two variants (headlines "10% off" and "Free shipping today")."""
    campaign = discount_campaign("spring", name="Spring sale")
    campaign["variants"].append(
        {"key": "b", "offer": {"kind": "discount", "headline": "Free shipping today"},
         "discount": {"type": "free_shipping", "code_strategy": "generated"}}
    )  # fmt: skip
    save_campaigns(redis_url, site, [campaign])


def off_loop(work: Callable[..., T], *args: Any) -> T:
    """Run set-up that uses ``asyncio.run`` on another thread: once the browser fixture has
    started, Playwright's event loop runs on this one."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(work, *args).result()


def shop_with_spring(redis_url: str) -> str:
    """A new site with the spring campaign."""

    def make() -> str:
        site = add_site(redis_url)
        spring_campaign(site, redis_url)
        return site

    return off_loop(make)


def saved_state(r: redis.Redis, site: str) -> tuple[str | None, int, int]:
    """The stored campaign, its history length and the audit log length: a preview changes none."""
    return (
        r.hget(KEYS.campaigns(site), "spring"),
        r.llen(KEYS.campaign_history(site, "spring")),
        r.llen(KEYS.admin_audit()),
    )


def edits_frame(page: Page) -> Frame:
    frame = page.frame(name="edit-preview")
    assert frame is not None
    return frame


def preview_changes(page: Page) -> Frame:
    """Click "Preview changes" and wait for the frame's new page to load."""
    with page.expect_response(
        lambda r: r.request.method == "POST" and r.url.endswith("/preview")
    ) as answer:
        page.get_by_role("button", name="Preview changes").click()
    assert answer.value.request.frame.name == "edit-preview"
    frame = edits_frame(page)
    frame.wait_for_load_state()
    return frame


def headline_in(frame: Frame, expected: str) -> dict[str, Any]:
    frame.wait_for_function(
        "(text) => { const h = document.querySelector('exit-widget');"
        " const d = h && h.shadowRoot && h.shadowRoot.querySelector('[role=dialog] h2');"
        " return d && d.textContent === text }",
        arg=expected,
    )
    return preview_dialog(frame)


# --- in the browser -------------------------------------------------------------------------------


@pytest.mark.browser
def test_preview_changes_shows_the_form_in_the_frame_and_saves_nothing(
    new_page: Callable[..., Watched],  # noqa: F811
    server: ServerProcess,
    redis_url: str,
    r: redis.Redis,
) -> None:
    site = shop_with_spring(redis_url)
    before = saved_state(r, site)
    page = new_page().page
    sign_in(page, server, make_account(redis_url, KEYS, "editor"))
    edit_url = f"{server.url}/admin/sites/{site}/campaigns/spring/edit"
    page.goto(edit_url)

    field(page, "variants.0.offer.headline").fill(NEW_HEADLINE)
    field(page, "variants.0.discount.amount").fill("20")
    frame = preview_changes(page)
    dialog = headline_in(frame, NEW_HEADLINE)
    assert dialog["modal"] == "true" and dialog["code"].startswith("SAVE-")
    offer = json.loads(frame.locator("#exw-preview").text_content() or "{}")
    assert offer["discount"] == {"type": "percent", "amount": 20.0}
    # The editor itself stayed where it was, with what was typed.
    assert page.url == edit_url
    assert field(page, "variants.0.offer.headline").input_value() == NEW_HEADLINE
    assert saved_state(r, site) == before

    # Another variant, at phone width: the frame narrows, the widget lays out for it.
    page.get_by_label("Variant to preview").select_option(label="Variant 2 (b)")
    page.get_by_role("radio", name="Phone").check()
    frame = preview_changes(page)
    assert headline_in(frame, "Free shipping today")["headline"] == "Free shipping today"
    assert frame.evaluate("() => document.body.className") == "preview mobile"
    assert frame.evaluate("() => window.innerWidth") <= PHONE["width"]

    # The variant's layout, a slide-in card: at phone width, a sheet at the frame's bottom.
    field(page, "variants.1.offer.layout").select_option("slide_in")
    frame = preview_changes(page)
    frame.get_by_role("complementary", name="Free shipping today").wait_for()
    assert json.loads(frame.locator("#exw-preview").text_content() or "{}")["layout"] == "slide_in"
    top, bottom, height = frame.evaluate(
        "() => { const r = document.querySelector('exit-widget').shadowRoot"
        ".querySelector('.d').getBoundingClientRect(); return [r.top, r.bottom, innerHeight] }"
    )
    assert abs(bottom - height) < 1 and top >= 0.4 * height

    # The saved campaign is unchanged: its overview previews the saved headline.
    page.goto(f"{server.url}/admin/sites/{site}/campaigns/spring")
    handle = page.wait_for_selector("#preview-frame")
    assert handle is not None and handle.content_frame() is not None
    assert preview_dialog(handle.content_frame())["headline"] == "10% off"  # type: ignore[arg-type]
    assert saved_state(r, site) == before

    # An invalid edit: the frame lists the error in words instead of an overlay.
    page.goto(edit_url)
    field(page, "variants.0.offer.headline").fill(NEW_HEADLINE)
    field(page, "variants.0.offer.cta_url").fill("javascript:alert(1)")
    frame = preview_changes(page)
    errors = frame.locator("#preview-errors")
    assert "Variant 1: Button link" in errors.inner_text()
    assert "http(s) URL" in errors.inner_text()
    assert frame.locator("exit-widget").count() == 0
    assert page.locator('[id="err-variants.0.offer.cta_url"]').count() == 0  # not a save
    assert saved_state(r, site) == before


@pytest.mark.browser
def test_the_preview_follows_the_form_as_it_is_typed_without_a_reload(
    new_page: Callable[..., Watched],  # noqa: F811
    server: ServerProcess,
    redis_url: str,
    r: redis.Redis,
) -> None:
    """No "Preview changes" press: typing, a new variant and the screen choice each repaint the
    frame beside the form, and the editor page itself never reloads."""
    site = shop_with_spring(redis_url)
    before = saved_state(r, site)
    page = new_page().page
    page.set_viewport_size({"width": 1400, "height": 900})
    sign_in(page, server, make_account(redis_url, KEYS, "editor"))
    page.goto(f"{server.url}/admin/sites/{site}/campaigns/spring/edit")
    page.evaluate("() => (window.editorLoaded = 1)")  # gone if the editor reloads
    assert headline_in(edits_frame(page), "10% off")["headline"] == "10% off"

    # Beside the form, not below it.
    form_box = page.locator("#campaign-form").bounding_box()
    preview_box = page.locator("#edit-preview-frame").bounding_box()
    assert form_box is not None and preview_box is not None
    assert preview_box["x"] >= form_box["x"] + form_box["width"]

    headline = field(page, "variants.0.offer.headline")
    headline.fill("")
    headline.press_sequentially("Typed, not saved")
    headline_in(edits_frame(page), "Typed, not saved")

    # A variant added on the page, never saved: chosen in the preview as soon as it is edited.
    page.get_by_role("button", name="Add a variant").click()
    new_headline = field(page, "variants.2.offer.headline")
    new_headline.fill("A third variant")
    assert page.locator("#preview-variant option:checked").inner_text() == "Variant 3 (v3)"
    headline_in(edits_frame(page), "A third variant")

    page.get_by_role("radio", name="Phone").check()
    frame = edits_frame(page)
    frame.wait_for_function("() => document.body.className === 'preview mobile'")
    assert headline_in(frame, "A third variant")["headline"] == "A third variant"
    assert frame.evaluate("() => window.innerWidth") <= PHONE["width"]

    # Back to the first variant by focusing it.
    headline.focus()
    headline_in(edits_frame(page), "Typed, not saved")
    assert page.evaluate("() => window.editorLoaded") == 1
    page.locator("#f-variants").evaluate("(e) => e.scrollIntoView({block: 'start'})")
    page.screenshot(path=str(SCREENSHOTS / "admin-editor-live.png"))
    assert saved_state(r, site) == before


@pytest.mark.browser
def test_editor_sections_fold_and_a_section_with_a_problem_stays_open(
    new_page: Callable[..., Watched],  # noqa: F811
    server: ServerProcess,
    redis_url: str,
) -> None:
    site = shop_with_spring(redis_url)
    page = new_page().page
    sign_in(page, server, make_account(redis_url, KEYS, "editor"))
    page.goto(f"{server.url}/admin/sites/{site}/campaigns/spring/edit")
    caps = page.get_by_role("button", name="Frequency caps", exact=True)
    assert caps.get_attribute("aria-expanded") == "false"
    assert not field(page, "caps.per_session").is_visible()
    caps.click()
    assert caps.get_attribute("aria-expanded") == "true"
    field(page, "caps.per_session").fill("-3")
    page.get_by_role("button", name="Save a new version").click()
    # After the refused save the section with the problem is open, its error beside the field.
    assert (
        page.get_by_role("button", name="Frequency caps", exact=True).get_attribute("aria-expanded")
        == "true"
    )
    expect(page.locator('[id="err-caps.per_session"]')).to_be_visible()
    assert (
        page.get_by_role("button", name="Schedule", exact=True).get_attribute("aria-expanded")
        == "false"
    )


# --- over HTTP ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def editor(server: ServerProcess, redis_url: str) -> Iterator[AdminClient]:
    client = off_loop(signed_in, server, redis_url, "editor")
    yield client
    client.close()


def offer_of(html: str) -> dict[str, Any]:
    found = re.search(
        r'<script type="application/json" id="exw-preview">(.*?)</script>', html, re.S
    )
    assert found is not None, "no offer on the preview page"
    return dict(json.loads(found.group(1)))


def test_viewers_cannot_preview_edits_and_posts_need_the_csrf_token(
    server: ServerProcess, redis_url: str, r: redis.Redis, editor: AdminClient
) -> None:
    site = shop_with_spring(redis_url)
    before = saved_state(r, site)
    path = f"/admin/sites/{site}/campaigns/spring/preview"
    fields = editor_fields(editor, site, "spring")
    fields["variants.0.offer.headline"] = [NEW_HEADLINE]

    viewer = off_loop(signed_in, server, redis_url, "viewer")
    try:
        assert viewer.get(path).status_code == 200  # the saved version's preview stays open
        assert viewer.post(path, fields).status_code == 403
    finally:
        viewer.close()
    assert editor.http.post(path, data=fields).status_code == 403  # no CSRF token
    assert editor.post(path, fields, headers={"Origin": "https://evil.test"}).status_code == 403
    page = editor.post(path, fields)
    assert page.status_code == 200 and offer_of(page.text)["headline"] == NEW_HEADLINE
    assert "frame-ancestors 'self'" in page.headers["content-security-policy"]
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert saved_state(r, site) == before


def test_previewing_edits_validates_like_saving_and_takes_any_input(
    server: ServerProcess, redis_url: str, r: redis.Redis, editor: AdminClient
) -> None:
    site = shop_with_spring(redis_url)
    before = saved_state(r, site)
    base = f"/admin/sites/{site}/campaigns"
    fields = editor_fields(editor, site, "spring")

    # The variant and width chosen; out-of-range or odd choices fall back to the first/desktop.
    chosen = editor.post(base + "/spring/preview",
                         {**fields, "preview_variant": "1", "preview_width": "mobile"})  # fmt: skip
    assert offer_of(chosen.text)["headline"] == "Free shipping today"
    assert '<body class="preview mobile">' in chosen.text
    for variant, width in (
        ("7", "tablet"),
        ("-1", ""),
        ("x", "<b>"),
        ("99999999999999", "m"),
        ("²", "mobile "),
        ("٣", "MOBILE"),
    ):
        odd_fields = {**fields, "preview_variant": variant, "preview_width": width}
        odd = editor.post(base + "/spring/preview", odd_fields)
        assert odd.status_code == 200 and offer_of(odd.text)["id"] == "spring.a", variant
        assert '<body class="preview desktop">' in odd.text

    # The same validation as saving: every error listed, no overlay, nothing stored.
    bad = {**fields, "variants.0.offer.headline": "", "priority": "5000",
           "variants.1.discount.type": "bogus"}  # fmt: skip
    refused = editor.post(base + "/spring/preview", bad)
    assert refused.status_code == 422
    assert "Variant 1: Headline" in refused.text and "Priority" in refused.text
    assert "Variant 2: Discount type" in refused.text
    assert "exw-preview" not in refused.text and "widget.js" not in refused.text
    assert "frame-ancestors 'self'" in refused.headers["content-security-policy"]
    saved = editor.post(base + "/spring/edit", {**bad, "action": "save"})
    assert saved.status_code == 422 and "Variant 1: Headline" in saved.text  # the same errors

    # Hostile text is data inside the frame, never markup.
    hostile = {**fields, "variants.0.offer.headline": XSS[0], "variants.0.offer.body": XSS[1]}
    page = editor.post(base + "/spring/preview", hostile)
    assert "<script>alert(1)</script>" not in page.text and "<img src=x" not in page.text
    assert offer_of(page.text)["headline"] == XSS[0]

    # The id of a stored campaign cannot be changed by a posted field.
    renamed = editor.post(base + "/spring/preview", {**fields, "id": "other"})
    assert offer_of(renamed.text)["id"] == "spring.a"
    # A new campaign's form previews too; its id is checked like on creation.
    blank = editor_fields(editor, site)
    draft = {**blank, "id": "fresh", "name": "Fresh", "variants.0.offer.headline": "Hello"}
    fresh = editor.post(base + "/new/preview", draft)
    assert fresh.status_code == 200 and offer_of(fresh.text)["id"] == "fresh.a"
    no_id = editor.post(base + "/new/preview", {**draft, "id": ""})
    assert no_id.status_code == 422 and "Campaign id" in no_id.text
    assert r.hget(KEYS.campaigns(site), "fresh") is None

    # Unknown campaigns, oversized and junk forms.
    assert editor.post(base + "/nope/preview", fields).status_code == 404
    assert editor.post("/admin/sites/nosuch/campaigns/spring/preview", fields).status_code == 404
    huge = editor.post(base + "/spring/preview", {**fields, "name": "x" * 300_000})
    assert huge.status_code == 413
    junk = editor.post(base + "/spring/preview", {"variants.0.offer.headline": "Only this",
                                                 "nonsense.field": "1"})  # fmt: skip
    assert junk.status_code == 422 and "Name" in junk.text
    assert saved_state(r, site) == before
