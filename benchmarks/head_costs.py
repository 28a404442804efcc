"""What the dense and the atrous separable head cost in multiply-accumulates.

    python benchmarks/head_costs.py [--size 513]

MobileNetV2 DeepLabv3+ with dense 3x3 convs in ASPP and decoder (``--no-separable``) and with
atrous separable ones (the default): multiply-accumulates of every convolution at SIZExSIZE and
output stride 16, counted with forward hooks from the shapes the forward pass produces. A count
is the same on every machine; what a training step costs is not, and
``benchmarks/train_step.py`` measures it through the training loop's own objects (the separable /
dense ratio on each ISA setting among its figures).

This script used to time training steps too, on random tensors outside the training code, and
its steps took 8x as long as the training loop's on an AVX2-only CPU (issue 19). On the
development machine, with OpenMP threads waiting passively, its steps and the loop's agreed within
the noise; the one cause found that slows the same step 8-10x is OpenMP's default of threads that
spin while they wait, with other work on the 2 cores, which the README then told users to avoid
for training only. The command line and the benchmarks now wait passively
(``edge_deeplab/openmp.py``), and step timing lives in one place.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def count_macs(model, height: int, width: int) -> int:
    """Multiply-accumulates of every Conv2d for one image, from the shapes the forward pass produces."""
    import torch

    total = 0

    def hook(module, _inputs, output) -> None:
        nonlocal total
        kh, kw = module.kernel_size
        total += output.numel() * (module.in_channels // module.groups) * kh * kw

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, height, width))
    for handle in handles:
        handle.remove()
    return total


def main() -> None:
    from edge_deeplab.openmp import prefer_passive_wait

    prefer_passive_wait()
    from edge_deeplab.models import ModelConfig, build_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=513, help="square input size")
    args = parser.parse_args()
    for head in ("dense", "separable"):
        model = build_model(ModelConfig("mobilenetv2", 21, 16, separable=head == "separable"))
        print(f"{head:>9}: {count_macs(model, args.size, args.size) / 1e9:5.1f} GMACs at {args.size}x{args.size}, "
              "OS 16 (21 classes)")


if __name__ == "__main__":
    main()
