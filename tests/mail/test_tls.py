"""SMTP over TLS against a real aiosmtpd server with a certificate from a throwaway CA: STARTTLS
and implicit TLS delivery with a login, untrusted certificates, a server without STARTTLS and a
wrong password, each through the real worker or the real transport."""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import trustme

from widget_server.errors import ConfigurationError
from widget_server.mail.message import RenderedEmail, build_message
from widget_server.mail.send import SmtpTransport, TransientSendError, parse_smtp_url
from widget_server.wire import protocol as p

from ..mail_support import (
    FROM,
    PUBLIC_URL,
    Scenario,
    TlsSmtpSink,
    fast_config,
    mail_context,
    make_site,
    running_worker,
    wait_until,
)

# aiosmtpd cannot tell that an implicit-TLS connection is encrypted, and warns about AUTH on it.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")

USER = "shop@mail.test"
# Every character that means something in a URL, and some that are not ASCII.
PASSWORD = "p@ss:w/rd?#%+ ü&="
USERINFO = f"{quote(USER, safe='')}:{quote(PASSWORD, safe='')}"


def tls_scenario(
    redis_url: str,
    sink: TlsSmtpSink,
    url: Callable[[TlsSmtpSink], str],
    body: Callable[[Scenario], Awaitable[None]],
    **settings: Any,
) -> None:
    """Run ``body`` with a mail context sending to ``url(sink)`` and one site with a cart flow."""

    async def main() -> None:
        with sink:
            async with mail_context(redis_url, url(sink), **settings) as ctx:
                site = await make_site(ctx)
                await ctx.flows.save(site, fast_config(0))
                await body(Scenario(ctx, sink, site))

    asyncio.run(main())


def a_message(to: str = "ann@example.com") -> Any:
    return build_message(
        from_address=FROM,
        from_name="Shop",
        to=to,
        rendered=RenderedEmail("Hello", "<p>Hello</p>", "Hello"),
        unsubscribe_url=f"{PUBLIC_URL}/v1/mail/unsubscribe?t=x",
        now=time.time(),
    )


def send_directly(url: str) -> None:
    """Send one message through the transport built from ``url``; raise what it raises."""
    transport = SmtpTransport(parse_smtp_url(url))
    asyncio.run(transport.send(a_message(), sender=FROM, recipient="ann@example.com"))


@pytest.mark.parametrize(("mode", "scheme"), [("starttls", "smtp+starttls"), ("implicit", "smtps")])
def test_tls_delivery_with_the_login_from_the_url(
    redis_url: str, tmp_path: Path, mode: str, scheme: str
) -> None:
    sink = TlsSmtpSink(mode=mode, users={USER: PASSWORD})

    def url(s: TlsSmtpSink) -> str:
        return s.url_for(scheme, USERINFO, ca_file=str(s.ca_file(tmp_path)))

    async def body(s: Scenario) -> None:
        who = await s.shopper(cart=[p.CartItem(id="mug", quantity=1, price=12.0, title="Mug")])
        await s.leave(who)
        async with running_worker(s.ctx):
            await wait_until(lambda: len(sink.received) == 1)
        assert sink.received[0].rcpt_tos == ["ann@example.com"]
        assert "Mug" in sink.received[0].message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        # The password arrived intact (decoded from the URL) and only after TLS was up.
        assert sink.auth_attempts == [(USER, PASSWORD, True)]
        assert sink.tls_versions[0].startswith("TLSv1.")
        assert await s.stats() == {"sent:0": 1}

    tls_scenario(redis_url, sink, url, body)


@pytest.mark.parametrize(
    ("mode", "scheme", "trusted"),
    [
        ("starttls", "smtp+starttls", "system CAs only"),
        ("implicit", "smtps", "another CA"),
    ],
)
def test_untrusted_certificate_is_a_transient_failure_and_nothing_is_marked_sent(
    redis_url: str, tmp_path: Path, mode: str, scheme: str, trusted: str
) -> None:
    sink = TlsSmtpSink(mode=mode, users={USER: PASSWORD})
    other = TlsSmtpSink(ca=trustme.CA())

    def url(s: TlsSmtpSink) -> str:
        if trusted == "another CA":
            return s.url_for(scheme, USERINFO, ca_file=str(other.ca_file(tmp_path)))
        return s.url_for(scheme, USERINFO)

    async def body(s: Scenario) -> None:
        who = await s.shopper()
        await s.leave(who)
        async with running_worker(s.ctx):
            await wait_until(lambda: s.ctx.metrics.retries._value.get() >= 1)
        [job] = await s.ctx.scheduler.pending(s.site, who.visitor)
        assert int(job["attempts"]) >= 1
        assert "certificate that is not trusted" in job["error"]
        assert "ca_file" in job["error"]  # says how to trust a private CA
        assert not await s.ctx.redis.exists(s.ctx.keys.mail_sent(s.site, who.visitor))
        daily = await s.ctx.redis.hgetall(s.ctx.keys.mail_daily(s.site, who.visitor))
        assert set(daily.values()) <= {b"0"}  # the daily cap is not used up either
        assert await s.stats() == {}
        assert sink.received == []
        assert sink.auth_attempts == []  # the credentials never went to that server

    tls_scenario(redis_url, sink, url, body, retry_base_s=60.0)


def test_starttls_required_but_not_offered_sends_nothing(redis_url: str) -> None:
    with TlsSmtpSink(mode="none", users={USER: PASSWORD}) as sink:
        with pytest.raises(TransientSendError) as error:
            send_directly(sink.url_for("smtp+starttls", USERINFO))
        assert "does not offer STARTTLS" in str(error.value)
        assert sink.received == [] and sink.auth_attempts == []
        # The same server takes the message when plain SMTP is asked for: the refusal above
        # came from the missing STARTTLS, not from a broken server.
        send_directly(sink.url_for("smtp", USERINFO))
        assert len(sink.received) == 1 and sink.tls_versions == [""]


def test_wrong_password_is_transient_and_never_shown(
    redis_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "not-the-Secret-42"
    sink = TlsSmtpSink(mode="starttls", users={USER: PASSWORD})
    userinfo = f"{quote(USER, safe='')}:{wrong}"

    def url(s: TlsSmtpSink) -> str:
        return s.url_for("smtp+starttls", userinfo, ca_file=str(s.ca_file(tmp_path)))

    async def body(s: Scenario) -> None:
        with pytest.raises(TransientSendError) as error:
            await s.ctx.require_sending().send(
                a_message(), sender=FROM, recipient="ann@example.com"
            )
        everything = "".join(traceback.format_exception(error.value)) + repr(error.value)
        assert "login" in str(error.value) and "535" in str(error.value)
        assert wrong not in everything
        assert wrong not in repr(s.ctx.require_sending().config)  # type: ignore[attr-defined]
        who = await s.shopper()
        await s.leave(who)
        with caplog.at_level(logging.DEBUG, logger="widget_server"):
            async with running_worker(s.ctx):
                await wait_until(lambda: "gave up" in caplog.text)
        assert "SMTP login" in caplog.text  # the give-up warning carries the reason...
        assert wrong not in caplog.text  # ...but never the password
        assert sink.received == []
        # Each send tried to log in (over TLS, with the password given), and got no further.
        assert len(sink.auth_attempts) >= 2
        assert {attempt[1:] for attempt in sink.auth_attempts} == {(wrong, True)}

    tls_scenario(redis_url, sink, url, body, max_attempts=1)


def test_ca_file_must_be_usable_and_needs_tls(tmp_path: Path) -> None:
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello\n")
    cases = {
        f"smtps://u:hunter2@x?ca_file={tmp_path / 'missing.pem'}": "No such file",
        f"smtps://u:hunter2@x?ca_file={not_pem}": "no PEM certificate",
        f"smtp://u:hunter2@x?ca_file={not_pem}": "needs smtp+starttls:// or smtps://",
        "smtps://u:hunter2@x?timeout=0": "timeout must be between",
        "smtps://u:hunter2@x?timeout=nan": "timeout must be between",
    }
    for url, message in cases.items():
        with pytest.raises(ConfigurationError) as error:
            parse_smtp_url(url)
        assert message in str(error.value)
        assert "hunter2" not in str(error.value)


def test_smtps_against_a_starttls_port_names_the_likely_mistake() -> None:
    with TlsSmtpSink(mode="starttls", users={USER: PASSWORD}) as sink:
        with pytest.raises(TransientSendError) as error:
            send_directly(sink.url_for("smtps", USERINFO))
        assert "rather than smtps://" in str(error.value)
        assert sink.received == [] and sink.auth_attempts == []
