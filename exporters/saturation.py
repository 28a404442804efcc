"""Where an INT8 convolution can saturate x86's 16-bit pair sums, and proof that ours cannot.

On x86 without VNNI (AVX2, or AVX-512 without VNNI) ONNX Runtime computes a quantized conv's
u8 x s8 dot products with VPMADDUBSW: each pair of neighbouring products along the reduction axis
is added into a signed 16-bit integer that saturates, then VPMADDWD widens the pairs to 32 bits.
With 8-bit weights one pair can reach 255 x 127 x 2 = 64,770, twice the int16 limit; with 7-bit
weights (ONNX Runtime's ``reduce_range``: |w| <= 64) the worst pair is 255 x 64 x 2 = 32,640, which
fits, so every CPU computes the exact sum. (VNNI's VPDPBUSD and AMX accumulate in 32 bits; depthwise
convs widen to 16 bits before multiplying; ARM64 kernels accumulate in 32 bits.)

:func:`emulate_pairwise` reproduces that arithmetic in numpy so the saturation can be shown on a
machine that never runs it; :func:`kernel_record` bounds the worst pair of every quantized conv of
a bundle from its weights and activation range, and is written into the manifest.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.manifest import RUNS_EXACTLY_ON

# ``runs_exactly_on``: every CPU, or (a conv's worst pair over the int16 limit) only where the
# kernels accumulate in 32 bits: x86 with AVX512-VNNI, AVX-VNNI or AMX, and ARM64.
ANYWHERE, NEEDS_VNNI = RUNS_EXACTLY_ON

INT16_MAX = 32767
INT16_MIN = -32768
# ONNX Runtime's weight ranges (quant_utils): full symmetric int8, and reduce_range's 7 bits.
WEIGHT_LIMITS = {8: 127, 7: 64}


def emulate_pairwise(a: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``a @ w`` as VPMADDUBSW + VPMADDWD compute it: u8 ``a`` (M x K) times s8 ``w`` (K x N),
    products added in pairs (k, k+1) with int16 saturation, the pairs summed in int32."""
    a32, w32 = a.astype(np.int32), w.astype(np.int32)
    if a32.shape[1] % 2:  # the kernels pad K with zeros to whole pairs
        a32 = np.pad(a32, ((0, 0), (0, 1)))
        w32 = np.pad(w32, ((0, 1), (0, 0)))
    pairs = a32[:, 0::2, None] * w32[None, 0::2, :] + a32[:, 1::2, None] * w32[None, 1::2, :]
    return np.clip(pairs, INT16_MIN, INT16_MAX).sum(axis=1, dtype=np.int32)


def im2col_nhwc(x: np.ndarray, kernel: tuple[int, int], stride: int = 1, pad: int = 0) -> np.ndarray:
    """A u8 NCHW image (1 x C x H x W) as the GEMM rows ONNX Runtime's x86 conv kernels read:
    one row per output pixel, K ordered (kh, kw, C) with channels innermost (NHWC), so the
    pairs are neighbouring input channels. Padding uses 0 (the zero point of a ReLU's output)."""
    kh, kw = kernel
    image = np.pad(x[0].transpose(1, 2, 0), ((pad, pad), (pad, pad), (0, 0)))
    rows = []
    for top in range(0, image.shape[0] - kh + 1, stride):
        for left in range(0, image.shape[1] - kw + 1, stride):
            rows.append(image[top:top + kh, left:left + kw, :].reshape(-1))
    return np.stack(rows)


def weights_as_gemm(w: np.ndarray) -> np.ndarray:
    """Conv weights (Cout x Cin x kh x kw) as the K x Cout matrix matching :func:`im2col_nhwc`."""
    return w.transpose(2, 3, 1, 0).reshape(-1, w.shape[0])


def worst_pair(w: np.ndarray, a_max: int = 255) -> int:
    """The largest |a0 w0 + a1 w1| any two weights of one output channel can reach for u8
    activations in [0, a_max]: a bound over every pairing, whatever order a kernel packs K in.

    ``w`` is Cout x K (int). Positive weights meet a_max, negative ones 0 (or the reverse).
    """
    w = np.asarray(w, np.int64).reshape(w.shape[0], -1)
    if w.shape[1] < 2:
        return int(np.abs(w).max(initial=0)) * a_max
    ordered = np.sort(w, axis=1)
    most_negative = ordered[:, 0] + ordered[:, 1]
    most_positive = ordered[:, -1] + ordered[:, -2]
    return int(a_max * max(np.clip(most_positive, 0, None).max(), -np.clip(most_negative, None, 0).min()))


@dataclass(frozen=True)
class LayerBound:
    """One quantized conv that runs as a u8 x s8 GEMM, and its worst pair sum."""

    node: str
    worst_pair: int

    @property
    def saturates(self) -> bool:
        return self.worst_pair > INT16_MAX


def layer_bounds(model_path: str | Path) -> list[LayerBound]:
    """The worst pair of every conv whose data is u8 and weights s8 through DequantizeLinear.

    Depthwise convs (one input channel per group) are left out: ONNX Runtime's depthwise kernels
    widen both operands to 16 bits first and cannot saturate. The u8 activations can take any value
    their QuantizeLinear clips to, so ``a_max`` is 255 (a ReLU's range starts at zero point 0).
    """
    import onnx
    from onnx import TensorProto, numpy_helper

    graph = onnx.load(str(model_path)).graph
    initializers = {i.name: i for i in graph.initializer}
    dequantized = {n.output[0]: n for n in graph.node if n.op_type == "DequantizeLinear"}
    bounds = []
    for node in graph.node:
        if node.op_type != "Conv" or len(node.input) < 2:
            continue
        data, weight = dequantized.get(node.input[0]), dequantized.get(node.input[1])
        if data is None or weight is None or weight.input[0] not in initializers:
            continue
        zero_point = initializers.get(data.input[2]) if len(data.input) > 2 else None
        w = initializers[weight.input[0]]
        if w.data_type != TensorProto.INT8 or zero_point is None or zero_point.data_type != TensorProto.UINT8:
            continue
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        values = numpy_helper.to_array(w)
        if group > 1 and values.shape[1] == 1:
            continue
        bounds.append(LayerBound(node.name, worst_pair(values.reshape(values.shape[0], -1))))
    return bounds


def kernel_record(model_path: str | Path, weight_bits: int) -> dict[str, object]:
    """The manifest's ``int8_kernels``: which CPUs compute this bundle's INT8 exactly, and why."""
    bounds = layer_bounds(model_path)
    worst = max((b.worst_pair for b in bounds), default=0)
    over = [b.node for b in bounds if b.saturates]
    return {
        "weight_bits": weight_bits,
        "runs_exactly_on": NEEDS_VNNI if over else ANYWHERE,
        "gemm_convs": len(bounds),
        "convs_over_int16": len(over),
        "worst_pair_sum": worst,
        "int16_limit": INT16_MAX,
    }
