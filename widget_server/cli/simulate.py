"""``widget-server simulate``: synthetic visitors with a known truth per arm, sent through the real
WebSocket protocol, to see what the campaign's A/B report makes of them."""

from __future__ import annotations

import argparse
import secrets
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..devtools.simulate import (
    SITE_HOLDOUT,
    ArmTruth,
    SimulationResult,
    campaign_arms,
    check_inputs,
    simulate,
)
from ..errors import ConfigurationError
from ..experiments import reports
from ..experiments.aa import aa_check
from ..offers.assign import HOLDOUT
from ..offers.campaign_store import CampaignStore
from ..settings import Settings
from ..store.client import open_store
from ..store.keys import Keys
from ..store.sites import SiteRegistry

COMMANDS = ("simulate",)
DEFAULT_SERVER = "ws://127.0.0.1:8000"
DEFAULT_TRUTH = ArmTruth(0.05, 40.0, 15.0)


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "simulate",
        help="send synthetic visitors with a known conversion rate per arm through the "
        "WebSocket protocol (use a test site: they are recorded like real visitors)",
    )
    p.add_argument("--site", help="the site (required unless --aa-check)")
    p.add_argument("--campaign", help="the campaign (required unless --aa-check)")
    p.add_argument("--visitors", type=int, help="how many visitors (required unless --aa-check)")
    p.add_argument("--concurrency", type=int, default=50, help="visitors at once (default 50)")
    p.add_argument(
        "--seed", type=int, help="random seed (default: a new one, printed in the summary)"
    )
    p.add_argument(
        "--truth",
        default="",
        help="true behaviour per arm as ARM=RATE:MEAN:SD,... (conversion rate, order value "
        "mean and sd), e.g. holdout=0.05:40:15,a=0.06:40:15,b=0.07:42:15; arms left out "
        "get 0.05:40:15",
    )
    p.add_argument(
        "--drop",
        default="",
        help="break the split: ARM=SHARE,... of an arm's visitors vanish after hello, e.g. b=0.4",
    )
    p.add_argument(
        "--server", default=DEFAULT_SERVER, help=f"the server's address (default {DEFAULT_SERVER})"
    )
    p.add_argument("--origin", help="Origin header to send (default: none, like a server client)")
    p.add_argument("--report", action="store_true", help="print the campaign's report afterwards")
    aa = p.add_argument_group(
        "A/A check", "simulated experiments with identical arms, judged by the report's rules "
        "(no server or store needed): how often does each rule call a difference?"
    )  # fmt: skip
    aa.add_argument("--aa-check", action="store_true", help="run the A/A check instead")
    aa.add_argument("--runs", type=int, default=200, help="experiments (default 200)")
    aa.add_argument("--days", type=int, default=28, help="daily looks per experiment (28)")
    aa.add_argument("--per-day", type=int, default=300, help="exposures per arm a day (300)")
    aa.add_argument("--rate", type=float, default=0.05, help="conversion rate of both arms")


def parse_truth(text: str, arms: list[str]) -> dict[str, ArmTruth]:
    """``holdout=0.05:40:15,a=0.06:40:15`` as truths; arms not named get the default."""
    truth = dict.fromkeys(arms, DEFAULT_TRUTH)
    for arm, value in _pairs(text, "--truth"):
        if arm not in truth:
            raise ConfigurationError(f"--truth {arm}: not an arm ({', '.join(arms)})")
        parts = value.split(":")
        try:
            rate, mean, sd = (float(x) for x in parts)
            truth[arm] = ArmTruth(rate, mean, sd)
        except ValueError as exc:
            detail = str(exc) if len(parts) == 3 else "expected RATE:MEAN:SD"
            raise ConfigurationError(f"--truth {arm}={value}: {detail}") from None
    return truth


def parse_drop(text: str) -> dict[str, float]:
    drop: dict[str, float] = {}
    for arm, value in _pairs(text, "--drop"):
        try:
            drop[arm] = float(value)
        except ValueError:
            raise ConfigurationError(f"--drop {arm}={value}: expected a share like 0.4") from None
    return drop


def _pairs(text: str, option: str) -> list[tuple[str, str]]:
    pairs = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        arm, sep, value = item.partition("=")
        if not sep or not arm.strip():
            raise ConfigurationError(f"{option}: {item!r} is not ARM=VALUE")
        pairs.append((arm.strip(), value.strip()))
    return pairs


def websocket_url(server: str) -> str:
    """``ws://host:port`` (or ``http://``) as the ``/v1/ws`` URL; a URL with a path is kept."""
    parts = urlsplit(server if "://" in server else f"ws://{server}")
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss") or not parts.netloc:
        raise ConfigurationError(f"--server {server!r} is not a ws:// or http:// address")
    path = parts.path if parts.path not in ("", "/") else "/v1/ws"
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


def aa_check_text(args: argparse.Namespace) -> str:
    """``simulate --aa-check``: the A/A check's result in one line."""
    try:
        return aa_check(args.runs, args.days, args.per_day, args.rate,
                        args.seed if args.seed is not None else 1).describe()  # fmt: skip
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None


async def run(url: str, settings: Settings, args: argparse.Namespace) -> str:
    if args.site is None or args.campaign is None or args.visitors is None:
        raise ConfigurationError("simulate needs --site, --campaign and --visitors (or --aa-check)")
    if args.visitors < 1 or args.concurrency < 1:
        raise ConfigurationError("--visitors and --concurrency must be at least 1")
    client = open_store(url, settings.redis_mode)
    keys = Keys(settings.redis_prefix)
    try:
        campaign = await CampaignStore(client, keys).get(args.site, args.campaign)
        if campaign is None:
            raise ConfigurationError(f"no campaign {args.campaign!r} on site {args.site!r}")
        if campaign.status != "active":
            raise ConfigurationError(f"{campaign.id} is {campaign.status}: only active ones fire")
        site = await SiteRegistry(client, keys).get(args.site)
        holdout = (site.holdout, site.holdout_version) if site is not None else (0.0, 1)
        arms = campaign_arms(campaign)
        truth = parse_truth(args.truth, arms + ([SITE_HOLDOUT] if holdout[0] > 0 else []))
        if holdout[0] > 0 and SITE_HOLDOUT not in args.truth and HOLDOUT in truth:
            truth[SITE_HOLDOUT] = truth[HOLDOUT]  # sees nothing, like the campaign's holdout
        drop = parse_drop(args.drop)
        try:
            check_inputs(campaign, truth, drop)
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
        seed = args.seed if args.seed is not None else secrets.randbelow(1_000_000)
        ws_url = websocket_url(args.server)
        result = await simulate(
            ws_url,
            args.site,
            campaign,
            visitors=args.visitors,
            concurrency=args.concurrency,
            truth=truth,
            seed=seed,
            origin=args.origin,
            drop_share=drop,
            site_holdout=holdout,
        )
        lines = summary(result, ws_url, truth, arms)
        if result.errors and sum(result.errors.values()) == result.visitors:
            raise ConfigurationError(
                "\n".join([*lines, f"every visitor failed: is the server at {ws_url} running, "
                           "and does the site allow this --origin?"])
            )  # fmt: skip
        if args.report:
            document = await reports.campaign_report(client, keys, args.site, campaign, time.time())
            lines.append("Report (every visitor of the campaign, not only this run):")
            lines += [f"  {sentence}" for sentence in document["report"]["sentences"]]
        return "\n".join(lines)
    finally:
        await client.aclose()


def summary(
    result: SimulationResult, ws_url: str, truth: dict[str, ArmTruth], arms: list[str]
) -> list[str]:
    lines = [
        f"{result.visitors} visitors on {result.site}/{result.campaign} through {ws_url} in "
        f"{result.elapsed_s:.1f} s (seed {result.seed}): {result.reached_signal} reached exit "
        f"intent, {result.dropped} dropped after hello, {sum(result.errors.values())} failed",
        f"  {'ARM':10} {'EXPOSED':>8} {'ORDERS':>7} {'RATE':>7} {'TRUE':>7} {'REVENUE':>11}",
    ]
    counts = result.counts()
    for arm in arms:
        c = counts.get(arm)
        exposed, orders, revenue = (c.exposures, c.conversions, c.revenue) if c else (0, 0, 0.0)
        rate = orders / exposed if exposed else 0.0
        lines.append(
            f"  {arm:10} {exposed:>8} {orders:>7} {rate:>7.2%} "
            f"{truth[arm].conversion_rate:>7.2%} {revenue:>11,.2f}"
        )
    held = [o for o in result.outcomes if o.arm == SITE_HOLDOUT]
    if held:
        orders = sum(o.converted for o in held)
        revenue = sum(o.order_value for o in held if o.converted)
        lines.append(
            f"  {SITE_HOLDOUT:10} {len(held):>8} {orders:>7}"
            f" {orders / len(held):>7.2%} {truth[SITE_HOLDOUT].conversion_rate:>7.2%}"
            f" {revenue:>11,.2f}"
        )
    for label, counter in (("failed", result.errors), ("note", result.notes)):
        for text, n in counter.most_common(5):
            lines.append(f"  {label}: {text} ({n} visitors)")
    return lines
