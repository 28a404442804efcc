"""The first step of every export: the FP32 ONNX, verified against PyTorch on real images.

A dynamic graph is verified at a second, odd size too, since it must be right at sizes other than
the one it was traced at.
"""

from __future__ import annotations

from calibration.inputs import InputSpecLite, PreparedImage, prepare_samples
from exporters.onnx import export_onnx, torch_logits
from exporters.session import ExportSession, Fp32Graph
from exporters.verify import Runner, compare, ort_runner, require_agreement
from runtime.manifest import LOGITS, OUTPUT_CHOICES


def export_fp32(session: ExportSession) -> Fp32Graph:
    """Export the FP32 ONNX into the work directory and hold it to PyTorch's argmax."""
    req = session.req
    kind = "dynamic" if req.dynamic else "static"
    session.step(f"exporting FP32 ONNX (opset {req.opset}, {kind} {req.height}x{req.width}"
                 f"{', uint8 input' if req.uint8_input else ''})")
    export_onnx(req.model, session.fp32_path, req.height, req.width, req.dynamic, req.uint8_input,
                req.mean, req.std, req.opset, OUTPUT_CHOICES[req.outputs])
    items = prepare_samples(req.verify_samples, range(len(req.verify_samples)), session.spec, progress=req.progress)
    session.step(f"verifying ONNX against PyTorch on {len(items)} image(s)"
                 f"{' at 2 sizes' if req.dynamic else ''}")
    run = ort_runner(session.fp32_path)
    checks = [_check_at(session, run, spec, items) for spec in _verified_sizes(session)]
    graph = Fp32Graph(run, items, [run(i.array) for i in items])
    session.verification["onnx_vs_pytorch"] = {"reference": "pytorch", "min_agreement": 0.999, "checks": checks}
    return graph


def _verified_sizes(session: ExportSession) -> list[InputSpecLite]:
    """The export size, and for a dynamic graph a second size unlike it."""
    req, spec = session.req, session.spec
    if not req.dynamic:
        return [spec]
    alt = InputSpecLite(max(33, 3 * req.height // 4 + 1), max(33, req.width // 2 + 3), spec.dtype, spec.mean, spec.std)
    return [spec, alt]


def _check_at(session: ExportSession, run: Runner, spec: InputSpecLite, items: list[PreparedImage]) -> dict:
    """The graph against PyTorch at one input size (``items`` are prepared at the export size)."""
    req = session.req
    if spec is not session.spec:
        items = prepare_samples(req.verify_samples, range(len(req.verify_samples)), spec, progress=req.progress)
    arrays = [i.array for i in items]
    reference = [{LOGITS: logits} for logits in torch_logits(req.model, arrays, req.uint8_input, req.mean, req.std)]
    agreement = compare(reference, [run(a) for a in arrays])
    require_agreement(agreement, "fp32", "the exported ONNX")
    req.log(f"    {spec.height}x{spec.width}: {agreement.describe()} against PyTorch's argmax")
    return {"input_size": [spec.height, spec.width], **agreement.as_dict()}
