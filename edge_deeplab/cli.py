"""The ``edge-deeplab`` command line.

Each subcommand lives in its own module that exposes ``add_parser(subparsers)`` and ``run(args)``;
the modules are imported only when their command runs, so ``edge-deeplab infer`` on a Jetson never
imports torch. A :class:`runtime.errors.EdgeDeeplabError` is a user error: it is printed as one
line and the exit status is 2, and so is a write that failed because the disk is full. Ctrl-C
exits with 130.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from runtime.errors import EdgeDeeplabError

# command name -> module holding add_parser() and run(); order is the order shown in --help.
COMMANDS = {
    "train": "edge_deeplab.commands.train",
    "evaluate": "edge_deeplab.commands.evaluate",
    "export": "edge_deeplab.commands.export",
    "infer": "edge_deeplab.commands.infer",
    "benchmark": "edge_deeplab.commands.benchmark",
    "report": "edge_deeplab.commands.report",
    "pipeline": "edge_deeplab.commands.pipeline",
    "datasets": "edge_deeplab.commands.datasets",
    "import-checkpoint": "edge_deeplab.commands.import_checkpoint",
    "doctor": "edge_deeplab.commands.doctor",
}


def _quiet_telemetry() -> None:
    """ONNX Runtime and OpenVINO write telemetry ids into the home directory unless told not to."""
    from runtime.telemetry import disable_telemetry

    disable_telemetry()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-deeplab",
        description="DeepLabv3+ from training to INT8 on Jetson and CPU, with accuracy-versus-latency reports.",
    )
    from edge_deeplab import __version__

    parser.add_argument("--version", action="version", version=f"edge-deeplab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, module_name in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("edge_deeplab.commands"):
                continue  # command not built yet in this version
            raise
        module.add_parser(sub, name)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    _quiet_telemetry()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.func(args)
    except EdgeDeeplabError as exc:
        print(f"edge-deeplab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"edge-deeplab {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        # A full disk is the user's to fix, wherever the write was (a library's own file, a log).
        from runtime.files import no_room_error

        full = no_room_error(exc, exc.filename or "the output")
        if full is None:
            raise
        print(f"edge-deeplab {args.command}: error: {full}", file=sys.stderr)
        return 2
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
