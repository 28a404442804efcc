"""OpenVINO INT8 with quantization-aware fine-tuning (``--qat``) through NNCF's torch flow.

The tiny test model is exported with a few fine-tuning steps through the real export path
(:func:`exporters.bundle.export_bundle`, real NNCF and OpenVINO); the request is built the way
``edge-deeplab export`` builds it, with a :class:`exporters.request.QatInput` over the synthetic
training images (the CLI's ``--qat`` option builds its own).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from runtime.manifest import read_manifest
from test_export import CALIB, VAL, checkpoint  # noqa: F401  (checkpoint is a fixture)

pytest.importorskip("openvino")
pytest.importorskip("nncf")

STEPS = 3


def qat_request(checkpoint: Path, out: Path):  # noqa: F811
    from edge_deeplab.data.base import open_dataset
    from edge_deeplab.export_request import ExportArgs, build_request
    from exporters.request import QatInput
    from runtime.preprocess import normalize
    import torch

    args = ExportArgs(checkpoint=checkpoint, target="openvino", precision="int8", output_stride=None,
                      input_size=(65, 65), dynamic=False, outputs="mask", float_input=False, calib_data=CALIB,
                      calib_images=3, calib_method="minmax", calib_seed=0, val_data=VAL, val_images=3,
                      max_drop=None, qat=None, qat_lr=None, data=None, opset=17, out=out, force=False,
                      cache_dir=None)
    req, ckpt, stride = build_request(args)
    req.model = ckpt.build_model(stride)
    req.progress = False
    train = open_dataset("synthetic:size=64,n=8", "train")
    images = torch.from_numpy(np.stack([normalize(s.image, req.mean, req.std) for s in train]))
    masks = torch.from_numpy(np.stack([s.mask for s in train]).astype(np.int64))

    def batches(steps: int):
        for step in range(steps):
            index = torch.arange(2) + 2 * step % len(train)
            yield images[index], masks[index]

    req.qat = QatInput(batches, STEPS, 1e-3, "synthetic:size=64,n=8", 2, 64)
    return req


def fake_quantizes(model) -> int:
    return sum(op.get_type_name() == "FakeQuantize" for op in model.get_ordered_ops())


def test_openvino_qat_bundle(checkpoint, tmp_path):  # noqa: F811
    from exporters import openvino as ovx
    from exporters.bundle import export_bundle
    from exporters.onnx import export_onnx
    from exporters.session import ExportSession

    out = tmp_path / "qat"
    req = qat_request(checkpoint, out)
    export_bundle(req)
    calib = read_manifest(out).calibration
    assert calib["toolchain"] == "nncf torch QAT" and calib["overflow_fix"] == "enable" and calib["preset"] == "mixed"
    qat = calib["qat"]
    assert qat["steps"] == STEPS and qat["shipped"] == "qat" and qat["first_loss"] > 0
    assert qat["qat_miou"] == calib["measured"]["int8"]  # the written IR's
    assert qat["ptq_miou"] is not None and qat["simulated_miou"] is not None
    # What the fine-tune simulated is what the IR computes (the IR's mIoU on the same images).
    assert abs(qat["simulated_miou"] - qat["qat_miou"]) * 100 <= 1.0

    core = ovx._ov().Core()
    ir = core.read_model(str(out / "model.xml"))
    assert ir.inputs[0].get_any_name() == "image" and ir.outputs[0].get_any_name() == "mask"
    mask = ovx.ov_runner(ir, "f32")(np.zeros((1, 3, 65, 65), np.uint8))["mask"]
    assert mask.shape == (1, 65, 65) and mask.dtype == np.uint8

    # The PTQ IR (NNCF on the model read from the FP32 ONNX) has the same quantizers, one for one.
    session = ExportSession(req, tmp_path, tmp_path)
    onnx_path = export_onnx(req.model, tmp_path / "fp32.onnx", 65, 65, uint8_input=True, mean=req.mean, std=req.std)
    ptq, _ = ovx.quantize_int8(ovx.read_onnx(onnx_path), session.calib_items)
    assert fake_quantizes(ir) == fake_quantizes(ptq)
