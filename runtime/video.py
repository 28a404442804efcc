"""The video pipeline: decode, infer and encode in parallel threads joined by bounded queues.

Each stage runs on its own thread, so with the queues full the throughput is that of the
slowest stage rather than the sum of all three (OpenCV's decode/encode and the backends release
the GIL). Bounded queues keep memory flat and make a slow encoder slow the reader down instead of
buffering the whole video. The writer goes to a temporary file renamed at the end; end of stream
and Ctrl-C both stop the reader, drain the queues and release the writer, so the result plays.

The video is H.264 (which browsers play) when this OpenCV build can encode it, probed once per
process; otherwise mp4v, and :class:`PipelineStats` says so with the ffmpeg command that converts it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import queue
import shlex
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from runtime.errors import EdgeDeeplabError
from runtime.files import no_room_error
from runtime.images import write_mask
from runtime.postprocess import overlay, palette_array

_END = object()  # sentinel passed down the queues after the last frame

# H.264 plays in every browser; mp4v (MPEG-4 Part 2) does not. pip's OpenCV wheels usually carry
# no H.264 encoder (licensing), so H.264 is probed for and mp4v is what they write.
H264_FOURCCS = ("avc1", "H264")  # 'avc1' is the MP4 tag; 'H264' is what some builds (Windows MSMF) take
FALLBACK_FOURCC = "mp4v"
H264 = "H.264"
PROBE_FRAMES = 4


@dataclass
class PipelineStats:
    """What the pipeline did: frames, skips, per-stage ms per frame and overall fps."""

    frames: int = 0
    skipped: int = 0
    decode_ms: float = 0.0
    infer_ms: float = 0.0
    encode_ms: float = 0.0
    seconds: float = 0.0
    interrupted: bool = False
    stopped_by: str = ""  # what interrupted the run: "Ctrl-C" or a signal's name
    output: str = ""
    masks: str = ""
    codec: str = ""  # what the video was encoded with: "H.264" or "mp4v" ("" when no video was written)
    codec_note: str = ""  # why it is not H.264, and how to get H.264, when it is not
    _totals: dict[str, float] = field(default_factory=lambda: {"decode": 0.0, "infer": 0.0, "encode": 0.0}, repr=False)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items() if not k.startswith("_")}
        data["fps"] = self.fps
        return data

    def summary(self) -> str:
        """The per-stage timing lines printed at the end of a run."""
        lines = [
            f"frames: {self.frames} written, {self.skipped} corrupt frames skipped"
            + (f" (stopped by {self.stopped_by or 'Ctrl-C'})" if self.interrupted else ""),
            f"decode {self.decode_ms:.1f} ms/frame | infer {self.infer_ms:.1f} ms/frame | "
            f"encode {self.encode_ms:.1f} ms/frame",
            f"throughput {self.fps:.1f} fps over {self.seconds:.1f} s",
        ]
        if self.output:
            lines.append(f"video: {self.output} ({self.codec}{': ' + self.codec_note if self.codec_note else ''})")
        if self.masks:
            lines.append(f"masks: {self.masks}")
        return "\n".join(lines)


def _put(q: queue.Queue, item: Any, stop: threading.Event) -> bool:
    """Put with a timeout loop so a producer never blocks forever on a dead consumer."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _draw_fps(cv2: Any, frame_bgr: np.ndarray, fps: float) -> None:
    """fps text in the top-left corner, dark outline under white so it reads on any background."""
    text = f"{fps:5.1f} fps"
    scale = max(0.5, frame_bgr.shape[0] / 720)
    for colour, thickness in (((0, 0, 0), 4), ((255, 255, 255), 1)):
        cv2.putText(frame_bgr, text, (10, int(30 * scale)), cv2.FONT_HERSHEY_SIMPLEX, scale, colour,
                    max(1, int(thickness * scale)), cv2.LINE_AA)


def _drain(items: "queue.Queue[Any]") -> None:
    """Consume a stage's input up to its end marker, so the stage feeding it never blocks on a full queue."""
    while items.get() is not _END:
        continue


def check_playable(path: Path, final: Path | None, frames: int) -> None:
    """Fail, naming ``final``, unless the encoded file at ``path`` opens and holds every frame written.

    OpenCV's ``VideoWriter.write`` returns nothing and only logs when a write fails, e.g. on a
    full disk; the file is then left without its index and does not play. Reading the header
    back is the one way to know that what was written is a video.
    """
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
        plays = cap.isOpened() and cap.read()[0]
    finally:
        cap.release()
    if not plays or 0 < count < frames:
        free_mb = shutil.disk_usage(path.parent).free / 1e6
        raise EdgeDeeplabError(
            f"writing video {final or path} failed: the encoded file does not play back "
            f"({count if plays else 0} of {frames} frames readable; {free_mb:.1f} MB free on its disk); it was removed"
        )


@contextlib.contextmanager
def _quiet_opencv(cv2: Any):
    """Silence OpenCV and FFmpeg on stderr for the duration: opening a writer for a codec the
    build lacks logs "[ERROR:...] Could not find encoder for codec id 27" and FFmpeg's own lines,
    some written by C code straight to file descriptor 2, so that descriptor is pointed at
    /dev/null too (and restored), not only OpenCV's log level."""
    logging = getattr(getattr(cv2, "utils", None), "logging", None)  # OpenCV 5; 4.x has cv2.setLogLevel
    get_level = getattr(logging, "getLogLevel", None) or getattr(cv2, "getLogLevel", None)
    set_level = getattr(logging, "setLogLevel", None) or getattr(cv2, "setLogLevel", None)
    level = get_level() if get_level and set_level else None
    if level is not None:
        set_level(0)  # LOG_LEVEL_SILENT
    saved = None
    try:
        sys.stderr.flush()
        saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
    except OSError:  # no descriptor 2 to redirect: the noise, if any, goes where it goes
        saved = None
    try:
        yield
    finally:
        if saved is not None:
            os.dup2(saved, 2)
            os.close(saved)
        if level is not None:
            set_level(level)


def _open_writer(cv2: Any, path: Path, fourcc: str, fps: float, size: tuple[int, int]) -> Any | None:
    """An opened ``cv2.VideoWriter`` (size is width, height), or None when this build cannot."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
    if writer.isOpened():
        return writer
    writer.release()
    return None


@functools.lru_cache(maxsize=None)
def h264_fourcc(suffix: str = ".mp4") -> str | None:
    """The fourcc with which this OpenCV build writes H.264 into a ``suffix`` file, or None.

    Probed once per process and container: a few frames are encoded into a temporary folder
    (removed after) and must decode back, all of them; ``isOpened()`` alone is not trusted.
    OpenCV's and FFmpeg's complaints about a missing encoder are kept off the terminal.
    """
    import cv2

    size = (64, 64)  # even sides, above every encoder's minimum
    with tempfile.TemporaryDirectory(prefix="edge-deeplab-codec-") as tmp:
        for fourcc in H264_FOURCCS:
            path = Path(tmp) / f"probe-{fourcc}{suffix}"
            with _quiet_opencv(cv2):
                writer = _open_writer(cv2, path, fourcc, 10.0, size)
                if writer is None:
                    continue
                for i in range(PROBE_FRAMES):
                    writer.write(np.full((size[1], size[0], 3), 40 * i, np.uint8))
                writer.release()
                cap = cv2.VideoCapture(str(path))
                decoded = 0
                while cap.isOpened() and cap.read()[0]:
                    decoded += 1
                cap.release()
            if decoded == PROBE_FRAMES:
                return fourcc
    return None


def reencode_hint(path: Path, width: int = 0, height: int = 0) -> str:
    """The ffmpeg command that turns an mp4v video into H.264, which browsers play (libx264 wants
    even sides: odd ones get a pixel of padding)."""
    target = path.with_name(f"{path.stem}-h264.mp4")
    pad = " -vf 'pad=ceil(iw/2)*2:ceil(ih/2)*2'" if width % 2 or height % 2 else ""
    return f"ffmpeg -i {shlex.quote(str(path))}{pad} -c:v libx264 {shlex.quote(str(target))}"


def fallback_note(path: Path, width: int, height: int, why: str = "this OpenCV build cannot encode H.264") -> str:
    return f"{why}; browsers may not play it - re-encode with {reencode_hint(path, width, height)}"


def _move_into_place(finished: Path, dest: Path) -> None:
    """Rename a finished folder onto ``dest``; into it, file by file, when it already exists
    (the caller's folder keeps its other files; the CLI refuses an existing one without --force)."""
    if not dest.exists():
        os.replace(finished, dest)
        return
    for path in finished.iterdir():
        os.replace(path, dest / path.name)
    finished.rmdir()


def run_video(
    frames: Iterable[np.ndarray | None],
    predict: Callable[[np.ndarray], np.ndarray],
    palette: list[list[int]],
    out_path: str | Path | None,
    fps: float = 30.0,
    masks_dir: str | Path | None = None,
    alpha: float = 0.5,
    max_frames: int | None = None,
    duration: float | None = None,
    queue_size: int = 4,
    progress: Callable[[int], Any] | None = None,
) -> PipelineStats:
    """Segment a stream of BGR frames (``None`` = a corrupt frame to skip) into an annotated video.

    ``frames`` is iterated on the calling thread, so a Ctrl-C (or a KeyboardInterrupt raised by
    the source) stops reading; what was read is still inferred, encoded and the file finalized.
    ``out_path`` ``None`` skips encoding the video (masks only, or timing runs).
    """
    job = _VideoJob(predict, palette, out_path, masks_dir, fps, alpha, queue_size, progress)
    job.start()
    try:
        job.read(frames, max_frames, duration)
    finally:
        job.stop()
    job.keep_outputs()
    return job.finished_stats()


class _VideoJob:
    """One run of the pipeline: its queues, its stage threads, and its temporary outputs.

    The calling thread decodes (:meth:`read`); an ``infer`` thread runs the model; an ``encode``
    thread draws the overlay and writes the video and masks. A stage that fails sets :attr:`stop`
    and keeps draining its input, so no producer blocks; the main thread re-raises its error.
    """

    def __init__(self, predict: Callable[[np.ndarray], np.ndarray], palette: list[list[int]],
                 out_path: str | Path | None, masks_dir: str | Path | None, fps: float, alpha: float,
                 queue_size: int, progress: Callable[[int], Any] | None) -> None:
        import cv2

        self.cv2, self.predict, self.palette, self.fps, self.alpha = cv2, predict, palette, fps, alpha
        self.table = palette_array(palette)
        self.progress = progress
        self.stats = PipelineStats()
        self.decoded: queue.Queue = queue.Queue(maxsize=queue_size)
        self.inferred: queue.Queue = queue.Queue(maxsize=queue_size)
        self.stop_event = threading.Event()
        self.errors: list[BaseException] = []
        self.writer: Any | None = None
        self.read_count = 0
        self.out_path = Path(out_path) if out_path is not None else None
        self.tmp_path = (self.out_path.with_name(f".{self.out_path.stem}.partial{self.out_path.suffix}")
                         if self.out_path else None)
        self.masks_dir = Path(masks_dir) if masks_dir is not None else None
        # Masks go to a hidden folder renamed into place at the end, like the video, so a failed
        # run (a full disk) leaves no half set of masks.
        self.masks_tmp = self.masks_dir.with_name(f".{self.masks_dir.name}.partial") if self.masks_dir else None
        self.h264: str | None = None
        self.started = 0.0
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        """Make the masks' temporary folder, probe the codec, and start the infer and encode threads."""
        if self.masks_tmp is not None:
            shutil.rmtree(self.masks_tmp, ignore_errors=True)
            self.masks_tmp.mkdir(parents=True)
        # Probed once per process, here on the calling thread before the stages start (its stderr
        # silencing then swallows nothing another thread prints) and before the clock starts.
        self.h264 = h264_fourcc(self.out_path.suffix.lower()) if self.out_path is not None else None
        self.started = time.perf_counter()
        self.threads = [threading.Thread(target=self.infer_stage, name="infer"),
                        threading.Thread(target=self.encode_stage, name="encode")]
        for thread in self.threads:
            thread.start()

    def read(self, frames: Iterable[np.ndarray | None], max_frames: int | None, duration: float | None) -> None:
        """Decode (iterate ``frames``) on this thread into the infer queue until the end, a limit or Ctrl-C."""
        stats = self.stats
        try:
            iterator = iter(frames)
            while not self.stop_event.is_set():
                if max_frames is not None and self.read_count >= max_frames:
                    break
                if duration is not None and time.perf_counter() - self.started >= duration:
                    break
                t0 = time.perf_counter()
                frame = next(iterator, _END)
                if frame is _END:
                    break
                if frame is None:
                    stats.skipped += 1
                    continue
                rgb = self.cv2.cvtColor(frame, self.cv2.COLOR_BGR2RGB)
                stats._totals["decode"] += time.perf_counter() - t0
                if not _put(self.decoded, (self.read_count, rgb), self.stop_event):
                    break
                self.read_count += 1
        except KeyboardInterrupt as exc:
            stats.interrupted = True
            stats.stopped_by = str(exc)

    def infer_stage(self) -> None:
        """Run the model on each decoded frame and pass (index, frame, mask) on."""
        try:
            while (item := self.decoded.get()) is not _END:
                if self.stop_event.is_set():
                    continue  # a later stage failed: drain so the reader never blocks
                index, rgb = item
                t0 = time.perf_counter()
                mask = self.predict(rgb)
                self.stats._totals["infer"] += time.perf_counter() - t0
                _put(self.inferred, (index, rgb, mask), self.stop_event)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which re-raises it
            self._failed(exc)
            _drain(self.decoded)
        finally:
            _put(self.inferred, _END, threading.Event())

    def encode_stage(self) -> None:
        """Write each frame's mask (``masks_dir``) and its overlay, with the fps drawn on, into the video."""
        stats = self.stats
        try:
            while (item := self.inferred.get()) is not _END:
                index, rgb, mask = item
                t0 = time.perf_counter()
                if self.masks_tmp is not None:
                    write_mask(self.masks_tmp / f"frame_{index:06d}.png", mask, self.palette)
                if self.tmp_path is not None:
                    self._write_frame(rgb, mask)
                stats._totals["encode"] += time.perf_counter() - t0
                stats.frames += 1
                if self.progress is not None:
                    self.progress(1)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            self._failed(exc)
            _drain(self.inferred)

    def _write_frame(self, rgb: np.ndarray, mask: np.ndarray) -> None:
        cv2 = self.cv2
        bgr = cv2.cvtColor(overlay(rgb, mask, self.table, self.alpha), cv2.COLOR_RGB2BGR)
        _draw_fps(cv2, bgr, (self.stats.frames + 1) / max(time.perf_counter() - self.started, 1e-6))
        if self.writer is None:
            self.writer = self._open_writer(bgr.shape[1], bgr.shape[0])
        self.writer.write(bgr)

    def _open_writer(self, width: int, height: int) -> Any:
        """The writer, opened at the first frame's size; H.264 when the probe found it."""
        cv2, stats, out_path = self.cv2, self.stats, self.out_path
        if self.h264 is not None:
            # An H.264 encoder may still refuse this size (odd sides). Its complaint is silenced
            # the same way, on the encode thread, for the few milliseconds the open takes.
            with _quiet_opencv(cv2):
                writer = _open_writer(cv2, self.tmp_path, self.h264, self.fps, (width, height))
            if writer is not None:
                stats.codec = H264
                return writer
            stats.codec_note = fallback_note(out_path, width, height,
                                             f"the H.264 encoder would not open for {width}x{height} frames")
        else:
            stats.codec_note = fallback_note(out_path, width, height)
        writer = _open_writer(cv2, self.tmp_path, FALLBACK_FOURCC, self.fps, (width, height))
        if writer is None:
            raise EdgeDeeplabError(f"cannot write video {out_path}: this OpenCV build opens neither an H.264 "
                                   f"nor an {FALLBACK_FOURCC} encoder for {out_path.suffix or 'this'} files")
        stats.codec = FALLBACK_FOURCC
        return writer

    def _failed(self, exc: BaseException) -> None:
        self.errors.append(exc)
        self.stop_event.set()

    def stop(self) -> None:
        """Send the end marker down the queues, wait for both stages, and close the video."""
        _put(self.decoded, _END, threading.Event())
        for thread in self.threads:
            thread.join()
        if self.writer is not None:
            self.writer.release()
        self.stats.seconds = time.perf_counter() - self.started

    def keep_outputs(self) -> None:
        """Re-raise a stage's error, or check the video plays and rename video and masks into place.

        On any failure both temporary outputs are removed; a full disk is one line naming it.
        """
        try:
            if self.errors:
                raise self.errors[0]
            if self.read_count == 0:
                raise EdgeDeeplabError("no frame could be decoded from the source")
            if self.tmp_path is not None and self.writer is not None:
                check_playable(self.tmp_path, self.out_path, self.stats.frames)
                os.replace(self.tmp_path, self.out_path)
                self.stats.output = str(self.out_path)
            if self.masks_tmp is not None:
                _move_into_place(self.masks_tmp, self.masks_dir)
                self.stats.masks = str(self.masks_dir)
        except BaseException as exc:
            if self.tmp_path is not None:
                self.tmp_path.unlink(missing_ok=True)
            if self.masks_tmp is not None:
                shutil.rmtree(self.masks_tmp, ignore_errors=True)
            full = no_room_error(exc, self.masks_dir or self.out_path)
            if full is not None:
                raise full from None
            raise

    def finished_stats(self) -> PipelineStats:
        """The stats with each stage's total turned into milliseconds per frame."""
        stats, n = self.stats, max(self.stats.frames, 1)
        stats.decode_ms = stats._totals["decode"] * 1000 / max(self.read_count, 1)
        stats.infer_ms = stats._totals["infer"] * 1000 / n
        stats.encode_ms = stats._totals["encode"] * 1000 / n
        return stats
