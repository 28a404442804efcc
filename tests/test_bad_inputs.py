"""Bad inputs and faults through the real CLI, in subprocesses: one error line, exit 2, nothing lost.

Each case of :data:`CASES` builds its inputs in a fresh folder, runs ``python -m edge_deeplab.cli``
and checks what a user sees and keeps: exit status 2, exactly one line of ours on stderr, of the
form ``edge-deeplab CMD: error: ...`` and last, no traceback, and every file that existed before
unchanged (content and mode) with no file added beside them. Native libraries may still log
their own lines (OpenCV's FFmpeg warns about the frames it could not write); those are not ours.

"No space left on the device" is real: a 64 KiB tmpfs mounted for the case (root in the test
sandbox; the cases skip with the reason where mounting is not allowed).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image

from runtime.files import sha256_file
from test_export import checkpoint  # noqa: F401  (the session's tiny trained checkpoint)
from test_runtime_bundles import blocks_image, build_bundle

cv2 = pytest.importorskip("cv2", reason="the video cases need OpenCV (the 'video' extra)")

ROOT = Path(__file__).resolve().parents[1]
TINY_TRAIN = ["--data", "synthetic:size=32,n=8", "--width-mult", "0.35", "--batch-size", "4", "--crop-size", "32",
              "--iterations", "1", "--val-every", "1", "--val-images", "2", "--workers", "0"]


def cli(*args: str | Path, cwd: Path, timeout: float = 180, env: dict | None = None) -> subprocess.CompletedProcess:
    """``edge-deeplab ARGS`` in a subprocess, as a user runs it (``env``: variables to add)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2", **(env or {})}
    return subprocess.run([sys.executable, "-m", "edge_deeplab.cli", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file and folder under ``folder`` (hidden ones included): sha256 (files) and mode."""
    return {str(p.relative_to(folder)): (sha256_file(p) if p.is_file() else "folder", p.stat().st_mode)
            for p in sorted(folder.rglob("*"))}


def assert_one_line_error(proc: subprocess.CompletedProcess, command: str, expected: str) -> None:
    assert "Traceback" not in proc.stderr, proc.stderr
    ours = [line for line in proc.stderr.splitlines() if line.startswith("edge-deeplab")]
    assert len(ours) == 1 and ours[0] == proc.stderr.strip().splitlines()[-1], proc.stderr
    assert ours[0].startswith(f"edge-deeplab {command}: error: "), ours[0]
    assert expected in ours[0], ours[0]
    assert proc.returncode == 2, (proc.returncode, proc.stderr)


# -- inputs ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return build_bundle(tmp_path_factory.mktemp("bad") / "pixel")


@pytest.fixture(scope="module")
def openvino_bundle(tmp_path_factory) -> Path:
    return build_bundle(tmp_path_factory.mktemp("bad-ov") / "ov", target="openvino")


def png_bomb(path: Path, side: int = 50_000) -> Path:
    """A PNG whose header says ``side`` x ``side`` RGB (7.5 GB decoded at 50000) in a few hundred bytes."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 4096))
                     + chunk(b"IEND", b""))
    return path


def noise_png(path: Path, side: int = 300) -> Path:
    """Incompressible pixels: its overlay is larger than the 64 KiB disk."""
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)).save(path)
    return path


def noise_clip(path: Path, frames: int = 30) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (160, 120))
    rng = np.random.default_rng(0)
    for _ in range(frames):
        writer.write(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8))
    writer.release()
    return path


def edited_bundle(source: Path, dest: Path, change: Callable[[dict], None]) -> Path:
    """A copy of ``source`` whose model.json was edited by ``change``."""
    shutil.copytree(source, dest)
    data = json.loads((dest / "model.json").read_text())
    change(data)
    (dest / "model.json").write_text(json.dumps(data))
    return dest


def broken_weights_bundle(source: Path, dest: Path) -> Path:
    """An OpenVINO bundle whose .bin is cut short, with a manifest that records the cut file's checksum
    (as a broken export would), so the backend itself meets the damage."""
    shutil.copytree(source, dest)
    weights = dest / "model.bin"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    data = json.loads((dest / "model.json").read_text())
    data["checksums"]["model.bin"] = sha256_file(weights)
    (dest / "model.json").write_text(json.dumps(data))
    return dest


def shape_mismatch_checkpoint(source: Path, dest: Path) -> Path:
    import torch

    data = torch.load(source, weights_only=True)
    name = next(k for k, v in data["state_dict"].items() if v.ndim == 4)
    data["state_dict"][name] = torch.zeros(3, 3, 3, 3)
    torch.save(data, dest)
    return dest


@pytest.fixture
def full_disk(tmp_path: Path):
    """A 64 KiB tmpfs: writes to it fail with ENOSPC, as on a full SD card."""
    mount = tmp_path / "full"
    mount.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], check=True,
                       capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot mount a tmpfs to fill up here ({exc}); needs root")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False, timeout=30)


# -- the cases: (id, command, expected text, setup(tmp, bundle, openvino bundle, checkpoint) -> argv) -----

def _edited(change: Callable[[dict], None]) -> Callable[[Path, Path], Path]:
    return lambda tmp, source: edited_bundle(source, tmp / "edited", change)


def _infer_one(make_bundle: Callable[[Path, Path], Path]):
    """An ``infer`` of one small image with the bundle ``make_bundle`` writes."""
    return lambda t, b, ov, ck: ["infer", make_bundle(t, b), noise_png(t / "x.png", 16), "--out", t / "o"]


def _escaping_bundle(t: Path, b: Path) -> Path:
    """A bundle whose manifest names a real, checksummed model file outside its folder."""
    shutil.copy(b / "model.onnx", t / "outside.onnx")

    def point_outside(data: dict) -> None:
        data["files"]["model"] = "../outside.onnx"
        data["checksums"] = {"../outside.onnx": data["checksums"]["model.onnx"]}

    return edited_bundle(b, t / "edited", point_outside)


def _all_unreadable(t: Path, b: Path, ov: Path, ck: Path) -> list:
    (t / "imgs").mkdir()
    png_bomb(t / "imgs" / "a.png")
    (t / "imgs" / "b.jpg").write_bytes(b"not a jpeg")
    return ["infer", b, t / "imgs", "--out", t / "out", "--no-progress"]


def _with_file(name: str, text: str, argv: Callable[[Path, Path, Path, Path], list]):
    """Write ``name`` (an existing file the run must leave alone, or a config) first."""
    def setup(t: Path, b: Path, ov: Path, ck: Path) -> list:
        (t / name).write_text(text)
        return argv(t, b, ov, ck)
    return setup


CASES = [
    ("bomb-image", "infer", "too many pixels",
     lambda t, b, ov, ck: ["infer", b, png_bomb(t / "bomb.png"), "--out", t / "out"]),
    ("every-image-fails", "infer", "none of the 2 images could be read", _all_unreadable),
    ("manifest-checksums-list", "infer", '"checksums" must be an object, not a list',
     _infer_one(_edited(lambda d: d.update(checksums=[])))),
    ("manifest-classes-string", "evaluate", '"classes" must be a list, not a string',
     lambda t, b, ov, ck: ["evaluate", _edited(lambda d: d.update(classes="abc"))(t, b), "--limit", "1"]),
    ("manifest-shape-string", "benchmark", '"input.shape" must be a list',
     lambda t, b, ov, ck: ["benchmark", _edited(lambda d: d["input"].update(shape="1x3"))(t, b),
                           "--runs", "1", "--warmup", "0", "--size", "8", "8"]),
    ("manifest-path-escapes", "infer", "is not inside the bundle", _infer_one(_escaping_bundle)),
    ("openvino-broken-bin", "infer", "model.bin: OpenVINO cannot read the weights",
     lambda t, b, ov, ck: ["infer", broken_weights_bundle(ov, t / "ov"), noise_png(t / "x.png", 16), "--out", t / "o"]),
    ("infer-out-exists", "infer", "already exists; pass --force",
     _with_file("result.png", "keep", lambda t, b, ov, ck: ["infer", b, noise_png(t / "x.png", 16), "--out", t / "result.png"])),
    ("train-out-is-a-file", "train", "is a file",
     _with_file("notes.txt", "mine", lambda t, b, ov, ck: ["train", "--out", t / "notes.txt", *TINY_TRAIN])),
    ("yaml-iterations-string", "train", "iterations must be an integer, not str 'eight'",
     _with_file("c.yaml", 'iterations: "eight"\n', lambda t, b, ov, ck: ["train", "--config", t / "c.yaml"])),
    ("yaml-lr-list", "train", "lr must be a number, not list [1, 2]",
     _with_file("c.yaml", "lr: [1, 2]\n", lambda t, b, ov, ck: ["train", "--config", t / "c.yaml"])),
    ("export-input-size-huge", "export", "input size 100000x100000 is too large",
     lambda t, b, ov, ck: ["export", ck, "--target", "onnx", "--input-size", "100000x100000", "--out", t / "b"]),
    ("benchmark-size-huge", "benchmark", "--size 100000 100000 is more than the 50 MP",
     lambda t, b, ov, ck: ["benchmark", b, "--size", "100000", "100000"]),
    ("evaluate-json-exists", "evaluate", "already exists; pass --force",
     _with_file("scores.json", "{}\n", lambda t, b, ov, ck: ["evaluate", b, "--json", t / "scores.json"])),
    ("state-dict-shape", "evaluate", "has shape [3, 3, 3, 3] in the checkpoint, the model needs",
     lambda t, b, ov, ck: ["evaluate", shape_mismatch_checkpoint(ck, t / "bad.pt"), "--limit", "1"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_changes_nothing(case, tmp_path, bundle, openvino_bundle, checkpoint) -> None:  # noqa: F811
    _, command, expected, setup = case
    argv = setup(tmp_path, bundle, openvino_bundle, checkpoint)
    before = snapshot(tmp_path)
    proc = cli(*argv, cwd=tmp_path)
    assert_one_line_error(proc, command, expected)
    assert snapshot(tmp_path) == before


def test_tensorrt_bundle_on_a_cpu_host_says_it_runs_on_the_jetson(tmp_path, bundle) -> None:
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here: a tensorrt bundle runs")
    trt = build_bundle(tmp_path / "trt", target="tensorrt")
    before = snapshot(tmp_path)
    proc = cli("benchmark", trt, "--runs", "1", "--warmup", "0", "--size", "8", "8", cwd=tmp_path)
    assert_one_line_error(proc, "benchmark", "it runs on the Jetson")
    assert "pip install" not in proc.stderr
    # Beside a bundle that runs, it is listed as skipped and the run succeeds.
    proc = cli("benchmark", bundle, trt, "--runs", "2", "--warmup", "0", "--size", "8", "8", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "skipped 1 bundle(s) that cannot run here:" in proc.stdout and "runs on the Jetson" in proc.stdout
    assert snapshot(tmp_path) == before


# -- no space left on the device ------------------------------------------------------------------

FULL_DISK_CASES = [
    ("export", "no space left on the device",
     lambda t, disk, b, ck: ["export", ck, "--target", "onnx", "--input-size", "65x65", "--val-data",
                             "synthetic:size=64,n=4", "--out", disk / "bundle"]),
    ("infer", "no space left on the device",
     lambda t, disk, b, ck: ["infer", b, noise_png(t / "a.png"), "--out", disk / "out", "--no-progress"]),
    ("infer", "does not play back",
     lambda t, disk, b, ck: ["infer", b, noise_clip(t / "clip.mp4"), "--out", disk / "seg.mp4", "--no-progress"]),
    ("infer", "cannot write",
     lambda t, disk, b, ck: ["infer", b, noise_clip(t / "clip.mp4"), "--out", disk / "seg.mp4", "--masks",
                             "--no-progress"]),
    ("train", "cannot write checkpoint",
     lambda t, disk, b, ck: ["train", "--out", disk / "run", *TINY_TRAIN]),
]


@pytest.mark.parametrize("case", FULL_DISK_CASES, ids=["export", "infer-images", "infer-video", "infer-video-masks", "train"])
def test_full_disk_is_one_line_and_leaves_no_half_file(case, tmp_path, full_disk, bundle, checkpoint) -> None:  # noqa: F811
    command, expected, setup = case
    argv = setup(tmp_path, full_disk, bundle, checkpoint)
    proc = cli(*argv, cwd=tmp_path)
    assert_one_line_error(proc, command, expected)
    left = sorted(str(p.relative_to(full_disk)) for p in full_disk.rglob("*"))
    # Nothing half-written: no bundle, image, video, checkpoint or hidden temporary file. A
    # training run keeps its folder and the log lines written before the checkpoint failed.
    assert left in ([], ["run", "run/log.jsonl"]), left


# -- faults that must not lose the work done ----------------------------------------------------

def test_sigterm_during_video_keeps_a_playable_video(tmp_path, bundle) -> None:
    clip = tmp_path / "long.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (160, 120))
    for i in range(1500):
        writer.write(cv2.cvtColor(blocks_image(120, 160, seed=i % 7), cv2.COLOR_RGB2BGR))
    writer.release()
    out = tmp_path / "seg.mp4"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2"}
    proc = subprocess.Popen([sys.executable, "-m", "edge_deeplab.cli", "infer", str(bundle), str(clip), "--out",
                             str(out), "--no-progress", "--queue-size", "1"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    partial = tmp_path / ".seg.partial.mp4"
    deadline = time.monotonic() + 120
    while not partial.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be stopped"
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr
    assert "(stopped by SIGTERM)" in stdout
    written = int(stdout.split("frames: ")[1].split(" written")[0])
    assert 0 < written < 1500 and not partial.exists()
    cap = cv2.VideoCapture(str(out))
    assert cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == written
    cap.release()


def test_truncated_video_says_the_stream_ended_early(tmp_path, bundle) -> None:
    # In a subprocess: FFmpeg reading a file cut short is the kind of native code whose damage
    # should not outlive the case (run in the pytest process, a later fork crashed).
    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    for i in range(40):
        writer.write(cv2.cvtColor(blocks_image(48, 64, seed=i), cv2.COLOR_RGB2BGR))
    writer.release()
    data = clip.read_bytes()
    clip.write_bytes(data[: len(data) // 2])  # a copy cut short, its header still saying 40 frames
    proc = cli("infer", bundle, clip, "--out", tmp_path / "o.mp4", "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    written = int(proc.stdout.split("frames: ")[1].split(" written")[0])
    assert 0 < written < 40
    assert f"the stream ended early: {written} of the 40 frames the file declares" in proc.stdout


def test_folder_with_a_bomb_segments_the_others(tmp_path, bundle) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(blocks_image(24, 32)).save(folder / "a.png")
    png_bomb(folder / "bomb.png")
    proc = cli("infer", bundle, folder, "--out", tmp_path / "out", "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "1 image(s) segmented" in proc.stdout and "skipped" in proc.stdout and "bomb.png: refused" in proc.stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_overlay.png"]
