"""Stopping and sharing, through the real CLI in subprocesses: SIGTERM acts as Ctrl-C, and an
output has one writer at a time.

A stopped command ends with exit status 130 and one line of ours saying what stopped it (and what
it kept), removes what it had not finished (hidden temporary folders, an empty numbered folder)
and keeps what is complete (a training checkpoint). A second run writing into an output that a
first run holds is refused in one line; a killed holder leaves nothing stuck.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_bad_inputs import ROOT, TINY_TRAIN, assert_one_line_error, cli, noise_png, snapshot
from test_runtime_bundles import build_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return build_bundle(tmp_path_factory.mktemp("stops") / "pixel")


def start(*args: str | Path, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2"}
    return subprocess.Popen([sys.executable, "-m", "edge_deeplab.cli", *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_until(ready, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not ready() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, f"the run ended before it could be stopped: {proc.communicate()[1]}"


def stopped_line(proc: subprocess.Popen, command: str, by: str) -> str:
    """The one line a stopped run ends with; exit status 130, no traceback."""
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in stderr, stderr
    ours = [line for line in stderr.splitlines() if line.startswith("edge-deeplab")]
    assert len(ours) == 1 and ours[0] == stderr.strip().splitlines()[-1], stderr
    assert ours[0].startswith(f"edge-deeplab {command}: stopped by {by}"), ours[0]
    return ours[0]


def hidden(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*"))


def test_sigterm_during_training_saves_a_checkpoint_to_resume_from(tmp_path) -> None:
    from edge_deeplab.checkpoint import load_checkpoint

    run = tmp_path / "run"
    proc = start("train", "--out", run, *TINY_TRAIN, "--iterations", "2000", cwd=tmp_path)
    wait_until(lambda: (run / "last.pt").exists(), proc)
    proc.send_signal(signal.SIGTERM)
    line = stopped_line(proc, "train", "SIGTERM")
    assert f"is saved in {run / 'last.pt'}; continue with --resume" in line
    step = load_checkpoint(run / "last.pt").train_state["step"]
    assert 0 < step < 2000 and f"step {step} of 2000" in line
    assert hidden(tmp_path) == []  # no checkpoint half-written, no lock left


def test_ctrl_c_in_a_folder_run_says_so_and_leaves_no_numbered_folder(tmp_path, bundle) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(300):
        noise_png(folder / f"{i:03d}.png", 64)
    proc = start("infer", bundle, folder, "--no-progress", cwd=tmp_path)  # into runs/infer/001
    wait_until(lambda: any(p.suffix == ".tmp" for p in tmp_path.glob("runs/infer/*")), proc)
    proc.send_signal(signal.SIGINT)
    stopped_line(proc, "infer", "Ctrl-C")
    assert not (tmp_path / "runs").exists()  # neither the unfinished results nor the folders made for them


def test_a_second_writer_into_the_same_out_is_refused_while_the_first_runs(tmp_path, bundle) -> None:
    from runtime.outputs import output_lock

    image = noise_png(tmp_path / "a.png", 16)
    out = tmp_path / "out"
    with output_lock(out):  # the first run, in this process
        before = snapshot(tmp_path)
        proc = cli("infer", bundle, image, "--out", out, cwd=tmp_path)
        assert_one_line_error(proc, "infer", f"another run (process {os.getpid()}) is writing {out}")
        assert snapshot(tmp_path) == before
    proc = cli("infer", bundle, image, "--out", out, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert hidden(tmp_path) == []


def test_a_killed_writer_leaves_no_stuck_lock(tmp_path, bundle) -> None:
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom runtime.outputs import output_lock\n"
                               f"with output_lock({str(out)!r}):\n    print('held', flush=True)\n    time.sleep(120)"],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    holder.kill()
    holder.wait()
    proc = cli("infer", bundle, noise_png(tmp_path / "a.png", 16), "--out", out, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (out / "a_overlay.png").is_file()
