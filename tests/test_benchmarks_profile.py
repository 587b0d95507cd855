"""The profiling script samples a server during a live offer and writes a flame graph."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .support import run_benchmark


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_profile_writes_a_flame_graph_of_a_live_offer(tmp_path: Path) -> None:
    out = tmp_path / "live.svg"
    result = json.loads(run_benchmark("profile.py", "--out", str(out), timeout=240))
    assert result["sessions"] == 200 and result["live_offer_s"] > 0
    svg = out.read_text()
    assert svg.startswith("<?xml") and "offer_live" in svg  # the fan-out is in the samples
