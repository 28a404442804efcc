"""The bundles whose model is an ONNX file: the onnx, onnxruntime and tensorrt targets.

FP32 (and TensorRT FP16, a build flag on the device) ship the verified FP32 graph; ONNX FP16 is
converted here with float32 inputs and outputs; INT8 is Q/DQ from :mod:`exporters.int8_qdq`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from exporters.accuracy import check_against_fp32, record_accuracy
from exporters.int8_qdq import qdq_int8
from exporters.session import ExportSession
from exporters.tensorrt_target import tensorrt_extras
from exporters.verify import ort_runner


def build_onnx(session: ExportSession) -> dict[str, str]:
    """Write ``model.onnx`` (and the TensorRT extras) into the bundle; returns the manifest's files."""
    req = session.req
    dest = session.bundle / "model.onnx"
    if req.precision == "int8":
        qdq_int8(session, "cpu" if req.target == "onnxruntime" else "tensorrt", dest)
    elif req.precision == "fp16" and req.target == "onnx":
        _fp16(session, dest)
    else:
        # FP32, or TensorRT FP16 (a build flag on the device): the bundle's ONNX is the verified graph.
        shutil.copyfile(session.fp32_path, dest)
        record_accuracy(session, session.fp32.run)
    files = {"model": dest.name}
    if req.target == "tensorrt":
        files.update(tensorrt_extras(session, dest))
    return files


def _fp16(session: ExportSession, dest: Path) -> None:
    """The FP32 graph in FP16, inputs and outputs kept float32, checked against the FP32 graph."""
    session.step("converting to FP16 (inputs and outputs stay float32)")
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    half = convert_float_to_float16(onnx.load(str(session.fp32_path)), keep_io_types=True)
    onnx.save(half, str(dest))
    check_against_fp32(session, ort_runner(dest), "fp16", "the FP16 model")
    record_accuracy(session, ort_runner(dest))
