"""What quantization-aware fine-tuning wins back: PTQ and QAT drops against FP32, side by side.

    python benchmarks/qat_drop.py CKPT:STEPS [CKPT:STEPS ...] [--strides 8,16,32]
        [--targets onnxruntime,openvino] [--val-images 50] [--calib-images 100] [--runs 30]
        [--tensorrt-stride 16]

For each checkpoint, output stride and target it exports the post-training INT8 bundle and the
``--qat STEPS`` bundle (the real ``edge-deeplab export``, in a subprocess each, so every figure is
what a user gets), then prints per row: the FP32 graph's mIoU, the PTQ and QAT drops against it
in points, the QAT simulation's mIoU beside the bundle's (the issue holds them within 0.1 point),
the fine-tuning minutes, and the two bundles' p50 latency timed interleaved in one process
through the runtime (``runtime.segmenter``), with their ratio: QAT must not cost latency.

``--tensorrt-stride`` also exports the tensorrt INT8 bundle with and without QAT at that stride
and says whether the two ONNX graphs are equal but for their integer weights and float biases
(nodes, attributes, every scale and zero point): the placement TensorRT builds from is the PTQ
bundle's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runtime.benchmark import compare  # noqa: E402
from runtime.segmenter import load  # noqa: E402


def export(ckpt: str, target: str, stride: int, out: Path, args, qat: int | None) -> dict:
    """Run ``edge-deeplab export`` and return the bundle's manifest."""
    command = [sys.executable, "-m", "edge_deeplab.cli", "export", ckpt, "--target", target, "--precision", "int8",
               "--output-stride", str(stride), "--out", str(out), "--val-images", str(args.val_images),
               "--calib-images", str(args.calib_images)]
    if qat:
        command += ["--qat", str(qat)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"export failed: {' '.join(command)}\n{done.stderr[-2000:]}")
    return json.loads((out / "model.json").read_text())


def latency(ptq: Path, qat: Path, runs: int) -> tuple[float, float]:
    """p50 ms of the two bundles, interleaved round-robin on the same images."""
    first = load(ptq)
    height, width = first.manifest.input.shape[2:]
    images = [np.random.default_rng(i).integers(0, 256, (height, width, 3), dtype=np.uint8) for i in range(4)]
    stats = compare({"ptq": first, "qat": load(qat)}, images, runs=runs, warmup=3)
    return stats[0].p50_ms, stats[1].p50_ms


def same_graph_but_weights(ptq: Path, qat: Path) -> tuple[bool, int]:
    """Whether two Q/DQ graphs are equal but for integer weights and float biases; the number of
    initializers whose values differ."""
    import onnx
    from onnx import numpy_helper

    a, b = onnx.load(str(ptq / "model.onnx")).graph, onnx.load(str(qat / "model.onnx")).graph
    if [n.SerializeToString() for n in a.node] != [n.SerializeToString() for n in b.node]:
        return False, -1
    weights_a = {i.name: numpy_helper.to_array(i) for i in a.initializer}
    weights_b = {i.name: numpy_helper.to_array(i) for i in b.initializer}
    if weights_a.keys() != weights_b.keys():
        return False, -1
    trained_inputs = {n.input[i] for n in a.node if n.op_type in ("Conv", "DequantizeLinear") for i in
                      ((1, 2) if n.op_type == "Conv" else (0,)) if len(n.input) > i}
    changed = [name for name in weights_a if not np.array_equal(weights_a[name], weights_b[name])]
    return all(name in trained_inputs for name in changed), len(changed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="CHECKPOINT:QAT_STEPS")
    parser.add_argument("--strides", default="8,16,32")
    parser.add_argument("--targets", default="onnxruntime,openvino")
    parser.add_argument("--val-images", type=int, default=50)
    parser.add_argument("--calib-images", type=int, default=100)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--tensorrt-stride", type=int, default=None)
    args = parser.parse_args()
    header = ("model", "OS", "target", "FP32", "PTQ drop", "QAT drop", "sim-bundle", "QAT min", "p50 PTQ", "p50 QAT",
              "QAT/PTQ")
    print(" | ".join(header), flush=True)
    with tempfile.TemporaryDirectory(prefix="qat-drop-") as work:
        for spec in args.models:
            ckpt, steps = spec.rsplit(":", 1)
            for stride in map(int, args.strides.split(",")):
                for target in args.targets.split(","):
                    base = Path(work) / f"{Path(ckpt).stem}-{stride}-{target}"
                    export(ckpt, target, stride, base.with_name(base.name + "-ptq"), args, None)
                    manifest = export(ckpt, target, stride, base.with_name(base.name + "-qat"), args, int(steps))
                    qat = manifest["calibration"]["qat"]
                    fp32 = manifest["verification"]["miou"]["fp32"]
                    p50_ptq, p50_qat = latency(base.with_name(base.name + "-ptq"), base.with_name(base.name + "-qat"),
                                               args.runs)
                    row = (Path(ckpt).stem, stride, target, f"{100 * fp32:.2f}", f"{100 * (fp32 - qat['ptq_miou']):.2f}",
                           f"{100 * (fp32 - qat['qat_miou']):.2f}",
                           f"{100 * (qat['simulated_miou'] - qat['qat_miou']):+.2f}", f"{qat['seconds'] / 60:.1f}",
                           f"{p50_ptq:.1f}", f"{p50_qat:.1f}", f"{p50_qat / p50_ptq:.2f}")
                    print(" | ".join(map(str, row)), flush=True)
            if args.tensorrt_stride:
                base = Path(work) / f"{Path(ckpt).stem}-trt"
                export(ckpt, "tensorrt", args.tensorrt_stride, base.with_name(base.name + "-ptq"), args, None)
                export(ckpt, "tensorrt", args.tensorrt_stride, base.with_name(base.name + "-qat"), args, int(steps))
                equal, changed = same_graph_but_weights(base.with_name(base.name + "-ptq"),
                                                        base.with_name(base.name + "-qat"))
                print(f"{Path(ckpt).stem} tensorrt OS{args.tensorrt_stride}: graph equal to the PTQ bundle's but for "
                      f"weights: {equal} ({changed} weight/bias initializers changed)", flush=True)


if __name__ == "__main__":
    main()
