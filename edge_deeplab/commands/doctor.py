"""``edge-deeplab doctor [BUNDLE ...]``: is this machine ready to run these bundles? The first command on a device.

Prints the platform (Jetson model, L4T, CUDA, TensorRT, cuda-python, OpenCV and GStreamer, ONNX
Runtime and its providers, OpenVINO), one line per check with the fix when it fails, and for each
bundle: load it (building its TensorRT engine if needed), run a few images, compare the masks
with a reference run of the same model and time p50. ``--json`` keeps all of it. Exit status 0
when nothing failed, 1 when a check or a bundle failed, 2 for bad input. Torch-free, like every
device-side command (:mod:`edge_deeplab.doctor` does the work).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from edge_deeplab.commands.options import EngineCache
from runtime.errors import EdgeDeeplabError

MARK = {"ok": "ok  ", "fail": "FAIL", "skip": "skip"}
app = typer.Typer()


@app.command(help="Print the platform and one line per requirement (with the fix when it fails); for each BUNDLE, "
                  "load it (building a TensorRT engine if needed), run a few images, compare the masks with a "
                  "reference run and time p50. Checks that do not apply here are listed as skipped. Exit status 0 "
                  "when nothing failed, 1 when something did.")
def doctor(
    bundles: Annotated[Optional[List[Path]], typer.Argument(metavar="BUNDLE...", help="bundle folder(s) to try",
                                                            show_default=False)] = None,
    images: Annotated[int, typer.Option(min=1, help="images per bundle")] = 4,
    runs: Annotated[int, typer.Option(min=1, help="timed runs per bundle")] = 20,
    warmup: Annotated[int, typer.Option(min=0, help="untimed runs first")] = 3,
    engine_cache: EngineCache = None,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="write everything found as JSON here")] = None,
    force: Annotated[bool, typer.Option("--force", help="replace an existing --json file")] = False,
) -> int:
    from edge_deeplab import __version__
    from edge_deeplab.doctor import check_bundle, checks, probe_platform
    from runtime.files import atomic_write_text, check_writable
    from runtime.outputs import refuse_overlap

    bundles = bundles or []
    if json_path is not None:
        refuse_overlap(json_path, bundles, "--json")
        check_writable(json_path, force)
    for bundle in bundles:
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
    outcomes = []
    if bundles:
        print("bundles")
        options = {"engine_cache_dir": engine_cache} if engine_cache else {}
        for bundle in bundles:
            outcome = check_bundle(bundle, found, images, runs, warmup, options,
                                   lambda message: print(f"  ...   {message}", flush=True))
            outcomes.append(outcome)
            kind = f" ({outcome['target']} {outcome['precision']})" if "target" in outcome else ""
            print(_line(outcome["status"], f"{bundle}{kind}", outcome["detail"], outcome.get("fix", "")), flush=True)
    statuses = [c.status for c in results] + [b["status"] for b in outcomes]
    failed, skipped = statuses.count("fail"), statuses.count("skip")
    print(f"{statuses.count('ok')} ok, {failed} failed, {skipped} skipped")
    if json_path is not None:
        payload = {
            "edge_deeplab": __version__,
            "platform": found.to_dict(),
            "checks": [vars(c) for c in results],
            "bundles": outcomes,
            "summary": {"ok": statuses.count("ok"), "failed": failed, "skipped": skipped},
            "skipped": [{"name": c.name, "reason": c.detail} for c in results if c.status == "skip"]
                       + [{"name": b["bundle"], "reason": b["detail"]} for b in outcomes if b["status"] == "skip"],
        }
        atomic_write_text(json_path, json.dumps(payload, indent=2) + "\n", overwrite=force)
        print(f"wrote {json_path}")
    sys.stdout.flush()
    return 1 if failed else 0


def _line(status: str, name: str, detail: str, fix: str = "") -> str:
    text = f"  {MARK[status]}  {name}: {detail}"
    return text + (f"\n        fix: {fix}" if status == "fail" and fix else "")


def _int8_line(cpu: dict) -> str:
    """The CPU's INT8 features and what they mean for ONNX Runtime's integer kernels."""
    from runtime.cpu import CpuInfo

    return CpuInfo(cpu.get("model", ""), cpu.get("arch", ""), tuple(cpu.get("int8_features", ())),
                   cpu.get("features_known", False)).describe_int8()


def _platform_lines(found) -> list[str]:
    """The platform facts, one per line, 'not found' where absent."""

    def shown(value, extra: str = "") -> str:
        return f"{value}{extra}" if value else "not found"

    cuda = ", ".join(f"{k} {v}" for k, v in found.cuda.items())
    rows = [
        ("machine", f"{found.machine}, {found.system}, Python {found.python}"),
        ("CPU", f"{found.cpu.get('model', 'unknown')}"),
        ("INT8", _int8_line(found.cpu)),
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
