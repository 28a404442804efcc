"""OpenVINO IR (FP32, FP16) and INT8 through NNCF post-training quantization.

The IR is converted from the verified FP32 ONNX (so every target starts from the same graph).
FP16 stores FP16 weights (``compress_to_fp16``); the CPU plugin still computes in its own
precision. INT8 uses ``nncf.quantize`` with the ``MIXED`` preset (symmetric weights, asymmetric
activations where an input can be negative: on CPU as fast as ``PERFORMANCE`` and more accurate
for the ASPP/decoder features) and NNCF's overflow fix on every convolution (7-bit weights, so
CPUs without VNNI compute the same sums as those with it; :data:`OVERFLOW_FIX`). With ``--max-drop``, ``nncf.quantize_with_accuracy_control``
reverts the layers NNCF ranks most harmful to float until the validation mIoU drop is within the
limit; NNCF takes the limit as a fraction (``max_drop`` = points / 100, ``DropType.ABSOLUTE``).

OpenVINO's CPU plugin defaults to bf16 on CPUs that have it; a true FP32 measurement needs
``INFERENCE_PRECISION_HINT=f32`` (:func:`ov_runner` sets it for FP32).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from calibration.inputs import PreparedImage
from calibration.nncf_data import nncf_dataset
from exporters.verify import Outputs, Runner, Validation
from runtime.errors import EdgeDeeplabError
from runtime.cpu import warn_if_isa_capped
from runtime.telemetry import disable_telemetry

IR_NAME = "model.xml"
# NNCF's overflow fix: 7-bit weights where x86 without VNNI would saturate 16-bit pair sums.
# NNCF's own default, ``first_layer_only``, covers only the convolutions reading the model input:
# the rest of the network then computes differently on AVX2 (masks agreed on 0.874 of pixels
# between an AVX2-only CPU and a VNNI one for the test model; benchmarks/int8_cpu_kernels.py),
# while with every convolution fixed they agreed on all of them. So: all, as for ONNX Runtime.
OVERFLOW_FIX = "enable"
WEIGHTS_NAME = "model.bin"


def _ov():
    disable_telemetry()
    warn_if_isa_capped()  # NNCF's statistics and the IR checks run on OpenVINO's CPU plugin
    import openvino

    return openvino


def read_onnx(onnx_path: str | Path):
    """The ONNX graph as an OpenVINO model."""
    return _ov().convert_model(str(onnx_path))


def save_ir(model, out_dir: Path, fp16: bool) -> dict[str, str]:
    """Write ``model.xml`` + ``model.bin``; returns the manifest's file roles."""
    try:
        _ov().save_model(model, str(out_dir / IR_NAME), compress_to_fp16=fp16)
    except RuntimeError as exc:
        # OpenVINO reports a failed write (a full disk) as a bare "iostream error".
        free_mb = shutil.disk_usage(out_dir).free / 1e6
        raise EdgeDeeplabError(
            f"OpenVINO cannot write the IR into {out_dir.parent} ({str(exc).strip().splitlines()[0][:120]}); "
            f"{free_mb:.1f} MB free on that disk"
        ) from None
    return {"model": IR_NAME, "weights": WEIGHTS_NAME}


def ov_runner(model, precision_hint: str | None = "f32", threads: int = 0) -> Runner:
    """Compile for CPU; ``precision_hint`` f32 for FP32 (the CPU default may be bf16)."""
    ov = _ov()
    config: dict = {"PERFORMANCE_HINT": "LATENCY"}
    if precision_hint:
        config["INFERENCE_PRECISION_HINT"] = precision_hint
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = ov.Core().compile_model(model, "CPU", config)
    return _request_runner(compiled)


def _request_runner(compiled) -> Runner:
    """A compiled model as a Runner: one infer request, outputs by their tensor names."""
    request = compiled.create_infer_request()
    names = [port.get_any_name() for port in compiled.outputs]

    def run(array: np.ndarray) -> Outputs:
        result = request.infer([array])
        return {name: np.asarray(result[i]) for i, name in enumerate(names)}

    return run


def quantize_int8(
    model,
    calib_items: Sequence[PreparedImage],
    validation: Validation | None = None,
    max_drop_points: float | None = None,
    overflow_fix: str = OVERFLOW_FIX,
):
    """NNCF INT8 of an OpenVINO model; with a drop limit, NNCF's accuracy control.

    ``overflow_fix`` is NNCF's: which convolutions get 7-bit weights (``first_layer_only``,
    ``enable``: all, ``disable``), see :data:`OVERFLOW_FIX`.

    Returns ``(quantized model, details)`` where details say what NNCF did (method, preset and,
    under accuracy control, which convolutions ended up without an input quantizer).
    """
    disable_telemetry()
    import nncf

    nncf.set_log_level(logging.WARNING)  # its INFO lines repeat what the export's step messages say
    calibration = nncf_dataset(calib_items)
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    preset = nncf.QuantizationPreset.MIXED
    advanced = AdvancedQuantizationParameters(overflow_fix=OverflowFix(overflow_fix))
    details: dict = {"toolchain": "nncf", "preset": "mixed", "subset_size": len(calib_items),
                     "overflow_fix": overflow_fix}
    if max_drop_points is None:
        with _progress_to_stderr():
            quantized = nncf.quantize(model, calibration, preset=preset, subset_size=len(calib_items),
                                      advanced_parameters=advanced)
        details["float_convolutions"] = float_convolutions(quantized)
        return quantized, details
    if validation is None:
        raise ValueError("accuracy control needs a validation set")

    def validate(compiled_model, items) -> float:
        return Validation(list(items), validation.miou).score(_request_runner(compiled_model))

    with _progress_to_stderr():
        quantized = nncf.quantize_with_accuracy_control(
            model,
            calibration,
            nncf.Dataset(validation.items),
            validate,
            max_drop=max_drop_points / 100.0,
            drop_type=nncf.DropType.ABSOLUTE,
            preset=preset,
            subset_size=len(calib_items),
            advanced_quantization_parameters=advanced,
        )
    details.update({"accuracy_control": True, "max_drop_fraction": max_drop_points / 100.0,
                    "float_convolutions": float_convolutions(quantized)})
    return quantized, details


def _progress_to_stderr():
    """NNCF draws its progress bars on stdout, which holds a command's results (the report's table)."""
    return contextlib.redirect_stdout(sys.stderr)


def float_convolutions(model) -> list[str]:
    """Convolutions whose data input is not fed through a FakeQuantize (kept in float)."""
    names = []
    for op in model.get_ordered_ops():
        if op.get_type_name() not in ("Convolution", "GroupConvolution"):
            continue
        source = op.input_value(0).get_node()
        if source.get_type_name() != "FakeQuantize":
            names.append(op.get_friendly_name())
    return names

