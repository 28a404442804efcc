"""INT8 through ONNX Runtime's quantizer, for the onnxruntime and tensorrt targets.

Activation ranges come from the calibration images (cached by the set's fingerprint); with
``max_drop`` the accuracy guard keeps the most sensitive convolutions in float until the validation
mIoU drop is within the limit. With ``qat`` the weights are fine-tuned on the quantized graph first
(:mod:`exporters.qat_qdq`) and every model written or tried after that carries the tuned weights:
the guard then keeps layers in float only if the fine-tuned model still loses more than the limit.
The result is checked against the FP32 graph like every bundle; an onnxruntime model also gets its
INT8 kernels record (:mod:`exporters.int8_kernels`).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable, Sequence

from calibration.ranges import Ranges, compute_ranges
from exporters import qdq
from exporters.accuracy import check_against_fp32, record_accuracy
from exporters.guard import keep_drop_under
from exporters.int8_kernels import int8_kernels_record
from exporters.onnx import INPUT_NAME
from exporters.qat_qdq import qat_fine_tune
from exporters.sensitivity import LayerSensitivity, rank_layers
from exporters.session import ExportSession
from exporters.verify import Runner, ort_runner, points

SENSITIVITY_IMAGES = 4  # images for the per-layer SQNR ranking: enough for a stable order

Quantize = Callable[[Sequence[str]], Path]  # nodes kept in float -> the quantized model


def qdq_int8(session: ExportSession, flavor: str, dest: Path) -> None:
    """Write the Q/DQ INT8 model to ``dest``, checked, with the calibration record on the session."""
    ranges = _calibrate(session)
    session.step(f"quantizing to INT8 Q/DQ ({'TensorRT' if flavor == 'tensorrt' else 'ONNX Runtime CPU'} placement)")
    quantize = _quantizer(session, ranges, flavor)
    info: dict = {"toolchain": "onnxruntime.quantize_static", "format": "QDQ", "flavor": flavor,
                  "settings": qdq.settings(flavor), "ranges_key": ranges.key, "ranges_cached": ranges.cached}
    reference = session.fp32_path  # what the guard's per-layer ranking measures noise against
    if session.req.qat is not None:
        quantize, reference, info["qat"] = _with_qat(session, quantize, flavor)
    if session.req.max_drop is None:
        chosen = quantize(())
        info.update({"excluded": [], "max_drop_points": None})
    else:
        chosen, guarded = _guarded(session, quantize, flavor, reference)
        info.update(guarded)
    shutil.copyfile(chosen, dest)
    session.calibration_info = info
    if flavor == "cpu":
        session.int8_kernels = int8_kernels_record(session, dest)
    tuned_fp32 = ort_runner(reference) if "qat" in info else None
    check_against_fp32(session, host_runner(dest, flavor), "int8", "the INT8 model", tuned_fp32)
    measured = info.get("measured")
    record_accuracy(session, host_runner(dest, flavor), measured["fp32_miou"] if measured else None)
    if "qat" in info:
        _report_qat(session, info["qat"])


def host_runner(model: Path, flavor: str) -> Runner:
    """How the host runs a Q/DQ model to check and score it: the cpu flavour on ONNX Runtime's
    fused integer kernels (what the device runs); the tensorrt flavour with its exact Q/DQ
    semantics (dequantize, float op), what TensorRT computes, and what no CPU's integer kernels can
    change: its 8-bit weights would saturate them on x86 without VNNI."""
    return ort_runner(model, exact=flavor == "tensorrt")


def _with_qat(session: ExportSession, quantize: Quantize, flavor: str) -> tuple[Quantize, Path, dict]:
    """Score the PTQ model, fine-tune its weights; returns the quantizer that writes every model
    with the tuned weights, the tuned FP32 graph (the guard's reference) and the QAT record."""
    ptq = quantize(())
    ptq_miou = None
    if session.validation is not None:
        ptq_miou = session.score(host_runner(ptq, flavor), "scoring the PTQ model")
        session.req.log(f"    PTQ INT8 mIoU {points(ptq_miou):.2f}")
    tuned, record = qat_fine_tune(session, ptq, flavor)
    # The fully quantized graph is the PTQ one already written: only exclusions quantize anew.
    return (lambda exclude: tuned.apply(quantize(exclude) if exclude else ptq)), tuned.apply(session.fp32_path), \
        {"ptq_miou": ptq_miou, **record}


def _report_qat(session: ExportSession, record: dict) -> None:
    """The bundle's mIoU beside the PTQ model's and the simulation's, in the log and the record."""
    measured = session.verification.get("miou")
    if not measured:
        return
    qat_miou = measured["int8"]
    record["qat_miou"] = qat_miou
    record["excluded_after_qat"] = list(session.calibration_info.get("excluded", []))
    line = f"    QAT: mIoU {points(qat_miou):.2f} (PTQ {points(record['ptq_miou']):.2f}, FP32 {points(measured['fp32']):.2f})"
    if "simulated_miou" in record:
        record["simulated_vs_bundle_points"] = points(record["simulated_miou"] - qat_miou)
        line += f"; the simulation scored {points(record['simulated_miou']):.2f}"
    session.req.log(line)


def _calibrate(session: ExportSession) -> Ranges:
    """The activation ranges of the FP32 graph on the calibration images (from the cache when there)."""
    req, calib = session.req, session.req.calibration
    items = session.calib_items
    session.step(f"calibrating activation ranges ({calib.method}, {len(items)} images)")
    ranges = compute_ranges(session.fp32_path, INPUT_NAME, [i.array for i in items], calib.method,
                            calib.chosen.fingerprint, req.cache_dir, progress=req.progress)
    req.log(f"    ranges {'reused from cache' if ranges.cached else f'computed in {ranges.seconds:.1f} s'}: {ranges.path}")
    return ranges


def _quantizer(session: ExportSession, ranges: Ranges, flavor: str) -> Quantize:
    """Quantize with these ranges, each candidate to its own file in the work directory."""
    candidates = session.work / "candidates"
    candidates.mkdir(exist_ok=True)
    counter = iter(range(10_000))

    def quantize(exclude: Sequence[str]) -> Path:
        return qdq.quantize(session.fp32_path, candidates / f"int8_{next(counter)}.onnx", ranges, flavor, exclude)

    return quantize


def _guarded(session: ExportSession, quantize: Quantize, flavor: str, reference: Path) -> tuple[Path, dict]:
    """The accuracy guard: the chosen model and what the calibration record says about it.

    ``reference``: the FP32 graph whose tensors the per-layer ranking compares with (the tuned
    one after QAT, so the fine-tuning itself does not count as quantization noise)."""
    req, validation = session.req, session.validation
    session.step(f"accuracy guard: keeping the INT8 mIoU drop <= {req.max_drop} points")
    fp32_miou = session.score(session.fp32.run, "scoring fp32")
    sens_arrays = [i.array for i in session.calib_items[:SENSITIVITY_IMAGES]]
    ranked: list[LayerSensitivity] = []

    def ranking(path: Path) -> list[str]:
        layers = rank_layers(reference, path, sens_arrays, progress=req.progress)
        ranked.extend(layers)
        return [r.node for r in layers]

    result = keep_drop_under(quantize, lambda p: session.score(host_runner(p, flavor), "scoring int8"), fp32_miou,
                             req.max_drop, ranking, req.log)
    return result.path, {
        "excluded": result.excluded, "max_drop_points": req.max_drop,
        "measured": {"fp32_miou": result.fp32_miou, "int8_miou": result.int8_miou,
                     "drop_points": result.drop_points, "val_images": len(validation.items),
                     "val_dataset": req.validation.spec},
        "guard_steps": result.steps,
        "sensitivity": [_sensitivity_record(r) for r in ranked[:10]],
        "sensitivity_method": "per-conv added relative noise power (FP32 vs INT8 tensors, SQNR)",
    }


def _sensitivity_record(r: LayerSensitivity) -> dict:
    return {"node": r.node, "added_noise": float(f"{r.added_noise:.4g}"),
            "input_sqnr_db": round(r.input_sqnr_db, 2), "output_sqnr_db": round(r.output_sqnr_db, 2)}
