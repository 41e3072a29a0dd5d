"""Frozen configuration objects that travel with a model: its architecture and its preprocessing.

This module imports nothing heavy, so the torch-free ``predict`` path can use it.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import Any, Literal

from resnext_deploy.errors import ArtifactError, ConfigError

Stem = Literal["imagenet", "cifar"]


class Layout(StrEnum):
    """How a checkpoint's keys are laid out (the canonical one is torchvision's)."""

    TORCHVISION = "torchvision"
    MODULELIST = "modulelist"
    PARTS = "parts"


class Optimizer(StrEnum):
    """Optimizers ``train`` offers."""

    ADAM = "adam"
    ADAMW = "adamw"
    SGD = "sgd"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SPEC_KEY = "resnext_deploy.spec"


@dataclass(frozen=True)
class ArchConfig:
    """A member of the bottleneck-ResNet family; ResNeXt is ``cardinality > 1``.

    ``width = int(planes * base_width / 64) * cardinality`` channels go through the grouped 3x3
    convolution of a block (torchvision's formula), ``planes`` being ``base_planes`` (64, the stem
    width) doubled at every stage: 64, 128, 256, 512. Smaller ``base_planes`` make slim models.
    """

    layers: tuple[int, ...]
    cardinality: int = 32
    base_width: int = 4
    stem: Stem = "imagenet"
    stride_in_1x1: bool = False
    bn_eps: float = 1e-5
    conv_bias: bool = False
    base_planes: int = 64
    input_size: int = 224
    description: str = ""

    def __post_init__(self) -> None:
        expected = 4 if self.stem == "imagenet" else 3
        if self.stem not in ("imagenet", "cifar"):
            raise ConfigError(f"stem must be 'imagenet' or 'cifar', not {self.stem!r}")
        if len(self.layers) != expected or any(n < 1 for n in self.layers):
            raise ConfigError(
                f"a {self.stem} ResNeXt needs {expected} stages of >= 1 block, got {self.layers}"
            )
        if self.cardinality < 1 or self.base_width < 1 or self.base_planes < 1:
            raise ConfigError("cardinality, base_width and base_planes must be positive")
        if int(self.base_planes * self.base_width / 64) < 1:
            raise ConfigError("base_planes * base_width / 64 must be >= 1 channel per group")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArchConfig:
        """Rebuild from :meth:`to_dict`; raises :class:`ArtifactError` naming a field of the
        wrong type (the dict comes from files a user may have edited)."""
        if not isinstance(data, dict):
            raise ArtifactError("architecture config must be an object")
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        layers = kwargs.get("layers", ())
        if not isinstance(layers, list | tuple) or not all(_is_int(n) for n in layers):
            raise ArtifactError("architecture config: 'layers' must be a list of integers")
        kwargs["layers"] = tuple(layers)
        for name in ("cardinality", "base_width", "base_planes", "input_size"):
            if name in kwargs and not _is_int(kwargs[name]):
                raise ArtifactError(f"architecture config: {name!r} must be an integer")
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as exc:
            raise ArtifactError(f"architecture config is invalid: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["layers"] = list(self.layers)
        return d


@dataclass(frozen=True)
class ModelSpec:
    """Everything a consumer needs to feed the model and read its answer.

    Preprocessing: RGB image -> resize so the shorter side is ``resize`` -> centre crop
    ``input_size`` x ``input_size`` -> scale to [0, 1] -> ``(x - mean) / std`` -> NCHW float32.
    """

    arch: str
    num_classes: int
    input_size: int
    resize: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    class_names: tuple[str, ...] = ()
    arch_config: dict[str, Any] = field(default_factory=dict)
    layout: str = "torchvision"
    source_sha256: str = ""

    def __post_init__(self) -> None:
        if self.num_classes < 1:
            raise ConfigError(f"num_classes must be >= 1, got {self.num_classes}")
        if self.class_names and len(self.class_names) != self.num_classes:
            raise ConfigError(
                f"{len(self.class_names)} class names given for a model with "
                f"{self.num_classes} classes"
            )
        if self.resize < self.input_size:
            raise ConfigError(f"resize ({self.resize}) must be >= input_size ({self.input_size})")
        if len(self.mean) != 3 or len(self.std) != 3 or any(s <= 0 for s in self.std):
            raise ConfigError("mean and std need three values each, std > 0")
        if not all(math.isfinite(v) for v in (*self.mean, *self.std)):
            raise ConfigError(f"mean and std must be finite numbers, got {self.mean}, {self.std}")
        if self.input_size < 1:
            raise ConfigError(f"input_size must be >= 1 pixel, got {self.input_size}")

    def architecture(self) -> ArchConfig:
        """The exact :class:`ArchConfig` the weights belong to."""
        if not self.arch_config:
            raise ArtifactError(f"model spec for {self.arch!r} carries no architecture config")
        return ArchConfig.from_dict(self.arch_config)

    def labels(self) -> list[str]:
        """Class names, or ``class_<i>`` where none were given."""
        return list(self.class_names) or [f"class_{i}" for i in range(self.num_classes)]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"], d["class_names"] = (
            list(self.mean),
            list(self.std),
            list(self.class_names),
        )
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        """Rebuild from :meth:`to_dict`; raises :class:`ArtifactError` naming a missing field or
        one of the wrong type (specs are read from files a user may have edited)."""
        if not isinstance(data, dict):
            raise ArtifactError("model spec must be an object")
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        missing = [n for n in ("arch", "num_classes", "input_size", "resize") if n not in kwargs]
        if missing:
            raise ArtifactError(f"model spec is incomplete: no {', '.join(missing)}")
        expected: dict[str, tuple[str, Any]] = {
            "arch": ("a string", lambda v: isinstance(v, str)),
            "num_classes": ("an integer", _is_int),
            "input_size": ("an integer", _is_int),
            "resize": ("an integer", _is_int),
            "mean": ("three numbers", _is_three_numbers),
            "std": ("three numbers", _is_three_numbers),
            "class_names": (
                "a list of strings",
                lambda v: isinstance(v, list | tuple) and all(isinstance(x, str) for x in v),
            ),
            "arch_config": ("an object", lambda v: isinstance(v, dict)),
            "layout": ("a string", lambda v: isinstance(v, str)),
            "source_sha256": ("a string", lambda v: isinstance(v, str)),
        }
        for name, (what, ok) in expected.items():
            if name in kwargs and not ok(kwargs[name]):
                raise ArtifactError(f"model spec: {name!r} must be {what}")
        for key in ("mean", "std", "class_names"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        try:
            return cls(**kwargs)
        except ConfigError as exc:
            raise ArtifactError(f"model spec is invalid: {exc}") from None

    @classmethod
    def from_json(cls, text: str) -> ModelSpec:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ArtifactError(f"model spec is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ArtifactError("model spec must be a JSON object")
        return cls.from_dict(data)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_three_numbers(value: Any) -> bool:
    return (
        isinstance(value, list | tuple)
        and len(value) == 3
        and all(isinstance(x, int | float) and not isinstance(x, bool) for x in value)
        and all(math.isfinite(x) for x in value)
    )
