"""Registered architectures: name -> :class:`ArchConfig`, and model construction."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from resnext_deploy.errors import RegistryError
from resnext_deploy.spec import ArchConfig


@dataclass(frozen=True)
class ArchInfo:
    name: str
    config: ArchConfig
    params: int
    gmacs: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "params": self.params,
            "gmacs": self.gmacs,
            "config": self.config.to_dict(),
        }


class Registry:
    """A name -> config map that refuses duplicates and names the valid choices on a miss."""

    def __init__(self) -> None:
        self._configs: dict[str, ArchConfig] = {}

    def register(self, name: str, config: ArchConfig) -> None:
        if name in self._configs:
            raise RegistryError(f"architecture {name!r} is already registered")
        self._configs[name] = config

    def get(self, name: str) -> ArchConfig:
        try:
            return self._configs[name]
        except KeyError:
            raise RegistryError(
                f"unknown architecture {name!r}; choose one of: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        return list(self._configs)

    def __contains__(self, name: object) -> bool:
        return name in self._configs

    def __iter__(self) -> Iterator[tuple[str, ArchConfig]]:
        return iter(self._configs.items())


ARCHS = Registry()
# torchvision's ImageNet models (same state-dict layout, loadable with strict=True).
ARCHS.register("resnext50_32x4d", ArchConfig((3, 4, 6, 3), 32, 4, description="ResNeXt-50 32x4d"))
ARCHS.register(
    "resnext101_32x8d", ArchConfig((3, 4, 23, 3), 32, 8, description="ResNeXt-101 32x8d")
)
ARCHS.register(
    "resnext101_64x4d", ArchConfig((3, 4, 23, 3), 64, 4, description="ResNeXt-101 64x4d")
)
ARCHS.register(
    "resnet50", ArchConfig((3, 4, 6, 3), 1, 64, description="ResNet-50 (dense baseline)")
)
# The CIFAR ResNeXt-29 family of the paper: 3x3 stem, three stages of three blocks.
ARCHS.register(
    "resnext29_8x64d",
    ArchConfig((3, 3, 3), 8, 64, stem="cifar", input_size=32, description="CIFAR ResNeXt-29 8x64d"),
)
ARCHS.register(
    "resnext29_16x64d",
    ArchConfig(
        (3, 3, 3), 16, 64, stem="cifar", input_size=32, description="CIFAR ResNeXt-29 16x64d"
    ),
)
# Small members for tests, demos and quick experiments.
ARCHS.register(
    "resnext11_8x4d",
    ArchConfig((1, 1, 1), 8, 4, stem="cifar", input_size=32, description="tiny CIFAR-style"),
)
ARCHS.register(
    "resnext11_mini",
    ArchConfig(
        (1, 1, 1),
        8,
        16,
        stem="cifar",
        base_planes=16,
        input_size=32,
        description="slim CIFAR-style: 16-channel stem, the demo's default",
    ),
)
ARCHS.register(
    "resnext14_8x4d",
    ArchConfig((1, 1, 1, 1), 8, 4, input_size=64, description="tiny ImageNet-style"),
)


def build_model(arch: str | ArchConfig, num_classes: int = 1000):  # noqa: ANN201 - torch lazy
    """Build a randomly initialised model (eval mode) for a registered name or a config."""
    from resnext_deploy.models.resnext import ResNeXt

    cfg = ARCHS.get(arch) if isinstance(arch, str) else arch
    return ResNeXt(cfg, num_classes).eval()


def describe(name: str, num_classes: int = 1000) -> ArchInfo:
    """Parameter count and GMACs of a registered architecture at its default input size."""
    from resnext_deploy.models.resnext import count_macs

    cfg = ARCHS.get(name)
    model = _build_on_meta(cfg, num_classes)
    params = sum(p.numel() for p in model.parameters())
    return ArchInfo(name, cfg, params, count_macs(model, cfg.input_size) / 1e9)


def _build_on_meta(cfg: ArchConfig, num_classes: int):  # noqa: ANN202
    import torch

    from resnext_deploy.models.resnext import ResNeXt

    with torch.device("meta"):
        return ResNeXt(cfg, num_classes)
