"""``edge-deeplab doctor [BUNDLE ...]``: is this machine ready to run these bundles? The first command on a device.

Prints the platform (Jetson model, L4T, CUDA, TensorRT, cuda-python, OpenCV and GStreamer, ONNX
Runtime and its providers, OpenVINO), one line per check with the fix when it fails, and for each
bundle: load it (building its TensorRT engine if needed), run a few images, compare the masks
with a reference run of the same model and time p50. ``--json`` keeps all of it. Exit status 0
when nothing failed, 1 when a check or a bundle failed, 2 for bad input. Torch-free, like every
device-side command (:mod:`edge_deeplab.doctor` does the work).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from runtime.errors import EdgeDeeplabError

MARK = {"ok": "ok  ", "fail": "FAIL", "skip": "skip"}


def add_parser(subparsers: argparse._SubParsersAction, name: str) -> None:
    parser = subparsers.add_parser(
        name,
        help="check this machine (and bundles) for running edge-deeplab: the first command on a device",
        description=(
            "Print the platform and one line per requirement (with the fix when it fails); for each "
            "BUNDLE, load it (building a TensorRT engine if needed), run a few images, compare the masks "
            "with a reference run and time p50. Checks that do not apply here are listed as skipped."
        ),
    )
    parser.add_argument("bundles", type=Path, nargs="*", metavar="BUNDLE", help="bundle folder(s) to try")
    parser.add_argument("--images", type=int, default=4, help="images per bundle (default 4)")
    parser.add_argument("--runs", type=int, default=20, help="timed runs per bundle (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs first (default 3)")
    parser.add_argument("--engine-cache", type=Path, default=None,
                        help="folder for TensorRT engines built here (default: BUNDLE/engines)")
    parser.add_argument("--json", type=Path, default=None, help="write everything found as JSON here")
    parser.add_argument("--force", action="store_true", help="replace an existing --json file")
    parser.set_defaults(func=run)


def _line(status: str, name: str, detail: str, fix: str = "") -> str:
    text = f"  {MARK[status]}  {name}: {detail}"
    return text + (f"\n        fix: {fix}" if status == "fail" and fix else "")


def _platform_lines(found) -> list[str]:
    """The platform facts, one per line, 'not found' where absent."""

    def shown(value, extra: str = "") -> str:
        return f"{value}{extra}" if value else "not found"

    cuda = ", ".join(f"{k} {v}" for k, v in found.cuda.items())
    rows = [
        ("machine", f"{found.machine}, {found.system}, Python {found.python}"),
        ("Jetson", found.jetson_model or "no"),
        ("L4T", shown(found.l4t)),
        ("CUDA", cuda or "not found"),
        ("TensorRT", shown(found.tensorrt)),
        ("cuda-python", shown(found.cuda_python)),
        ("OpenCV", shown(found.opencv, f" (GStreamer: {'yes' if found.opencv_gstreamer else 'no'})")),
        ("ONNX Runtime", shown(found.onnxruntime, f" ({', '.join(found.onnxruntime_providers)})")),
        ("OpenVINO", shown(found.openvino, f" ({', '.join(found.openvino_devices)})")),
    ]
    width = max(len(name) for name, _ in rows)
    return [f"  {name.ljust(width)}  {value}" for name, value in rows]


def run(args: argparse.Namespace) -> int:
    from edge_deeplab import __version__
    from edge_deeplab.doctor import check_bundle, checks, probe_platform
    from runtime.files import atomic_write_text, check_writable

    if args.images < 1 or args.runs < 1 or args.warmup < 0:
        raise EdgeDeeplabError("--images and --runs must be >= 1 and --warmup >= 0")
    if args.json is not None:
        check_writable(args.json, args.force)
    for bundle in args.bundles:
        if not bundle.is_dir():
            raise EdgeDeeplabError(f"{bundle} is not a directory; a bundle is a folder made by 'edge-deeplab export'")

    print(f"edge-deeplab {__version__} doctor")
    found = probe_platform()
    print("platform")
    print("\n".join(_platform_lines(found)))
    results = checks(found)
    print("checks")
    for check in results:
        print(_line(check.status, check.name, check.detail, check.fix))
    bundles = []
    if args.bundles:
        print("bundles")
        options = {"engine_cache_dir": args.engine_cache} if args.engine_cache else {}
        for bundle in args.bundles:
            outcome = check_bundle(bundle, found, args.images, args.runs, args.warmup, options,
                                   lambda message: print(f"  ...   {message}", flush=True))
            bundles.append(outcome)
            kind = f" ({outcome['target']} {outcome['precision']})" if "target" in outcome else ""
            print(_line(outcome["status"], f"{bundle}{kind}", outcome["detail"], outcome.get("fix", "")), flush=True)
    statuses = [c.status for c in results] + [b["status"] for b in bundles]
    failed, skipped = statuses.count("fail"), statuses.count("skip")
    print(f"{statuses.count('ok')} ok, {failed} failed, {skipped} skipped")
    if args.json is not None:
        payload = {
            "edge_deeplab": __version__,
            "platform": found.to_dict(),
            "checks": [vars(c) for c in results],
            "bundles": bundles,
            "summary": {"ok": statuses.count("ok"), "failed": failed, "skipped": skipped},
            "skipped": [{"name": c.name, "reason": c.detail} for c in results if c.status == "skip"]
                       + [{"name": b["bundle"], "reason": b["detail"]} for b in bundles if b["status"] == "skip"],
        }
        atomic_write_text(args.json, json.dumps(payload, indent=2) + "\n", overwrite=args.force)
        print(f"wrote {args.json}")
    sys.stdout.flush()
    return 1 if failed else 0
