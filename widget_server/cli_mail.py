"""``widget-server mail``: email flows of a site from the command line, and previews."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from .errors import ConfigurationError
from .keys import Keys
from .mail import render_preview
from .mail_flows import MailConfigError, MailFlowStore, load_config


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


async def run(url: str, prefix: str, args: argparse.Namespace, templates: Path) -> str:
    client = Redis.from_url(url)
    store = MailFlowStore(client, Keys(prefix))
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
