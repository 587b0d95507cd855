"""The email job queue and its parts: scheduling, leases, commits, caps, tokens, transports."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from widget_server.errors import ConfigurationError
from widget_server.mail.context import MailContext, mail_settings_from_env
from widget_server.mail.flows import (
    Flow,
    FlowStep,
    MailConfig,
    MailConfigError,
    in_holdout,
    load_config,
)
from widget_server.mail.message import RenderedEmail, build_message
from widget_server.mail.once import MAX_CLAIMS
from widget_server.mail.send import (
    DomainRateLimiter,
    PermanentSendError,
    TransientSendError,
    WebhookTransport,
    parse_smtp_url,
    webhook_signature,
)
from widget_server.mail.tokens import BadToken, ExpiredToken, LinkSigner, with_utm
from widget_server.settings import Settings
from widget_server.store.scripts import Scripts
from widget_server.visitors.session_view import CartLine

from ..mail_support import SECRET, fast_config, mail_context, make_site
from ..support import new_visitor

T = TypeVar("T")
CART = [CartLine("sku-1", 1, 10.0, "Mug", "", "")]


def on_valkey(redis_url: str, body: Callable[[MailContext], Awaitable[T]]) -> T:
    async def main() -> T:
        async with mail_context(redis_url) as ctx:
            return await body(ctx)

    return asyncio.run(main())


def test_leaving_twice_reschedules_the_same_jobs_and_skips_sent_steps(redis_url: str) -> None:
    visitor = new_visitor()

    async def body(ctx: MailContext) -> None:
        site = await make_site(ctx)
        s = ctx.scheduler
        await ctx.flows.save(site, fast_config(60, 120, 180))
        first = await s.visitor_left(
            site, visitor, now=1000.0, cart=CART, email="a@x.de", consent=True
        )
        second = await s.visitor_left(
            site, visitor, now=2000.0, cart=CART, email="a@x.de", consent=True
        )
        assert first.job_ids == second.job_ids and len(first.job_ids) == 3
        assert [float(j["due"]) for j in await s.pending(site, visitor)] == [2060.0, 2120.0, 2180.0]
        [job] = await s.claim(2060.0, limit=5)
        assert job.step == 0 and job.cart == tuple(CART) and job.email == "a@x.de"
        assert await s.commit(job, now=2060.0, daily_cap=5) == "ok"
        assert await s.complete(job)
        again = await s.visitor_left(
            site, visitor, now=3000.0, cart=CART, email="a@x.de", consent=True
        )
        assert [i.rsplit(":", 1)[1] for i in again.job_ids] == ["1", "2"]

    on_valkey(redis_url, body)


def test_flow_choice_consent_suppression_and_holdout(redis_url: str) -> None:

    async def body(ctx: MailContext) -> None:
        site = await make_site(ctx)
        s = ctx.scheduler
        config = fast_config(0).model_copy(
            update={
                "flows": [
                    *fast_config(0).flows,
                    Flow(
                        name="checkout",
                        kind="checkout",
                        steps=[FlowStep(delay_minutes=0, template="cart", subject="Checkout")],
                    ),
                    Flow(
                        name="never",
                        kind="cart",
                        enabled=False,
                        steps=[FlowStep(delay_minutes=0, template="cart", subject="x")],
                    ),
                ]
            }
        )
        await ctx.flows.save(site, config)

        async def left(**kw: object) -> str:
            args: dict[str, object] = {
                "now": 10.0,
                "cart": CART,
                "email": "b@x.de",
                "consent": True,
            }
            result = await s.visitor_left(site, new_visitor(), **{**args, **kw})  # type: ignore[arg-type]
            return result.flow if result.outcome == "scheduled" else result.outcome

        assert await left() == "cart"
        assert await left(checkout=True) == "checkout"
        assert await left(cart=[], product_views=2) == "browse"
        assert await left(cart=[], product_views=1) == "nothing_abandoned"
        assert await left(consent=False) == "no_consent"
        assert await left(email=None) == "no_email"
        await s.suppress(site, "B@X.de", "complained")
        assert await left() == "suppressed"

        held = Flow(
            name="cart",
            kind="cart",
            holdout=0.5,
            steps=[FlowStep(delay_minutes=0, template="cart", subject="x")],
        )
        await ctx.flows.save(site, MailConfig(flows=[held]))
        outcomes = [await left(email=f"h{i}@x.de") for i in range(60)]
        assert set(outcomes) == {"cart", "holdout"}
        assert 15 < outcomes.count("holdout") < 45

    on_valkey(redis_url, body)


def test_holdout_is_stable_and_close_to_its_share() -> None:
    flow = Flow(
        name="f",
        kind="cart",
        holdout=0.3,
        steps=[FlowStep(delay_minutes=0, template="cart", subject="x")],
    )
    held = [in_holdout("s", f"visitor-{i}", flow) for i in range(4000)]
    assert 0.27 < sum(held) / len(held) < 0.33
    assert held == [in_holdout("s", f"visitor-{i}", flow) for i in range(4000)]


def test_leases_tokens_commit_and_daily_cap(redis_url: str) -> None:
    visitor = new_visitor()

    async def body(ctx: MailContext) -> None:
        site = await make_site(ctx)
        s = ctx.scheduler
        await ctx.flows.save(site, fast_config(0, 0, 0))
        await s.visitor_left(site, visitor, now=100.0, cart=CART, email="c@x.de", consent=True)
        assert len(await s.due(100.0)) == 3
        jobs = await s.claim(100.0, limit=10, lease_s=5.0)
        assert len(jobs) == 3 and await s.claim(101.0) == [] and await s.due(101.0) == []
        outcomes = [await s.commit(job, now=101.0, daily_cap=2) for job in jobs]
        assert outcomes == ["ok", "ok", "capped"]
        # The lease of the third runs out; the reaper hands it over with a new token.
        retaken = await s.claim(106.0, limit=10)
        assert {j.id for j in retaken} == {j.id for j in jobs}
        assert all(new.token != old.token for new, old in zip(retaken, jobs, strict=False))
        assert await s.commit(jobs[2], now=106.0, daily_cap=9) == "lost"
        first = next(j for j in retaken if j.step == 0)
        assert await s.commit(first, now=106.0, daily_cap=9) == "already_sent"
        # A failure certainly before delivery undoes the mark: the step may go out again.
        third = next(j for j in retaken if j.step == 2)
        assert await s.commit(third, now=106.0, daily_cap=9) == "ok"
        assert await s.fail(third, retry_at=107.0, error="451", uncommit=True)
        [back] = await s.claim(107.0)
        assert back.attempts == 1 and back.step == 2
        assert await s.commit(back, now=107.0, daily_cap=9) == "ok"

    on_valkey(redis_url, body)


def test_scripts_refuse_job_lists_that_changed_since_they_were_read(redis_url: str) -> None:
    """The queue's scripts get the job keys from the caller, who read the ids just before: a list
    that no longer matches is refused (cancel, schedule) or its stale ids skipped (claim), so a
    job is never cancelled, replaced or claimed on an outdated read."""
    visitor = new_visitor()

    async def body(ctx: MailContext) -> None:
        site = await make_site(ctx)
        s, k = ctx.scheduler, ctx.keys
        scripts = Scripts.of(ctx.redis)
        await ctx.flows.save(site, fast_config(0, 0))
        left = await s.visitor_left(
            site, visitor, now=100.0, cart=CART, email="d@x.de", consent=True
        )
        first, second = left.job_ids
        jobs = k.mail_visitor_jobs(site, visitor)
        head = [k.mail_due(), k.mail_leases(), jobs]
        # Cancel with one job missing from the list: refused, nothing touched.
        assert (
            await scripts.mailjob_cancel(keys=[*head, k.mail_job(first)], args=["all", "", first])
            == -1
        )
        assert len(await s.pending(site, visitor)) == 2
        # Schedule with a list that misses a job: refused too.
        assert await scripts.mailjob_schedule(
            keys=[k.mail_due(), k.mail_leases(), k.mail_sent(site, visitor), jobs,
                  k.mail_job(first)],
            args=[60, "100.0", "[]", first],
        ) == -1  # fmt: skip
        # Another worker claims the first job after this one read both as due: only the second
        # is claimed here, and the first is not claimed twice.
        [taken] = await s.claim(100.0, limit=1)
        assert taken.id == first
        rows = await scripts.mailjob_claim(
            keys=[k.mail_due(), k.mail_leases(), k.mail_job(first), k.mail_job(second)],
            args=["100.0", "60", 10, "seed", 0, first, second],
        )
        assert [row[0].decode() for row in rows] == [second]

    on_valkey(redis_url, body)


def test_a_job_held_again_and_again_is_never_taken_for_poison(redis_url: str) -> None:
    """Holds (quiet hours, budget, priority, the domain's rate) end a claim cleanly: only claims
    that never finish (a worker dying mid-job) count toward the poison limit."""
    visitor = new_visitor()

    async def body(ctx: MailContext) -> None:
        site = await make_site(ctx)
        s = ctx.scheduler
        await ctx.flows.save(site, fast_config(0, 0))
        left = await s.visitor_left(site, visitor, now=100.0, cart=CART, email="p@x.de",
                                    consent=True)  # fmt: skip
        first = left.job_ids[0]
        moment = 100.0
        for _ in range(MAX_CLAIMS + 5):
            [job] = [j for j in await s.claim(moment, limit=5) if j.id == first]
            assert job.claims == 1
            assert await s.defer(job, until=moment + 60)
            moment += 60
        # A claim whose lease runs out without an answer still counts.
        [job] = [j for j in await s.claim(moment, limit=5, lease_s=10) if j.id == first]
        [again] = [j for j in await s.claim(moment + 11, limit=5) if j.id == first]
        assert again.claims == 2

    on_valkey(redis_url, body)


def test_forget_and_withdrawal(redis_url: str) -> None:
    visitor = new_visitor()

    async def body(ctx: MailContext) -> None:
        site = await make_site(ctx)
        s = ctx.scheduler
        await ctx.flows.save(site, fast_config(0, 60))
        await s.visitor_left(site, visitor, now=100.0, cart=CART, email="d@x.de", consent=True)
        [job] = await s.claim(100.0)
        assert await s.commit(job, now=100.0, daily_cap=9) == "ok"
        # Suppressing cancels the pending step and the claimed one alike.
        assert await s.suppress(site, "d@x.de", "unsubscribed") == 2
        assert await s.commit(job, now=100.0, daily_cap=9) == "lost"
        await s.visitor_left(site, visitor, now=100.0, cart=CART, email="d2@x.de", consent=True)
        assert await s.forget(site, visitor) == 1
        assert await s.pending(site, visitor) == []
        assert not await ctx.redis.exists(ctx.keys.mail_sent(site, visitor))
        assert await s.suppression(site, "D@x.de") == "unsubscribed", "outlives erasure"

        other = new_visitor()
        await s.visitor_left(site, other, now=200.0, cart=CART, email="e@x.de", consent=True)
        [job] = await s.claim(200.0)
        await s.consent_withdrawn(site, other, now=201.0)
        assert await s.commit(job, now=202.0, daily_cap=9) == "lost"
        # Even a job that escaped the cancel (scheduled before the withdrawal) cannot commit.
        await s.visitor_left(site, other, now=203.0, cart=CART, email="e@x.de", consent=True)
        [job] = await s.claim(203.0)
        await ctx.redis.hset(ctx.keys.mail_withdrawn(site), other, "204.0")
        assert await s.commit(job, now=205.0, daily_cap=9) == "withdrawn"

    on_valkey(redis_url, body)


def test_domain_rate_limit(redis_url: str) -> None:
    async def body(ctx: MailContext) -> None:
        limiter = DomainRateLimiter(ctx.redis, ctx.keys, per_minute=60, burst=2)
        domain = f"{new_visitor()}.example"
        assert [await limiter.acquire(domain, 100.0) for _ in range(2)] == [0.0, 0.0]
        assert await limiter.acquire(domain, 100.0) == pytest.approx(1.0, abs=0.01)
        assert await limiter.acquire(domain, 102.5) == 0.0

    on_valkey(redis_url, body)


def test_tokens_refuse_tampering_other_purposes_and_time() -> None:
    signer = LinkSigner(SECRET)
    token = signer.sign("click", {"u": "https://shop.test/a"}, expires=1000)
    assert signer.verify("click", token, now=999)["u"] == "https://shop.test/a"
    with pytest.raises(ExpiredToken) as expired:
        signer.verify("click", token, now=1001)
    assert expired.value.payload["u"] == "https://shop.test/a"
    body, mac = token.split(".")
    forged = json.dumps({"u": "https://evil.test", "x": 1000}).encode()
    forged_body = base64.urlsafe_b64encode(forged).rstrip(b"=").decode()
    for bad in (f"{forged_body}.{mac}", f"{body}.{mac[:-2]}", token + ".", "", "a.b"):
        with pytest.raises(BadToken):
            signer.verify("click", bad, now=0)
    with pytest.raises(BadToken):
        signer.verify("unsub", token, now=0)
    with pytest.raises(BadToken):
        LinkSigner("another-secret-key-long-enough").verify("click", token, now=0)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_random_tokens_never_verify(garbage: str) -> None:
    with pytest.raises(BadToken):
        LinkSigner(SECRET).verify("click", garbage, now=0)


def test_utm_tags_replace_and_keep_the_query() -> None:
    url = with_utm("https://shop.test/p?id=1&utm_source=old", source="mail", campaign="cart")
    assert url == "https://shop.test/p?id=1&utm_source=mail&utm_campaign=cart"


def test_smtp_urls() -> None:
    assert parse_smtp_url("smtp://relay.local") == parse_smtp_url("smtp://relay.local:25")
    c = parse_smtp_url("smtp+starttls://user%40x.de:p%3Ass@mail.x.de?timeout=5")
    assert (c.host, c.port, c.username, c.password, c.tls, c.timeout_s) == (
        "mail.x.de",
        587,
        "user@x.de",
        "p:ss",
        "starttls",
        5.0,
    )
    assert parse_smtp_url("smtps://u:p@mail.x.de").port == 465
    assert parse_smtp_url("smtps://u:p@mail.x.de").tls == "implicit"
    for bad in (
        "http://u:hunter2@x",
        "smtp://",
        "smtp://u:hunter2@x:99999",
        "smtp://u:hunter2@x?timeout=soon",
    ):
        with pytest.raises(ConfigurationError) as error:
            parse_smtp_url(bad)
        assert "hunter2" not in str(error.value)


def test_mail_settings_from_env() -> None:
    base = Settings(secret_key=SECRET)
    settings = mail_settings_from_env(
        {
            "SMTP_URL": "smtp://localhost:2525",
            "MAIL_FROM": "shop@x.de",
            "MAIL_PUBLIC_URL": "https://w.x.de/",
            "MAIL_RATE_PER_DOMAIN": "30",
        },
        base,
    )
    assert settings.public_url == "https://w.x.de" and settings.rate_per_minute == 30
    for env in (
        {"MAIL_FROM": "a@b.c\r\nBcc: x@y.z"},
        {"MAIL_PUBLIC_URL": "ftp://x"},
        {"SMTP_URL": "imap://x"},
        {"MAIL_LEASE": "1"},
    ):
        with pytest.raises(ConfigurationError):
            mail_settings_from_env(env, base)


def test_flow_config_json_and_its_errors() -> None:
    config = load_config(
        json.dumps(
            {
                "flows": [
                    {
                        "name": "cart",
                        "kind": "cart",
                        "holdout": 0.1,
                        "daily_cap": 1,
                        "steps": [
                            {
                                "delay_minutes": 30,
                                "template": "cart",
                                "subject": {"en": "Hi", "de": "Hallo"},
                            }
                        ],
                    }
                ]
            }
        )
    )
    assert config.flows[0].steps[0].subject_for("de-CH") == "Hallo"
    bad_configs = {
        "steps": {
            "flows": [
                {
                    "name": "c",
                    "kind": "cart",
                    "steps": [
                        {"delay_minutes": 60, "template": "cart", "subject": "a"},
                        {"delay_minutes": 30, "template": "cart", "subject": "b"},
                    ],
                }
            ]
        },
        "subject": {
            "flows": [
                {
                    "name": "c",
                    "kind": "cart",
                    "steps": [
                        {"delay_minutes": 1, "template": "cart", "subject": "a\r\nBcc: x@y.z"}
                    ],
                }
            ]
        },
        "template": {
            "flows": [
                {
                    "name": "c",
                    "kind": "cart",
                    "steps": [{"delay_minutes": 1, "template": "../etc/passwd", "subject": "a"}],
                }
            ]
        },
        "kind": {"flows": [{"name": "c", "kind": "sms", "steps": []}]},
    }
    for field, raw in bad_configs.items():
        with pytest.raises(MailConfigError, match=field):
            load_config(json.dumps(raw))


def test_webhook_transport_signs_and_classifies() -> None:
    seen: list[httpx.Request] = []
    answers = iter([200, 503, 400])

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(next(answers))

    message = build_message(
        from_address="shop@x.de",
        from_name="Shop",
        to="f@x.de",
        now=time.time(),
        rendered=RenderedEmail("Hi", "<p>Hi</p>", "Hi"),
        unsubscribe_url="https://w.x.de/v1/mail/unsubscribe?t=abc",
    )

    async def main() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            hook = WebhookTransport("https://hooks.x.de/mail", "hook-secret", client)
            await hook.send(message, sender="shop@x.de", recipient="f@x.de")
            with pytest.raises(TransientSendError):
                await hook.send(message, sender="shop@x.de", recipient="f@x.de")
            with pytest.raises(PermanentSendError):
                await hook.send(message, sender="shop@x.de", recipient="f@x.de")

    asyncio.run(main())
    request = seen[0]
    stamp = request.headers["x-widget-timestamp"]
    assert request.headers["x-widget-signature"] == webhook_signature(
        "hook-secret", stamp, request.content
    )
    body = json.loads(request.content)
    assert body["to"] == "f@x.de" and body["html"].strip() == "<p>Hi</p>"
    assert body["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
