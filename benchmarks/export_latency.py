"""Latency and accuracy of every CPU export of one checkpoint, side by side, per output stride.

    PYTHONPATH=. python benchmarks/export_latency.py CHECKPOINT [--strides 16 8] [--size 513x513]

For each output stride the checkpoint is exported (through :func:`exporters.bundle.export_bundle`,
so every model is the verified bundle a user would get) to ONNX FP32, ONNX Runtime INT8, OpenVINO
FP32, FP16 and INT8. The models are then timed *interleaved* (one inference of each in turn, after
a warm-up) so that load from other processes on a shared machine hits all of them alike, and the
median latency is printed as a ratio to PyTorch eager FP32. Each model's mIoU on the validation
images is printed with its change against FP32 in points. The aim checked at the end: each INT8
model at most 0.45x its own FP32 latency, with at most 0.5 mIoU points lost.

OpenVINO FP32 runs with INFERENCE_PRECISION_HINT=f32 (the CPU plugin would otherwise pick bf16
where the CPU has it); FP16 and INT8 run with the plugin's default, and the table names the
precision the plugin actually used.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runtime.telemetry import disable_telemetry  # noqa: E402

disable_telemetry()

AIM_RATIO, AIM_DROP = 0.45, 0.5


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--strides", type=int, nargs="+", default=[16, 8])
    parser.add_argument("--size", default="513x513", help="input HxW (default 513x513)")
    parser.add_argument("--val-data", help="labelled dataset (val split); default: the checkpoint's dataset")
    parser.add_argument("--val-images", type=int, default=50)
    parser.add_argument("--calib-data", help="calibration dataset (train split); default: as --val-data")
    parser.add_argument("--calib-images", type=int, default=100)
    parser.add_argument("--calib-method", default="minmax", choices=("minmax", "entropy", "percentile"))
    parser.add_argument("--max-drop", type=float, default=0.5, help="INT8 accuracy guard in mIoU points (default 0.5)")
    parser.add_argument("--runs", type=int, default=20, help="timed rounds (default 20)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", help="also write the results here")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from edge_deeplab.checkpoint import load_checkpoint
    from edge_deeplab.commands.options import parse_size
    from edge_deeplab.metrics import miou_function
    from edge_deeplab.data.base import open_dataset
    from calibration.selection import select_calibration_set
    from exporters.bundle import export_bundle
    from exporters.request import CalibrationInput, ExportRequest, ValidationInput
    from exporters.openvino import _ov
    from exporters.verify import Validation, ort_runner, points
    from calibration.inputs import InputSpecLite, prepare_samples

    torch.set_num_threads(args.threads)
    ckpt = load_checkpoint(args.checkpoint)
    height, width = parse_size(args.size)
    val_spec = args.val_data or ckpt.dataset or "synthetic"
    calib_spec = args.calib_data or val_spec
    val_data, calib_data = open_dataset(val_spec, "val"), open_dataset(calib_spec, "train")
    miou = miou_function(len(ckpt.classes), ckpt.ignore_index)
    val_indices = list(range(min(args.val_images, len(val_data))))
    chosen = select_calibration_set(calib_data, args.calib_images, len(ckpt.classes), ckpt.ignore_index)
    spec = InputSpecLite(height, width, "float32", tuple(ckpt.mean), tuple(ckpt.std))
    validation = Validation(prepare_samples(val_data, val_indices, spec), miou)
    example = validation.items[0].array
    print(f"checkpoint {args.checkpoint}: {ckpt.model_config.backbone}, width {ckpt.model_config.width_mult}; "
          f"input {height}x{width}; {args.threads} thread(s); val {val_spec} ({len(val_indices)} images); "
          f"calib {calib_spec} ({len(chosen.indices)} images, {args.calib_method}); max-drop {args.max_drop}",
          flush=True)

    results = []
    with tempfile.TemporaryDirectory(prefix="edge-deeplab-bench-") as tmp:
        for stride in args.strides:
            model = ckpt.build_model(stride)

            def bundle(target: str, precision: str) -> Path:
                out = Path(tmp) / f"os{stride}-{target}-{precision}"
                int8 = precision == "int8"
                request = ExportRequest(
                    model=model, target=target, precision=precision, out=out, height=height, width=width,
                    classes=list(ckpt.classes), palette=ckpt.palette, mean=ckpt.mean, std=ckpt.std,
                    verify_samples=[val_data[i] for i in val_indices[:2]], ignore_index=ckpt.ignore_index,
                    model_info={"backbone": ckpt.model_config.backbone, "output_stride": stride},
                    calibration=CalibrationInput(calib_data, chosen, calib_spec, args.calib_method) if int8 else None,
                    validation=ValidationInput(val_data, val_indices, val_spec, miou),
                    max_drop=args.max_drop if int8 else None,
                    log=lambda message: print(f"  {message}", file=sys.stderr, flush=True))
                print(f"OS {stride}: exporting {target} {precision}", file=sys.stderr, flush=True)
                return export_bundle(request)

            ov = _ov()
            core = ov.Core()

            def ov_model(path: Path, hint: str | None):
                config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": args.threads}
                if hint:
                    config["INFERENCE_PRECISION_HINT"] = hint
                compiled = core.compile_model(core.read_model(str(path / "model.xml")), "CPU", config)
                request = compiled.create_infer_request()
                used = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
                return (lambda x: np.asarray(request.infer([x])[0])), used

            def torch_run(x):
                with torch.no_grad():
                    return model(torch.from_numpy(x)).numpy()

            onnx_fp32, ort_int8 = bundle("onnx", "fp32"), bundle("onnxruntime", "int8")
            ov_paths = {p: bundle("openvino", p) for p in ("fp32", "fp16", "int8")}
            rows = [("pytorch eager", "fp32", torch_run, "fp32")]
            rows.append(("onnxruntime", "fp32", ort_runner(onnx_fp32 / "model.onnx", args.threads), "fp32"))
            rows.append(("onnxruntime", "int8", ort_runner(ort_int8 / "model.onnx", args.threads), "int8"))
            for precision, hint in (("fp32", "f32"), ("fp16", None), ("int8", None)):
                run, used = ov_model(ov_paths[precision], hint)
                rows.append(("openvino", precision, run, used))

            times: dict[int, list[float]] = {i: [] for i in range(len(rows))}
            for _ in range(args.warmup):
                for _, _, run, _ in rows:
                    run(example)
            for _ in range(args.runs):  # interleaved: one of each per round
                for i, (_, _, run, _) in enumerate(rows):
                    start = time.perf_counter()
                    run(example)
                    times[i].append(time.perf_counter() - start)
            scores = [validation.score(run) for _, _, run, _ in rows]
            base = statistics.median(times[0])
            fp32_ms = {}
            print(f"\nOS {stride}, {height}x{width}, median of {args.runs} interleaved runs")
            print(f"{'backend':<14} {'prec':<5} {'computes':<9} {'p50 ms':>8} {'x eager':>8} {'x own fp32':>10} "
                  f"{'mIoU':>6} {'d pts':>6}")
            for i, (backend, precision, _, used) in enumerate(rows):
                ms = statistics.median(times[i]) * 1000
                if precision == "fp32":
                    fp32_ms[backend] = ms
                fp32_score = scores[1] if backend == "onnxruntime" else scores[3] if backend == "openvino" else scores[0]
                own = ms / fp32_ms[backend] if backend in fp32_ms else float("nan")
                row = {"output_stride": stride, "backend": backend, "precision": precision, "computes": used,
                       "p50_ms": ms, "ratio_to_eager": ms / (base * 1000), "ratio_to_own_fp32": own,
                       "miou": points(scores[i]), "delta_points": points(scores[i] - fp32_score)}
                results.append(row)
                print(f"{backend:<14} {precision:<5} {used:<9} {ms:8.1f} {row['ratio_to_eager']:8.2f} {own:10.2f} "
                      f"{row['miou']:6.2f} {row['delta_points']:+6.2f}")
            for row in results:
                if row["output_stride"] == stride and row["precision"] == "int8":
                    ok = row["ratio_to_own_fp32"] <= AIM_RATIO and -row["delta_points"] <= AIM_DROP
                    print(f"aim {row['backend']} int8: {row['ratio_to_own_fp32']:.2f}x own fp32 (<= {AIM_RATIO}), "
                          f"{-row['delta_points']:.2f} points lost (<= {AIM_DROP}): {'met' if ok else 'NOT met'}")
            sys.stdout.flush()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
