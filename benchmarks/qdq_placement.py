"""TensorRT Q/DQ placement: ours against NVIDIA Model Optimizer's on the same FP32 ONNX, side by side.

    PYTHONPATH=. python benchmarks/qdq_placement.py [CHECKPOINT] [--backbones mobilenetv2 resnet50 xception65]

For each model the FP32 ONNX is exported once, then quantized twice with the same calibration
images: by :func:`exporters.qdq.quantize` (flavour ``tensorrt``, what ``export --target tensorrt
--precision int8`` writes) and by ``modelopt.onnx.quantization.quantize`` (int8, max calibration,
float32 kept as the high precision so the two graphs differ only in Q/DQ). The table counts, per
op type, the inputs that read a DequantizeLinear output, and the argmax agreement of each INT8
model with FP32 in ONNX Runtime on the calibration images.

With a CHECKPOINT its trained weights are used; without one, each backbone is built with random
weights (placement depends on the graph, not on the weights). Model Optimizer is not a dependency
of this project: install it to compare (``pip install nvidia-modelopt`` and its ONNX helpers,
e.g. ``onnx-graphsurgeon polygraphy onnxslim onnxconverter-common lief cppimport``); without it
only our placement is printed. It runs in a subprocess because it patches ONNX Runtime's
quantizer in place, which would change our run if it shared the process.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runtime.telemetry import disable_telemetry  # noqa: E402

disable_telemetry()

MODELOPT = """
import sys
import numpy as np
from modelopt.onnx.quantization import quantize
quantize(sys.argv[1], quantize_mode="int8", calibration_data=np.load(sys.argv[2]), calibration_method="max",
         calibration_eps=["cpu"], high_precision_dtype="fp32", output_path=sys.argv[3], log_level="ERROR")
"""


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?", help="an edge-deeplab checkpoint (default: random weights)")
    parser.add_argument("--backbones", nargs="+", default=["mobilenetv2", "resnet50", "xception65"],
                        help="backbones to build without a checkpoint")
    parser.add_argument("--output-stride", type=int, default=16, choices=(8, 16, 32))
    parser.add_argument("--size", type=int, default=65, help="square input size (default 65)")
    parser.add_argument("--calib-data", default="synthetic:size=64,n=16", help="calibration dataset (train split)")
    parser.add_argument("--calib-images", type=int, default=8)
    return parser.parse_args(argv)


def models(args: argparse.Namespace):
    """(name, eval-mode torch model, mean, std) for the checkpoint or each backbone."""
    import torch

    from edge_deeplab.checkpoint import load_checkpoint
    from edge_deeplab.models import ModelConfig, build_model
    from runtime.preprocess import IMAGENET_MEAN, IMAGENET_STD

    if args.checkpoint:
        ckpt = load_checkpoint(args.checkpoint)
        yield Path(args.checkpoint).name, ckpt.build_model(args.output_stride), ckpt.mean, ckpt.std
        return
    for backbone in args.backbones:
        torch.manual_seed(0)
        width = 0.35 if backbone == "mobilenetv2" else 1.0  # small enough to calibrate in seconds
        model = build_model(ModelConfig(backbone, 7, args.output_stride, width_mult=width)).eval()
        yield f"{backbone} (random weights)", model, IMAGENET_MEAN, IMAGENET_STD


def run_modelopt(fp32: Path, arrays: list[np.ndarray], work: Path) -> tuple[Path | None, str]:
    """Model Optimizer's INT8 model of ``fp32``, or None and the reason it could not run."""
    data, out = work / "calibration.npy", work / "modelopt.onnx"
    np.save(data, np.concatenate(arrays))
    result = subprocess.run([sys.executable, "-c", MODELOPT, str(fp32), str(data), str(out)],
                            capture_output=True, text=True)
    if result.returncode != 0 or not out.is_file():
        lines = [line for line in (result.stderr or result.stdout).strip().splitlines() if line.strip()]
        return None, lines[-1] if lines else f"exit status {result.returncode}"
    return out, ""


def main(argv=None) -> int:
    args = parse_args(argv)
    import onnx

    from calibration.inputs import InputSpecLite, prepare_samples
    from calibration.ranges import compute_ranges
    from edge_deeplab.data.base import open_dataset
    from exporters import qdq
    from exporters.onnx import export_onnx
    from exporters.verify import compare, ort_runner

    dataset = open_dataset(args.calib_data, "train")
    count = min(args.calib_images, len(dataset))
    with tempfile.TemporaryDirectory(prefix="edge-deeplab-qdq-") as tmp:
        for index, (name, model, mean, std) in enumerate(models(args)):
            work = Path(tmp) / str(index)
            work.mkdir()
            spec = InputSpecLite(args.size, args.size, "float32", tuple(mean), tuple(std))
            arrays = [item.array for item in prepare_samples(dataset, range(count), spec)]
            fp32 = export_onnx(model, work / "fp32.onnx", args.size, args.size)
            ranges = compute_ranges(fp32, "image", arrays, "minmax", f"qdq-placement-{index}", work / "cache")
            ours = qdq.quantize(fp32, work / "ours.onnx", ranges, "tensorrt")
            theirs, why = run_modelopt(fp32, arrays, work)
            ops = [n.op_type for n in onnx.load(str(fp32)).graph.node]
            placements = {"ours": qdq.qdq_fed_inputs(ours)}
            if theirs is not None:
                placements["modelopt"] = qdq.qdq_fed_inputs(theirs)
            reference = [ort_runner(fp32)(a) for a in arrays]
            agreement = {label: compare(reference, [ort_runner(path)(a) for a in arrays]).argmax_agreement
                         for label, path in (("ours", ours), ("modelopt", theirs)) if path is not None}
            print(f"\n{name}: OS {args.output_stride}, {args.size}x{args.size}, {count} calibration images "
                  f"from {args.calib_data}")
            header = ["inputs read through DQ", "nodes of type", *placements]
            rows = []
            for key in sorted(set().union(*placements.values())):
                rows.append([key, str(ops.count(key.split()[0])), *(str(p.get(key, 0)) for p in placements.values())])
            rows.append(["argmax agreement vs FP32", "", *(f"{agreement[label]:.4f}" for label in placements)])
            widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
            for row in [header, ["-" * w for w in widths], *rows]:
                print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
            if theirs is None:
                print(f"Model Optimizer did not run: {why}")
            else:
                same = placements["ours"] == placements["modelopt"]
                print("same placement" if same else "placements DIFFER")
    return 0


if __name__ == "__main__":
    sys.exit(main())
