"""Which layers lose the most to INT8: a one-pass, per-layer SQNR ranking.

For each quantized convolution, the INT8 model's tensor just before the conv's input quantizer and
the conv's raw output are compared with the same tensors of the FP32 model (signal-to-quantization-
noise ratio, summed over a few images). The growth of relative noise power from before to after is
the noise this conv's quantization (its input quantizer and its int8 weights) adds, which is what
keeping that conv in float removes. One run of each model ranks every layer, against one
quantize-and-evaluate per layer for the exhaustive alternative. Tensor names survive ONNX Runtime's
QDQ rewrite, so both graphs expose the same names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from exporters.qdq_float import quantized_source

CAP_DB = 100.0  # an exact tensor (the input image) has infinite SQNR; cap it for arithmetic


@dataclass(frozen=True)
class LayerSensitivity:
    node: str
    input_sqnr_db: float
    output_sqnr_db: float

    @property
    def added_noise(self) -> float:
        """Relative noise power (noise / signal) this layer adds: linear, so layers compare fairly.

        A dB difference would not: an exact input (the image, infinite SQNR) going to 42 dB is a
        huge dB drop yet adds 100x less noise than a 33 dB tensor leaving a conv at 28 dB.
        """
        return 10.0 ** (-self.output_sqnr_db / 10.0) - 10.0 ** (-self.input_sqnr_db / 10.0)


def _with_outputs(model_path: Path, names: Sequence[str]) -> bytes:
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(model_path))
    present = {o.name for o in model.graph.output}
    for name in names:
        if name not in present:
            model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
            present.add(name)
    return model.SerializeToString()


def _run_all(model_bytes: bytes, names: list[str], arrays: Sequence[np.ndarray]):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    # Basic optimizations only: fusions could remove the intermediate tensors being compared.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    for array in arrays:
        yield dict(zip(names, session.run(names, {input_name: array})))


def rank_layers(fp32_path: str | Path, int8_path: str | Path, arrays: Sequence[np.ndarray],
                progress: bool = True) -> list[LayerSensitivity]:
    """Quantized convs of ``int8_path``, most sensitive (largest added noise) first.

    Tensors are paired through the *nodes* that produce them (the quantizer keeps node names but
    may rename a conv's output when it folds a following ReLU/Clip into the quantizer), so both
    sides of every comparison are the same node's raw output. ``progress``: a bar over the images
    (both models run on each, every conv's tensors kept), on stderr when it is a terminal.
    """
    import onnx
    from runtime.progress import progress_bar

    graph = onnx.load(str(int8_path)).graph
    producer = {o: n for n in graph.node for o in n.output}
    fp32_nodes = {n.name: n for n in onnx.load(str(fp32_path)).graph.node}

    # node -> ((fp32 tensor, int8 tensor) before the input quantizer or None, (fp32, int8) output)
    pairs: dict[str, tuple[tuple[str, str] | None, tuple[str, str]]] = {}
    for node in graph.node:
        if node.op_type != "Conv" or len(node.input) < 2 or node.name not in fp32_nodes:
            continue
        weight_dq = producer.get(node.input[1])
        if weight_dq is None or weight_dq.op_type != "DequantizeLinear":
            continue  # float weights: already excluded
        source = quantized_source(node.input[0], producer)
        if source is None:
            continue
        upstream = producer.get(source)  # None: the quantizer sits on the graph input
        before = None
        if upstream is not None:
            if upstream.name not in fp32_nodes:
                continue
            before = (fp32_nodes[upstream.name].output[0], upstream.output[0])
        pairs[node.name] = (before, (fp32_nodes[node.name].output[0], node.output[0]))
    fp32_names = sorted({p[0] for b, a in pairs.values() for p in (b, a) if p is not None})
    int8_names = sorted({p[1] for b, a in pairs.values() for p in (b, a) if p is not None})
    if not pairs:
        return []
    signal: dict[tuple[str, str], float] = {}
    noise: dict[tuple[str, str], float] = {}
    runs = zip(_run_all(_with_outputs(Path(fp32_path), fp32_names), fp32_names, arrays),
               _run_all(_with_outputs(Path(int8_path), int8_names), int8_names, arrays))
    bar = progress_bar(runs, total=len(arrays), desc="ranking layers by INT8 noise", unit="img", leave=False,
                       enabled=progress)
    for ref, test in bar:
        for before, after in pairs.values():
            for pair in (before, after):
                if pair is None:
                    continue
                r = ref[pair[0]].astype(np.float64)
                signal[pair] = signal.get(pair, 0.0) + float(np.sum(r * r))
                noise[pair] = noise.get(pair, 0.0) + float(np.sum((r - test[pair[1]]) ** 2))

    def sqnr(pair: tuple[str, str] | None) -> float:
        if pair is None or noise[pair] == 0.0:
            return CAP_DB
        return min(CAP_DB, 10.0 * np.log10(max(signal[pair], 1e-30) / noise[pair]))

    ranking = [LayerSensitivity(node, sqnr(before), sqnr(after)) for node, (before, after) in pairs.items()]
    ranking.sort(key=lambda s: (-s.added_noise, s.output_sqnr_db))
    return ranking
