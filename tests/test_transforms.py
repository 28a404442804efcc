"""Augmentations keep masks exact and are reproducible; the torch wrapper is deterministic."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_deeplab.data.synthetic import SyntheticShapes
from edge_deeplab.data.transforms import (
    PAD_COLOUR,
    HorizontalFlip,
    PhotometricJitter,
    RandomCrop,
    RandomScale,
    train_transform,
    val_transform,
)
from runtime.errors import EdgeDeeplabError

ROOT = Path(__file__).resolve().parents[1]


def _striped(h: int = 40, w: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """A mask with labels {0, 3, 7, 255} in vertical bands, and a matching image."""
    mask = np.zeros((h, w), dtype=np.uint8)
    mask[:, 15:30], mask[:, 30:45], mask[:, 45:] = 3, 7, 255
    image = np.stack([mask, 255 - mask, np.full_like(mask, 9)], axis=2)
    return image, mask


def test_random_scale_resizes_and_keeps_labels():
    image, mask = _striped()
    for seed in range(10):
        img, msk = RandomScale((0.5, 2.0))(image, mask, np.random.default_rng(seed))
        assert img.shape[:2] == msk.shape and img.dtype == np.uint8 and msk.dtype == np.uint8
        assert 20 <= msk.shape[0] <= 80
        assert set(np.unique(msk)) <= {0, 3, 7, 255}
        assert round(msk.shape[1] / msk.shape[0], 1) == 1.5


def test_crop_pads_with_mean_colour_and_ignore():
    image, mask = _striped(10, 12)
    img, msk = RandomCrop(16)(image, mask, np.random.default_rng(0))
    assert img.shape == (16, 16, 3) and msk.shape == (16, 16)
    # Smaller than the crop in both directions: the input sits at the top-left, padding after it.
    assert np.array_equal(msk[:10, :12], mask) and np.array_equal(img[:10, :12], image)
    assert (msk[10:] == 255).all() and (msk[:, 12:] == 255).all()
    assert (img[10:] == PAD_COLOUR).all() and (img[:, 12:] == PAD_COLOUR).all()


def test_crop_of_larger_input_is_a_window():
    image, mask = _striped()
    img, msk = RandomCrop((20, 25))(image, mask, np.random.default_rng(5))
    assert msk.shape == (20, 25)
    hits = [(y, x) for y in range(21) for x in range(36)
            if np.array_equal(mask[y:y + 20, x:x + 25], msk) and np.array_equal(image[y:y + 20, x:x + 25], img)]
    assert hits


def test_flip_mirrors_both():
    image, mask = _striped()
    flipped = [HorizontalFlip(p=1.0)(image, mask, np.random.default_rng(s)) for s in range(3)]
    for img, msk in flipped:
        assert np.array_equal(msk, mask[:, ::-1]) and np.array_equal(img, image[:, ::-1])
    img, msk = HorizontalFlip(p=0.0)(image, mask, np.random.default_rng(0))
    assert msk is mask and img is image


def test_jitter_changes_colours_not_mask():
    sample = SyntheticShapes("val", size=64)[0]
    jitter = PhotometricJitter(p=1.0)
    img, msk = jitter(sample.image, sample.mask, np.random.default_rng(1))
    assert msk is sample.mask
    assert img.dtype == np.uint8 and img.shape == sample.image.shape
    assert not np.array_equal(img, sample.image)
    # Zero-strength jitter is the identity (up to rounding of the float pass).
    still = PhotometricJitter(0, 0, 0, 0, p=1.0)(sample.image, sample.mask, np.random.default_rng(1))[0]
    assert np.abs(still.astype(int) - sample.image).max() <= 1


def test_jitter_saturation_and_hue_keep_grays_and_follow_the_formula():
    gray = np.full((2, 3, 3), 90, dtype=np.uint8)
    colour_only = PhotometricJitter(brightness=0, contrast=0, saturation=0.5, hue=0.1, p=1.0)
    for seed in range(5):
        out = colour_only(gray, gray[..., 0], np.random.default_rng(seed))[0]
        assert np.abs(out.astype(int) - 90).max() <= 1  # hue and saturation preserve luma

    image = np.array([[[200, 30, 60], [10, 180, 90]]], dtype=np.uint8)
    saturation_only = PhotometricJitter(brightness=0, contrast=0, saturation=0.9, hue=0, p=1.0)
    out = saturation_only(image, image[..., 0], np.random.default_rng(3))[0].astype(float)
    draws = np.random.default_rng(3)  # replay the jitter's draws: brightness, contrast, saturation
    draws.uniform(0, 0), draws.uniform(0, 0)
    s = 1.0 + draws.uniform(-0.9, 0.9)
    luma = image.astype(float) @ np.array([0.299, 0.587, 0.114])
    expected = np.clip(s * image + (1 - s) * luma[..., None], 0, 255)
    assert np.abs(out - expected).max() <= 1.0


def test_train_transform_is_reproducible_and_exact():
    sample = SyntheticShapes("train", size=96)[2]
    labels = set(np.unique(sample.mask)) | {255}
    pipeline = train_transform(64)
    runs = [pipeline(sample.image, sample.mask, np.random.default_rng(s)) for s in (7, 7, 8)]
    assert np.array_equal(runs[0][0], runs[1][0]) and np.array_equal(runs[0][1], runs[1][1])
    assert not np.array_equal(runs[0][0], runs[2][0])
    for seed in range(20):
        img, msk = pipeline(sample.image, sample.mask, np.random.default_rng(seed))
        assert img.shape == (64, 64, 3) and msk.shape == (64, 64)
        assert set(np.unique(msk)) <= labels


def test_val_transform_is_identity_and_bad_arguments():
    image, mask = _striped()
    img, msk = val_transform()(image, mask, np.random.default_rng(0))
    assert img is image and msk is mask
    with pytest.raises(EdgeDeeplabError):
        RandomScale((0.0, 2.0))
    with pytest.raises(EdgeDeeplabError):
        RandomCrop(0)


# --- torch wrapper -------------------------------------------------------------------------------


def test_torch_dataset_tensors_and_determinism():
    torch = pytest.importorskip("torch")
    from edge_deeplab.data.torch_dataset import TorchSegmentation
    from runtime.preprocess import normalize

    base = SyntheticShapes("train", size=64, n=6)
    ds = TorchSegmentation(base, train_transform(48), seed=11)
    x, y = ds[3]
    assert x.dtype == torch.float32 and x.shape == (3, 48, 48)
    assert y.dtype == torch.int64 and y.shape == (48, 48)
    again = TorchSegmentation(base, train_transform(48), seed=11)[(3, 0)]  # (index, epoch)
    assert torch.equal(x, again[0]) and torch.equal(y, again[1])
    ds.set_epoch(1)
    assert not torch.equal(ds[3][0], x)  # a new epoch, a new augmentation
    assert torch.equal(ds[3][0], ds[(3, 1)][0])
    assert not torch.equal(TorchSegmentation(base, train_transform(48), seed=12)[3][0], x)
    plain = TorchSegmentation(base, val_transform())[0]
    assert np.allclose(plain[0].numpy(), normalize(base[0].image))
    assert np.array_equal(plain[1].numpy(), base[0].mask)


def test_collate_stacks_and_rejects_mixed_sizes():
    torch = pytest.importorskip("torch")
    from edge_deeplab.data.torch_dataset import TorchSegmentation, collate

    base = SyntheticShapes("train", size=48, n=4)
    ds = TorchSegmentation(base, train_transform(32))
    images, masks = collate([ds[i] for i in range(3)])
    assert images.shape == (3, 3, 32, 32) and masks.shape == (3, 32, 32) and masks.dtype == torch.int64
    whole = TorchSegmentation(SyntheticShapes("train", size=40, n=1), val_transform())[0]
    with pytest.raises(EdgeDeeplabError, match="mixes image sizes"):
        collate([ds[0], whole])


def test_dataloader_with_workers_matches_single_process():
    """Run in a fresh interpreter: DataLoader workers fork the process, and a fork of this pytest
    process, which earlier tests left holding OpenVINO's and ONNX Runtime's thread pools, can
    crash (it did, a segfault with no Python frame); training forks from a clean process."""
    pytest.importorskip("torch")
    code = (
        "import torch\n"
        "from torch.utils.data import DataLoader\n"
        "from edge_deeplab.data.synthetic import SyntheticShapes\n"
        "from edge_deeplab.data.torch_dataset import TorchSegmentation, collate\n"
        "from edge_deeplab.data.transforms import train_transform\n"
        "ds = TorchSegmentation(SyntheticShapes('train', size=48, n=8), train_transform(32), seed=2)\n"
        "batches = [[(5, 1), (2, 1), (7, 1), (0, 1)], [(1, 2), (3, 2), (6, 2), (4, 2)]]\n"
        "one, two = (list(DataLoader(ds, batch_sampler=batches, num_workers=w, collate_fn=collate)) for w in (0, 2))\n"
        "assert len(one) == len(two) == 2\n"
        "for (xa, ya), (xb, yb) in zip(one, two):\n"
        "    assert torch.equal(xa, xb) and torch.equal(ya, yb)\n"
        "print('same batches')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "same batches" in result.stdout, result.stderr[-2000:]
