"""``edge-deeplab doctor``: run here through the CLI on real exported bundles, plus its platform rules.

On this CPU host the command must run every check that applies (ONNX Runtime, OpenVINO, OpenCV,
the onnxruntime and openvino bundles end to end) and list the TensorRT parts as skipped with a
reason; the Jetson rules are checked on platform descriptions, since no Jetson is here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edge_deeplab.doctor import Platform, checks, read_l4t
from test_export import CALIB, SIZE, VAL, checkpoint, export  # noqa: F401  (checkpoint is a fixture)
from test_runtime_bundles import build_bundle

ROOT = Path(__file__).resolve().parents[1]
# The CLI in a fresh interpreter, failing if the command pulled in torch, onnx or nncf.
RUN_CLI = (
    "import sys\n"
    "from edge_deeplab.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "heavy = sorted(m for m in ('torch', 'onnx', 'nncf', 'tensorrt') if m in sys.modules)\n"
    "sys.exit(f'doctor imported {heavy}') if heavy else sys.exit(code)\n"
)


def doctor(*args: object) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", RUN_CLI, "doctor", *map(str, args)], capture_output=True,
                          text=True, timeout=300, env=env, cwd=ROOT)


@pytest.fixture(scope="module")
def bundles(checkpoint, tmp_path_factory) -> dict[str, Path]:  # noqa: F811
    root = tmp_path_factory.mktemp("doctor")
    out = {"ort": root / "ort-int8", "trt": root / "trt-int8", "ov": root / "ov-fp16"}
    assert export(checkpoint, "--target", "onnxruntime", "--input-size", SIZE, "--calib-data", CALIB,
                  "--calib-images", 8, "--val-data", VAL, "--out", out["ort"]) == 0
    assert export(checkpoint, "--target", "tensorrt", "--precision", "int8", "--input-size", SIZE, "--calib-data",
                  CALIB, "--calib-images", 8, "--val-data", VAL, "--out", out["trt"]) == 0
    build_bundle(out["ov"], kind="conv", target="openvino", precision="fp16")
    return out


def test_doctor_here_runs_what_applies_and_skips_tensorrt_with_a_reason(bundles, tmp_path):
    pytest.importorskip("openvino")
    report = tmp_path / "doctor.json"
    result = doctor(bundles["ort"], bundles["ov"], bundles["trt"], "--runs", 3, "--json", report)
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(report.read_text())
    assert data["platform"]["onnxruntime"] and "CPUExecutionProvider" in data["platform"]["onnxruntime_providers"]
    assert data["platform"]["is_jetson"] is False and data["platform"]["tensorrt"] is None
    cpu = data["platform"]["cpu"]  # the features that decide INT8 behaviour, whatever this CPU has
    assert cpu["model"] and isinstance(cpu["int8_features"], list) and isinstance(cpu["int8_pairs_saturate"], bool)
    assert "\n  CPU " in result.stdout and "\n  INT8 " in result.stdout
    status = {c["name"]: c["status"] for c in data["checks"]}
    assert status["python"] == status["onnxruntime"] == status["openvino"] == "ok"
    assert status["tensorrt"] == status["l4t"] == status["cuda-python"] == status["gpu"] == "skip"
    ort, ov, trt = data["bundles"]
    assert (ort["target"], ort["status"]) == ("onnxruntime", "ok")
    assert ort["agreement"] >= ort["min_agreement"] > 0.9 and ort["latency_ms"]["p50"] > 0 and ort["latency_ms"]["runs"] == 3
    assert "graph optimizations disabled" in ort["reference"] and ort["int8_kernels"].startswith("exact")
    assert "synthetic:size=64,n=12, the bundle's dataset" in ort["images"]  # the dataset the export recorded
    assert (ov["target"], ov["status"]) == ("openvino", "ok") and "f32" in ov["reference"]
    assert "built-in synthetic set (the bundle records no dataset)" in ov["images"]
    assert (trt["target"], trt["status"]) == ("tensorrt", "skip") and "TensorRT is not importable" in trt["detail"]
    skipped = {s["name"]: s["reason"] for s in data["skipped"]}
    assert str(bundles["trt"]) in skipped and "tensorrt" in skipped
    assert data["summary"] == {"ok": 6, "failed": 0, "skipped": 5}
    assert "skip  " + str(bundles["trt"]) in result.stdout and "FAIL" not in result.stdout


def test_doctor_json_is_not_overwritten_and_bad_input_is_one_line(bundles, tmp_path):
    report = tmp_path / "doctor.json"
    report.write_text("keep")
    result = doctor("--json", report)
    assert result.returncode == 2 and report.read_text() == "keep"
    assert result.stderr.strip() == f"edge-deeplab doctor: error: {report} already exists; pass --force to replace it"
    assert doctor("--json", report, "--force").returncode == 0 and json.loads(report.read_text())["bundles"] == []
    missing = doctor(tmp_path / "nope")
    assert missing.returncode == 2 and "is not a directory" in missing.stderr and "Traceback" not in missing.stderr


def test_doctor_reports_a_damaged_bundle_as_failed(bundles, tmp_path):
    import shutil

    damaged = tmp_path / "damaged"
    shutil.copytree(bundles["ort"], damaged)
    with open(damaged / "model.onnx", "r+b") as fh:
        fh.truncate(1000)
    result = doctor(damaged, "--runs", 1)
    assert result.returncode == 1
    assert f"FAIL  {damaged}" in result.stdout and "does not match its manifest" in result.stdout


def test_l4t_release_is_read_from_nv_tegra_release():
    line = "# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64, DATE: Fri Sep 13 04:36:44 UTC 2024"
    assert read_l4t(line) == "36.4.0"
    assert read_l4t("# R35 (release), REVISION: 5.0, GCID: 35550185") == "35.5.0"
    assert read_l4t("garbage") is None


def _jetson(**changes) -> Platform:
    """An Orin on JetPack 6.1 with everything in order, then the given changes."""
    found = Platform(python="3.10.12", system="Linux-5.15.148-tegra-aarch64", machine="aarch64",
                     jetson_model="NVIDIA Jetson AGX Orin Developer Kit", l4t="36.4.0",
                     cuda={"driver": "12.6", "runtime": "12.6"}, tensorrt="10.3.0", cuda_python="12.6.2.post1",
                     opencv="4.5.4", opencv_gstreamer=True, onnxruntime="1.20.1",
                     onnxruntime_providers=["CPUExecutionProvider"], gpus=1)
    for name, value in changes.items():
        setattr(found, name, value)
    return found


def _by_name(found: Platform) -> dict[str, tuple[str, str, str]]:
    return {c.name: (c.status, c.detail, c.fix) for c in checks(found)}


def test_jetson_rules_name_the_problem_and_the_fix():
    good = _by_name(_jetson())
    assert {name: status for name, (status, _, _) in good.items()} == {
        "python": "ok", "onnxruntime": "ok", "openvino": "skip", "opencv": "ok", "l4t": "ok", "tensorrt": "ok",
        "cuda-python": "ok", "gpu": "ok"}
    status, detail, fix = _by_name(_jetson(cuda_python="13.0.1"))["cuda-python"]
    assert status == "fail" and "13.0.1" in detail and fix == "pip install 'cuda-python>=12.6,<13'"
    status, detail, fix = _by_name(_jetson(l4t="36.3.0"))["l4t"]
    assert status == "fail" and "JetPack 6.1" in detail
    status, detail, fix = _by_name(_jetson(tensorrt=None, tensorrt_error="libnvinfer.so.10: cannot open shared object"))["tensorrt"]
    assert status == "fail" and "libnvinfer" in detail and "--runtime nvidia" in fix
    assert _by_name(_jetson(tensorrt="8.6.2"))["tensorrt"][0] == "fail"
    status, _, fix = _by_name(_jetson(opencv_gstreamer=False))["opencv"]
    assert status == "fail" and "python3-opencv" in fix
    status, _, fix = _by_name(_jetson(gpus=0, gpu_error=None))["gpu"]
    assert status == "fail" and "--runtime nvidia" in fix
