"""``widget-server mail send-test``: the real command in a child process, the real Valkey and a
real SMTP server (aiosmtpd). A test email arrives like a real one, marked as a test; hostile
addresses and missing settings are refused with a clear message; nothing a real email depends
on (queue, sent marks, daily caps, rate buckets, statistics) is touched."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import quote

import pytest
import redis
from redis.asyncio import Redis

from widget_server.mail.flows import MailFlowStore
from widget_server.mail.jobs import MailScheduler
from widget_server.store.keys import Keys

from ..mail_support import SmtpSink, TlsSmtpSink
from ..support import ROOT, add_site

pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``widget-server ARGS`` with only the given mail settings (none from the outside)."""
    full_env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MAIL_", "SMTP_", "REDIS_", "SSL_CERT"))
    }
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "widget_server.cli", *args],
        env=full_env, capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as smtp:
        yield smtp


def mail_env(redis_url: str, tmp_path: Path, smtp_url: str) -> dict[str, str]:
    return {
        "REDIS_URL": redis_url,
        "WIDGET_DATA_DIR": str(tmp_path / "data"),
        "SMTP_URL": smtp_url,
        "MAIL_FROM": "shop@mail.test",
        "MAIL_PUBLIC_URL": "https://mail.test",
    }


def part(message: EmailMessage, kind: str) -> str:
    body = message.get_body(preferencelist=(kind,))
    assert body is not None, f"no {kind} part"
    return str(body.get_content())


def state_of(r: redis.Redis, site: str, domain: str) -> dict[str, object]:
    """Everything a real email reads or writes for this site and recipient domain."""
    keys = Keys()
    return {
        "site keys": sorted(r.scan_iter(match=f"*{site}*", count=1000)),
        "due": r.zcard(keys.mail_due()),
        "leases": r.zcard(keys.mail_leases()),
        "rate": r.exists(keys.mail_rate(domain)),
    }


def unsubscribe(redis_url: str, site: str, address: str) -> None:
    async def run() -> None:
        client = Redis.from_url(redis_url)
        keys = Keys()
        try:
            scheduler = MailScheduler(client, keys, MailFlowStore(client, keys))
            await scheduler.unsubscribed(site, address)
        finally:
            await client.aclose()

    asyncio.run(run())


def test_test_email_arrives_like_a_real_one_marked_as_a_test(
    redis_url: str, r: redis.Redis, tmp_path: Path, sink: SmtpSink
) -> None:
    site = add_site(redis_url)
    to = f"tester@{site}.example.com"
    before = state_of(r, site, f"{site}.example.com")
    env = mail_env(redis_url, tmp_path, sink.url)
    sent = cli("mail", "send-test", "--site", site, "--to", to, env=env)
    assert sent.returncode == 0, sent.stderr
    assert f"sent a test of cart step 1 (en) of {site} to {to}" in sent.stdout
    assert f"SMTP 127.0.0.1:{sink.port} (no TLS)" in sent.stdout
    german = cli(
        "mail", "send-test", "--site", site, "--to", to, "--flow", "browse", "--locale", "de",
        env=env,
    )  # fmt: skip
    assert german.returncode == 0, german.stderr

    assert [(m.mail_from, m.rcpt_tos) for m in sink.received] == [("shop@mail.test", [to])] * 2
    cart, browse = sink.messages()
    assert cart["Subject"] == "[Test] You left something in your cart"
    assert cart["To"] == to and cart["Message-ID"] and cart["Date"]
    assert cart["List-Unsubscribe"].startswith("<https://mail.test/v1/mail/unsubscribe?t=")
    assert cart.get_content_type() == "multipart/alternative"
    text, html = part(cart, "plain"), part(cart, "html")
    for body in (text, html):
        assert "Merino wool sweater" in body  # the sample products
        assert "You might also like" in body and "Cashmere scarf" in body
    assert "You left something behind" in text and "<html" in html.lower()
    assert browse["Subject"] == "[Test] Noch Interesse an Merino wool sweater?"
    assert "Noch interessiert?" in part(browse, "plain")
    assert "Das könnte Ihnen auch gefallen" in part(browse, "html")
    assert state_of(r, site, f"{site}.example.com") == before


@pytest.mark.parametrize(
    "to",
    [
        "tester@example.com\r\nBcc: victim@example.org",
        "tester@example.com\nSubject: hi",
        "tester@example.com, victim@example.org",
        "tester@example.com victim@example.org",
        "Tester <tester@example.com>",
        "not an address",
        "a" * 300 + "@example.com",
        "",
    ],
)
def test_hostile_addresses_are_refused_and_nothing_is_sent(
    redis_url: str, tmp_path: Path, sink: SmtpSink, to: str
) -> None:
    site = add_site(redis_url)
    refused = cli(
        "mail", "send-test", "--site", site, "--to", to, env=mail_env(redis_url, tmp_path, sink.url)
    )
    assert refused.returncode == 2
    assert "--to refused" in refused.stderr and "nothing was sent" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert sink.received == []


def test_missing_settings_and_unknown_targets_are_named(
    redis_url: str, r: redis.Redis, tmp_path: Path, sink: SmtpSink
) -> None:
    site = add_site(redis_url)
    to = "tester@example.com"
    unconfigured = {"REDIS_URL": redis_url, "WIDGET_DATA_DIR": str(tmp_path / "data")}
    missing = cli("mail", "send-test", "--site", site, "--to", to, env=unconfigured)
    assert missing.returncode == 2
    assert (
        "sending email needs SMTP_URL, MAIL_WEBHOOK_URL or MAIL_OUTBOX_DIR, MAIL_FROM, "
        "MAIL_PUBLIC_URL" in missing.stderr
    )
    env = mail_env(redis_url, tmp_path, sink.url)
    no_from = cli("mail", "send-test", "--site", site, "--to", to, env={**env, "MAIL_FROM": ""})
    assert no_from.returncode == 2 and "sending email needs MAIL_FROM" in no_from.stderr
    cases = {
        ("--site", "nosuchsite"): "no site named 'nosuchsite'",
        ("--site", site, "--step", "4"): "no step 4 in a flow named 'cart'",
        ("--site", site, "--step", "0"): "no step 0",
        ("--site", site, "--flow", "nope"): "no step 1 in a flow named 'nope'",
        ("--site", site, "--locale", "de\r\nX: y"): "the locale must look like en or de-CH",
    }
    for args, message in cases.items():
        result = cli("mail", "send-test", *args, "--to", to, env=env)
        assert result.returncode == 2 and message in result.stderr, result.stderr
    # An address that unsubscribed from the site gets no test email either.
    unsubscribe(redis_url, site, to)
    suppressed = cli("mail", "send-test", "--site", site, "--to", to, env=env)
    assert suppressed.returncode == 2
    assert "suppression list" in suppressed.stderr and "unsubscribed" in suppressed.stderr
    assert sink.received == []


def test_outbox_folder_gets_the_test_email(redis_url: str, tmp_path: Path) -> None:
    site = add_site(redis_url)
    env = mail_env(redis_url, tmp_path, "")
    env["MAIL_OUTBOX_DIR"] = str(tmp_path / "outbox")
    sent = cli("mail", "send-test", "--site", site, "--to", "tester@example.com", env=env)
    assert sent.returncode == 0, sent.stderr
    assert f"the outbox folder {tmp_path / 'outbox'}" in sent.stdout
    [eml] = (tmp_path / "outbox").glob("*.eml")
    assert b"Subject: [Test] You left something in your cart" in eml.read_bytes()


def test_smtps_with_a_private_ca_trusted_through_ssl_cert_file(
    redis_url: str, tmp_path: Path
) -> None:
    site = add_site(redis_url)
    with TlsSmtpSink(mode="implicit", users={"shop": "s3cret!"}) as tls:
        ca = tls.ca_file(tmp_path)
        env = mail_env(redis_url, tmp_path, tls.url_for("smtps", f"shop:{quote('s3cret!')}"))
        args = ("mail", "send-test", "--site", site, "--to", "tester@example.com")
        untrusted = cli(*args, env=env)
        assert untrusted.returncode == 2
        assert "the test email was not sent" in untrusted.stderr
        assert "certificate that is not trusted" in untrusted.stderr
        assert tls.received == [] and tls.auth_attempts == []
        trusted = cli(*args, env={**env, "SSL_CERT_FILE": str(ca)})
        assert trusted.returncode == 0, trusted.stderr
        assert f"SMTP 127.0.0.1:{tls.port} (TLS)" in trusted.stdout
        assert "s3cret" not in trusted.stdout + untrusted.stderr
        assert len(tls.received) == 1 and tls.tls_versions[0].startswith("TLSv1.")
        assert tls.received[0].message["Subject"].startswith("[Test] ")
