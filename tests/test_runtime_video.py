"""The video pipeline and ``edge-deeplab infer`` on real files: images, folders, a generated clip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2", reason="video tests need OpenCV (the 'video' extra)")

import runtime  # noqa: E402
from edge_deeplab.cli import main  # noqa: E402
from runtime.sources import capture_frames, classify_source, csi_camera_pipeline  # noqa: E402
from runtime import video  # noqa: E402
from runtime.video import run_video  # noqa: E402
from test_runtime_bundles import PALETTE, blocks_image, build_bundle, expected_pixel_mask  # noqa: E402


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return build_bundle(tmp_path_factory.mktemp("vb") / "pixel")


def write_clip(path: Path, frames: int = 12, size: tuple[int, int] = (48, 64)) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (size[1], size[0]))
    for i in range(frames):
        writer.write(cv2.cvtColor(blocks_image(*size, seed=i), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def count_frames(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), f"{path} does not open"
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


def test_video_cli_writes_playable_annotated_video(bundle: Path, tmp_path: Path, capsys) -> None:
    clip = write_clip(tmp_path / "clip.mp4")
    out = tmp_path / "out" / "seg.mp4"
    assert main(["infer", str(bundle), str(clip), "--out", str(out), "--masks", "--no-progress"]) == 0
    assert count_frames(out) == 12
    masks = sorted((tmp_path / "out" / "seg_masks").glob("*.png"))
    assert len(masks) == 12
    printed = capsys.readouterr().out
    assert "decode" in printed and "infer" in printed and "encode" in printed and "fps" in printed
    assert not list(out.parent.glob(".*partial*"))  # the temporary file was renamed away
    # Existing output is not overwritten without --force.
    assert main(["infer", str(bundle), str(clip), "--out", str(out), "--no-progress"]) == 2
    assert main(["infer", str(bundle), str(clip), "--out", str(out), "--no-progress", "--force",
                 "--max-frames", "5"]) == 0
    assert count_frames(out) == 5


def test_keyboard_interrupt_leaves_a_playable_video(bundle: Path, tmp_path: Path) -> None:
    def source():
        for i in range(100):
            if i == 7:
                raise KeyboardInterrupt
            yield cv2.cvtColor(blocks_image(48, 64, seed=i), cv2.COLOR_RGB2BGR)

    out = tmp_path / "interrupted.mp4"
    with runtime.load(bundle) as seg:
        stats = run_video(source(), seg.predict, seg.palette, out, queue_size=2)
    assert stats.interrupted and stats.frames == 7
    assert count_frames(out) == 7


def blank_predict(rgb: np.ndarray) -> np.ndarray:
    return (rgb[:, :, 0] > 127).astype(np.uint8)


def test_video_is_written_in_the_codec_it_says_and_decodes(tmp_path: Path) -> None:
    """Whatever this OpenCV build can encode, the stats name it and the file plays back whole."""
    frames = [cv2.cvtColor(blocks_image(48, 64, seed=i), cv2.COLOR_RGB2BGR) for i in range(7)]
    out = tmp_path / "seg.mp4"
    stats = run_video(iter(frames), blank_predict, PALETTE, out)
    assert stats.codec in (video.H264, video.FALLBACK_FOURCC)
    assert count_frames(out) == 7
    cap = cv2.VideoCapture(str(out))
    tag = (int(cap.get(cv2.CAP_PROP_FOURCC)) & 0xFFFFFFFF).to_bytes(4, "little").decode("ascii", "replace").lower()
    cap.release()
    # What the file holds agrees with what the stats say (FFmpeg reports mp4v as its FMP4 tag).
    assert tag in (("avc1", "h264") if stats.codec == video.H264 else ("mp4v", "fmp4"))
    line = stats.summary().splitlines()[-1]
    assert line.startswith(f"video: {out} ({stats.codec}")
    assert stats.to_dict()["codec"] == stats.codec
    if stats.codec == video.H264:
        assert stats.codec_note == "" and line.endswith("(H.264)")
    else:
        assert "cannot encode H.264" in stats.codec_note and "ffmpeg -i" in stats.codec_note


def test_the_h264_probe_is_quiet_leaves_nothing_behind_and_runs_once(tmp_path: Path, capfd, monkeypatch) -> None:
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    video.h264_fourcc.cache_clear()
    found = video.h264_fourcc(".mp4")
    assert found in (None, *video.H264_FOURCCS)
    assert video.h264_fourcc(".mp4") == found and video.h264_fourcc.cache_info().hits == 1
    assert list(tmp_path.iterdir()) == []
    assert capfd.readouterr().err == ""  # no "[ERROR:...] Could not find encoder" from OpenCV/FFmpeg


def test_without_h264_the_video_is_mp4v_and_says_how_to_get_h264(bundle: Path, tmp_path: Path, monkeypatch,
                                                                  capsys) -> None:
    monkeypatch.setattr(video, "h264_fourcc", lambda suffix=".mp4": None)  # only the probe's answer
    frames = [cv2.cvtColor(blocks_image(48, 64, seed=i), cv2.COLOR_RGB2BGR) for i in range(5)]
    out = tmp_path / "my clip.mp4"
    stats = run_video(iter(frames), blank_predict, PALETTE, out)
    assert stats.codec == "mp4v" and count_frames(out) == 5
    hint = f"ffmpeg -i '{out}' -c:v libx264 '{tmp_path / 'my clip-h264.mp4'}'"
    assert stats.codec_note == f"this OpenCV build cannot encode H.264; browsers may not play it - re-encode with {hint}"
    assert f"video: {out} (mp4v: this OpenCV build cannot encode H.264" in stats.summary()
    odd = tmp_path / "odd.mp4"  # libx264 wants even sides: the hint pads odd ones
    odd_stats = run_video(iter(frames[:2]), blank_predict, PALETTE, odd, max_frames=2)
    assert odd_stats.codec == "mp4v" and "pad=" not in odd_stats.codec_note
    odd_frames = [np.ascontiguousarray(f[:47, :63]) for f in frames[:2]]
    odd_stats = run_video(iter(odd_frames), blank_predict, PALETTE, odd)
    assert "-vf 'pad=ceil(iw/2)*2:ceil(ih/2)*2' -c:v libx264" in odd_stats.codec_note and count_frames(odd) == 2
    # The CLI prints the same line.
    clip = write_clip(tmp_path / "clip.mp4", frames=3)
    assert main(["infer", str(bundle), str(clip), "--out", str(tmp_path / "cli.mp4"), "--no-progress"]) == 0
    assert "cli.mp4 (mp4v: this OpenCV build cannot encode H.264" in capsys.readouterr().out


def test_corrupt_frames_are_skipped_and_counted(bundle: Path, tmp_path: Path) -> None:
    frames = [cv2.cvtColor(blocks_image(32, 32, seed=i), cv2.COLOR_RGB2BGR) for i in range(5)]
    frames.insert(2, None)
    masks = tmp_path / "masks"
    with runtime.load(bundle) as seg:
        stats = run_video(iter(frames), seg.predict, seg.palette, None, masks_dir=masks)
    assert (stats.frames, stats.skipped) == (5, 1)
    first = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(masks / "frame_000000.png"))
    np.testing.assert_array_equal(first, expected_pixel_mask(cv2.cvtColor(frames[0], cv2.COLOR_BGR2RGB)))


def write_corrupt_mjpeg_clip(path: Path, frames: int = 6, broken: int = 2) -> Path:
    """An MJPEG AVI whose frame ``broken`` has its JPEG data zeroed: a real undecodable frame."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    for i in range(frames):
        writer.write(cv2.cvtColor(blocks_image(48, 64, seed=i), cv2.COLOR_RGB2BGR))
    writer.release()
    data = bytearray(path.read_bytes())
    starts = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xD8]  # JPEG SOI markers
    assert len(starts) == frames
    data[starts[broken] : starts[broken] + 400] = bytes(400)
    path.write_bytes(bytes(data))
    return path


def test_capture_frames_marks_undecodable_frames_not_the_end(tmp_path: Path) -> None:
    cap = cv2.VideoCapture(str(write_corrupt_mjpeg_clip(tmp_path / "corrupt.avi")))
    items = list(capture_frames(cap, max_failures=3))
    cap.release()
    # The failed reads at the end of the file are the end of the stream, not corrupt frames.
    assert [item is None for item in items] == [False, False, True, False, False, False]


def test_cli_on_a_clip_with_a_corrupt_frame(bundle: Path, tmp_path: Path, capsys) -> None:
    clip = write_corrupt_mjpeg_clip(tmp_path / "corrupt.avi")
    out = tmp_path / "fixed.mp4"
    assert main(["infer", str(bundle), str(clip), "--out", str(out), "--no-progress"]) == 0
    assert "5 written, 1 corrupt frames skipped" in capsys.readouterr().out
    assert count_frames(out) == 5


def test_failing_model_stops_the_pipeline_with_its_error(tmp_path: Path) -> None:
    def predict(_):
        raise RuntimeError("model exploded")

    frames = (np.zeros((16, 16, 3), np.uint8) for _ in range(50))
    with pytest.raises(RuntimeError, match="model exploded"):
        run_video(frames, predict, PALETTE, tmp_path / "x.mp4", queue_size=1)
    assert not list(tmp_path.iterdir())


def test_images_and_folder(bundle: Path, tmp_path: Path, capsys) -> None:
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    rgb = blocks_image(20, 28, seed=1)
    Image.fromarray(rgb).save(folder / "a.png")
    Image.fromarray(rgb[:, :, 0]).save(folder / "gray.png")
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])).save(folder / "rgba.png")
    Image.fromarray(rgb[:, :, 1].astype(np.uint16) * 257).save(folder / "deep.png")
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "out"
    assert main(["infer", str(bundle), str(folder), "--out", str(out), "--masks", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "4 image(s) segmented" in printed and "1 unreadable skipped" in printed and "broken.jpg" in printed
    mask = np.asarray(Image.open(out / "a_mask.png"))
    np.testing.assert_array_equal(mask, expected_pixel_mask(rgb))
    assert Image.open(out / "deep_overlay.png").size == (28, 20)
    single = tmp_path / "single"
    assert main(["infer", str(bundle), str(folder / "a.png"), "--out", str(single), "--no-progress"]) == 0
    assert (single / "a_overlay.png").is_file()


def test_bad_sources_are_one_line_errors(bundle: Path, tmp_path: Path, capsys) -> None:
    bogus = tmp_path / "bogus.mp4"
    bogus.write_bytes(b"\x00" * 100)
    assert main(["infer", str(bundle), str(bogus), "--out", str(tmp_path / "o.mp4"), "--no-progress"]) == 2
    assert main(["infer", str(bundle), str(tmp_path / "missing.png"), "--out", str(tmp_path / "o2")]) == 2
    assert main(["infer", str(tmp_path), str(bogus), "--out", str(tmp_path / "o3.mp4")]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 3
    assert "cannot open video" in errors[0] and "not found" in errors[1] and "not a bundle" in errors[2]


def test_source_kinds_and_csi_pipeline(tmp_path: Path) -> None:
    assert classify_source("0") == "camera"
    assert classify_source("rtsp://cam.local/stream") == "stream"
    assert classify_source("videotestsrc ! appsink") == "gstreamer"
    assert classify_source(str(tmp_path)) == "folder"
    pipeline = csi_camera_pipeline(1, 1920, 1080, 30)
    assert pipeline.startswith("nvarguscamerasrc sensor-id=1 ! video/x-raw(memory:NVMM),width=1920,height=1080")
    assert pipeline.endswith("appsink drop=1")
