"""``widget-server mail``: email flows of a site from the command line, previews and test
emails."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import httpx

from ..errors import ConfigurationError
from ..mail.context import build_mail_context, mail_settings_from_env
from ..mail.flows import MailConfigError, MailFlowStore, load_config
from ..mail.message import MailAddressError, TemplateError, normalize_address, render_preview
from ..mail.preview import send_test
from ..mail.send import SendError, UncertainSendError
from ..settings import Settings
from ..store.client import open_store
from ..store.keys import Keys
from ..store.sites import SiteRegistry


def add_parsers(sub: Any) -> None:
    mail = sub.add_parser("mail", help="abandoned-cart email flows and previews")
    msub = mail.add_subparsers(dest="mail_command", required=True)
    show = msub.add_parser("flows", help="print a site's email flows as JSON")
    show.add_argument("--site", required=True)
    setp = msub.add_parser("set-flows", help="validate and save a site's email flows (JSON)")
    setp.add_argument("file", type=Path)
    setp.add_argument("--site", required=True)
    preview = msub.add_parser("preview", help="render a flow step with sample data")
    preview.add_argument("--site", required=True)
    preview.add_argument("--flow", default="cart")
    preview.add_argument("--step", type=int, default=1, help="1 = the first email")
    preview.add_argument("--locale", default="en")
    preview.add_argument("--out", type=Path, default=Path("."), help="folder for the files")
    test = msub.add_parser(
        "send-test",
        help="send a flow step with sample products to one address, through the configured "
        "transport (SMTP_URL, MAIL_WEBHOOK_URL or MAIL_OUTBOX_DIR; MAIL_FROM, MAIL_PUBLIC_URL)",
    )
    test.add_argument("--site", required=True)
    test.add_argument("--to", required=True, help="the address to send the test email to")
    test.add_argument("--flow", default="cart")
    test.add_argument("--step", type=int, default=1, help="1 = the first email")
    test.add_argument("--locale", default="", help="e.g. en or de (default: the site's)")


async def run(url: str, settings: Settings, args: argparse.Namespace) -> str:
    if args.mail_command == "send-test":
        return await _send_test(url, settings, args)
    templates = settings.email_templates_dir
    client = open_store(url, settings.redis_mode)
    store = MailFlowStore(client, Keys(settings.redis_prefix))
    try:
        if args.mail_command == "flows":
            return json.dumps(json.loads((await store.get(args.site)).model_dump_json()), indent=2)
        if args.mail_command == "set-flows":
            try:
                config = load_config(args.file.read_bytes())
            except OSError as exc:
                raise ConfigurationError(f"cannot read {args.file}: {exc.strerror}") from None
            except MailConfigError as exc:
                raise ConfigurationError(f"{args.file}: {exc}") from None
            await store.save(args.site, config)
            return f"saved {len(config.flows)} flows for {args.site}"
        config = await store.get(args.site)
    finally:
        await client.aclose()
    flow = config.flow(args.flow)
    if flow is None or not 1 <= args.step <= len(flow.steps):
        raise ConfigurationError(f"no step {args.step} in a flow named {args.flow!r}")
    subject, html, text = render_preview(
        flow, args.step - 1, {"locale": args.locale}, templates_dir=templates
    )
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"{args.flow}-{args.step}-{args.locale}"
    (args.out / f"{stem}.html").write_text(html)
    (args.out / f"{stem}.txt").write_text(text)
    return f"subject: {subject}\nwrote {args.out / stem}.html and .txt"


async def _send_test(url: str, settings: Settings, args: argparse.Namespace) -> str:
    """``mail send-test``: failures become ConfigurationError, so they print as one line and
    exit with status 2."""
    try:
        normalize_address(args.to)
    except MailAddressError as exc:
        raise ConfigurationError(f"--to refused: {exc}; nothing was sent") from None
    mail_settings = mail_settings_from_env(os.environ, settings)
    client = open_store(url, settings.redis_mode)
    keys = Keys(settings.redis_prefix)
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            ctx = build_mail_context(
                mail_settings,
                client,
                keys,
                sites=SiteRegistry(client, keys),
                templates_dir=settings.email_templates_dir,
                http_client=http,
            )
            return await send_test(ctx, args.site, args.flow, args.step, args.to, args.locale)
    except (MailAddressError, TemplateError) as exc:
        raise ConfigurationError(f"the test email cannot be built: {exc}") from None
    except UncertainSendError as exc:
        raise ConfigurationError(f"the test email may or may not have arrived: {exc}") from None
    except SendError as exc:
        raise ConfigurationError(f"the test email was not sent: {exc}") from None
    finally:
        await client.aclose()
