"""What the host still pays per frame once the graph returns the class mask.

    python benchmarks/mask_bundles.py [--runs 30] [--warmup 3]

At two real sizes (VOC: 21 classes at 513x513; Cityscapes-shaped: 19 classes at 512x1024) it
builds, from one untrained MobileNetV2 DeepLabv3+ with the default (separable) head (timing does
not depend on the weights), two ONNX Runtime INT8 bundles that differ only in their end: ``mask`` (ArgMax inside the graph, uint8
out) and ``logits`` (the float logits, argmax on the host, as bundles were before). Then, in one
process and interleaved round-robin:

- ``predict`` on the mask bundle against the bare ``InferenceSession.run`` on the same bundle and
  an already prepared input: what the runtime adds around the network (aim: at most 1.03x);
- ``predict`` on the logits bundle: what the host argmax and the logits copy used to cost.

Both bundles are quantized with the same ranges (calibrated on random images), so the networks
are the same up to their last op. Needs the ``export`` extra (torch builds the model).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import runtime  # noqa: E402
from runtime.benchmark import compare, format_table  # noqa: E402

SIZES = {"voc": (21, 513, 513), "cityscapes-half": (19, 512, 1024)}


def build_bundle(folder: Path, num_classes: int, height: int, width: int, outputs: str, calib: list) -> Path:
    """An INT8 onnxruntime bundle of an untrained model, ``outputs`` 'mask' or 'logits'."""
    import torch

    from calibration.ranges import compute_ranges
    from edge_deeplab.models import ModelConfig, build_model
    from exporters import qdq
    from exporters.onnx import INPUT_NAME, export_onnx
    from runtime.manifest import OUTPUT_CHOICES, InputSpec, Manifest, write_manifest
    from runtime.preprocess import IMAGENET_MEAN, IMAGENET_STD

    torch.manual_seed(0)
    model = build_model(ModelConfig("mobilenetv2", num_classes, 16, separable=True)).eval()  # the default head
    bundle = folder / f"{num_classes}c-{height}x{width}-{outputs}"
    bundle.mkdir(parents=True)
    fp32 = export_onnx(model, folder / f"{bundle.name}-fp32.onnx", height, width, uint8_input=True,
                       outputs=OUTPUT_CHOICES[outputs])
    ranges = compute_ranges(fp32, INPUT_NAME, calib, "minmax", f"bench-{num_classes}-{height}x{width}",
                            folder / "ranges")
    qdq.quantize(fp32, bundle / "model.onnx", ranges, "cpu")
    write_manifest(bundle, Manifest(
        target="onnxruntime", precision="int8", files={"model": "model.onnx"},
        input=InputSpec(INPUT_NAME, [1, 3, height, width], "uint8"), classes=[f"c{i}" for i in range(num_classes)],
        palette=[[i, i, i] for i in range(num_classes)], mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD),
        outputs=list(OUTPUT_CHOICES[outputs]), model={"backbone": "mobilenetv2", "output_stride": 16}))
    return bundle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="edge-deeplab-bench-") as tmp:
        for name, (classes, height, width) in SIZES.items():
            images = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(4)]
            calib = [np.ascontiguousarray(i.transpose(2, 0, 1))[None] for i in images]
            mask_dir = build_bundle(Path(tmp), classes, height, width, "mask", calib)
            logits_dir = build_bundle(Path(tmp), classes, height, width, "logits", calib)
            with runtime.load(mask_dir, threads=args.threads) as mask, \
                    runtime.load(logits_dir, threads=args.threads) as logits:
                tensor = mask.prepare(images[0])[0][None]
                session, feed = mask.backend.session, {mask.manifest.input.name: tensor}
                stats = compare({"predict, mask bundle": mask.predict,
                                 "session.run, mask bundle": lambda _image: session.run(["mask"], feed),
                                 "predict, logits bundle (host argmax)": logits.predict},
                                images[:1], runs=args.runs, warmup=args.warmup)
            print(f"\n== {name}: {classes} classes at {height}x{width}, onnxruntime INT8")
            print(format_table(stats))
            predict, bare, old = (s.p50_ms for s in stats)
            print(f"predict / bare session call (mask bundle, p50): {predict / bare:.3f} (aim <= 1.03)")
            print(f"mask bundle / logits bundle with host argmax (predict, p50): {predict / old:.3f}")


if __name__ == "__main__":
    main()
