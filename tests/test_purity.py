"""The pure core imports no I/O library: each module is imported in a fresh interpreter and the
modules it brought along are checked."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .support import ROOT

PURE = [
    "widget_server.wire.protocol",  # the wire protocol: parse, validate, encode
    "widget_server.wire.nodes",  # messages between nodes
    "widget_server.offers.decide",  # the decision engine
    "widget_server.offers.assign",  # sticky assignment
    "widget_server.offers.codes",  # code formats and pools
    "widget_server.offers.campaigns",  # the campaign model
    "widget_server.experiments.stats",  # the statistics of reports
    "widget_server.catalog.recommend",  # the similar-products index
    "widget_server.catalog.feeds",  # product feed parsing
    "widget_server.links",  # link checks
    "widget_server.visitors.session_view",  # a visitor's state as typed values
    "widget_server.realtime.admission",  # connection limits
    "widget_server.realtime.ratelimit",  # the per-connection token bucket
    "widget_server.store.replies",  # reading Redis replies
    "widget_server.admin.campaign_form",  # reading the campaign form
]
IO = {"redis", "starlette", "uvicorn", "websockets", "jinja2", "aiosmtplib", "httpx"}


@pytest.mark.parametrize("module", PURE)
def test_a_pure_module_brings_no_io_library(module: str) -> None:
    code = (
        "import importlib, json, sys; before = set(sys.modules);"
        f"importlib.import_module({module!r});"
        "print(json.dumps(sorted(set(sys.modules) - before)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    brought = {name.split(".")[0] for name in json.loads(done.stdout)}
    assert not brought & IO, f"{module} imports {sorted(brought & IO)}"
