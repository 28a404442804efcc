"""The report: combination planning, FP32 references, the Pareto front, skipped rows, the files, and
a real small report checked against itself (ONNX Runtime and OpenVINO FP32 agree, every figure is
there, the plots are images), then the same bundles measured again with torch made unimportable.

The slow part exports the session's tiny MobileNetV2 DeepLabv3+ (width 0.35, trained for a few
steps; test_export's fixture) at 64x64 to four bundles and scores them on eight synthetic images.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_deeplab.report import (
    Combination,
    Report,
    Row,
    SampleList,
    TimingSettings,
    assign_references,
    find_bundles,
    mark_pareto,
    measure_bundles,
    pareto_front,
    plan_combinations,
    to_csv,
    to_markdown,
)
from runtime.errors import EdgeDeeplabError
from test_export import checkpoint  # noqa: F401  (the session's tiny trained checkpoint)
from tiny_model import train_tiny_checkpoint
from runtime.manifest import InputSpec, Manifest, write_manifest

ROOT = Path(__file__).resolve().parents[1]
VAL = "synthetic:size=64,n=8"
CALIB = "synthetic:size=64,n=16"


def cli(*args) -> int:
    from edge_deeplab.cli import main

    return main([str(a) for a in args])


# -- planning, references, Pareto ------------------------------------------------------------------------

def test_plan_keeps_only_offered_pairs_in_table_order():
    combos = plan_combinations([32, 8], ["openvino", "onnx", "onnxruntime"], ["int8", "fp32"])
    assert [c.name for c in combos] == [
        "os8-onnx-fp32", "os8-onnxruntime-int8", "os8-openvino-fp32", "os8-openvino-int8",
        "os32-onnx-fp32", "os32-onnxruntime-int8", "os32-openvino-fp32", "os32-openvino-int8",
    ]
    with pytest.raises(EdgeDeeplabError, match="output stride"):
        plan_combinations([4], ["onnx"], ["fp32"])
    with pytest.raises(EdgeDeeplabError, match="no target offers"):
        plan_combinations([16], ["onnxruntime"], ["fp32"])


def test_plan_with_qat_gives_each_int8_combination_a_ptq_and_a_qat_row():
    combos = plan_combinations([16], ["onnx", "onnxruntime", "openvino"], ["fp32", "int8"], qat=True)
    assert [c.name for c in combos] == [
        "os16-onnx-fp32", "os16-onnxruntime-int8", "os16-onnxruntime-int8-qat", "os16-openvino-fp32",
        "os16-openvino-int8", "os16-openvino-int8-qat",
    ]
    assert [c.qat for c in combos] == [False, False, True, False, False, True]


def _row(stride: int, target: str, precision: str, miou: float, p50: float) -> Row:
    combo = Combination(stride, target, precision)
    return Row(combo.name, stride, target, precision, miou=miou, latency={"p50_ms": p50})


def test_delta_is_taken_against_fp32_of_the_same_stride_and_runtime():
    rows = [
        _row(16, "onnx", "fp32", 0.70, 10), _row(16, "onnxruntime", "int8", 0.68, 5),
        _row(16, "openvino", "fp32", 0.71, 9), _row(16, "openvino", "int8", 0.705, 4),
        _row(8, "onnx", "fp32", 0.75, 30), _row(8, "openvino", "fp16", 0.745, 20),
    ]
    assign_references(rows)
    by = {r.name: r for r in rows}
    assert by["os16-onnxruntime-int8"].reference == "os16-onnx-fp32"
    assert by["os16-onnxruntime-int8"].delta_points == pytest.approx(-2.0)
    assert by["os16-openvino-int8"].reference == "os16-openvino-fp32"
    assert by["os16-openvino-int8"].delta_points == pytest.approx(-0.5)
    assert by["os16-openvino-fp32"].reference == "os16-openvino-fp32" and by["os16-openvino-fp32"].delta_points == 0
    # No OpenVINO FP32 at stride 8: the onnx FP32 row of that stride, never one of another stride.
    assert by["os8-openvino-fp16"].reference == "os8-onnx-fp32"
    assert by["os8-openvino-fp16"].delta_points == pytest.approx(-0.5)


def test_pareto_front():
    points = [(10.0, 0.70), (5.0, 0.68), (9.0, 0.71), (4.0, 0.705), (30.0, 0.75), (20.0, 0.745), (12.0, 0.70)]
    assert pareto_front(points) == [3, 2, 5, 4]
    assert pareto_front([(1.0, 0.5), (1.0, 0.5)]) == [0, 1]  # ties dominate neither
    rows = [_row(16, "onnx", "fp32", m, p) for p, m in points[:2]]
    rows[1] = _row(16, "openvino", "fp32", 0.68, 5.0)
    mark_pareto(rows)
    assert [r.pareto for r in rows] == [True, True]


# -- skipped bundles and the files -----------------------------------------------------------------------

def _fake_bundle(path: Path, target: str, precision: str, classes: list[str]) -> Path:
    """A bundle folder with a manifest and a placeholder model file (never loaded by these tests)."""
    path.mkdir(parents=True)
    (path / "model.onnx").write_bytes(b"placeholder model bytes")
    manifest = Manifest(target=target, precision=precision, files={"model": "model.onnx"},
                        input=InputSpec(shape=[1, 3, 64, 64]), classes=classes, palette=[[0, 0, 0]] * len(classes),
                        mean=[0.5] * 3, std=[0.25] * 3, model={"output_stride": 16})
    write_manifest(path, manifest)
    return path


@pytest.fixture(scope="module")
def samples() -> SampleList:
    from edge_deeplab.data.base import open_dataset

    return SampleList(open_dataset(VAL, "val"), 4)


def test_bundles_that_cannot_run_here_are_skipped_with_the_reason(tmp_path, samples, monkeypatch):
    import edge_deeplab.report.plan as plan

    _fake_bundle(tmp_path / "trt", "tensorrt", "int8", samples.classes)
    _fake_bundle(tmp_path / "other", "onnx", "fp32", ["background", "cat"])
    # Whatever this machine has, pretend TensorRT is absent (its message is what a CPU host shows).
    real = plan.util.find_spec
    monkeypatch.setattr(plan.util, "find_spec", lambda name, *a: None if name == "tensorrt" else real(name, *a))
    bundles = find_bundles(tmp_path)
    assert [(c.target, c.precision, c.output_stride) for c, _ in bundles] == [("onnx", "fp32", 16),
                                                                              ("tensorrt", "int8", 16)]
    rows = measure_bundles(bundles, samples, (2, 4), TimingSettings(runs=1, warmup=0))
    assert [r.status for r in rows] == ["skipped", "skipped"]
    assert "classes" in rows[0].reason
    assert rows[1].reason.startswith("TensorRT is not importable here")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EdgeDeeplabError, match="holds no bundle"):
        find_bundles(tmp_path / "empty")


def test_markdown_and_csv_list_skipped_rows_with_their_reason():
    rows = [_row(16, "onnx", "fp32", 0.5, 3.0), Row("os16-tensorrt-int8", 16, "tensorrt", "int8", status="skipped",
                                                  reason="TensorRT is not importable here",
                                                  bundle="bundles/os16-tensorrt-int8")]
    rows[0].boundary_miou, rows[0].per_class_iou, rows[0].pixel_accuracy = {4: 0.4}, {"a": 0.5, "b": None}, 0.9
    report = Report("t", {}, {"data": "d", "split": "val", "images": 1, "input_size": "64x64", "timing": "x"},
                    rows, headline_width=4, machine={"cpu": "cpu", "cores": 2, "os": "os"}, versions={})
    assign_references(report.rows)
    markdown = to_markdown(report)
    assert "| 16 | onnx | fp32 | 50.00 | 40.00 | 90.00 | 3.00 |" in markdown
    assert "- os16-tensorrt-int8: TensorRT is not importable here (bundle: bundles/os16-tensorrt-int8)" in markdown
    assert "| os16-onnx-fp32 | 50.0 | n/a |" in markdown  # per-class table, undefined IoU shown as n/a
    lines = list(csv.DictReader(io.StringIO(to_csv(report))))
    assert [(r["target"], r["status"]) for r in lines] == [("onnx", "measured"), ("tensorrt", "skipped")]
    assert lines[1]["reason"] == "TensorRT is not importable here" and lines[1]["miou"] == ""
    assert float(lines[0]["boundary_miou_4px"]) == 0.4


def test_report_rejects_bad_requests_before_any_work(tmp_path, capsys):
    assert cli("report") == 2
    assert "give checkpoints" in capsys.readouterr().err
    assert cli("report", "x.pt", "--band-width", "3", "--out", tmp_path / "r") == 2
    assert "--band-width 3 is not one of" in capsys.readouterr().err
    (tmp_path / "exists").mkdir()
    assert cli("report", "x.pt", "--out", tmp_path / "exists") == 2
    assert "already exists" in capsys.readouterr().err
    assert cli("report", "--bundles", tmp_path / "missing", "--out", tmp_path / "r") == 2
    assert "is not a directory" in capsys.readouterr().err
    assert cli("report", "x.pt", "--targets", "onnx,coreml") == 2
    assert "coreml: choose from onnx, onnxruntime, openvino, tensorrt" in capsys.readouterr().err


def test_qat_without_int8_is_refused_before_any_work(tmp_path, capsys):
    def refused(*args) -> str:
        assert cli(*args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and not (tmp_path / "r").exists()
        return err[0]

    assert "--precisions fp32,fp16 has no int8" in refused("report", "x.pt", "--qat", 2, "--precisions", "fp32,fp16",
                                                          "--out", tmp_path / "r")
    assert "none of --targets onnx offers int8" in refused("report", "x.pt", "--qat", 2, "--targets", "onnx",
                                                           "--out", tmp_path / "r")
    assert "--qat-lr goes with --qat" in refused("report", "x.pt", "--qat-lr", "1e-3", "--out", tmp_path / "r")
    (tmp_path / "bundles").mkdir()
    assert "--qat applies when exporting" in refused("report", "--bundles", tmp_path / "bundles", "--qat", 2,
                                                     "--out", tmp_path / "r")
    # The pipeline says so before training, not after.
    assert "has no int8" in refused("pipeline", "--qat", 2, "--precisions", "fp32", "--out", tmp_path / "r")


def test_pipeline_reuses_a_finished_run_only_with_the_same_options(tmp_path, capsys):
    from edge_deeplab.commands.pipeline import train_or_reuse
    from edge_deeplab.config import make_config

    config = make_config({}, {"out": str(tmp_path / "train"), "iterations": 10})
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "best.pt").write_bytes(b"checkpoint")
    (tmp_path / "train" / "train_config.json").write_text(json.dumps(config.to_dict()))
    assert train_or_reuse(config, force=False) == tmp_path / "train" / "best.pt"
    assert "reusing the trained model" in capsys.readouterr().err
    with pytest.raises(EdgeDeeplabError, match="other iterations"):
        train_or_reuse(make_config({}, {"out": str(tmp_path / "train"), "iterations": 20}), force=False)
    # A run saved before the head was resolved at configuration time (separable: null) was dense.
    saved = json.loads((tmp_path / "train" / "train_config.json").read_text())
    (tmp_path / "train" / "train_config.json").write_text(json.dumps({**saved, "separable": None}))
    with pytest.raises(EdgeDeeplabError, match="other separable"):
        train_or_reuse(config, force=False)
    dense = make_config({}, {"out": str(tmp_path / "train"), "iterations": 10, "separable": False})
    assert train_or_reuse(dense, force=False) == tmp_path / "train" / "best.pt"


# -- a real report ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_report(checkpoint, tmp_path_factory) -> Path:  # noqa: F811
    """One real report of the session's tiny checkpoint: OS 16, onnx + openvino FP32, onnxruntime +
    openvino INT8."""
    base = tmp_path_factory.mktemp("report")
    out = base / "out"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EDGE_DEEPLAB_CACHE", str(base / "cache"))  # calibration ranges stay in the test's folder
        code = cli("report", checkpoint, "--data", VAL, "--output-strides", "16", "--targets",
                   "onnx,onnxruntime,openvino", "--precisions", "fp32,int8", "--calib-data", CALIB,
                   "--calib-images", 8, "--runs", 3, "--warmup", 1, "--out", out)
    assert code == 0
    return out


@pytest.mark.slow
def test_report_figures_are_complete_and_consistent(small_report):
    from PIL import Image

    data = json.loads((small_report / "report.json").read_text())
    rows = {r["name"]: r for r in data["rows"]}
    assert list(rows) == ["os16-onnx-fp32", "os16-onnxruntime-int8", "os16-openvino-fp32", "os16-openvino-int8"]
    classes = None
    for row in rows.values():
        assert row["status"] == "measured" and row["images"] == 8
        assert 0 <= row["miou"] <= 1 and 0 <= row["pixel_accuracy"] <= 1
        assert set(row["boundary_miou"]) == {"2", "4", "8", "16"}
        classes = classes or list(row["per_class_iou"])
        assert list(row["per_class_iou"]) == classes and len(classes) == 7
        latency = row["latency"]
        assert 0 < latency["p50_ms"] <= latency["p90_ms"] and latency["runs"] == 3 and latency["fps"] > 0
        assert row["size_mb"] > 0 and row["delta_points"] is not None and row["reference"]
        assert (small_report / row["bundle"] / "model.json").is_file()
    # The same FP32 graph on two runtimes gives the same masks, up to float rounding at a few pixels.
    assert rows["os16-openvino-fp32"]["miou"] == pytest.approx(rows["os16-onnx-fp32"]["miou"], abs=0.005)
    assert rows["os16-onnxruntime-int8"]["reference"] == "os16-onnx-fp32"
    assert rows["os16-openvino-int8"]["reference"] == "os16-openvino-fp32"
    assert rows["os16-onnxruntime-int8"]["size_mb"] < 0.5 * rows["os16-onnx-fp32"]["size_mb"]
    assert rows["os16-openvino-int8"]["size_mb"] < 0.5 * rows["os16-openvino-fp32"]["size_mb"]
    fastest = min(rows.values(), key=lambda r: (r["latency"]["p50_ms"], -r["miou"]))
    assert fastest["pareto"]
    assert data["machine"]["cores"] == os.cpu_count() and data["versions"]["onnxruntime"]
    assert data["settings"]["images"] == 8 and data["settings"]["runs"] == 3
    # Markdown and CSV carry the same rows.
    markdown = (small_report / "report.md").read_text()
    for name, row in rows.items():
        assert f"| 16 | {row['target']} | {row['precision']} | {100 * row['miou']:.2f} |" in markdown
    lines = list(csv.DictReader(io.StringIO((small_report / "report.csv").read_text())))
    assert [float(line["miou"]) for line in lines] == [r["miou"] for r in rows.values()]
    for name in ("miou_vs_latency.png", "boundary_miou.png"):
        with Image.open(small_report / name) as image:
            assert image.format == "PNG" and image.width >= 600 and image.height >= 400
            assert len(np.unique(np.asarray(image.convert("L")))) > 8  # something drawn, not a blank canvas


@pytest.mark.slow
def test_report_with_qat_has_a_ptq_and_a_qat_row_and_their_cost(checkpoint, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("EDGE_DEEPLAB_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    assert cli("report", checkpoint, "--data", VAL, "--output-strides", "16", "--targets", "onnxruntime",
               "--precisions", "int8", "--qat", 2, "--calib-data", CALIB, "--calib-images", 8, "--val-images", 4,
               "--runs", 2, "--warmup", 0, "--out", out) == 0
    rows = json.loads((out / "report.json").read_text())["rows"]
    assert [(r["name"], r["qat"], r["status"], r["images"]) for r in rows] == [
        ("os16-onnxruntime-int8", False, "measured", 4), ("os16-onnxruntime-int8-qat", True, "measured", 4)]
    # Both measured by the report itself: QAT's own export record is not copied into the row.
    assert all(0 <= r["miou"] <= 1 and r["latency"]["runs"] == 2 for r in rows)
    markdown = (out / "report.md").read_text()
    assert "| OS | target | precision | quant | mIoU % |" in markdown
    assert "| 16 | onnxruntime | int8 | PTQ |" in markdown and "| 16 | onnxruntime | int8 | QAT |" in markdown
    seconds = json.loads((out / "bundles" / "os16-onnxruntime-int8-qat" / "model.json").read_text()
                         )["calibration"]["qat"]["seconds"]
    assert (f"- QAT: the quant column's QAT rows were fine-tuned for 2 steps at lr 0.0001 after calibration, the PTQ "
            f"rows not; the fine-tuning took {seconds / 60:.1f} min in all (1 bundle)") in markdown
    assert [line["quant"] for line in csv.DictReader(io.StringIO((out / "report.csv").read_text()))] == ["PTQ", "QAT"]
    # Read back from the folder, the bundle exported with --qat is the QAT row again.
    assert [(c.name, c.qat) for c, _ in find_bundles(out / "bundles")] == [("os16-onnxruntime-int8", False),
                                                                           ("os16-onnxruntime-int8-qat", True)]


@pytest.mark.slow
def test_report_is_not_overwritten_without_force(small_report):
    before = (small_report / "report.json").read_bytes()
    assert cli("report", "--bundles", small_report / "bundles", "--out", small_report) == 2
    assert (small_report / "report.json").read_bytes() == before


@pytest.mark.slow
def test_bundles_report_runs_without_torch_and_reproduces_the_scores(small_report, tmp_path):
    out = tmp_path / "device-report"
    script = (
        "import sys\n"
        "for name in ('torch', 'onnx', 'nncf'):\n"
        "    sys.modules[name] = None  # importing any of them now fails, as on a device without them\n"
        "from edge_deeplab.cli import main\n"
        f"code = main(['report', '--bundles', {str(small_report / 'bundles')!r}, '--data', {VAL!r},\n"
        f"             '--runs', '2', '--warmup', '0', '--out', {str(out)!r}])\n"
        "loaded = [m for m, v in sys.modules.items() if v is not None and m.split('.')[0] in ('torch', 'onnx', 'nncf')]\n"
        "assert not loaded, loaded\n"
        "sys.exit(code)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    first = {r["name"]: r for r in json.loads((small_report / "report.json").read_text())["rows"]}
    again = {r["name"]: r for r in json.loads((out / "report.json").read_text())["rows"]}
    assert list(again) == list(first)
    for name, row in again.items():
        assert row["miou"] == pytest.approx(first[name]["miou"], abs=1e-6)
        assert row["latency"]["runs"] == 2
    assert "bundles in" in (out / "report.md").read_text()


@pytest.mark.slow
def test_pipeline_trains_reports_and_then_reuses_the_run(tmp_path):
    # In a fresh process, as a user runs it: training forks data-loader workers, which is unsafe in
    # a process where earlier tests already started OpenVINO's and ONNX Runtime's thread pools.
    args = ["pipeline", "--data", "synthetic:size=64,n=16", "--iterations", "2", "--batch-size", "2",
            "--heads", "dense,separable", "--output-strides", "32", "--targets", "onnx", "--precisions", "fp32",
            "--val-images", "4", "--runs", "2", "--warmup", "0", "--out", str(tmp_path / "demo")]
    env = {**os.environ, "EDGE_DEEPLAB_CACHE": str(tmp_path / "cache")}

    def pipeline() -> subprocess.CompletedProcess:
        result = subprocess.run([sys.executable, "-m", "edge_deeplab.cli", *args], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        return result

    first = pipeline()
    # One table, one row per head, the model column naming the head.
    assert "| mobilenetv2 dense | 32 | onnx | fp32 |" in first.stdout
    assert "| mobilenetv2 separable | 32 | onnx | fp32 |" in first.stdout and "reusing" not in first.stderr
    for head in ("dense", "separable"):
        assert (tmp_path / "demo" / head / "best.pt").is_file()
    report = json.loads((tmp_path / "demo" / "report" / "report.json").read_text())
    assert [(r["model"], r["status"]) for r in report["rows"]] == [("mobilenetv2 dense", "measured"),
                                                                   ("mobilenetv2 separable", "measured")]
    # Again with --quick and without --runs: the finished runs are reused (the options given still
    # win over the preset), the report is measured again and replaced, with --quick's 10 timed runs.
    args[args.index("--runs"):args.index("--runs") + 2] = ["--quick"]
    second = pipeline()
    assert second.stderr.count("reusing the trained model") == 2
    again = json.loads((tmp_path / "demo" / "report" / "report.json").read_text())
    assert [r["miou"] for r in again["rows"]] == [r["miou"] for r in report["rows"]]
    assert [r["latency"]["runs"] for r in again["rows"]] == [10, 10] and again["created"] >= report["created"]


def test_pipeline_rejects_an_unknown_head_before_training(tmp_path, capsys):
    assert cli("pipeline", "--heads", "dense,huge", "--out", tmp_path / "demo") == 2
    assert "--heads 'dense,huge': choose from dense, separable" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()


def test_model_labels_name_the_head_then_what_else_differs():
    from edge_deeplab.checkpoint import Checkpoint
    from edge_deeplab.models.config import ModelConfig
    from edge_deeplab.report import model_labels

    def ckpt(separable: bool, iterations: int, name: str) -> Checkpoint:
        config = ModelConfig("mobilenetv2", 7, 16, separable=separable)
        return Checkpoint(config, {}, [], [], [], [], train_state={"config": {"iterations": iterations, "out": name}},
                          path=Path(f"{name}.pt"))

    assert model_labels([ckpt(False, 1600, "a"), ckpt(True, 1600, "b")]) == ["mobilenetv2 dense",
                                                                            "mobilenetv2 separable"]
    assert model_labels([ckpt(False, 1600, "a"), ckpt(True, 1600, "b"), ckpt(True, 3200, "c")]) == [
        "mobilenetv2 dense 1600 steps", "mobilenetv2 separable 1600 steps", "mobilenetv2 separable 3200 steps"]
    assert model_labels([ckpt(True, 1600, "a"), ckpt(True, 1600, "b")]) == [
        "mobilenetv2 separable (a)", "mobilenetv2 separable (b)"]


def test_references_stay_within_one_model():
    rows = [_row(16, "onnx", "fp32", 0.70, 10), _row(16, "onnxruntime", "int8", 0.69, 5),
            _row(16, "onnx", "fp32", 0.60, 4), _row(16, "onnxruntime", "int8", 0.58, 2)]
    for row, model in zip(rows, ["dense", "dense", "separable", "separable"]):
        row.model, row.name = model, f"{model}-{row.name}"
    assign_references(rows)
    assert [r.reference for r in rows] == ["dense-os16-onnx-fp32"] * 2 + ["separable-os16-onnx-fp32"] * 2
    assert rows[3].delta_points == pytest.approx(-2.0)


def test_checkpoints_with_other_classes_are_refused_in_one_report(tmp_path, capsys):
    from edge_deeplab.checkpoint import load_checkpoint, save_checkpoint

    first = train_tiny_checkpoint(tmp_path / "a.pt", steps=1, data="synthetic:size=64,n=8", dataset=VAL)
    other = load_checkpoint(first)
    other.classes = ["sky", *other.classes[1:]]
    second = save_checkpoint(other, tmp_path / "b.pt")
    assert cli("report", first, second, "--targets", "onnx", "--out", tmp_path / "r") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "predicts other classes" in err[-1] and not (tmp_path / "r").exists()
