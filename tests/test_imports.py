"""The import direction of the design: what runs on a device must work without torch."""

from __future__ import annotations

import subprocess
import sys

BLOCK_TORCH = "import sys; sys.modules['torch'] = None\n"  # any 'import torch' now raises ImportError


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_packages_and_cli_import_without_torch():
    proc = run_python(
        BLOCK_TORCH
        + "import edge_deeplab, runtime, exporters, calibration\n"
        + "import edge_deeplab.metrics, edge_deeplab.evaluate, edge_deeplab.data.base, edge_deeplab.config\n"
        + "from edge_deeplab.models.config import ModelConfig\n"
        + "import importlib, typer\n"
        + "from edge_deeplab.cli import COMMANDS\n"
        + "for module, _ in COMMANDS.values():\n"
        + "    typer.main.get_command(importlib.import_module(module).app)\n"
        + "print('ok')\n"
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-1500:]


def test_device_commands_help_without_torch():
    for command in ("infer", "benchmark", "evaluate", "report"):
        proc = run_python(BLOCK_TORCH + f"from edge_deeplab.cli import main\nmain(['{command}', '--help'])\n")
        assert proc.returncode == 0 and "usage:" in proc.stdout.lower(), (command, proc.stderr[-1500:])


def test_top_level_help_loads_no_command_and_no_heavy_package():
    """``edge-deeplab --help`` lists the commands from the CLI's table, importing none of them."""
    proc = run_python(
        "import sys\n"
        "from edge_deeplab.cli import main\n"
        "code = main(['--help'])\n"
        "heavy = {'torch', 'onnx', 'onnxruntime', 'nncf', 'openvino', 'tensorrt', 'cv2'}\n"
        "loaded = {m.split('.')[0] for m in sys.modules} & heavy\n"
        "commands = {m for m in sys.modules if m.startswith('edge_deeplab.commands.')} - {'edge_deeplab.commands.options'}\n"
        "print(code, sorted(loaded), sorted(commands), file=sys.stderr)\n"
    )
    assert proc.returncode == 0 and proc.stderr.strip().splitlines()[-1] == "0 [] []", proc.stderr[-1500:]
    assert "pipeline" in proc.stdout and "import-checkpoint" in proc.stdout


def test_runtime_imports_no_heavy_package():
    proc = run_python(
        "import sys, runtime\n"
        "heavy = {'torch', 'onnx', 'nncf', 'openvino', 'tensorrt', 'edge_deeplab', 'exporters', 'calibration'}\n"
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))\n"
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr[-1500:]
