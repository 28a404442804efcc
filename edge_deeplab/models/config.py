"""The model's description as plain data, importable without torch.

A checkpoint, a bundle manifest and the CLI all need to say which network they mean (backbone,
classes, output stride, decoder on or off) on machines where torch is absent, e.g. a Jetson that
only runs bundles. So the description is a torch-free dataclass that round-trips through a dict
(JSON / YAML) and is validated on construction: a bad value is a user error, reported as one
:class:`EdgeDeeplabError` line, never a traceback from deep inside model building.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

from runtime.errors import EdgeDeeplabError

#: Backbone names accepted by :class:`ModelConfig` (and :func:`edge_deeplab.models.build_model`).
BACKBONES: tuple[str, ...] = ("mobilenetv2", "resnet50", "resnet101", "xception65")

#: Output strides the backbones can be switched between (ratio of input size to final feature).
OUTPUT_STRIDES: tuple[int, ...] = (8, 16, 32)

#: How MobileNetV2 pads: "same" pads inside each conv (torchvision); "vainf" leaves the stem conv
#: unpadded and pads each inverted residual's *input* before its 1x1 expansion, as
#: VainF/DeepLabV3Plus-Pytorch does, so its checkpoints give the same logits here.
PADDINGS: tuple[str, ...] = ("same", "vainf")

#: Number of 3x3 convs in the decoder: 2 as in the paper, 1 as VainF/DeepLabV3Plus-Pytorch's head.
DECODER_CONVS: tuple[int, ...] = (1, 2)

#: The head each backbone gets when ``separable`` is not given, for ``train`` and for
#: ``ModelConfig`` alike: atrous separable convs in ASPP and decoder for the edge backbone and for
#: Xception-65 (as in the paper), dense 3x3 convs for the ResNets. On the synthetic set the
#: separable MobileNetV2 head, trained as long as the dense one, scored 76.3 mIoU against 75.6 and
#: runs at 0.34-0.56x its latency (README, "Which head").
SEPARABLE_BY_DEFAULT: dict[str, bool] = {"mobilenetv2": True, "xception65": True, "resnet50": False,
                                         "resnet101": False}


def separable_before_v2(backbone: str) -> bool:
    """What ``separable: null`` meant in files written before the default was defined once
    (checkpoint format 1, a run's train_config.json from then): dense, except for Xception-65."""
    return backbone == "xception65"


def _is_int(value: object) -> bool:
    """True for a real int; bool is an int subclass in Python but never a valid count here."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    """True for an int or float, excluding bool (``True`` must not pass as width 1.0)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the same DeepLab network (weights aside).

    Attributes:
        backbone: one of :data:`BACKBONES`.
        num_classes: number of output channels (classes), >= 1.
        output_stride: 8, 16 or 32; can later be switched on a built model.
        decoder: True gives DeepLabv3+, False gives DeepLabv3 (ASPP -> classifier).
        separable: use atrous separable convs in ASPP and decoder; None (not given) becomes the
            backbone's default, :data:`SEPARABLE_BY_DEFAULT`, so a config always says which head.
        width_mult: MobileNetV2 width multiplier; must stay 1.0 for other backbones.
        decoder_convs: 3x3 convs in the decoder: 2 (the paper) or 1 (VainF's head).
        aspp_dropout: dropout probability after the ASPP projection, in [0, 1).
        padding: MobileNetV2 padding scheme, one of :data:`PADDINGS` ("vainf" only for imports).
    """

    backbone: str
    num_classes: int
    output_stride: int = 16
    decoder: bool = True
    separable: bool | None = None
    width_mult: float = 1.0
    decoder_convs: int = 2
    aspp_dropout: float = 0.1
    padding: str = "same"

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise EdgeDeeplabError(
                f"unknown backbone {self.backbone!r}: choose one of {', '.join(BACKBONES)}"
            )
        if not _is_int(self.num_classes) or self.num_classes < 1:
            raise EdgeDeeplabError(f"num_classes must be an integer >= 1, got {self.num_classes!r}")
        if not _is_int(self.output_stride) or self.output_stride not in OUTPUT_STRIDES:
            raise EdgeDeeplabError(
                f"output_stride must be one of {OUTPUT_STRIDES}, got {self.output_stride!r}"
            )
        if not isinstance(self.decoder, bool):
            raise EdgeDeeplabError(f"decoder must be true or false, got {self.decoder!r}")
        if self.separable is not None and not isinstance(self.separable, bool):
            raise EdgeDeeplabError(
                f"separable must be true, false or null (the backbone's default), got {self.separable!r}"
            )
        if self.separable is None:
            object.__setattr__(self, "separable", SEPARABLE_BY_DEFAULT[self.backbone])
        if not _is_number(self.width_mult) or not 0.0 < self.width_mult <= 4.0:
            raise EdgeDeeplabError(f"width_mult must be a number in (0, 4], got {self.width_mult!r}")
        if self.backbone != "mobilenetv2" and self.width_mult != 1.0:
            raise EdgeDeeplabError(
                f"width_mult applies to mobilenetv2 only; {self.backbone} needs width_mult 1.0"
            )
        if not _is_int(self.decoder_convs) or self.decoder_convs not in DECODER_CONVS:
            raise EdgeDeeplabError(
                f"decoder_convs must be one of {DECODER_CONVS}, got {self.decoder_convs!r}"
            )
        if not _is_number(self.aspp_dropout) or not 0.0 <= self.aspp_dropout < 1.0:
            raise EdgeDeeplabError(
                f"aspp_dropout must be a number in [0, 1), got {self.aspp_dropout!r}"
            )
        if self.padding not in PADDINGS:
            raise EdgeDeeplabError(f"padding must be one of {PADDINGS}, got {self.padding!r}")
        if self.padding != "same" and self.backbone != "mobilenetv2":
            raise EdgeDeeplabError(f"padding {self.padding!r} applies to mobilenetv2 only")
        # Canonical float form, so a config written as ``width_mult: 1`` equals the default one.
        object.__setattr__(self, "width_mult", float(self.width_mult))
        object.__setattr__(self, "aspp_dropout", float(self.aspp_dropout))

    @property
    def use_separable(self) -> bool:
        """Whether ASPP and decoder use atrous separable convs (``separable``, always resolved)."""
        return bool(self.separable)

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-serialisable dict; :meth:`from_dict` reads it back unchanged."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelConfig":
        """Build from a dict (a checkpoint, a manifest, a YAML file), rejecting unknown keys.

        Unknown keys are errors rather than ignored so a typo (``outputstride: 8``) cannot
        silently give a model at the default stride.
        """
        if not isinstance(data, Mapping):
            raise EdgeDeeplabError(
                f"model config must be a mapping of field names to values, got {type(data).__name__}"
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(str(k) for k in data if k not in known)
        if unknown:
            raise EdgeDeeplabError(
                f"unknown model config key(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        missing = [name for name in ("backbone", "num_classes") if name not in data]
        if missing:
            raise EdgeDeeplabError(f"model config is missing required key(s): {', '.join(missing)}")
        return cls(**dict(data))
