"""INT8 ONNX with explicit QuantizeLinear/DequantizeLinear, for ONNX Runtime's CPU or TensorRT.

Both come from ONNX Runtime's ``quantize_static`` fed the cached activation ranges
(:mod:`calibration.ranges`), so no calibration inference runs here and re-quantizing with some
layers kept in float (the accuracy guard) is a cheap graph rewrite. The two flavours differ in
what their consumer fuses:

- ``cpu`` (the ``onnxruntime`` target): every operator ORT has an INT8 kernel for; activations
  asymmetric uint8, weights symmetric int8 per output channel (U8S8, the combination ORT's x86
  kernels run fastest with VNNI; ``reduce_range`` off because this is for VNNI-class CPUs, and the
  manifest records it). ReLU/Clip after a quantized conv are folded into the output's range.
- ``tensorrt``: TensorRT's explicit-quantization rules: symmetric int8 for activations (per
  tensor) and weights (per channel), Q/DQ only on the *inputs* of convolutions (data and weight),
  conv outputs and bias left in float so TensorRT fuses Conv+bias+ReLU and picks each layer's
  output precision itself; the rest of the graph stays float. A quantized tensor that also feeds a
  residual ``Add`` shares its Q/DQ pair with it, which is the placement TensorRT's guide asks for
  so the add can be fused into the preceding conv as an INT8 elementwise epilogue.

``onnxruntime.quantization.quant_pre_process`` is not used: the graph it would clean up is already
constant-folded with batch norms fused (:mod:`exporters.onnx`), and it fails on some dynamic-shape
graphs and leaves temporary files in the working directory.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Sequence

from calibration.ranges import Ranges, _ort_method
from runtime.files import atomic_file

FLAVORS = ("cpu", "tensorrt")


def settings(flavor: str) -> dict:
    """The quantizer settings of a flavour (also recorded in the manifest)."""
    if flavor == "cpu":
        return {"activation_type": "QUInt8", "weight_type": "QInt8", "per_channel": True, "reduce_range": False,
                "op_types_to_quantize": "all supported", "activation_symmetric": False, "weight_symmetric": True}
    if flavor == "tensorrt":
        return {"activation_type": "QInt8", "weight_type": "QInt8", "per_channel": True, "reduce_range": False,
                "op_types_to_quantize": ["Conv"], "activation_symmetric": True, "weight_symmetric": True,
                "quantize_conv_output": False, "quantize_bias": False}
    raise ValueError(f"unknown QDQ flavour {flavor!r}")


def quantize(
    fp32_path: str | Path,
    dest: str | Path,
    ranges: Ranges,
    flavor: str,
    exclude: Sequence[str] = (),
) -> Path:
    """Write the INT8 Q/DQ model of ``fp32_path`` to ``dest``; ``exclude`` nodes stay float."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    common = dict(
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        reduce_range=False,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=list(exclude),
        calibrate_method=_ort_method(ranges.method),
        calibration_cache_path=ranges.path,
    )
    if flavor == "cpu":
        options = dict(activation_type=QuantType.QUInt8, extra_options={"WeightSymmetric": True})
    elif flavor == "tensorrt":
        options = dict(
            activation_type=QuantType.QInt8,
            op_types_to_quantize=["Conv"],
            extra_options={
                "ActivationSymmetric": True,
                "WeightSymmetric": True,
                "OpTypesToExcludeOutputQuantization": ["Conv"],
                "QuantizeBias": False,
                "QDQKeepRemovableActivations": True,
            },
        )
    else:
        raise ValueError(f"unknown QDQ flavour {flavor!r}")
    quant_logger = logging.getLogger()
    level = quant_logger.level
    quant_logger.setLevel(logging.ERROR)  # "consider pre-processing" advice: see the module docstring
    try:
        with atomic_file(dest) as tmp, tempfile.TemporaryDirectory(prefix="edge-deeplab-qdq-") as work:
            out = Path(work) / "model.onnx"
            quantize_static(str(fp32_path), str(out), None, **common, **options)
            tmp.write_bytes(out.read_bytes())
    finally:
        quant_logger.setLevel(level)
    return Path(dest)


def quantized_convs(model_path: str | Path) -> list[str]:
    """Names of the Conv nodes with INT8 weights (weight input through a DequantizeLinear).

    The weights tell, not the data input: an excluded conv may still read a Q/DQ'd tensor when
    the layer producing it is quantized for its own sake.
    """
    import onnx

    graph = onnx.load(str(model_path)).graph
    dq_outputs = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return [n.name for n in graph.node if n.op_type == "Conv" and len(n.input) > 1 and n.input[1] in dq_outputs]
