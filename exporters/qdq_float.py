"""Keeping a conv in float means its *input* too: a graph pass after ONNX Runtime's quantizer.

``quantize_static(nodes_to_exclude=...)`` leaves an excluded conv's weights in float but not the
tensor it reads: when the layer producing that tensor is quantized, ONNX Runtime quantizes the
producer's output for its own sake, and the excluded conv goes on reading the quantized copy.
The accuracy guard ranks layers by the noise of their input quantizer *and* their weights
(:mod:`exporters.sensitivity`), so an exclusion that removed only the weight noise could not
remove what it was chosen for. Measured on the tiny test model with one conv's input range made
100x too wide: excluding that conv left the logit error at 9.7 (FP32 reference), reading its input
in float brought it to 0.32, the error of the unbroken INT8 model.

The cpu flavour folds a ReLU/Clip after a quantized conv into the output quantizer (the clamp of
uint8 with zero point 0 is the ReLU), so the float copy of that tensor needs the activation back:
it is copied from the FP32 graph for the excluded reader only. Quantizers left without readers
are removed with their parameters.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

ACTIVATIONS = ("Relu", "Clip")  # what ONNX Runtime folds into a quantizer


def read_float_inputs(model_path: Path, fp32_path: str | Path, excluded: Sequence[str]) -> list[str]:
    """Rewire each excluded conv of ``model_path`` (in place) to read its input unquantized;
    returns the convs that were rewired."""
    import onnx

    model = onnx.load(str(model_path))
    graph = model.graph
    reference = onnx.load(str(fp32_path)).graph
    fp32_producer = {o: n for n in reference.node for o in n.output}
    fp32_initializers = {i.name: i for i in reference.initializer}
    present = {i.name for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    rewired = []
    excluded = set(excluded)
    for conv in [n for n in graph.node if n.op_type == "Conv" and n.name in excluded]:
        source = quantized_source(conv.input[0], producer)
        if source is None:
            continue
        activation, here = fp32_producer.get(source), producer.get(source)
        if here is not None and activation is not None and activation.op_type in ACTIVATIONS and activation.name != here.name:
            for name in activation.input[1:]:  # Clip's bounds
                if name and name not in present:
                    graph.initializer.append(fp32_initializers[name])
                    present.add(name)
            copy = onnx.helper.make_node(activation.op_type, [source, *activation.input[1:]], [f"{source}_float"],
                                         name=f"{activation.name}_float")
            copy.attribute.extend(activation.attribute)
            graph.node.insert(list(graph.node).index(here) + 1, copy)
            producer[copy.output[0]] = copy
            source = copy.output[0]
        conv.input[0] = source
        rewired.append(conv.name)
    _drop_unread_quantizers(graph)
    onnx.save(model, str(model_path))
    return rewired


def quantized_source(tensor: str, producer: dict) -> str | None:
    """The float tensor behind ``DequantizeLinear(QuantizeLinear(x))``, or None if ``tensor`` is
    not such a pair's output."""
    dequantize = producer.get(tensor)
    if dequantize is None or dequantize.op_type != "DequantizeLinear":
        return None
    quantize = producer.get(dequantize.input[0])
    if quantize is None or quantize.op_type != "QuantizeLinear":
        return None
    return quantize.input[0]


def _drop_unread_quantizers(graph) -> None:
    """Remove Q/DQ nodes nobody reads any more, then the initializers nobody reads."""
    while True:
        read = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        unread = [n for n in graph.node
                  if n.op_type in ("QuantizeLinear", "DequantizeLinear") and not any(o in read for o in n.output)]
        if not unread:
            break
        for node in unread:
            graph.node.remove(node)
    read = {i for n in graph.node for i in n.input}
    for initializer in [i for i in graph.initializer if i.name not in read]:
        graph.initializer.remove(initializer)
