"""Activation ranges: computed once per (model, calibration set, method) and reused.

ONNX Runtime's calibrators run the float model on the calibration inputs and record each tensor's
range (min/max, entropy-optimal threshold, or a percentile of its histogram). That is the slow part
of INT8 export; the quantization that follows is a cheap graph rewrite. The ranges are stored in
ONNX Runtime's own cache format (``save_tensors_data``) under a key made of the float model's
sha256, the calibration set's fingerprint and the method, so exporting the ``onnxruntime`` INT8
model and the ``tensorrt`` Q/DQ model of the same float model calibrates once, and every step of
the accuracy guard (re-quantizing with some layers excluded) reuses the same ranges.

Ranges are recorded unsymmetrized; each quantizer makes them symmetric or not as its target wants
(``ActivationSymmetric``), so one cache serves the asymmetric CPU model and the symmetric TensorRT
model alike.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from runtime.errors import EdgeDeeplabError
from runtime.files import sha256_file

METHODS = ("minmax", "entropy", "percentile")
DEFAULT_METHOD = "minmax"  # the only one OpenVINO's NNCF path takes, and the cheapest
CACHE_FORMAT = 1
# Images per collect_data() call: bounds the memory the calibrator holds (it keeps every
# intermediate tensor of a chunk), while the ranges/histograms are merged across chunks.
CHUNK = 8


def default_cache_dir() -> Path:
    """``$EDGE_DEEPLAB_CACHE/calibration`` or ``~/.cache/edge-deeplab/calibration``."""
    root = os.environ.get("EDGE_DEEPLAB_CACHE") or Path.home() / ".cache" / "edge-deeplab"
    return Path(root) / "calibration"


@dataclass(frozen=True)
class Ranges:
    """A calibration result on disk, in ONNX Runtime's cache format, and how it was obtained."""

    path: Path
    key: str
    method: str
    images: int
    cached: bool  # True when read from the cache instead of computed in this run
    seconds: float


def _ort_method(method: str):
    from onnxruntime.quantization import CalibrationMethod

    if method not in METHODS:
        raise EdgeDeeplabError(f"unknown calibration method {method!r}; choose one of {', '.join(METHODS)}")
    return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile}[method]


def cache_key(model_sha256: str, set_fingerprint: str, method: str) -> str:
    """What the ranges depend on: the float graph, the images, the method and this format."""
    text = json.dumps([CACHE_FORMAT, model_sha256, set_fingerprint, method])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def quantizable_op_types() -> list[str]:
    """Every op type ONNX Runtime's QDQ quantizer can quantize: calibrate the tensors of all of
    them, so the ranges serve any later ``op_types_to_quantize`` subset (TensorRT's Conv-only)."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return sorted(set(QLinearOpsRegistry) | set(QDQRegistry))


def compute_ranges(
    model_path: str | Path,
    input_name: str,
    arrays: Sequence[np.ndarray],
    method: str,
    set_fingerprint: str,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> Ranges:
    """Return the activation ranges of ``model_path`` on ``arrays``, from the cache when present.

    ``progress``: a bar counting the images the calibrator has run, on stderr when it is a terminal.
    """
    from onnxruntime.quantization.calibrate import create_calibrator, load_tensors_data, save_tensors_data

    ort_method = _ort_method(method)
    if not arrays:
        raise EdgeDeeplabError("no calibration images to compute activation ranges from")
    key = cache_key(sha256_file(model_path), set_fingerprint, method)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = cache_dir / f"{key}.json"
    if path.is_file():
        try:
            load_tensors_data(path)
            return Ranges(path, key, method, len(arrays), cached=True, seconds=0.0)
        except (ValueError, KeyError, json.JSONDecodeError):
            path.unlink(missing_ok=True)  # a damaged cache entry is recomputed, not trusted
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edge-deeplab-calib-") as tmp:
        calibrator = create_calibrator(
            Path(model_path),
            quantizable_op_types(),
            augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=ort_method,
            providers=["CPUExecutionProvider"],
            extra_options={"symmetric": False},
        )
        from calibration.ort_reader import ArrayReader
        from runtime.progress import progress_bar

        with progress_bar(total=len(arrays), desc=f"calibrating ({method})", unit="img", leave=False,
                          enabled=progress) as bar:
            for start_index in range(0, len(arrays), CHUNK):
                chunk = arrays[start_index : start_index + CHUNK]
                calibrator.collect_data(ArrayReader(input_name, chunk, on_done=bar.update))
            bar.set_postfix_str("computing ranges")  # entropy/percentile: thresholds from the histograms
            tensors = calibrator.compute_data()
        del calibrator
    save_tensors_data(tensors, path)
    return Ranges(path, key, method, len(arrays), cached=False, seconds=time.perf_counter() - start)
