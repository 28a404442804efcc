"""runtime.benchmark statistics and interleaving, and ``edge-deeplab benchmark`` on real bundles."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

import runtime
from edge_deeplab.cli import main
from runtime.benchmark import compare, format_table, measure, summarize
from runtime.errors import EdgeDeeplabError
from test_runtime_bundles import build_bundle


def test_summarize_percentiles() -> None:
    stats = summarize("m", [i / 1000 for i in range(1, 101)], warmup=3)
    assert (stats.runs, stats.warmup) == (100, 3)
    assert stats.p50_ms == pytest.approx(50.5) and stats.p90_ms == pytest.approx(90.1)
    assert stats.p99_ms == pytest.approx(99.01) and stats.min_ms == pytest.approx(1.0)
    assert stats.fps == pytest.approx(1000 / 50.5)
    with pytest.raises(EdgeDeeplabError):
        summarize("m", [])


def test_compare_interleaves_and_measures_sleep() -> None:
    order: list[str] = []

    def sleeper(name: str, seconds: float):
        def call(_image):
            order.append(name)
            time.sleep(seconds)
        return call

    image = np.zeros((2, 2, 3), np.uint8)
    fast, slow = compare({"fast": sleeper("fast", 0.001), "slow": sleeper("slow", 0.004)}, [image], runs=6, warmup=1)
    timed = order[2:]  # after one warm-up round of both
    assert timed[:4] == ["fast", "slow", "slow", "fast"]  # the starting model rotates each round
    assert fast.runs == slow.runs == 6
    assert slow.p50_ms > fast.p50_ms >= 1.0
    assert "fast" in format_table([fast, slow]).splitlines()[2]


def test_measure_a_segmenter(tmp_path: Path) -> None:
    with runtime.load(build_bundle(tmp_path / "b")) as seg:
        stats = measure(seg, [np.zeros((32, 32, 3), np.uint8)], runs=5, warmup=1, name="pixel")
    assert stats.runs == 5 and stats.p50_ms > 0


def test_benchmark_cli_side_by_side_with_json(tmp_path: Path, capsys) -> None:
    a = build_bundle(tmp_path / "a")
    b = build_bundle(tmp_path / "b", target="openvino")
    out = tmp_path / "bench.json"
    argv = ["benchmark", str(a), str(b), "--runs", "4", "--warmup", "1", "--size", "40", "60", "--json", str(out)]
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "p50 ms" in table and "\na " in table and "\nb " in table
    data = json.loads(out.read_text())
    assert [r["target"] for r in data["results"]] == ["onnx", "openvino"]
    assert data["image_size"] == [40, 60] and all(r["runs"] == 4 for r in data["results"])
    assert main(argv) == 2  # the JSON exists: not overwritten without --force
    bad = ["benchmark", str(a), str(tmp_path / "not-a-bundle"), "--runs", "2", "--warmup", "0", "--size", "8", "8",
           "--json", str(out), "--force"]
    capsys.readouterr()
    assert main(bad) == 0  # the bad bundle is listed as skipped, the good one still timed
    assert "skipped 1 bundle(s) that cannot run here:\n  " in capsys.readouterr().out
    assert len(json.loads(out.read_text())["failed"]) == 1
