"""Checkpoint model -> verified, calibrated bundle on disk (the one entry point of the exporters).

The steps, each announced on stderr: export the FP32 ONNX and verify it against PyTorch on real
images (:mod:`exporters.fp32`); build the target's model files (:mod:`exporters.onnx_target` for
FP16 conversion and ONNX Runtime or TensorRT Q/DQ INT8 from cached calibration ranges,
:mod:`exporters.openvino_target` for OpenVINO IR / NNCF INT8); check them against the FP32 graph;
for INT8 with ``max_drop``, hold the validation mIoU drop within the limit; write ``model.json``
(:mod:`exporters.manifest`). All of it happens in a temporary directory renamed into place at the
end (:func:`runtime.files.atomic_dir`), so a failure at any step leaves no bundle and an existing
bundle untouched.

The exporters import no ``edge_deeplab`` code: the caller (``edge-deeplab export``, the report, the
benchmark) hands over the built model, the dataset samples and the mIoU function in an
:class:`exporters.request.ExportRequest`.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from exporters.fp32 import export_fp32
from exporters.manifest import bundle_manifest
from exporters.onnx_target import build_onnx
from exporters.openvino_target import build_openvino
from exporters.request import ExportRequest, check_request, check_target
from exporters.session import ExportSession
from runtime.files import atomic_dir
from runtime.manifest import write_manifest
from runtime.signals import note_kept


def export_bundle(req: ExportRequest) -> Path:
    """Run the whole export; returns the bundle directory. Raises EdgeDeeplabError on bad input."""
    req.precision = check_target(req.target, req.precision)
    check_request(req)
    start = time.perf_counter()
    existed = Path(req.out).exists()
    try:
        with atomic_dir(req.out, overwrite=req.force) as bundle, \
                tempfile.TemporaryDirectory(prefix="edge-deeplab-export-") as work:
            session = ExportSession(req, Path(work), bundle)
            session.fp32 = export_fp32(session)
            files = build_openvino(session) if req.target == "openvino" else build_onnx(session)
            write_manifest(bundle, bundle_manifest(session, files))
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM, in a long calibration or QAT fine-tune
        note_kept(f"no bundle was written ({req.out} {'is unchanged' if existed else 'was not created'})")
        raise
    req.log(f"wrote {req.out} ({req.target} {req.precision}) in {time.perf_counter() - start:.1f} s")
    return Path(req.out)
