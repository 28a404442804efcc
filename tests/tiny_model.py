"""A quickly trained tiny checkpoint for the export and report tests (test setup, not a product path).

MobileNetV2 DeepLabv3+ at width 0.35 trained for a few Adam steps on 64 px synthetic images: its
predictions are decisive enough that INT8-against-FP32 agreement and mIoU checks mean something,
and it trains in seconds.

It is trained in a fresh interpreter with torch and oneDNN held to their AVX2 kernels and two
threads, so that every x86 machine the suite runs on (AVX2-only or with AVX-512 VNNI) trains the
same weights: the INT8 tests then check one model everywhere, not a slightly different one per CPU.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# torch's and oneDNN's kernel choice, pinned to what every x86 CPU the suite runs on has.
SAME_KERNELS_EVERYWHERE = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "OMP_NUM_THREADS": "2"}


def train_tiny_checkpoint(path: Path, steps: int, data: str, dataset: str, width_mult: float = 0.35) -> Path:
    """Train on ``data`` (train split) in a subprocess (see above); returns the checkpoint's path."""
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); from tiny_model import train_here; "
            f"train_here({str(path)!r}, {steps}, {data!r}, {dataset!r}, {width_mult})")
    env = {**os.environ, **SAME_KERNELS_EVERYWHERE}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=600)
    return Path(path)


def train_here(path: str, steps: int, data: str, dataset: str, width_mult: float) -> None:
    """Train on ``data`` (train split) and save a checkpoint recording ``dataset`` as its data."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from edge_deeplab.checkpoint import Checkpoint, save_checkpoint
    from edge_deeplab.data.base import open_dataset
    from edge_deeplab.models import ModelConfig, build_model
    from runtime.preprocess import IMAGENET_MEAN, IMAGENET_STD, normalize

    torch.set_num_threads(2)
    torch.manual_seed(0)
    samples = open_dataset(data, "train")
    # The dense head: the INT8 tests' floors were set on it (the product default is separable).
    config = ModelConfig("mobilenetv2", len(samples.classes), 16, width_mult=width_mult, separable=False)
    model = build_model(config)
    images = torch.from_numpy(np.stack([normalize(s.image) for s in samples]))
    masks = torch.from_numpy(np.stack([s.mask for s in samples]).astype(np.int64))
    optim = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        batch = torch.randint(0, len(samples), (8,), generator=generator)
        loss = F.cross_entropy(model(images[batch]), masks[batch], ignore_index=255)
        optim.zero_grad()
        loss.backward()
        optim.step()
    model.eval()
    checkpoint = Checkpoint(config, model.state_dict(), list(samples.classes), [list(c) for c in samples.palette],
                            list(IMAGENET_MEAN), list(IMAGENET_STD), dataset=dataset)
    save_checkpoint(checkpoint, Path(path))
