"""The modified aligned Xception-65 of DeepLabv3+ (Chen et al., ECCV 2018, Fig. 4).

Changes from Chollet's Xception, per the paper: a deeper middle flow (16 repeats instead of 8);
every max pooling replaced by a strided depthwise separable conv, so the stride can be turned into
dilation; and BN + ReLU after every 3x3 depthwise conv (see :class:`SeparableConv2d`).

Layout (channels; "s2" = last separable conv of the block has stride 2):

- entry flow: conv 3x3 32 s2, conv 3x3 64, then three blocks of 3 separable convs with a strided
  1x1 conv + BN shortcut: [128,128,128] s2, [256,256,256] s2, [728,728,728] s2;
- middle flow: 16 blocks of [728,728,728] with identity shortcut;
- exit flow: [728,1024,1024] s2 with 1x1 conv shortcut, then [1536,1536,2048] without shortcut.

The low-level feature is taken inside entry block 2, after its second separable conv (stride 4,
256 channels), the point the TF DeepLab reference decodes from.
"""

from __future__ import annotations

from torch import Tensor, nn

from edge_deeplab.models.layers import ConvBNReLU, SeparableConv2d, StrideUnit, apply_output_stride

_MIDDLE_REPEATS = 16


class XceptionBlock(nn.Module):
    """Three separable convs, the last one strided, plus a shortcut.

    ``shortcut`` is "conv" (1x1 conv + BN, strided like the block), "identity", or "none". With a
    shortcut the sum is taken before the final ReLU, as in a residual block.
    """

    def __init__(self, channels: tuple[int, int, int, int], stride: int, shortcut: str) -> None:
        super().__init__()
        has_shortcut = shortcut != "none"
        self.units = nn.ModuleList(
            [
                SeparableConv2d(channels[0], channels[1]),
                SeparableConv2d(channels[1], channels[2]),
                SeparableConv2d(channels[2], channels[3], stride=stride, final_relu=not has_shortcut),
            ]
        )
        self.skip: nn.Sequential | None = None
        if shortcut == "conv":
            self.skip = nn.Sequential(
                nn.Conv2d(channels[0], channels[3], 1, stride=stride, bias=False),
                nn.BatchNorm2d(channels[3]),
            )
        elif shortcut not in ("identity", "none"):
            raise ValueError(f"unknown shortcut {shortcut!r}")
        self.has_shortcut = has_shortcut
        self.relu = nn.ReLU(inplace=True) if has_shortcut else None
        self.stride = stride

    def forward_with_hidden(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return (block output, output of the second separable conv, before the strided one)."""
        hidden = self.units[1](self.units[0](x))
        out = self.units[2](hidden)
        if self.has_shortcut:
            out = self.relu(out + (x if self.skip is None else self.skip(x)))
        return out, hidden

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_with_hidden(x)[0]

    def stride_unit(self) -> StrideUnit:
        """The last depthwise conv and the shortcut carry the stride; all depthwise convs dilate."""
        strided = [self.units[2].depthwise[0]]
        if self.skip is not None:
            strided.append(self.skip[0])
        return StrideUnit(self.stride, strided, [unit.depthwise[0] for unit in self.units])


class Xception65(nn.Module):
    """Aligned Xception-65 returning (stride-4 low-level feature, final 2048-channel feature).

    Attributes:
        low_level_channels: 256 (inside entry block 2).
        out_channels: 2048.
    """

    stem_stride = 2

    def __init__(self, output_stride: int = 32) -> None:
        super().__init__()
        self.conv1 = ConvBNReLU(3, 32, 3, stride=2)
        self.conv2 = ConvBNReLU(32, 64, 3)
        self.entry_block1 = XceptionBlock((64, 128, 128, 128), 2, "conv")
        self.entry_block2 = XceptionBlock((128, 256, 256, 256), 2, "conv")
        self.entry_block3 = XceptionBlock((256, 728, 728, 728), 2, "conv")
        self.middle = nn.Sequential(
            *(XceptionBlock((728, 728, 728, 728), 1, "identity") for _ in range(_MIDDLE_REPEATS))
        )
        self.exit_block1 = XceptionBlock((728, 728, 1024, 1024), 2, "conv")
        self.exit_block2 = XceptionBlock((1024, 1536, 1536, 2048), 1, "none")
        self.low_level_channels: int = 256
        self.out_channels: int = 2048
        self.set_output_stride(output_stride)

    def blocks(self) -> list[XceptionBlock]:
        """All blocks after the stem, in order."""
        return [
            self.entry_block1,
            self.entry_block2,
            self.entry_block3,
            *self.middle,
            self.exit_block1,
            self.exit_block2,
        ]

    def stride_units(self) -> list[StrideUnit]:
        """One unit per block: a block's stride removed means all its convs keep the old rate."""
        return [block.stride_unit() for block in self.blocks()]

    def set_output_stride(self, output_stride: int) -> None:
        """OS 16 dilates the exit flow, OS 8 also the middle flow (entry block 3 loses its stride)."""
        apply_output_stride(self.stem_stride, self.stride_units(), output_stride)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = self.entry_block1(self.conv2(self.conv1(x)))
        x, low_level = self.entry_block2.forward_with_hidden(x)
        x = self.entry_block3(x)
        x = self.middle(x)
        x = self.exit_block2(self.exit_block1(x))
        return low_level, x
