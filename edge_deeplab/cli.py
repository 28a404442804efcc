"""The ``edge-deeplab`` command line (typer).

Each subcommand lives in its own module under :mod:`edge_deeplab.commands` that exposes a typer
``app``; :class:`LazyCommands` imports a module only when its command runs (or its own ``--help``
is asked for), so ``edge-deeplab infer`` on a Jetson never imports torch and ``edge-deeplab
--help`` lists the commands from :data:`COMMANDS` without importing any of them.

Errors are one line and a non-zero exit, whoever raised them: a usage error (typer's own, exit 2),
a :class:`runtime.errors.EdgeDeeplabError` (the user's to fix, exit 2), an operating-system error
on a path (a full disk, permission denied, a read-only file system: exit 2, the path named by
:func:`runtime.files.path_error`). Ctrl-C and SIGTERM stop a command the same way
(:mod:`runtime.signals`): it winds down, keeps what is complete, and exits 130 with one line.
"""

from __future__ import annotations

import importlib
import sys
from typing import Optional, Sequence

import click
import typer
from typer.core import TyperGroup

from edge_deeplab.openmp import prefer_passive_wait
from runtime.errors import EdgeDeeplabError

PROG = "edge-deeplab"
# command name -> (module holding its typer app, the line --help lists it with); order is --help's.
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("edge_deeplab.commands.train", "train a DeepLabv3+ model"),
    "evaluate": ("edge_deeplab.commands.evaluate",
                 "score a checkpoint or a bundle: mIoU, per-class IoU, pixel accuracy, boundary mIoU"),
    "export": ("edge_deeplab.commands.export",
               "export a checkpoint to an ONNX / ONNX Runtime INT8 / OpenVINO / TensorRT bundle"),
    "infer": ("edge_deeplab.commands.infer", "segment images, folders, videos, a camera or a stream with a bundle"),
    "benchmark": ("edge_deeplab.commands.benchmark", "measure latency (p50/p90/p99) and fps of one or several bundles"),
    "report": ("edge_deeplab.commands.report",
               "accuracy-versus-latency report over output strides, targets and precisions"),
    "pipeline": ("edge_deeplab.commands.pipeline",
                 "the main job: train, export INT8 at output strides 8/16/32, report (--quick: in minutes)"),
    "datasets": ("edge_deeplab.commands.datasets", "validate a dataset: layout, counts, class histogram, problems"),
    "import-checkpoint": ("edge_deeplab.commands.import_checkpoint",
                          "convert a VainF/DeepLabV3Plus-Pytorch checkpoint into an edge-deeplab checkpoint"),
    "doctor": ("edge_deeplab.commands.doctor",
               "check this machine (and bundles) for running edge-deeplab: the first command on a device"),
}


class LazyCommands(TyperGroup):
    """A group whose subcommands are imported on first use.

    While the group's own help is written, a command is a stand-in carrying its one-line summary,
    so listing the commands imports none of them.
    """

    _listing = False

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> Optional[click.Command]:
        if cmd_name not in COMMANDS:
            return None
        module_name, summary = COMMANDS[cmd_name]
        if self._listing:
            return click.Command(cmd_name, help=summary)
        command = typer.main.get_command(importlib.import_module(module_name).app)
        command.name = cmd_name
        return command

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


def _version(show: bool) -> None:
    if show:
        from edge_deeplab import __version__

        typer.echo(f"{PROG} {__version__}")
        raise typer.Exit()


app = typer.Typer(
    cls=LazyCommands,
    name=PROG,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="print the version and exit"),
) -> None:
    """DeepLabv3+ from training to INT8 on Jetson and CPU, with accuracy-versus-latency reports."""


def _quiet_telemetry() -> None:
    """ONNX Runtime and OpenVINO write telemetry ids into the home directory unless told not to."""
    from runtime.telemetry import disable_telemetry

    disable_telemetry()


def _command_name(argv: Sequence[str]) -> str:
    """The subcommand in ``argv``, for the error prefix (``edge-deeplab export: error: ...``)."""
    name = next((arg for arg in argv if arg in COMMANDS), None)
    return f"{PROG} {name}" if name else PROG


def _fail(where: str, message: str, code: int = 2) -> int:
    from runtime.signals import stopped_by

    if stopped_by() is None:  # an error caused by the stop itself is said by the stop's own line
        print(f"{where}: error: {message}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit status (the console script exits with it)."""
    from runtime.signals import kept, stop_on_signals, stopped_by

    _quiet_telemetry()
    prefer_passive_wait()  # before any command imports torch
    args = list(sys.argv[1:] if argv is None else argv)
    where = _command_name(args)
    with stop_on_signals():
        code = _run(args, where)
        # typer turns a KeyboardInterrupt into exit status 130 without a word: say what stopped the run.
        signal_name = stopped_by()
        if signal_name is not None:
            note = kept()
            print(f"{where}: stopped by {signal_name}" + (f"; {note}" if note else ""), file=sys.stderr)
            return 130
    return code


def _run(args: list[str], where: str) -> int:
    """The command's exit status, every error printed as one line."""
    try:
        code = typer.main.get_command(app).main(args=args, prog_name=PROG, standalone_mode=False)
    except click.ClickException as exc:  # typer's usage errors, and click's own
        message = " ".join(exc.format_message().split())
        if not message:  # a group run without its command: its help is already on the screen
            return exc.exit_code
        ctx = getattr(exc, "ctx", None)  # a usage error knows its command
        if ctx is not None:
            where, message = ctx.command_path, f"{message} (see '{ctx.command_path} --help')"
        return _fail(where, message, exc.exit_code)
    except EdgeDeeplabError as exc:
        return _fail(where, str(exc))
    except click.Abort:  # end of input at a prompt
        print(f"{where}: interrupted", file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # stopped outside the command itself (the signal is recorded)
        return 130
    except OSError as exc:
        # A path the machine refuses (full, read-only, not permitted, a name too long) is the
        # user's to fix, wherever the call was (our code, a library's own file).
        if exc.errno is None and exc.filename is None:
            raise  # not the operating system's: a library's own error, a bug to see whole
        from runtime.files import path_error

        return _fail(where, str(path_error(exc)))
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
