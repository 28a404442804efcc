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

from runtime.errors import EdgeDeeplabError
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


def _tmpfs(mount: Path, options: str, what: str):
    """Mount a small tmpfs at ``mount`` for the test's duration (root only; skipped elsewhere)."""
    mount.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)], check=True,
                       capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot mount {what} here ({exc}); needs root")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False, timeout=30)


@pytest.fixture
def full_disk(tmp_path: Path):
    """A 64 KiB tmpfs: writes to it fail with ENOSPC, as on a full SD card."""
    yield from _tmpfs(tmp_path / "full", "size=64k", "a tmpfs to fill up")


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


def _latin1_yaml(path: Path) -> Path:
    path.write_bytes("iterations: 1  # caf\xe9\n".encode("latin-1"))
    return path


def _images(folder: Path, count: int = 2) -> Path:
    folder.mkdir()
    for i in range(count):
        noise_png(folder / f"{i}.png", 16)
    return folder


def _copy(source: Path, dest: Path) -> Path:
    (shutil.copytree if source.is_dir() else shutil.copy)(source, dest)
    return dest


def _two_class_folder(folder: Path) -> Path:
    """A labelled folder dataset whose classes differ from the synthetic set's."""
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    (folder / "classes.yaml").write_text("classes: [sky, ground]\n")
    (folder / "splits").mkdir()
    for i, split in enumerate(("train", "val")):
        noise_png(folder / "images" / f"{i}.png", 32)
        Image.fromarray(np.zeros((32, 32), np.uint8)).save(folder / "masks" / f"{i}.png")
        (folder / "splits" / f"{split}.txt").write_text(f"{i}\n")
    return folder


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
    # Operating-system errors on a path: one line naming it, found before any work.
    ("out-name-too-long", "infer", "has 300 bytes; this file system allows",
     lambda t, b, ov, ck: ["infer", b, noise_png(t / "x.png", 16), "--out", t / ("x" * 300)]),
    ("runs-is-a-file", "infer", "runs is a file, not a folder",
     _with_file("runs", "mine", lambda t, b, ov, ck: ["infer", b, noise_png(t / "x.png", 16)])),
    ("preview-out-is-a-file", "datasets", "is a file; preview writes its PNGs into a folder",
     _with_file("p", "mine", lambda t, b, ov, ck: ["datasets", "preview", "synthetic:size=32,n=2", "--out", t / "p"])),
    ("pipeline-out-is-a-file", "pipeline", "is a file, not a folder",
     _with_file("p", "mine", lambda t, b, ov, ck: ["pipeline", "--out", t / "p", "--quick"])),
    # A file that is not a checkpoint is named for what it is before torch reads it.
    ("text-file-as-checkpoint", "evaluate", "is not a checkpoint: it is a text file",
     _with_file("c.pt", "not weights\n", lambda t, b, ov, ck: ["evaluate", t / "c.pt"])),
    # Option values refused where they are given.
    ("train-workers-negative", "train", "-1 is not in the range x>=0",
     lambda t, b, ov, ck: ["train", "--out", t / "run", *TINY_TRAIN, "--workers", "-1"]),
    ("train-seed-negative", "train", "-1 is not in the range 0<=x<=4294967295",
     lambda t, b, ov, ck: ["train", "--out", t / "run", *TINY_TRAIN, "--seed", "-1"]),
    ("train-val-images-0", "train", "0 is not in the range x>=1",
     lambda t, b, ov, ck: ["train", "--out", t / "run", *TINY_TRAIN, "--val-images", "0"]),
    ("train-crop-size-huge", "train", "1000000 is not in the range 9<=x<=2048",
     lambda t, b, ov, ck: ["train", "--out", t / "run", *TINY_TRAIN, "--crop-size", "1000000"]),
    ("yaml-crop-size-huge", "train", "crop-size: 1000000 is not in the range",
     _with_file("c.yaml", "crop_size: 1000000\n", lambda t, b, ov, ck: ["train", "--config", t / "c.yaml"])),
    ("yaml-not-utf8", "train", "is not UTF-8 text (byte 0xe9",
     lambda t, b, ov, ck: ["train", "--config", _latin1_yaml(t / "c.yaml")]),
    ("preview-size-huge", "datasets", "synthetic image size must be 32 to 2048, got 200000",
     lambda t, b, ov, ck: ["datasets", "preview", "synthetic:size=200000", "--out", t / "p"]),
    ("infer-duration-negative", "infer", "-1.0 is not in the range x>0",
     lambda t, b, ov, ck: ["infer", b, noise_png(t / "x.png", 16), "--out", t / "o", "--duration", "-1"]),
    ("export-opset-99", "export", "99 is not in the range 17<=x<=23",
     lambda t, b, ov, ck: ["export", ck, "--target", "onnx", "--out", t / "b", "--opset", "99"]),
    ("evaluate-device-missing", "evaluate", "--device cuda:7: this",
     lambda t, b, ov, ck: ["evaluate", ck, "--device", "cuda:7", "--limit", "1"]),
    # An output never replaces an input, --force or not, and nothing is read first.
    ("infer-out-is-the-source-folder", "infer", "holds the input",
     lambda t, b, ov, ck: ["infer", b, _images(t / "src"), "--out", t / "src", "--force"]),
    ("infer-out-is-the-source-image", "infer", "is the input",
     lambda t, b, ov, ck: ["infer", b, noise_png(t / "a.png", 16), "--out", t / "a.png", "--force"]),
    ("import-out-is-the-input", "import-checkpoint", "is the input",
     lambda t, b, ov, ck: ["import-checkpoint", _copy(ck, t / "a.pt"), "--out", t / "a.pt", "--force"]),
    ("report-out-is-the-bundles", "report", "is the input",
     lambda t, b, ov, ck: ["report", "--bundles", _copy(b, t / "bundles"), "--out", t / "bundles", "--force"]),
    # Checked too little before.
    ("manifest-names-fewer-classes", "infer", '"classes" names 2 classes but the model predicts 4',
     _infer_one(_edited(lambda d: d.update(classes=d["classes"][:2], palette=d["palette"][:2])))),
    ("model-predicts-more-classes", "infer", "but model.json names 2 classes",
     _infer_one(_edited(lambda d: (d.update(classes=d["classes"][:2], palette=d["palette"][:2]),
                                   d["model"].update(num_classes=2))))),
    ("report-same-checkpoint-twice", "report", "is given twice",
     lambda t, b, ov, ck: ["report", ck, ck, "--out", t / "r"]),
    ("pipeline-training-refused", "pipeline", "fewer than one batch (8)",  # the spawned training's own line
     lambda t, b, ov, ck: ["pipeline", "--out", t / "p", "--quick", "--data", "synthetic:size=32,n=2"]),
    ("train-refused-at-validation", "train", "classes differ",  # and leaves no --out behind (the snapshot)
     lambda t, b, ov, ck: ["train", "--out", t / "run", *TINY_TRAIN, "--val-data", _two_class_folder(t / "v")]),
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


@pytest.fixture
def read_only_disk(tmp_path: Path):
    """A read-only tmpfs, as a write-protected card or a read-only container mount."""
    yield from _tmpfs(tmp_path / "ro", "ro,size=64k", "a read-only tmpfs")


def test_read_only_out_is_one_line_before_any_work(tmp_path, read_only_disk, bundle) -> None:
    image = noise_png(tmp_path / "a.png", 16)
    proc = cli("infer", bundle, image, "--out", read_only_disk / "out", cwd=tmp_path)
    assert_one_line_error(proc, "infer", f"cannot write {read_only_disk / 'out'}: {read_only_disk} is on a "
                                         "read-only file system")


# -- checks below the command line, grouped: each is one function's rule, not a CLI concern ---------

def test_numbered_folders_count_ascii_digits_only(tmp_path) -> None:
    from runtime.files import new_numbered_dir

    for name in ("001", "²", "٣", "7a"):  # '²' and '٣' pass str.isdigit() but are no run numbers
        (tmp_path / name).mkdir()
    assert new_numbered_dir(tmp_path).name == "002"


def test_a_file_is_checked_to_be_a_torch_file_before_torch_reads_it(tmp_path) -> None:
    import zipfile

    from edge_deeplab.torch_files import check_torch_file

    kinds = {"text.pt": (b"not weights\n", "it is a text file"), "empty.pt": (b"", "is empty"),
             "image.pt": (b"\x89PNG\r\n\x1a\n" + bytes(60), "a PNG image"),
             "model.pt": (b"\x08\x07\x12\x07pytorch", "an ONNX model")}
    for name, (data, message) in kinds.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(EdgeDeeplabError, match=message):
            check_torch_file(tmp_path / name, "checkpoint")
    with pytest.raises(EdgeDeeplabError, match="is a folder, not a checkpoint"):
        check_torch_file(tmp_path, "checkpoint")
    with zipfile.ZipFile(tmp_path / "zip.pt", "w") as archive:  # torch's own format passes the check
        archive.writestr("archive/data.pkl", b"")
    assert check_torch_file(tmp_path / "zip.pt", "checkpoint") == tmp_path / "zip.pt"


def test_an_output_overlaps_an_input_through_links_too(tmp_path) -> None:
    from runtime.outputs import refuse_overlap

    (tmp_path / "src").mkdir()
    noise_png(tmp_path / "src" / "a.png", 16)
    os.symlink(tmp_path / "src", tmp_path / "link")
    os.link(tmp_path / "src" / "a.png", tmp_path / "hard.png")
    for out, source in ((tmp_path / "link", tmp_path / "src"), (tmp_path / "hard.png", tmp_path / "src" / "a.png"),
                        (tmp_path, tmp_path / "src" / "a.png")):
        with pytest.raises(EdgeDeeplabError, match="never replaces an input"):
            refuse_overlap(out, [source])
    with pytest.raises(EdgeDeeplabError, match="is inside the input"):  # a file the input folder holds
        refuse_overlap(tmp_path / "src" / "a.png", [tmp_path / "src"])
    refuse_overlap(tmp_path / "src" / "results", [tmp_path / "src"])  # a new folder inside an input: fine
    refuse_overlap(tmp_path / "out", ["synthetic", None])  # not on disk: nothing to lose


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
