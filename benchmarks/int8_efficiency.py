"""How close an INT8 bundle runs to this CPU's int8 matrix-multiply peak.

    python benchmarks/int8_efficiency.py BUNDLE [--runs 30] [--gemm 1024]

Counts the multiply-accumulates of every convolution in the bundle's ONNX (the onnxruntime INT8
target: MACs = output elements x input channels per group x kernel area, from ONNX shape
inference), times the bundle's bare ``InferenceSession.run`` and a large int8 GEMM
(``MatMulInteger``, uint8 x int8 -> int32, the kernel ONNX Runtime's quantized convolutions end
in), interleaved in one run with the same threads, and prints achieved GMAC/s of each and the
fraction. A low fraction says where the time goes is not the arithmetic: depthwise convolutions,
Q/DQ reformatting, resizes, memory traffic. Torch-free.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runtime.benchmark import compare, format_table  # noqa: E402


def conv_macs(model_path: Path) -> tuple[int, int]:
    """(total MACs, of which in depthwise convs) of one inference, from the graph's shapes."""
    import onnx

    model = onnx.shape_inference.infer_shapes(onnx.load(str(model_path)))
    graph = model.graph
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in [*graph.value_info, *graph.output, *graph.input]}
    shapes.update({t.name: list(t.dims) for t in graph.initializer})
    producer = {o: n for n in graph.node for o in n.output}
    total = depthwise = 0
    for node in graph.node:
        if node.op_type != "Conv":
            continue
        weight = node.input[1]
        if weight not in shapes and weight in producer:  # a Q/DQ graph: the weight comes through DequantizeLinear
            weight = producer[weight].input[0]
        out_shape, w_shape = shapes[node.output[0]], shapes[weight]
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        macs = int(np.prod(out_shape)) * int(np.prod(w_shape[1:]))
        total += macs
        if group > 1 and w_shape[1] == 1:
            depthwise += macs
    return total, depthwise


def gemm_session(size: int, threads: int, folder: Path):
    """An ONNX Runtime session of one uint8 x int8 MatMulInteger of size^3 MACs, and its input."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    b = numpy_helper.from_array(rng.integers(-127, 128, (size, size), dtype=np.int8), "b")
    node = helper.make_node("MatMulInteger", ["a", "b"], ["c"])
    graph = helper.make_graph([node], "gemm", [helper.make_tensor_value_info("a", TensorProto.UINT8, [size, size])],
                              [helper.make_tensor_value_info("c", TensorProto.INT32, [size, size])], [b])
    path = folder / "gemm.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session, {"a": rng.integers(0, 256, (size, size), dtype=np.uint8)}


def main() -> None:
    import runtime

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path, help="an onnxruntime INT8 bundle")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--gemm", type=int, default=1024, help="GEMM side (M = N = K)")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()

    with runtime.load(args.bundle, threads=args.threads) as seg, tempfile.TemporaryDirectory() as tmp:
        if seg.manifest.target != "onnxruntime":
            sys.exit(f"{args.bundle} is a {seg.manifest.target} bundle; give an onnxruntime INT8 bundle")
        macs, depthwise = conv_macs(seg.backend.model_path())
        shape = seg.manifest.input.shape
        image = np.random.default_rng(0).integers(0, 256, (shape[2], shape[3], 3), dtype=np.uint8)
        tensor = seg.prepare(image)[0][None]
        session, feed = seg.backend.session, {seg.manifest.input.name: tensor}
        gemm, gemm_feed = gemm_session(args.gemm, args.threads, Path(tmp))
        stats = compare({"bundle (session.run)": lambda _image: session.run(seg.manifest.outputs[:1], feed),
                         f"int8 GEMM {args.gemm}^3": lambda _image: gemm.run(None, gemm_feed)},
                        [image], runs=args.runs, warmup=args.warmup)
    print(format_table(stats))
    bundle_rate = macs / (stats[0].p50_ms / 1000) / 1e9
    peak = args.gemm**3 / (stats[1].p50_ms / 1000) / 1e9
    print(f"bundle {args.bundle.name}: {macs / 1e9:.2f} GMACs per frame at {shape[2]}x{shape[3]} "
          f"({100 * depthwise / macs:.1f} % in depthwise convs)")
    print(f"achieved {bundle_rate:.1f} GMAC/s; int8 GEMM peak here {peak:.1f} GMAC/s; "
          f"fraction {bundle_rate / peak:.3f}")


if __name__ == "__main__":
    main()
