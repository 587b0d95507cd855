"""The package as an operator installs it: the sdist carries everything, a wheel built from it
installs into a fresh virtualenv, and the demo runs from an empty folder.

Nothing is downloaded: the build runs without isolation and the new virtualenv reaches the
dependencies of the test environment through a ``.pth`` file; only widget-server itself is
installed into it, from the wheel.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import sysconfig
import tarfile
import time
import zipfile
from pathlib import Path

import httpx
import pytest

from widget_server.store.embedded import free_port

from .support import ROOT

pytestmark = pytest.mark.slow

# Files read at run time, as they must appear inside the package.
SHIPPED = [
    "widget_server/static/widget/widget.js",
    "widget_server/static/widget/widget-overlay.js",
    "widget_server/emails/cart.html",
    "widget_server/emails/cart.txt",
    "widget_server/emails/messages.json",
    "widget_server/examples/demo-campaigns.json",
    "widget_server/examples/demo-mail-flows.json",
    "widget_server/store/lua/offer_claim.lua",
    "widget_server/admin/templates/base.html",
    "widget_server/admin/static/admin.css",
    "widget_server/demo/templates/base.html",
    "widget_server/py.typed",
]


def run(*args: str | Path, cwd: Path = ROOT, env: dict[str, str] | None = None) -> None:
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"{args}\n{result.stdout}\n{result.stderr}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from the sdist (so the sdist is proven to carry everything too)."""
    out = tmp_path_factory.mktemp("dist")
    # Build from a copy of the tracked files only, as a fresh clone would.
    source = out / "source"
    source.mkdir()
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in filter(None, files):
        target = source / name.decode()
        if (ROOT / name.decode()).is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes((ROOT / name.decode()).read_bytes())
    run(sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", out, source)
    (sdist,) = out.glob("widget_server-*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {n.split("/", 1)[1] for n in archive.getnames() if "/" in n}
    assert not [f for f in SHIPPED if f not in names], sorted(names)
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
        "--no-index", "--wheel-dir", out, sdist)  # fmt: skip
    (built,) = out.glob("widget_server-*.whl")
    return built


def test_the_wheel_carries_every_file_read_at_run_time(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert not [f for f in SHIPPED if f not in names]
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "docs/"))]


def test_the_installed_wheel_runs_the_demo_from_an_empty_folder(
    wheel: Path, tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    base_python = getattr(sys, "_base_executable", sys.executable)
    run(base_python, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    site_packages = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
    )  # fmt: skip
    # The dependencies, not the package: this environment's site-packages, appended to sys.path
    # (its own .pth files, among them the editable install of the checkout, are not read).
    (site_packages / "test-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index",
        wheel)  # fmt: skip

    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_URL", "WIDGET_"))}
    env.update(WIDGET_LOG_LEVEL="warning", PYTHONPATH="")
    located = subprocess.run(
        [python, "-c", "import widget_server; print(widget_server.__file__)"],
        cwd=empty, env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert located.startswith(str(site_packages)), located

    port = free_port()
    demo = subprocess.Popen(
        [venv / "bin" / "widget-server", "demo", "--no-traffic", "--port", str(port)],
        cwd=empty, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert demo.poll() is None, demo.communicate()[0].decode()
            try:
                if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the demo did not become ready"
            time.sleep(0.2)
        for path in ("/widget.js", "/demo/", "/admin/login"):
            assert httpx.get(base + path, timeout=10).status_code == 200, path
        assert 'data-site="demo"' in httpx.get(base + "/demo/", timeout=10).text
    finally:
        demo.send_signal(signal.SIGTERM)
        output = demo.communicate(timeout=30)[0].decode()
    assert "Demo shop" in output, output
    assert (empty / "var" / "valkey").is_dir()  # its data went into the folder it ran from
