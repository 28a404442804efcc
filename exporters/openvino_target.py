"""The openvino target: an OpenVINO IR (FP32, FP16, or INT8 quantized by NNCF), checked against
the FP32 ONNX it was read from.

INT8 with ``--qat`` builds and scores the post-training model first (the mIoU the fine-tuned
bundle is compared against, in the manifest), then ships the quantization-aware fine-tuned
model (:mod:`exporters.openvino_qat`) instead.
"""

from __future__ import annotations

from exporters.accuracy import check_against_fp32, record_accuracy
from exporters.session import ExportSession
from exporters.verify import points


def build_openvino(session: ExportSession) -> dict[str, str]:
    """Write the IR into the bundle; returns the manifest's files."""
    from exporters import openvino as ovx

    req = session.req
    model = ovx.read_onnx(session.fp32_path)
    fp32_miou = None
    if req.precision == "int8":
        model = _quantize(session, model)
        if req.qat is not None:
            model, fp32_miou = _fine_tune(session, model)
    session.step(f"writing OpenVINO IR ({req.precision})")
    files = ovx.save_ir(model, session.bundle, fp16=req.precision == "fp16")
    ir = ovx._ov().Core().read_model(str(session.bundle / files["model"]))
    # Checked with f32 inference precision: the CPU plugin's default (bf16 where the CPU has it)
    # would mix its own rounding into what is a check of the IR file.
    run = ovx.ov_runner(ir, "f32")
    check_against_fp32(session, run, req.precision, f"the OpenVINO {req.precision} IR")
    record_accuracy(session, run, fp32_miou)
    if req.precision == "int8" and "miou" in session.verification:
        session.calibration_info["measured"] = dict(session.verification["miou"])
    if req.qat is not None and session.calibration_info["qat"]["shipped"] == "qat":
        _record_bundle_miou(session)
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


def _fine_tune(session: ExportSession, ptq_model):
    """Score the post-training model, fine-tune with NNCF's torch QAT, and return the model to ship
    with the FP32 graph's mIoU (None without validation images; measured once, reused).

    ``--max-drop`` with ``--qat``: the post-training model above is then NNCF's accuracy-controlled
    one (layers kept float until the drop fits), and the fine-tuned model (every layer quantized)
    ships only if its own drop is within the limit; otherwise the accuracy-controlled model ships
    and the record says so (``shipped: "ptq"``). Fine-tuning cannot make that model worse than the
    export without ``--qat``, and the limit holds whenever accuracy control met it.
    """
    from exporters import openvino as ovx
    from exporters.openvino_qat import qat_int8, torch_runner

    req = session.req
    validation = session.validation
    ptq_miou = session.score(ovx.ov_runner(ptq_model, "f32"), "scoring the PTQ model") if validation else None
    qat = req.qat
    session.step(f"quantization-aware fine-tuning with NNCF ({qat.steps} steps, batch {qat.batch_size}, "
                 f"lr {qat.lr:g}, on {qat.spec})")
    model, simulated_model, details = qat_int8(req, session.calib_items)
    req.log(f"    fine-tuned in {details['seconds']:.1f} s, loss {details['first_loss']:.3f} -> {details['last_loss']:.3f}")
    simulated = session.score(torch_runner(req, simulated_model), "scoring the simulated model") if validation else None
    ptq = session.calibration_info
    scheme = ("toolchain", "preset", "subset_size", "overflow_fix")  # the PTQ model's too: said once, above
    record = {**{key: value for key, value in details.items() if key not in scheme}, "ptq_miou": ptq_miou, "qat_miou": None, "simulated_miou": simulated, "shipped": "qat",
              "ptq": {key: ptq[key] for key in ("toolchain", "accuracy_control", "excluded") if key in ptq}}
    fp32_miou = None
    if req.max_drop is not None and validation is not None:
        fp32_miou = session.score(session.fp32.run, "scoring fp32")
        qat_miou = session.score(ovx.ov_runner(model, "f32"), "scoring the QAT model")
        if points(fp32_miou - qat_miou) > req.max_drop:
            record.update({"shipped": "ptq", "qat_miou": qat_miou})
            ptq["qat"] = record
            req.log(f"    the fine-tuned model loses {points(fp32_miou - qat_miou):.2f} points (> --max-drop "
                    f"{req.max_drop}); shipping NNCF's accuracy-controlled model (mIoU {points(ptq_miou):.2f})")
            return ptq_model, fp32_miou
    shipped = {key: value for key, value in ptq.items() if key not in ("accuracy_control", "max_drop_fraction")}
    shipped.update({"toolchain": details["toolchain"], "excluded": ovx.float_convolutions(model), "qat": record})
    session.calibration_info = shipped
    return model, fp32_miou


def _record_bundle_miou(session: ExportSession) -> None:
    """The written IR's mIoU as the QAT record's, on one log line with the PTQ model's."""
    record = session.calibration_info["qat"]
    miou = session.verification.get("miou", {}).get("int8")
    record["qat_miou"] = miou
    if miou is None:
        return
    session.req.log(f"    mIoU: PTQ {points(record['ptq_miou']):.2f}, QAT {points(miou):.2f} "
                    f"(simulated in torch {points(record['simulated_miou']):.2f}; "
                    f"{record['steps']} steps, {points(miou - record['ptq_miou']):+.2f} points)")
