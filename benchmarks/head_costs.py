"""What the dense and the atrous separable head cost: MACs, and training-step time side by side.

    python benchmarks/head_costs.py [--steps 10] [--crop 128] [--batch 8]

For MobileNetV2 DeepLabv3+ with dense 3x3 convs in ASPP and decoder (the default) and with atrous
separable ones (``--separable``): multiply-accumulates at 513x513 and output stride 16 (counted
with forward hooks on every convolution), then training steps of the default recipe's shape (batch
8, 128 px crops, SGD) alternated between the two models in one process, so that the ratio of their
step times is what "equal training time" means for a comparison (the separable model gets that
many more steps). Untrained weights: the cost does not depend on them.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
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
    import torch

    from edge_deeplab.models import ModelConfig, build_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per model (alternating)")
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()

    torch.manual_seed(0)
    models = {head: build_model(ModelConfig("mobilenetv2", 21, 16, separable=head == "separable"))
              for head in ("dense", "separable")}
    for head, model in models.items():
        print(f"{head:>9}: {count_macs(model, 513, 513) / 1e9:5.1f} GMACs at 513x513, OS 16 (21 classes)")
    images = torch.randn(args.batch, 3, args.crop, args.crop)
    masks = torch.randint(0, 21, (args.batch, args.crop, args.crop))
    optimizers = {h: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9) for h, m in models.items()}
    times: dict[str, list[float]] = {h: [] for h in models}
    for step in range(args.steps + 2):  # two untimed warm-up rounds
        for head, model in models.items():
            model.train()
            start = time.perf_counter()
            loss = torch.nn.functional.cross_entropy(model(images), masks)
            optimizers[head].zero_grad()
            loss.backward()
            optimizers[head].step()
            if step >= 2:
                times[head].append(time.perf_counter() - start)
    dense, separable = (statistics.median(times[h]) for h in ("dense", "separable"))
    print(f"training step (batch {args.batch}, {args.crop} px, median of {args.steps}, alternated): "
          f"dense {1000 * dense:.0f} ms, separable {1000 * separable:.0f} ms")
    print(f"separable / dense step time: {separable / dense:.2f} -> at equal training time the separable model "
          f"takes {dense / separable:.2f}x the steps")


if __name__ == "__main__":
    main()
