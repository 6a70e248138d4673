"""`telecorder tokenizer fit/report` on a dataset of smooth actions."""

from __future__ import annotations

import json

import numpy as np
from conftest import make_info
from test_cli import run, tool

from telecorder.datasets import AsyncEpisodeWriter, DatasetWriter, Step


def _smooth_dataset(root, episodes=8, steps=90):
    info = make_info(cameras=(), dim=4)
    rng = np.random.default_rng(0)
    with DatasetWriter(root, info) as dw:
        writer = AsyncEpisodeWriter(dw)
        for _ in range(episodes):
            freq, phase = rng.uniform(0.2, 1.0, 4), rng.uniform(0, 6.28, 4)
            writer.begin({"task": "wave"})
            for k in range(steps):
                t = k / info.fps
                a = (np.sin(2 * np.pi * freq * t + phase) * [0.5, 1.0, 0.3, 0.8]).astype(np.float32)
                writer.add(Step(timestamp=t, numeric={"observation.state": a, "action": a}))
            writer.end({}, {"task": "wave"}).result()
        writer.close()


def test_fit_and_report(tmp_path):
    _smooth_dataset(tmp_path / "ds")
    run(tool("telecorder"), "tokenizer", "fit", str(tmp_path / "ds"), "--kind", "fast", "--chunk-seconds", "1",
        "--out", str(tmp_path / "tok"), check=True)
    assert (tmp_path / "tok/tokenizer.json").exists()
    report = json.loads(run(tool("telecorder"), "tokenizer", "report", str(tmp_path / "ds"), "--tokenizer",
                            str(tmp_path / "tok"), "--json", check=True).stdout)
    assert report["chunks"] == 8 * 3 and report["naive_tokens_per_chunk"] == 30 * 4
    assert report["compression_vs_naive"] > 2, report
    # Scale 10 rounds DCT coefficients to 0.1 in normalized units: errors of a few percent of the range.
    assert max(report["max_abs_error_vs_clipped"].values()) < 0.15
    human = run(tool("telecorder"), "tokenizer", "report", str(tmp_path / "ds"), "--tokenizer", str(tmp_path / "tok"),
                check=True).stdout
    assert "fewer" in human and "j0" in human
