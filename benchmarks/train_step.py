"""Where a training step of the default recipe goes, natively and on torch's / oneDNN's AVX2 paths.

    python benchmarks/train_step.py [--steps 10] [--rounds 2] [--variant NAME:key=value,...]

Runs itself once per (ISA setting, variant), alternating them for ``--rounds`` rounds so machine
noise hits every row alike: ``native`` (whatever this CPU has) and ``avx2``
(``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2``, the closest this machine gets to a CPU
without AVX-512 or VNNI). Each child trains the default recipe (``edge-deeplab train`` with no
option: MobileNetV2, separable head, OS 16, its batch and crop, the synthetic set, its DataLoader
workers) through ``edge_deeplab.train``'s own objects (``start_run``, ``make_loader``, the loop's
calls) and splits each step into:

- data: the wait for the next batch from the DataLoader (generation, augmentation, collation in
  the workers, and the hand-off); with workers the work itself happens in another process, so
  the time it takes from torch's threads shows up as slower compute below instead
- forward (with the loss), backward, optimizer (zero_grad + step), other (the learning-rate
  update, ``loss.item()`` and the rest of the loop's Python)
- validation: one pass over the validation images, spread over ``val_every`` steps

The steps are those of the first epoch's start (``cold``: the worker renders each image), then
the same number with every image already rendered (``warm``: what the rest of a run sees); the
run's data share weighs the two by the run's length. Also printed: what the data pipeline costs
per batch in one process (rendering, augmentation, collation), the compute of a step alone (a
fixed batch, no loader), and the separable / dense step-time ratio on that setting (compute
alone, the two heads alternated, channels-last as training runs and NCHW). Times are wall-clock
ms with the CPU ms of the process beside them (less sensitive to other work on the machine).

The children wait for OpenMP threads passively, as ``edge-deeplab`` does (``edge_deeplab/openmp.py``).
A variant changes the recipe or the environment: ``--variant w0:workers=0 --variant
spin:OMP_WAIT_POLICY=default`` (lower-case keys are training options, upper-case ones environment
variables; ``OMP_WAIT_POLICY=default`` leaves OpenMP to its own default of spinning a while).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SETTINGS = {"native": {}, "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}}
PHASES = ("data", "forward", "backward", "optimizer", "other")


class Clock:
    """Wall and process-CPU seconds per named phase, summed over calls."""

    def __init__(self) -> None:
        self.wall: dict[str, list[float]] = {}
        self.cpu: dict[str, list[float]] = {}
        self._mark = (0.0, 0.0)

    def start(self) -> None:
        self._mark = (time.perf_counter(), time.process_time())

    def lap(self, phase: str) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        self.wall.setdefault(phase, []).append(wall - self._mark[0])
        self.cpu.setdefault(phase, []).append(cpu - self._mark[1])
        self._mark = (wall, cpu)

    def median_ms(self, phase: str) -> tuple[float, float]:
        return 1000 * statistics.median(self.wall[phase]), 1000 * statistics.median(self.cpu[phase])


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """Median wall and CPU ms of ``fn``."""
    clock = Clock()
    for _ in range(repeats):
        clock.start()
        fn()
        clock.lap("x")
    return clock.median_ms("x")


def loop_steps(run, loader, steps: int) -> Clock:
    """``steps`` iterations of the training loop, each phase timed as ``train_step`` runs it."""
    import math

    from edge_deeplab.train import learning_rate

    clock = Clock()
    batches = iter(loader)
    for _ in range(steps):
        clock.start()
        images, masks = next(batches)
        clock.lap("data")
        lr = learning_rate(run.config, run.step, run.data.total)
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        images, masks = run.batch_on_device(images, masks)
        clock.lap("other")
        loss = run.criterion(run.net(images), masks)
        value = loss.item()
        clock.lap("forward")
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clock.lap("backward")
        run.optimizer.step()
        clock.lap("optimizer")
        assert math.isfinite(value)
        run.step += 1
        run.smooth_loss = value if run.smooth_loss is None else 0.9 * run.smooth_loss + 0.1 * value
        clock.lap("other")
    return clock


def summarize(clock: Clock, steps: int) -> dict[str, Any]:
    """Per-step mean ms of each phase ("other" is two laps per step)."""
    wall = {p: 1000 * sum(clock.wall.get(p, [0.0])) / steps for p in PHASES}
    cpu = {p: 1000 * sum(clock.cpu.get(p, [0.0])) / steps for p in PHASES}
    return {"wall": wall, "cpu": cpu}


def child(args: argparse.Namespace) -> None:
    """Measure on this process's setting and print one JSON line."""
    from edge_deeplab.openmp import WAIT_POLICY, prefer_passive_wait

    if os.environ.get(WAIT_POLICY) == "default":  # OpenMP's own default: spin a while, then sleep
        del os.environ[WAIT_POLICY]
    prefer_passive_wait()  # as the command line does, before torch is imported
    import torch

    from edge_deeplab.config import make_config
    from edge_deeplab.data.synthetic import SyntheticShapes
    from edge_deeplab.data.torch_dataset import TorchSegmentation, collate
    from edge_deeplab.data.transforms import train_transform
    from edge_deeplab.evaluate import score_predictions, torch_predictor
    from edge_deeplab.train import (DistInfo, _make_optimizer, batch_indices, make_loader, open_training_data,
                                    start_run)

    overrides = json.loads(args.child)
    with tempfile.TemporaryDirectory() as tmp:
        config = make_config({}, {**overrides, "out": str(Path(tmp) / "run")})
        dist, device = DistInfo(), torch.device("cpu")
        torch.manual_seed(config.seed)
        data = open_training_data(config, dist)
        result: dict[str, Any] = {"isa": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
                                  "workers": config.workers, "batch": config.batch_size, "crop": config.crop_size,
                                  "separable": config.separable, "total": data.total, "val_every": config.val_every}

        # What the data pipeline costs per batch, in one process.
        fresh = SyntheticShapes("train", seed=123, cache=False)  # its own seed: images the loader never renders
        render = timed(lambda: [fresh[i] for i in range(config.batch_size)], 2)
        torch_set = TorchSegmentation(data.train, train_transform(config.crop_size), seed=config.seed)
        for i in range(config.batch_size):
            data.train[i]  # rendered once, so augmentation is timed alone
        items: list = []
        augment = timed(lambda: items.__setitem__(slice(None), [torch_set[(i, 0)] for i in range(config.batch_size)]),
                        args.steps)
        collation = timed(lambda: collate(items), args.steps)
        result["pipeline_per_batch"] = {"render": render, "augment": augment, "collate": collation}

        run = start_run(config, data, Path(config.out), dist, device, resume=False)
        run.model.train()
        per_epoch = len(data.train) // config.batch_size
        # cold: the first steps of the run, the worker rendering every image
        loader = make_loader(config, data.train, 0, args.warmup + args.steps, dist, device)
        cold = loop_steps(run, loader, args.warmup + args.steps)
        # warm: steps of the second epoch whose images are rendered (in this process, which the
        # worker forks from) beforehand, as they are after the first epoch
        first = per_epoch
        last = first + args.warmup + args.steps
        for step in range(first, last):
            for index in batch_indices(step, config.batch_size, len(data.train), config.seed):
                data.train[int(index)]
        run.step = first
        loader = make_loader(config, data.train, first, last, dist, device)
        warm = loop_steps(run, loader, args.warmup + args.steps)
        for clock in (cold, warm):
            for table in (clock.wall, clock.cpu):
                for phase in table:
                    skip = args.warmup * (2 if phase == "other" else 1)
                    table[phase] = table[phase][skip:]
        result["cold"] = summarize(cold, args.steps)
        result["warm"] = summarize(warm, args.steps)

        # Compute alone: one fixed batch, no loader; both heads, channels-last (as training runs)
        # and NCHW, alternated.
        images, masks = next(iter(make_loader(config, data.train, first, first + 1, dist, device)))
        other = make_config({}, {**overrides, "separable": not config.separable, "iterations": config.iterations,
                                 "out": str(Path(tmp) / "other")})
        heads = {bool(config.separable): run, bool(other.separable): start_run(other, data, Path(other.out), dist,
                                                                                  device, resume=False)}
        models = {}
        for separable, r in heads.items():
            head = "separable" if separable else "dense"
            nchw = copy.deepcopy(r.model).to(memory_format=torch.contiguous_format)
            models[head] = (r.model, r.optimizer, images.contiguous(memory_format=torch.channels_last))
            models[f"{head} NCHW"] = (nchw, _make_optimizer(nchw, r.config), images.contiguous())
        compute = {name: Clock() for name in models}
        for _ in range(args.warmup + args.steps):
            for name, (model, optimizer, x) in models.items():
                model.train()
                compute[name].start()
                loss = run.criterion(model(x), masks)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                compute[name].lap("step")
        result["compute"] = {name: {"wall": 1000 * statistics.median(c.wall["step"][args.warmup:]),
                                    "cpu": 1000 * statistics.median(c.cpu["step"][args.warmup:])}
                             for name, c in compute.items()}

        # Validation: one pass, as validate_and_save runs it.
        run.model.eval()
        start = time.perf_counter(), time.process_time()
        score_predictions(torch_predictor(run.model, device), data.val, config.val_images, progress=False)
        result["validation_ms"] = (1000 * (time.perf_counter() - start[0]), 1000 * (time.process_time() - start[1]))
    print(json.dumps(result))


def parse_variant(text: str) -> tuple[str, dict[str, Any], dict[str, str]]:
    """``NAME:key=value,...`` -> (name, training options, environment)."""
    name, _, spec = text.partition(":")
    options: dict[str, Any] = {}
    env: dict[str, str] = {}
    for item in filter(None, spec.split(",")):
        key, _, value = item.partition("=")
        if key.isupper():
            env[key] = value
        else:
            options[key] = json.loads(value) if value not in ("", None) and value[0] in "0123456789-[{tfn" else value
    return name, options, env


def report(rows: list[dict[str, Any]]) -> None:
    """Print the per-phase table and the ratios, one block per (setting, variant)."""
    for row in rows:
        r = row["result"]
        print(f"\n== {row['setting']} / {row['variant']}: torch ISA {r['isa']}, {r['threads']} threads, "
              f"{r['workers']} worker(s), batch {r['batch']}, crop {r['crop']}, "
              f"{'separable' if r['separable'] else 'dense'} head, {r['total']} steps; "
              f"env {row['env'] or '-'} (medians of {row['rounds']} round(s))")
        pipe = r["pipeline_per_batch"]
        print(f"   data pipeline per batch in one process: render {pipe['render'][0]:.0f} ms, augment "
              f"{pipe['augment'][0]:.0f} ms, collate {pipe['collate'][0]:.1f} ms")
        for kind in ("cold", "warm"):
            wall, cpu = r[kind]["wall"], r[kind]["cpu"]
            total = sum(wall.values())
            shares = "  ".join(f"{p} {wall[p]:.0f} ({100 * wall[p] / total:.0f}%)" for p in PHASES)
            print(f"   {kind:>4} step {total:.0f} ms (cpu {sum(cpu.values()):.0f} ms): {shares}")
        per_epoch = 1000 // r["batch"]
        cold_steps = min(per_epoch, r["total"])
        step_ms = {k: sum(r[k]["wall"].values()) for k in ("cold", "warm")}
        data_ms = {k: r[k]["wall"]["data"] for k in ("cold", "warm")}
        run_ms = cold_steps * step_ms["cold"] + (r["total"] - cold_steps) * step_ms["warm"]
        val_ms = r["validation_ms"][0] * r["total"] / r["val_every"]
        data_share = (cold_steps * data_ms["cold"] + (r["total"] - cold_steps) * data_ms["warm"]) / (run_ms + val_ms)
        other_share = (cold_steps * r["cold"]["wall"]["other"] + (r["total"] - cold_steps) * r["warm"]["wall"]["other"]) / (run_ms + val_ms)
        compute = r["compute"]
        learn = compute["separable" if r["separable"] else "dense"]["wall"]
        print(f"   compute alone (fixed batch, no loader): {learn:.0f} ms a step; the loop's warm step is "
              f"{step_ms['warm'] / learn:.2f}x that")
        print(f"   validation: {r['validation_ms'][0] / 1000:.1f} s a pass, every {r['val_every']} steps = "
              f"{100 * val_ms / (run_ms + val_ms):.1f}% of the run")
        print(f"   whole run ({r['total']} steps, {cold_steps} cold): {(run_ms + val_ms) / 60000:.1f} min; "
              f"not learning: data {100 * data_share:.1f}% + other {100 * other_share:.1f}% + validation "
              f"{100 * val_ms / (run_ms + val_ms):.1f}% + the loop's slowdown of compute "
              f"{100 * max(step_ms['warm'] - learn - data_ms['warm'], 0) / step_ms['warm']:.1f}%")
        for suffix, layout in (("", "channels-last"), (" NCHW", "NCHW")):
            sep, dense = compute["separable" + suffix], compute["dense" + suffix]
            print(f"   separable / dense step, {layout} (compute alone, alternated): {sep['wall'] / dense['wall']:.2f} "
                  f"wall, {sep['cpu'] / dense['cpu']:.2f} cpu (dense {dense['wall']:.0f} ms, separable "
                  f"{sep['wall']:.0f} ms)")
        for head in ("separable", "dense"):
            cl, nchw = compute[head], compute[head + " NCHW"]
            print(f"   channels-last / NCHW, {head} head: {cl['wall'] / nchw['wall']:.2f} wall, "
                  f"{cl['cpu'] / nchw['cpu']:.2f} cpu")


def median_result(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The element-wise median of several children's results (numbers only; the rest from the first)."""
    first = results[0]
    if isinstance(first, dict):
        return {k: median_result([r[k] for r in results]) for k in first}
    if isinstance(first, (list, tuple)):
        return [median_result([r[i] for r in results]) for i in range(len(first))]
    if isinstance(first, int) and not isinstance(first, bool):
        return round(statistics.median(results))
    if isinstance(first, float):
        return statistics.median(results)
    return first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before them")
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds over settings and variants")
    parser.add_argument("--settings", default="native,avx2", help=f"comma-separated: {', '.join(SETTINGS)}")
    parser.add_argument("--variant", action="append", default=[],
                        help="NAME:key=value,... (training options lower-case, environment upper-case); "
                             "repeatable; default: the default recipe alone")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args)
        return
    variants = [parse_variant(v) for v in args.variant] or [("default", {}, {})]
    load_before = os.getloadavg()[0]
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    envs: dict[tuple[str, str], dict[str, str]] = {}
    for _ in range(args.rounds):
        for setting in args.settings.split(","):
            for name, options, env in variants:
                full_env = {**os.environ, **SETTINGS[setting], **env}
                cmd = [sys.executable, __file__, "--child", json.dumps(options), "--steps", str(args.steps),
                       "--warmup", str(args.warmup)]
                proc = subprocess.run(cmd, env=full_env, capture_output=True, text=True)
                if proc.returncode != 0:
                    sys.exit(f"{setting}/{name} failed:\n{proc.stderr[-3000:]}")
                results.setdefault((setting, name), []).append(json.loads(proc.stdout.strip().splitlines()[-1]))
                envs[(setting, name)] = {**SETTINGS[setting], **env}
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU") if Path("/proc/cpuinfo").is_file() else "unknown CPU"
    print(f"machine: {cpu}, {os.cpu_count()} logical CPUs; 1-minute load average {load_before:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after (this benchmark adds about 1-2)")
    report([{"setting": s, "variant": v, "env": " ".join(f"{k}={x}" for k, x in envs[(s, v)].items()),
             "rounds": len(rs), "result": median_result(rs)} for (s, v), rs in results.items()])


if __name__ == "__main__":
    main()
