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


PACKAGES = ("edge_deeplab", "exporters", "calibration", "runtime")


def _module_imports(root) -> dict[str, set[str]]:
    """Each module of PACKAGES -> the modules of PACKAGES it imports, read from the source with ast.

    Every import statement counts wherever it stands: top level, inside functions (lazy imports)
    and under ``if TYPE_CHECKING``. ``from a.b import c`` means the module ``a.b.c`` when that is
    a module, else ``a.b``. The implicit import of a parent package's ``__init__`` is not an edge
    (every submodule would then form a cycle with a package that re-exports it).
    """
    import ast

    files = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            files[".".join(parts)] = path
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                    base = ".".join(anchor + ([base] if base else []))
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    targets.add(full if full in files else base)
        graph[name] = {t for t in targets if t in files and t != name}
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None; depth-first search over the modules in name order."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return None


def test_no_import_cycles():
    from pathlib import Path

    graph = _module_imports(Path(__file__).resolve().parents[1])
    assert len(graph) > 50 and "runtime.errors" in graph["runtime.images"]  # the modules and their imports were found
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)
