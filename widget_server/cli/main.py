"""``widget-server``: the one command operators need (serve, demo, sites)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import io
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import msgspec
from redis.exceptions import RedisError

from ..admin.accounts import AccountStore
from ..catalog.similar import SimilarProducts
from ..catalog.store import CatalogStore, run_catalog_import
from ..demo import traffic as demo_traffic
from ..demo.catalog import generate_catalog, write_feed_tsv
from ..errors import ConfigurationError
from ..logs import configure_logging
from ..mail.catalog_triggers import CatalogTriggers
from ..mail.context import MailSettings, build_mail_context, mail_settings_from_env
from ..mail.flows import MailFlowStore, load_config
from ..mail.jobs import MailScheduler
from ..mail.similar import MailSimilarProducts
from ..mail.worker import run_worker
from ..offers.campaign_store import CampaignStore
from ..offers.campaigns import CampaignInvalid
from ..offers.codes import CodePoolError
from ..settings import (
    Settings,
    load_secret_key,
    log_level_number,
    settings_from_env,
    settings_to_env,
)
from ..store.client import check_store, open_store
from ..store.embedded import EmbeddedValkey
from ..store.frequency import Frequency
from ..store.keys import Keys
from ..store.local_cluster import LocalCluster
from ..store.sites import CodeApply, Site, SiteError, SiteRegistry, new_site
from . import admin as cli_admin
from . import campaigns as cli_campaigns
from . import mail as cli_mail
from . import simulate as cli_simulate

DEMO_SITE = "demo"
DEMO_HOLDOUT = 0.1
DEMO_LANGUAGES = ["de"]  # the demo shop switches to German (?lang=de)


def _check_port_free(host: str, port: int) -> None:
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigurationError(
                    f"port {port} on {host} is already in use; stop the other process or choose "
                    "another port with --port or WIDGET_PORT"
                ) from None
            raise ConfigurationError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def _embedded_url_file(settings: Settings) -> Path:
    return settings.data_dir / "valkey" / "url"


@contextlib.contextmanager
def redis_for(settings: Settings, *, supervise: bool = False) -> Iterator[str]:
    """The Redis URL to use: REDIS_URL, the embedded Valkey a running server already started on
    this data directory, or a new embedded Valkey that lives as long as the context (brought back
    when it dies, with ``supervise``, for long-running processes)."""
    if settings.redis_url:
        check_store(settings.redis_url, settings.redis_mode)
        yield settings.redis_url
        return
    url_file = _embedded_url_file(settings)
    running = _running_embedded(url_file)
    if running is not None:
        yield running
        return
    valkey = EmbeddedValkey(settings.data_dir, restart_tries=settings.embedded_restarts)
    valkey.start()  # refuses when a running server owns the data directory's Valkey
    try:
        url_file.write_text(valkey.url + "\n")
        if supervise:
            valkey.supervise()
        yield valkey.url
    finally:
        valkey.stop()
        with contextlib.suppress(OSError):
            if url_file.read_text().strip() == valkey.url:
                url_file.unlink()


def _running_embedded(url_file: Path) -> str | None:
    """The URL of the embedded Valkey a running server started on this data directory, if it
    answers."""
    try:
        url = url_file.read_text().strip()
    except OSError:
        return None
    try:
        check_store(url, "single")
    except ConfigurationError:
        return None
    return url


def _prepare(settings: Settings) -> Settings:
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        if not settings.secret_key:
            settings = settings.with_overrides(secret_key=load_secret_key(settings.data_dir))
    except OSError as exc:
        raise ConfigurationError(
            f"cannot use the data directory {settings.data_dir} (WIDGET_DATA_DIR): "
            f"{exc.strerror or exc}"
        ) from None
    return settings


def _run_server(settings: Settings) -> None:
    import uvicorn

    from ..app import create_app

    common = {
        "host": settings.host,
        "port": settings.port,
        # uvicorn drops frames past its own limit with a bare 1009; a larger transport limit lets
        # the app answer oversized frames with the documented error first.
        "ws_max_size": settings.max_frame_bytes * 4,
        # websockets-sansio (measured: least CPU per message, small idle memory), with a bound
        # on what a visitor who stops reading can hold (realtime/transport.py).
        "ws": "widget_server.realtime.transport:VisitorWebSocketProtocol",
        "ws_per_message_deflate": False,
        "log_config": None,
        "timeout_graceful_shutdown": 10,
        "server_header": False,
    }
    if settings.workers == 1:
        app = create_app(settings, mail_settings_from_env(os.environ, settings))
        uvicorn.run(app, **common)  # type: ignore[arg-type]
        return
    metrics_dir = settings.data_dir / "metrics"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    os.environ.update(settings_to_env(settings))
    uvicorn.run(
        "widget_server.app:app_from_env",
        factory=True,
        workers=settings.workers,
        **common,  # type: ignore[arg-type]
    )


def _exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so that cleanup (stopping the embedded Valkey) runs: uvicorn
    re-raises the signal it caught after its own graceful shutdown."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, handler)


def cmd_serve(settings: Settings) -> None:
    _exit_on_sigterm()
    settings = _prepare(settings)
    _check_port_free(settings.host, settings.port)
    with redis_for(settings, supervise=True) as url:
        _run_server(settings.with_overrides(redis_url=url))


DEMO_OWNER = "owner@demo.example"


async def _seed_demo(url: str, settings: Settings, ports: Sequence[int]) -> str | None:
    """Seed the demo site, its campaigns and email flows; on the first run (no admin account
    yet) create the demo's owner account and return its new password, else None."""
    hosts = ["127.0.0.1", "localhost"]
    if settings.host not in ("127.0.0.1", "localhost", "0.0.0.0", "::"):
        hosts.append(settings.host)
    origins = [f"http://{host}:{port}" for port in ports for host in hosts]
    client = open_store(url, settings.redis_mode)
    try:
        registry = SiteRegistry(client, Keys(settings.redis_prefix))
        existing = await registry.get(DEMO_SITE)
        # The demo shop applies codes itself (shop.js: exitwidget.push(["on", "code", fn])).
        applies = CodeApply(mode="callback")
        if existing is None:  # a site-wide holdout of 10%, so the dashboard has a total
            site = new_site(DEMO_SITE, name="Demo shop", origins=origins, apply_code=applies,
                            holdout=DEMO_HOLDOUT, text_locales=DEMO_LANGUAGES)  # fmt: skip
        else:  # keep the site's secret across restarts; follow the port we run on now
            site = msgspec.structs.replace(
                existing, origins=origins, apply_code=applies,
                text_locales=existing.text_locales or DEMO_LANGUAGES,
            )  # fmt: skip
        await registry.save(site)
        flows = load_config((settings.examples_dir / "demo-mail-flows.json").read_text())
        base = f"http://127.0.0.1:{settings.port}"
        await MailFlowStore(client, Keys(settings.redis_prefix)).save(
            DEMO_SITE, flows.model_copy(update={"shop_url": base})
        )
        store = CampaignStore(client, Keys(settings.redis_prefix))
        if not await store.for_site(DEMO_SITE):
            examples = json.loads((settings.examples_dir / "demo-campaigns.json").read_text())
            await store.import_many(DEMO_SITE, examples, author="demo")
        accounts = AccountStore(client, Keys(settings.redis_prefix))
        if await accounts.list():
            return None
        password = secrets.token_urlsafe(12)
        await accounts.create(DEMO_OWNER, password, "owner")
        return password
    finally:
        await client.aclose()


def _admin_line(base: str, password: str | None) -> str:
    """The demo banner's admin line: the new owner's password on the first run only."""
    if password is None:
        return f"  Admin       {base}/admin/   (sign in with your account)\n"
    return (
        f"  Admin       {base}/admin/   sign in as {DEMO_OWNER}, password {password}\n"
        "              (shown this once; `widget-server admin create` adds accounts)\n"
    )


def cmd_demo(settings: Settings, *, cluster: bool = False, traffic: bool = True) -> None:
    _exit_on_sigterm()
    settings = _prepare(settings.with_overrides(demo=True))
    _check_port_free(settings.host, settings.port)
    if not os.environ.get("SMS_ACCOUNT_SID"):  # the demo's texts go to files, like its emails
        os.environ.setdefault("SMS_OUTBOX_DIR", str((settings.data_dir / "outbox").resolve()))
    if cluster:
        _demo_on_cluster(settings, traffic)
        return
    with redis_for(settings, supervise=True) as url:
        password = asyncio.run(_seed_demo(url, settings, [settings.port]))
        base = f"http://{'127.0.0.1' if settings.host in ('0.0.0.0', '::') else settings.host}"
        base += f":{settings.port}"
        feed = settings.data_dir / "demo-feed.tsv"
        write_feed_tsv(generate_catalog(), feed, base_url=base)
        run_catalog_import(
            url, settings.redis_prefix, settings.redis_mode, DEMO_SITE, feed, out=io.StringIO()
        )
        kind = "REDIS_URL" if settings.redis_url else f"embedded, data in {settings.data_dir}/"
        print(
            "\nwidget-server demo\n"
            f"  Demo shop   {base}/demo/\n"
            f"  Widget      {base}/widget.js   (site key: {DEMO_SITE})\n"
            + _admin_line(base, password)
            + f"  Health      {base}/healthz  {base}/readyz\n"
            f"  Metrics     {base}/metrics\n"
            f"  Valkey      {url} ({kind})\n"
            "Press Ctrl+C to stop.\n",
            flush=True,
        )
        worker = _start_demo_worker(settings, url, base)
        if password is not None and traffic:
            _send_demo_traffic(settings, url, base)
        try:
            _run_server(settings.with_overrides(redis_url=url))
        finally:
            if worker is not None:
                worker.terminate()
                worker.wait(10)


def _send_demo_traffic(settings: Settings, url: str, base: str) -> None:
    """The first run: synthetic visitors through the shop, so the dashboard has numbers."""
    print(f"Sending {demo_traffic.VISITORS:,} synthetic visitors through the shop for the"
          " dashboard (first run only; --no-traffic to skip)…", flush=True)  # fmt: skip
    demo_traffic.start(base, url, settings.redis_mode, settings.redis_prefix, DEMO_SITE)


def _demo_on_cluster(settings: Settings, traffic: bool = True) -> None:
    """The demo on a fresh local cluster of the embedded binary (its data is not kept), with a
    second node one port up: open the shop on either and watch a visitor move between them."""
    second_port = settings.port + 1
    _check_port_free(settings.host, second_port)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="cluster-", dir=settings.data_dir))
    try:
        # The nodes' ports must not take the second server's (checked free above, bound later).
        with LocalCluster(folder, avoid=(settings.port, second_port)) as local:
            url = local.seed_url
            settings = settings.with_overrides(redis_url=url, redis_mode="cluster")
            password = asyncio.run(_seed_demo(url, settings, [settings.port, second_port]))
            host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
            bases = [f"http://{host}:{port}" for port in (settings.port, second_port)]
            feed = settings.data_dir / "demo-feed.tsv"
            write_feed_tsv(generate_catalog(), feed, base_url=bases[0])
            run_catalog_import(
                url, settings.redis_prefix, "cluster", DEMO_SITE, feed, out=io.StringIO()
            )
            masters = ", ".join(node.address for node in local.masters())
            print(
                "\nwidget-server demo on a Valkey cluster\n"
                f"  Demo shop   {bases[0]}/demo/  (node 1)   {bases[1]}/demo/  (node 2)\n"
                f"  Widget      {bases[0]}/widget.js   (site key: {DEMO_SITE})\n"
                + _admin_line(bases[0], password)
                + f"  Health      {bases[0]}/readyz  {bases[1]}/readyz\n"
                f"  Valkey      3 masters ({masters}), 3 replicas; data in {folder}/\n"
                "Press Ctrl+C to stop.\n",
                flush=True,
            )
            env = dict(os.environ)
            env.update(settings_to_env(settings.with_overrides(port=second_port, workers=1)))
            env["WIDGET_DATA_DIR"] = str(settings.data_dir / "node-2")
            command = [sys.executable, "-m", "widget_server.cli", "serve"]
            node = subprocess.Popen([*command, "--port", str(second_port)], env=env)  # noqa: S603
            worker = _start_demo_worker(settings, url, bases[0])
            if password is not None and traffic:
                _send_demo_traffic(settings, url, bases[0])
            try:
                _run_server(settings)
            finally:
                for child in (node, worker):
                    if child is not None:
                        child.terminate()
                        child.wait(15)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _start_demo_worker(settings: Settings, url: str, base: str) -> subprocess.Popen[bytes] | None:
    """The demo's email worker: sends through SMTP_URL if set, else writes .eml files."""
    env = dict(os.environ)
    env.update(settings_to_env(settings.with_overrides(redis_url=url)))
    env.setdefault("MAIL_FROM", "shop@demo.example")
    env.setdefault("MAIL_PUBLIC_URL", base)
    if not env.get("SMTP_URL") and not env.get("MAIL_WEBHOOK_URL"):
        env.setdefault("MAIL_OUTBOX_DIR", str((settings.data_dir / "outbox").resolve()))
    print(f"  Emails      {env.get('SMTP_URL') or env.get('MAIL_OUTBOX_DIR')}", flush=True)
    texts = env.get("SMS_OUTBOX_DIR") if not env.get("SMS_ACCOUNT_SID") else "the SMS provider"
    print(f"  Texts       {texts or 'off'}", flush=True)
    return subprocess.Popen([sys.executable, "-m", "widget_server.cli", "worker"], env=env)


async def _sites_add(url: str, settings: Settings, args: argparse.Namespace) -> str:
    site = new_site(
        args.key,
        name=args.name,
        origins=args.origin,
        currency=args.currency,
        locale=args.locale,
        timezone=args.timezone,
        text_locales=args.language,
    )
    client = open_store(url, settings.redis_mode)
    try:
        registry = SiteRegistry(client, Keys(settings.redis_prefix))
        if await registry.get(site.key) is not None and not args.replace:
            raise ConfigurationError(f"site {site.key!r} exists; pass --replace to overwrite it")
        await registry.save(site)
    finally:
        await client.aclose()
    return f"site {site.key} saved (origins: {', '.join(site.origins) or 'none'})"


async def _site_secret(url: str, settings: Settings, key: str) -> str:
    client = open_store(url, settings.redis_mode)
    try:
        site = await SiteRegistry(client, Keys(settings.redis_prefix)).get(key)
    finally:
        await client.aclose()
    if site is None:
        raise ConfigurationError(f"no site {key!r}")
    return site.secret


async def _sites_list(url: str, settings: Settings) -> str:
    client = open_store(url, settings.redis_mode)
    try:
        sites = await SiteRegistry(client, Keys(settings.redis_prefix)).list()
    finally:
        await client.aclose()
    if not sites:
        return "no sites yet: add one with `widget-server sites add KEY --origin https://shop`"
    rows = [f"{'KEY':20} {'CUR':4} {'LOCALE':7} ORIGINS"]
    rows += [f"{s.key:20} {s.currency:4} {s.locale:7} {' '.join(s.origins)}" for s in sites]
    return "\n".join(rows)


FREQUENCY_FLAGS = ("per_session", "per_day", "discount_days", "live_per_session", "live_per_day")


async def _edit_site(
    url: str, settings: Settings, key: str, change: Callable[[Site], Site | None]
) -> Site:
    """The site ``key`` after ``change`` (None: unchanged, nothing saved)."""
    client = open_store(url, settings.redis_mode)
    try:
        registry = SiteRegistry(client, Keys(settings.redis_prefix))
        site = await registry.get(key)
        if site is None:
            raise ConfigurationError(f"no site {key!r}")
        changed = change(site)
        if changed is not None:
            await registry.save(changed)  # the store may add to it (the holdout's version)
            return await registry.get(key) or changed
        return site
    finally:
        await client.aclose()


def _frequency_change(args: argparse.Namespace) -> Callable[[Site], Site | None]:
    def change(site: Site) -> Site | None:
        changes = {f: getattr(args, f) for f in FREQUENCY_FLAGS if getattr(args, f) is not None}
        if not changes:
            return None
        try:
            policy = msgspec.convert({**msgspec.to_builtins(site.frequency), **changes}, Frequency)
        except msgspec.ValidationError as exc:
            flag = "--" + str(exc).rsplit("$.", 1)[-1].rstrip("`").replace("_", "-")
            raise ConfigurationError(f"{flag}: {str(exc).split(' - ')[0]}") from None
        return msgspec.structs.replace(site, frequency=policy)

    return change


def _apply_code_change(args: argparse.Namespace) -> Callable[[Site], Site | None]:
    def change(site: Site) -> Site | None:
        changes = {k: v for k, v in (("mode", args.mode), ("param", args.param)) if v}
        if not changes:
            return None
        try:
            apply = msgspec.convert({**msgspec.to_builtins(site.apply_code), **changes}, CodeApply)
        except msgspec.ValidationError:
            raise ConfigurationError(
                "--param: use 1 to 40 letters, digits, - or _ (like coupon)"
            ) from None
        return msgspec.structs.replace(site, apply_code=apply)

    return change


def _holdout_change(args: argparse.Namespace) -> Callable[[Site], Site | None]:
    def change(site: Site) -> Site | None:
        if args.percent is None:
            return None
        if not 0 <= args.percent <= 50:
            raise ConfigurationError("--percent: use 0 (no site-wide holdout) to 50")
        return msgspec.structs.replace(site, holdout=round(args.percent / 100, 4))

    return change


def _holdout(site: Site) -> str:
    if site.holdout <= 0:
        return f"{site.key}: no site-wide holdout"
    return (f"{site.key}: {site.holdout * 100:g}% of visitors held out site-wide (no offer, no"
            f" message), comparison {site.holdout_version} since"
            f" {datetime.fromtimestamp(site.holdout_started, UTC):%Y-%m-%d %H:%M} UTC")  # fmt: skip


def _applies(site: Site) -> str:
    mode = site.apply_code.mode
    how = f"{mode} (parameter {site.apply_code.param})" if mode == "url" else mode
    return f"{site.key}: codes applied by {how}"


def cmd_sites(settings: Settings, args: argparse.Namespace) -> None:
    settings = _prepare(settings)
    with redis_for(settings) as url:
        if args.sites_command == "add":
            print(asyncio.run(_sites_add(url, settings, args)))
        elif args.sites_command == "frequency":
            site = asyncio.run(_edit_site(url, settings, args.key, _frequency_change(args)))
            print(f"{site.key}: {site.frequency.describe()}")
        elif args.sites_command == "holdout":
            site = asyncio.run(_edit_site(url, settings, args.key, _holdout_change(args)))
            print(_holdout(site))
        elif args.sites_command == "apply-code":
            site = asyncio.run(_edit_site(url, settings, args.key, _apply_code_change(args)))
            print(_applies(site))
        elif args.sites_command == "secret":
            print(asyncio.run(_site_secret(url, settings, args.key)))
        else:
            print(asyncio.run(_sites_list(url, settings)))


def cmd_catalog(settings: Settings, args: argparse.Namespace) -> int:
    """Import a feed; exit 0 when every row was imported, 1 with row errors, 2 when unreadable."""
    settings = _prepare(settings)
    with redis_for(settings) as url:
        report = run_catalog_import(
            url,
            settings.redis_prefix,
            settings.redis_mode,
            args.site,
            args.file,
            out=sys.stdout,
            prune=args.prune,
            triggers_for=lambda redis, keys: CatalogTriggers(
                redis, keys, MailScheduler(redis, keys, retention_s=settings.profile_ttl_s)
            ),
        )
    if not report.ok:
        return 2
    return 1 if report.errors else 0


def cmd_worker(settings: Settings) -> None:
    """Send due abandoned-cart emails until SIGTERM/SIGINT."""
    settings = _prepare(settings)
    mail_settings = mail_settings_from_env(os.environ, settings)
    with redis_for(settings, supervise=True) as url:
        asyncio.run(_work(url, settings, mail_settings))


async def _work(url: str, settings: Settings, mail_settings: MailSettings) -> None:
    client = open_store(url, settings.redis_mode)
    keys = Keys(settings.redis_prefix)
    sites = SiteRegistry(client, keys)
    catalog = CatalogStore(client, keys)
    ctx = build_mail_context(
        mail_settings,
        client,
        keys,
        sites=sites,
        templates_dir=settings.email_templates_dir,
        catalog=catalog,
        similar=MailSimilarProducts(SimilarProducts(catalog), sites, MailFlowStore(client, keys)),
    )
    ctx.require_sending()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await run_worker(ctx, stop=stop, poll_s=1.0)
    finally:
        await client.aclose()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="widget-server",
        description="Exit-intent and live-offers server. Configuration comes from environment "
        "variables (see README); flags override them.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("serve", "run the server (production)"),
        ("demo", "run the server with a seeded demo shop at /demo/"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--host", help="address to listen on (WIDGET_HOST)")
        p.add_argument("--port", type=int, help="port to listen on (WIDGET_PORT)")
        p.add_argument("--workers", type=int, help="worker processes (WIDGET_WORKERS)")
        if name == "demo":
            p.add_argument(
                "--cluster",
                action="store_true",
                help="on a fresh local Valkey cluster (3 masters, 3 replicas) with two nodes",
            )
            p.add_argument(
                "--no-traffic",
                action="store_true",
                help="on the first run, send no synthetic visitors for the dashboard",
            )
    sub.add_parser("worker", help="send abandoned-cart emails (SMTP_URL, MAIL_FROM, ...)")
    sites = sub.add_parser("sites", help="manage sites (shops)")
    sites_sub = sites.add_subparsers(dest="sites_command", required=True)
    add = sites_sub.add_parser("add", help="add a site")
    add.add_argument("key", help="site key used in the script tag (letters, digits, - and _)")
    add.add_argument(
        "--origin",
        action="append",
        default=[],
        help="allowed page origin, e.g. https://shop.example.com (repeatable)",
    )
    add.add_argument("--name", help="display name")
    add.add_argument("--currency", default="EUR", help="ISO 4217 code (default EUR)")
    add.add_argument("--locale", default="en", help="e.g. en, de, fr-FR (default en)")
    add.add_argument(
        "--language",
        action="append",
        default=[],
        help="another language the shop sells in, e.g. de: campaign texts in it (repeatable)",
    )
    add.add_argument("--timezone", default="UTC", help="IANA time zone (default UTC)")
    add.add_argument("--replace", action="store_true", help="overwrite an existing site")
    sites_sub.add_parser("list", help="list sites")
    secret = sites_sub.add_parser("secret", help="print the site's secret for the shop's backend")
    secret.add_argument("key")
    frequency = sites_sub.add_parser(
        "frequency",
        help="show or set how many offers one visitor sees across every campaign (0: no limit)",
    )
    frequency.add_argument("key")
    for flag, what in (
        ("per-session", "exit-intent and hesitation offers per visit (default 1)"),
        ("per-day", "exit-intent and hesitation offers per day, site's time zone (default 2)"),
        ("discount-days", "at most one discount per this many days (default 7)"),
        ("live-per-session", "live offers per visit (default 1)"),
        ("live-per-day", "live offers per day (default 2)"),
    ):
        frequency.add_argument(f"--{flag}", type=int, metavar="N", help=what)
    holdout = sites_sub.add_parser(
        "holdout",
        help="show or set the site-wide holdout: visitors who see no offer and get no message, "
        "so the dashboard can tell what the tool adds (a new share starts a new comparison)",
    )
    holdout.add_argument("key")
    holdout.add_argument("--percent", type=float, help="share of visitors held out, 0 to 50")
    apply = sites_sub.add_parser(
        "apply-code", help="show or set how the shop applies the codes the widget shows"
    )
    apply.add_argument("key")
    apply.add_argument(
        "--mode",
        choices=["none", "shopify", "url", "callback"],
        help="shopify: /discount/CODE links; url: a query parameter; callback: the shop's "
        'script, exitwidget.push(["on", "code", fn]); none: the visitor copies it',
    )
    apply.add_argument("--param", help="the query parameter of --mode url (default coupon)")
    cli_campaigns.add_parsers(sub)
    cli_mail.add_parsers(sub)
    cli_admin.add_parsers(sub)
    cli_simulate.add_parsers(sub)
    catalog = sub.add_parser("catalog", help="import the shop's product feed")
    catalog_sub = catalog.add_subparsers(dest="catalog_command", required=True)
    feed = catalog_sub.add_parser(
        "import", help="import a Google Merchant Center feed (TSV/CSV, RSS 2.0 or Atom XML)"
    )
    feed.add_argument("file", type=Path)
    feed.add_argument("--site", required=True)
    feed.add_argument(
        "--prune", action="store_true", help="remove feed products that are not in this file"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from_env()
        overrides = {
            name: getattr(args, name)
            for name in ("host", "port", "workers")
            if getattr(args, name, None) is not None
        }
        if overrides:
            settings = settings.with_overrides(**overrides)
        if settings.workers < 1:
            raise ConfigurationError("--workers must be at least 1")
        configure_logging(log_level_number(settings), settings.log_format)
        if args.command == "serve":
            cmd_serve(settings)
        elif args.command == "demo":
            cmd_demo(settings, cluster=args.cluster, traffic=not args.no_traffic)
        elif args.command == "mail":
            settings = _prepare(settings)
            with redis_for(settings) as url:
                print(asyncio.run(cli_mail.run(url, settings, args)))
        elif args.command == "admin":
            settings = _prepare(settings)
            with redis_for(settings) as url:
                print(asyncio.run(cli_admin.run(url, settings, args)))
        elif args.command == "worker":
            cmd_worker(settings)
        elif args.command == "catalog":
            return cmd_catalog(settings, args)
        elif args.command in cli_simulate.COMMANDS and args.aa_check:
            print(cli_simulate.aa_check_text(args))
        elif args.command in cli_simulate.COMMANDS:
            settings = _prepare(settings)
            with redis_for(settings) as url:
                print(asyncio.run(cli_simulate.run(url, settings, args)))
        elif args.command in cli_campaigns.COMMANDS:
            settings = _prepare(settings)
            with redis_for(settings) as url:
                print(asyncio.run(cli_campaigns.run(url, settings, args)))
        else:
            cmd_sites(settings, args)
    except CampaignInvalid as exc:
        print(f"widget-server: error: invalid campaign ({len(exc.errors)} fields)", file=sys.stderr)
        cli_campaigns.report_invalid(exc)
        return 2
    except (ConfigurationError, SiteError, CodePoolError) as exc:
        print(f"widget-server: error: {exc}", file=sys.stderr)
        return 2
    except RedisError as exc:  # the store failed mid-command (it was reachable at the start)
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        print(f"widget-server: error: the store refused or failed: {first_line}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file or directory the command was given or needs
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"widget-server: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0
