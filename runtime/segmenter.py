"""``runtime.load(bundle)`` -> a :class:`Segmenter`: image in, class mask out, any backend.

The segmenter owns everything around the backend call: converting the picture to RGB bytes,
fitting it to the model input (per the manifest's shape and resize mode), normalizing, and
mapping the model's output back onto the original pixels. Backends only run tensors.

A bundle's graph returns the class mask (``outputs`` has ``mask``: ArgMax inside the graph, the
default export), logits, or both. With a mask the host only crops the padding and resizes the
mask to the image (nearest); the per-pixel argmax over C classes, and copying C float planes off
the accelerator, are the graph's business. Logits-only bundles get the argmax here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from runtime.backends import Backend, open_backend
from runtime.errors import BundleError, EdgeDeeplabError
from runtime.images import ImageInput, read_if_path, resize_logits
from runtime.manifest import LOGITS, MASK, Manifest, read_manifest
from runtime.options import RuntimeOptions
from runtime.postprocess import argmax_classes, mask_from_logits, restore_mask
from runtime.preprocess import Placement, prepare_image


class Segmenter:
    """A loaded bundle. ``predict(image)`` returns an HxW class-index mask at the image's size."""

    def __init__(self, manifest: Manifest, bundle_dir: Path, backend: Backend, options: RuntimeOptions) -> None:
        self.manifest = manifest
        self.bundle_dir = bundle_dir
        self.backend = backend
        self.options = options
        self.palette = manifest.palette
        self.classes = manifest.classes
        if options.upsample == "logits" and not manifest.has_logits:
            raise EdgeDeeplabError(_needs_logits(bundle_dir, "upsample='logits' (bilinear logits before the argmax)"))

    # -- the public calls -------------------------------------------------------------------
    def predict(self, image: ImageInput) -> np.ndarray:
        """uint8 HxWx3 RGB (grayscale, RGBA and 16-bit are converted), or an image file's path -> HxW class indices."""
        return self.predict_batch([image])[0]

    def predict_batch(self, images: Sequence[ImageInput]) -> list[np.ndarray]:
        """Masks for several images; images that fit the same input size share one backend call."""
        images = [read_if_path(image) for image in images]
        if self.manifest.has_mask and self.options.upsample == "mask":
            return self._infer(images, MASK, restore_mask)
        return self._infer(images, LOGITS, self._to_mask)

    def logits(self, image: ImageInput) -> np.ndarray:
        """float32 C x H x W logits at the image's size (bilinear), for evaluation or soft outputs.

        Only bundles exported with ``--outputs logits`` or ``both`` have them.
        """
        if not self.manifest.has_logits:
            raise EdgeDeeplabError(_needs_logits(self.bundle_dir, "logits (soft output)"))
        image = read_if_path(image)

        def crop_and_resize(logits: np.ndarray, placement: Placement) -> np.ndarray:
            valid = np.asarray(logits[:, : placement.scaled_h, : placement.scaled_w], dtype=np.float32)
            return resize_logits(valid, placement.orig_h, placement.orig_w).copy()

        return self._infer([image], LOGITS, crop_and_resize)[0]

    def prepare(self, image: np.ndarray) -> tuple[np.ndarray, Placement]:
        """One image -> (3 x h x w model input, where it was placed)."""
        spec = self.manifest.input
        return prepare_image(
            image, self.backend.static_hw, spec.resize, spec.dtype, self.manifest.mean, self.manifest.std,
            self.backend.max_hw, self.options.pad_multiple,
        )

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> "Segmenter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Segmenter({self.bundle_dir.name}: {self.manifest.target}/{self.manifest.precision}, "
            f"{self.manifest.num_classes} classes, input {self.manifest.input.shape})"
        )

    # -- internals ---------------------------------------------------------------------------
    def _infer(
        self, images: Sequence[np.ndarray], output: str, finish: Callable[[np.ndarray, Placement], Any]
    ) -> list[Any]:
        """Run the images through the backend and ``finish`` each image's ``output``, in input order.

        ``finish`` is called right after each backend call, because a backend may reuse its
        output buffer on the next call; this avoids copying every output.
        """
        prepared = [self.prepare(image) for image in images]
        groups: dict[tuple[int, ...], list[int]] = {}
        for index, (tensor, _) in enumerate(prepared):
            groups.setdefault(tensor.shape, []).append(index)
        chunk = self.backend.batch_size or self.backend.max_batch or max(len(images), 1)
        results: list[Any] = [None] * len(images)
        for indices in groups.values():
            for start in range(0, len(indices), chunk):
                part = indices[start : start + chunk]
                # One image (the video and camera case) goes in without the copy np.stack makes.
                batch = prepared[part[0]][0][None] if len(part) == 1 else np.stack([prepared[i][0] for i in part])
                if self.backend.batch_size and len(part) < self.backend.batch_size:
                    filler = np.zeros((self.backend.batch_size - len(part), *batch.shape[1:]), dtype=batch.dtype)
                    batch = np.concatenate([batch, filler])
                result = self.backend.run(batch, output)
                rank = 3 if output == MASK else 4
                if result.ndim != rank or result.shape[0] != batch.shape[0]:
                    expected = "N x H x W" if output == MASK else "N x C x H x W"
                    raise BundleError(f"{self.bundle_dir}: model output {output!r} has shape {result.shape}, "
                                      f"expected {expected}")
                self._check_classes(result, output)
                for row, i in enumerate(part):
                    placement = prepared[i][1]
                    if result.shape[-2:] != (placement.input_h, placement.input_w):
                        raise BundleError(
                            f"{self.bundle_dir}: {output} is {result.shape[-2]}x{result.shape[-1]} for an input of "
                            f"{placement.input_h}x{placement.input_w}; the runtime expects it at input size"
                        )
                    results[i] = finish(result[row], placement)
        return results

    def _check_classes(self, result: np.ndarray, output: str) -> None:
        """The model must predict the manifest's classes: C logit planes, or mask values below C.

        A manifest naming fewer classes than the model has would otherwise give labels with no
        name or colour, written to disk as if they were fine. The mask check is one pass over a
        byte per pixel, small beside the model.
        """
        classes = self.manifest.num_classes
        found = result.shape[1] if output == LOGITS else int(result.max(initial=0)) + 1
        if (output == LOGITS and found != classes) or found > classes:
            what = f"{found} logit planes" if output == LOGITS else f"class {found - 1}"
            raise BundleError(f"{self.bundle_dir}: the model predicts {what}, but model.json names {classes} classes "
                              "(an edited or mismatched manifest?); re-copy or re-export the bundle")

    def _to_mask(self, logits: np.ndarray, placement: Placement) -> np.ndarray:
        """Crop the padding off, take the argmax and bring the mask to the original size."""
        if self.options.upsample == "logits":
            valid = logits[:, : placement.scaled_h, : placement.scaled_w]
            full = resize_logits(np.asarray(valid, dtype=np.float32), placement.orig_h, placement.orig_w)
            return argmax_classes(full)
        return mask_from_logits(logits, placement)


def _needs_logits(bundle_dir: Path, what: str) -> str:
    return (f"{bundle_dir} returns class masks only, so it has no {what}; export it with --outputs logits "
            "(or both) for soft outputs")


def load(bundle_dir: str | Path, verify: bool = True, **options: Any) -> Segmenter:
    """Read a bundle's manifest, open its backend and return a ready :class:`Segmenter`.

    ``verify`` checks each model file against its manifest checksum first (a few hundred ms for
    a large model; it turns a truncated copy into a clear error). ``options``: see
    :class:`runtime.options.RuntimeOptions`.
    """
    bundle_dir = Path(bundle_dir)
    runtime_options = RuntimeOptions.from_kwargs(**options)
    manifest = read_manifest(bundle_dir, verify_files=verify)
    backend = open_backend(manifest, bundle_dir, runtime_options)
    return Segmenter(manifest, bundle_dir, backend, runtime_options)
