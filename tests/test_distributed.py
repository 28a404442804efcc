"""Distributed training for real: two CPU processes on the gloo backend under torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from edge_deeplab.checkpoint import load_checkpoint
from edge_deeplab.cli import main

pytest.importorskip("torch", reason="training needs torch (the 'train' extra)")


@pytest.mark.slow
def test_two_process_gloo_training_learns_and_checkpoints(tmp_path):
    out = tmp_path / "ddp"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29517",
        "-m", "edge_deeplab.train",
        "--data", "synthetic:size=64,n=32", "--width-mult", "0.35", "--batch-size", "8", "--crop-size", "48",
        "--iterations", "40", "--val-every", "10", "--val-images", "4", "--workers", "0", "--lr", "0.05",
        "--out", str(out),
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]

    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [10, 20, 30, 40], "rank 0 alone should log, once per validation"
    assert records[-1]["loss"] < records[0]["loss"], f"loss did not fall: {records}"
    assert sorted(p.name for p in out.glob("*.pt")) == ["best.pt", "last.pt"]
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt.train_state["step"] == 40
    # A checkpoint from the distributed run has plain (non-DDP) keys and evaluates like any other.
    assert not any(k.startswith("module.") for k in ckpt.state_dict)
    assert main(["evaluate", str(out / "last.pt"), "--data", "synthetic:size=64,n=8", "--limit", "4"]) == 0
