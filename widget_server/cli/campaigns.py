"""``widget-server campaigns|live|codes``: campaigns from the command line (the admin uses the same
store)."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from ..errors import ConfigurationError
from ..experiments import reports
from ..mail.flows import MailFlowStore
from ..metrics import Metrics
from ..offers.campaign_store import CampaignStore
from ..offers.campaigns import Campaign, CampaignInvalid
from ..offers.engine import OfferEngine
from ..settings import Settings
from ..store.client import open_store
from ..store.keys import Keys
from ..store.scripts import Scripts
from ..visitors.sessions import SessionStore

COMMANDS = ("campaigns", "live", "codes", "report")
FLOW_PREFIX = "email:"


def add_parsers(sub: Any) -> None:
    campaigns = sub.add_parser("campaigns", help="list, export, import and switch campaigns")
    csub = campaigns.add_subparsers(dest="campaigns_command", required=True)
    for name, help_text in (
        ("list", "list the campaigns of a site"),
        ("export", "print every campaign of a site as JSON"),
    ):
        p = csub.add_parser(name, help=help_text)
        p.add_argument("--site", required=True)
    imp = csub.add_parser("import", help="validate and save campaigns from a JSON file")
    imp.add_argument("file", type=Path, help="a JSON campaign or a list of campaigns")
    imp.add_argument("--site", required=True)
    status = csub.add_parser("status", help="set a campaign's status")
    status.add_argument("campaign")
    status.add_argument("status", choices=("draft", "active", "paused", "ended"))
    status.add_argument("--site", required=True)
    winner = csub.add_parser(
        "declare-winner", help="send all traffic to one variant (starts a new experiment version)"
    )
    winner.add_argument("campaign")
    winner.add_argument("variant")
    winner.add_argument("--site", required=True)
    history = csub.add_parser("history", help="show earlier versions of a campaign")
    history.add_argument("campaign")
    history.add_argument("--site", required=True)

    live = sub.add_parser("live", help="start or stop a live-broadcast campaign")
    lsub = live.add_subparsers(dest="live_command", required=True)
    start = lsub.add_parser("start", help="push the campaign to every connected visitor now")
    start.add_argument("campaign")
    start.add_argument("--site", required=True)
    start.add_argument("--minutes", type=int, default=60, help="how long it runs (default 60)")
    stop = lsub.add_parser("stop", help="stop offering it to visitors who connect")
    stop.add_argument("campaign")
    stop.add_argument("--site", required=True)

    report = sub.add_parser(
        "report", help="the A/B report of a campaign, or of an email flow (email:FLOW)"
    )
    report.add_argument("campaign", help="a campaign id, or email:FLOW for an email flow")
    report.add_argument("--site", required=True)
    report.add_argument("--days", type=int, default=90, help="days to look back (default 90)")
    report.add_argument("--version", type=int, help="an earlier experiment version's report")
    fmt = report.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="the full report as JSON")
    fmt.add_argument("--csv", action="store_true", help="one row per variant as CSV")

    codes = sub.add_parser("codes", help="upload unique discount codes to a campaign's pool")
    ksub = codes.add_subparsers(dest="codes_command", required=True)
    kimp = ksub.add_parser("import", help="add codes from a CSV (Shopify, WooCommerce or plain)")
    kimp.add_argument("file", type=Path)
    kimp.add_argument("--site", required=True)
    kimp.add_argument("--campaign", required=True)


def _author() -> str:
    try:
        return f"{getpass.getuser()}@cli"
    except (KeyError, OSError):
        return "cli"


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path}: {exc.strerror}") from None


async def run(url: str, settings: Settings, args: argparse.Namespace) -> str:
    client = open_store(url, settings.redis_mode)
    keys = Keys(settings.redis_prefix)
    store = CampaignStore(client, keys)
    try:
        if args.command == "campaigns":
            return await _campaigns(store, args)
        if args.command == "report":
            return await _report(client, keys, store, args)
        if args.command == "codes":
            result = await store.add_codes(args.site, args.campaign, _read(args.file))
            lines = [f"line {line}: {reason}" for line, reason in result["errors"] if line]
            lines.append(
                f"{result['added']} codes added; {result['available']} available in the pool"
            )
            return "\n".join(lines)
        scripts = Scripts.of(client)
        sessions = SessionStore(
            client, scripts, keys, session_ttl_s=1800, profile_ttl_s=86400, presence_ttl_s=90
        )
        engine = OfferEngine(client, scripts, keys, store, sessions, Metrics())
        campaign = await store.get(args.site, args.campaign)
        if campaign is None:
            raise ConfigurationError(f"no campaign {args.campaign!r} on site {args.site!r}")
        if args.live_command == "stop":
            await engine.stop_live(args.site, args.campaign)
            return f"live offer {args.campaign} stopped"
        if not campaign.trigger.live or campaign.status != "active":
            raise ConfigurationError(
                f"{args.campaign} needs trigger.live = true and status active to go live"
            )
        nodes = await engine.start_live(args.site, args.campaign, args.minutes)
        return f"live offer {args.campaign} started for {args.minutes} min ({nodes} nodes notified)"
    finally:
        await client.aclose()


async def _report(client: Redis, keys: Keys, store: CampaignStore, args: argparse.Namespace) -> str:
    if args.campaign.startswith(FLOW_PREFIX):
        return await _flow_report(client, keys, args)
    campaign = await store.get(args.site, args.campaign)
    if campaign is None:
        raise ConfigurationError(f"no campaign {args.campaign!r} on site {args.site!r}")
    if args.version is not None and args.version != campaign.experiment_version:
        campaign = await _earlier_experiment(store, args.site, args.campaign, args.version)
    now = time.time()
    if args.csv:
        report, _ = await reports.build_report(client, keys, args.site, campaign, now, args.days)
        return reports.report_csv(report).rstrip("\n")
    document = await reports.campaign_report(client, keys, args.site, campaign, now, args.days)
    if args.json:
        return json.dumps(document, indent=2)
    lines = [f"{campaign.name} ({campaign.id}, experiment version {campaign.experiment_version})"]
    lines += [f"  {sentence}" for sentence in document["report"]["sentences"]]
    for row in document["report"]["variants"]:
        if row["captures"]:
            lines.append(
                f"  {row['variant']}: {row['captures']} email addresses captured, "
                f"{row['consented_captures']} with consent to email"
            )
    for run in document["live_offers"]:
        started = datetime.fromtimestamp(run["started"], UTC).strftime("%Y-%m-%d %H:%M UTC")
        lines.append(
            f"  Live offer {run['campaign']} ran during the experiment from {started} "
            "(its holdout saw none of it, its variants may have)."
        )
    return "\n".join(lines)


async def _flow_report(client: Redis, keys: Keys, args: argparse.Namespace) -> str:
    """``report email:FLOW``: an email flow against its holdout."""
    name = args.campaign.removeprefix(FLOW_PREFIX)
    flow = (await MailFlowStore(client, keys).get(args.site)).flow(name)
    if flow is None:
        raise ConfigurationError(f"no email flow {name!r} on site {args.site!r}")
    if args.version is not None:
        raise ConfigurationError("email flows have no experiment versions")
    now = time.time()
    if args.csv:
        built = await reports.build_flow_report(client, keys, args.site, flow, now, args.days)
        return reports.report_csv(built.report).rstrip("\n")
    document = await reports.flow_report(client, keys, args.site, flow, now, args.days)
    if args.json:
        return json.dumps(document, indent=2)
    sent = document["email"].get("email", {})
    lines = [
        f"email flow {flow.name} ({flow.kind}, holdout {flow.holdout:.0%}): "
        f"{sent.get('sent', 0)} sent, {sent.get('clicks', 0)} clickers, "
        f"{sent.get('unsubscribes', 0)} unsubscribed"
    ]
    lines += [f"  {sentence}" for sentence in document["report"]["sentences"]]
    for channel, c in document["channels"].items():
        if c["sent"]:
            lines.append(
                f"  {channel}: {c['recipients']} reached, {c['sent']} sent, {c['delivered']} "
                f"delivered, {c['clicks']} clicked, {c['conversions']} bought, "
                f"{c['revenue_per_recipient']:.2f} revenue per visitor reached"
            )
    return "\n".join(lines)


async def _earlier_experiment(
    store: CampaignStore, site: str, campaign_id: str, version: int
) -> Campaign:
    """The last saved campaign of experiment ``version`` (its variants and split)."""
    campaign = await store.experiment(site, campaign_id, version)
    if campaign is None:
        raise ConfigurationError(f"{campaign_id} has no experiment version {version}")
    return campaign


async def _campaigns(store: CampaignStore, args: argparse.Namespace) -> str:
    cmd = args.campaigns_command
    if cmd == "list":
        campaigns = await store.for_site(args.site)
        if not campaigns:
            return f"no campaigns on {args.site}: import some with `widget-server campaigns import`"
        rows = [f"{'ID':24} {'STATUS':8} {'PRIO':>4}  {'VARIANTS':16} NAME"]
        for c in campaigns:
            variants = ",".join(v.key for v in c.variants)
            rows.append(f"{c.id:24} {c.status:8} {c.priority:>4}  {variants:16} {c.name}")
        return "\n".join(rows)
    if cmd == "export":
        return json.dumps(await store.export(args.site), indent=2)
    if cmd == "status":
        saved = await store.set_status(args.site, args.campaign, args.status, author=_author())
        return f"{saved.id} is now {saved.status} (version {saved.version})"
    if cmd == "declare-winner":
        saved = await store.declare_winner(args.site, args.campaign, args.variant, author=_author())
        return (
            f"{saved.id}: all traffic to {args.variant}; experiment version "
            f"{saved.experiment_version - 1} is closed (see its report with --version)"
        )
    if cmd == "history":
        entries = await store.history(args.site, args.campaign)
        if not entries:
            return f"{args.campaign} has no earlier versions"
        return "\n".join(
            f"version {e['campaign'].get('version')} replaced at {e['at']:.0f} by {e['author']}"
            for e in entries
        )
    return await _import(store, args)


async def _import(store: CampaignStore, args: argparse.Namespace) -> str:
    try:
        data = json.loads(_read(args.file))
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"{args.file} is not valid JSON: {exc}") from None
    items = data if isinstance(data, list) else [data]
    saved, errors = await store.import_many(args.site, items, author=_author())
    if errors:
        lines = [f"{args.file}: nothing imported, {len(errors)} invalid campaign(s):"]
        for index, invalid in errors:
            lines += [f"  campaign #{index + 1}: {e.path}: {e.message}" for e in invalid.errors]
        raise ConfigurationError("\n".join(lines))
    return "\n".join(f"saved {c.id} (version {c.version}, {c.status})" for c in saved)


def report_invalid(exc: CampaignInvalid) -> None:
    for error in exc.errors:
        print(f"  {error.path}: {error.message}", file=sys.stderr)
