"""Issue 11's fixes that are not one-line errors: file modes, EXIF, the pixel cap, threads, outputs.

The CLI error cases are in ``test_bad_inputs.py``; these run in process on the toy bundles.
"""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import runtime
from edge_deeplab.cli import main
from runtime.errors import EdgeDeeplabError
from test_runtime_bundles import PALETTE, blocks_image, build_bundle, expected_pixel_mask


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("rel")
    return {"onnx": build_bundle(root / "onnx"), "openvino": build_bundle(root / "ov", target="openvino"),
            "openvino-mask": build_bundle(root / "ovm", target="openvino", input_dtype="uint8", outputs="mask")}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- files a device user can read -----------------------------------------------------------------

@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_written_files_and_folders_follow_the_umask(tmp_path, umask, file_mode, dir_mode) -> None:
    from edge_deeplab.checkpoint import Checkpoint, save_checkpoint
    from edge_deeplab.models import ModelConfig
    from runtime.files import atomic_dir, atomic_write_text
    from runtime.images import write_image, write_mask

    previous = os.umask(umask)
    try:
        with atomic_dir(tmp_path / "bundle") as folder:
            atomic_write_text(folder / "model.json", "{}\n")
        write_image(tmp_path / "overlay.png", blocks_image(8, 8))
        write_mask(tmp_path / "mask.png", np.zeros((8, 8), np.uint8), PALETTE)
        config = ModelConfig("mobilenetv2", 2, 16, width_mult=0.35)
        save_checkpoint(Checkpoint(config, {}, ["a", "b"], [[0, 0, 0], [1, 1, 1]], [0.5] * 3, [0.5] * 3), tmp_path / "c.pt")
    finally:
        os.umask(previous)
    assert mode(tmp_path / "bundle") == dir_mode
    for name in ("bundle/model.json", "overlay.png", "mask.png", "c.pt"):
        assert mode(tmp_path / name) == file_mode, name


# -- images as they come from cameras and phones ----------------------------------------------------

def exif_rotated_jpeg(path: Path, pixels: np.ndarray, orientation: int = 6) -> Path:
    """A JPEG stored as ``pixels`` with an EXIF tag saying how to turn it upright (6: 90 degrees clockwise)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(path, quality=95, exif=exif.tobytes())
    return path


def test_exif_orientation_is_applied_by_the_one_image_reader(tmp_path) -> None:
    from edge_deeplab.data import folder

    assert folder.read_image is runtime.read_image  # the dataset readers read images as the runtime does
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :20] = 255  # left half white as stored: the top half once turned upright
    upright = runtime.read_image(exif_rotated_jpeg(tmp_path / "phone.jpg", stored))
    assert upright.shape == (40, 20, 3)
    assert upright[:18].mean() > 240 and upright[22:].mean() < 15


def test_large_images_are_shrunk_while_decoding(tmp_path, monkeypatch) -> None:
    import runtime.images

    monkeypatch.setattr(runtime.images, "MAX_PIXELS", 5_000)
    pixels = np.full((200, 200, 3), (10, 120, 230), np.uint8)
    Image.fromarray(pixels).save(tmp_path / "big.jpg", quality=95)
    Image.fromarray(pixels).save(tmp_path / "big.png")
    for name in ("big.jpg", "big.png"):
        image = runtime.read_image(tmp_path / name)
        assert image.shape[0] == image.shape[1] and image.shape[0] * image.shape[1] <= 5_000, name
        np.testing.assert_allclose(image.reshape(-1, 3).mean(0), (10, 120, 230), atol=3)


def test_predict_takes_a_path_and_says_what_it_got_otherwise(bundles, tmp_path) -> None:
    rgb = blocks_image(24, 32)
    Image.fromarray(rgb).save(tmp_path / "photo.png")
    with runtime.load(bundles["onnx"]) as seg:
        np.testing.assert_array_equal(seg.predict(str(tmp_path / "photo.png")), expected_pixel_mask(rgb))
        np.testing.assert_array_equal(seg.predict(tmp_path / "photo.png"), expected_pixel_mask(rgb))
        with pytest.raises(EdgeDeeplabError, match="got dict"):
            seg.predict({"image": rgb})


def test_overlay_takes_grayscale_and_rgba(bundles) -> None:
    rgb = blocks_image(16, 24)
    mask = expected_pixel_mask(rgb)
    gray, rgba = rgb[:, :, 0], np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)])
    np.testing.assert_array_equal(runtime.overlay(rgba, mask, PALETTE), runtime.overlay(rgb, mask, PALETTE))
    np.testing.assert_array_equal(runtime.overlay(gray, mask, PALETTE),
                                  runtime.overlay(np.dstack([gray] * 3), mask, PALETTE))


# -- several threads, one Segmenter ---------------------------------------------------------------

@pytest.mark.parametrize("target", ["onnx", "openvino", "openvino-mask"])
def test_one_segmenter_from_four_threads_matches_one_thread(bundles, target) -> None:
    images = [blocks_image(40 + 8 * i, 56, seed=i) for i in range(8)]
    with runtime.load(bundles[target]) as seg:
        expected = [seg.predict(image) for image in images]
        results: dict[tuple[int, int], np.ndarray] = {}
        failures: list[BaseException] = []
        start = threading.Barrier(4)

        def work(worker: int) -> None:
            try:
                start.wait()
                for round_ in range(5):
                    for i, image in enumerate(images):
                        results[worker, round_ * len(images) + i] = seg.predict(image)
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                failures.append(exc)

        threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not failures, failures[0]
    assert len(results) == 4 * 5 * len(images)
    for (_, k), mask in results.items():
        np.testing.assert_array_equal(mask, expected[k % len(images)])


# -- outputs: where they go, what is replaced --------------------------------------------------------

def test_one_image_with_an_image_file_out_writes_that_file(bundles, tmp_path) -> None:
    rgb = blocks_image(24, 32)
    Image.fromarray(rgb).save(tmp_path / "photo.png")
    out = tmp_path / "result.png"
    assert main(["infer", str(bundles["onnx"]), str(tmp_path / "photo.png"), "--out", str(out), "--masks"]) == 0
    assert out.is_file() and Image.open(out).size == (32, 24)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "result_mask.png")), expected_pixel_mask(rgb))


def test_force_replaces_an_existing_file_out_with_the_results(bundles, tmp_path) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(blocks_image(16, 16)).save(folder / "a.png")
    out = tmp_path / "out"
    out.write_text("an old file")
    assert main(["infer", str(bundles["onnx"]), str(folder), "--out", str(out), "--no-progress"]) == 2
    assert out.read_text() == "an old file"
    assert main(["infer", str(bundles["onnx"]), str(folder), "--out", str(out), "--force", "--no-progress"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a_overlay.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imgs", "out"]  # no temporary left beside it


def test_evaluate_json_is_replaced_only_with_force(bundles, tmp_path) -> None:
    import json

    from test_runtime_bundles import CLASSES

    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    (data / "classes.yaml").write_text("classes: [" + ", ".join(CLASSES) + "]\n")
    rgb = blocks_image(16, 16)
    Image.fromarray(rgb).save(data / "images" / "a.png")
    Image.fromarray(expected_pixel_mask(rgb)).save(data / "masks" / "a.png")
    out = tmp_path / "scores.json"
    out.write_text("{}\n")
    argv = ["evaluate", str(bundles["onnx"]), "--data", str(data), "--split", "all", "--json", str(out)]
    assert main(argv) == 2 and out.read_text() == "{}\n"
    assert main([*argv, "--force"]) == 0
    assert json.loads(out.read_text())["miou"] == pytest.approx(1.0)


def test_train_force_removes_the_older_runs_files(tmp_path) -> None:
    from edge_deeplab.run_folder import prepare_out_dir

    run = tmp_path / "run"
    run.mkdir()
    for name in ("best.pt", "last.pt", "log.jsonl", "train_config.json", ".last.pt.x.tmp", "notes.md"):
        (run / name).write_text("old")
    with pytest.raises(EdgeDeeplabError, match="already holds a training run"):
        prepare_out_dir(run, resume=False, force=False)
    prepare_out_dir(run, resume=False, force=True)
    assert sorted(p.name for p in run.iterdir()) == ["notes.md"]  # the user's own file stays
