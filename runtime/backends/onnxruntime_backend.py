"""ONNX Runtime backend (targets ``onnx`` and ``onnxruntime``): the base install's CPU path."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from runtime.backends.base import Backend
from runtime.cpu import warn_if_int8_saturates
from runtime.errors import BundleError
from runtime.manifest import Manifest
from runtime.options import RuntimeOptions

_ORT_TYPES = {"float32": "tensor(float)", "uint8": "tensor(uint8)"}


class OnnxRuntimeBackend(Backend):
    """An ``onnxruntime.InferenceSession`` on the CPU execution provider.

    Thread-safe without a lock: ``InferenceSession.run`` may be called from several threads at
    once (ONNX Runtime documents it), and each call returns freshly allocated outputs.
    """

    name = "onnxruntime"

    def __init__(self, manifest: Manifest, bundle_dir: Path, options: RuntimeOptions) -> None:
        super().__init__(manifest, bundle_dir)
        import onnxruntime as ort

        levels = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }
        session_options = ort.SessionOptions()
        session_options.graph_optimization_level = levels[options.ort_optimization]
        session_options.log_severity_level = 3  # errors only: warnings about unused initializers are noise
        if options.threads:
            session_options.intra_op_num_threads = options.threads
        session_options.add_session_config_entry("session.intra_op.allow_spinning", "1" if options.ort_spinning else "0")
        path = self.model_path()
        try:
            self.session = ort.InferenceSession(str(path), session_options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own pybind exception types, not a common base
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BundleError(f"{path}: ONNX Runtime cannot load it ({first_line})") from None
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = [o.name for o in self.session.get_outputs()]
        model_input = inputs.get(manifest.input.name)
        self.check_model_io(list(inputs), outputs, list(model_input.shape[2:]) if model_input else [])
        expected = _ORT_TYPES.get(manifest.input.dtype)
        if model_input.type != expected:
            raise BundleError(
                f"{self.bundle_dir}: model input type is {model_input.type}, manifest says {manifest.input.dtype}"
            )
        self._input_name = manifest.input.name
        warn_if_int8_saturates(manifest, str(bundle_dir))

    def run(self, batch: np.ndarray, output: str) -> np.ndarray:
        return self.session.run([output], {self._input_name: batch})[0]
