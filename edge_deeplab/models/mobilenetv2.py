"""MobileNetV2 backbone (Sandler et al., 2018), the edge default.

Module and parameter names follow torchvision's ``mobilenet_v2`` (``features.0.0.weight``,
``features.1.conv.0.0.weight``, ...) so its ImageNet state dict loads directly, less the
classifier and ``features.18``: like VainF/DeepLabV3Plus-Pytorch, the final 1x1 conv to 1280
channels is dropped and ASPP reads the 320-channel output of the last inverted residual.
Channel rounding follows torchvision (multiples of 8) at every width multiplier.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from edge_deeplab.models.layers import ConvBNReLU, StrideUnit, apply_output_stride

# (expansion t, channels c, repeats n, first stride s) per stage, from the MobileNetV2 paper.
_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)

# features[0:4] ends at stride 4 (stem conv s2 + first 24-channel block s2): the low-level feature.
_LOW_LEVEL_END = 4


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of ``divisor``, never dropping more than 10%.

    Same rule as the TF and torchvision MobileNets, so widths other than 1.0 give the same
    channel counts as theirs.
    """
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class InvertedResidual(nn.Module):
    """Expand 1x1 (ReLU6) -> depthwise 3x3 (ReLU6) -> linear project 1x1, residual when shapes match."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = int(round(in_channels * expand_ratio))
        # Decided from the nominal stride: blocks whose stride the output-stride switch removes
        # all change channel count, so they never have a residual either way.
        self.use_res_connect = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU(in_channels, hidden, 1, activation="relu6"))
        layers += [
            ConvBNReLU(hidden, hidden, 3, stride=stride, groups=hidden, activation="relu6"),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)
        self.stride = stride
        self.pad_input = False

    @property
    def depthwise(self) -> nn.Conv2d:
        """The 3x3 depthwise conv (a property, not an attribute, so the state dict keeps one name)."""
        return self.conv[-3][0]

    def forward(self, x: Tensor) -> Tensor:
        if self.pad_input:
            # VainF layout: pad the block input by the depthwise conv's "same" amount before the
            # 1x1 expansion; the depthwise conv itself then has padding 0.
            d = self.depthwise.dilation[0]
            out = self.conv(F.pad(x, (d, d, d, d)))
        else:
            out = self.conv(x)
        return x + out if self.use_res_connect else out


class MobileNetV2(nn.Module):
    """MobileNetV2 feature extractor returning (stride-4 low-level feature, final feature).

    Attributes:
        low_level_channels: channels of the stride-4 feature (24 at width 1.0).
        out_channels: channels of the final feature (320 at width 1.0).
    """

    stem_stride = 2

    def __init__(self, width_mult: float = 1.0, output_stride: int = 32, padding: str = "same") -> None:
        super().__init__()
        self.padding = padding
        channels = make_divisible(32 * width_mult)
        features: list[nn.Module] = [ConvBNReLU(3, channels, 3, stride=2, activation="relu6")]
        for t, c, n, s in _SETTINGS:
            out = make_divisible(c * width_mult)
            for i in range(n):
                features.append(InvertedResidual(channels, out, s if i == 0 else 1, t))
                channels = out
        self.features = nn.Sequential(*features)
        self.low_level_channels: int = self.features[_LOW_LEVEL_END - 1].conv[-1].num_features
        self.out_channels: int = channels
        if padding == "vainf":
            self.features[0][0].padding = (0, 0)
            for block in self.features[1:]:
                block.pad_input = True
        self.set_output_stride(output_stride)

    def stride_units(self) -> list[StrideUnit]:
        """Every inverted residual; its depthwise conv carries both stride and dilation."""
        units = []
        for block in self.features[1:]:
            units.append(StrideUnit(block.stride, [block.depthwise], [block.depthwise]))
        return units

    def set_output_stride(self, output_stride: int) -> None:
        """OS 16 dilates from features[14] on, OS 8 from features[7] on (weights unchanged)."""
        apply_output_stride(self.stem_stride, self.stride_units(), output_stride)
        if self.padding == "vainf":  # the blocks pad their inputs instead (see InvertedResidual)
            for block in self.features[1:]:
                block.depthwise.padding = (0, 0)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        for block in self.features[:_LOW_LEVEL_END]:
            x = block(x)
        low_level = x
        for block in self.features[_LOW_LEVEL_END:]:
            x = block(x)
        return low_level, x
