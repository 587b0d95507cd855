"""The admin's Emails tab over real HTTP against a real server process (flows in words, counts
from Redis, previews, the JSON editor with its errors, audit, roles, CSRF, hostile values), and
once in a real Chromium (with screenshots)."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from html import unescape
from html.parser import HTMLParser
from typing import Any

import pytest
import redis
from playwright.sync_api import Browser, BrowserContext, expect, sync_playwright
from redis.asyncio import Redis

from widget_server.mail.flows import DEFAULT_CONFIG, load_config
from widget_server.store.keys import Keys
from widget_server.store.sites import SiteRegistry, new_site

from ..support import ServerProcess
from .test_admin import (
    KEYS,
    XSS,
    AdminClient,
    form_fields,
    make_user,
    new_site_key,
    signed_in,
)
from .test_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    DESKTOP,
    PHONE,
    SCREENSHOTS,
    Watched,
    make_account,
    sign_in,
)


@pytest.fixture(scope="module")
def owner(server: ServerProcess, redis_url: str) -> Iterator[AdminClient]:
    client = AdminClient(server)
    assert client.login(make_user(redis_url, "owner")).status_code == 303
    yield client
    client.close()


def emails(site: str, path: str = "") -> str:
    return f"/admin/sites/{site}/emails{path}"


def edit_form(client: AdminClient, site: str) -> dict[str, str]:
    """The edit form as a browser would submit it (without the CSRF token, which post() adds)."""
    page = client.get(emails(site, "/edit"))
    assert page.status_code == 200
    fields = {name: values[-1] for name, values in form_fields(page.text, "mail-form").items()}
    fields.pop("csrf")
    return fields


def default_json() -> dict[str, Any]:
    return dict(DEFAULT_CONFIG.model_dump(mode="json"))


def audit_entries(r: redis.Redis, site: str, action: str) -> list[dict[str, Any]]:
    entries = [json.loads(e) for e in r.lrange(KEYS.admin_audit(), 0, 200)]
    return [e for e in entries if e["action"] == action and e["site"] == site]


class TableText(HTMLParser):
    """The text of every row of the table with the given id, cell by cell."""

    def __init__(self, table_id: str) -> None:
        super().__init__(convert_charrefs=True)
        self.table_id = table_id
        self.inside = False
        self.rows: list[list[str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.inside = dict(attrs).get("id") == self.table_id
        elif self.inside and tag == "tr":
            self.rows.append([])
        elif self.inside and tag in ("td", "th") and self.rows:
            self.rows[-1].append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self.inside = False

    def handle_data(self, data: str) -> None:
        if self.inside and self.rows and self.rows[-1]:
            self.rows[-1][-1] += data.strip()


def table(html: str, table_id: str) -> list[list[str]]:
    parser = TableText(table_id)
    parser.feed(html)
    return parser.rows


def text_of(html: str, element_id: str) -> str:
    match = re.search(rf'id="{element_id}"[^>]*>(.*?)</', html, re.S)
    assert match, f"no element {element_id}"
    return match.group(1)


# --- the overview ---------------------------------------------------------------------------------


def test_overview_shows_the_default_flows_in_words(owner: AdminClient) -> None:
    site = new_site_key(owner)
    page = owner.get(emails(site))
    assert page.status_code == 200
    html = page.text
    assert 'aria-current="page">Emails</a>' in html
    assert "the defaults: this site has not changed them" in html
    for sentence in (
        "1 h after the visitor left: “You left something in your cart”"
        " — template <code>cart</code>",
        "24 h after the visitor left: “Your cart at {shop} is still waiting”",
        "3 days after the visitor left: “Last reminder: your cart at {shop}”",
        "30 min after the visitor left: “Complete your order”",
        "2 h after the visitor left: “Still thinking about {product}?”"
        " — template <code>browse</code>",
    ):
        assert sentence in html, sentence
    assert 'In other languages: “<span lang="de">Ihr Warenkorb wartet</span>” (de)' in html
    checkout = html[html.index('id="flow-checkout"') : html.index('id="flow-browse"')]
    assert (
        '<span class="badge">off</span>' in checkout
        and "none of its emails are scheduled" in checkout
    )
    assert "at most 2 emails per visitor and day" in html
    assert "the pending emails are cancelled" in html
    assert "none: everyone who qualifies gets the emails" in html
    # This test server has no mail settings: a helpful notice that names them, not an error.
    status = html[html.index('id="sending-status"') :][:900]
    assert 'class="status warn"' in html and "not set up to send emails yet" in status
    assert (
        "MAIL_FROM" in status and "MAIL_PUBLIC_URL" in status and "widget-server worker" in status
    )
    assert text_of(html, "suppressed-count") == "0"
    assert "No emails yet" in html and "consent: true" in html
    assert f'href="/admin/sites/{site}/emails/cart/3/preview?locale=en"' in html
    shown = json.loads(unescape(text_of(html, "config-json")))
    assert shown == default_json()
    assert f'href="/admin/sites/{site}/emails/edit"' in html  # an owner may edit


def test_counts_come_from_the_stats_hash_and_the_queue(owner: AdminClient, r: redis.Redis) -> None:
    site = new_site_key(owner)
    other = new_site_key(owner)
    r.hset(KEYS.mail_stats(site, "cart"), mapping={
        "sent:0": 12, "clicks:0": 3, "restores:0": 2, "sent:1": 5, "clicks:1": 0,
        "skipped:capped": 4, "skipped:purchased": 7, "skipped:brand_new": 1,
        "sent:9": 2, "garbage": "not a number",
    })  # fmt: skip
    r.hset(KEYS.mail_stats(site, "browse"), mapping={"sent:0": 8, "clicks:0": 2})
    r.hset(KEYS.mail_suppressed(site), mapping={"a@example.com": "{}", "b@example.com": "{}"})
    waiting = {f"{site}:v1:cart:1": time.time() + 3600, f"{site}:v2:cart:1": time.time() + 60,
               f"{other}:v3:cart:1": time.time() + 60}  # fmt: skip
    r.zadd(KEYS.mail_due(), waiting)
    r.zadd(KEYS.mail_leases(), {f"{site}:v4:browse:0": time.time() + 60})
    try:
        html = owner.get(emails(site)).text
    finally:
        r.zrem(KEYS.mail_due(), *waiting)
        r.zrem(KEYS.mail_leases(), f"{site}:v4:browse:0")
    rows = table(html, "counts-cart")
    assert rows[0] == ["Email", "Waiting", "Sent", "Clicks", "Clicks per email", "Carts restored"]
    assert rows[1] == ["Email 1", "0", "12", "3", "25.0%", "2"]
    assert rows[2] == ["Email 2", "2", "5", "0", "0.0%", "0"]  # the other site's job is not ours
    assert rows[3] == ["Email 3", "0", "0", "0", "—", "0"]
    assert table(html, "counts-browse")[1] == ["Email 1", "1", "8", "2", "25.0%"]
    skipped = html[html.index('id="skipped-cart"') :]
    skipped = skipped[: skipped.index("</ul>")]
    assert skipped.index("7</strong> because the visitor bought") < skipped.index(
        "4</strong> because the visitor had reached the daily email cap"
    )
    assert "because brand new" in skipped
    assert "sent for email 10: 2" in html
    assert "<code>garbage</code>" not in html  # a counter that is not a number is left out
    assert text_of(html, "suppressed-count") == "2"
    assert "No emails yet" not in html
    assert "No email of this flow was skipped." in html  # the browse flow


def test_results_compare_the_emails_with_the_holdout(owner: AdminClient, redis_url: str) -> None:
    from widget_server.mail.flows import MailConfig, MailFlowStore, in_holdout
    from widget_server.mail.jobs import MailScheduler
    from widget_server.visitors.session_view import CartLine

    site = new_site_key(owner)
    assert "No visitor has qualified" in owner.get(emails(site)).text
    config = MailConfig.model_validate(
        {**default_json(), "flows": [{**default_json()["flows"][0], "holdout": 0.3}]}
    )
    arms = {"email": 0, "holdout": 0}

    async def traffic() -> None:
        client = Redis.from_url(redis_url)
        try:
            await MailFlowStore(client, KEYS).save(site, config)
            scheduler = MailScheduler(client, KEYS)
            for i in range(40):
                visitor = f"visitor-{secrets.token_hex(6)}"
                held = in_holdout(site, visitor, config.flows[0])
                arms["holdout" if held else "email"] += 1
                cart = [CartLine("sku-1", 1, 10.0, "Mug", "", "")]
                await scheduler.visitor_left(site, visitor, now=time.time(), cart=cart,
                                             email=f"v{i}@example.com", consent=True)  # fmt: skip
                if i % 4 == 0:
                    await scheduler.purchased(site, visitor, value=25.0)
                await scheduler.cancel(site, visitor)  # no email is due in this test
        finally:
            await client.aclose()

    with ThreadPoolExecutor(1) as pool:  # a browser test may keep an event loop on this thread
        pool.submit(asyncio.run, traffic()).result()
    html = owner.get(emails(site)).text
    rows = table(html, "results-table-cart")
    assert rows[0] == ["Measure", "holdoutno email", "emails"]  # "holdout" and its badge
    assert rows[1] == ["Visitors who qualified", str(arms["holdout"]), str(arms["email"])]
    assert "Too early" in html  # 40 visitors are far from enough to call anything
    exported = owner.get(f"/admin/api/sites/{site}/emails/cart/report.json")
    assert exported.status_code == 200 and "attachment" in exported.headers["content-disposition"]
    document = exported.json()
    assert document["channel"] == "email" and document["report"]["control"] == "holdout"
    assert sum(row["conversions"] for row in document["report"]["variants"]) == 10
    csv = owner.get(f"/admin/api/sites/{site}/emails/cart/report.csv")
    assert csv.text.splitlines()[0].startswith("variant,control,exposures")
    assert owner.get(f"/admin/api/sites/{site}/emails/nope/report.json").status_code == 404


def test_unknown_sites_flows_and_steps_are_404(owner: AdminClient) -> None:
    site = new_site_key(owner)
    for path in ("/admin/sites/nope-nope/emails", emails(site, "/nope/1/preview"),
                 emails(site, "/cart/4/preview"), emails(site, "/cart/0/preview"),
                 emails(site, "/cart/abc/preview"), emails(site, "/cart/99999999999/email"),
                 emails(site, "/cart/-1/email"), "/admin/sites/a%7Bb/emails/edit"):  # fmt: skip
        assert owner.get(path).status_code == 404, path


# --- the preview ----------------------------------------------------------------------------------


def test_preview_shows_subject_text_and_the_framed_email_per_locale(owner: AdminClient) -> None:
    site = new_site_key(owner, name="Wool & Co")
    page = owner.get(emails(site, "/cart/1/preview?locale=en")).text
    assert text_of(page, "email-subject") == "You left something in your cart"
    assert text_of(page, "email-from") == "Wool &amp; Co &lt;MAIL_FROM is not set&gt;"
    frame = re.search(r"<iframe [^>]*>", page)
    assert frame is not None
    assert ' sandbox="" ' in frame.group(0)
    assert f'src="/admin/sites/{site}/emails/cart/1/email?locale=en"' in frame.group(0)
    text = text_of(page, "email-text")
    assert "Merino wool sweater" in text and "Return to my cart:" in text
    assert "https://shop.test/cart?items=sku-1:1,sku-2:2" in text  # the site's own origin
    assert 'aria-current="true">en</a>' in page

    framed = owner.get(emails(site, "/cart/1/email?locale=en"))
    assert framed.status_code == 200 and framed.headers["content-type"].startswith("text/html")
    policy = framed.headers["content-security-policy"]
    assert "script-src 'none'" in policy and "sandbox" in policy
    assert "frame-ancestors 'self'" in policy and "form-action 'none'" in policy
    assert "Return to my cart" in framed.text and "Wool &amp; Co" in framed.text

    german = owner.get(emails(site, "/cart/1/preview?locale=de")).text
    assert text_of(german, "email-subject") == "Ihr Warenkorb wartet"
    assert "Zurück zum Warenkorb" in owner.get(emails(site, "/cart/1/email?locale=de")).text
    assert text_of(owner.get(emails(site, "/cart/2/preview")).text, "email-subject") == (
        "Your cart at Wool &amp; Co is still waiting"
    )
    browse = owner.get(emails(site, "/browse/1/preview?locale=en")).text
    assert text_of(browse, "email-subject") == "Still thinking about Merino wool sweater?"
    # A locale without texts falls back to the site's.
    fallback = owner.get(emails(site, "/cart/1/preview?locale=xx")).text
    assert 'aria-current="true">en</a>' in fallback


def test_a_step_whose_template_is_missing_says_so(owner: AdminClient, r: redis.Redis) -> None:
    site = new_site_key(owner)
    config = default_json()
    config["flows"][0]["steps"][1]["template"] = "promo"
    fields = edit_form(owner, site)
    saved = owner.post(emails(site, "/edit"), {**fields, "config": json.dumps(config)})
    assert saved.status_code == 303
    overview = owner.get(emails(site)).text
    assert "There is no template named <code>promo</code>" in overview
    page = owner.get(emails(site, "/cart/2/preview"))
    assert page.status_code == 200 and "This email cannot be rendered." in page.text
    assert "promo.html not found" in page.text and 'id="email-frame"' not in page.text
    framed = owner.get(emails(site, "/cart/2/email"))
    assert (
        framed.status_code == 422
        and "script-src 'none'" in framed.headers["content-security-policy"]
    )
    assert owner.get(emails(site, "/cart/1/email")).status_code == 200


# --- editing --------------------------------------------------------------------------------------


def test_edit_shows_the_current_config_and_refuses_bad_json(
    owner: AdminClient, r: redis.Redis
) -> None:
    site = new_site_key(owner)
    fields = edit_form(owner, site)
    assert json.loads(fields["config"]) == default_json()
    for typed, expected in (
        ('{"flows": [\n  {"name": "cart",}\n]}', "not valid JSON at line 2, column 19"),
        ("", "It is empty"),
        ("[" * 100_000, "nested too deeply"),
        ("[]", "The configuration: It should be a JSON object"),
        (" " * 200_001 + "{}", "at most 200,000 are allowed"),
    ):
        answer = owner.post(emails(site, "/edit"), {**fields, "config": typed})
        assert answer.status_code == 422, typed[:40]
        assert expected in answer.text, (typed[:40], expected)
        assert "Nothing was saved." in answer.text and 'aria-invalid="true"' in answer.text
        assert form_fields(answer.text, "mail-form")["config"] == [typed], "the text is kept"
    too_big = owner.post(emails(site, "/edit"), {**fields, "config": "x" * (1024 * 1024 + 1)})
    assert too_big.status_code == 413
    assert r.get(KEYS.mail_flows(site)) is None
    assert audit_entries(r, site, "mail.flows.update") == []


def test_invalid_fields_are_named_by_flow_email_and_field(
    owner: AdminClient, r: redis.Redis
) -> None:
    site = new_site_key(owner)
    fields = edit_form(owner, site)
    config = default_json()
    cart = config["flows"][0]
    cart["holdout"] = 2
    cart["steps"][1]["subject"] = {"en": "two\nlines"}
    cart["steps"][2]["subjekt"] = "typo"
    del config["flows"][2]["kind"]
    config["flows"][1]["enabled"] = True
    typed = json.dumps(config, indent=2)
    answer = owner.post(emails(site, "/edit"), {**fields, "config": typed})
    assert answer.status_code == 422
    errors = answer.text[answer.text.index('id="err-config"') :]
    for problem in (
        "<strong>Flow 1 &#34;cart&#34;, field holdout</strong>: Input should be less than or"
        " equal to 0.9.",
        "<strong>Flow 1 &#34;cart&#34;, email 2, field subject</strong>: Subjects are 1-200"
        " characters without line breaks.",
        "<strong>Flow 1 &#34;cart&#34;, email 3, field subjekt</strong>: There is no field by this"
        " name: check the spelling.",
        "<strong>Flow 3 &#34;browse&#34;, field kind</strong>: This field is missing.",
    ):
        assert problem in errors, problem
    assert 'id="error-summary" tabindex="-1"' in answer.text
    assert form_fields(answer.text, "mail-form")["config"] == [typed]
    assert r.get(KEYS.mail_flows(site)) is None

    # A rule over several flows is named too.
    fixed = default_json()
    fixed["flows"][1]["enabled"] = True
    fixed["flows"][1]["kind"] = "cart"
    answer = owner.post(emails(site, "/edit"), {**fields, "config": json.dumps(fixed)})
    assert answer.status_code == 422 and "At most one enabled flow per kind." in answer.text
    assert r.get(KEYS.mail_flows(site)) is None


def test_a_valid_edit_is_saved_audited_and_shown_then_reset(
    owner: AdminClient, r: redis.Redis
) -> None:
    site = new_site_key(owner)
    fields = edit_form(owner, site)
    config = json.loads(fields["config"])
    config["flows"][0]["steps"][0]["subject"]["en"] = "Your cart misses you"
    config["flows"][0]["holdout"] = 0.1
    config["flows"][2]["enabled"] = False
    config["sender_name"] = "Wool Shop"
    answer = owner.post(emails(site, "/edit"), {**fields, "config": json.dumps(config)})
    assert answer.status_code == 303
    assert answer.headers["location"] == f"/admin/sites/{site}/emails?notice=saved"
    stored = load_config(r.get(KEYS.mail_flows(site)) or "")
    assert stored.flows[0].steps[0].subject_for("en") == "Your cart misses you"
    assert stored.flows[0].holdout == 0.1 and not stored.flows[2].enabled
    [entry] = audit_entries(r, site, "mail.flows.update")
    assert entry["target"] == site and entry["actor"].startswith("owner-")
    assert entry["before"] == default_json()
    assert entry["after"]["flows"][0]["steps"][0]["subject"]["en"] == "Your cart misses you"
    html = owner.get(emails(site)).text
    assert "this site's own flows" in html and "“Your cart misses you”" in html
    assert "10.0% of visitors get none of these emails" in html
    assert "Wool Shop" in html
    audit = owner.get("/admin/audit").text
    assert "mail.flows.update" in audit and "flows.0.steps.0.subject.en" in audit

    # Saving the same text again changes nothing and records nothing.
    again = owner.post(emails(site, "/edit"), {**edit_form(owner, site)})
    assert again.status_code == 303 and len(audit_entries(r, site, "mail.flows.update")) == 1

    # A form opened before someone else's save does not overwrite it.
    stale = dict(fields, config=json.dumps(default_json()))
    conflict = owner.post(emails(site, "/edit"), stale)
    assert conflict.status_code == 409 and "the flows changed meanwhile" in conflict.text
    assert form_fields(conflict.text, "mail-form")["config"] == [stale["config"]]
    assert "Your cart misses you" in text_of(conflict.text, "current-config")
    assert load_config(r.get(KEYS.mail_flows(site)) or "") == stored

    # Reset: only with the box ticked; the site follows the defaults again.
    assert owner.post(emails(site, "/reset"), {}).status_code == 400
    assert r.get(KEYS.mail_flows(site)) is not None
    assert owner.post(emails(site, "/reset"), {"confirm": "yes"}).status_code == 303
    assert r.get(KEYS.mail_flows(site)) is None
    [reset] = audit_entries(r, site, "mail.flows.reset")
    assert reset["before"]["sender_name"] == "Wool Shop" and reset["after"] == default_json()
    html = owner.get(emails(site)).text
    assert "the defaults: this site has not changed them" in html
    assert "“You left something in your cart”" in html
    assert "This site uses the defaults already." in owner.get(emails(site, "/edit")).text


def test_an_unreadable_stored_config_is_explained_and_can_be_fixed(
    owner: AdminClient, r: redis.Redis
) -> None:
    site = new_site_key(owner)
    r.set(KEYS.mail_flows(site), '{"flows": [{"name": "cart"}]}')
    html = owner.get(emails(site)).text
    assert 'id="config-problem"' in html and "cannot be read" in html and "flows.0.kind" in html
    assert owner.get(emails(site, "/cart/1/preview")).status_code == 404
    fields = edit_form(owner, site)
    assert fields["config"] == '{"flows": [{"name": "cart"}]}'
    answer = owner.post(emails(site, "/edit"), {**fields, "config": json.dumps(default_json())})
    assert answer.status_code == 303
    [entry] = audit_entries(r, site, "mail.flows.update")
    assert entry["before"] == {"unreadable": '{"flows": [{"name": "cart"}]}'}
    assert "this site's own flows" in owner.get(emails(site)).text


# --- roles, CSRF and hostile values ---------------------------------------------------------------


def test_viewers_read_but_cannot_edit_and_editors_can(
    server: ServerProcess, owner: AdminClient, redis_url: str, r: redis.Redis
) -> None:
    site = new_site_key(owner)
    fields = edit_form(owner, site)
    viewer = signed_in(server, redis_url, "viewer")
    page = viewer.get(emails(site))
    assert page.status_code == 200 and 'id="config-json"' in page.text
    assert page.text.count('method="post"') == 1  # signing out only
    assert "Edit the flows" not in page.text and "/emails/edit" not in page.text
    assert "Your role (viewer) can read the email flows" in page.text
    assert viewer.get(emails(site, "/cart/1/preview")).status_code == 200
    assert viewer.get(emails(site, "/cart/1/email")).status_code == 200
    assert viewer.get(emails(site, "/edit")).status_code == 403
    changed = json.dumps({"flows": []})
    assert viewer.post(emails(site, "/edit"), {**fields, "config": changed}).status_code == 403
    assert viewer.post(emails(site, "/reset"), {"confirm": "yes"}).status_code == 403
    assert r.get(KEYS.mail_flows(site)) is None

    editor = signed_in(server, redis_url, "editor")
    assert editor.post(emails(site, "/edit"), {**fields, "config": changed}).status_code == 303
    html = editor.get(emails(site)).text
    assert 'id="no-flows"' in html and "Add a flow in the editor" in html
    assert load_config(r.get(KEYS.mail_flows(site)) or "").flows == []


def test_edits_need_the_session_csrf_token_and_this_origin(
    owner: AdminClient, r: redis.Redis
) -> None:
    site = new_site_key(owner)
    data = {**edit_form(owner, site), "config": json.dumps({"flows": []})}
    assert owner.http.post(emails(site, "/edit"), data=data).status_code == 403
    assert owner.http.post(emails(site, "/edit"), data={**data, "csrf": "x"}).status_code == 403
    other = owner.post(emails(site, "/edit"), data, headers={"Origin": "https://evil.test"})
    assert other.status_code == 403
    assert owner.http.post(emails(site, "/reset"), data={"confirm": "yes"}).status_code == 403
    assert r.get(KEYS.mail_flows(site)) is None
    assert owner.post(emails(site, "/edit"), data).status_code == 303


def test_hostile_subjects_and_sender_names_render_as_text(
    owner: AdminClient, r: redis.Redis
) -> None:
    site = new_site_key(owner, name=XSS[0])
    config = default_json()
    config["sender_name"] = XSS[1]
    config["flows"][0]["steps"][0]["subject"] = {"en": XSS[0] + " {shop}", "de": XSS[1]}
    fields = edit_form(owner, site)
    assert owner.post(emails(site, "/edit"), {**fields, "config": json.dumps(config)}).is_redirect
    raw = ("<script>alert(1)</script>", "<img src=x")
    pages = {
        "overview": owner.get(emails(site)).text,
        "edit": owner.get(emails(site, "/edit")).text,
        "preview": owner.get(emails(site, "/cart/1/preview?locale=en")).text,
        "preview de": owner.get(emails(site, "/cart/1/preview?locale=de")).text,
        "bad locale": owner.get(emails(site, "/cart/1/preview?locale=%22%3E%3Cscript%3E")).text,
        "email": owner.get(emails(site, "/cart/1/email?locale=en")).text,
        "email de": owner.get(emails(site, "/cart/1/email?locale=de")).text,
    }
    for name, html in pages.items():
        for payload in raw:
            assert payload not in html, (name, payload)
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &#34;&gt;&lt;img src=x" in text_of(
        pages["preview"], "email-subject"
    )
    assert text_of(pages["preview"], "email-from").startswith("&#34;&gt;&lt;img src=x onerror")
    assert "&lt;img src=x onerror=alert(1)&gt;" in pages["email"]  # the shop name in the email
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages["overview"]
    # Text typed into the editor comes back inside the textarea, escaped.
    typed = "</textarea><script>alert(1)</script>"
    answer = owner.post(emails(site, "/edit"), {**edit_form(owner, site), "config": typed})
    assert answer.status_code == 422 and "<script>alert(1)" not in answer.text
    assert form_fields(answer.text, "mail-form")["config"] == [typed]


# --- in a real browser ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mail_prefix() -> str:
    return "adm" + secrets.token_hex(3)


@pytest.fixture(scope="module")
def mail_server(
    redis_url: str, mail_prefix: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """An admin whose server is set up to send (to an outbox folder)."""
    data = tmp_path_factory.mktemp("admin-mail")
    process = ServerProcess(
        redis_url,
        data,
        WIDGET_REDIS_PREFIX=mail_prefix,
        MAIL_OUTBOX_DIR=str(data / "outbox"),
        MAIL_FROM="hello@myshop.example",
        MAIL_PUBLIC_URL="https://mail.myshop.example",
    ).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def watched(browser: Browser) -> Iterator[Callable[[dict[str, int]], Watched]]:
    contexts: list[BrowserContext] = []
    pages: list[Watched] = []

    def make(viewport: dict[str, int]) -> Watched:
        contexts.append(browser.new_context(viewport=viewport))  # type: ignore[arg-type]
        pages.append(Watched(contexts[-1]))
        return pages[-1]

    yield make
    try:
        for page in pages:
            page.check()
    finally:
        for context in contexts:
            context.close()


def seed_site(redis_url: str, keys: Keys) -> None:
    """The shop of the screenshots, with some history in its counters."""

    async def seed() -> None:
        client = Redis.from_url(redis_url)
        try:
            await SiteRegistry(client, keys).save(
                new_site("myshop", name="My Shop", origins=["https://www.myshop.com"])
            )
            await client.hset(keys.mail_stats("myshop", "cart"), mapping={
                "sent:0": 412, "clicks:0": 61, "restores:0": 38, "sent:1": 233, "clicks:1": 24,
                "restores:1": 15, "sent:2": 120, "clicks:2": 9, "restores:2": 4,
                "skipped:purchased": 57, "skipped:capped": 6, "skipped:no_consent": 3,
            })  # fmt: skip
            await client.hset(keys.mail_stats("myshop", "browse"), mapping={
                "sent:0": 198, "clicks:0": 17, "skipped:no_products": 2,
            })  # fmt: skip
            await client.hset(keys.mail_suppressed("myshop"), "gone@example.com", "{}")
        finally:
            await client.aclose()

    with ThreadPoolExecutor(1) as pool:  # Playwright's event loop runs on this thread
        pool.submit(asyncio.run, seed()).result()


@pytest.mark.browser
def test_a_marketer_previews_and_edits_an_email_in_the_browser(
    watched: Callable[[dict[str, int]], Watched],
    mail_server: ServerProcess,
    redis_url: str,
    mail_prefix: str,
) -> None:
    keys = Keys(mail_prefix)
    seed_site(redis_url, keys)
    page = watched(DESKTOP).page
    sign_in(page, mail_server, make_account(redis_url, keys, "editor"))
    page.goto(f"{mail_server.url}/admin/sites/myshop")
    page.get_by_role("navigation", name="Site").get_by_role("link", name="Emails").click()
    page.wait_for_url("**/admin/sites/myshop/emails")
    expect(page.get_by_role("heading", name="Emails of My Shop")).to_be_visible()
    status = page.locator("#sending-status").inner_text()
    assert "set up to send emails, from hello@myshop.example" in status
    assert page.locator("#counts-cart tbody tr").first.inner_text().split() == [
        "Email", "1", "0", "412", "61", "14.8%", "38"
    ]  # fmt: skip
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "admin-emails.png"), full_page=True)

    # Keyboard: the preview link of the first cart email, then the email inside its frame.
    page.get_by_role("link", name="Preview email 1 of the cart flow").focus()
    page.keyboard.press("Enter")
    page.wait_for_url("**/emails/cart/1/preview?locale=en")
    assert page.locator("#email-subject").inner_text() == "You left something in your cart"
    frame = page.frame_locator("#email-frame")
    expect(frame.get_by_role("link", name="Return to my cart")).to_be_visible()
    expect(frame.get_by_text("Merino wool sweater").first).to_be_visible()
    assert page.locator("#email-frame").get_attribute("sandbox") == ""
    assert "Return to my cart:" in page.locator("#email-text").inner_text()
    page.screenshot(path=str(SCREENSHOTS / "admin-email-preview.png"), full_page=True)
    page.get_by_role("group", name="Language").get_by_role("link", name="de").click()
    assert page.locator("#email-subject").inner_text() == "Ihr Warenkorb wartet"
    expect(frame.get_by_role("link", name="Zurück zum Warenkorb")).to_be_visible()

    # Edit the subject; a mistake first keeps the text and says where it is.
    page.goto(f"{mail_server.url}/admin/sites/myshop/emails")
    page.get_by_role("link", name="Edit the flows").click()
    box = page.get_by_label("Flows as JSON")
    config = json.loads(box.input_value())
    config["flows"][0]["steps"][0]["subject"]["en"] = "Psst, your cart misses you"
    config["flows"][0]["steps"][0]["delay_minutes"] = -5
    box.fill(json.dumps(config, indent=2))
    page.get_by_role("button", name="Save the flows").click()
    assert page.evaluate("() => document.activeElement.id") == "error-summary"
    assert 'Flow 1 "cart", email 1, field delay_minutes' in page.locator("#err-config").inner_text()
    assert "Psst, your cart misses you" in page.get_by_label("Flows as JSON").input_value()
    config["flows"][0]["steps"][0]["delay_minutes"] = 45
    page.get_by_label("Flows as JSON").fill(json.dumps(config, indent=2))
    page.get_by_role("button", name="Save the flows").click()
    page.wait_for_url("**/admin/sites/myshop/emails?notice=saved")
    step = page.locator("#flow-cart-step-1").inner_text()
    assert "45 min after the visitor left: “Psst, your cart misses you”" in step
    page.get_by_role("link", name="Preview email 1 of the cart flow").click()
    assert page.locator("#email-subject").inner_text() == "Psst, your cart misses you"
    expect(frame.get_by_role("link", name="Return to my cart")).to_be_visible()

    # On a phone: nothing is wider than the screen.
    phone = watched(PHONE).page
    sign_in(phone, mail_server, make_account(redis_url, keys, "viewer"))
    for path in ("/emails", "/emails/cart/1/preview?locale=en"):
        phone.goto(f"{mail_server.url}/admin/sites/myshop{path}")
        width = phone.evaluate("() => document.documentElement.scrollWidth")
        assert width <= PHONE["width"], (path, width)
    phone_frame = phone.frame_locator("#email-frame")
    expect(phone_frame.get_by_text("Merino wool sweater").first).to_be_visible()


def test_a_test_email_is_sent_from_the_preview_and_counted_nowhere(
    server: ServerProcess, redis_url: str, r: redis.Redis, tmp_path: Any
) -> None:
    from ..mail_support import SmtpSink

    def account(role: str) -> str:
        # Off this thread: a browser test of this module may keep an event loop running here.
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(make_user, redis_url, role).result()

    owner = AdminClient(server)
    assert owner.login(account("owner")).status_code == 303
    site = new_site_key(owner)
    path = emails(site, "/cart/1/test?locale=de")
    # This server cannot send: the page says which settings are missing, and sends nothing.
    refused = owner.post(path, {"to": "me@example.com"})
    assert refused.status_code == 422 and "SMTP_URL" in unescape(refused.text)
    with SmtpSink() as sink:
        sending = ServerProcess(redis_url, tmp_path / "sender", SMTP_URL=sink.url,
                                MAIL_FROM="shop@example.com",
                                MAIL_PUBLIC_URL="https://offers.example.com").start()  # fmt: skip
        try:
            client = AdminClient(sending)
            assert client.login(account("editor")).status_code == 303
            before = {key: r.type(key) for key in r.scan_iter(f"*{site}*")}
            sent = client.post(path, {"to": "me@example.com"})
            assert sent.status_code == 200 and 'id="test-sent"' in sent.text
            [received] = sink.received
            assert received.message["Subject"].startswith("[Test] ")
            assert received.rcpt_tos == ["me@example.com"]
            hostile = client.post(path, {"to": "me@example.com\r\nBcc: all@example.com"})
            assert hostile.status_code == 422 and 'id="test-error"' in hostile.text
            assert len(sink.received) == 1
            # No job, no mark, no statistic: the site's keys are the same as before.
            after = {key: r.type(key) for key in r.scan_iter(f"*{site}*")}
            assert {k for k in after if "audit" not in str(k)} == set(before)
            viewer = AdminClient(sending)
            assert viewer.login(account("viewer")).status_code == 303
            assert viewer.post(path, {"to": "me@example.com"}).status_code == 403
            assert len(sink.received) == 1
            client.close()
            viewer.close()
        finally:
            sending.stop()
    owner.close()
