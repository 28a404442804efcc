"""Segmenter on real ONNX Runtime and OpenVINO bundles: geometry, input kinds, options, errors.

The ``pixel`` toy model classifies each pixel by its colour alone, so the exact expected mask for
any image is computed in numpy (expected_pixel_mask) and compared pixel for pixel.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import runtime
from runtime.errors import EdgeDeeplabError
from runtime.images import resize_mask
from runtime.postprocess import argmax_classes, colorize, overlay
from test_runtime_bundles import PALETTE, blocks_image, build_bundle, expected_pixel_mask

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("bundles")
    return {
        "dynamic": build_bundle(base / "dynamic"),
        "pad": build_bundle(base / "pad", static_hw=(32, 48)),
        "stretch": build_bundle(base / "stretch", static_hw=(32, 32), resize="stretch"),
        "uint8": build_bundle(base / "uint8", input_dtype="uint8"),
        "ov": build_bundle(base / "ov", target="openvino"),
        "ov16": build_bundle(base / "ov16", target="openvino", precision="fp16"),
        "mask": build_bundle(base / "mask", static_hw=(32, 48), outputs="mask"),
        "both": build_bundle(base / "both", static_hw=(32, 48), outputs="both"),
        "ov-mask": build_bundle(base / "ov-mask", target="openvino", outputs="mask"),
        "ov-both": build_bundle(base / "ov-both", target="openvino", outputs="both"),
    }


@pytest.mark.parametrize("size", [(32, 48), (20, 30), (64, 70)])  # exact, padded, shrunk
@pytest.mark.parametrize("backend", ["", "ov-"])
def test_mask_bundle_gives_the_mask_the_host_argmax_gives(bundles, size, backend) -> None:
    """The graph's ArgMax (mask bundle) gives the exact mask, padding cropped and brought to the
    image's size, as the runtime's argmax of the same graph's logits does."""
    image = blocks_image(*size, seed=5)
    with runtime.load(bundles[f"{backend}mask"]) as mask_only, runtime.load(bundles[f"{backend}both"]) as both:
        from_graph = mask_only.predict(image)
        assert from_graph.shape == size and from_graph.dtype == np.uint8 and len(np.unique(from_graph)) > 1
        np.testing.assert_array_equal(from_graph, both.predict(image))  # a "both" bundle predicts from its mask
        if size != (64, 70) or backend:  # the image runs unresized: the numpy oracle and the host argmax apply
            np.testing.assert_array_equal(from_graph, expected_pixel_mask(image))
            np.testing.assert_array_equal(from_graph, argmax_classes(both.logits(image)))
        batch = mask_only.predict_batch([image, blocks_image(40, 10, seed=6), image])
        np.testing.assert_array_equal(batch[0], from_graph)
        np.testing.assert_array_equal(batch[2], from_graph)


def test_soft_outputs_on_a_mask_bundle_are_one_clear_error(bundles) -> None:
    with runtime.load(bundles["mask"]) as seg:
        with pytest.raises(EdgeDeeplabError, match="returns class masks only.*--outputs logits"):
            seg.logits(blocks_image(32, 48))
    with pytest.raises(EdgeDeeplabError, match="upsample='logits'"):
        runtime.load(bundles["mask"], upsample="logits")
    with runtime.load(bundles["both"], upsample="logits") as seg:  # logits there: bilinear, then argmax
        assert seg.predict(blocks_image(64, 70)).shape == (64, 70)


def test_dynamic_bundle_runs_at_image_size(bundles) -> None:
    image = blocks_image(37, 53)
    with runtime.load(bundles["dynamic"]) as seg:
        mask = seg.predict(image)
    assert mask.dtype == np.uint8 and mask.shape == (37, 53)
    np.testing.assert_array_equal(mask, expected_pixel_mask(image))
    assert len(np.unique(mask)) > 1  # the oracle is not trivially constant


def test_pad_multiple_keeps_the_result(bundles) -> None:
    image = blocks_image(37, 53, seed=1)
    with runtime.load(bundles["dynamic"], pad_multiple=16) as seg:
        tensor, placement = seg.prepare(image)
        assert tensor.shape == (3, 48, 64) and (placement.scaled_h, placement.scaled_w) == (37, 53)
        np.testing.assert_array_equal(seg.predict(image), expected_pixel_mask(image))


def test_static_pad_smaller_image_is_padded_and_cropped(bundles) -> None:
    image = blocks_image(20, 30, seed=2)
    with runtime.load(bundles["pad"]) as seg:
        np.testing.assert_array_equal(seg.predict(image), expected_pixel_mask(image))


@pytest.mark.parametrize("upsample", ["mask", "logits"])
def test_static_pad_larger_image_is_shrunk_keeping_aspect(bundles, upsample: str) -> None:
    # 64x96 -> exactly half (32x48); 8-px colour blocks stay whole, so the exact mask is known.
    image = blocks_image(64, 96, seed=3)
    with runtime.load(bundles["pad"], upsample=upsample) as seg:
        _, placement = seg.prepare(image)
        assert (placement.scaled_h, placement.scaled_w) == (32, 48)
        mask = seg.predict(image)
    assert mask.shape == (64, 96)
    agreement = (mask == expected_pixel_mask(image)).mean()
    assert agreement == 1.0 if upsample == "mask" else agreement > 0.9  # bilinear logits blur block edges


def test_static_pad_wide_image_keeps_aspect(bundles) -> None:
    image = blocks_image(32, 192, seed=4)  # 4x too wide for 32x48: scaled to 8x48, padded below
    with runtime.load(bundles["pad"]) as seg:
        tensor, placement = seg.prepare(image)
        assert (placement.scaled_h, placement.scaled_w) == (8, 48) and tensor.shape == (3, 32, 48)
        assert np.all(tensor[:, 8:, :] == 0)  # padding is the mean colour, zero after normalization
        assert seg.predict(image).shape == (32, 192)


def test_stretch_bundle(bundles) -> None:
    image = blocks_image(64, 128, seed=5)  # /2 and /4: blocks stay whole
    with runtime.load(bundles["stretch"]) as seg:
        mask = seg.predict(image)
    np.testing.assert_array_equal(mask, expected_pixel_mask(image))


def test_uint8_bundle_normalizes_in_graph(bundles) -> None:
    image = blocks_image(40, 24, seed=6)
    with runtime.load(bundles["uint8"]) as seg:
        tensor, _ = seg.prepare(image)
        assert tensor.dtype == np.uint8
        np.testing.assert_array_equal(seg.predict(image), expected_pixel_mask(image))


def test_grayscale_rgba_16bit_and_float_inputs_are_converted(bundles) -> None:
    rgb = blocks_image(24, 40, seed=7)
    gray = rgb[:, :, 1]
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)])
    deep = rgb.astype(np.uint16) * 257
    with runtime.load(bundles["dynamic"]) as seg:
        np.testing.assert_array_equal(seg.predict(gray), expected_pixel_mask(np.dstack([gray] * 3)))
        np.testing.assert_array_equal(seg.predict(rgba), expected_pixel_mask(rgb))
        np.testing.assert_array_equal(seg.predict(deep), expected_pixel_mask(rgb))
        np.testing.assert_array_equal(seg.predict(rgb / 255.0), expected_pixel_mask(rgb))
        with pytest.raises(EdgeDeeplabError, match="expected an HxW"):
            seg.predict(np.zeros((4, 4, 2), np.uint8))


def test_predict_batch_mixed_sizes_and_logits(bundles) -> None:
    images = [blocks_image(16, 24, seed=s) for s in (8, 9)] + [blocks_image(30, 20, seed=10)]
    with runtime.load(bundles["dynamic"]) as seg:
        masks = seg.predict_batch(images)
        logits = seg.logits(images[2])
    for image, mask in zip(images, masks):
        np.testing.assert_array_equal(mask, expected_pixel_mask(image))
    assert logits.shape == (4, 30, 20) and logits.dtype == np.float32
    np.testing.assert_array_equal(argmax_classes(logits), masks[2])


def test_openvino_fp32_matches_and_is_true_fp32(bundles) -> None:
    image = blocks_image(33, 41, seed=11)
    with runtime.load(bundles["ov"], threads=1) as seg:
        assert seg.backend.config["INFERENCE_PRECISION_HINT"] == "f32"
        assert seg.backend.compiled.get_property("INFERENCE_PRECISION_HINT").to_string() == "f32"
        np.testing.assert_array_equal(seg.predict(image), expected_pixel_mask(image))


def test_openvino_fp16_keeps_default_precision_and_takes_throughput_hint(bundles) -> None:
    image = blocks_image(16, 16, seed=12)
    with runtime.load(bundles["ov16"], ov_performance_hint="throughput") as seg:
        assert "INFERENCE_PRECISION_HINT" not in seg.backend.config
        assert seg.backend.config["PERFORMANCE_HINT"] == "THROUGHPUT"
        agreement = (seg.predict(image) == expected_pixel_mask(image)).mean()
    assert agreement > 0.95  # fp16 weights may flip a near-tie pixel


def test_int8_bundle_agrees_with_fp32(tmp_path: Path) -> None:
    fp32 = build_bundle(tmp_path / "fp32", kind="conv")
    int8 = build_bundle(tmp_path / "int8", kind="conv", target="onnxruntime", precision="int8")
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    with runtime.load(fp32) as a, runtime.load(int8) as b:
        ref, quant = a.logits(image), b.logits(image)
    assert np.abs(ref - quant).max() < 0.25 * np.abs(ref).max()


def test_options_are_checked(bundles) -> None:
    with pytest.raises(EdgeDeeplabError, match="unknown runtime option"):
        runtime.load(bundles["dynamic"], thread=2)
    with pytest.raises(EdgeDeeplabError, match="ov_performance_hint"):
        runtime.load(bundles["ov"], ov_performance_hint="fastest")
    with runtime.load(bundles["dynamic"], threads=1, ort_optimization="basic") as seg:
        assert seg.predict(blocks_image(8, 8)).shape == (8, 8)


def test_colorize_and_overlay() -> None:
    mask = np.array([[0, 1], [2, 255]], np.uint8)
    colours = colorize(mask, PALETTE)
    np.testing.assert_array_equal(colours[0, 1], PALETTE[1])
    np.testing.assert_array_equal(colours[1, 1], [0, 0, 0])  # ignore index beyond the palette
    image = np.full((2, 2, 3), 100, np.uint8)
    np.testing.assert_array_equal(overlay(image, mask, PALETTE, alpha=0.0), image)
    np.testing.assert_array_equal(overlay(image, mask, PALETTE, alpha=1.0), colours)
    half = overlay(image, mask, PALETTE, alpha=0.5).astype(int)
    assert np.abs(half - (image.astype(int) + colours) / 2).max() <= 1


def test_resize_mask_nearest_is_centre_aligned() -> None:
    mask = np.arange(4, dtype=np.uint8).reshape(2, 2)
    np.testing.assert_array_equal(resize_mask(mask, 4, 4), mask.repeat(2, 0).repeat(2, 1))


def test_import_runtime_pulls_no_torch_onnx_nncf(bundles) -> None:
    code = (
        "import sys, runtime\n"
        f"seg = runtime.load({str(bundles['dynamic'])!r})\n"
        "print(','.join(sorted(m for m in ('torch', 'onnx', 'nncf', 'openvino', 'tensorrt') if m in sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", code], cwd=ROOT, capture_output=True,
                            text=True, check=True)
    assert result.stdout.strip() == ""
    imported = {line.split("|")[-1].strip().split(".")[0] for line in result.stderr.splitlines() if "|" in line}
    assert not imported & {"torch", "onnx", "nncf", "openvino", "tensorrt"}
    assert "onnxruntime" in imported  # it did load a backend, lazily
    plain = subprocess.run([sys.executable, "-X", "importtime", "-c", "import runtime"], cwd=ROOT,
                           capture_output=True, text=True, check=True)
    plain_modules = {line.split("|")[-1].strip().split(".")[0] for line in plain.stderr.splitlines() if "|" in line}
    assert not plain_modules & {"torch", "onnx", "nncf", "onnxruntime", "openvino", "cv2"}
