"""Building blocks shared by the backbones and the DeepLab head, and the output-stride machinery.

Output stride is a property of a *built* network here (train at 16, evaluate or export at 8 with the
same weights), so the strides and dilations live only in the conv modules' ``stride``, ``dilation``
and ``padding`` attributes, which ``F.conv2d`` reads at every forward. Each backbone lists its
blocks as :class:`StrideUnit` s and :func:`apply_output_stride` rewrites those attributes; no
weight is ever touched, so one state dict runs at every stride.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn


class ConvBNReLU(nn.Sequential):
    """Conv (no bias: BN follows) + BatchNorm + ReLU (or ReLU6, or none).

    A Sequential so its children are named ``0`` (conv), ``1`` (BN), ``2`` (activation), the
    names torchvision's ``Conv2dNormActivation`` uses; MobileNetV2's ImageNet weights rely on it.
    Padding keeps the "same" size for odd kernels: ``dilation * (kernel_size - 1) // 2``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        activation: str | None = "relu",
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride=stride,
                padding=dilation * (kernel_size - 1) // 2,
                dilation=dilation,
                groups=groups,
                bias=False,
            ),
            nn.BatchNorm2d(out_channels),
        ]
        if activation == "relu":
            layers.append(nn.ReLU(inplace=True))
        elif activation == "relu6":
            layers.append(nn.ReLU6(inplace=True))
        elif activation is not None:
            raise ValueError(f"unknown activation {activation!r}")
        super().__init__(*layers)


class SeparableConv2d(nn.Module):
    """Atrous depthwise-separable conv: depthwise 3x3 (dilated) + BN + ReLU, pointwise 1x1 + BN + ReLU.

    The BN + ReLU after the depthwise conv is the paper's change to Xception (MobileNet style).
    ``final_relu=False`` leaves the pointwise output un-activated so an Xception block can add its
    shortcut before the ReLU, as a residual block does.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        dilation: int = 1,
        final_relu: bool = True,
    ) -> None:
        super().__init__()
        self.depthwise = ConvBNReLU(
            in_channels, in_channels, 3, stride=stride, dilation=dilation, groups=in_channels
        )
        self.pointwise = ConvBNReLU(
            in_channels, out_channels, 1, activation="relu" if final_relu else None
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise(self.depthwise(x))


def set_conv_dilation(conv: nn.Conv2d, dilation: int) -> None:
    """Dilate a conv in place, keeping its "same" padding; a 1x1 conv is left as it is."""
    if conv.kernel_size == (1, 1):
        return
    conv.dilation = (dilation, dilation)
    conv.padding = (
        dilation * (conv.kernel_size[0] - 1) // 2,
        dilation * (conv.kernel_size[1] - 1) // 2,
    )


@dataclass
class StrideUnit:
    """One backbone block as the output-stride switch sees it.

    Attributes:
        stride: the block's nominal stride when the network runs at its natural stride (1 or 2).
        strided: the convs that carry that stride (main conv and shortcut projection).
        dilated: the spatial (kxk) convs of the block that take the block's dilation.
    """

    stride: int
    strided: list[nn.Conv2d]
    dilated: list[nn.Conv2d]


def apply_output_stride(stem_stride: int, units: list[StrideUnit], output_stride: int) -> None:
    """Turn strides that would exceed ``output_stride`` into dilation, as DeepLab does.

    The rule is torchvision's ``replace_stride_with_dilation`` (and TF DeepLab's): the first block
    whose stride is removed keeps the dilation in force before it, and every block after it runs
    at that dilation times the removed stride. Blocks before the cut get stride back and dilation
    1, so calling this again with a larger stride undoes a smaller one exactly.
    """
    current_stride = stem_stride
    dilation = 1
    for unit in units:
        block_dilation = dilation
        if unit.stride > 1 and current_stride * unit.stride > output_stride:
            stride = 1
            dilation *= unit.stride
        else:
            stride = unit.stride
            current_stride *= unit.stride
        for conv in unit.strided:
            conv.stride = (stride, stride)
        for conv in unit.dilated:
            set_conv_dilation(conv, block_dilation)


def init_weights(module: nn.Module) -> None:
    """Kaiming-normal convs (zero bias), BN weight 1 and bias 0, as the DeepLab reference code does."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
