"""The reference deployment (deploy/): Debian's nginx with the shipped configuration in front of
two ``widget-server serve`` nodes on one Valkey.

nginx runs as an ordinary process: the test writes a main ``nginx.conf`` (pid file, logs and
temporary files in a temporary folder, no daemon) that includes ``deploy/nginx/widget-server.conf``
with only the addresses changed: the nodes' ports, the listening ports and a certificate of a test
authority. Everything else (headers, timeouts, balancing, failover, what is refused) is the
shipped file.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shlex
import shutil
import signal
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import trustme
from websockets.exceptions import ConnectionClosed

from widget_server.cli.main import build_parser
from widget_server.mail.context import mail_settings_from_env
from widget_server.settings import settings_from_env
from widget_server.store.embedded import free_port
from widget_server.store.keys import Keys

from .support import ROOT, Client, ServerProcess, add_site, closed_with, new_visitor

DEPLOY = ROOT / "deploy"
SHIPPED_CONF = DEPLOY / "nginx" / "widget-server.conf"


def find_nginx() -> str | None:
    """Debian installs nginx in /usr/sbin, which is not on an ordinary user's PATH."""
    found = shutil.which("nginx")
    if found is None and os.access("/usr/sbin/nginx", os.X_OK):
        found = "/usr/sbin/nginx"
    return found


NGINX = find_nginx()
SKIP_REASON = "nginx is not installed (.ci/run installs Debian's nginx package)"
through_nginx = pytest.mark.nginx
needs_nginx = pytest.mark.skipif(NGINX is None, reason=SKIP_REASON)


# --- the shipped configuration, rendered for a test ------------------------------------------
def render_site_conf(
    nodes: list[ServerProcess], https_port: int, http_port: int, cert: Path
) -> str:
    """``deploy/nginx/widget-server.conf`` with the test's addresses, and nothing else changed."""
    text = SHIPPED_CONF.read_text()

    def replace(pattern: str, new: str, count: int) -> None:
        nonlocal text
        text, found = re.subn(pattern, new, text, flags=re.MULTILINE)
        assert found == count, f"{SHIPPED_CONF} changed shape: {pattern!r} found {found} times"

    node_line = re.search(r"^(\s*)server 127\.0\.0\.1:\d+ (.*);$", text, re.MULTILINE)
    assert node_line is not None, "no node in the upstream"
    indent, params = node_line.groups()
    ours = "".join(f"{indent}server {n.url.removeprefix('http://')} {params};\n" for n in nodes)
    replace(r"^\s*server 127\.0\.0\.1:\d+ .*;\n", "", 2)
    replace(r"^(\s*keepalive \d+;)$", ours.rstrip("\n") + r"\n\1", 1)
    replace(r"^(\s*)listen 443 ssl;$", rf"\1listen 127.0.0.1:{https_port} ssl;", 1)
    replace(r"^(\s*)listen 80;$", rf"\1listen 127.0.0.1:{http_port};", 1)
    replace(r"^(\s*ssl_certificate(_key)?\s+)\S+;$", rf"\g<1>{cert};", 2)
    return text


def render_main_conf(workdir: Path, site_conf: Path) -> str:
    """A whole nginx.conf for a run without root (as root, the workers stay root: they write
    to the test's folders)."""
    user = "user root;\n" if os.geteuid() == 0 else ""
    temp = "\n".join(
        f"    {kind}_temp_path {workdir / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""{user}daemon off;
worker_processes 1;
pid {workdir / "nginx.pid"};
error_log {workdir / "error.log"} info;
events {{
    worker_connections 1024;
}}
http {{
    access_log {workdir / "access.log"};
{temp}
    include {site_conf};
}}
"""


class Nginx:
    def __init__(self, workdir: Path, nodes: list[ServerProcess], ca: trustme.CA) -> None:
        assert NGINX is not None
        self.workdir = workdir
        self.https_port = free_port()
        self.http_port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        cert = workdir / "cert.pem"
        ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(
            str(cert)
        )
        self.site_conf = workdir / "widget-server.conf"
        self.site_conf.write_text(render_site_conf(nodes, self.https_port, self.http_port, cert))
        self.conf = workdir / "nginx.conf"
        self.conf.write_text(render_main_conf(workdir, self.site_conf))
        self.ssl = ssl.create_default_context()
        ca.configure_trust(self.ssl)
        self.process: subprocess.Popen[bytes] | None = None

    def command(self, *args: str) -> list[str]:
        assert NGINX is not None
        return [NGINX, "-e", str(self.workdir / "error.log"), "-p", str(self.workdir),
                "-c", str(self.conf), *args]  # fmt: skip

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    @property
    def ws_url(self) -> str:
        return f"wss://127.0.0.1:{self.https_port}/v1/ws"

    def start(self, timeout: float = 30.0) -> Nginx:
        checked = subprocess.run(self.command("-t"), capture_output=True, text=True, timeout=30)
        assert checked.returncode == 0, f"nginx -t:\n{checked.stderr}\n{self.site_conf.read_text()}"
        self.process = subprocess.Popen(
            self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while True:
            assert self.process.poll() is None, f"nginx exited:\n{self.logs()}"
            try:
                if self.get("/healthz").status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"nginx did not answer:\n{self.logs()}"
            time.sleep(0.1)

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return httpx.get(self.url + path, verify=self.ssl, timeout=10, **kw)

    def client(self, **kw: Any) -> Client:
        return Client(self.ws_url, ssl=self.ssl, **kw)

    def logs(self) -> str:
        path = self.workdir / "error.log"
        return path.read_text()[-4000:] if path.exists() else ""

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


@dataclass
class Deployment:
    nodes: list[ServerProcess]
    nginx: Nginx

    def holders(self, r: redis.Redis, site: str, visitor: str) -> set[ServerProcess]:
        """The nodes that hold a live socket of the visitor (node ids carry the process id)."""
        node_ids = r.hgetall(Keys().connections(site, visitor)).values()
        pids = {int(node_id.rsplit("-", 2)[1]) for node_id in node_ids}  # type: ignore[union-attr]
        return {n for n in self.nodes if n.process is not None and n.process.pid in pids}


@contextlib.contextmanager
def deployment(redis_url: str, workdir: Path, **env: str) -> Iterator[Deployment]:
    """Two nodes sharing one secret key (as the deployment requires) and nginx in front."""
    ca = trustme.CA()
    key = secrets.token_urlsafe(32)
    nodes = [ServerProcess(redis_url, workdir / f"node-{i}", WIDGET_SECRET_KEY=key, **env)
             for i in (1, 2)]  # fmt: skip
    nginx = Nginx(workdir / "nginx", nodes, ca)
    try:
        for node in nodes:
            node.start()
        nginx.start()
        yield Deployment(nodes, nginx)
    finally:
        nginx.stop()
        for node in nodes:
            node.stop()


@pytest.fixture(scope="module")
def limited(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """A deployment whose nodes take one visitor socket per client address each."""
    if NGINX is None:
        pytest.skip(SKIP_REASON)
    with deployment(
        redis_url, tmp_path_factory.mktemp("deploy"), WIDGET_MAX_CONNECTIONS_PER_IP="1"
    ) as running:
        yield running


def hello_from(
    nginx: Nginx, site: str, source: str, forwarded_for: str | None = None
) -> tuple[Client, str]:
    """A visitor socket from the loopback address ``source`` through nginx; ``welcome``, or the
    code of the error the node answered with."""
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else None
    client = nginx.client(source_address=(source, 0), additional_headers=headers)
    # A node over its limit answers the upgrade with over_capacity and closes at once: the
    # hello may find the socket closed already, the answer is read all the same.
    with contextlib.suppress(ConnectionClosed):
        client.send({"type": "hello", "v": 1, "site": site, "visitor": new_visitor()})
    while True:
        message = client.recv(timeout=10)
        if message["type"] in ("welcome", "error"):
            return client, message["type"] if message["type"] == "welcome" else message["code"]


# --- through nginx -----------------------------------------------------------------------------
@through_nginx
@needs_nginx
def test_http_goes_through_to_the_nodes(limited: Deployment) -> None:
    nginx, node = limited.nginx, limited.nodes[0]
    assert nginx.get("/healthz").text == "ok"
    widget = nginx.get("/widget.js")
    assert widget.status_code == 200 and "javascript" in widget.headers["content-type"]
    assert widget.content == httpx.get(node.url + "/widget.js").content
    assert nginx.get("/metrics").status_code == 403  # read on each node's own port
    assert httpx.get(node.url + "/metrics").status_code == 200
    plain = httpx.get(f"http://127.0.0.1:{nginx.http_port}/widget.js?v=1")
    assert plain.status_code == 301
    assert plain.headers["location"] == "https://127.0.0.1/widget.js?v=1"


@through_nginx
@needs_nginx
def test_a_beacon_batch_is_recorded_through_nginx(limited: Deployment, redis_url: str) -> None:
    site = add_site(redis_url)
    batch = {
        "site": site,
        "visitor": new_visitor(),
        "messages": [
            {"id": "b1", "type": "event", "name": "page_view", "url": "https://shop.test/"}
        ],
    }
    answer = httpx.post(
        f"{limited.nginx.url}/v1/events?site={site}",
        json=batch,
        headers={"Origin": "https://shop.test"},
        verify=limited.nginx.ssl,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["acks"] == ["b1"]
    assert answer.headers["access-control-allow-origin"] == "https://shop.test"


@through_nginx
@needs_nginx
def test_the_nodes_see_https_and_the_host_the_browser_used(limited: Deployment) -> None:
    """X-Forwarded-Proto and Host reach the nodes: the admin's cookies are Secure, and a
    sign-in posted from the page nginx served passes the same-origin check (wrong password,
    not a refused form), whichever node answered the page and the post."""
    nginx = limited.nginx
    with httpx.Client(base_url=nginx.url, verify=nginx.ssl, timeout=10) as browser:
        page = browser.get("/admin/login")
        assert page.status_code == 200
        assert "secure" in page.headers["set-cookie"].lower()
        match = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert match is not None
        answer = browser.post(
            "/admin/login",
            data={"csrf": match.group(1), "email": "nobody@shop.test", "password": "wrong"},
            headers={"Origin": nginx.url},
        )
    assert answer.status_code == 400 and "Wrong email or password" in answer.text, answer.text
    direct = httpx.get(limited.nodes[0].url + "/admin/login")
    assert "secure" not in direct.headers["set-cookie"].lower()


@through_nginx
@needs_nginx
def test_the_nodes_see_the_visitors_address_not_nginxs_nor_a_claimed_one(
    limited: Deployment, redis_url: str
) -> None:
    """Each node takes one socket per client address here. Four visitors from four addresses
    are all admitted (the nodes see each visitor's address, not nginx's, which would allow
    one per node); three sockets from one address, each claiming another in X-Forwarded-For,
    are not: a client cannot choose the address the nodes see."""
    site = add_site(redis_url)
    opened: list[Client] = []
    try:
        answers = []
        for source in ("127.0.0.11", "127.0.0.12", "127.0.0.13", "127.0.0.14"):
            client, answer = hello_from(limited.nginx, site, source)
            opened.append(client)
            answers.append(answer)
        assert answers == ["welcome"] * 4
        claimed = []
        for n in range(3):
            client, answer = hello_from(limited.nginx, site, "127.0.0.20", f"198.51.100.{n}")
            opened.append(client)
            claimed.append(answer)
        assert claimed.count("welcome") <= 2 and "over_capacity" in claimed, claimed
        refused = opened[4 + claimed.index("over_capacity")]
        assert closed_with(refused, timeout=15) == 1013
    finally:
        for client in opened:
            client.close()


@through_nginx
@needs_nginx
def test_a_node_stopped_for_a_restart_hands_its_visitors_to_the_other(
    redis_url: str, r: redis.Redis, tmp_path: Path
) -> None:
    """Visitors spread over both nodes. One node stops (SIGTERM, as systemd stops it): its
    visitors get 1012, connect again through nginx (at the first try: nginx skips the stopped
    node) and resume their sessions on the other node, carts and replay protection intact;
    the other node's visitors never notice; HTTP keeps being served."""
    site = add_site(redis_url)
    with deployment(redis_url, tmp_path) as running:
        nginx = running.nginx
        visitors: list[tuple[Client, str, str]] = []
        try:
            for n in range(8):
                client, visitor = nginx.client(), new_visitor()
                session = client.hello(site, visitor)["session"]
                client.send(cart_add("add-1", f"P{n}"))
                assert client.answer("add-1")["type"] == "ack"
                visitors.append((client, visitor, session))
            on = {node: [v for v in visitors if running.holders(r, site, v[1]) == {node}]
                  for node in running.nodes}  # fmt: skip
            stopping, staying = running.nodes
            assert on[stopping] and on[staying], "nginx sent every visitor to one node"
            assert len(on[stopping]) + len(on[staying]) == len(visitors)

            assert stopping.process is not None
            stopping.process.send_signal(signal.SIGTERM)
            for client, _, _ in on[stopping]:
                assert closed_with(client, timeout=15) == 1012
            assert stopping.stop() == 0

            for _ in range(4):  # whichever node nginx would have picked
                assert nginx.get("/healthz").status_code == 200
                assert nginx.get("/widget.js").status_code == 200
            for _, visitor, session in on[stopping]:
                with nginx.client() as again:
                    welcome = again.hello(site, visitor, session=session)
                    assert welcome["resumed"] is True and welcome["session"] == session
                    again.send(cart_add("add-1", "P-replayed"))  # unacked as far as it knew
                    assert again.answer("add-1")["type"] == "ack"
                    assert again.event("cart_add", item={"id": "Q", "price": 1})["type"] == "ack"
                    assert staying in running.holders(r, site, visitor)
                cart = r.hgetall(Keys().session(site, visitor, session))
                assert cart["cart_items"] == "2", cart  # type: ignore[index]
            for client, _, _ in on[staying]:
                assert client.event("cart_add", item={"id": "Q", "price": 1})["type"] == "ack"
        finally:
            for client, _, _ in visitors:
                client.close()
        assert "Traceback" not in stopping.logs() + staying.logs()


def cart_add(message_id: str, item: str) -> dict[str, Any]:
    return {"id": message_id, "type": "event", "name": "cart_add",
            "item": {"id": item, "price": 10}}  # fmt: skip


# --- the systemd units and their environment file --------------------------------------------
def unit_settings(name: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in (DEPLOY / "systemd" / name).read_text().splitlines():
        if line.strip() and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_the_units_run_commands_the_cli_takes_on_the_nodes_nginx_proxies_to() -> None:
    node, worker = (
        unit_settings("widget-server@.service"),
        unit_settings("widget-server-worker.service"),
    )
    [serve] = node["ExecStart"]
    argv = shlex.split(serve.replace("%i", "8001"))
    assert argv[0].endswith("/bin/widget-server")
    args = build_parser().parse_args(argv[1:])
    assert (args.command, args.host, args.port) == ("serve", "127.0.0.1", 8001)
    upstream = re.findall(r"^\s*server (127\.0\.0\.1):(\d+) ", SHIPPED_CONF.read_text(), re.M)
    assert upstream == [("127.0.0.1", "8001"), ("127.0.0.1", "8002")]
    [work] = worker["ExecStart"]
    assert build_parser().parse_args(shlex.split(work)[1:]).command == "worker"
    for unit in (node, worker):
        assert unit["EnvironmentFile"] == ["/etc/widget-server/env"]
        assert unit["KillSignal"] == ["SIGTERM"]
    # Each node has a data directory of its own: nothing in it is shared.
    assert node["Environment"] == ["WIDGET_DATA_DIR=%S/widget-server/node-%i"]
    assert node["StateDirectory"] == ["widget-server/node-%i"]


def test_the_example_environment_file_is_valid_once_a_secret_key_is_added() -> None:
    env = {}
    for line in (DEPLOY / "systemd" / "widget-server.env").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            env[name] = value
    assert env["WIDGET_SECRET_KEY"] == ""  # one per installation, never a shipped one
    env["WIDGET_SECRET_KEY"] = secrets.token_urlsafe(48)
    settings = settings_from_env(env)
    assert settings.redis_url and not settings.uses_embedded_redis
    mail = mail_settings_from_env(env, settings)
    assert mail.public_url == "https://widgets.example.com"
