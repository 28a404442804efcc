"""The training loop of quantization-aware fine-tuning, one for every INT8 target.

What differs between targets is the forward pass (where the fake quantization sits and how it
rounds: :mod:`exporters.qdq_torch` for the Q/DQ targets, NNCF's torch model for OpenVINO); the
loop is the same: the checkpoint's augmented training batches, cross-entropy, Adam from a small
rate decaying to zero on the training recipe's poly schedule. Adam, not the recipe's SGD: the
Q/DQ graphs train convolutions with BatchNorm folded in, where a channel's weight scale is its
BatchNorm gain over its deviation, so one SGD rate is far too large for some channels and too small
for others (on the default model SGD diverged at 1e-3 and did nothing at 1e-4 in 40 steps; Adam's
per-weight step at 1e-4 gained 1.5 mIoU points in 60). No weight decay: in a few hundred steps it
only pulls weights off the grid they are being fitted to. The scales are frozen (they are not
parameters here), as NVIDIA's Model Optimizer recommends after calibration: the weights adapt to
the quantization grid, not the grid to the weights.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

from exporters.request import QatInput
from runtime.errors import EdgeDeeplabError
from runtime.progress import progress_bar

POLY_POWER = 0.9  # the training recipe's decay (edge_deeplab.config.TrainConfig.poly_power)


@dataclass
class FineTuneResult:
    """What the fine-tune did, for the manifest and the export's log."""

    steps: int
    lr: float
    seconds: float
    first_loss: float
    last_loss: float  # smoothed over the last steps (0.9 / 0.1)

    def as_dict(self) -> dict:
        return {"steps": self.steps, "lr": self.lr, "seconds": round(self.seconds, 1),
                "first_loss": round(self.first_loss, 4), "last_loss": round(self.last_loss, 4),
                "optimizer": f"Adam, poly {POLY_POWER} decay, no weight decay"}


def fine_tune(forward: Callable, parameters: Sequence, qat: QatInput, ignore_index: int,
              progress: bool = True) -> FineTuneResult:
    """Train ``parameters`` through ``forward`` (normalized images -> logits) for ``qat.steps`` steps.

    Ctrl-C (and SIGTERM) propagate: the export that called this writes nothing.
    """
    import torch

    optimizer = torch.optim.Adam(list(parameters), lr=qat.lr)
    criterion = torch.nn.CrossEntropyLoss(ignore_index=ignore_index)
    first = smooth = None
    start = time.perf_counter()
    with progress_bar(total=qat.steps, desc="QAT fine-tuning", unit="step", enabled=progress) as bar:
        for step, (images, masks) in enumerate(qat.batches(qat.steps)):
            for group in optimizer.param_groups:
                group["lr"] = qat.lr * (1 - step / qat.steps) ** POLY_POWER
            loss = criterion(forward(images), masks)
            value = loss.item()
            if not math.isfinite(value):
                raise EdgeDeeplabError(f"the QAT loss became {value} at step {step}; lower --qat-lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            first = value if first is None else first
            smooth = value if smooth is None else 0.9 * smooth + 0.1 * value
            bar.update(1)
            bar.set_postfix(loss=f"{smooth:.3f}")
    if first is None:
        raise EdgeDeeplabError("the QAT training data yielded no batch")
    return FineTuneResult(qat.steps, qat.lr, time.perf_counter() - start, first, smooth)
