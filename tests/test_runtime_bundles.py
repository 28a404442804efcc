"""Small real bundles for the runtime tests (and the benchmarks), plus tests of bundle checks.

Two toy models, exported with torch.onnx.export (the runtime itself never imports torch):

* ``pixel``: a 1x1 convolution, i.e. a per-pixel classifier. Its mask depends only on each
  pixel's colour, so the exact expected mask for any image, size, padding or resize can be
  computed with numpy (:func:`expected_pixel_mask`): that is the oracle for the geometry tests.
* ``conv``: strided convolutions and a bilinear upsample back to input size, like DeepLab's head;
  used where spatial context matters (INT8 quantization, benchmarks).

Run as a script to write a bundle for the benchmarks:
``PYTHONPATH=. python tests/test_runtime_bundles.py OUT_DIR --kind conv --width 32 --target onnxruntime``.
"""

from __future__ import annotations

import argparse
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from runtime.errors import BundleError
from runtime.manifest import Manifest, InputSpec, read_manifest, write_manifest
from runtime.preprocess import IMAGENET_MEAN, IMAGENET_STD, normalize

CLASSES = ["background", "red", "green", "blue"]
PALETTE = [[0, 0, 0], [200, 30, 30], [30, 200, 30], [30, 30, 200]]
# Pixel model: class c's logit is row c of this matrix applied to the normalized colour.
PIXEL_WEIGHTS = np.array([[-0.4, -0.4, -0.4], [1.0, -0.5, -0.5], [-0.5, 1.0, -0.5], [-0.5, -0.5, 1.0]], np.float32)
PIXEL_BIAS = np.array([0.3, 0.0, 0.0, 0.0], np.float32)


def _torch_model(kind: str, width: int, uint8_input: bool):
    import torch
    from torch import nn
    import torch.nn.functional as F

    class Normalize(nn.Module):
        """In-graph normalization, as uint8-input bundles have it."""

        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255)
            self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255)

        def forward(self, x):
            return (x.float() - self.mean) / self.std

    class Pixel(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Conv2d(3, len(CLASSES), 1)
            with torch.no_grad():
                self.head.weight.copy_(torch.from_numpy(PIXEL_WEIGHTS).view(len(CLASSES), 3, 1, 1))
                self.head.bias.copy_(torch.from_numpy(PIXEL_BIAS))

        def forward(self, x):
            return self.head(x)

    class Conv(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.body = nn.Sequential(
                nn.Conv2d(3, width, 3, stride=2, padding=1), nn.ReLU(),
                nn.Conv2d(width, width, 3, stride=2, padding=1), nn.ReLU(),
                nn.Conv2d(width, width, 3, padding=2, dilation=2), nn.ReLU(),
                nn.Conv2d(width, len(CLASSES), 1),
            )

        def forward(self, x):
            return F.interpolate(self.body(x), size=x.shape[-2:], mode="bilinear", align_corners=False)

    core = Pixel() if kind == "pixel" else Conv()
    return (nn.Sequential(Normalize(), core) if uint8_input else core).eval()


class _Reader:
    """Calibration images for onnxruntime.quantization (random colours, fixed seed)."""

    def __init__(self, name: str, hw: tuple[int, int], count: int = 8) -> None:
        rng = np.random.default_rng(0)
        self._items = iter(
            [{name: normalize(rng.integers(0, 256, (*hw, 3), dtype=np.uint8))[None]} for _ in range(count)]
        )

    def get_next(self):
        return next(self._items, None)


def build_bundle(
    out_dir: str | Path,
    *,
    kind: str = "pixel",
    target: str = "onnx",
    precision: str = "fp32",
    static_hw: tuple[int, int] | None = None,
    input_dtype: str = "float32",
    resize: str = "pad",
    width: int = 8,
    outputs: str = "logits",
) -> Path:
    """Export a toy model and write a complete bundle (model file(s) + model.json) to ``out_dir``.

    ``outputs``: ``logits``, or ``mask`` / ``both`` with the argmax inside the graph through the
    exporter's own :func:`exporters.onnx.deploy_model` ending.
    """
    import torch

    from exporters.onnx import deploy_model
    from runtime.manifest import OUTPUT_CHOICES

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = list(OUTPUT_CHOICES[outputs])
    model = deploy_model(_torch_model(kind, width, input_dtype == "uint8"), False, names, None, None)
    hw = static_hw or (64, 64)
    example = torch.zeros(1, 3, *hw, dtype=torch.uint8 if input_dtype == "uint8" else torch.float32)
    dynamic = None if static_hw else {"image": {0: "batch", 2: "height", 3: "width"},
                                      "logits": {0: "batch", 2: "height", 3: "width"},
                                      "mask": {0: "batch", 1: "height", 2: "width"}}
    dynamic = dynamic and {k: v for k, v in dynamic.items() if k == "image" or k in names}
    onnx_path = out_dir / ("model_fp32.onnx" if precision == "int8" and target != "tensorrt" else "model.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter is what we want here
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the class count is static: the trace is right
        torch.onnx.export(model, (example,), str(onnx_path), input_names=["image"], output_names=names,
                          dynamic_axes=dynamic, opset_version=17, dynamo=False)
    files = {"model": "model.onnx"}
    if target == "onnxruntime":
        from onnxruntime.quantization import QuantFormat, quantize_static

        quantize_static(str(onnx_path), str(out_dir / "model.onnx"), _Reader("image", hw), quant_format=QuantFormat.QDQ)
        onnx_path.unlink()
    elif target == "openvino":
        import openvino as ov

        ov.save_model(ov.convert_model(str(onnx_path)), str(out_dir / "model.xml"), compress_to_fp16=precision == "fp16")
        onnx_path.unlink()
        files = {"model": "model.xml", "weights": "model.bin"}
    manifest = Manifest(
        target=target,
        precision=precision,
        files=files,
        input=InputSpec(name="image", shape=[None if not static_hw else 1, 3, *(static_hw or (None, None))],
                        dtype=input_dtype, resize=resize),
        classes=list(CLASSES),
        palette=[list(c) for c in PALETTE],
        mean=list(IMAGENET_MEAN),
        std=list(IMAGENET_STD),
        outputs=names,
        model={"backbone": f"toy-{kind}", "output_stride": 1 if kind == "pixel" else 4, "num_classes": len(CLASSES)},
    )
    write_manifest(out_dir, manifest)
    return out_dir


def expected_pixel_mask(image: np.ndarray) -> np.ndarray:
    """The pixel model's exact mask for an RGB uint8 image (the numpy oracle)."""
    x = normalize(image, IMAGENET_MEAN, IMAGENET_STD)  # 3 x H x W
    logits = np.einsum("kc,chw->khw", PIXEL_WEIGHTS, x) + PIXEL_BIAS[:, None, None]
    return logits.argmax(0).astype(np.uint8)


def blocks_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """An RGB image of solid colour blocks (8x8), so nearest resizes keep classes well defined."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (-(-height // 8), -(-width // 8), 3), dtype=np.uint8)
    return np.ascontiguousarray(small.repeat(8, 0).repeat(8, 1)[:height, :width])


# --- tests of the bundle checks the runtime relies on ---------------------------------------

@pytest.fixture(scope="module")
def pixel_bundle(tmp_path_factory) -> Path:
    return build_bundle(tmp_path_factory.mktemp("b") / "pixel")


def test_toy_bundle_reads_back(pixel_bundle: Path) -> None:
    manifest = read_manifest(pixel_bundle)
    assert manifest.target == "onnx" and manifest.input.dynamic
    assert set(manifest.checksums) == {"model.onnx"}


def test_truncated_model_is_a_bundle_error(pixel_bundle: Path, tmp_path: Path) -> None:
    import runtime

    copy = tmp_path / "copy"
    shutil.copytree(pixel_bundle, copy)
    data = (copy / "model.onnx").read_bytes()
    (copy / "model.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError, match="does not match its manifest"):
        runtime.load(copy)
    # Without the checksum step, the backend itself must still fail with one clear line.
    with pytest.raises(BundleError, match="ONNX Runtime cannot load it"):
        runtime.load(copy, verify=False)


def test_not_a_bundle_and_newer_schema(pixel_bundle: Path, tmp_path: Path) -> None:
    import json

    import runtime

    with pytest.raises(BundleError, match="is not a bundle"):
        runtime.load(tmp_path)
    copy = tmp_path / "newer"
    shutil.copytree(pixel_bundle, copy)
    data = json.loads((copy / "model.json").read_text())
    data["schema_version"] = 99
    (copy / "model.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match="newer than this runtime"):
        runtime.load(copy)


def test_manifest_that_does_not_match_the_model(pixel_bundle: Path, tmp_path: Path) -> None:
    import json

    import runtime

    copy = tmp_path / "renamed"
    shutil.copytree(pixel_bundle, copy)
    data = json.loads((copy / "model.json").read_text())
    data["input"]["name"] = "pixels"
    (copy / "model.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match="mismatched model file"):
        runtime.load(copy)


def main() -> None:
    parser = argparse.ArgumentParser(description="Write a toy bundle for the runtime benchmarks.")
    parser.add_argument("out", type=Path)
    parser.add_argument("--kind", choices=["pixel", "conv"], default="conv")
    parser.add_argument("--target", choices=["onnx", "onnxruntime", "openvino", "tensorrt"], default="onnx")
    parser.add_argument("--precision", choices=["fp32", "fp16", "int8"], default=None)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--static", type=int, nargs=2, metavar=("H", "W"), default=None)
    args = parser.parse_args()
    precision = args.precision or ("int8" if args.target == "onnxruntime" else "fp32")
    path = build_bundle(args.out, kind=args.kind, target=args.target, precision=precision,
                        static_hw=tuple(args.static) if args.static else None, width=args.width)
    print(path)


if __name__ == "__main__":
    main()
