"""Training: SGD with momentum and a poly schedule, validation, atomic checkpoints, exact resume.

Run it through the CLI (``edge-deeplab train``) or, for several GPUs or processes, under torchrun
(``torchrun --nproc-per-node N -m edge_deeplab.train --config cfg.yaml``): with ``WORLD_SIZE`` > 1
the model is wrapped in DistributedDataParallel (SyncBatchNorm on CUDA), each process reads its own
slice of every global batch, and only rank 0 validates, logs and writes checkpoints.

Resume is exact: which images form batch ``k`` and how they are augmented is a pure function of
(seed, k), and the checkpoint holds the optimizer, the step and the torch RNG state, so a run that
was stopped and resumed ends with the same weights as one that was not.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from edge_deeplab.config import TrainConfig
from edge_deeplab.run_folder import prepare_out_dir, restore, save_checkpoint_as
from runtime.errors import EdgeDeeplabError
from runtime.files import atomic_write_text
from runtime.progress import progress_bar
from runtime.signals import leave_stop_to_parent


@dataclass
class DistInfo:
    """Where this process sits in a (possibly single-process) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def batch_indices(step: int, batch_size: int, num_samples: int, seed: int) -> np.ndarray:
    """The dataset indices of global batch ``step``: epoch-wise seeded permutations, drop-last.

    A pure function of its arguments, which is what makes resume exact and lets every process of
    a distributed run agree on the batch without communicating.
    """
    per_epoch = num_samples // batch_size
    epoch, k = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(num_samples)
    return order[k * batch_size : (k + 1) * batch_size]


class StepBatchSampler:
    """Yields this rank's share of each global batch from ``start`` to ``total`` steps."""

    def __init__(self, num_samples: int, batch_size: int, seed: int, start: int, total: int, dist: DistInfo):
        self.num_samples, self.batch_size, self.seed = num_samples, batch_size, seed
        self.start, self.total, self.dist = start, total, dist

    def __len__(self) -> int:
        return self.total - self.start

    def __iter__(self) -> Iterator[list[int]]:
        per_epoch = self.num_samples // self.batch_size
        for step in range(self.start, self.total):
            batch = batch_indices(step, self.batch_size, self.num_samples, self.seed)
            share = batch[self.dist.rank :: self.dist.world_size]
            yield [(int(i), step // per_epoch) for i in share]


def poly_lr(base_lr: float, step: int, total: int, power: float) -> float:
    return base_lr * (1 - step / total) ** power


def learning_rate(config: TrainConfig, step: int, total: int) -> float:
    """The rate for ``step``: a linear ramp over ``config.warmup_steps`` (at most a quarter of the
    run, so a short run is not all ramp), then poly decay to zero at ``total``.

    The ramp lets a from-scratch model take a high base rate without diverging in its first steps,
    while BatchNorm statistics and the classifier settle.
    """
    warmup = min(config.warmup_steps, total // 4)
    if step < warmup:
        return config.lr * (step + 1) / warmup
    return poly_lr(config.lr, step - warmup, total - warmup, config.poly_power)


def _init_distributed(device: str) -> DistInfo:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    import torch.distributed as torch_dist

    backend = "nccl" if device.startswith("cuda") else "gloo"
    torch_dist.init_process_group(backend=backend)
    return DistInfo(rank=torch_dist.get_rank(), world_size=world, local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def _resolve_device(config: TrainConfig, dist: DistInfo):
    import torch

    from edge_deeplab.devices import torch_device

    device = torch_device(config.device)
    if device.type == "cuda":
        if dist.world_size > 1:  # torchrun: each process its own GPU
            device = torch_device(f"cuda:{dist.local_rank}")
        torch.cuda.set_device(device.index)
    return device


def _no_decay_parameters(model) -> set[int]:
    """ids of the parameters trained without weight decay: biases, BatchNorm and depthwise convs.

    Depthwise kernels have 9 weights per channel; decaying them as hard as dense kernels (with
    hundreds per output channel) shrinks them toward zero and costs accuracy, so the usual practice
    (MobileNet, the DeepLab reference recipes) leaves them undecayed. That matters most for the
    separable head, where every 3x3 conv of ASPP and decoder is depthwise.
    """
    import torch

    skip = {id(p) for p in model.parameters() if p.ndim <= 1}
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d) and module.groups > 1 and module.groups == module.in_channels:
            skip.add(id(module.weight))
    return skip


def _make_optimizer(model, config: TrainConfig):
    """SGD with momentum; no weight decay on biases, BatchNorm and depthwise convs (the usual practice)."""
    import torch

    decay, no_decay = [], []
    skip = _no_decay_parameters(model)
    for param in model.parameters():
        (no_decay if id(param) in skip else decay).append(param)
    return torch.optim.SGD(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
        momentum=config.momentum,
    )


@dataclass
class TrainData:
    """The training and validation sets, and the number of steps the run takes."""

    train: Any
    val: Any
    total: int


@dataclass
class Run:
    """A training run in progress: the model, its optimizer, and what a checkpoint records."""

    config: TrainConfig
    data: TrainData
    out: Path
    dist: DistInfo
    device: Any
    model: Any
    net: Any  # the model, or its DistributedDataParallel wrapper
    optimizer: Any
    scaler: Any
    use_amp: bool
    criterion: Any
    start: int = 0
    step: int = 0
    best_miou: float = -1.0
    eval_input_size: list[int] | None = None  # known after the first validation
    smooth_loss: float | None = None
    started_at: float = 0.0  # perf_counter() when the loop started (the log's "seconds")

    def batch_on_device(self, images, masks):
        """A batch from the loader, on the run's device, images channels-last like the model."""
        import torch

        images = images.to(self.device, memory_format=torch.channels_last, non_blocking=True)
        return images, masks.to(self.device, non_blocking=True)


def train(config: TrainConfig, resume: bool = False, force: bool = False, progress: bool = True) -> Path:
    """Train as ``config`` says; returns the path of the best checkpoint.

    ``progress``: bars for the steps and each validation pass, on stderr and only when stderr is
    a terminal (captured runs get the per-validation log lines alone).
    """
    import torch

    dist = _init_distributed(config.device)
    out = Path(config.out)
    prepare_out_dir(out, resume, force)  # every rank checks, so none is left waiting on a failed rank 0
    device = _resolve_device(config, dist)
    torch.manual_seed(config.seed)
    data = open_training_data(config, dist)
    run = start_run(config, data, out, dist, device, resume)
    loader = make_loader(config, data.train, run.start, data.total, dist, device)
    _run_steps(run, loader, progress)
    _finish(run)
    return out / "best.pt"


def open_training_data(config: TrainConfig, dist: DistInfo) -> TrainData:
    """Open both splits and check that they fit together and make at least one batch."""
    from edge_deeplab.data.base import open_dataset

    train_set = open_dataset(config.data, "train")
    val_set = open_dataset(config.val_data or config.data, "val")
    if list(val_set.classes) != list(train_set.classes):
        raise EdgeDeeplabError("the validation dataset's classes differ from the training dataset's")
    if len(train_set) < config.batch_size:
        raise EdgeDeeplabError(f"the training set has {len(train_set)} images, fewer than one batch ({config.batch_size})")
    if config.batch_size % dist.world_size:
        raise EdgeDeeplabError(f"batch size {config.batch_size} does not split over {dist.world_size} processes")
    per_epoch = len(train_set) // config.batch_size
    total = config.epochs * per_epoch if config.epochs else config.iterations
    return TrainData(train_set, val_set, total)


def start_run(config: TrainConfig, data: TrainData, out: Path, dist: DistInfo, device, resume: bool) -> Run:
    """Build the model and optimizer, from scratch or from ``out/last.pt`` when resuming."""
    import torch

    # Channels-last: oneDNN's convolutions work in NHWC, so NCHW tensors are reordered around every
    # conv otherwise. A separable-head step took 0.79x the time natively and 0.92x on the AVX2 paths
    # (benchmarks/train_step.py, median of 2 rounds). Checkpoints keep the usual layout.
    model = _build_model(config, data, resume).to(device, memory_format=torch.channels_last)
    optimizer = _make_optimizer(model, config)
    use_amp = config.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    start, best_miou, eval_input_size = 0, -1.0, None
    if resume:
        start, best_miou, eval_input_size = restore(out / "last.pt", model, optimizer, scaler if use_amp else None)
        if start >= data.total:
            raise EdgeDeeplabError(f"{out / 'last.pt'} already finished its {data.total} steps")
    return Run(config, data, out, dist, device, model, _distributed(model, device, dist), optimizer, scaler, use_amp,
               torch.nn.CrossEntropyLoss(ignore_index=data.train.ignore_index), start=start, step=start,
               best_miou=best_miou, eval_input_size=eval_input_size)


def _build_model(config: TrainConfig, data: TrainData, resume: bool):
    """A freshly initialised model for ``config`` (backbone weights loaded, unless resuming)."""
    from edge_deeplab.models import build_model
    from edge_deeplab.models.config import ModelConfig

    model = build_model(ModelConfig(
        backbone=config.backbone,
        num_classes=len(data.train.classes),
        output_stride=config.output_stride,
        decoder=config.decoder,
        separable=config.separable,
        width_mult=config.width_mult,
    ))
    if config.backbone_weights and not resume:
        from edge_deeplab.weights import load_backbone_weights

        load_backbone_weights(model, config.backbone_weights)
    return model


def _distributed(model, device, dist: DistInfo):
    """The model wrapped for DistributedDataParallel (SyncBatchNorm on CUDA), or itself when alone."""
    import torch

    if dist.world_size <= 1:
        return model
    if device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def make_loader(config: TrainConfig, train_set, start: int, total: int, dist: DistInfo, device):
    """Batches ``start`` to ``total`` of this rank: augmented crops, collated, from ``config.workers`` processes."""
    import torch
    from torch.utils.data import DataLoader

    from edge_deeplab.data.torch_dataset import TorchSegmentation, collate
    from edge_deeplab.data.transforms import train_transform

    return DataLoader(
        TorchSegmentation(train_set, train_transform(config.crop_size), seed=config.seed),
        batch_sampler=StepBatchSampler(len(train_set), config.batch_size, config.seed, start, total, dist),
        num_workers=config.workers,
        collate_fn=collate,
        worker_init_fn=leave_stop_to_parent,
        pin_memory=device.type == "cuda",
        # A private generator, so creating the loader does not draw from the global torch RNG,
        # whose state the checkpoint restores for exact resume.
        generator=torch.Generator().manual_seed(config.seed),
    )


def train_step(run: Run, images, masks) -> float:
    """One SGD step at the schedule's learning rate; returns the batch's loss."""
    import torch

    lr = learning_rate(run.config, run.step, run.data.total)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    images, masks = run.batch_on_device(images, masks)
    with torch.autocast(run.device.type, dtype=torch.float16, enabled=run.use_amp):
        loss = run.criterion(run.net(images), masks)
    value = loss.item()
    if not math.isfinite(value):
        raise EdgeDeeplabError(f"loss became {value} at step {run.step}; lower --lr")
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.step += 1
    run.smooth_loss = value if run.smooth_loss is None else 0.9 * run.smooth_loss + 0.1 * value
    return value


def _run_steps(run: Run, loader, progress: bool) -> None:
    """The loop: a step per batch, validation and checkpoints every ``val_every`` steps and at the end.

    Ctrl-C saves the steps done so far (``--resume`` continues from there); a dataset error raised
    in a DataLoader worker becomes one line.
    """
    bar = None
    if run.dist.is_main:
        bar = progress_bar(total=run.data.total, initial=run.start, desc="train", unit="step", enabled=progress)
    run.model.train()
    run.started_at = time.perf_counter()
    try:
        for images, masks in loader:
            train_step(run, images, masks)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{run.smooth_loss:.3f}", lr=f"{run.optimizer.param_groups[0]['lr']:.4f}")
            if run.step % run.config.val_every == 0 or run.step == run.data.total:
                if run.dist.is_main:
                    validate_and_save(run, bar, progress)
                _barrier(run.dist)
    except EdgeDeeplabError as exc:
        raise _one_line(exc) from None
    except KeyboardInterrupt:
        # Ctrl-C or SIGTERM: keep the steps done so far; --resume continues from here.
        if run.dist.is_main and run.step > run.start:
            from runtime.signals import note_kept

            save_checkpoint_as(run, {"step": run.step, "interrupted": True}, "last.pt")
            note_kept(f"step {run.step} of {run.data.total} is saved in {run.out / 'last.pt'}")
        raise
    finally:
        if bar is not None:
            bar.close()


def validate_and_save(run: Run, bar, progress: bool) -> None:
    """Score the validation set, log the result, and write ``last.pt`` (and ``best.pt`` when it is the best)."""
    from edge_deeplab.evaluate import score_predictions, torch_predictor

    run.model.eval()
    # Its own bar (under the training bar, removed when done): a pass over the validation images
    # takes a while, and the training bar stands still meanwhile.
    metrics = score_predictions(torch_predictor(run.model, run.device), run.data.val, run.config.val_images,
                                progress=progress, desc=f"validating at step {run.step}")
    run.model.train()
    run.eval_input_size = metrics["input_size"]
    lr = run.optimizer.param_groups[0]["lr"]
    record = {"step": run.step, "loss": run.smooth_loss, "lr": lr,
              "seconds": round(time.perf_counter() - run.started_at, 1),
              "miou": metrics["miou"], "pixel_accuracy": metrics["pixel_accuracy"]}
    with open(run.out / "log.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")
    if bar is not None:
        bar.write(f"step {run.step}/{run.data.total}: loss {run.smooth_loss:.3f}  val mIoU {metrics['miou']:.4f}  "
                  f"pixel acc {metrics['pixel_accuracy']:.4f}")
    summary = {"step": run.step, "miou": metrics["miou"], "pixel_accuracy": metrics["pixel_accuracy"]}
    if metrics["miou"] > run.best_miou:
        run.best_miou = metrics["miou"]
        save_checkpoint_as(run, summary, "best.pt")
    save_checkpoint_as(run, summary, "last.pt")


def _one_line(exc: EdgeDeeplabError) -> EdgeDeeplabError:
    """A dataset error raised in a DataLoader worker carries the worker's traceback: keep its last line."""
    lines = str(exc).strip().splitlines()
    if len(lines) <= 1:
        return exc
    problem = lines[-1].split(": ", 1)[-1]
    return EdgeDeeplabError(f"{problem} (run 'edge-deeplab datasets check' to list every problem)")


def _barrier(dist: DistInfo) -> None:
    """Wait for every process (rank 0 validates while the others would run ahead)."""
    if dist.world_size > 1:
        import torch.distributed as torch_dist

        torch_dist.barrier()


def _finish(run: Run) -> None:
    """Leave the process group; rank 0 writes ``train_config.json``, the mark of a finished run."""
    if run.dist.world_size > 1:
        import torch.distributed as torch_dist

        torch_dist.destroy_process_group()
    if run.dist.is_main:
        atomic_write_text(run.out / "train_config.json", json.dumps(run.config.to_dict(), indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    """``python -m edge_deeplab.train`` (what torchrun launches): the same options as the CLI."""
    from edge_deeplab.cli import main as cli_main

    return cli_main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
