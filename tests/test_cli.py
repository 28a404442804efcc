"""The command line itself: help with defaults and choices, completion, one-line usage errors,
``infer`` on several sources into numbered folders. (``pipeline --quick`` is in test_report.py.)"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge_deeplab.cli import main
from runtime.manifest import TARGETS
from test_bad_inputs import cli as run_cli
from test_runtime_bundles import build_bundle

def cli(*args: object, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """``edge-deeplab ARGS`` as test_bad_inputs runs it, with --help laid out 200 columns wide."""
    return run_cli(*args, cwd=cwd, env={"COLUMNS": "200", **(env or {})})


def test_help_shows_each_options_default_and_its_choices_from_the_tables(tmp_path):
    proc = cli("export", "--help", cwd=tmp_path)
    assert proc.returncode == 0
    assert f"[{'|'.join(TARGETS)}]" in proc.stdout  # built from runtime.manifest.TARGETS
    assert "[8|16|32]" in proc.stdout and "[minmax|entropy|percentile]" in proc.stdout
    assert "[default: 200]" in proc.stdout  # --calib-images
    assert "onnxruntime int8" in proc.stdout  # each target's default precision, from the same table


@pytest.mark.parametrize("args, message", [
    (["export", "x.pt", "--target", "coreml", "--out", "o"], "Invalid value for '--target': 'coreml' is not one of"),
    (["export", "x.pt", "--target", "onnx"], "Missing option '--out'"),
    (["report", "--output-strides", "8,12"], "12: choose from 8, 16, 32"),
    (["infer"], "Missing argument 'BUNDLE'"),
    (["evaluate", "m.pt", "--limit", "0"], "0 is not in the range x>=1"),
    (["trian"], "No such command 'trian'"),
])
def test_usage_errors_are_one_line_with_exit_status_2(args, message, tmp_path):
    proc = cli(*args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0] and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and not list(tmp_path.iterdir())


def test_no_command_shows_the_help_and_exits_2(tmp_path):
    proc = cli(cwd=tmp_path)
    assert proc.returncode == 2 and "Usage: edge-deeplab" in proc.stdout and "import-checkpoint" in proc.stdout
    assert proc.stderr == ""


def test_shell_completion_offers_the_choices(tmp_path):
    proc = cli(cwd=tmp_path, env={"_EDGE_DEEPLAB_COMPLETE": "complete_bash", "COMP_WORDS": "edge-deeplab export m.pt --target o",
                    "COMP_CWORD": "4"})
    assert proc.stdout.split() == [t for t in TARGETS if t.startswith("o")]
    assert cli("--show-completion", "bash", cwd=tmp_path).stdout.count("_EDGE_DEEPLAB_COMPLETE") == 1


def _png(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (12, 16, 3), dtype=np.uint8)).save(path)
    return path


def test_infer_takes_several_sources_and_globs_into_a_new_numbered_folder(tmp_path, monkeypatch, capsys):
    bundle = build_bundle(tmp_path / "bundle", kind="pixel")
    _png(tmp_path / "a" / "frame.png", 0)
    _png(tmp_path / "a" / "other.png", 1)
    _png(tmp_path / "b" / "frame.png", 2)  # the same name as a/frame.png
    single = _png(tmp_path / "c.png", 3)
    monkeypatch.chdir(tmp_path)
    assert main(["infer", str(bundle), "a", "b/*.png", str(single), "--no-progress", "--masks"]) == 0
    first = tmp_path / "runs" / "infer" / "001"
    assert sorted(p.name for p in first.iterdir()) == sorted(
        f"{stem}_{kind}.png" for stem in ("a_frame", "other", "b_frame", "c") for kind in ("overlay", "mask"))
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"results in {Path('runs/infer/001')}"
    assert main(["infer", str(bundle), "a/*.png", "--no-progress"]) == 0  # never the same folder twice
    assert sorted(p.name for p in (tmp_path / "runs" / "infer" / "002").iterdir()) == [
        "frame_overlay.png", "other_overlay.png"]
    assert len(list(first.iterdir())) == 8


def test_infer_writes_images_and_each_video_into_one_folder(tmp_path, monkeypatch, capsys):
    pytest.importorskip("cv2")
    from test_bad_inputs import noise_clip

    bundle = build_bundle(tmp_path / "bundle", kind="pixel")
    (tmp_path / "clips").mkdir()
    clips = [noise_clip(tmp_path / "clips" / f"{name}.mp4", frames=3) for name in ("left", "right")]
    monkeypatch.chdir(tmp_path)
    assert main(["infer", str(bundle), str(_png(tmp_path / "still.png", 0)), "clips/*.mp4", "--no-progress"]) == 0
    assert sorted(p.name for p in (tmp_path / "runs" / "infer" / "001").iterdir()) == [
        "left.mp4", "right.mp4", "still_overlay.png"]
    out = capsys.readouterr().out
    assert all(f"video: {Path('runs/infer/001') / clip.name}" in out for clip in clips)
    assert main(["infer", str(bundle), *map(str, clips), "--out", "one.mp4"]) == 2
    assert "names one video file but 2 videos are given" in capsys.readouterr().err


def test_infer_refuses_what_cannot_run_together_and_leaves_no_empty_folder(tmp_path, monkeypatch, capsys):
    bundle = build_bundle(tmp_path / "bundle", kind="pixel")
    _png(tmp_path / "x.png", 0)
    monkeypatch.chdir(tmp_path)
    assert main(["infer", str(bundle), "x.png", "0"]) == 2
    assert "a camera source runs alone" in capsys.readouterr().err
    assert main(["infer", str(bundle), "nothing/*.png"]) == 2
    assert "no file matches nothing/*.png" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "infer").exists() or not list((tmp_path / "runs" / "infer").iterdir())
