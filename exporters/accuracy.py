"""What every bundle is held to before it is written: argmax agreement with the FP32 graph, and
(with validation images) its mIoU against the FP32 graph and the checkpoint at native size."""

from __future__ import annotations

from typing import Any

from exporters.advice import WARN_DROP_POINTS, size_advice
from exporters.session import ExportSession
from exporters.verify import MIN_AGREEMENT, Runner, compare, points, require_agreement


def check_against_fp32(session: ExportSession, run: Runner, precision: str, what: str,
                       tuned_fp32: Runner | None = None) -> None:
    """FP16/INT8 checked against the FP32 graph: argmax agreement (and mIoU below).

    ``tuned_fp32``: after quantization-aware fine-tuning, the FP32 graph with the fine-tuned
    weights is the reference: the check catches a broken graph, and fine-tuning rightly moves the
    model away from the checkpoint's predictions (on a weak model, by more than the floor)."""
    reference = session.fp32.outputs if tuned_fp32 is None else [tuned_fp32(i.array) for i in session.fp32.items]
    agreement = compare(reference, [run(i.array) for i in session.fp32.items])
    session.req.log(f"    vs {'the fine-tuned ' if tuned_fp32 else ''}FP32: {agreement.describe()}")
    require_agreement(agreement, precision, what)
    session.verification["vs_fp32"] = {"reference": "onnx fp32" + (", fine-tuned weights" if tuned_fp32 else ""),
                                       **agreement.as_dict(), "min_agreement": MIN_AGREEMENT[precision]}


def record_accuracy(session: ExportSession, run: Runner, fp32_miou: float | None = None) -> None:
    """The bundle's mIoU on the validation images at its input size, held against the
    checkpoint's at native size and (FP16/INT8) against the FP32 graph's; a warning names the
    likely cause when the bundle loses more than :data:`WARN_DROP_POINTS` to the checkpoint."""
    validation, req = session.validation, session.req
    if validation is None:
        return
    session.step(f"scoring the bundle on {len(validation.items)} validation image(s) at {req.height}x{req.width}")
    miou = session.score(run, f"scoring {req.precision}")
    record: dict[str, Any] = {"images": len(validation.items), "dataset": req.validation.spec,
                              "input_size": [req.height, req.width], req.precision: miou}
    message = f"    mIoU {points(miou):.2f} (bundle at {req.height}x{req.width})"
    if req.precision != "fp32":
        fp32_miou = session.score(session.fp32.run, "scoring fp32") if fp32_miou is None else fp32_miou
        record.update({"fp32": fp32_miou, "drop_points": points(fp32_miou - miou)})
        message += f", FP32 graph {points(fp32_miou):.2f} (drop {points(fp32_miou - miou):.2f} points)"
    native = req.validation.checkpoint_miou
    if native is not None:
        record.update({"checkpoint_native": native, "drop_vs_checkpoint_points": points(native - miou)})
        message += f", checkpoint at native size {points(native):.2f}"
    session.verification["miou"] = record
    req.log(message)
    if native is not None and points(native - miou) > WARN_DROP_POINTS:
        req.log(f"warning: the bundle scores {points(native - miou):.1f} mIoU points below the checkpoint; "
                + size_advice([i.placement for i in validation.items], req.height, req.width))
