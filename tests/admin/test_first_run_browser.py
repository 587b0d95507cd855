"""The product's first run in a real Chromium: `make demo` on a fresh data directory prints the
demo owner's password once; the printed admin URL leads to the sign-in page, the printed password
signs in, a wrong one is refused, and a second start on the same data prints no password while
the first one still works."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sysconfig
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from widget_server.store.embedded import free_port

from ..support import ROOT
from ..test_cli import wait_ready
from .test_browser import CHROMIUM, CHROMIUM_ARGS, DESKTOP, Watched

pytestmark = pytest.mark.browser

# What `make demo` runs: the console script of the environment the tests run in.
WIDGET_SERVER = Path(sysconfig.get_path("scripts")) / "widget-server"
BANNER_END = "Press Ctrl+C to stop."
DEMO_CAMPAIGNS = [
    "Cart saver: discount on exit with a full cart",
    "Similar products when leaving a product page",
    "Free shipping progress when hesitating in the cart",
    "Email capture for new visitors leaving without a cart",
    "Flash sale: live broadcast",
]


class Demo:
    """``widget-server demo`` started as a user starts it, its output read as it comes."""

    def __init__(self, data_dir: Path, port: int) -> None:
        env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
        env["WIDGET_DATA_DIR"] = str(data_dir)
        self.base = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            [WIDGET_SERVER, "demo", "--no-traffic", "--port", str(port)],
            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self._output: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, name="demo-output", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self._output.append(line.decode(errors="replace"))
                self._changed.notify_all()
        with self._changed:
            self._output.append("")  # the end of the output
            self._changed.notify_all()

    @property
    def output(self) -> str:
        with self._changed:
            return "".join(self._output)

    def banner(self, timeout: float = 60) -> str:
        """Everything printed up to the end of the banner; then wait until the server answers."""
        with self._changed:
            self._changed.wait_for(
                lambda: (
                    any(BANNER_END in line for line in self._output)
                    or (bool(self._output) and self._output[-1] == "")
                ),
                timeout=timeout,
            )
        printed = self.output
        assert BANNER_END in printed, f"the demo printed no banner:\n{printed[-4000:]}"
        wait_ready(self.base, self.process, timeout)
        return printed[: printed.index(BANNER_END)]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._reader.join(5)

    def __enter__(self) -> Demo:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def fresh_page(browser: Browser) -> Iterator[Callable[[], Page]]:
    """A page in a browser context of its own (no cookies); afterwards, none of them opened a
    dialog or logged an error (``Watched``)."""
    contexts: list[BrowserContext] = []
    watched: list[Watched] = []

    def make() -> Page:
        contexts.append(browser.new_context(viewport=DESKTOP))  # type: ignore[arg-type]
        watched.append(Watched(contexts[-1]))
        return watched[-1].page

    yield make
    try:
        for each in watched:
            each.check()
    finally:
        for context in contexts:
            context.close()


def open_admin(fresh_page: Callable[[], Page], admin_url: str) -> Page:
    """A new visitor at the printed admin URL: it is led to the sign-in page."""
    page = fresh_page()
    page.goto(admin_url)
    expect(page).to_have_url(re.compile(r"/admin/login\b"))
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    return page


def sign_in(page: Page, email: str, password: str) -> None:
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def signed_in_home(page: Page, base: str, email: str) -> None:
    """The admin home a new owner lands on: the demo shop's dashboard, with every campaign."""
    expect(page).to_have_url(f"{base}/admin/sites/demo/dashboard")
    expect(page.get_by_role("heading", name="Demo shop", exact=True)).to_be_visible()
    expect(page.get_by_role("banner")).to_contain_text(email)
    expect(page.get_by_role("heading", name="What the tool added")).to_be_visible()
    campaigns = page.locator("#campaigns")
    for name in DEMO_CAMPAIGNS:
        expect(campaigns.get_by_role("link", name=name, exact=True)).to_be_visible()
    page.get_by_role("navigation", name="Site").get_by_role("link", name="Campaigns").click()
    expect(page.get_by_role("heading", name="Campaigns of Demo shop")).to_be_visible()


def test_the_first_run_prints_a_password_that_signs_in_once(
    fresh_page: Callable[[], Page], tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"  # fresh: no account yet
    port = free_port()
    with Demo(data_dir, port) as first:
        printed = first.banner()
        found = re.search(r"Admin +(\S+) +sign in as (\S+), password (\S+)\n", printed)
        assert found is not None, f"the first run printed no password:\n{printed}"
        admin_url, email, password = found.groups()
        assert (admin_url, email) == (f"{first.base}/admin/", "owner@demo.example")
        assert printed.count(password) == 1

        # The printed URL, e-mail and password sign in; the owner sees the demo's campaigns.
        page = open_admin(fresh_page, admin_url)
        sign_in(page, email, password)
        signed_in_home(page, first.base, email)

        # A wrong password is refused in words, next to the form, and signs nobody in.
        page = open_admin(fresh_page, admin_url)
        sign_in(page, email, password + "x")
        expect(page.get_by_role("alert")).to_have_text("Wrong email or password.")
        expect(page.get_by_label("Email")).to_have_value(email)
        page.goto(f"{first.base}/admin/sites")
        expect(page).to_have_url(re.compile(r"/admin/login\b"))

    # The second start on the same data finds the account: no password; the first one works.
    with Demo(data_dir, port) as second:
        printed = second.banner()
        assert re.search(r"Admin +\S+ +\(sign in with your account\)\n", printed), printed
        assert "password" not in printed.lower(), printed
        page = open_admin(fresh_page, f"{second.base}/admin/")
        sign_in(page, email, password)
        signed_in_home(page, second.base, email)
    assert password not in second.output
