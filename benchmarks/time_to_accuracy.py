"""Which recipe reaches its mIoU soonest: train several side by side and log mIoU against steps and time.

    python benchmarks/time_to_accuracy.py --recipe base: --recipe hot:lr=0.2,warmup_steps=50 \\
        [--iterations 400] [--threads 1] [--out runs/tta]

Each recipe is the default ``edge-deeplab train`` with some options changed (``NAME:key=value,...``,
the training options' names); all of them train at once, one process each with ``--threads``
torch threads, so machine noise hits every recipe alike. mIoU after a given number of steps does
not depend on the machine (the runs are seeded), so it can be measured on a busy one; what a step
costs on each kind of CPU is ``benchmarks/train_step.py``'s figure (the separable / dense ratio
turns the dense head's steps into the separable head's time). Prints, per recipe, the validation
mIoU at every ``--val-every`` steps and at the end, and the CPU seconds each run took.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_recipe(text: str) -> tuple[str, dict]:
    """``NAME:key=value,...`` -> (name, training options as JSON values)."""
    name, _, spec = text.partition(":")
    options = {}
    for item in filter(None, spec.split(",")):
        key, _, value = item.partition("=")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return name, options


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", action="append", required=True, help="NAME:key=value,... (repeatable)")
    parser.add_argument("--iterations", type=int, default=400, help="steps, unless a recipe sets its own")
    parser.add_argument("--val-every", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--out", type=Path, default=Path("runs/tta"))
    args = parser.parse_args()

    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "OMP_WAIT_POLICY": "PASSIVE"}
    runs = {}
    for name, options in map(parse_recipe, args.recipe):
        options = {"iterations": args.iterations, "val_every": args.val_every, **options,
                   "out": str(args.out / name)}
        code = ("import json, sys; from edge_deeplab.config import make_config; from edge_deeplab.train import train; "
                "train(make_config({}, json.loads(sys.argv[1])), force=True, progress=False)")
        runs[name] = (options, time.perf_counter(),
                      subprocess.Popen([sys.executable, "-c", code, json.dumps(options)], cwd=ROOT, env=env,
                                       stdout=subprocess.DEVNULL))
    for name, (options, started, proc) in runs.items():
        if proc.wait() != 0:
            sys.exit(f"recipe {name} failed (exit status {proc.returncode})")
        log = [json.loads(line) for line in (Path(options["out"]) / "log.jsonl").read_text().splitlines()]
        curve = "  ".join(f"{r['step']}: {r['miou']:.3f}" for r in log)
        print(f"{name:>12} {json.dumps({k: v for k, v in options.items() if k != 'out'})}\n"
              f"{'':>12} mIoU at step {curve}; finished after {time.perf_counter() - started:.0f} s wall")
    print(f"children's CPU time in all: {os.times().children_user + os.times().children_system:.0f} s "
          f"({os.cpu_count()} logical CPUs, 1-minute load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
