"""Helpers for the email tests: a real SMTP server, a mail context on the real Valkey, shoppers."""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import os
import secrets
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from starlette.applications import Starlette

from widget_server.mail.context import MailContext, MailSettings, build_mail_context
from widget_server.mail.flows import Budget, Flow, FlowStep, MailConfig, MailFlowStore
from widget_server.mail.jobs import MailJob, ScheduleResult
from widget_server.mail.routes import mail_routes
from widget_server.mail.send import MailTransport
from widget_server.mail.worker import process_job, run_worker
from widget_server.store.client import open_store
from widget_server.store.embedded import free_port
from widget_server.store.keys import Keys
from widget_server.store.scripts import Scripts
from widget_server.store.sites import SiteRegistry, new_site
from widget_server.visitors.session_view import SessionView
from widget_server.visitors.sessions import SessionStore
from widget_server.wire import protocol as p

from .support import ROOT, ServerProcess, SiteOwners, add_site

SECRET = "test-secret-key-that-is-long-enough"
PUBLIC_URL = "https://mail.test"
FROM = "shop@mail.test"


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes

    @property
    def message(self) -> EmailMessage:
        parsed = email.message_from_bytes(self.raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class SmtpSink:
    """A real SMTP server (aiosmtpd) on a free port that keeps every message it accepts.

    ``data_delay_s`` holds the reply to DATA after the message is stored (a slow relay);
    ``rcpt_replies`` answers RCPT for an address with the given replies, one per attempt.
    """

    data_delay_s: float = 0.0
    rcpt_replies: dict[str, list[str]] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    data_started: threading.Event = field(default_factory=threading.Event)
    port: int = 0
    _controller: Controller | None = None

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        replies = self.rcpt_replies.get(address)
        if replies:
            reply = replies.pop(0)
            if not reply.startswith("250"):
                return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append(
            Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.content)
        )
        self.data_started.set()
        if self.data_delay_s:
            await asyncio.sleep(self.data_delay_s)
        return "250 Message accepted"

    def __enter__(self) -> SmtpSink:
        self.port = free_port()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._controller is not None:
            self._controller.stop()

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}?timeout=10"

    def messages(self) -> list[EmailMessage]:
        return [r.message for r in self.received]

    def strays(self, sites: set[str]) -> list[str]:
        """Recipients of received messages that belong to none of ``sites``.

        Tests address their shoppers with :func:`address_for` (``name@SITE.test``), so a message
        for another test's site shows up here.
        """
        return [
            rcpt
            for r in self.received
            for rcpt in r.rcpt_tos
            if rcpt.rpartition("@")[2].removesuffix(".test") not in sites
        ]


def address_for(site: str, name: str) -> str:
    """A shopper's email address that names the test's site: ``name@SITE.test``."""
    return f"{name}@{site}.test"


# A budget that never holds an email back (no quiet hours), for tests about other things.
UNLIMITED = Budget(per_day=20, per_week=50, quiet_hours=None)


def fast_config(*delays_s: float, daily_cap: int = 20, **config: Any) -> MailConfig:
    """A cart flow with steps after ``delays_s`` seconds (subjects ``Step N``) and a browse flow,
    with the :data:`UNLIMITED` budget unless ``budget`` is given."""
    config.setdefault("budget", UNLIMITED)
    steps = [
        FlowStep(delay_minutes=d / 60, template="cart", subject=f"Step {i + 1} at {{shop}}")
        for i, d in enumerate(delays_s or (0.0,))
    ]
    return MailConfig(
        flows=[
            Flow(name="cart", kind="cart", steps=steps, daily_cap=daily_cap),
            Flow(
                name="browse",
                kind="browse",
                daily_cap=daily_cap,
                steps=[
                    FlowStep(delay_minutes=0, template="browse", subject="Still like {product}?")
                ],
            ),
        ],
        **config,
    )


@contextlib.asynccontextmanager
async def mail_context(
    redis_url: str, smtp_url: str = "", *, keys: Keys | None = None, **overrides: Any
) -> AsyncIterator[MailContext]:
    """A mail context with its own key prefix: its queue, sites and profiles are its own."""
    keys = keys or Keys(prefix="m" + secrets.token_hex(4))
    client = open_store(redis_url)
    values: dict[str, Any] = {
        "secret_key": SECRET,
        "public_url": PUBLIC_URL,
        "from_address": FROM,
        "smtp_url": smtp_url,
        "retry_base_s": 0.05,
        "lease_s": 30.0,
        "rate_per_minute": 6000.0,
        "rate_burst": 100,
    }
    values.update(overrides)
    try:
        yield build_mail_context(MailSettings(**values), client, keys)
    finally:
        await client.aclose()


@contextlib.asynccontextmanager
async def running_worker(ctx: MailContext, poll_s: float = 0.02) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(run_worker(ctx, stop=stop, poll_s=poll_s))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def work_due(
    ctx: MailContext, transport: MailTransport, *, until: float, start: float = 0.0
) -> list[tuple[float, MailJob, str]]:
    """The worker (``process_job``) on a simulated clock: from ``start`` it jumps to each due
    email, in time order, up to ``until``. Returns (moment, job, outcome) of each job handled;
    held emails come due again later and are handled again."""
    done: list[tuple[float, MailJob, str]] = []
    now = start
    while True:
        first = await ctx.redis.zrange(ctx.keys.mail_due(), 0, 0, withscores=True)
        if not first or first[0][1] > until:
            return done
        now = moment = max(now, first[0][1])
        for job in await ctx.scheduler.claim(moment, limit=10):
            outcome = await process_job(ctx, transport, job, lambda: moment)  # noqa: B023
            done.append((moment, job, outcome))


async def eventually(condition: Callable[[], Awaitable[bool]], within: float = 30.0) -> None:
    """Wait until an async ``condition`` holds (what the worker records, say), ``within`` s."""
    deadline = time.monotonic() + within
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def wait_until(condition: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def make_site(
    ctx: MailContext, origins: tuple[str, ...] = ("https://shop.test",), timezone: str = "UTC"
) -> str:
    """A new site in the context's key space; its name is its key."""
    key = "s" + secrets.token_hex(5)
    site = new_site(key, origins=list(origins), timezone=timezone)
    await SiteRegistry(ctx.redis, ctx.keys).save(site)
    SiteOwners.record(key)
    return key


def session_store(ctx: MailContext) -> SessionStore:
    return SessionStore(
        ctx.redis,
        Scripts.of(ctx.redis),
        ctx.keys,
        session_ttl_s=1800,
        profile_ttl_s=86400,
        presence_ttl_s=90,
    )


@dataclass
class Shopper:
    site: str
    visitor: str
    session_id: str
    store: SessionStore
    view: SessionView
    seq: int = 0

    async def send(self, message_type: type[Any], **fields: Any) -> SessionView:
        self.seq += 1
        message = message_type(id=f"m{self.seq}", **fields)
        self.view = await self.store.apply(
            self.site, self.visitor, self.session_id, message, now=time.time()
        )
        return self.view


async def shopper(
    ctx: MailContext,
    site: str,
    *,
    email_address: str = "ann@example.com",
    consent: bool = True,
    cart: list[p.CartItem] | None = None,
    views: list[p.Product] | None = None,
) -> Shopper:
    """A visitor with a real session and profile: identified, consent given, cart filled."""
    store = session_store(ctx)
    visitor = "v" + secrets.token_hex(8)
    opened = await store.open(
        site, visitor, now=time.time(), consent=p.Consent(analytics=True, marketing=consent)
    )
    who = Shopper(site, visitor, opened.session_id, store, opened.view)
    await who.send(p.Identify, email=email_address, consent=consent)
    default_cart = [p.CartItem(id="sku-1", quantity=2, price=25.0, title="Blue mug")]
    for item in default_cart if cart is None else cart:
        await who.send(p.CartAdd, item=item)
    for product in views or []:
        await who.send(p.ProductView, product=product)
    return who


@dataclass
class Scenario:
    """One email test: an SMTP sink, a mail context with its own key space, one site."""

    ctx: MailContext
    sink: SmtpSink
    site: str

    async def shopper(self, **kw: Any) -> Shopper:
        return await shopper(self.ctx, self.site, **kw)

    async def leave(self, who: Shopper) -> ScheduleResult:
        return await self.ctx.scheduler.visitor_left_from_view(
            self.site, who.visitor, who.view, now=time.time()
        )

    async def stats(self, flow: str = "cart") -> dict[str, int]:
        raw = await self.ctx.redis.hgetall(self.ctx.keys.mail_stats(self.site, flow))
        return {k.decode(): int(v) for k, v in raw.items()}

    def client(self) -> httpx.AsyncClient:
        """An HTTP client for a Starlette app made of the mail routes."""
        app = Starlette(routes=mail_routes(lambda: self.ctx))
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=PUBLIC_URL)


def scenario(
    redis_url: str,
    body: Callable[[Scenario], Awaitable[None]],
    *,
    config: MailConfig | None = None,
    sink: SmtpSink | None = None,
    **settings: Any,
) -> None:
    async def main() -> None:
        with sink or SmtpSink() as smtp:
            async with mail_context(redis_url, smtp.url, **settings) as ctx:
                site = await make_site(ctx)
                await ctx.flows.save(site, config or fast_config(0))
                await body(Scenario(ctx, smtp, site))

    asyncio.run(main())


@dataclass
class IsolatedShop:
    """A server and a ``widget-server worker`` with a Redis key prefix of their own, sending to
    an SMTP sink of their own: no other test's sites, visitors, email jobs or messages can reach
    this test, even when one of them leaves a visitor whose email falls due later."""

    server: ServerProcess
    sink: SmtpSink
    keys: Keys
    sites: set[str] = field(default_factory=set)

    def add_site(self) -> str:
        site = add_site(self.server.redis_url, keys=self.keys)
        self.sites.add(site)
        return site

    def site_with_fast_flows(self, delay_s: float) -> str:
        """A site whose cart email goes ``delay_s`` seconds after the visitor leaves."""
        site = self.add_site()

        async def save() -> None:
            client = open_store(self.server.redis_url)
            try:
                await MailFlowStore(client, self.keys).save(site, fast_config(delay_s))
            finally:
                await client.aclose()

        asyncio.run(save())
        return site

    def site_secret(self, site: str) -> str:
        async def read() -> str:
            client = open_store(self.server.redis_url)
            try:
                found = await SiteRegistry(client, self.keys).get(site)
            finally:
                await client.aclose()
            assert found is not None
            return found.secret

        return asyncio.run(read())

    def received_for(self, site: str) -> list[Received]:
        return [
            r for r in self.sink.received if all(a.endswith(f"@{site}.test") for a in r.rcpt_tos)
        ]


@contextlib.contextmanager
def isolated_shop(
    redis_url: str, directory: Path, extra_env: dict[str, str] | None = None
) -> Iterator[IsolatedShop]:
    """Start an :class:`IsolatedShop` (``extra_env``: more settings for the server and the
    worker); on the way out, fail if its SMTP server saw a message for a site the test did not
    make."""
    keys = Keys(prefix="i" + secrets.token_hex(4))
    secret = {"WIDGET_SECRET_KEY": secrets.token_urlsafe(32), **(extra_env or {})}
    with SmtpSink() as sink:
        server = ServerProcess(
            redis_url, directory / "server", WIDGET_REDIS_PREFIX=keys.prefix, **secret
        )
        log_path = directory / "worker.log"
        env = {
            **os.environ,
            **secret,
            "REDIS_URL": redis_url,
            "WIDGET_DATA_DIR": str(directory / "worker"),
            "WIDGET_REDIS_PREFIX": keys.prefix,
            "SMTP_URL": sink.url,
            "MAIL_FROM": "shop@example.com",
            "MAIL_PUBLIC_URL": server.url,
            "WIDGET_LOG_LEVEL": "info",
        }
        with log_path.open("wb") as log:  # the worker starts while the server does
            worker = subprocess.Popen(
                [sys.executable, "-m", "widget_server.cli", "worker"],
                env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            server.start()
        except BaseException:
            worker.kill()
            worker.wait(15)
            raise
        shop = IsolatedShop(server, sink, keys)
        try:
            # Ready once it says so: a stop signal before then would not be a clean shutdown.
            deadline = time.monotonic() + 30
            while "mail worker started" not in log_path.read_text():
                assert worker.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.05)
            yield shop
        finally:
            worker.terminate()
            code = worker.wait(15)
            server.stop()
        assert code == 0, log_path.read_text()
        strays = sink.strays(shop.sites)
        assert not strays, f"this test's SMTP server got messages for other sites: {strays}"


@dataclass
class TlsSmtpSink(SmtpSink):
    """:class:`SmtpSink` speaking TLS with a certificate for 127.0.0.1 from ``ca`` (a throwaway
    trustme CA): ``mode`` ``starttls`` (offered and required before MAIL), ``implicit`` (TLS
    from the first byte, as on port 465) or ``none`` (plain, STARTTLS not offered).

    With ``users`` every client must log in (``AUTH PLAIN``/``LOGIN``). ``auth_attempts``
    records each login as ``(user, password, over_tls)``; ``tls_versions`` the TLS version
    each accepted message came over (``""`` for plain text).
    """

    ca: trustme.CA | None = None
    mode: str = "starttls"
    users: dict[str, str] = field(default_factory=dict)
    auth_attempts: list[tuple[str, str, bool]] = field(default_factory=list)
    tls_versions: list[str] = field(default_factory=list)

    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        user = auth_data.login.decode("utf-8", "replace")
        password = auth_data.password.decode("utf-8", "replace")
        self.auth_attempts.append((user, password, _tls_version(server) != ""))
        ok = user in self.users and self.users[user] == password
        return AuthResult(success=ok, handled=False, auth_data=user if ok else None)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.tls_versions.append(_tls_version(server))
        return await super().handle_DATA(server, session, envelope)

    def __enter__(self) -> TlsSmtpSink:
        self.ca = self.ca or trustme.CA()
        server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_context)
        options: dict[str, Any] = {}
        if self.users:
            options.update(authenticator=self._authenticate, auth_required=True)
        if self.mode == "starttls":
            options.update(tls_context=server_context, require_starttls=True)
        else:  # implicit TLS is TLS from the start; plain mode lets a careless client log in
            options.update(auth_require_tls=False)
        self.port = free_port()
        self._controller = Controller(
            self,
            hostname="127.0.0.1",
            port=self.port,
            ssl_context=server_context if self.mode == "implicit" else None,
            **options,
        )
        self._controller.start()
        return self

    def url_for(self, scheme: str, userinfo: str = "", **query: str) -> str:
        """An SMTP_URL for this server: ``userinfo`` as written (already percent-encoded)."""
        at = f"{userinfo}@" if userinfo else ""
        params = urlencode({"timeout": "10", **query})
        return f"{scheme}://{at}127.0.0.1:{self.port}?{params}"

    def ca_file(self, directory: Path) -> Path:
        """Write the CA certificate as PEM into ``directory``; return its path."""
        assert self.ca is not None, "enter the sink first"
        path = directory / "smtp-ca.pem"
        self.ca.cert_pem.write_to_path(str(path))
        return path


def _tls_version(server: Any) -> str:
    transport = getattr(server, "transport", None)
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    return str(ssl_object.version()) if ssl_object is not None else ""
