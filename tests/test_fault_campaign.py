"""The fault campaign (benchmarks/fault_campaign.py), once per scenario: real commands killed with
SIGKILL at a random durability call, then checked for anything lost."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

CAMPAIGN = Path(__file__).resolve().parents[1] / "benchmarks" / "fault_campaign.py"


@pytest.mark.slow
def test_one_kill_per_scenario_loses_nothing(tmp_path):
    pytest.importorskip("mujoco")
    out = tmp_path / "campaign.json"
    proc = subprocess.run([sys.executable, str(CAMPAIGN), "--kills", "6", "--seed", "11", "--json", str(out)],
                          capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    result = json.loads(out.read_text())
    assert result["runs"] == 6 and result["passed"] == 6
    assert {o["scenario"] for o in result["outcomes"]} == {
        "record", "resume", "repair", "mark_bad", "convert", "convert-resume"}
