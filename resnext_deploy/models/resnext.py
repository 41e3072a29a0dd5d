"""One bottleneck ResNet; ResNeXt and ResNet are configurations of it.

State-dict keys follow torchvision's ResNet (``conv1 bn1 layer1.0.conv1 ... downsample.0 fc``) so
torchvision checkpoints load with ``strict=True``.
"""

from __future__ import annotations

import torch
from torch import nn

from resnext_deploy.spec import ArchConfig

EXPANSION = 4


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 grouped conv (``groups=cardinality``) -> 1x1 expand, plus the shortcut."""

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int,
        cfg: ArchConfig,
        downsample: nn.Module | None,
    ) -> None:
        super().__init__()
        width = int(planes * cfg.base_width / 64) * cfg.cardinality
        stride_1x1, stride_3x3 = (stride, 1) if cfg.stride_in_1x1 else (1, stride)
        bias = cfg.conv_bias
        self.conv1 = nn.Conv2d(inplanes, width, 1, stride=stride_1x1, bias=bias)
        self.bn1 = nn.BatchNorm2d(width, eps=cfg.bn_eps)
        self.conv2 = nn.Conv2d(
            width, width, 3, stride=stride_3x3, padding=1, groups=cfg.cardinality, bias=bias
        )
        self.bn2 = nn.BatchNorm2d(width, eps=cfg.bn_eps)
        self.conv3 = nn.Conv2d(width, planes * EXPANSION, 1, bias=bias)
        self.bn3 = nn.BatchNorm2d(planes * EXPANSION, eps=cfg.bn_eps)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNeXt(nn.Module):
    """The bottleneck ResNet family: ImageNet stem (7x7/2 + max-pool, 4 stages) or CIFAR stem
    (3x3/1, 3 stages), with cardinality, bottleneck width, stride placement, BN eps and conv bias
    taken from :class:`ArchConfig`."""

    def __init__(self, cfg: ArchConfig, num_classes: int = 1000) -> None:
        super().__init__()
        self.cfg = cfg
        bias, stem = cfg.conv_bias, cfg.base_planes
        if cfg.stem == "imagenet":
            self.conv1 = nn.Conv2d(3, stem, 7, stride=2, padding=3, bias=bias)
            self.maxpool: nn.Module = nn.MaxPool2d(3, stride=2, padding=1)
        else:
            self.conv1 = nn.Conv2d(3, stem, 3, stride=1, padding=1, bias=bias)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(stem, eps=cfg.bn_eps)
        self.relu = nn.ReLU(inplace=True)

        inplanes = stem
        for i, blocks in enumerate(cfg.layers):
            planes = stem * 2**i
            stride = 1 if i == 0 else 2
            layer, inplanes = _make_stage(cfg, inplanes, planes, blocks, stride)
            self.add_module(f"layer{i + 1}", layer)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inplanes, num_classes)
        self._init_weights()

    @property
    def stages(self) -> list[nn.Sequential]:
        return [getattr(self, f"layer{i + 1}") for i in range(len(self.cfg.layers))]

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for stage in self.stages:
            x = stage(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _make_stage(
    cfg: ArchConfig, inplanes: int, planes: int, blocks: int, stride: int
) -> tuple[nn.Sequential, int]:
    outplanes = planes * EXPANSION
    downsample = None
    if stride != 1 or inplanes != outplanes:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, outplanes, 1, stride=stride, bias=cfg.conv_bias),
            nn.BatchNorm2d(outplanes, eps=cfg.bn_eps),
        )
    layers = [Bottleneck(inplanes, planes, stride, cfg, downsample)]
    layers += [Bottleneck(outplanes, planes, 1, cfg, None) for _ in range(1, blocks)]
    return nn.Sequential(*layers), outplanes


def count_macs(model: nn.Module, input_size: int) -> int:
    """Multiply-accumulates of one forward pass on a 1x3xSxS input (convolutions and linear
    layers, as torchvision counts them). Runs on the meta device, so it costs no compute."""
    macs = 0

    def conv_hook(mod: nn.Conv2d, _inp: tuple[torch.Tensor], out: torch.Tensor) -> None:
        nonlocal macs
        kh, kw = mod.kernel_size
        macs += out.numel() * (mod.in_channels // mod.groups) * kh * kw

    def linear_hook(mod: nn.Linear, _inp: tuple[torch.Tensor], out: torch.Tensor) -> None:
        nonlocal macs
        macs += out.numel() * mod.in_features

    meta = _to_meta(model)
    handles = []
    for m in meta.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    with torch.no_grad():
        meta(torch.empty(1, 3, input_size, input_size, device="meta"))
    for h in handles:
        h.remove()
    return macs


def _to_meta(model: nn.Module) -> nn.Module:
    import copy

    clone = copy.deepcopy(model) if not any(p.is_meta for p in model.parameters()) else model
    return clone.to("meta").eval()
