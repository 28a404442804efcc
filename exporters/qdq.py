"""INT8 ONNX with explicit QuantizeLinear/DequantizeLinear, for ONNX Runtime's CPU or TensorRT.

Both come from ONNX Runtime's ``quantize_static`` fed the cached activation ranges
(:mod:`calibration.ranges`), so no calibration inference runs here and re-quantizing with some
layers kept in float (the accuracy guard) is a cheap graph rewrite. The two flavours differ in
what their consumer fuses:

- ``cpu`` (the ``onnxruntime`` target): every operator ORT has an INT8 kernel for; activations
  asymmetric uint8, weights symmetric int8 per output channel (U8S8, the combination ORT's x86
  kernels run fastest) in 7 bits (``reduce_range``: |w| <= 64). 7-bit weights are what make the
  bundle compute the same sums on every CPU: x86 without VNNI adds u8 x s8 products in 16-bit
  pairs, which 8-bit weights overflow and 7-bit ones cannot (:mod:`exporters.saturation`, which
  also writes the proof into the manifest). ReLU/Clip after a quantized conv are folded into the
  output's range.
- ``tensorrt``: TensorRT's Q/DQ placement recommendations, checked against NVIDIA's Model Optimizer
  (``modelopt.onnx.quantization``; ``benchmarks/qdq_placement.py`` prints both side by side):
  symmetric int8 activations (per tensor) and weights (per channel), conv outputs and bias left in
  float so TensorRT fuses Conv+bias+ReLU and picks each layer's output precision itself. Q/DQ sit
  on the *inputs* of the ops TensorRT runs in INT8: convolutions (data and weight), the two
  upsampling ``Resize`` nodes (image pooling and decoder; without a Q/DQ on their input TensorRT
  runs them in FP16 between reformat kernels) and ``MaxPool`` (ResNet's stem). The last
  ``Resize``, which upsamples the classifier's logits, stays float: 8-bit logits would move the
  argmax at class boundaries. A residual ``Add`` gets its shortcut input quantized (the input on
  the shorter path from the block's start; the other is fused into the preceding conv as an INT8
  elementwise epilogue): where the shortcut tensor already feeds a conv it shares that Q/DQ pair,
  where it is a projection conv's output (the first block of a ResNet or Xception stage) a pair is
  added by :func:`quantize_residual_inputs`, a graph pass after ONNX Runtime's quantizer, which
  has no option for one input of a node.

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
from exporters.qdq_float import read_float_inputs
from runtime.files import atomic_file

FLAVORS = ("cpu", "tensorrt")
# The cpu flavour's weight width: 7 bits, safe from x86's 16-bit pair saturation by construction.
CPU_WEIGHT_BITS = 7
# The op types whose inputs the tensorrt flavour quantizes (outputs stay float: TensorRT decides).
TENSORRT_OP_TYPES = ["Conv", "Resize", "MaxPool"]


def settings(flavor: str) -> dict:
    """The quantizer settings of a flavour (also recorded in the manifest)."""
    if flavor == "cpu":
        return {"activation_type": "QUInt8", "weight_type": "QInt8", "per_channel": True, "reduce_range": True,
                "weight_bits": CPU_WEIGHT_BITS, "op_types_to_quantize": "all supported",
                "activation_symmetric": False, "weight_symmetric": True}
    if flavor == "tensorrt":
        return {"activation_type": "QInt8", "weight_type": "QInt8", "per_channel": True, "reduce_range": False,
                "op_types_to_quantize": list(TENSORRT_OP_TYPES), "activation_symmetric": True, "weight_symmetric": True,
                "quantize_outputs": False, "quantize_bias": False, "float_resize": "the logits upsampling",
                "residual_add": "shortcut input quantized"}
    raise ValueError(f"unknown QDQ flavour {flavor!r}")


def weight_range(flavor: str) -> tuple[int, int]:
    """The integer range the flavour's weights are quantized into (ONNX Runtime's own rule:
    [-64, 64] for the cpu flavour's 7 bits, [-127, 127] for TensorRT's 8); QAT rounds into it."""
    from onnx import TensorProto
    from onnxruntime.quantization.quant_utils import get_qmin_qmax_for_qType

    if flavor not in FLAVORS:
        raise ValueError(f"unknown QDQ flavour {flavor!r}")
    low, high = get_qmin_qmax_for_qType(TensorProto.INT8, reduce_range=flavor == "cpu", symmetric=True)
    return int(low), int(high)


def quantize(
    fp32_path: str | Path,
    dest: str | Path,
    ranges: Ranges,
    flavor: str,
    exclude: Sequence[str] = (),
) -> Path:
    """Write the INT8 Q/DQ model of ``fp32_path`` to ``dest``; ``exclude`` nodes stay float, the
    tensor they read included (:mod:`exporters.qdq_float`)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    common = dict(
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        reduce_range=flavor == "cpu",
        weight_type=QuantType.QInt8,
        nodes_to_exclude=list(exclude),
        calibrate_method=_ort_method(ranges.method),
        calibration_cache_path=ranges.path,
    )
    if flavor == "cpu":
        options = dict(activation_type=QuantType.QUInt8, extra_options={"WeightSymmetric": True})
    elif flavor == "tensorrt":
        common["nodes_to_exclude"] += logits_resizes(fp32_path)
        options = dict(
            activation_type=QuantType.QInt8,
            op_types_to_quantize=TENSORRT_OP_TYPES,
            extra_options={
                "ActivationSymmetric": True,
                "WeightSymmetric": True,
                "OpTypesToExcludeOutputQuantization": TENSORRT_OP_TYPES,
                # Resize and MaxPool are otherwise quantized only when their input already is.
                "ForceQuantizeNoInputCheck": True,
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
            if flavor == "tensorrt":
                quantize_residual_inputs(out, ranges, exclude)
            if exclude:
                read_float_inputs(out, fp32_path, exclude)
            tmp.write_bytes(out.read_bytes())
    finally:
        quant_logger.setLevel(level)
    return Path(dest)


def quantized_convs(model_path: str | Path) -> list[str]:
    """Names of the Conv nodes with INT8 weights (weight input through a DequantizeLinear).

    The weights tell, not the data input: a conv excluded before :mod:`exporters.qdq_float`
    rewired it still read a Q/DQ'd tensor, and a graph from elsewhere may do the same.
    """
    import onnx

    graph = onnx.load(str(model_path)).graph
    dq_outputs = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return [n.name for n in graph.node if n.op_type == "Conv" and len(n.input) > 1 and n.input[1] in dq_outputs]


def logits_resizes(model_path: str | Path) -> list[str]:
    """``Resize`` nodes reading a conv's output directly: the upsampling of the classifier's logits.

    The other upsamplings read a ReLU's output (a conv block's activation).
    """
    import onnx

    graph = onnx.load(str(model_path)).graph
    producer = {o: n.op_type for n in graph.node for o in n.output}
    return [n.name for n in graph.node if n.op_type == "Resize" and producer.get(n.input[0]) == "Conv"]


def quantize_residual_inputs(model_path: Path, ranges: Ranges, exclude: Sequence[str] = ()) -> list[str]:
    """Add a Q/DQ pair on the shortcut input of each ``Add`` of two conv outputs; returns the Adds.

    The shortcut is the input with the shorter path from the graph input (a projection conv
    against the block's last conv). Its scale is computed from the cached calibration range with
    ONNX Runtime's own symmetric int8 formula, as the quantizer does for every other tensor. Adds
    whose shortcut conv the accuracy guard keeps in float (``exclude``) are left alone.
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization.calibrate import load_tensors_data
    from onnxruntime.quantization.quant_utils import compute_scale_zp, get_qmin_qmax_for_qType

    model = onnx.load(str(model_path))
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    depth: dict[str, int] = {}
    for node in graph.node:  # ONNX Runtime writes the graph topologically sorted
        level = 1 + max((depth.get(i, 0) for i in node.input), default=0)
        depth.update({o: level for o in node.output})
    tensors = load_tensors_data(ranges.path)
    qmin, qmax = get_qmin_qmax_for_qType(TensorProto.INT8, symmetric=True)
    done = []
    for add in list(graph.node):
        sources = [producer.get(i) for i in add.input]
        if add.op_type != "Add" or len(sources) != 2 or not all(src is not None and src.op_type == "Conv" for src in sources):
            continue
        index = min((0, 1), key=lambda i: depth[add.input[i]])
        tensor = add.input[index]
        if sources[index].name in exclude or tensor not in tensors:
            continue
        rmin, rmax = tensors[tensor].range_value
        zero, scale = compute_scale_zp(rmin, rmax, qmin, qmax, symmetric=True)
        graph.initializer.extend([
            numpy_helper.from_array(np.asarray(scale, np.float32).squeeze(), f"{tensor}_residual_scale"),
            numpy_helper.from_array(np.asarray(zero, np.int8).squeeze(), f"{tensor}_residual_zero_point"),
        ])
        params = [f"{tensor}_residual_scale", f"{tensor}_residual_zero_point"]
        quantize = helper.make_node("QuantizeLinear", [tensor, *params], [f"{tensor}_residual_q"], f"{tensor}_residual_Q")
        dequantize = helper.make_node("DequantizeLinear", [f"{tensor}_residual_q", *params], [f"{tensor}_residual_dq"],
                                      f"{tensor}_residual_DQ")
        position = list(graph.node).index(add)
        graph.node.insert(position, dequantize)
        graph.node.insert(position, quantize)
        add.input[index] = f"{tensor}_residual_dq"
        done.append(add.name)
    onnx.save(model, str(model_path))
    return done


def qdq_fed_inputs(model_path: str | Path) -> dict[str, int]:
    """How many inputs of each op type read a DequantizeLinear output: the Q/DQ placement in numbers.

    Conv is split into its data and weight inputs; a residual Add counts once per quantized input.
    """
    import onnx

    graph = onnx.load(str(model_path)).graph
    dq_outputs = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    counts: dict[str, int] = {}
    for node in graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for index, name in enumerate(node.input):
            if name in dq_outputs:
                key = node.op_type if node.op_type != "Conv" else f"Conv {'data' if index == 0 else 'weight'}"
                counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))