"""OpenVINO bundles: IR FP32/FP16, NNCF INT8, and NNCF accuracy control under --max-drop."""

from __future__ import annotations

import pytest

from runtime.manifest import read_manifest
from test_export import CALIB, SIZE, VAL, checkpoint, export  # noqa: F401  (checkpoint is a fixture)

pytest.importorskip("openvino")


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_openvino_ir_matches_the_fp32_graph(checkpoint, tmp_path, precision):  # noqa: F811
    import openvino as ov

    out = tmp_path / precision
    assert export(checkpoint, "--target", "openvino", "--precision", precision, "--input-size", SIZE,
                  "--val-data", VAL, "--out", out) == 0
    manifest = read_manifest(out)
    assert manifest.files == {"model": "model.xml", "weights": "model.bin"}
    assert manifest.tools["openvino"] and manifest.verification["openvino_precision_hint"] == "f32"
    floor = 0.999 if precision == "fp32" else 0.99
    assert manifest.verification["vs_fp32"]["argmax_agreement"] >= floor
    weights = {op.get_element_type().get_type_name() for op in ov.Core().read_model(str(out / "model.xml")).get_ops()
               if op.get_type_name() == "Constant" and op.get_output_size() and len(op.get_output_shape(0)) == 4}
    assert ("f16" in weights) == (precision == "fp16")


@pytest.mark.slow
def test_openvino_int8_through_nncf(checkpoint, tmp_path):  # noqa: F811
    import openvino as ov

    out = tmp_path / "int8"
    assert export(checkpoint, "--target", "openvino", "--precision", "int8", "--input-size", SIZE,
                  "--calib-data", CALIB, "--calib-images", 6, "--val-data", VAL, "--val-images", 6, "--out", out) == 0
    manifest = read_manifest(out)
    assert manifest.calibration["toolchain"] == "nncf" and manifest.calibration["images"] == 6
    assert manifest.calibration["subset_size"] == 6
    assert manifest.calibration["overflow_fix"] == "enable"  # 7-bit weights everywhere: no saturation without VNNI
    ops = [op.get_type_name() for op in ov.Core().read_model(str(out / "model.xml")).get_ops()]
    assert ops.count("FakeQuantize") > 10
    assert manifest.verification["vs_fp32"]["argmax_agreement"] >= 0.8


@pytest.mark.slow
def test_openvino_accuracy_control_keeps_the_drop(checkpoint, tmp_path):  # noqa: F811
    out = tmp_path / "ac"
    assert export(checkpoint, "--target", "openvino", "--precision", "int8", "--input-size", SIZE,
                  "--calib-data", CALIB, "--calib-images", 6, "--val-data", VAL, "--val-images", 6,
                  "--max-drop", "1.5", "--out", out) == 0
    calib = read_manifest(out).calibration
    assert calib["accuracy_control"] and calib["max_drop_fraction"] == 0.015
    # Measured on the written IR (f32 inference precision), not only by NNCF.
    assert calib["measured"]["drop_points"] <= 1.5 + 1e-6
