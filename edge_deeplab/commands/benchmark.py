"""``edge-deeplab benchmark BUNDLE [BUNDLE...]``: latency percentiles and fps, bundles side by side.

Timing is ``Segmenter.predict`` on one image (pre- and post-processing included: what a user's
application pays), interleaved round-robin across bundles so machine noise hits all of them
alike. The numbers come from :mod:`runtime.benchmark`, which the report uses too.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from edge_deeplab.commands.options import (RUNTIME_DEFAULTS, EngineCache, OrtOptimization, OrtOptimizationOpt,
                                           OvDevice, OvHint, OvHintOpt, OvPrecisionOpt, Threads, runtime_options)
from edge_deeplab.data.voc import EVAL_SIZE
from runtime.errors import EdgeDeeplabError

app = typer.Typer()


@app.command(help="Time Segmenter.predict (pre/post-processing included) on one image for each bundle, after warm-up "
                  "runs, interleaving the bundles round-robin. Prints a table; --json writes the numbers.")
def benchmark(
    bundles: Annotated[List[Path], typer.Argument(metavar="BUNDLE...", help="bundle folder(s)", show_default=False)],
    runs: Annotated[int, typer.Option(min=1, help="timed runs per bundle")] = 50,
    warmup: Annotated[int, typer.Option(min=0, help="untimed runs per bundle first")] = 5,
    size: Annotated[tuple[int, int], typer.Option(
        metavar="H W", help="size of the synthetic test image (ignored with --image); the default is VOC's "
                            "evaluation size")] = EVAL_SIZE,
    image_path: Annotated[Optional[Path], typer.Option("--image", help="time on this image instead of a synthetic one",
                                                                    show_default="a random image of --size")] = None,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="write the results as JSON here")] = None,
    force: Annotated[bool, typer.Option("--force", help="replace an existing --json file")] = False,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="no progress bar")] = False,
    threads: Threads = RUNTIME_DEFAULTS.threads,
    ort_optimization: OrtOptimizationOpt = OrtOptimization(RUNTIME_DEFAULTS.ort_optimization),
    ov_precision: OvPrecisionOpt = RUNTIME_DEFAULTS.ov_precision_hint,
    ov_hint: OvHintOpt = OvHint(RUNTIME_DEFAULTS.ov_performance_hint),
    device: OvDevice = RUNTIME_DEFAULTS.device,
    engine_cache: EngineCache = None,
) -> int:
    import numpy as np

    import runtime
    from runtime.benchmark import compare, format_table
    from runtime.cpu import cpu_info
    from runtime.files import atomic_write_text, check_writable
    from runtime.images import MAX_PIXELS
    from runtime.outputs import refuse_overlap

    if json_path is not None:
        refuse_overlap(json_path, [*bundles, image_path], "--json")
        check_writable(json_path, force)
    if image_path is not None:
        image = runtime.read_image(image_path)
    else:
        height, width = size
        if height < 1 or width < 1:
            raise EdgeDeeplabError("--size must be positive")
        if height * width > MAX_PIXELS:  # before allocating it: 100000 100000 would be 30 GB
            raise EdgeDeeplabError(f"--size {height} {width} is more than the {MAX_PIXELS // 10**6} MP an image is read at")
        image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    options = runtime_options(threads, ort_optimization, ov_precision, ov_hint, device, engine_cache)
    segmenters: dict[str, object] = {}
    paths: dict[str, Path] = {}
    failed: list[str] = []
    for bundle in bundles:
        try:
            seg = runtime.load(bundle, **options)
        except EdgeDeeplabError as exc:  # one bad bundle should not cost the others their numbers
            failed.append(f"{bundle}: {exc}")
            continue
        name = bundle.name if bundle.name not in segmenters else str(bundle)
        segmenters[name], paths[name] = seg, bundle
    if not segmenters:
        raise EdgeDeeplabError(f"none of the {len(failed)} bundle(s) can run here; {failed[0]}")
    try:
        from runtime.progress import progress_bar

        with progress_bar(total=(runs + warmup) * len(segmenters), unit="run", enabled=not no_progress) as bar:
            stats = compare(segmenters, [image], runs=runs, warmup=warmup, progress=bar.update)
    finally:
        for seg in segmenters.values():
            seg.close()
    cpu = cpu_info()
    print(f"input {image.shape[0]}x{image.shape[1]}, {runs} runs after {warmup} warm-up, {cpu.model} "
          f"({platform.machine()}; INT8: {cpu.describe_int8()})")
    print(format_table(stats))
    if json_path is not None:
        payload = {
            "image_size": list(image.shape[:2]),
            "runs": runs,
            "warmup": warmup,
            "machine": {"platform": platform.platform(), "machine": platform.machine(), "processor": platform.processor(),
                        "cpu": cpu.to_dict(), "int8_kernels": cpu.describe_int8()},
            "results": [
                {
                    **s.to_dict(),
                    "bundle": str(paths[s.name]),
                    "target": segmenters[s.name].manifest.target,
                    "precision": segmenters[s.name].manifest.precision,
                }
                for s in stats
            ],
            "failed": failed,
        }
        atomic_write_text(json_path, json.dumps(payload, indent=2) + "\n", overwrite=force)
        print(f"wrote {json_path}")
    if failed:
        # Listed, as report lists what it could not measure; the others were measured, so exit 0.
        print(f"skipped {len(failed)} bundle(s) that cannot run here:")
        for line in failed:
            print(f"  {line}")
    return 0
