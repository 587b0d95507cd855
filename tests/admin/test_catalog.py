"""The catalog page of the admin over real HTTP (and once in a real Chromium): uploading a product
feed, the per-row error report, roles, CSRF, and files that must change nothing."""

from __future__ import annotations

import gzip
import json
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from playwright.sync_api import Page, sync_playwright

from widget_server.admin.web import MAX_UPLOAD_BYTES
from widget_server.store.keys import Keys

from ..support import ROOT, ServerProcess
from .test_admin import AdminClient, make_user, new_site_key, signed_in
from .test_browser import CHROMIUM, CHROMIUM_ARGS, DESKTOP, PHONE, SCREENSHOTS, sign_in

KEYS = Keys()
TSV = "text/tab-separated-values"
GOOD = (
    b"id\ttitle\tprice\tbrand\nP1\tTrail runner\t59.90 EUR\tAcme\nP2\tRain jacket\t89 EUR\tAcme\n"
)
RSS = b"""<?xml version="1.0"?>
<rss version="2.0" xmlns:g="http://base.google.com/ns/1.0"><channel>
<item><g:id>X1</g:id><title>Wool socks</title><g:price>9.90 EUR</g:price></item>
<item><g:id>X2</g:id><title>Beanie</title><g:price>19.90 EUR</g:price></item>
"""


@pytest.fixture(scope="module")
def owner(server: ServerProcess, redis_url: str) -> Iterator[AdminClient]:
    client = AdminClient(server)
    assert client.login(make_user(redis_url, "owner")).status_code == 303
    yield client
    client.close()


def page_of(site: str) -> str:
    return f"/admin/sites/{site}/catalog"


def upload(
    client: AdminClient, site: str, data: bytes, *, name: str = "feed.tsv", **fields: str
) -> httpx.Response:
    return client.post(page_of(site), fields, files={"feed": (name, data, TSV)})


def shown(html: str, element_id: str) -> str:
    """The text of the element with this id (the figures on the page)."""
    match = re.search(rf'id="{element_id}"[^>]*>(.*?)<', html, re.S)
    assert match, f"no #{element_id} on the page"
    return match.group(1).strip()


def error_rows(html: str) -> list[tuple[str, str, str, str]]:
    """(line, product id, field, problem) of every row of the error table, as text."""
    body = re.search(r'<table class="row-errors".*?<tbody>(.*?)</tbody>', html, re.S)
    if body is None:
        return []
    rows = []
    for row in re.findall(r"<tr>(.*?)</tr>", body.group(1), re.S):
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        rows.append(tuple(re.sub(r"<[^>]+>", "", cell).strip() for cell in cells))
    return rows  # type: ignore[return-value]


def audit_entries(r: redis.Redis, site: str) -> list[dict[str, Any]]:
    entries = [json.loads(e) for e in r.lrange(KEYS.admin_audit(), 0, 200)]
    return [e for e in entries if e["action"] == "catalog.import" and e["site"] == site]


# --- uploading ------------------------------------------------------------------------------------


def test_an_upload_imports_the_feed_and_the_page_shows_what_changed(
    owner: AdminClient, r: redis.Redis
) -> None:
    site = new_site_key(owner)
    empty = owner.get(page_of(site))
    assert empty.status_code == 200
    assert shown(empty.text, "catalog-count") == "0"
    assert "No product feed yet" in empty.text and "RSS 2.0 or Atom" in empty.text
    assert "No feed import recorded yet." in empty.text

    first = upload(owner, site, GOOD)
    assert first.status_code == 200
    assert shown(first.text, "catalog-count") == "2"
    assert [shown(first.text, f"result-{n}") for n in ("rows", "added", "updated", "unchanged",
            "errors")] == ["2", "2", "0", "0", "0"]  # fmt: skip
    assert "Read as TSV/CSV (tab- or comma-separated): 2 rows, all imported." in (
        " ".join(first.text.split())
    )
    assert "No product feed yet" not in first.text and error_rows(first.text) == []
    stored = json.loads(r.hget(KEYS.catalog(site), "P1") or "{}")
    assert stored["title"] == "Trail runner" and stored["price"] == 59.9

    changed = GOOD.replace(b"89 EUR", b"79 EUR") + b"P3\tGloves\t19 EUR\tAcme\n"
    second = upload(owner, site, changed)
    assert [shown(second.text, f"result-{n}") for n in ("rows", "added", "updated", "unchanged")
            ] == ["3", "1", "1", "1"]  # fmt: skip
    assert shown(second.text, "catalog-count") == "3"
    # The latest import is remembered for the next visit, with who uploaded it.
    later = owner.get(page_of(site)).text
    assert "uploaded in the admin by owner-" in shown(later, "last-import")
    assert "3 rows read, 1 added, 1 updated, 1 unchanged" in " ".join(later.split())

    entries = audit_entries(r, site)
    assert len(entries) == 2 and entries[0]["actor"].startswith("owner-")
    assert entries[0]["before"] == {"products": 2}
    assert entries[0]["after"]["products"] == 3 and entries[0]["after"]["updated"] == 1
    assert entries[1]["before"] == {"products": 0} and entries[1]["after"]["added"] == 2
    assert "catalog.import" in owner.get("/admin/audit").text


def test_an_import_from_the_command_line_shows_as_the_latest(
    owner: AdminClient, redis_url: str, tmp_path: Path
) -> None:
    site = new_site_key(owner)
    feed = tmp_path / "shop-feed.tsv"
    feed.write_bytes(GOOD + b"P3\tGloves\tfree\tAcme\n")
    env = dict(os.environ, REDIS_URL=redis_url)
    done = subprocess.run(
        [sys.executable, "-m", "widget_server.cli", "catalog", "import", str(feed), "--site", site],
        env=env, capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr  # some rows had errors
    assert "line 4: price: 'free' is not a price" in done.stdout
    page = owner.get(page_of(site)).text
    assert shown(page, "catalog-count") == "2"
    latest = " ".join(shown(page, "last-import").split())
    assert "command line (shop-feed.tsv): 3 rows read, 2 added" in latest
    assert "1 row with errors" in latest


def test_xml_feeds_are_read_too(owner: AdminClient, r: redis.Redis) -> None:
    site = new_site_key(owner)
    response = upload(owner, site, RSS + b"</channel></rss>", name="feed.xml")
    assert response.status_code == 200
    assert "Read as XML (RSS 2.0 or Atom)" in response.text
    assert shown(response.text, "result-added") == "2"
    assert r.hlen(KEYS.catalog(site)) == 2


def test_rows_with_errors_are_listed_by_line_field_and_problem(
    owner: AdminClient, r: redis.Redis
) -> None:
    site = new_site_key(owner)
    feed = (
        b"id,title,price,link\n"
        b"OK1,Good shoe,59.90 EUR,https://shop.test/ok1\n"
        b'BAD1,"=HYPERLINK(""https://evil.test"",""click"")",=1+1,https://shop.test/b\n'
        b"BAD2,,10 EUR,\n"
        b"<script>alert(1)</script>,<b>Bold</b>,5 EUR,javascript:alert(1)\n"
        b"OK1,Same id again,12 EUR,\n"
        b"OK2,<img src=x onerror=alert(1)>,7 EUR,\n"
    )
    response = upload(owner, site, feed, name="feed.csv")
    assert response.status_code == 200
    assert [shown(response.text, f"result-{n}") for n in ("rows", "added", "errors")] == [
        "6", "2", "4"
    ]  # fmt: skip
    assert "4 rows were skipped (listed below)" in " ".join(response.text.split())
    assert error_rows(response.text) == [
        ("3", "BAD1", "price", "&#39;=1+1&#39; is not a price."),
        ("4", "BAD2", "title", "Is missing."),
        ("5", "&lt;script&gt;alert(1)&lt;/script&gt;", "link", "Must be an http(s) URL or a path."),
        ("6", "OK1", "id", "Repeats the id of line 2."),
    ]
    # Markup from the file is shown as text, never as markup.
    assert "<script>alert(1)" not in response.text and "<img src=x" not in response.text
    assert set(r.hkeys(KEYS.catalog(site))) == {"OK1", "OK2"}
    # A title with markup is kept as plain text; the widget shows it as text.
    assert json.loads(r.hget(KEYS.catalog(site), "OK2") or "{}")["title"] == (
        "<img src=x onerror=alert(1)>"
    )
    assert audit_entries(r, site)[0]["after"]["errors"] == 4


def test_the_error_table_is_capped_and_counts_the_rest(owner: AdminClient, r: redis.Redis) -> None:
    site = new_site_key(owner)
    feed = b"id\ttitle\tprice\n" + b"".join(b"E%d\tNo price\tfree\n" % n for n in range(150))
    response = upload(owner, site, feed + b"FINE\tFine\t1\n")
    assert shown(response.text, "result-errors") == "150"
    rows = error_rows(response.text)
    assert len(rows) == 100 and rows[0][0] == "2" and rows[-1][0] == "101"
    assert "… and 50 more rows with errors, not listed." in response.text
    assert r.hkeys(KEYS.catalog(site)) == ["FINE"]


def test_a_file_in_another_encoding_gets_a_hint(owner: AdminClient, r: redis.Redis) -> None:
    site = new_site_key(owner)
    latin1 = "id\ttitle\tprice\nL1\tChaussure été\t5\nL2\tPlain\t6\n"
    response = upload(owner, site, latin1.encode("latin-1"))
    assert error_rows(response.text) == [("2", "L1", "title", "Is not valid UTF-8 text.")]
    assert "Save the feed as UTF-8" in response.text
    assert r.hkeys(KEYS.catalog(site)) == ["L2"]


def test_removing_products_missing_from_the_feed(owner: AdminClient, r: redis.Redis) -> None:
    site = new_site_key(owner)
    upload(owner, site, GOOD + b"P3\tGloves\t19 EUR\tAcme\n")
    # P2 is gone from the file; P3's row is broken, so P3 stays.
    pruned = upload(owner, site, GOOD.replace(b"P2\t", b"P4\t") + b"P3\tGloves\tfree\tAcme\n",
                    remove_missing="yes")  # fmt: skip
    assert shown(pruned.text, "result-removed") == "1"
    assert set(r.hkeys(KEYS.catalog(site))) == {"P1", "P3", "P4"}
    assert audit_entries(r, site)[0]["after"]["remove_missing"] is True
    # Without the box ticked, nothing is removed.
    kept = upload(owner, site, GOOD)
    assert "result-removed" not in kept.text
    assert set(r.hkeys(KEYS.catalog(site))) == {"P1", "P2", "P3", "P4"}
    # A file without a single valid product never empties the catalog.
    nothing = upload(owner, site, b"id\ttitle\tprice\nP1\tBroken\tfree\n", remove_missing="yes")
    assert nothing.status_code == 200
    assert "Nothing was removed: the file has no valid product." in nothing.text
    assert set(r.hkeys(KEYS.catalog(site))) == {"P1", "P2", "P3", "P4"}


@pytest.mark.slow
def test_an_upload_waits_for_the_one_before_and_gives_up_with_a_message(
    owner: AdminClient, r: redis.Redis
) -> None:
    site = new_site_key(owner)
    r.set(KEYS.catalog_import_lock(site), "another upload", ex=120)  # held by another upload
    try:
        busy = upload(owner, site, GOOD)
    finally:
        r.delete(KEYS.catalog_import_lock(site))
    assert busy.status_code == 422
    assert "Another upload to this catalog is still running" in busy.text
    assert r.hlen(KEYS.catalog(site)) == 0
    assert audit_entries(r, site)[0]["after"]["failed"]
    assert upload(owner, site, GOOD).status_code == 200
    assert r.hlen(KEYS.catalog(site)) == 2


# --- who may upload -------------------------------------------------------------------------------


def test_viewers_see_the_catalog_but_cannot_upload(
    server: ServerProcess, owner: AdminClient, redis_url: str, r: redis.Redis
) -> None:
    site = new_site_key(owner)
    upload(owner, site, GOOD)
    viewer = signed_in(server, redis_url, "viewer")
    page = viewer.get(page_of(site))
    assert page.status_code == 200 and shown(page.text, "catalog-count") == "2"
    assert page.text.count('method="post"') == 1  # signing out only
    assert 'type="file"' not in page.text
    assert "Only editors and owners can upload a feed." in page.text
    refused = upload(viewer, site, GOOD.replace(b"Trail runner", b"Changed"))
    assert refused.status_code == 403
    assert json.loads(r.hget(KEYS.catalog(site), "P1") or "{}")["title"] == "Trail runner"
    assert len(audit_entries(r, site)) == 1

    editor = signed_in(server, redis_url, "editor")
    assert 'type="file"' in editor.get(page_of(site)).text
    edited = upload(editor, site, GOOD.replace(b"Trail runner", b"Trail runner II"))
    assert edited.status_code == 200 and shown(edited.text, "result-updated") == "1"
    assert audit_entries(r, site)[0]["actor"].startswith("editor-")


def test_uploads_without_the_csrf_token_or_from_elsewhere_are_refused(
    owner: AdminClient, r: redis.Redis
) -> None:
    site = new_site_key(owner)
    files = {"feed": ("feed.tsv", GOOD, TSV)}
    missing = owner.http.post(page_of(site), files=files)
    wrong = owner.http.post(page_of(site), data={"csrf": "forged"}, files=files)
    elsewhere = owner.post(page_of(site), files=files, headers={"Origin": "https://evil.test"})
    for response in (missing, wrong, elsewhere):
        assert response.status_code == 403
        assert "Upload result" not in response.text
    assert r.hlen(KEYS.catalog(site)) == 0 and audit_entries(r, site) == []
    # The same request with the session's token, from the admin itself, goes through.
    assert upload(owner, site, GOOD).status_code == 200
    assert r.hlen(KEYS.catalog(site)) == 2 and len(audit_entries(r, site)) == 1


def test_unknown_site_is_404(owner: AdminClient) -> None:
    assert owner.get(page_of("nope-" + secrets.token_hex(3))).status_code == 404
    assert upload(owner, "nope-" + secrets.token_hex(3), GOOD).status_code == 404
    assert owner.get("/admin/sites/a%7Bb/catalog").status_code == 404


# --- files that must change nothing ---------------------------------------------------------------

LAUGHS = "".join(
    f'<!ENTITY l{n} "{f"&l{n - 1};" * 10}">' if n else '<!ENTITY l0 "lol">' for n in range(10)
)
UNREADABLE = {
    "garbage": (bytes(range(256)) * 40, "the header is not UTF-8 text"),
    "utf16": ("id\ttitle\tprice\nA\tB\t1\n".encode("utf-16"), "UTF-16 text; save it as UTF-8"),
    "gzip": (gzip.compress(GOOD), "compressed (gzip)"),
    "excel": (b"PK\x03\x04" + bytes(200), "ZIP archive or an Excel workbook"),
    "semicolons": (b"id;title;price\nA;B;1\n", "missing required columns: id, title, price"),
    "html": (b"<html><body>shop</body></html>", "root element is &lt;html&gt;"),
    "xml bomb": (
        f'<?xml version="1.0"?><!DOCTYPE rss [{LAUGHS}]><rss><c>&l9;</c></rss>'.encode(),
        "DTDs and entity declarations are not allowed",
    ),
    "xxe": (
        b'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b"<rss><channel><item><g:id>X</g:id><title>&x;</title></item></channel></rss>",
        "DTDs and entity declarations are not allowed",
    ),
    # Two good items, then the file breaks off: none of it is stored.
    "truncated xml": (RSS + b"<item><g:id>X3</g:id><title>Cut", "not well-formed XML"),
    "empty": (b"  \n", "file is empty; choose the feed file"),
}


@pytest.mark.parametrize("kind", UNREADABLE)
def test_a_file_that_is_no_readable_feed_changes_nothing(
    owner: AdminClient, r: redis.Redis, kind: str
) -> None:
    data, message = UNREADABLE[kind]
    site = new_site_key(owner)
    upload(owner, site, GOOD)
    before = r.hgetall(KEYS.catalog(site))
    response = upload(owner, site, data, remove_missing="yes")
    assert response.status_code == 422
    assert "The file was not imported" in response.text and message in response.text
    assert "Nothing in the catalog changed." in response.text
    assert "root:" not in response.text
    assert r.hgetall(KEYS.catalog(site)) == before
    assert shown(response.text, "catalog-count") == "2"
    entry = audit_entries(r, site)[0]
    assert entry["after"]["failed"] and entry["before"] == {"products": 2}


def test_an_oversized_file_is_refused(owner: AdminClient, r: redis.Redis) -> None:
    site = new_site_key(owner)
    row = b"BIG%07d\tA product with a long enough title to fill the file\t9.90 EUR\tAcme\n"
    big = GOOD + b"".join(row % n for n in range(MAX_UPLOAD_BYTES // len(row % 0) + 1))
    assert len(big) > MAX_UPLOAD_BYTES
    response = upload(owner, site, big)
    assert response.status_code == 413 and "too large" in response.text
    assert r.hlen(KEYS.catalog(site)) == 0
    page = owner.get(page_of(site)).text
    assert "up to 8 MB" in page  # the limit is said before choosing a file


# --- in a real browser ----------------------------------------------------------------------------

BROWSER_FEED = (
    b"id\ttitle\tprice\tsale_price\tavailability\tbrand\tlink\n"
    b"SKU-101\tTrail runner\t59.90 EUR\t49.90 EUR\tin stock\tAcme\thttps://www.myshop.com/p/101\n"
    b"SKU-102\tRain jacket\t89.00 EUR\t\tin stock\tAcme\thttps://www.myshop.com/p/102\n"
    b"SKU-103\tWool socks\tnine euros\t\tin stock\tAcme\thttps://www.myshop.com/p/103\n"
    b"SKU-104\tBeanie\t19.90 EUR\t\tout of stock\tAcme\thttps://www.myshop.com/p/104\n"
)


def upload_in_browser(page: Page, server: ServerProcess, site: str) -> None:
    """Go from the site to its catalog tab, choose the feed file and upload it."""
    page.goto(f"{server.url}/admin/sites/{site}")
    page.get_by_role("link", name="Catalog").click()
    page.get_by_label("Feed file").set_input_files(
        [{"name": "myshop-feed.tsv", "mimeType": TSV, "buffer": BROWSER_FEED}]
    )
    page.get_by_role("button", name="Upload and import").click()
    page.wait_for_selector("#upload-result")


def assert_one_bad_row_reported(page: Page) -> None:
    assert page.locator("#catalog-count").inner_text() == "3"
    assert page.locator("#result-errors").inner_text() == "1"
    row = page.locator("table.row-errors tbody tr")
    assert row.count() == 1
    cells = [" ".join(cell.split()) for cell in row.locator("td").all_inner_texts()]
    assert cells == ["4", "SKU-103", "price", "'nine euros' is not a price."]


@pytest.mark.browser
def test_a_marketer_uploads_a_feed_with_a_bad_row_in_the_browser(
    server: ServerProcess, owner: AdminClient, redis_url: str
) -> None:
    site = new_site_key(owner, name="My Shop")
    email = make_user(redis_url, "editor", "mia@myshop.example")
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            desktop = browser.new_context(viewport=DESKTOP)  # type: ignore[arg-type]
            page = desktop.new_page()
            page.on("pageerror", lambda error: errors.append(str(error)))
            sign_in(page, server, email)
            upload_in_browser(page, server, site)
            assert_one_bad_row_reported(page)
            assert page.locator("#result-added").inner_text() == "3"
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOTS / "admin-catalog.png"), full_page=True)

            # On a phone: the same file again changes nothing, and the report still fits.
            phone = browser.new_context(viewport=PHONE)  # type: ignore[arg-type]
            small = phone.new_page()
            small.on("pageerror", lambda error: errors.append(str(error)))
            sign_in(small, server, email)
            upload_in_browser(small, server, site)
            assert_one_bad_row_reported(small)
            assert small.locator("#result-unchanged").inner_text() == "3"
            width = small.evaluate("() => document.documentElement.scrollWidth")
            assert width <= PHONE["width"], width
        finally:
            browser.close()
    assert errors == []


def test_an_upload_reports_what_changed_for_the_catalog_emails(owner: AdminClient) -> None:
    site = new_site_key(owner)
    head = b"id\ttitle\tprice\tavailability\tquantity\tproduct_type\n"
    first = (
        head
        + b"P1\tRunner\t60 EUR\tin stock\t40\tShoes\nP2\tJacket\t90 EUR\tout of stock\t\tCoats\n"
    )
    assert upload(owner, site, first).status_code == 200
    second = (
        head + b"P1\tRunner\t50 EUR\tin stock\t3\tShoes\nP2\tJacket\t90 EUR\tin stock\t\tCoats\n"
        b"P3\tSocks\t9 EUR\tin stock\t\tShoes\n"
    )
    page = upload(owner, site, second).text
    assert shown(page, "result-price-drop") == "1"
    assert shown(page, "result-back-in-stock") == "1"
    assert shown(page, "result-low-stock") == "1"
    assert shown(page, "result-new") == "1"
    assert shown(page, "result-emails") == "0"  # nobody viewed them, and the flows are off
    latest = " ".join(shown(page, "last-import").split())
    assert "1 price drop, 1 back in stock, 1 low in stock, 1 new product" in latest
