"""A training run's folder and checkpoints: what ``--out`` may hold before a run, what a run
writes into it, and how a checkpoint is written from and read back into a run in progress.

Kept apart from the loop (:mod:`edge_deeplab.train`), which calls these at its start, at every
validation and when stopped; a checkpoint holds the optimizer, the step and the RNG state, so a
resumed run ends with the weights of one that was never stopped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runtime.errors import EdgeDeeplabError


def prepare_out_dir(out: Path, resume: bool, force: bool) -> None:
    """Make ``out`` ready for a run: a resumable one for ``resume``, else an empty or new folder
    (an older run's files removed only with ``force``)."""
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
        clear_run_files(out)
    out.mkdir(parents=True, exist_ok=True)


# What a run writes into --out; --force removes these (and only these) before starting over.
RUN_FILES = ("best.pt", "last.pt", "log.jsonl", "train_config.json")


def clear_run_files(out: Path) -> None:
    """Remove an older run's files, so its best.pt and log are not mistaken for the new run's.

    A new run writes best.pt only when it beats its own best so far, and appends to log.jsonl: an
    old best.pt with a higher mIoU would survive and be reported as this run's result.
    """
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)
    for stale in out.glob(".*.tmp"):
        stale.unlink()


def restore(path: Path, model, optimizer, scaler) -> tuple[int, float, list[int] | None]:
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


def save_checkpoint_as(run: Any, metrics: dict, name: str) -> None:
    """Write the model and the training state (for exact resume) to ``run.out / name``, atomically.

    ``run`` is the loop's :class:`edge_deeplab.train.Run`, typed loosely: the loop imports this
    module, and importing it back would make a cycle."""
    import torch

    from edge_deeplab.checkpoint import Checkpoint, save_checkpoint
    from runtime.preprocess import IMAGENET_MEAN, IMAGENET_STD

    train_set = run.data.train
    checkpoint = Checkpoint(
        model_config=run.model.config,
        state_dict={k: v.detach().cpu().contiguous() for k, v in run.model.state_dict().items()},
        classes=list(train_set.classes),
        palette=[list(map(int, c)) for c in train_set.palette],
        mean=list(IMAGENET_MEAN),
        std=list(IMAGENET_STD),
        ignore_index=train_set.ignore_index,
        dataset=run.config.data,
        metrics=metrics,
        eval_input_size=run.eval_input_size,
        train_state={
            "step": run.step,
            "total": run.data.total,
            "optimizer": run.optimizer.state_dict(),
            "scaler": run.scaler.state_dict() if run.use_amp else None,
            "torch_rng": torch.get_rng_state(),
            "best_miou": run.best_miou,
            "config": run.config.to_dict(),
        },
    )
    save_checkpoint(checkpoint, run.out / name)
