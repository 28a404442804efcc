"""The calibration package: set selection, runtime-identical preprocessing, range cache, readers."""

from __future__ import annotations

import io
import sys
from dataclasses import dataclass

import numpy as np
import pytest

from calibration.folder import ImageFolder
from calibration.inputs import InputSpecLite, prepare
from calibration.selection import select_calibration_set
from runtime.errors import EdgeDeeplabError
from runtime.preprocess import IMAGENET_MEAN, IMAGENET_STD

SPEC = InputSpecLite(33, 49, "float32", IMAGENET_MEAN, IMAGENET_STD)


@dataclass
class Item:
    image: np.ndarray
    mask: np.ndarray | None
    name: str


def _dataset(classes_per_image: list[list[int]], size: int = 8) -> list[Item]:
    items = []
    for i, classes in enumerate(classes_per_image):
        mask = np.full((size, size), 255, np.uint8)
        for j, c in enumerate(classes):
            mask[j] = c
        items.append(Item(np.zeros((size, size, 3), np.uint8), mask, f"img{i}"))
    return items


def test_selection_covers_every_class_and_is_deterministic():
    # Class 4 appears in one image only, among 40 mostly class-0 images.
    layout = [[0]] * 40
    layout[17] = [0, 4]
    layout[3] = [1, 2]
    layout[29] = [3]
    data = _dataset(layout)
    first = select_calibration_set(data, 5, num_classes=5, seed=1)
    again = select_calibration_set(data, 5, num_classes=5, seed=1)
    assert first == again
    assert {17, 3, 29} <= set(first.indices)
    assert first.covered_classes == (0, 1, 2, 3, 4)
    assert first.missing_classes == ()
    assert len(set(first.indices)) == 5
    other = select_calibration_set(data, 5, num_classes=5, seed=2)
    assert set(other.indices) != set(first.indices)  # the random fill follows the seed
    assert other.fingerprint != first.fingerprint


def test_selection_reports_classes_no_image_has_and_caps_count():
    data = _dataset([[0], [1], [0, 1]])
    chosen = select_calibration_set(data, 10, num_classes=3)
    assert len(chosen.indices) == 3
    assert chosen.missing_classes == (2,)
    assert chosen.summary()["images"] == 3


def test_selection_rejects_empty_dataset_and_zero_count():
    with pytest.raises(EdgeDeeplabError, match="no images"):
        select_calibration_set([], 5, num_classes=2)
    with pytest.raises(EdgeDeeplabError, match="at least 1"):
        select_calibration_set(_dataset([[0]]), 0, num_classes=2)


def test_unlabelled_folder_calibrates_by_seeded_random_pick(tmp_path):
    from PIL import Image

    for i in range(6):
        Image.fromarray(np.full((20, 30, 3), 40 * i, np.uint8)).save(tmp_path / f"f{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    folder = ImageFolder(tmp_path)
    assert len(folder) == 6
    chosen = select_calibration_set(folder, 3, num_classes=4, seed=0)
    assert len(chosen.indices) == 3 and chosen.covered_classes == () and chosen.missing_classes == ()
    assert chosen == select_calibration_set(folder, 3, num_classes=4, seed=0)


def test_folder_without_images_is_one_clear_error(tmp_path):
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(EdgeDeeplabError, match="no usable images"):
        ImageFolder(tmp_path)


def test_prepare_matches_runtime_fit_pad_normalize():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (66, 40, 3), dtype=np.uint8)  # taller than the input: shrunk to fit
    array, placement = prepare(image, SPEC)
    assert array.shape == (1, 3, 33, 49) and array.dtype == np.float32
    assert (placement.scaled_h, placement.scaled_w) == (33, 20)
    assert np.all(array[0, :, :, 20:] == 0.0)  # padding is the mean colour = 0 after normalization
    raw, _ = prepare(image, InputSpecLite(33, 49, "uint8", IMAGENET_MEAN, IMAGENET_STD))
    assert raw.dtype == np.uint8
    # The uint8 input normalized by hand equals the float input.
    mean = np.asarray(IMAGENET_MEAN, np.float32)[:, None, None] * 255
    std = np.asarray(IMAGENET_STD, np.float32)[:, None, None] * 255
    np.testing.assert_allclose((raw[0, :, :, :20].astype(np.float32) - mean) / std, array[0, :, :, :20], atol=1e-5)


def test_outputs_to_mask_crops_padding_and_restores_size():
    from exporters.verify import outputs_to_mask

    image = np.zeros((66, 40, 3), np.uint8)
    _, placement = prepare(image, SPEC)
    logits = np.zeros((1, 3, 33, 49), np.float32)
    logits[0, 2, :, :20] = 1.0  # class 2 on the image area, class 0 on the padding
    from_logits = outputs_to_mask({"logits": logits}, placement)
    from_mask = outputs_to_mask({"mask": logits.argmax(axis=1).astype(np.uint8)}, placement)
    assert from_logits.shape == (66, 40) and np.all(from_logits == 2)
    np.testing.assert_array_equal(from_mask, from_logits)


def _tiny_onnx(path):
    """A two-conv float model (ReLU between), enough to exercise calibration end to end."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((2, 4, 1, 1)).astype(np.float32), "w2")
    nodes = [helper.make_node("Conv", ["image", "w1"], ["a"], name="c1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["b"], name="r1"),
             helper.make_node("Conv", ["b", "w2"], ["logits"], name="c2")]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 2, 8, 8])], [w1, w2])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
def test_ranges_are_computed_once_then_read_from_cache(tmp_path, method):
    from calibration.ranges import compute_ranges

    model = _tiny_onnx(tmp_path / "m.onnx")
    arrays = [np.random.default_rng(i).standard_normal((1, 3, 8, 8)).astype(np.float32) for i in range(10)]
    first = compute_ranges(model, "image", arrays, method, "set-a", tmp_path / "cache")
    assert not first.cached and first.path.is_file()
    again = compute_ranges(model, "image", arrays, method, "set-a", tmp_path / "cache")
    assert again.cached and again.path == first.path
    other_set = compute_ranges(model, "image", arrays, method, "set-b", tmp_path / "cache")
    assert other_set.key != first.key
    from onnxruntime.quantization.calibrate import load_tensors_data

    ranges = load_tensors_data(first.path)
    low, high = ranges["b"].range_value
    assert np.min(low) >= 0.0 and np.max(high) > 0.0  # after the ReLU


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_calibration_shows_a_bar_on_a_terminal_only(tmp_path, monkeypatch, capsys):
    from calibration.ranges import compute_ranges

    model = _tiny_onnx(tmp_path / "m.onnx")
    arrays = [np.random.default_rng(i).standard_normal((1, 3, 8, 8)).astype(np.float32) for i in range(3)]
    compute_ranges(model, "image", arrays, "minmax", "captured", tmp_path / "cache")
    assert capsys.readouterr() == ("", "")  # captured (no terminal): quiet
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    compute_ranges(model, "image", arrays, "minmax", "no-progress", tmp_path / "cache", progress=False)
    assert terminal.getvalue() == ""
    compute_ranges(model, "image", arrays, "minmax", "terminal", tmp_path / "cache")
    assert "calibrating (minmax)" in terminal.getvalue() and "/3" in terminal.getvalue()
    assert capsys.readouterr().out == ""  # never on stdout


def test_unknown_method_is_a_user_error(tmp_path):
    from calibration.ranges import compute_ranges

    model = _tiny_onnx(tmp_path / "m.onnx")
    with pytest.raises(EdgeDeeplabError, match="unknown calibration method"):
        compute_ranges(model, "image", [np.zeros((1, 3, 8, 8), np.float32)], "kl", "s", tmp_path)


def test_ort_reader_hands_out_each_array_once_and_rewinds():
    from calibration.ort_reader import ArrayReader

    arrays = [np.full((1, 3, 2, 2), i, np.float32) for i in range(3)]
    reader = ArrayReader("image", arrays)
    seen = []
    while (feed := reader.get_next()) is not None:
        seen.append(float(feed["image"][0, 0, 0, 0]))
    assert seen == [0.0, 1.0, 2.0] and len(reader) == 3
    reader.rewind()
    assert reader.get_next()["image"][0, 0, 0, 0] == 0.0


def test_ort_reader_counts_each_array_once_the_calibrator_is_through_with_it():
    from calibration.ort_reader import ArrayReader

    done: list[int] = []
    reader = ArrayReader("image", [np.zeros((1, 3, 2, 2), np.float32)] * 3, on_done=done.append)
    reader.get_next()
    assert sum(done) == 0  # handed out, not yet run
    reader.get_next()
    assert sum(done) == 1
    while reader.get_next() is not None:
        pass
    assert sum(done) == 3
    reader.get_next()  # asking again after the end counts nothing more
    assert sum(done) == 3


def test_nncf_dataset_transforms_items_to_arrays():
    from calibration.inputs import PreparedImage
    from calibration.nncf_data import nncf_dataset

    image = np.zeros((10, 10, 3), np.uint8)
    array, placement = prepare(image, SPEC)
    dataset = nncf_dataset([PreparedImage(array, placement, None, "a")])
    (first,) = list(dataset.get_inference_data())
    assert first.shape == (1, 3, 33, 49)
