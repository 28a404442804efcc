"""The openvino target: an OpenVINO IR (FP32, FP16, or INT8 quantized by NNCF), checked against
the FP32 ONNX it was read from."""

from __future__ import annotations

from exporters.accuracy import check_against_fp32, record_accuracy
from exporters.session import ExportSession


def build_openvino(session: ExportSession) -> dict[str, str]:
    """Write the IR into the bundle; returns the manifest's files."""
    from exporters import openvino as ovx

    req = session.req
    model = ovx.read_onnx(session.fp32_path)
    if req.precision == "int8":
        model = _quantize(session, model)
    session.step(f"writing OpenVINO IR ({req.precision})")
    files = ovx.save_ir(model, session.bundle, fp16=req.precision == "fp16")
    ir = ovx._ov().Core().read_model(str(session.bundle / files["model"]))
    # Checked with f32 inference precision: the CPU plugin's default (bf16 where the CPU has it)
    # would mix its own rounding into what is a check of the IR file.
    run = ovx.ov_runner(ir, "f32")
    check_against_fp32(session, run, req.precision, f"the OpenVINO {req.precision} IR")
    record_accuracy(session, run)
    if req.precision == "int8" and "miou" in session.verification:
        session.calibration_info["measured"] = dict(session.verification["miou"])
    session.verification["openvino_precision_hint"] = "f32"
    return files


def _quantize(session: ExportSession, model):
    """NNCF INT8 (with accuracy control under ``max_drop``); the calibration record goes on the session."""
    from exporters import openvino as ovx

    req = session.req
    items = session.calib_items
    how = "NNCF accuracy control" if req.max_drop is not None else "NNCF post-training quantization"
    session.step(f"quantizing to INT8 with {how} ({len(items)} calibration images)")
    model, details = ovx.quantize_int8(model, items, session.validation, req.max_drop)
    details.update({"excluded": details.pop("float_convolutions", []), "max_drop_points": req.max_drop})
    session.calibration_info = details
    return model
