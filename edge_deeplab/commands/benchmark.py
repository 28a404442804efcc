"""``edge-deeplab benchmark BUNDLE [BUNDLE...]``: latency percentiles and fps, bundles side by side.

Timing is ``Segmenter.predict`` on one image (pre- and post-processing included: what a user's
application pays), interleaved round-robin across bundles so machine noise hits all of them
alike. The numbers come from :mod:`runtime.benchmark`, which the report uses too.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

from edge_deeplab.commands.infer import add_runtime_options, runtime_options
from runtime.errors import EdgeDeeplabError


def add_parser(subparsers: argparse._SubParsersAction, name: str) -> None:
    parser = subparsers.add_parser(
        name,
        help="measure latency (p50/p90/p99) and fps of one or several bundles",
        description=(
            "Time Segmenter.predict (pre/post-processing included) on one image for each bundle, after "
            "warm-up runs, interleaving the bundles round-robin. Prints a table; --json writes the numbers."
        ),
    )
    parser.add_argument("bundles", type=Path, nargs="+", metavar="BUNDLE", help="bundle folder(s)")
    parser.add_argument("--runs", type=int, default=50, help="timed runs per bundle")
    parser.add_argument("--warmup", type=int, default=5, help="untimed runs per bundle first")
    parser.add_argument("--size", type=int, nargs=2, default=(513, 513), metavar=("H", "W"),
                        help="size of the synthetic test image (ignored with --image)")
    parser.add_argument("--image", type=Path, default=None, help="time on this image instead of a synthetic one")
    parser.add_argument("--json", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--force", action="store_true", help="replace an existing --json file")
    add_runtime_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    import runtime
    from runtime.benchmark import compare, format_table
    from runtime.files import atomic_write_text, check_writable
    from runtime.images import MAX_PIXELS

    if args.runs < 1 or args.warmup < 0:
        raise EdgeDeeplabError("--runs must be >= 1 and --warmup >= 0")
    if args.json is not None:
        check_writable(args.json, args.force)
    if args.image is not None:
        image = runtime.read_image(args.image)
    else:
        height, width = args.size
        if height < 1 or width < 1:
            raise EdgeDeeplabError("--size must be positive")
        if height * width > MAX_PIXELS:  # before allocating it: 100000 100000 would be 30 GB
            raise EdgeDeeplabError(f"--size {height} {width} is more than the {MAX_PIXELS // 10**6} MP an image is read at")
        image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    segmenters: dict[str, object] = {}
    paths: dict[str, Path] = {}
    failed: list[str] = []
    for bundle in args.bundles:
        try:
            seg = runtime.load(bundle, **runtime_options(args))
        except EdgeDeeplabError as exc:  # one bad bundle should not cost the others their numbers
            failed.append(f"{bundle}: {exc}")
            continue
        name = bundle.name if bundle.name not in segmenters else str(bundle)
        segmenters[name], paths[name] = seg, bundle
    if not segmenters:
        raise EdgeDeeplabError(f"none of the {len(failed)} bundle(s) can run here; {failed[0]}")
    try:
        stats = compare(segmenters, [image], runs=args.runs, warmup=args.warmup)
    finally:
        for seg in segmenters.values():
            seg.close()
    print(f"input {image.shape[0]}x{image.shape[1]}, {args.runs} runs after {args.warmup} warm-up, "
          f"{platform.machine()} {platform.processor() or ''}".rstrip())
    print(format_table(stats))
    if args.json is not None:
        payload = {
            "image_size": list(image.shape[:2]),
            "runs": args.runs,
            "warmup": args.warmup,
            "machine": {"platform": platform.platform(), "machine": platform.machine(), "processor": platform.processor()},
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
        atomic_write_text(args.json, json.dumps(payload, indent=2) + "\n", overwrite=args.force)
        print(f"wrote {args.json}")
    if failed:
        # Listed, as report lists what it could not measure; the others were measured, so exit 0.
        print(f"skipped {len(failed)} bundle(s) that cannot run here:")
        for line in failed:
            print(f"  {line}")
    return 0
