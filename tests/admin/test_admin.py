"""The admin at /admin over real HTTP against a real server process: sign-in, sessions, CSRF,
throttling, roles, sites, the campaign editor, versions, codes, preview and the audit log."""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from html.parser import HTMLParser
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import redis
from redis.asyncio import Redis

from widget_server.admin import campaign_form
from widget_server.admin.accounts import AccountStore, Role
from widget_server.admin.auth import COOKIE, session_digest
from widget_server.admin.form_errors import place_errors
from widget_server.offers.campaigns import FieldError
from widget_server.shipped import EXAMPLES_DIR
from widget_server.store.audit import Change, changes
from widget_server.store.keys import Keys

from ..support import ROOT, ServerProcess, message_campaign, save_campaigns

PASSWORD = "correct horse battery staple"
KEYS = Keys()
XSS = ("<script>alert(1)</script>", '"><img src=x onerror=alert(1)>')


# --- helpers ------------------------------------------------------------------------------------


def make_user(redis_url: str, role: Role, email: str | None = None) -> str:
    """An account with PASSWORD, created through the product's account store."""
    email = email or f"{role}-{secrets.token_hex(4)}@example.test"

    async def create() -> None:
        client = Redis.from_url(redis_url)
        try:
            await AccountStore(client, KEYS).create(email, PASSWORD, role)
        finally:
            await client.aclose()

    asyncio.run(create())
    return email


def admin_cli(redis_url: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, REDIS_URL=redis_url)
    return subprocess.run(
        [sys.executable, "-m", "widget_server.cli", "admin", *args],
        input=stdin, env=env, capture_output=True, text=True, timeout=30, cwd=ROOT,
    )  # fmt: skip


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "no CSRF token on the page"
    return match.group(1)


class FormFields(HTMLParser):
    """What a browser would submit for a form (by id): inputs, ticked boxes, chosen options,
    those inside it and those outside that name it (``form="ID"``)."""

    def __init__(self, form_id: str) -> None:
        super().__init__(convert_charrefs=True)
        self.form_id = form_id
        self.inside = False
        self.fields: dict[str, list[str]] = {}
        self._select: str | None = None
        self._options: list[tuple[str, bool]] = []
        self._textarea: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.inside = a.get("id") == self.form_id
        if tag == "option":
            if self._select is None:
                return
        elif not a.get("name") or not (
            a.get("form") == self.form_id if "form" in a else self.inside
        ):
            return
        if tag == "input" and a.get("type") not in ("submit", "button", "file"):
            if a.get("type") in ("checkbox", "radio") and "checked" not in a:
                return
            default = "on" if a.get("type") == "checkbox" else ""
            self.fields.setdefault(a["name"], []).append(a.get("value", default))
        elif tag == "select":
            self._select, self._options = a["name"], []
        elif tag == "option" and self._select is not None:
            self._options.append((a.get("value", ""), "selected" in a))
        elif tag == "textarea":
            self._textarea = a["name"]
            self.fields.setdefault(a["name"], []).append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "select" and self._select is not None:
            chosen = [v for v, on in self._options if on] or [v for v, _ in self._options[:1]]
            self.fields.setdefault(self._select, []).extend(chosen)
            self._select = None
        elif tag == "textarea":
            self._textarea = None
        elif tag == "form":
            self.inside = False

    def handle_data(self, data: str) -> None:
        if self._textarea is not None:
            self.fields[self._textarea][-1] += data.removeprefix("\n")


def form_fields(html: str, form_id: str) -> dict[str, list[str]]:
    parser = FormFields(form_id)
    parser.feed(html)
    return parser.fields


class AdminClient:
    """A browser-like client: keeps the cookie, sends the CSRF token with every POST."""

    def __init__(self, server: ServerProcess, ip: str | None = None) -> None:
        headers = {"X-Forwarded-For": ip} if ip else {}
        self.http = httpx.Client(base_url=server.url, headers=headers, timeout=60)
        self.csrf = ""

    def login(self, email: str, password: str = PASSWORD) -> httpx.Response:
        token = csrf_of(self.http.get("/admin/login").text)
        response = self.http.post(
            "/admin/login", data={"csrf": token, "email": email, "password": password}
        )
        if response.status_code == 303:
            self.csrf = csrf_of(self.http.get("/admin/sites").text)
        return response

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.http.get(path, **kw)

    def post(self, path: str, data: dict[str, Any] | None = None, **kw: Any) -> httpx.Response:
        return self.http.post(path, data={"csrf": self.csrf, **(data or {})}, **kw)

    def cookie(self) -> str:
        return str(self.http.cookies.get(COOKIE, path="/admin"))

    def close(self) -> None:
        self.http.close()


@pytest.fixture(scope="module")
def owner(server: ServerProcess, redis_url: str) -> Iterator[AdminClient]:
    client = AdminClient(server)
    assert client.login(make_user(redis_url, "owner")).status_code == 303
    yield client
    client.close()


def signed_in(server: ServerProcess, redis_url: str, role: Role) -> AdminClient:
    client = AdminClient(server)
    assert client.login(make_user(redis_url, role)).status_code == 303
    return client


def new_site_key(owner: AdminClient, **fields: str) -> str:
    key = "s" + secrets.token_hex(4)
    data = {"key": key, "name": f"Shop {key}", "origins": "https://shop.test", "currency": "EUR",
            "locale": "en", "timezone": "Europe/Berlin", **fields}  # fmt: skip
    assert owner.post("/admin/sites/new", data).status_code == 303
    return key


def editor_fields(owner: AdminClient, site: str, campaign: str | None = None) -> dict[str, Any]:
    path = f"/admin/sites/{site}/campaigns/" + (f"{campaign}/edit" if campaign else "new")
    page = owner.get(path)
    assert page.status_code == 200
    fields: dict[str, Any] = form_fields(page.text, "campaign-form")
    fields.pop("csrf")
    return fields


def stored_campaign(r: redis.Redis, site: str, campaign: str) -> dict[str, Any]:
    raw = r.hget(KEYS.campaigns(site), campaign)
    assert raw
    return dict(json.loads(raw))


# --- signing in and out ---------------------------------------------------------------------------


def test_pages_need_a_session(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url) as client:
        for path in ("/admin/", "/admin/sites", "/admin/campaigns", "/admin/audit"):
            response = client.get(path)
            assert response.status_code == 303, path
            assert response.headers["location"].startswith("/admin/login?next=")
        # A forged cookie is no session either.
        client.cookies.set(COOKIE, "forged.0123", path="/admin")
        assert client.get("/admin/sites").status_code == 303


def test_security_headers_on_every_admin_response(
    server: ServerProcess, owner: AdminClient, redis_url: str
) -> None:
    site = new_site_key(owner)
    save_campaigns(redis_url, site, [message_campaign("hello")])
    paths = ["/admin/login", "/admin/sites", f"/admin/sites/{site}", "/admin/static/admin.css",
             "/admin/static/admin.js", "/admin/nothing-here",
             f"/admin/sites/{site}/campaigns/hello"]  # fmt: skip
    for path in paths:
        response = owner.get(path)
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp, path
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "form-action 'self'" in csp and "base-uri 'self'" in csp
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "same-origin"
    # Only the preview may be framed, and only by the admin itself.
    preview = owner.get(f"/admin/sites/{site}/campaigns/hello/preview")
    assert "frame-ancestors 'self'" in preview.headers["content-security-policy"]
    assert owner.get("/admin/sites").headers["cache-control"] == "no-store"


def test_login_sets_a_hardened_cookie_and_logout_ends_the_session(
    server: ServerProcess, redis_url: str, r: redis.Redis
) -> None:
    client = AdminClient(server)
    response = client.login(make_user(redis_url, "viewer"))
    assert response.status_code == 303 and response.headers["location"] == "/admin/sites"
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "path=/admin" in cookie
    assert "secure" not in cookie
    session_id = client.cookie().rpartition(".")[0]
    assert r.exists(KEYS.admin_session(session_digest(session_id)))
    stolen = client.cookie()
    assert client.post("/admin/logout").headers["location"] == "/admin/login?signed_out=1"
    assert not r.exists(KEYS.admin_session(session_digest(session_id)))
    # The old cookie, replayed, no longer opens anything.
    with httpx.Client(base_url=server.url, cookies={COOKIE: stolen}) as replay:
        assert replay.get("/admin/sites").status_code == 303
    # Behind a TLS proxy the cookie is Secure.
    secure = AdminClient(server)
    secure.http.headers["X-Forwarded-Proto"] = "https"
    response = secure.login(make_user(redis_url, "viewer"))
    assert "secure" in response.headers["set-cookie"].lower()


def test_wrong_password_and_login_csrf(server: ServerProcess, redis_url: str) -> None:
    email = make_user(redis_url, "editor")
    client = AdminClient(server, ip="198.51.100.7")
    response = client.login(email, "wrong password!")
    assert response.status_code == 400
    assert "Wrong email or password." in response.text
    assert f'value="{email}"' in response.text  # the email stays typed in
    form = {"email": email, "password": PASSWORD}
    assert client.http.post("/admin/login", data=form).status_code == 403
    assert client.http.post("/admin/login", data={**form, "csrf": "x" * 64}).status_code == 403
    assert client.login(email).status_code == 303


def test_a_mistyped_password_keeps_the_page_asked_for(
    server: ServerProcess, redis_url: str
) -> None:
    email = make_user(redis_url, "viewer")
    client = AdminClient(server, ip="198.51.100.8")
    asked = client.http.get("/admin/audit")
    assert asked.headers["location"] == "/admin/login?next=%2Fadmin%2Faudit"
    page = client.http.get(asked.headers["location"]).text
    assert form_fields(page, "login")["next"] == ["/admin/audit"]
    wrong = {"csrf": csrf_of(page), "email": email, "password": "typo!", "next": "/admin/audit"}
    again = client.http.post("/admin/login", data=wrong)
    assert again.status_code == 400 and form_fields(again.text, "login")["next"] == ["/admin/audit"]
    right = {**wrong, "csrf": csrf_of(again.text), "password": PASSWORD}
    assert client.http.post("/admin/login", data=right).headers["location"] == "/admin/audit"


def test_login_throttling_per_account_and_per_address(
    server: ServerProcess, redis_url: str
) -> None:
    email = make_user(redis_url, "editor")
    client = AdminClient(server, ip="203.0.113.9")
    for _ in range(5):
        assert client.login(email, "not the password").status_code == 400
    refused = client.login(email, "not the password")
    assert refused.status_code == 429
    assert "Too many failed sign-ins" in refused.text and "Try again in 15 minutes" in refused.text
    assert client.login(email).status_code == 429  # even with the right password, for now
    # Another account from another address is not affected.
    assert AdminClient(server, ip="203.0.113.10").login(make_user(redis_url, "viewer")).is_redirect

    # One address trying many accounts is stopped too.
    roamer = AdminClient(server, ip="203.0.113.11")
    for n in range(20):
        assert roamer.login(f"nobody{n}@example.test", "guess").status_code == 400
    assert roamer.login(make_user(redis_url, "viewer")).status_code == 429


def test_parallel_wrong_passwords_cannot_slip_under_the_limits(
    server: ServerProcess, redis_url: str
) -> None:
    email = make_user(redis_url, "editor")
    ip = f"198.51.100.{secrets.randbelow(200) + 1}"
    clients = [AdminClient(server, ip=ip) for _ in range(30)]
    tokens = [csrf_of(c.http.get("/admin/login").text) for c in clients]

    def guess(n: int) -> int:
        form = {"csrf": tokens[n], "email": email, "password": f"guess {n}"}
        return clients[n].http.post("/admin/login", data=form).status_code

    with ThreadPoolExecutor(max_workers=30) as pool:
        answers = list(pool.map(guess, range(30)))
    assert answers.count(400) == 5 and answers.count(429) == 25  # 5 guesses checked, no more

    roamer_ip = f"198.51.100.{secrets.randbelow(50) + 201}"
    roamers = [AdminClient(server, ip=roamer_ip) for _ in range(40)]
    tokens = [csrf_of(c.http.get("/admin/login").text) for c in roamers]

    def roam(n: int) -> int:
        form = {"csrf": tokens[n], "email": f"nobody{n}@example.test", "password": "guess"}
        return roamers[n].http.post("/admin/login", data=form).status_code

    with ThreadPoolExecutor(max_workers=40) as pool:
        answers = list(pool.map(roam, range(40)))
    assert answers.count(400) == 20 and answers.count(429) == 20
    for client in clients + roamers:
        client.close()


def test_a_known_browser_is_not_locked_out_by_other_peoples_failures(
    server: ServerProcess, redis_url: str
) -> None:
    email = make_user(redis_url, "owner")
    office = "203.0.113.77"
    owner = AdminClient(server, ip=office)
    assert owner.login(email).status_code == 303  # this browser now knows the account
    device = owner.http.cookies.get("exw_admin_device", path="/admin")
    assert device
    attacker = AdminClient(server, ip=office)  # the same office network
    for n in range(20):  # the owner's account and others: both limits are reached
        attacker.login(email if n < 5 else f"nobody{n}@example.test", "guess")
    assert attacker.login(email).status_code == 429  # the account is locked for strangers
    assert AdminClient(server, ip=office).login(make_user(redis_url, "viewer")).status_code == 429
    returning = AdminClient(server, ip=office)
    returning.http.cookies.set("exw_admin_device", device, path="/admin")
    assert returning.login(email).status_code == 303  # ... not for the owner's own browser
    forged = AdminClient(server, ip="203.0.113.78")
    forged.http.cookies.set("exw_admin_device", device.split(".")[0] + ".00", path="/admin")
    assert forged.login(email).status_code == 429  # a forged cookie is a stranger
    for _ in range(5):  # the known browser has a limit of its own
        assert returning.login(email, "typo").status_code == 400
    assert returning.login(email).status_code == 429


def test_idle_and_absolute_expiry_end_the_session(
    server: ServerProcess, redis_url: str, r: redis.Redis
) -> None:
    for field, age in (("seen", 2 * 3600 + 5), ("created", 24 * 3600 + 5)):
        client = signed_in(server, redis_url, "viewer")
        key = KEYS.admin_session(session_digest(client.cookie().rpartition(".")[0]))
        assert client.get("/admin/sites").status_code == 200
        r.hset(key, field, str(time.time() - age))
        response = client.get("/admin/sites")
        assert response.status_code == 303
        assert response.headers["location"] == "/admin/login?next=%2Fadmin%2Fsites&expired=1"
        assert not r.exists(key)
        login = client.get(response.headers["location"])
        assert "Your session ended" in login.text


def test_cli_creates_accounts_and_resets_passwords(server: ServerProcess, redis_url: str) -> None:
    email = f"cli-{secrets.token_hex(3)}@example.test"
    made = admin_cli(redis_url, "create", email, "--role", "owner", "--password-stdin",
                     stdin=PASSWORD + "\n")  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert f"created {email} (owner)" in made.stdout
    again = admin_cli(redis_url, "create", email, "--password-stdin", stdin=PASSWORD + "\n")
    assert again.returncode == 2 and "exists already" in again.stderr
    short = admin_cli(redis_url, "create", "x" + email, "--password-stdin", stdin="short\n")
    assert short.returncode == 2 and "at least 10 characters" in short.stderr
    assert email in admin_cli(redis_url, "list").stdout

    client = AdminClient(server)
    assert client.login(email).status_code == 303
    reset = admin_cli(redis_url, "reset-password", email, "--password-stdin",
                      stdin="a brand new passphrase\n")  # fmt: skip
    assert reset.returncode == 0, reset.stderr
    assert client.get("/admin/sites").status_code == 303  # signed out everywhere
    assert AdminClient(server).login(email).status_code == 400
    assert AdminClient(server).login(email, "a brand new passphrase").status_code == 303


# --- CSRF and roles -----------------------------------------------------------------------------


def test_posts_need_the_session_csrf_token_and_this_origin(
    owner: AdminClient, r: redis.Redis
) -> None:
    data = {"key": "csrf" + secrets.token_hex(3), "name": "x", "origins": "https://a.test",
            "currency": "EUR", "locale": "en", "timezone": "UTC"}  # fmt: skip
    assert owner.http.post("/admin/sites/new", data=data).status_code == 403
    assert owner.http.post("/admin/sites/new", data={**data, "csrf": "wrong"}).status_code == 403
    other = owner.post("/admin/sites/new", data, headers={"Origin": "https://evil.test"})
    assert other.status_code == 403
    assert not r.exists(KEYS.site(data["key"]))
    assert owner.post("/admin/sites/new", data).status_code == 303


def test_viewer_sees_everything_and_changes_nothing(
    server: ServerProcess, owner: AdminClient, redis_url: str, r: redis.Redis
) -> None:
    site = new_site_key(owner)
    save_campaigns(redis_url, site, [message_campaign("promo", status="paused")])
    viewer = signed_in(server, redis_url, "viewer")
    base = f"/admin/sites/{site}/campaigns/promo"
    pages = ("/admin/sites", f"/admin/sites/{site}", f"/admin/sites/{site}/campaigns", base,
             base + "/history", base + "/codes", "/admin/audit", "/admin/campaigns")  # fmt: skip
    for path in pages:
        page = viewer.get(path)
        assert page.status_code == 200, path
        assert page.text.count('method="post"') == 1, path  # signing out only
        for button in (
            "Add a site",
            "New campaign",
            "Start from a template",
            "Edit",
            "Duplicate",
            "Resume",
            "Upload",
        ):
            assert f">{button}<" not in page.text, (path, button)
    assert "site-secret" not in viewer.get(f"/admin/sites/{site}").text
    forms = ("/admin/sites/new", f"/admin/sites/{site}/edit",
             f"/admin/sites/{site}/campaigns/new", base + "/edit", "/admin/accounts")  # fmt: skip
    for path in forms:
        assert viewer.get(path).status_code == 403, path
    posts = {
        "/admin/sites/new": {"key": "viewer-made"},
        f"/admin/sites/{site}/secret": {"confirm": "yes"},
        f"/admin/sites/{site}/campaigns/new": {"id": "x", "name": "x"},
        base + "/edit": {"name": "changed"},
        base + "/status": {"status": "active"},
        base + "/duplicate": {},
        base + "/restore": {"version": "1"},
        base + "/codes": {},
        "/admin/accounts": {"email": "x@example.test", "role": "owner", "password": PASSWORD},
    }
    before = stored_campaign(r, site, "promo")
    for path, data in posts.items():
        assert viewer.post(path, data).status_code == 403, path
    assert stored_campaign(r, site, "promo") == before
    assert viewer.post("/admin/logout").status_code == 303  # signing out is not a change


def test_editor_manages_campaigns_but_not_sites_secrets_or_accounts(
    server: ServerProcess, owner: AdminClient, redis_url: str
) -> None:
    site = new_site_key(owner)
    editor = signed_in(server, redis_url, "editor")
    page = editor.get(f"/admin/sites/{site}")
    assert (
        page.status_code == 200 and "site-secret" not in page.text and "Edit site" not in page.text
    )
    assert editor.post(f"/admin/sites/{site}/secret", {"confirm": "yes"}).status_code == 403
    assert editor.get("/admin/sites/new").status_code == 403
    assert editor.get("/admin/accounts").status_code == 403
    assert "Accounts" not in editor.get("/admin/sites").text
    assert editor.get(f"/admin/sites/{site}/campaigns/new").status_code == 200


# --- sites --------------------------------------------------------------------------------------


def test_site_form_shows_errors_next_to_fields_and_keeps_the_input(
    owner: AdminClient, r: redis.Redis
) -> None:
    key = "shop" + secrets.token_hex(3)
    bad = {"key": key, "name": "My shop", "origins": "https://ok.test\nftp://nope",
           "currency": "euro", "locale": "english", "timezone": "Mars/Base"}  # fmt: skip
    page = owner.post("/admin/sites/new", bad)
    assert page.status_code == 422
    for field in ("origins", "currency", "locale", "timezone"):
        assert f'id="err-{field}"' in page.text, field
        assert f'id="f-{field}"' in page.text
    assert 'id="err-name"' not in page.text
    assert "ftp://nope" in page.text and 'value="My shop"' in page.text
    assert not r.exists(KEYS.site(key))
    fixed = {**bad, "origins": "https://ok.test\nhttps://*.ok.test", "currency": "usd",
             "locale": "en-US", "timezone": "America/New_York"}  # fmt: skip
    assert (
        owner.post("/admin/sites/new", fixed).headers["location"].endswith(f"{key}?notice=created")
    )
    site = json.loads(r.get(KEYS.site(key)) or "{}")
    assert site["origins"] == ["https://ok.test", "https://*.ok.test"]
    assert site["currency"] == "USD" and site["locale"] == "en-US" and site["secret"]
    assert owner.post("/admin/sites/new", fixed).status_code == 422  # the key is taken now

    edited = owner.post(f"/admin/sites/{key}/edit", {**fixed, "name": "Renamed"})
    assert edited.status_code == 303
    after = json.loads(r.get(KEYS.site(key)) or "{}")
    assert after["name"] == "Renamed" and after["secret"] == site["secret"]


def test_the_site_form_sets_the_site_wide_frequency_policy(
    owner: AdminClient, r: redis.Redis
) -> None:
    key = new_site_key(owner)
    page = owner.get(f"/admin/sites/{key}")
    assert "Offers: 1 per visit, 2 per day, one discount per 7 days" in page.text
    form = owner.get(f"/admin/sites/{key}/edit").text
    assert 'id="f-per_session"' in form and 'name="discount_days" type="number" value="7"' in form
    base = {"name": key, "origins": "https://shop.test", "currency": "EUR", "locale": "en",
            "timezone": "Europe/Berlin"}  # fmt: skip
    bad = owner.post(
        f"/admin/sites/{key}/edit",
        {**base, "per_session": "-1", "per_day": "", "discount_days": "400"},
    )
    assert bad.status_code == 422
    for field in ("per_session", "per_day", "discount_days"):
        assert f'id="err-{field}"' in bad.text, field
    assert "from 0 (no limit) to 365" in bad.text and 'value="400"' in bad.text
    assert json.loads(r.get(KEYS.site(key)) or "{}")["frequency"]["per_session"] == 1  # unchanged
    limits = {"per_session": "2", "per_day": "0", "discount_days": "14",
              "live_per_session": "1", "live_per_day": "3"}  # fmt: skip
    assert owner.post(f"/admin/sites/{key}/edit", {**base, **limits}).status_code == 303
    saved = json.loads(r.get(KEYS.site(key)) or "{}")["frequency"]
    assert saved == {"per_session": 2, "per_day": 0, "discount_days": 14,
                     "live_per_session": 1, "live_per_day": 3}  # fmt: skip
    page = owner.get(f"/admin/sites/{key}").text
    assert "Offers: 2 per visit, no limit per day, one discount per 14 days" in page
    # A post without the limits (an older form) keeps them.
    assert owner.post(f"/admin/sites/{key}/edit", base).status_code == 303
    assert json.loads(r.get(KEYS.site(key)) or "{}")["frequency"] == saved


def test_the_site_form_sets_how_the_shop_applies_codes(owner: AdminClient, r: redis.Redis) -> None:
    key = new_site_key(owner)
    assert "none: the visitor copies the code" in owner.get(f"/admin/sites/{key}").text
    base = {"name": key, "origins": "https://shop.test", "currency": "EUR", "locale": "en",
            "timezone": "UTC"}  # fmt: skip
    bad = owner.post(f"/admin/sites/{key}/edit",
                     {**base, "apply_mode": "magic", "apply_param": "a b"})  # fmt: skip
    assert bad.status_code == 422
    assert 'id="err-apply_mode"' in bad.text and 'id="err-apply_param"' in bad.text
    done = owner.post(f"/admin/sites/{key}/edit",
                      {**base, "apply_mode": "url", "apply_param": "coupon_code"})  # fmt: skip
    assert done.status_code == 303
    saved = json.loads(r.get(KEYS.site(key)) or "{}")["apply_code"]
    assert saved == {"mode": "url", "param": "coupon_code"}
    assert "the URL parameter <code>coupon_code</code>" in owner.get(f"/admin/sites/{key}").text


def test_site_page_snippets_install_check_and_secret_rotation(
    server: ServerProcess, owner: AdminClient, r: redis.Redis
) -> None:
    key = new_site_key(owner)
    page = owner.get(f"/admin/sites/{key}")
    tag = f"&lt;script async src=&#34;{server.url}/widget.js&#34; data-site=&#34;{key}&#34;&gt;"
    assert page.text.count(tag) == 4  # plain HTML, GTM, Shopify, WooCommerce
    for snippet in ("snippet-html", "snippet-gtm", "snippet-shopify", "snippet-woocommerce"):
        assert f'data-copy="{snippet}"' in page.text
    assert "{% if customer %}" in page.text and "add_action(&#39;wp_head&#39;" in page.text
    assert "Not seen yet" in page.text
    r.set(KEYS.site_seen(key), str(time.time() - 300))
    assert "connected from this site 5 minutes ago" in owner.get(f"/admin/sites/{key}").text
    r.set(KEYS.site_seen(key), str(time.time() - 3 * 86400))
    assert "has not connected in the last 24 hours" in owner.get(f"/admin/sites/{key}").text

    secret = json.loads(r.get(KEYS.site(key)) or "{}")["secret"]
    assert secret in page.text  # owners see it
    assert owner.post(f"/admin/sites/{key}/secret", {}).status_code == 400  # not confirmed
    assert owner.post(f"/admin/sites/{key}/secret", {"confirm": "yes"}).status_code == 303
    assert json.loads(r.get(KEYS.site(key)) or "{}")["secret"] != secret


# --- campaigns ------------------------------------------------------------------------------------


def test_campaign_editor_errors_next_to_fields_then_saves_every_field(
    owner: AdminClient, r: redis.Redis
) -> None:
    site = new_site_key(owner)
    fields = editor_fields(owner, site)
    fields.update({
        "id": "cart-saver", "name": "Cart saver", "priority": "300",
        "variants.0.offer.headline": "", "variants.0.offer.body": "Typed body stays",
        "variants.0.offer.cta_url": "javascript:alert(1)", "schedule.timezone": "Europe/Berlin",
        "schedule.start": "2030-01-01T09:00", "schedule.weekdays": ["0", "1", "2"],
        "schedule.hours.0": "8", "schedule.hours.1": "22", "trigger.hesitation.cart": "20",
        "trigger.exit_intent": ["top_edge", "back_button"], "trigger.min_cart_value": "30",
        "trigger.returning_visitor": "no", "caps.per_visitor_week": "3", "holdout": "0.1",
        "targeting.any.0.all.0.field": "page_type", "targeting.any.0.all.0.op": "not_in",
        "targeting.any.0.all.0.value": "thank_you, payment",
        "targeting.any.0.all.1.field": "utm_source", "targeting.any.0.all.1.op": "is_not",
        "targeting.any.0.all.1.value": "newsletter",
        "targeting.any.1.all.0.field": "viewed_count", "targeting.any.1.all.0.op": "gte",
        "targeting.any.1.all.0.value": "3", "targeting.devices": ["mobile"],
    })  # fmt: skip
    page = owner.post(f"/admin/sites/{site}/campaigns/new", fields)
    assert page.status_code == 422
    for path in ("variants.0.offer.headline", "variants.0.offer.cta_url"):
        assert f'<p class="field-error" id="err-{path}">' in page.text, path
        assert f'aria-describedby="hint-{path} err-{path}"' in page.text or (
            f'aria-describedby="err-{path}"' in page.text
        )
    assert 'value="Cart saver"' in page.text and "Typed body stays" in page.text
    assert 'value="javascript:alert(1)"' in page.text
    assert 'value="thank_you, payment"' in page.text and 'value="newsletter"' in page.text
    assert 'href="#f-variants.0.offer.headline"' in page.text  # the summary links to the field
    # Targeting in words: the fields and operators are named, known values suggested.
    assert '<option value="page_type" selected>Page type</option>' in page.text
    assert '<option value="not_in" selected>is none of</option>' in page.text
    assert '<option value="utm_source" selected>Traffic source</option>' in page.text
    assert 'list="known-values"' in page.text and '<option value="mobile"></option>' in page.text
    assert 'name="targeting.devices" value="mobile" checked' in page.text
    assert 'name="targeting.devices" value="desktop" checked' not in page.text
    assert not r.hexists(KEYS.campaigns(site), "cart-saver")

    kept = form_fields(page.text, "campaign-form")
    kept.update({"variants.0.offer.headline": ["Wait! 10% off"],
                 "variants.0.offer.cta_url": ["/cart"]})  # fmt: skip
    kept.pop("csrf")
    saved = owner.post(f"/admin/sites/{site}/campaigns/new", kept)
    assert saved.status_code == 303, saved.text
    campaign = stored_campaign(r, site, "cart-saver")
    assert campaign["name"] == "Cart saver" and campaign["priority"] == 300
    assert campaign["status"] == "draft" and campaign["version"] == 1
    assert campaign["schedule"] == {"start": "2030-01-01T09:00:00", "end": None,
                                    "weekdays": [0, 1, 2], "hours": [8, 22],
                                    "timezone": "Europe/Berlin"}  # fmt: skip
    trigger = campaign["trigger"]
    assert trigger["exit_intent"] == ["top_edge", "back_button"]
    assert trigger["hesitation"] == {"cart": 20} and trigger["min_cart_value"] == 30
    assert trigger["returning_visitor"] is False and trigger["live"] is False
    assert campaign["targeting"] == {"devices": ["mobile"], "any": [
        {"all": [{"field": "page_type", "op": "not_in", "value": ["thank_you", "payment"]},
                 {"field": "utm_source", "op": "is_not", "value": "newsletter"}]},
        {"all": [{"field": "viewed_count", "op": "gte", "value": 3.0}]},
    ]}  # fmt: skip
    variant = campaign["variants"][0]
    assert (
        variant["offer"]["headline"] == "Wait! 10% off" and variant["offer"]["cta_url"] == "/cart"
    )
    assert variant["discount"]["type"] == "percent" and variant["discount"]["amount"] == 10
    assert campaign["caps"]["per_visitor_week"] == 3 and campaign["caps"]["never_on_payment"]
    assert campaign["holdout"] == 0.1

    # The editor shows the stored campaign; saving it unchanged keeps every field.
    again = editor_fields(owner, site, "cart-saver")
    assert owner.post(f"/admin/sites/{site}/campaigns/cart-saver/edit", again).status_code == 303
    resaved = stored_campaign(r, site, "cart-saver")
    assert {**resaved, "version": 1} == campaign and resaved["version"] == 2


def test_the_editor_sets_scroll_depth_and_time_on_page_triggers(
    owner: AdminClient, r: redis.Redis
) -> None:
    site = new_site_key(owner)
    fields = editor_fields(owner, site)
    assert fields["trigger.scroll_depth"] == [""] and fields["trigger.time_on_page"] == [""]
    fields.update({"id": "readers", "name": "Readers", "trigger.exit_intent": [],
                   "variants.0.offer.headline": "Thanks for reading",
                   "trigger.scroll_depth": "150", "trigger.time_on_page": "soon"})  # fmt: skip
    page = owner.post(f"/admin/sites/{site}/campaigns/new", fields)
    assert page.status_code == 422
    for path in ("trigger.scroll_depth", "trigger.time_on_page"):
        assert f'<p class="field-error" id="err-{path}">' in page.text, path
    assert '<label for="f-trigger.scroll_depth">Scrolled down the page (%)</label>' in page.text
    assert '<label for="f-trigger.time_on_page">Seconds on the page</label>' in page.text
    assert 'value="soon"' in page.text  # kept as typed
    assert not r.hexists(KEYS.campaigns(site), "readers")

    fields.update({"trigger.scroll_depth": "50", "trigger.time_on_page": "20"})
    saved = owner.post(f"/admin/sites/{site}/campaigns/new", fields)
    assert saved.status_code == 303, re.findall(r'class="field-error"[^>]*>([^<]*)', saved.text)
    trigger = stored_campaign(r, site, "readers")["trigger"]
    assert trigger["scroll_depth"] == 50 and trigger["time_on_page"] == 20
    assert trigger["exit_intent"] == []  # not shown on exit intent: nothing was ticked
    again = editor_fields(owner, site, "readers")
    assert again["trigger.scroll_depth"] == ["50"] and again["trigger.time_on_page"] == ["20"]
    page = owner.get(f"/admin/sites/{site}/campaigns/readers/edit")
    assert "after scrolling 50% of the page or after 20 seconds on the page" in page.text

    # Emptied, the fields turn the triggers off (exit intent ticked again, so it still fires).
    again.update({"trigger.scroll_depth": "", "trigger.time_on_page": "",
                  "trigger.exit_intent": ["top_edge"]})  # fmt: skip
    assert owner.post(f"/admin/sites/{site}/campaigns/readers/edit", again).status_code == 303
    trigger = stored_campaign(r, site, "readers")["trigger"]
    assert trigger["scroll_depth"] is None and trigger["time_on_page"] is None


def test_the_editor_sets_an_email_captures_texts_by_language(
    owner: AdminClient, r: redis.Redis
) -> None:
    site = new_site_key(owner)  # a site in English: the editor offers English
    fields = editor_fields(owner, site)
    assert "variants.0.offer.consent_label.en" in fields
    fields.update({
        "id": "news", "name": "Newsletter", "variants.0.offer.kind": "email_capture",
        "variants.0.offer.headline": "Get 5 EUR off", "variants.0.discount.type": "fixed",
        "variants.0.discount.amount": "5",
        "variants.0.offer.consent_label.en": "Yes, email me offers.",
        "variants.0.offer.thanks.en": "Welcome aboard!",
        "variants.0.offer.privacy_url": "javascript:alert(1)",
    })  # fmt: skip
    page = owner.post(f"/admin/sites/{site}/campaigns/new", fields)
    assert page.status_code == 422
    assert 'id="err-variants.0.offer.privacy_url"' in page.text
    assert 'value="Yes, email me offers."' in page.text  # kept as typed
    fields["variants.0.offer.privacy_url"] = "/privacy"
    fields["variants.0.offer.consent_label.de"] = "Ja, schickt mir Angebote."  # any language
    assert owner.post(f"/admin/sites/{site}/campaigns/new", fields).status_code == 303
    offer = stored_campaign(r, site, "news")["variants"][0]["offer"]
    assert offer["consent_label"] == {"en": "Yes, email me offers.",
                                      "de": "Ja, schickt mir Angebote."}  # fmt: skip
    assert offer["thanks"] == {"en": "Welcome aboard!"} and offer["privacy_url"] == "/privacy"
    again = owner.get(f"/admin/sites/{site}/campaigns/news/edit").text
    assert 'name="variants.0.offer.consent_label.de"' in again  # a language in use stays


def test_the_editor_sets_the_layout_and_the_two_step_question(
    owner: AdminClient, r: redis.Redis
) -> None:
    site = new_site_key(owner)
    fields = editor_fields(owner, site)
    assert fields["variants.0.offer.layout"] == ["popup"]  # the default
    fields.update({
        "id": "ask", "name": "Ask first", "variants.0.offer.kind": "email_capture",
        "variants.0.offer.headline": "Want 10% off?", "variants.0.discount.type": "",
        "variants.0.offer.layout": "fullscreen",
        "variants.0.offer.two_step.yes_label": "Yes, send it",
    })  # fmt: skip
    page = owner.post(f"/admin/sites/{site}/campaigns/new", fields)
    assert page.status_code == 422
    assert '<label for="f-variants.0.offer.layout">Layout</label>' in page.text
    assert (
        '<p class="field-error" id="err-variants.0.offer.layout">Input should be '
        "&#39;popup&#39;, &#39;slide_in&#39;, &#39;bar_top&#39; or &#39;bar_bottom&#39;</p>"
    ) in page.text
    assert "Variant 1: Layout" in page.text  # in the summary
    assert 'value="Yes, send it"' in page.text  # kept as typed
    fields["variants.0.offer.layout"] = "bar_bottom"
    assert owner.post(f"/admin/sites/{site}/campaigns/new", fields).status_code == 303
    offer = stored_campaign(r, site, "ask")["variants"][0]["offer"]
    assert offer["layout"] == "bar_bottom"
    assert offer["two_step"] == {"yes_label": "Yes, send it", "no_label": "No, thanks"}

    # The editor shows both; saved unchanged they stay; both labels emptied: no question.
    again = editor_fields(owner, site, "ask")
    assert again["variants.0.offer.layout"] == ["bar_bottom"]
    assert again["variants.0.offer.two_step.no_label"] == ["No, thanks"]
    assert owner.post(f"/admin/sites/{site}/campaigns/ask/edit", again).status_code == 303
    assert stored_campaign(r, site, "ask")["variants"][0]["offer"] == offer
    again = editor_fields(owner, site, "ask")
    again.update({"variants.0.offer.two_step.yes_label": "",
                  "variants.0.offer.two_step.no_label": ""})  # fmt: skip
    assert owner.post(f"/admin/sites/{site}/campaigns/ask/edit", again).status_code == 303
    assert stored_campaign(r, site, "ask")["variants"][0]["offer"]["two_step"] is None


def test_every_demo_campaign_survives_the_editor_unchanged(
    owner: AdminClient, redis_url: str, r: redis.Redis
) -> None:
    site = new_site_key(owner)
    examples = json.loads((EXAMPLES_DIR / "demo-campaigns.json").read_text())
    save_campaigns(redis_url, site, examples)
    for example in examples:
        before = stored_campaign(r, site, example["id"])
        fields = editor_fields(owner, site, example["id"])
        saved = owner.post(f"/admin/sites/{site}/campaigns/{example['id']}/edit", fields)
        assert saved.status_code == 303, (example["id"], saved.text[:3000])
        after = stored_campaign(r, site, example["id"])
        assert changes(before, after) == [Change("version", 1, 2)], example["id"]


def test_errors_are_placed_at_the_nearest_field() -> None:
    state = campaign_form.blank_state()
    state["targeting"]["any"] = [{"all": [campaign_form.blank_condition()]}]
    errors = [
        FieldError("targeting.any.0.all.0.value.str", "bad value"),
        FieldError("schedule.hours.1", "bad hour"),
        FieldError("variants.0.offer.theme.accent", "bad colour"),
        FieldError("variants.0", "a discount offer needs a discount"),
        FieldError("variants.3.offer.headline", "no such variant on screen"),
        FieldError("campaign", "Value error, variant keys must be unique"),
    ]
    placed, summary = place_errors(errors, state)
    assert placed == {
        "targeting.any.0.all.0.value": ["bad value"],
        "schedule.hours": ["bad hour"],
        "variants.0.offer.theme.accent": ["bad colour"],
        "variants.0": ["a discount offer needs a discount"],
        "variants": ["no such variant on screen"],
        "campaign": ["variant keys must be unique"],
    }
    assert summary[0][1] == "Targeting group 1, condition 1: Value"
    assert summary[2][1] == "Variant 1: Accent colour"


def test_editor_buttons_work_without_javascript(owner: AdminClient, r: redis.Redis) -> None:
    site = new_site_key(owner)
    fields = editor_fields(owner, site)
    fields.update({"id": "grow", "name": "Typed name"})
    added = owner.post(f"/admin/sites/{site}/campaigns/new", {**fields, "action": "add:variants"})
    assert added.status_code == 200
    assert 'name="variants.1.offer.headline"' in added.text and 'value="Typed name"' in added.text
    group = owner.post(f"/admin/sites/{site}/campaigns/new",
                       {**fields, "action": "add:targeting.any"})  # fmt: skip
    assert 'name="targeting.any.0.all.0.field"' in group.text
    state = form_fields(group.text, "campaign-form")
    state.pop("csrf")
    row = owner.post(f"/admin/sites/{site}/campaigns/new",
                     {**state, "action": "add:targeting.any.0.all"})  # fmt: skip
    assert 'name="targeting.any.0.all.1.value"' in row.text
    state = form_fields(row.text, "campaign-form")
    state.pop("csrf")
    removed = owner.post(f"/admin/sites/{site}/campaigns/new",
                         {**state, "action": "remove:targeting.any.0"})  # fmt: skip
    assert 'name="targeting.any.0.all.0.field"' not in removed.text
    assert not r.hexists(KEYS.campaigns(site), "grow")


def test_status_duplicate_history_diff_and_restore(owner: AdminClient, r: redis.Redis) -> None:
    site = new_site_key(owner)
    fields = editor_fields(owner, site)
    fields.update({"id": "promo", "name": "Spring promo", "variants.0.offer.headline": "Hello"})
    assert owner.post(f"/admin/sites/{site}/campaigns/new", fields).status_code == 303
    base = f"/admin/sites/{site}/campaigns/promo"
    overview = owner.get(base)
    assert ">Activate<" in overview.text and ">Archive<" in overview.text
    assert owner.post(base + "/status", {"status": "active"}).status_code == 303
    assert stored_campaign(r, site, "promo")["status"] == "active"
    assert ">Pause<" in owner.get(base).text
    assert owner.post(base + "/status", {"status": "paused"}).status_code == 303
    assert ">Resume<" in owner.get(base).text
    assert owner.post(base + "/status", {"status": "gone"}).status_code == 400

    edit = editor_fields(owner, site, "promo")
    edit["variants.0.offer.headline"] = "Hello again"
    assert owner.post(base + "/edit", edit).status_code == 303
    history = owner.get(base + "/history").text
    assert "Version 4" in history and "variants.0.offer.headline" in history
    assert "&#34;Hello&#34;" in history and "&#34;Hello again&#34;" in history
    assert "paused" in history

    assert owner.post(base + "/restore", {"version": "1"}).status_code == 303
    restored = stored_campaign(r, site, "promo")
    assert restored["version"] == 5 and restored["variants"][0]["offer"]["headline"] == "Hello"
    assert restored["status"] == "paused"  # restoring brings back content, not the status
    assert owner.post(base + "/restore", {"version": "5"}).status_code == 400  # the current one

    copied = owner.post(base + "/duplicate")
    assert copied.headers["location"].startswith(f"/admin/sites/{site}/campaigns/promo-copy/edit")
    copy = stored_campaign(r, site, "promo-copy")
    assert copy["status"] == "draft" and copy["name"] == "Copy of Spring promo"


def test_a_save_over_a_newer_version_is_stopped(owner: AdminClient, redis_url: str) -> None:
    site = new_site_key(owner)
    save_campaigns(redis_url, site, [message_campaign("busy")])
    mine = editor_fields(owner, site, "busy")
    save_campaigns(redis_url, site, [message_campaign("busy", name="Changed elsewhere")])
    mine["name"] = "My change"
    page = owner.post(f"/admin/sites/{site}/campaigns/busy/edit", mine)
    assert page.status_code == 409 and "tests saved version 2" in page.text
    assert 'value="My change"' in page.text
    again = form_fields(page.text, "campaign-form")
    again.pop("csrf")
    assert owner.post(f"/admin/sites/{site}/campaigns/busy/edit", again).status_code == 303


def test_campaign_list_shows_status_and_todays_numbers(
    owner: AdminClient, redis_url: str, r: redis.Redis
) -> None:
    site = new_site_key(owner)
    tz = "America/Los_Angeles"
    save_campaigns(redis_url, site, [
        message_campaign("numbers", schedule={"timezone": tz}),
        message_campaign("quiet", status="paused"),
    ])  # fmt: skip
    day = datetime.now(ZoneInfo(tz)).strftime("%Y%m%d")
    r.hset(KEYS.campaign_stats(site, "numbers", day), mapping={
        "exposures:a": 40, "exposures:holdout": 5, "impressions:a": 31, "conversions:a": 4,
    })  # fmt: skip
    page = owner.get(f"/admin/sites/{site}/campaigns").text
    row = page[page.index(">numbers<") :]
    assert re.search(
        r'<td class="num">45</td>\s*<td class="num">31</td>\s*<td class="num">4</td>', row
    )
    assert "status-active" in page and "status-paused" in page
    assert row.index("Shown to visitors, when leaving.") < row.index('<td class="num">45</td>')
    overview = owner.get(f"/admin/sites/{site}/campaigns/numbers").text
    assert '<p class="audience" id="audience">Shown to visitors, when leaving.</p>' in overview
    assert f"/admin/sites/{site}/campaigns/numbers" in owner.get("/admin/campaigns").text
    empty = owner.get(f"/admin/sites/{new_site_key(owner)}/campaigns").text
    assert (
        "No campaigns on" in empty
        and "Start from a template" in empty
        and "Start from a blank campaign" in empty
    )


def test_code_pool_upload_counts_and_low_pool_warning(
    owner: AdminClient, redis_url: str, r: redis.Redis
) -> None:
    site = new_site_key(owner)
    campaign = message_campaign("pool")
    campaign["variants"] = [{"key": "a", "offer": {"kind": "discount", "headline": "Code"},
                             "discount": {"type": "percent", "amount": 10,
                                          "code_strategy": "pool"}}]  # fmt: skip
    save_campaigns(redis_url, site, [campaign])
    base = f"/admin/sites/{site}/campaigns/pool/codes"
    csv = "Code\n" + "\n".join(f"POOL{n:04d}" for n in range(30)) + "\nPOOL0001\n"
    response = owner.post(base, files={"file": ("codes.csv", csv.encode(), "text/csv")})
    assert response.status_code == 200
    assert "Added 30 codes." in response.text
    assert re.search(r'id="codes-available">30<', response.text)
    assert "pool-warning" in response.text
    r.hset(KEYS.issued_codes(site, "pool"), mapping={
        "ISSUED1": json.dumps({"visitor": "v", "redeemed": time.time()}),
        "ISSUED2": json.dumps({"visitor": "w"}),
    })  # fmt: skip
    page = owner.get(base).text
    assert re.search(r'id="codes-issued">2<', page) and re.search(r'id="codes-redeemed">1<', page)
    assert "code pool low: 30 left" in owner.get(f"/admin/sites/{site}/campaigns").text
    empty = owner.post(base, files={"file": ("empty.csv", b"", "text/csv")})
    assert empty.status_code == 422 and "choose a CSV file" in empty.text


def test_preview_page_embeds_the_rendered_offer_safely(owner: AdminClient, redis_url: str) -> None:
    site = new_site_key(owner)
    campaign = message_campaign("xss", name=XSS[0], targeting={"any": [{"all": [
        {"field": "utm_campaign", "op": "is", "value": XSS[0]}]}]})  # fmt: skip
    campaign["variants"] = [{"key": "a", "offer": {"kind": "discount", "headline": XSS[0],
                             "body": XSS[1] + "</script>", "cta_label": XSS[1]},
                             "discount": {"type": "percent", "amount": 15,
                                          "code_format": "SAVE-{XXXXXX}"}}]  # fmt: skip
    save_campaigns(redis_url, site, [campaign])
    page = owner.get(f"/admin/sites/{site}/campaigns/xss/preview?variant=a&width=mobile").text
    assert "<script>alert(1)</script>" not in page and "<img src=x" not in page
    data = re.search(r'<script type="application/json" id="exw-preview">(.*?)</script>', page, re.S)
    assert data is not None
    offer = json.loads(data.group(1))
    assert offer["headline"] == XSS[0] and offer["body"] == XSS[1] + "</script>"
    assert offer["id"] == "xss.a" and offer["discount"] == {"type": "percent", "amount": 15.0}
    assert re.fullmatch(r"SAVE-[A-Z0-9]{6}", offer["code"]) and offer["expires_at"] > time.time()
    assert f'<script src="/widget.js" data-site="{site}" data-preview></script>' in page
    for path in ("", "/edit", "/history"):
        html = owner.get(f"/admin/sites/{site}/campaigns/xss{path}").text
        assert "<script>alert(1)</script>" not in html and "<img src=x" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_accounts_page_and_audit_log(
    server: ServerProcess, owner: AdminClient, redis_url: str
) -> None:
    email = f"new-{secrets.token_hex(3)}@example.test"
    made = owner.post("/admin/accounts", {"email": email, "role": "viewer", "password": PASSWORD})
    assert made.status_code == 303
    assert AdminClient(server).login(email).status_code == 303
    assert owner.post("/admin/accounts/role", {"email": email, "role": "editor"}).is_redirect
    short = owner.post("/admin/accounts", {"email": "x" + email, "role": "viewer", "password": "x"})
    assert short.status_code == 422 and "at least 10 characters" in short.text

    # The last owner cannot demote or remove themselves.
    lonely = make_user(redis_url, "owner")
    alone = AdminClient(server)
    assert alone.login(lonely).status_code == 303
    others = [u for u in asyncio.run(_owners(redis_url)) if u != lonely]
    asyncio.run(_set_roles(redis_url, others, "editor"))
    try:
        refused = alone.post("/admin/accounts/role", {"email": lonely, "role": "viewer"})
        assert refused.status_code == 422 and "The last owner cannot" in refused.text
        refused = alone.post("/admin/accounts/remove", {"email": lonely})
        assert refused.status_code == 422
    finally:
        asyncio.run(_set_roles(redis_url, others, "owner"))
    assert alone.post("/admin/accounts/remove", {"email": email}).is_redirect

    audit = owner.get("/admin/audit").text
    assert email in audit and "account.role" in audit and "account.remove" in audit
    assert "&#34;viewer&#34;" in audit and "&#34;editor&#34;" in audit  # before and after


async def _set_roles(redis_url: str, emails: list[str], role: Role) -> None:
    client = Redis.from_url(redis_url)
    try:
        for email in emails:
            await AccountStore(client, KEYS).set_role(email, role)
    finally:
        await client.aclose()


async def _owners(redis_url: str) -> list[str]:
    client = Redis.from_url(redis_url)
    try:
        return [u.email for u in await AccountStore(client, KEYS).list() if u.role == "owner"]
    finally:
        await client.aclose()


def test_changes_are_audited_with_before_and_after(owner: AdminClient, r: redis.Redis) -> None:
    site = new_site_key(owner, name="Before name")
    fields = {"key": site, "name": "After name", "origins": "https://shop.test",
              "currency": "EUR", "locale": "en", "timezone": "UTC"}  # fmt: skip
    assert owner.post(f"/admin/sites/{site}/edit", fields).status_code == 303
    entries = [json.loads(e) for e in r.lrange(KEYS.admin_audit(), 0, 50)]
    update = next(e for e in entries if e["action"] == "site.update" and e["target"] == site)
    assert update["before"]["name"] == "Before name" and update["after"]["name"] == "After name"
    assert "secret" not in update["after"] and update["actor"].startswith("owner-")
    assert any(e["action"] == "site.create" and e["target"] == site for e in entries)


def test_unknown_things_are_404(owner: AdminClient) -> None:
    site = new_site_key(owner)
    missing = ("/admin/sites/nope-nope", f"/admin/sites/{site}/campaigns/nope",
               f"/admin/sites/{site}/campaigns/BAD!/edit",
               "/admin/sites/a%7Bb/campaigns")  # fmt: skip
    for path in missing:
        assert owner.get(path).status_code == 404, path
