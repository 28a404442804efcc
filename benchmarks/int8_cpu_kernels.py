"""INT8 on CPUs with and without VNNI: what each weight scheme scores and costs, side by side.

    python benchmarks/int8_cpu_kernels.py CHECKPOINT [--val-images 30] [--calib-images 32] [--runs 20]
        [--emulate-avx2]

From one checkpoint, on its own dataset at the size it was evaluated at, it builds the FP32 ONNX
graph and, with the same calibration ranges:

- ``ort u8s8 8-bit``: ONNX Runtime INT8 as bundles were before (full-range int8 weights);
- ``ort u8s8 7-bit``: the default now (``reduce_range``: |w| <= 64, exact on every CPU);
- ``ort u8u8``: uint8 weights (another kernel family, no VPMADDUBSW);
- ``ov nncf first_layer_only`` / ``ov nncf enable``: OpenVINO INT8 with NNCF's overflow fix on the
  first convolution only (NNCF's default) or on all of them;

then scores each (mIoU on the validation images) on this CPU, times them all interleaved
round-robin (p50 and the ratio to the first row), and prints the worst 16-bit pair sum of each
ONNX Runtime graph (:mod:`exporters.saturation`).

``--emulate-avx2`` scores the same files again under ``qemu-x86_64 -cpu Haswell-v4`` (an AVX2 CPU
without AVX-512 or VNNI; Debian's ``qemu-user``): ONNX Runtime and OpenVINO then pick their AVX2
kernels, so the column is what an AVX2-only machine computes (slow: minutes; only mIoU is kept
from it, emulated time means nothing). The conv-level check that ``exporters.saturation``'s
emulation matches those kernels bit for bit runs first.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

QEMU_CPU = "Haswell-v4"  # AVX2 + FMA, no AVX-512, no VNNI


def build(checkpoint: Path, work: Path, val_images: int, calib_images: int) -> None:
    """The FP32 graph, the five INT8 variants and the validation images, into ``work``."""
    import logging

    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    from calibration.inputs import InputSpecLite, prepare_samples
    from calibration.ranges import _ort_method, compute_ranges
    from edge_deeplab.checkpoint import load_checkpoint
    from edge_deeplab.data.base import open_dataset
    from exporters import openvino as ovx
    from exporters import qdq
    from exporters.onnx import INPUT_NAME, export_onnx

    ckpt = load_checkpoint(checkpoint)
    val = open_dataset(ckpt.dataset or "synthetic", "val")
    train = open_dataset(ckpt.dataset or "synthetic", "train")
    height, width = val[0].image.shape[:2]
    spec = InputSpecLite(height, width, "uint8", tuple(ckpt.mean), tuple(ckpt.std))
    fp32 = export_onnx(ckpt.build_model().eval(), work / "fp32.onnx", height, width, uint8_input=True,
                       mean=ckpt.mean, std=ckpt.std)
    calib = prepare_samples(train, range(min(calib_images, len(train))), spec, progress=False)
    ranges = compute_ranges(fp32, INPUT_NAME, [c.array for c in calib], "minmax", f"bench-{checkpoint.stem}",
                            work / "ranges", progress=False)
    qdq.quantize(fp32, work / "ort u8s8 7-bit.onnx", ranges, "cpu")  # the product's path
    logging.getLogger().setLevel(logging.ERROR)  # quantize_static's "consider pre-processing" advice
    common = dict(quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                  calibrate_method=_ort_method(ranges.method), calibration_cache_path=ranges.path)
    quantize_static(str(fp32), str(work / "ort u8s8 8-bit.onnx"), None, reduce_range=False,
                    weight_type=QuantType.QInt8, extra_options={"WeightSymmetric": True}, **common)
    quantize_static(str(fp32), str(work / "ort u8u8.onnx"), None, reduce_range=False,
                    weight_type=QuantType.QUInt8, extra_options={"WeightSymmetric": True}, **common)
    for fix in ("first_layer_only", "enable"):
        model, _ = ovx.quantize_int8(ovx.read_onnx(fp32), calib, overflow_fix=fix)
        ovx.save_ir(model, work, fp16=False)
        for suffix in (".xml", ".bin"):
            (work / f"model{suffix}").rename(work / f"ov nncf {fix}{suffix}")
    samples = [val[i] for i in range(min(val_images, len(val)))]
    np.savez(work / "val.npz", images=np.stack([s.image for s in samples]), masks=np.stack([s.mask for s in samples]),
             classes=np.array(val.classes), ignore_index=val.ignore_index, mean=ckpt.mean, std=ckpt.std)


def sessions(work: Path) -> dict[str, object]:
    """Name -> callable(uint8 1x3xHxW) -> mask, fused kernels, for every model file in ``work``."""
    import onnxruntime as ort

    from runtime.telemetry import disable_telemetry

    disable_telemetry()
    calls: dict[str, object] = {}
    for path in sorted(work.glob("*.onnx")):
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        calls[path.stem] = (lambda s: lambda x: s.run(None, {s.get_inputs()[0].name: x})[0][0])(session)
    if list(work.glob("ov *.xml")):
        import openvino as ov

        core = ov.Core()
        for path in sorted(work.glob("ov *.xml")):
            compiled = core.compile_model(str(path), "CPU", {"PERFORMANCE_HINT": "LATENCY",
                                                             "INFERENCE_PRECISION_HINT": "f32"})
            request = compiled.create_infer_request()
            calls[path.stem] = (lambda r: lambda x: np.asarray(r.infer([x])[0])[0])(request)
    return calls


def score(work: Path) -> dict[str, float]:
    """mIoU (points) of every model on the saved validation images: torch-free, runs under qemu."""
    from edge_deeplab.metrics import SegmentationMetrics

    data = np.load(work / "val.npz")
    inputs = [np.ascontiguousarray(image.transpose(2, 0, 1))[None] for image in data["images"]]
    out = {}
    for name, run in sessions(work).items():
        metrics = SegmentationMetrics(list(data["classes"]), int(data["ignore_index"]), None)
        for x, mask in zip(inputs, data["masks"]):
            metrics.update(np.asarray(run(x)), mask)
        out[name] = round(100 * metrics.summary()["miou"], 2)
        print(f"  scored {name}: {out[name]}", file=sys.stderr, flush=True)
    return out


def emulated(work: Path, *args: str) -> subprocess.CompletedProcess:
    """This script again, under qemu-user as an AVX2-only CPU."""
    qemu = shutil.which("qemu-x86_64")
    if qemu is None:
        sys.exit("--emulate-avx2 needs qemu-x86_64 (apt install qemu-user)")
    site = [p for p in sys.path if p.endswith("site-packages")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *site])}
    return subprocess.run([qemu, "-cpu", QEMU_CPU, os.path.realpath(sys.executable), __file__, *args],
                          env=env, capture_output=True, text=True)


def conv_check() -> float:
    """One QDQ conv with full-range weights: the share of outputs ONNX Runtime computes as the
    pair-saturating emulation does (1.0 on an AVX2-only CPU, near 0 with VNNI)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from exporters.saturation import emulate_pairwise, im2col_nhwc, weights_as_gemm

    rng = np.random.default_rng(0)
    xq = rng.integers(150, 256, (1, 6, 6, 6)).astype(np.uint8)
    wq = rng.choice([-127, -100, 90, 127], (4, 6, 3, 3)).astype(np.int8)
    sx, sw = 0.02, 0.01
    exact = im2col_nhwc(xq, (3, 3), pad=1).astype(np.int64) @ weights_as_gemm(wq).astype(np.int64)
    so = float(np.abs(exact).max()) * sx * sw / 120.0

    def requantize(acc):
        return np.clip(np.round(acc * sx * sw / so) + 128, 0, 255).astype(np.uint8)

    const = numpy_helper.from_array
    nodes = [helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xd"]),
             helper.make_node("DequantizeLinear", ["wq", "sw", "zw"], ["wd"], axis=0),
             helper.make_node("Conv", ["xd", "wd"], ["y"], pads=[1, 1, 1, 1]),
             helper.make_node("QuantizeLinear", ["y", "so", "zo"], ["yq"])]
    graph = helper.make_graph(nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6, 6, 6])],
                              [helper.make_tensor_value_info("yq", TensorProto.UINT8, [1, 4, 6, 6])],
                              [const(np.float32(sx), "sx"), const(np.uint8(0), "zx"), const(wq, "wq"),
                               const(np.full(4, sw, np.float32), "sw"), const(np.zeros(4, np.int8), "zw"),
                               const(np.float32(so), "so"), const(np.uint8(128), "zo")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {"x": xq.astype(np.float32) * sx})[0][0].transpose(1, 2, 0).reshape(-1, 4)
    return float((got == requantize(emulate_pairwise(im2col_nhwc(xq, (3, 3), pad=1), weights_as_gemm(wq)))).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, nargs="?")
    parser.add_argument("--val-images", type=int, default=30)
    parser.add_argument("--calib-images", type=int, default=32)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--emulate-avx2", action="store_true")
    parser.add_argument("--score-only", type=Path, help=argparse.SUPPRESS)  # the emulated run
    parser.add_argument("--conv-check", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.conv_check:
        print(json.dumps({"conv_matches_pair_emulation": conv_check()}))
        return
    if args.score_only:
        print(json.dumps(score(args.score_only)))
        return
    if args.checkpoint is None:
        parser.error("CHECKPOINT is required")
    from edge_deeplab.report.machine import machine_info
    from exporters.saturation import layer_bounds
    from runtime.benchmark import compare

    machine = machine_info()
    print(f"{machine['cpu']}, {machine['cores']} cores; INT8: {machine['int8_kernels']}")
    with tempfile.TemporaryDirectory(prefix="int8-cpu-") as tmp:
        work = Path(tmp)
        build(args.checkpoint, work, args.val_images, args.calib_images)
        here = score(work)
        avx2: dict[str, float] = {}
        if args.emulate_avx2:
            check = emulated(work, "--conv-check")
            print(f"qemu {QEMU_CPU}: one full-range conv computed as the pair-saturating emulation: "
                  f"{check.stdout.strip() or check.stderr.strip()[-300:]}; natively: {conv_check():.3f}")
            result = emulated(work, "--score-only", str(work))
            if result.returncode:
                sys.exit(f"emulated scoring failed: {result.stderr.strip()[-500:]}")
            avx2 = json.loads(result.stdout.strip().splitlines()[-1])
        data = np.load(work / "val.npz")
        inputs = [np.ascontiguousarray(image.transpose(2, 0, 1))[None] for image in data["images"][:4]]
        stats = {s.name: s for s in compare(sessions(work), inputs, runs=args.runs, warmup=3)}
        worst = {p.stem: max((b.worst_pair for b in layer_bounds(p)), default=0) for p in work.glob("ort *.onnx")}
    base = stats["ort u8s8 8-bit"].p50_ms
    print(f"\n{len(data['images'])} validation images, {data['images'].shape[1]}x{data['images'].shape[2]}; "
          f"p50 of {args.runs} interleaved runs; mIoU in points")
    header = f"{'model':<26}{'worst pair':>11}{'mIoU here':>11}{'mIoU AVX2':>11}{'p50 ms':>9}{'x 8-bit':>9}"
    print(header + "\n" + "-" * len(header))
    for name in sorted(here, key=lambda n: (n.startswith("ov"), n != "fp32", n)):
        pair = f"{worst[name]:,}" if "u8s8" in name else "-"  # u8u8 and OpenVINO: no u8 x s8 pairs to bound
        emulated_miou = f"{avx2[name]:.2f}" if name in avx2 else "-"
        print(f"{name:<26}{pair:>11}{here[name]:>11.2f}{emulated_miou:>11}{stats[name].p50_ms:>9.2f}"
              f"{stats[name].p50_ms / base:>9.2f}")


if __name__ == "__main__":
    main()
