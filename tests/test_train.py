"""Training: options, output-folder safety, exact resume, and the CLI's one-line errors."""

from __future__ import annotations

import io
import subprocess
import sys
import time

import numpy as np
import pytest

from edge_deeplab.checkpoint import load_checkpoint
from edge_deeplab.cli import main
from edge_deeplab.config import load_yaml_config, make_config
from edge_deeplab.train import batch_indices, learning_rate
from runtime.errors import EdgeDeeplabError

torch = pytest.importorskip("torch", reason="training needs torch (the 'train' extra)")

TINY = [
    "--data", "synthetic:size=64,n=24", "--backbone", "mobilenetv2", "--width-mult", "0.35",
    "--batch-size", "4", "--crop-size", "48", "--val-images", "4", "--workers", "0",
]


def test_yaml_config_is_overridden_by_flags(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("lr: 0.1\nbatch-size: 4\n")
    config = make_config(load_yaml_config(cfg), {"lr": 0.2, "batch_size": None})
    assert config.lr == 0.2 and config.batch_size == 4


def test_yaml_config_rejects_unknown_option(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("learning_rate: 0.1\n")
    with pytest.raises(EdgeDeeplabError, match="unknown option"):
        load_yaml_config(cfg)


def test_default_head_and_its_step_budget_are_resolved_into_the_config():
    from edge_deeplab.config import make_config

    edge = make_config({}, {})
    assert edge.separable is True and edge.iterations == 1200  # the edge recipe: separable head
    dense = make_config({}, {"separable": False})
    assert dense.separable is False and dense.iterations == 660  # the same training time
    assert make_config({}, {"backbone": "resnet50"}).separable is False
    assert make_config({"iterations": 50}, {"separable": True}).iterations == 50  # given steps are kept


def test_bad_output_stride_is_rejected():
    with pytest.raises(EdgeDeeplabError, match="output stride"):
        make_config({}, {"output_stride": 12})


def test_learning_rate_ramps_up_then_decays_to_zero():
    config = make_config({}, {"lr": 0.2, "warmup_steps": 50, "iterations": 1000})
    rates = [learning_rate(config, step, 1000) for step in range(1000)]
    assert rates[0] == pytest.approx(0.2 / 50) and rates[49] == pytest.approx(0.2) == max(rates)
    assert all(a > b for a, b in zip(rates[50:], rates[51:])) and rates[-1] < 0.002
    short = make_config({}, {"lr": 0.2, "warmup_steps": 50, "iterations": 8})
    assert learning_rate(short, 1, 8) == pytest.approx(0.2)  # the ramp is at most a quarter of the run


def test_batches_cover_each_epoch_once():
    steps = [batch_indices(s, 4, 20, seed=3) for s in range(5)]
    assert sorted(np.concatenate(steps).tolist()) == list(range(20))
    assert not np.array_equal(batch_indices(5, 4, 20, 3), steps[0])  # next epoch reshuffles


def test_existing_run_is_not_overwritten(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "last.pt").write_bytes(b"precious")
    assert main(["train", *TINY, "--iterations", "2", "--out", str(out)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert (out / "last.pt").read_bytes() == b"precious"


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights(tmp_path):
    """SIGKILL a training subprocess mid-way, resume it: same steps, same weights as a clean run."""
    args = [*TINY, "--iterations", "16", "--val-every", "4"]
    straight, crashed = tmp_path / "straight", tmp_path / "crashed"
    assert main(["train", *args, "--out", str(straight)]) == 0

    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_deeplab.cli", "train", *args, "--out", str(crashed)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 180
    while not (crashed / "last.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    killed_at = load_checkpoint(crashed / "last.pt").train_state["step"]
    assert killed_at < 16, "the run finished before it could be killed"

    assert main(["train", *args, "--out", str(crashed), "--resume"]) == 0
    a = load_checkpoint(straight / "last.pt")
    b = load_checkpoint(crashed / "last.pt")
    assert b.train_state["step"] == a.train_state["step"] == 16
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
    assert not list(crashed.glob(".*.tmp")), "a temporary checkpoint was left behind"


class _Terminal(io.StringIO):
    """A stderr that says it is a terminal, as an interactive run's is."""

    def isatty(self) -> bool:
        return True


TINY_CONFIG = {"data": "synthetic:size=64,n=24", "backbone": "mobilenetv2", "width_mult": 0.35, "batch_size": 4,
               "crop_size": 48, "val_images": 4, "workers": 0, "iterations": 2, "val_every": 2}


def test_validation_pass_has_a_bar_on_a_terminal_only(tmp_path, monkeypatch, capsys):
    from edge_deeplab.train import train

    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    train(make_config({}, {**TINY_CONFIG, "out": str(tmp_path / "tty")}))
    drawn = terminal.getvalue()
    assert "validating at step 2" in drawn and "train" in drawn
    assert "validating" not in capsys.readouterr().out  # bars never go to stdout

    monkeypatch.undo()  # captured (not a terminal): no bar at all, the log line stays on stdout
    train(make_config({}, {**TINY_CONFIG, "out": str(tmp_path / "captured")}))
    captured = capsys.readouterr()
    assert captured.err == ""
    assert "step 2/2: loss" in captured.out and "val mIoU" in captured.out

    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    train(make_config({}, {**TINY_CONFIG, "out": str(tmp_path / "off")}), progress=False)
    assert terminal.getvalue() == ""
