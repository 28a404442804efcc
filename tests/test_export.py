"""Export: ONNX equivalence with PyTorch, INT8 bundles, the accuracy guard, manifests, bad input.

The model is a tiny MobileNetV2 DeepLabv3+ (width 0.35) trained for a few seconds on 64 px
synthetic images, so its predictions are decisive enough for agreement/mIoU checks to mean
something; inputs are 65x65 and calibration/validation sets a handful of images.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import stat
import sys
from pathlib import Path

import numpy as np
import pytest

from runtime.errors import EdgeDeeplabError
from tiny_model import train_tiny_checkpoint
from runtime.files import current_umask
from runtime.manifest import read_manifest

CALIB = "synthetic:size=64,n=24"
VAL = "synthetic:size=64,n=12"
SIZE = "65x65"


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    # One file per test run, shared by every module that imports this fixture and, under
    # pytest-xdist, by every worker (training is the slowest part of the setup): the workers'
    # temporary folders share a parent, and the first worker to need it trains it under a lock.
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    path = root / "export-checkpoint" / "tiny.pt"
    with FileLock(str(root / "export-checkpoint.lock")):
        if not path.is_file():
            train_tiny_checkpoint(path, steps=20, data="synthetic:size=64,n=64", dataset=VAL)
    return path


@pytest.fixture(autouse=True)
def _calibration_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("EDGE_DEEPLAB_CACHE", str(tmp_path_factory.getbasetemp() / "edge-deeplab-cache"))


def export(*args: str) -> int:
    from edge_deeplab.cli import main

    return main(["export", *map(str, args)])


def onnx_ops(path: Path) -> list[str]:
    import onnx

    return [n.op_type for n in onnx.load(str(path)).graph.node]


# -- FP32 ONNX ---------------------------------------------------------------------------------------

def test_static_fp32_onnx_matches_pytorch_and_manifest_is_complete(checkpoint, tmp_path):
    out = tmp_path / "b"
    assert export(checkpoint, "--target", "onnx", "--input-size", SIZE, "--val-data", VAL, "--outputs", "both",
                  "--float-input", "--out", out) == 0
    manifest = read_manifest(out)
    assert manifest.precision == "fp32" and manifest.files == {"model": "model.onnx"}
    # Readable by the Jetson container's other user: modes follow the umask (0755/0644 under 022).
    umask = current_umask()
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~umask
    assert {stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()} == {0o666 & ~umask}
    assert manifest.input.shape == [1, 3, 65, 65] and manifest.input.dtype == "float32"
    assert manifest.outputs == ["mask", "logits"]
    assert manifest.model["backbone"] == "mobilenetv2" and manifest.model["output_stride"] == 16
    assert manifest.source["sha256"] and Path(manifest.source["checkpoint"]).name == "tiny.pt"
    assert manifest.tools["onnxruntime"] and manifest.tools["torch"]
    (check,) = manifest.verification["onnx_vs_pytorch"]["checks"]
    assert check["argmax_agreement"] >= 0.999 and check["max_abs_diff"] < 1e-3
    assert manifest.calibration is None
    ops = onnx_ops(out / "model.onnx")
    assert "Constant" not in ops and "Identity" not in ops  # constant-folded and cleaned
    import onnx

    model = onnx.load(str(out / "model.onnx"))
    assert model.opset_import[0].version == 17
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)


def test_dynamic_onnx_is_right_at_other_sizes_and_output_stride_switch(checkpoint, tmp_path):
    from edge_deeplab.checkpoint import load_checkpoint
    from exporters.onnx import torch_logits
    from exporters.verify import compare, ort_runner

    out = tmp_path / "dyn"
    assert export(checkpoint, "--target", "onnx", "--dynamic", "--output-stride", 8, "--input-size", SIZE,
                  "--val-data", VAL, "--outputs", "both", "--float-input", "--out", out) == 0
    manifest = read_manifest(out)
    assert manifest.input.shape == [None, 3, None, None] and manifest.model["output_stride"] == 8
    assert len(manifest.verification["onnx_vs_pytorch"]["checks"]) == 2
    # Image pooling (mean + resize to the feature size) must be right at any size, odd ones too.
    model = load_checkpoint(checkpoint).build_model(8)
    run = ort_runner(out / "model.onnx")
    rng = np.random.default_rng(0)
    for h, w in [(33, 97), (81, 47)]:
        x = rng.standard_normal((1, 3, h, w)).astype(np.float32)
        outputs = run(x)
        assert outputs["mask"].shape == (1, h, w) and outputs["mask"].dtype == np.uint8
        agreement = compare([{"logits": torch_logits(model, [x], False, None, None)[0]}], [outputs])
        assert agreement.max_abs_diff < 1e-3 and agreement.argmax_agreement >= 0.999


def test_uint8_input_folds_normalization_into_the_graph(checkpoint, tmp_path):
    from calibration.inputs import InputSpecLite, prepare
    from edge_deeplab.data.base import open_dataset
    from exporters.verify import ort_runner

    floats, raw = tmp_path / "f", tmp_path / "u"
    common = ("--target", "onnx", "--input-size", SIZE, "--val-data", VAL, "--val-images", 2, "--outputs", "logits")
    assert export(checkpoint, *common, "--float-input", "--out", floats) == 0
    assert export(checkpoint, *common, "--out", raw) == 0  # uint8 input is the default
    manifest = read_manifest(raw)
    assert manifest.input.dtype == "uint8"
    from runtime.images import resize_image

    # At exactly the input size: no padding (uint8 padding can only be the mean rounded to a byte).
    image = resize_image(open_dataset(VAL, "val")[0].image, 65, 65)
    mean, std = tuple(manifest.mean), tuple(manifest.std)
    x_float, _ = prepare(image, InputSpecLite(65, 65, "float32", mean, std))
    x_raw, _ = prepare(image, InputSpecLite(65, 65, "uint8", mean, std))
    np.testing.assert_allclose(ort_runner(raw / "model.onnx")(x_raw)["logits"],
                               ort_runner(floats / "model.onnx")(x_float)["logits"], rtol=1e-3, atol=5e-3)


def test_fp16_onnx_is_checked_against_fp32(checkpoint, tmp_path):
    out = tmp_path / "h"
    assert export(checkpoint, "--target", "onnx", "--precision", "fp16", "--input-size", SIZE, "--val-data", VAL,
                  "--out", out) == 0
    manifest = read_manifest(out)
    assert manifest.verification["vs_fp32"]["argmax_agreement"] >= 0.99
    assert abs(manifest.verification["miou"]["drop_points"]) < 1.0


# -- what a default export ships ------------------------------------------------------------------

def test_default_bundle_takes_bytes_returns_the_mask_and_keeps_the_checkpoint_size(checkpoint, tmp_path, capsys):
    import onnx

    import runtime
    from edge_deeplab.data.base import open_dataset

    out = tmp_path / "default"
    assert export(checkpoint, "--target", "onnx", "--out", out) == 0
    err = capsys.readouterr().err
    # The tiny checkpoint records no evaluation size: the largest of its dataset's validation images.
    assert "input size 64x64: the largest of the validation images" in err
    manifest = read_manifest(out)
    assert manifest.input.shape == [1, 3, 64, 64] and manifest.input.dtype == "uint8"
    assert manifest.outputs == ["mask"] and manifest.schema_version == 3
    graph = onnx.load(str(out / "model.onnx")).graph
    assert [o.name for o in graph.output] == ["mask"]
    assert [n.op_type for n in graph.node][-2:] == ["ArgMax", "Cast"]
    assert graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    (check,) = manifest.verification["onnx_vs_pytorch"]["checks"]
    assert check["argmax_agreement"] >= 0.999 and check["max_abs_diff"] is None
    miou = manifest.verification["miou"]
    assert miou["images"] == 12 and miou["input_size"] == [64, 64] and miou["dataset"] == VAL
    assert abs(miou["drop_vs_checkpoint_points"]) < 1.0 and "warning" not in err
    image = open_dataset(VAL, "val")[0].image
    with runtime.load(out) as seg:
        mask = seg.predict(image)
        assert mask.shape == image.shape[:2] and mask.dtype == np.uint8
        with pytest.raises(EdgeDeeplabError, match="--outputs logits"):
            seg.logits(image)
    # evaluate scores the mask bundle through the runtime: the same figure the export measured.
    from edge_deeplab.cli import main

    capsys.readouterr()
    assert main(["evaluate", str(out), "--data", VAL, "--json", str(tmp_path / "e.json")]) == 0
    assert json.loads((tmp_path / "e.json").read_text())["miou"] == pytest.approx(miou["fp32"], abs=1e-9)
    # A soft-output option on a mask bundle is one line, not a failure deep inside.
    from PIL import Image

    Image.fromarray(image).save(tmp_path / "photo.png")
    assert main(["infer", str(out), str(tmp_path / "photo.png"), "--upsample", "logits", "--out", str(tmp_path / "i")]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith("for soft outputs")


def test_default_size_is_the_one_the_checkpoint_was_evaluated_at(checkpoint, tmp_path, capsys):
    from edge_deeplab.checkpoint import load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(checkpoint)
    ckpt.eval_input_size = [48, 40]
    sized = save_checkpoint(ckpt, tmp_path / "sized.pt")
    out = tmp_path / "b"
    assert export(sized, "--target", "onnx", "--val-images", 2, "--out", out) == 0
    assert "input size 48x40: the size the checkpoint was evaluated at" in capsys.readouterr().err
    assert read_manifest(out).input.shape == [1, 3, 48, 40]


def test_an_imported_checkpoint_exports_with_nothing_else_on_the_machine(checkpoint, tmp_path, capsys):
    """As a new user's VainF import: its dataset ('voc') is not here and no images are given. FP32
    needs no calibration and the check against PyTorch needs pictures, not labels: the export is
    verified on the built-in sample images, says the mIoU was not measured, and says where its
    input size came from; evaluate then says what data can work."""
    from edge_deeplab.checkpoint import load_checkpoint, save_checkpoint
    from edge_deeplab.cli import main

    ckpt = load_checkpoint(checkpoint)
    ckpt.dataset, ckpt.eval_input_size = "voc", [65, 65]  # what import-checkpoint records
    ckpt.metrics = {"imported_from": "VainF/DeepLabV3Plus-Pytorch: best.pth"}
    imported = save_checkpoint(ckpt, tmp_path / "imported.pt")
    out = tmp_path / "b"
    assert export(imported, "--target", "onnx", "--out", out) == 0
    err = capsys.readouterr().err
    assert "input size 65x65: the usual evaluation size of voc, recorded at import (this checkpoint was not " \
           "evaluated here)" in err
    assert "voc is not readable here, so the bundle's mIoU is not measured" in err
    assert "verified against PyTorch on 4 built-in sample image(s)" in err
    manifest = read_manifest(out)
    assert manifest.verification["onnx_vs_pytorch"]["checks"][0]["images"] == 4
    assert "miou" not in manifest.verification
    assert main(["evaluate", str(imported)]) == 2
    assert "give --data: the path of your copy of voc, or a folder with images/, masks/ and a classes.yaml of " \
           "its 7 classes" in capsys.readouterr().err


def test_an_input_size_that_loses_accuracy_is_warned_about_with_the_flag(checkpoint, tmp_path, capsys):
    out = tmp_path / "small"
    assert export(checkpoint, "--target", "onnx", "--input-size", "33x33", "--out", out) == 0
    miou = read_manifest(out).verification["miou"]
    err = capsys.readouterr().err
    assert miou["drop_vs_checkpoint_points"] > 1.0, miou  # 64 px images shrunk to 33 px
    warning = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "shrunk to fit" in warning[0] and "--input-size 64x64" in warning[0]


# -- INT8 --------------------------------------------------------------------------------------------

def _int8(checkpoint, out, target, *extra):
    return export(checkpoint, "--target", target, "--precision", "int8", "--input-size", SIZE, "--calib-data", CALIB,
                  "--calib-images", 8, "--val-data", VAL, "--val-images", 8, "--out", out, *extra)


class _Terminal(io.StringIO):
    """A stderr that says it is a terminal, as an interactive run's is."""

    def isatty(self) -> bool:
        return True


def test_slow_export_steps_show_bars_on_a_terminal_and_stay_quiet_when_captured(checkpoint, tmp_path, monkeypatch,
                                                                                capsys):
    """Calibration, each scoring pass of the accuracy guard and the sensitivity ranking have bars
    (stderr, terminal only)."""
    from edge_deeplab.checkpoint import load_checkpoint
    from exporters.onnx import export_onnx
    from exporters.sensitivity import rank_layers

    capsys.readouterr()
    # A limit of 100 points is met by the fully quantized model: one scoring pass each for FP32 and INT8.
    # (Captured, the same export draws nothing: test_accuracy_guard_keeps_sensitive_layers_in_float.)
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    monkeypatch.setenv("EDGE_DEEPLAB_CACHE", str(tmp_path / "cache-terminal"))
    assert _int8(checkpoint, tmp_path / "terminal", "onnxruntime", "--max-drop", "100") == 0
    drawn = terminal.getvalue()
    for bar in ("preparing calibration images", "calibrating (minmax)", "scoring fp32", "scoring int8"):
        assert bar in drawn, bar
    assert "[1] exporting FP32 ONNX" in drawn
    fp32 = export_onnx(load_checkpoint(checkpoint).build_model(16), tmp_path / "fp32.onnx", 65, 65, uint8_input=True)
    assert rank_layers(fp32, tmp_path / "terminal" / "model.onnx", [np.zeros((1, 3, 65, 65), np.uint8)])
    assert "ranking layers by INT8 noise" in terminal.getvalue()
    assert capsys.readouterr().out == ""  # bars never on stdout


# -- bad input: one line, exit 2, nothing written ----------------------------------------------------

@pytest.mark.parametrize(
    "args, message",
    [
        (["--target", "onnx", "--precision", "int8"], "has no int8 precision"),
        (["--target", "coreml"], "'coreml' is not one of 'onnx', 'onnxruntime', 'openvino', 'tensorrt'"),
        (["--target", "onnx", "--precision", "int4"], "'int4' is not one of 'fp32', 'fp16', 'int8'"),
        (["--target", "onnxruntime", "--precision", "fp32"], "has no fp32 precision"),
        (["--target", "onnx", "--max-drop", "0.5", "--val-data", VAL], "int8 exports only"),
        (["--target", "onnx", "--val-data", VAL, "--outputs", "probabilities"], "'probabilities' is not one of 'mask', 'logits', 'both'"),
        (["--target", "openvino", "--precision", "int8", "--calib-data", CALIB, "--calib-method", "entropy"],
         "NNCF"),
        (["--target", "onnx", "--val-data", "synthetic", "--opset", "13"], "opset"),
    ],
)
def test_bad_requests_fail_early_with_one_line(checkpoint, tmp_path, capsys, args, message):
    out = tmp_path / "never"
    assert export(checkpoint, *args, "--input-size", SIZE, "--out", out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not out.exists()


def test_input_smaller_than_the_output_stride_allows_fails_early(checkpoint, tmp_path, capsys):
    out = tmp_path / "never"
    assert export(checkpoint, "--target", "onnx", "--val-data", VAL, "--input-size", "16x40", "--out", out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith("input size 16x40 is too small for output stride 16; use at least 17x17")
    assert not out.exists()


@pytest.fixture
def anonymous(checkpoint, tmp_path) -> Path:
    """The tiny checkpoint with no training dataset recorded (as some imported checkpoints are)."""
    from edge_deeplab.checkpoint import load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(checkpoint)
    ckpt.dataset = ""
    return save_checkpoint(ckpt, tmp_path / "anonymous.pt")


def test_accuracy_guard_without_readable_validation_data_fails_early(anonymous, tmp_path, capsys):
    out = tmp_path / "never"
    assert export(anonymous, "--target", "onnxruntime", "--calib-data", CALIB, "--max-drop", "0.5",
                  "--input-size", SIZE, "--out", out) == 2
    assert "needs labelled validation" in capsys.readouterr().err.strip().splitlines()[-1]
    assert not out.exists()


def test_int8_without_calibration_data_fails_early(anonymous, tmp_path, capsys):
    """No --calib-data and a checkpoint that records no training dataset: nothing to calibrate on."""
    out = tmp_path / "never"
    assert export(anonymous, "--target", "onnxruntime", "--val-data", VAL, "--input-size", SIZE, "--out", out) == 2
    assert "needs calibration images" in capsys.readouterr().err
    assert not out.exists()


def test_existing_output_is_not_overwritten_without_force(checkpoint, tmp_path, capsys):
    out = tmp_path / "exists"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert export(checkpoint, "--target", "onnx", "--val-data", VAL, "--input-size", SIZE, "--out", out) == 2
    assert "--force" in capsys.readouterr().err and (out / "keep.txt").read_text() == "mine"
    assert export(checkpoint, "--target", "onnx", "--val-data", VAL, "--input-size", SIZE, "--out", out, "--force") == 0
    assert not (out / "keep.txt").exists() and read_manifest(out).target == "onnx"


def test_checkpoint_that_is_not_ours(tmp_path, capsys):
    import torch

    foreign = tmp_path / "other.pt"
    torch.save({"model_state": {}}, foreign)
    assert export(foreign, "--target", "onnx", "--val-data", VAL, "--out", tmp_path / "o") == 2
    assert "not an edge-deeplab checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_dataset_with_other_classes(checkpoint, tmp_path, capsys):
    from edge_deeplab.checkpoint import load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(checkpoint)
    ckpt.classes = ["sky", *ckpt.classes[1:]]
    renamed = save_checkpoint(ckpt, tmp_path / "renamed.pt")
    assert export(renamed, "--target", "onnx", "--val-data", VAL, "--out", tmp_path / "o") == 2
    assert "classes" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_calibration_folder_without_images(checkpoint, tmp_path, capsys):
    empty = tmp_path / "frames"
    empty.mkdir()
    assert export(checkpoint, "--target", "onnxruntime", "--calib-data", empty, "--val-data", VAL,
                  "--out", tmp_path / "o") == 2
    assert "no usable images" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_an_export_that_disagrees_with_pytorch_fails_and_writes_nothing(tmp_path):
    """A model whose Python control flow the tracer freezes: the ONNX differs from PyTorch."""
    import torch

    from edge_deeplab.data.base import open_dataset
    from exporters.bundle import export_bundle
    from exporters.request import ExportRequest

    class Drifting(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = torch.nn.Conv2d(3, 2, 1)
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            logits = self.head(x)
            return logits if self.calls == 1 else torch.flip(logits, dims=[1])  # traced on call 1 only

    samples = [open_dataset(VAL, "val")[i] for i in range(2)]
    out = tmp_path / "bad"
    request = ExportRequest(model=Drifting(), target="onnx", precision="fp32", out=out, height=33, width=33,
                            classes=["a", "b"], palette=[[0, 0, 0], [1, 1, 1]], mean=[0.5] * 3, std=[0.25] * 3,
                            verify_samples=samples, log=lambda message: None)
    with pytest.raises(EdgeDeeplabError, match="disagrees"):
        export_bundle(request)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_manifest_json_round_trips(checkpoint, tmp_path):
    out = tmp_path / "rt"
    assert export(checkpoint, "--target", "tensorrt", "--input-size", SIZE, "--dynamic", "--val-data", VAL,
                  "--out", out) == 0
    data = json.loads((out / "model.json").read_text())
    assert data["extra"]["tensorrt_profile"]["opt"] == [1, 3, 65, 65]
    assert "--minShapes=image:1x3x33x33" in data["extra"]["trtexec"]
    # The runtime builds with the settings the bundle records: its trtexec line is the bundle's.
    from runtime.backends.tensorrt_build import bundle_settings
    from runtime.backends.tensorrt_engines import profile_shapes

    manifest = read_manifest(out)
    profile = profile_shapes(manifest.input.shape, 1024, manifest.extra["tensorrt_profile"])
    assert bundle_settings(manifest, profile).trtexec_command("model.onnx") == data["extra"]["trtexec"]
    assert data["extra"]["tensorrt_build"] == {"builder_flags": [], "workspace_mb": 1024, "fp16_with_int8": True}
    assert set(data["checksums"]) == {"model.onnx", "README.txt"}


@pytest.mark.tensorrt
@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is None,
                    reason="TensorRT (and an NVIDIA GPU) are not available on this machine")
def test_export_builds_the_engine_where_tensorrt_imports_and_the_runtime_uses_it(checkpoint, tmp_path):
    import runtime

    out = tmp_path / "trt"
    assert export(checkpoint, "--target", "tensorrt", "--precision", "fp16", "--input-size", SIZE, "--val-data", VAL,
                  "--out", out) == 0
    manifest = read_manifest(out)
    assert manifest.files["engine"] == "model.engine" and manifest.extra["engine_built_here"]
    assert set(manifest.extra["engine_built_for"]) == {"gpu_name", "compute_capability", "tensorrt_version"}
    with runtime.load(out, engine_cache_dir=tmp_path / "cache") as seg:  # the shipped engine: no rebuild
        assert seg.predict(np.zeros((65, 65, 3), np.uint8)).shape == (65, 65)
    assert not list((tmp_path / "cache").glob("*.engine"))
