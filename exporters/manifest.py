"""The ``model.json`` an export writes: the request, what the steps measured, and the tools used."""

from __future__ import annotations

from exporters.onnx import INPUT_NAME
from exporters.session import ExportSession
from exporters.versions import tool_versions
from runtime.manifest import OUTPUT_CHOICES, InputSpec, Manifest


def bundle_manifest(session: ExportSession, files: dict[str, str]) -> Manifest:
    """The manifest of the bundle the session built, whose model files are ``files``."""
    req = session.req
    shape: list[int | None] = [None, 3, None, None] if req.dynamic else [1, 3, req.height, req.width]
    return Manifest(
        target=req.target,
        precision=req.precision,
        files=files,
        input=InputSpec(name=INPUT_NAME, shape=shape, dtype=session.spec.dtype, resize="pad"),
        classes=list(req.classes),
        palette=[list(map(int, c)) for c in req.palette],
        mean=list(map(float, req.mean)),
        std=list(map(float, req.std)),
        outputs=list(OUTPUT_CHOICES[req.outputs]),
        ignore_index=int(req.ignore_index),
        model={**req.model_info, "input_size": [req.height, req.width], "dynamic": req.dynamic,
               "opset": req.opset, "num_classes": len(req.classes)},
        source=dict(req.source),
        calibration=_calibration_record(session),
        verification=session.verification,
        tools=tool_versions(req.target),
        extra=session.extra,
        int8_kernels=session.int8_kernels,
    )


def _calibration_record(session: ExportSession) -> dict | None:
    """How an INT8 bundle was calibrated (None for FP32 and FP16)."""
    req = session.req
    if req.precision != "int8":
        return None
    c = req.calibration
    method = "nncf (min/max with outlier quantiles)" if req.target == "openvino" else c.method
    return {"method": method, "dataset": c.spec, "images": len(c.chosen.indices),
            "set": c.chosen.summary(), **(session.calibration_info or {})}
