"""ResNet-50 / ResNet-101 backbones (He et al., 2016), bottleneck "v1.5" as in torchvision.

v1.5 puts a block's stride on its 3x3 conv (not the first 1x1). Module and parameter names follow
torchvision (``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer1.0.downsample.0``, ...) so its ImageNet
state dict loads directly, less ``fc``. The low-level feature is ``layer1`` (stride 4, 256 channels)
and the final feature ``layer4`` (2048 channels), as in DeepLabv3+.
"""

from __future__ import annotations

from torch import Tensor, nn

from edge_deeplab.models.layers import StrideUnit, apply_output_stride

_EXPANSION = 4

#: Bottleneck blocks per stage.
DEPTHS: dict[str, tuple[int, int, int, int]] = {
    "resnet50": (3, 4, 6, 3),
    "resnet101": (3, 4, 23, 3),
}


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (stride, dilation) -> 1x1 expand x4, plus identity or projected shortcut."""

    def __init__(self, in_channels: int, planes: int, stride: int) -> None:
        super().__init__()
        out_channels = planes * _EXPANSION
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)

    def stride_unit(self) -> StrideUnit:
        """The 3x3 conv and the shortcut projection carry the stride; the 3x3 takes dilation."""
        strided = [self.conv2] if self.downsample is None else [self.conv2, self.downsample[0]]
        return StrideUnit(self.stride, strided, [self.conv2])


class ResNet(nn.Module):
    """ResNet feature extractor returning (layer1 output, layer4 output).

    Attributes:
        low_level_channels: 256 (layer1).
        out_channels: 2048 (layer4).
    """

    # conv1 (stride 2) + max pool (stride 2).
    stem_stride = 4

    def __init__(self, depth: str = "resnet50", output_stride: int = 32) -> None:
        super().__init__()
        if depth not in DEPTHS:
            raise ValueError(f"unknown ResNet depth {depth!r}")
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_channels = 64
        layers = []
        for index, (planes, blocks) in enumerate(zip((64, 128, 256, 512), DEPTHS[depth])):
            stride = 1 if index == 0 else 2
            stage = []
            for i in range(blocks):
                stage.append(Bottleneck(in_channels, planes, stride if i == 0 else 1))
                in_channels = planes * _EXPANSION
            layers.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.low_level_channels: int = 64 * _EXPANSION
        self.out_channels: int = in_channels
        self.set_output_stride(output_stride)

    def stride_units(self) -> list[StrideUnit]:
        """Every bottleneck of layer1..layer4, in order."""
        return [
            block.stride_unit()
            for layer in (self.layer1, self.layer2, self.layer3, self.layer4)
            for block in layer
        ]

    def set_output_stride(self, output_stride: int) -> None:
        """OS 16 dilates layer4, OS 8 layer3 and layer4 (torchvision's replace_stride_with_dilation)."""
        apply_output_stride(self.stem_stride, self.stride_units(), output_stride)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        low_level = self.layer1(x)
        x = self.layer4(self.layer3(self.layer2(low_level)))
        return low_level, x
