"""A Q/DQ ONNX graph run by PyTorch, with its weights trainable: the simulation QAT trains.

Quantization-aware fine-tuning for the onnxruntime and tensorrt targets does not rebuild the
quantization in torch and hope it matches: it trains the very graph the bundle ships. Each node of
the post-training Q/DQ model is executed with its ONNX meaning in torch ops:
``QuantizeLinear`` rounds half to even and saturates to its integer type (the rounding passes
gradients straight through, the saturation stops them), ``DequantizeLinear`` of an activation is
``(q - zero_point) * scale``, and ``DequantizeLinear`` of a weight or bias becomes the fake
quantization of a float parameter on the graph's own frozen scale and the quantizer's integer range
(|w| <= 64 for the cpu flavour's 7-bit weights, <= 127 for TensorRT's). Every scale, zero point and
placement is the graph's, so what training sees is what ONNX Runtime or TensorRT computes; writing
the bundle (:func:`write_tuned`) only replaces the integer weights and biases, so the graph, its
placement and its latency stay those of the PTQ bundle.

The float parameters start from the FP32 graph the quantizer read (BatchNorm already folded into
the convolutions, as on the device), matched by ONNX Runtime's ``<name>_quantized`` naming.

A static graph's ``Resize`` sizes are constants for its export size. Training runs on the recipe's
crops, so each such ``Resize`` follows the spatial size of a tensor that had its target size at
export (the feature map for ASPP's image pooling, the low-level features in the decoder, the image
for the logits): the same tensors torch's ``interpolate(size=x.shape[-2:])`` read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from runtime.errors import EdgeDeeplabError
from runtime.files import atomic_write_bytes

QUANTIZED_SUFFIX = "_quantized"  # ONNX Runtime's name for the integer copy of an initializer
_INT_RANGE = {np.dtype(np.uint8): (0, 255), np.dtype(np.int8): (-128, 127),
              np.dtype(np.int32): (-(2**31), 2**31 - 1)}


class QdqGraph(torch.nn.Module):
    """The Q/DQ graph at ``qdq_path`` as a trainable torch module (see the module docstring).

    ``weight_range``: the integer range the quantizer put the weights in, so training rounds
    and clips them as the quantizer will. Call it with the graph's input; :meth:`logits` with
    normalized images, as the training batches come.
    """

    def __init__(self, qdq_path: str | Path, fp32_path: str | Path, weight_range: tuple[int, int]) -> None:
        import onnx
        from onnx import numpy_helper

        super().__init__()
        model = onnx.shape_inference.infer_shapes(onnx.load(str(qdq_path)))
        floats = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(fp32_path)).graph.initializer}
        self.graph = model.graph
        self.weight_range = weight_range
        self.constants: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in self.graph.initializer}
        self.tensors = {name: torch.from_numpy(np.array(value)) for name, value in self.constants.items()}
        self.params = torch.nn.ParameterDict()
        self.param_of: dict[str, str] = {}  # initializer name in the graph -> its key in params
        for node in self.graph.node:
            if node.op_type == "DequantizeLinear" and node.input[0] in self.constants:
                self._add_param(node.input[0], floats, quantized=True)
            elif node.op_type == "Conv":
                for name in node.input[1:]:
                    if name in self.constants and self.constants[name].dtype == np.float32:
                        self._add_param(name, floats, quantized=False)
        self.input = self.graph.input[0]
        self.logits_name = _logits_tensor(self.graph)
        self.resize_reference = _resize_references(self.graph, self.constants)

    def _add_param(self, name: str, floats: dict[str, np.ndarray], quantized: bool) -> None:
        source = float_name(name) if quantized else name
        if source not in floats:
            raise EdgeDeeplabError(f"QAT: the INT8 graph's initializer {name} has no float original in the FP32 graph")
        key = f"p{len(self.params)}"
        self.params[key] = torch.nn.Parameter(torch.from_numpy(floats[source].astype(np.float32).copy()))
        self.param_of[name] = key

    def float_weights(self) -> dict[str, np.ndarray]:
        """The trained float values by their FP32 graph name (what :func:`write_tuned` writes)."""
        named = {}
        for name, key in self.param_of.items():
            named[float_name(name)] = self.params[key].detach().numpy().copy()
        return named

    def forward(self, image, upto: str | None = None):
        """Run the graph on ``image``; the graph's outputs (a dict), or the tensor ``upto``."""
        env = {self.input.name: image}
        for node in self.graph.node:
            outputs = self.run_node(node, env)
            env.update(zip(node.output, outputs))
            if upto is not None and upto in env:
                return env[upto]
        return {o.name: env[o.name] for o in self.graph.output}

    def logits(self, images, mean: Sequence[float], std: Sequence[float]):
        """The class logits of normalized images (a uint8-input graph gets them back on 0..255)."""
        if self.input.type.tensor_type.elem_type == 2:  # uint8: the graph normalizes inside
            images = images * torch.tensor(std).view(1, 3, 1, 1) * 255.0 + torch.tensor(mean).view(1, 3, 1, 1) * 255.0
        return self(images, upto=self.logits_name)

    # -- the operators of the exported DeepLab graphs ------------------------------------------

    def _value(self, name: str, env: dict):
        if name in env:
            return env[name]
        if name in self.param_of and self.constants[name].dtype == np.float32:  # a float conv weight or bias
            return self.params[self.param_of[name]]
        return self.tensors[name]

    def run_node(self, node, env: dict) -> list:
        """One node's outputs from the tensors in ``env`` (by name), with its ONNX meaning."""
        F = torch.nn.functional
        attrs = _attributes(node)
        args = [self._value(n, env) if n else None for n in node.input]
        op = node.op_type
        if op == "DequantizeLinear":
            return [self._dequantize(node, args, attrs)]
        if op == "QuantizeLinear":
            x, scale, zero = args
            low, high = _INT_RANGE[np.dtype(self.constants[node.input[2]].dtype)]
            q = _round_ste(x / scale.float()) + zero.float()
            return [_clamp_ste(q, low, high)]
        if op == "Conv":
            return [_conv(F, args, attrs)]
        if op == "Add":
            return [args[0] + args[1]]
        if op == "Sub":
            return [args[0] - args[1]]
        if op == "Mul":
            return [args[0] * args[1]]
        if op == "Relu":
            return [F.relu(args[0])]
        if op == "Clip":
            return [torch.clamp(args[0], min=float(args[1]), max=float(args[2]))]
        if op == "Cast":
            return [_cast(args[0], attrs["to"])]
        if op == "Concat":
            return [torch.cat(args, dim=attrs["axis"])]
        if op == "ReduceMean":
            axes = attrs.get("axes") or args[1].tolist()
            return [args[0].mean(dim=axes, keepdim=bool(attrs.get("keepdims", 1)))]
        if op == "GlobalAveragePool":
            return [args[0].mean(dim=(2, 3), keepdim=True)]
        if op == "MaxPool":
            pads = attrs.get("pads", [0, 0, 0, 0])
            return [F.max_pool2d(args[0], attrs["kernel_shape"], attrs.get("strides", 1), pads[:2],
                                 ceil_mode=bool(attrs.get("ceil_mode", 0)))]
        if op == "Resize":
            return [self._resize(node, args, attrs, env)]
        if op == "ArgMax":
            return [torch.argmax(args[0], dim=attrs.get("axis", 0), keepdim=bool(attrs.get("keepdims", 1)))]
        if op == "Shape":
            return [torch.tensor(args[0].shape, dtype=torch.int64)]
        if op == "Gather":
            axis = attrs.get("axis", 0)
            picked = torch.index_select(args[0], axis, args[1].reshape(-1))
            return [picked.reshape((*args[0].shape[:axis], *args[1].shape, *args[0].shape[axis + 1:]))]
        if op == "Unsqueeze":
            out = args[0]
            for axis in sorted(args[1].tolist()):
                out = out.unsqueeze(axis)
            return [out]
        if op == "Slice":
            return [_slice(args)]
        if op == "Identity":
            return [args[0]]
        raise EdgeDeeplabError(f"QAT cannot run the graph's {op} node {node.name!r} in torch")

    def _dequantize(self, node, args, attrs):
        data, scale = args[0], args[1].float()
        zero = args[2] if len(args) > 2 and args[2] is not None else torch.zeros((), dtype=torch.int32)
        axis = attrs.get("axis", 1)
        if node.input[0] in self.param_of:  # a weight or bias: fake-quantize the float parameter
            param = self.params[self.param_of[node.input[0]]]
            low, high = integer_range(self.constants[node.input[0]].dtype, self.weight_range)
            ints, scale, zero = quantize_weight(param, scale, zero, axis, low, high)
            return (ints - zero) * scale
        if scale.ndim:
            shape = [1] * data.ndim
            shape[axis] = -1
            scale, zero = scale.reshape(shape), zero.reshape(shape)
        return (data.float() - zero.float()) * scale

    def _resize(self, node, args, attrs, env):
        F = torch.nn.functional
        if attrs.get("mode", b"nearest") != b"linear" or attrs.get("coordinate_transformation_mode") != b"half_pixel":
            raise EdgeDeeplabError(f"QAT supports bilinear half-pixel Resize only (node {node.name!r})")
        reference = self.resize_reference.get(node.name)
        if reference is not None:
            size = tuple(env[reference].shape[-2:])
        else:
            size = tuple(int(v) for v in args[3].tolist()[-2:])
        return F.interpolate(args[0], size=size, mode="bilinear", align_corners=False)

    def runner(self) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
        """The graph as an export Runner (eval, no gradients): its outputs by name, as numpy."""
        def run(array: np.ndarray) -> dict[str, np.ndarray]:
            with torch.no_grad():
                return {name: value.numpy() for name, value in self(torch.from_numpy(array)).items()}

        return run


def write_tuned(qdq_path: str | Path, dest: str | Path, tuned: dict[str, np.ndarray],
                weight_range: tuple[int, int]) -> Path:
    """Write ``qdq_path`` with the trained float values ``tuned`` (by FP32 name) in place of its
    weights: integer copies re-rounded on the graph's own scales and ranges, float ones replaced.
    Nothing else changes (nodes, scales, zero points), so the written graph is what trained."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(qdq_path))
    scales = {}
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear":
            scales[node.input[0]] = (node.input[1], node.input[2] if len(node.input) > 2 else None,
                                     _attributes(node).get("axis", 1))
    initializers = {i.name: i for i in model.graph.initializer}
    for init in model.graph.initializer:
        source = float_name(init.name)
        if source not in tuned:
            continue
        value = tuned[source]
        if init.name == source:  # kept in float
            init.CopyFrom(numpy_helper.from_array(value.astype(np.float32), init.name))
            continue
        scale_name, zero_name, axis = scales[init.name]
        old = numpy_helper.to_array(init)
        scale = torch.from_numpy(numpy_helper.to_array(initializers[scale_name]))
        zero = torch.from_numpy(numpy_helper.to_array(initializers[zero_name]) if zero_name else np.zeros((), old.dtype))
        ints, _, _ = quantize_weight(torch.from_numpy(value), scale, zero, axis, *integer_range(old.dtype, weight_range))
        init.CopyFrom(numpy_helper.from_array(ints.numpy().astype(old.dtype), init.name))
    return atomic_write_bytes(dest, model.SerializeToString())


def float_name(name: str) -> str:
    """The FP32 graph's name of an initializer (ONNX Runtime's integer copy drops its suffix)."""
    return name[: -len(QUANTIZED_SUFFIX)] if name.endswith(QUANTIZED_SUFFIX) else name


def integer_range(dtype, weight_range: tuple[int, int]) -> tuple[int, int]:
    """Where a stored weight's integers lie: the quantizer's weight range for int8 weights, the
    type's own range for int32 biases."""
    return weight_range if np.dtype(dtype) == np.int8 else _INT_RANGE[np.dtype(dtype)]


def quantize_weight(value, scale, zero, axis: int, low: int, high: int):
    """A weight's integers on its (per-channel) scale, as floats with a straight-through gradient,
    and the scale and zero point shaped to broadcast: the one rounding both the simulation
    (:class:`QdqGraph`) and the written bundle (:func:`write_tuned`) use."""
    shape = [1] * value.ndim
    if scale.ndim:
        shape[axis] = -1
    scale, zero = scale.float().reshape(shape), zero.float().reshape(shape)
    return _clamp_ste(_round_ste(value / scale) + zero, low, high), scale, zero


def _round_ste(x):
    """Round half to even (QuantizeLinear's rule) with the gradient passed straight through."""
    return x + (x.round() - x).detach()


def _clamp_ste(x, low: float, high: float):
    """Saturate; the gradient stops outside the range (where the value no longer moves)."""
    return x.clamp(low, high)


def _conv(F, args, attrs):
    x, weight, bias = args[0], args[1], args[2] if len(args) > 2 else None
    pads = attrs.get("pads", [0, 0, 0, 0])
    if pads[:2] != pads[2:]:
        x = F.pad(x, (pads[1], pads[3], pads[0], pads[2]))
        pads = [0, 0, 0, 0]
    return F.conv2d(x, weight, bias, attrs.get("strides", [1, 1]), pads[:2], attrs.get("dilations", [1, 1]),
                    attrs.get("group", 1))


def _cast(x, to: int):
    dtypes = {1: torch.float32, 2: torch.uint8, 3: torch.int8, 6: torch.int32, 7: torch.int64}
    if to == 1:
        return x.float()  # keeps a float input float (training feeds 0..255 floats to a uint8 graph)
    return x.to(dtypes[to])


def _slice(args):
    data, starts, ends = args[0], args[1].tolist(), args[2].tolist()
    axes = args[3].tolist() if len(args) > 3 and args[3] is not None else list(range(len(starts)))
    steps = args[4].tolist() if len(args) > 4 and args[4] is not None else [1] * len(starts)
    index = [slice(None)] * data.ndim
    for start, end, axis, step in zip(starts, ends, axes, steps):
        size = data.shape[axis]
        index[axis] = slice(max(min(start, size), -size), max(min(end, size), -size - 1), step)
    return data[tuple(index)]


def _attributes(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _logits_tensor(graph) -> str:
    """The logits tensor: the ArgMax's input when the graph returns the mask, else the output."""
    for node in graph.node:
        if node.op_type == "ArgMax":
            return node.input[0]
    return graph.output[0].name


def _resize_references(graph, constants: dict) -> dict[str, str]:
    """For each ``Resize`` with constant sizes, the last tensor before it that had that spatial
    size at export (the graph input for the logits): its size at run time is the target size."""
    shapes = {graph.input[0].name: _dims(graph.input[0])}
    shapes.update({v.name: _dims(v) for v in graph.value_info})
    references = {}
    produced = [graph.input[0].name]
    for node in graph.node:
        if node.op_type == "Resize" and len(node.input) > 3 and node.input[3] in constants:
            target = [int(v) for v in constants[node.input[3]][-2:]]
            candidates = [t for t in produced if len(shapes.get(t) or []) == 4 and shapes[t][-2:] == target]
            if not candidates:
                raise EdgeDeeplabError(f"QAT: no tensor before {node.name!r} has its target size {target}")
            references[node.name] = candidates[-1]
        produced.extend(node.output)
    return references


def _dims(value) -> list[int | None]:
    return [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]
