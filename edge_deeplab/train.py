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
from typing import Iterator

import numpy as np

from edge_deeplab.config import TrainConfig
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


def _prepare_out_dir(out: Path, resume: bool, force: bool) -> None:
    last = out / "last.pt"
    if resume:
        if not last.is_file():
            raise EdgeDeeplabError(f"nothing to resume: {last} does not exist")
        for stale in out.glob(".*.tmp"):  # a checkpoint being written when the run was killed
            stale.unlink()
        return
    if out.exists() and not out.is_dir():
        raise EdgeDeeplabError(f"--out {out} is a file; a run needs a folder for its checkpoints and log")
    if out.exists() and any(out.iterdir()) and not force:
        raise EdgeDeeplabError(f"{out} already holds a training run; pass --resume to continue it or --force to start over")
    if force:
        _clear_run_files(out)
    out.mkdir(parents=True, exist_ok=True)


# What a run writes into --out; --force removes these (and only these) before starting over.
RUN_FILES = ("best.pt", "last.pt", "log.jsonl", "train_config.json")


def _clear_run_files(out: Path) -> None:
    """Remove an older run's files, so its best.pt and log are not mistaken for the new run's.

    A new run writes best.pt only when it beats its own best so far, and appends to log.jsonl: an
    old best.pt with a higher mIoU would survive and be reported as this run's result.
    """
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)
    for stale in out.glob(".*.tmp"):
        stale.unlink()


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


def _restore(path: Path, model, optimizer, scaler) -> tuple[int, float, list[int] | None]:
    """Load weights, optimizer, scaler and torch RNG from ``path``; return (step, best mIoU, eval size)."""
    import torch

    from edge_deeplab.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    if ckpt.model_config.to_dict() != model.config.to_dict():
        raise EdgeDeeplabError(
            f"{path} is a {ckpt.model_config.backbone} model with {ckpt.num_classes} classes; it does not match this run's options"
        )
    state = ckpt.train_state or {}
    if "optimizer" not in state:
        raise EdgeDeeplabError(f"{path} holds no training state to resume from")
    model.load_state_dict(ckpt.state_dict)
    optimizer.load_state_dict(state["optimizer"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["torch_rng"])
    return int(state["step"]), float(state.get("best_miou", -1.0)), ckpt.eval_input_size


def train(config: TrainConfig, resume: bool = False, force: bool = False, progress: bool = True) -> Path:
    """Train as ``config`` says; returns the path of the best checkpoint.

    ``progress``: bars for the steps and each validation pass, on stderr and only when stderr is
    a terminal (captured runs get the per-validation log lines alone).
    """
    import torch
    from torch.utils.data import DataLoader

    from edge_deeplab.checkpoint import Checkpoint, save_checkpoint
    from edge_deeplab.data.base import open_dataset
    from edge_deeplab.data.torch_dataset import TorchSegmentation, collate
    from edge_deeplab.data.transforms import train_transform
    from edge_deeplab.evaluate import score_predictions, torch_predictor
    from edge_deeplab.models import build_model
    from edge_deeplab.models.config import ModelConfig
    from runtime.preprocess import IMAGENET_MEAN, IMAGENET_STD

    dist = _init_distributed(config.device)
    out = Path(config.out)
    _prepare_out_dir(out, resume, force)  # every rank checks, so none is left waiting on a failed rank 0
    device = _resolve_device(config, dist)
    torch.manual_seed(config.seed)

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

    model_config = ModelConfig(
        backbone=config.backbone,
        num_classes=len(train_set.classes),
        output_stride=config.output_stride,
        decoder=config.decoder,
        separable=config.separable,
        width_mult=config.width_mult,
    )
    model = build_model(model_config)
    if config.backbone_weights and not resume:
        from edge_deeplab.weights import load_backbone_weights

        load_backbone_weights(model, config.backbone_weights)
    model.to(device)

    optimizer = _make_optimizer(model, config)
    use_amp = config.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    start, best_miou = 0, -1.0
    eval_input_size: list[int] | None = None  # known after the first validation
    if resume:
        start, best_miou, eval_input_size = _restore(out / "last.pt", model, optimizer, scaler if use_amp else None)
        if start >= total:
            raise EdgeDeeplabError(f"{out / 'last.pt'} already finished its {total} steps")

    net = model
    if dist.world_size > 1:
        if device.type == "cuda":
            net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
        net = torch.nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)

    dataset = TorchSegmentation(train_set, train_transform(config.crop_size), seed=config.seed)
    sampler = StepBatchSampler(len(train_set), config.batch_size, config.seed, start, total, dist)
    loader = DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=config.workers,
        collate_fn=collate,
        worker_init_fn=leave_stop_to_parent,
        pin_memory=device.type == "cuda",
        # A private generator, so creating the loader does not draw from the global torch RNG,
        # whose state the checkpoint restores for exact resume.
        generator=torch.Generator().manual_seed(config.seed),
    )
    criterion = torch.nn.CrossEntropyLoss(ignore_index=train_set.ignore_index)

    def make_checkpoint(step: int, metrics: dict) -> Checkpoint:
        return Checkpoint(
            model_config=model_config,
            state_dict={k: v.detach().cpu() for k, v in model.state_dict().items()},
            classes=list(train_set.classes),
            palette=[list(map(int, c)) for c in train_set.palette],
            mean=list(IMAGENET_MEAN),
            std=list(IMAGENET_STD),
            ignore_index=train_set.ignore_index,
            dataset=config.data,
            metrics=metrics,
            eval_input_size=eval_input_size,
            train_state={
                "step": step,
                "total": total,
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict() if use_amp else None,
                "torch_rng": torch.get_rng_state(),
                "best_miou": best_miou,
                "config": config.to_dict(),
            },
        )

    bar = None
    if dist.is_main:
        bar = progress_bar(total=total, initial=start, desc="train", unit="step", enabled=progress)
    log_path = out / "log.jsonl"
    model.train()
    step = start
    smooth_loss = None
    t0 = time.perf_counter()
    try:
        for images, masks in loader:
            lr = poly_lr(config.lr, step, total, config.poly_power)
            for group in optimizer.param_groups:
                group["lr"] = lr
            images = images.to(device, non_blocking=True)
            masks = masks.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                loss = criterion(net(images), masks)
            if not math.isfinite(loss.item()):
                raise EdgeDeeplabError(f"loss became {loss.item()} at step {step}; lower --lr")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            step += 1
            smooth_loss = loss.item() if smooth_loss is None else 0.9 * smooth_loss + 0.1 * loss.item()
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{smooth_loss:.3f}", lr=f"{lr:.4f}")
            if step % config.val_every == 0 or step == total:
                if dist.is_main:
                    model.eval()
                    # Its own bar (under the training bar, removed when done): a pass over the
                    # validation images takes a while, and the training bar stands still meanwhile.
                    metrics = score_predictions(torch_predictor(model, device), val_set, config.val_images,
                                                progress=progress, desc=f"validating at step {step}")
                    model.train()
                    eval_input_size = metrics["input_size"]
                    record = {"step": step, "loss": smooth_loss, "lr": lr, "seconds": round(time.perf_counter() - t0, 1), "miou": metrics["miou"], "pixel_accuracy": metrics["pixel_accuracy"]}
                    with open(log_path, "a", encoding="utf-8") as fh:
                        fh.write(json.dumps(record) + "\n")
                    if bar is not None:
                        bar.write(f"step {step}/{total}: loss {smooth_loss:.3f}  val mIoU {metrics['miou']:.4f}  pixel acc {metrics['pixel_accuracy']:.4f}")
                    summary = {"step": step, "miou": metrics["miou"], "pixel_accuracy": metrics["pixel_accuracy"]}
                    if metrics["miou"] > best_miou:
                        best_miou = metrics["miou"]
                        save_checkpoint(make_checkpoint(step, summary), out / "best.pt")
                    save_checkpoint(make_checkpoint(step, summary), out / "last.pt")
                if dist.world_size > 1:
                    import torch.distributed as torch_dist

                    torch_dist.barrier()
    except EdgeDeeplabError as exc:
        lines = str(exc).strip().splitlines()
        if len(lines) > 1:  # raised in a DataLoader worker: the text carries the worker's traceback
            problem = lines[-1].split(": ", 1)[-1]
            raise EdgeDeeplabError(f"{problem} (run 'edge-deeplab datasets check' to list every problem)") from None
        raise
    except KeyboardInterrupt:
        # Ctrl-C or SIGTERM: keep the steps done so far; --resume continues from here.
        if dist.is_main and step > start:
            from runtime.signals import note_kept

            save_checkpoint(make_checkpoint(step, {"step": step, "interrupted": True}), out / "last.pt")
            note_kept(f"step {step} of {total} is saved in {out / 'last.pt'}")
        raise
    finally:
        if bar is not None:
            bar.close()
    if dist.world_size > 1:
        import torch.distributed as torch_dist

        torch_dist.destroy_process_group()
    if dist.is_main:
        atomic_write_text(out / "train_config.json", json.dumps(config.to_dict(), indent=2) + "\n")
    return out / "best.pt"


def main(argv: list[str] | None = None) -> int:
    """``python -m edge_deeplab.train`` (what torchrun launches): the same options as the CLI."""
    from edge_deeplab.cli import main as cli_main

    return cli_main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
