"""Small re-creations of the two tutorial ResNeXt layouts, with the same key names and shapes.

``ModuleListResNeXt``: grouped convolution as a ModuleList of per-group Conv2d + torch.cat,
``stack{s}.blocks.{i}`` naming, BN eps 1.001e-5, stride on the grouped 3x3.
``PartsResNeXt``: Conv2d(groups=C) with conv biases, stride on the first 1x1, ``part{s}_{b}``
blocks, a fixed AvgPool2d head and a ``fn1`` classifier.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

EPS_000 = 1.001e-5


class SplitGroupConv(nn.Module):
    def __init__(self, channels: int, stride: int, groups: int) -> None:
        super().__init__()
        self.per_group = channels // groups
        self.conv_layers = nn.ModuleList(
            nn.Conv2d(self.per_group, self.per_group, 3, stride, 1, bias=False)
            for _ in range(groups)
        )
        self.bn = nn.BatchNorm2d(channels, eps=EPS_000)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pieces = torch.split(x, self.per_group, dim=1)
        y = torch.cat([conv(p) for conv, p in zip(self.conv_layers, pieces, strict=True)], dim=1)
        return F.relu(self.bn(y))


class ModuleListBlock(nn.Module):
    def __init__(self, cin: int, filters: int, stride: int, groups: int, projection: bool) -> None:
        super().__init__()
        self.shortcut: nn.Module = (
            nn.Sequential(
                nn.Conv2d(cin, 2 * filters, 1, stride, bias=False),
                nn.BatchNorm2d(2 * filters, eps=EPS_000),
            )
            if projection
            else nn.Identity()
        )
        self.conv1 = nn.Conv2d(cin, filters, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(filters, eps=EPS_000)
        self.grouped_conv = SplitGroupConv(filters, stride, groups)
        self.conv2 = nn.Conv2d(filters, 2 * filters, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(2 * filters, eps=EPS_000)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(self.grouped_conv(y)))
        return F.relu(y + self.shortcut(x))


class ModuleListStack(nn.Module):
    def __init__(self, cin: int, filters: int, blocks: int, stride: int, groups: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([ModuleListBlock(cin, filters, stride, groups, True)])
        self.blocks.extend(
            ModuleListBlock(2 * filters, filters, 1, groups, False) for _ in range(1, blocks)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class ModuleListResNeXt(nn.Module):
    def __init__(self, layers=(2, 3, 5, 2), groups: int = 32, num_classes: int = 2) -> None:  # noqa: ANN001
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=EPS_000)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = 64
        for s, blocks in enumerate(layers):
            filters = 128 * 2**s
            self.add_module(
                f"stack{s + 1}", ModuleListStack(cin, filters, blocks, 1 if s == 0 else 2, groups)
            )
            cin = 2 * filters
        self.n_stacks = len(layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        for s in range(self.n_stacks):
            x = getattr(self, f"stack{s + 1}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


class PartsBlock(nn.Module):
    def __init__(
        self,
        cin: int,
        widths: tuple[int, int, int],
        cardinality: int,
        stride: int,
        projection: bool,
    ) -> None:
        super().__init__()
        f1, f2, f3 = widths
        self.conv1 = nn.Conv2d(cin, f1, 1, stride)
        self.bn1 = nn.BatchNorm2d(f1)
        self.conv2 = nn.Conv2d(f1, f2, 3, padding=1, groups=cardinality)
        self.bn2 = nn.BatchNorm2d(f2)
        self.conv3 = nn.Conv2d(f2, f3, 1)
        self.bn3 = nn.BatchNorm2d(f3)
        self.projection = projection
        if projection:
            self.shortcut = nn.Conv2d(cin, f3, 1, stride)
            self.shortcut_bn = nn.BatchNorm2d(f3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        skip = self.shortcut_bn(self.shortcut(x)) if self.projection else x
        return F.relu(y + skip)


class PartsResNeXt(nn.Module):
    def __init__(
        self,
        layers=(3, 4, 6, 3),
        cardinality: int = 32,
        classes: int = 2,  # noqa: ANN001
        pool: int = 7,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3)
        self.bn1 = nn.BatchNorm2d(64)
        self.max_pool = nn.MaxPool2d(3, 2, 1)
        self.names = []
        cin = 64
        for s, blocks in enumerate(layers):
            w = 128 * 2**s
            for b in range(blocks):
                name = f"part{s + 1}_{b + 1}"
                stride = (1 if s == 0 else 2) if b == 0 else 1
                self.add_module(name, PartsBlock(cin, (w, w, 2 * w), cardinality, stride, b == 0))
                self.names.append(name)
                cin = 2 * w
        self.avg_pool = nn.AvgPool2d(pool)
        self.fn1 = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.max_pool(F.relu(self.bn1(self.conv1(x))))
        for name in self.names:
            x = getattr(self, name)(x)
        return self.fn1(self.avg_pool(x).flatten(1))


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics and conv biases, so folding and fusion bugs show."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
        elif isinstance(m, nn.Conv2d) and m.bias is not None:
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)
    return model.eval()
