"""OpenVINO backend (target ``openvino``): model.xml + weights compiled for a device by ``openvino.Core``."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from runtime.backends.base import Backend
from runtime.cpu import warn_if_int8_saturates, warn_if_isa_capped
from runtime.errors import BundleError
from runtime.manifest import Manifest
from runtime.options import RuntimeOptions
from runtime.telemetry import disable_telemetry


def openvino_config(manifest: Manifest, options: RuntimeOptions) -> dict[str, str]:
    """The compile-time properties for this bundle.

    An fp32 bundle gets INFERENCE_PRECISION_HINT=f32 unless told otherwise: OpenVINO's CPU
    plugin otherwise runs bf16 where the CPU supports it, and an FP32 row must be FP32.
    fp16/int8 bundles keep OpenVINO's own default, which picks the fastest precision for the
    layers the IR leaves in float.
    """
    config = {"PERFORMANCE_HINT": options.ov_performance_hint}
    hint = options.ov_precision_hint or ("f32" if manifest.precision == "fp32" else None)
    if hint:
        config["INFERENCE_PRECISION_HINT"] = hint
    if options.threads:
        config["INFERENCE_NUM_THREADS"] = str(options.threads)
    return config


def openvino_reason(exc: Exception) -> str:
    """The line of an OpenVINO exception that says what is wrong.

    OpenVINO's messages start with "Exception from src/...cpp:84:" and "Check '...' failed at"
    lines, which name its own source files; the cause is the first line after those.
    """
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(("Exception from", "Check '"))]
    return (useful or lines or ["unknown error"])[0]


def load_error(exc: Exception, xml: Path, weights: Path) -> BundleError:
    """One line naming the file OpenVINO could not use: the weights .bin or the .xml graph."""
    reason = openvino_reason(exc)
    if not weights.is_file():
        return BundleError(f"{weights}: the weights file is missing (OpenVINO: {reason})")
    if "bin" in reason.lower() or "weights" in reason.lower():
        return BundleError(f"{weights}: OpenVINO cannot read the weights, a damaged or mismatched .bin ({reason})")
    return BundleError(f"{xml}: OpenVINO cannot load it ({reason})")


class OpenVinoBackend(Backend):
    """A compiled OpenVINO model with one synchronous infer request per calling thread.

    Thread-safe this way: an infer request runs one inference at a time ("Infer Request is busy"
    otherwise), while the compiled model can run several requests at once. Each thread gets its
    own request on first use (kept in a ``threading.local``), so no lock is held during
    inference, threads run in parallel, and the output view a call returns stays valid until
    that same thread's next call, which is what :class:`runtime.segmenter.Segmenter` relies on.
    """

    name = "openvino"

    def __init__(self, manifest: Manifest, bundle_dir: Path, options: RuntimeOptions) -> None:
        super().__init__(manifest, bundle_dir)
        disable_telemetry()
        warn_if_isa_capped()
        import openvino as ov

        xml = self.model_path()
        weights = self.model_path("weights") if "weights" in manifest.files else xml.with_suffix(".bin")
        self.config = openvino_config(manifest, options)
        core = ov.Core()
        try:
            model = core.read_model(str(xml), str(weights))
            self.compiled = core.compile_model(model, options.device, self.config)
        except RuntimeError as exc:
            raise load_error(exc, xml, weights) from None
        input_names = [name for port in self.compiled.inputs for name in port.get_names()]
        output_names = [name for port in self.compiled.outputs for name in port.get_names()]
        model_hw = []
        if manifest.input.name in input_names:
            shape = self.compiled.input(manifest.input.name).get_partial_shape()
            model_hw = [d.get_length() if d.is_static else None for d in list(shape)[2:]]
        self.check_model_io(input_names, output_names, model_hw)
        self._input = self.compiled.input(manifest.input.name)
        self._outputs = {name: self.compiled.output(name) for name in manifest.outputs}
        self._requests = threading.local()
        warn_if_int8_saturates(manifest, str(bundle_dir))

    @property
    def request(self) -> Any:
        """This thread's infer request, created on its first call."""
        request = getattr(self._requests, "request", None)
        if request is None:
            request = self._requests.request = self.compiled.create_infer_request()
        return request

    def run(self, batch: np.ndarray, output: str) -> np.ndarray:
        # share_inputs avoids copying the input into OpenVINO's tensor; share_outputs returns a
        # view of this thread's request's output tensor (valid until that thread's next infer(),
        # as run() promises) instead of copying every output, the unused logits of a "both"
        # bundle included.
        result = self.request.infer({self._input: batch}, share_inputs=True, share_outputs=True)
        return result[self._outputs[output]]
