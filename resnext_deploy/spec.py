"""Frozen configuration objects that travel with a model: its architecture and its preprocessing.

This module imports nothing heavy, so the torch-free ``predict`` path can use it.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import Any, Literal

from resnext_deploy.errors import ArtifactError, ConfigError
from resnext_deploy.validate import (
    MAX_NAME_LENGTH,
    check_float,
    check_int,
    check_name,
    parse_json,
    shown,
)

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

# Bounds no real classifier reaches, so that a spec a user or a file supplies cannot make an
# export, a resize or a model build take gigabytes (ImageNet models use 224 to ~600 px; the
# largest published ResNeXt, 101 32x48d, has 23 blocks in a stage and 12,288 grouped channels).
MAX_INPUT_SIZE = 2048  # the model's input side in pixels
MAX_RESIZE = 4096  # the shorter side before the centre crop
MAX_CLASSES = 100_000  # ImageNet-21k has 21,843
MAX_BLOCKS_PER_STAGE = 256
MAX_CARDINALITY = 1024
MAX_BASE_WIDTH = 1024
MAX_BASE_PLANES = 1024
MAX_CHANNELS = 65_536  # the widest grouped convolution or block output
MAX_PARAMETERS = 2_000_000_000  # 8 GB in float32; ResNeXt-101 32x48d has 829 million
# Characters that end a line for Python's splitlines (and so for whoever reads labels.txt), or
# that no file or terminal can hold: control characters, line/paragraph separators, surrogates.
_BREAKING_CATEGORIES = ("Cc", "Zl", "Zp", "Cs")


@dataclass(frozen=True)
class ArchConfig:
    """A member of the bottleneck-ResNet family; ResNeXt is ``cardinality > 1``.

    ``width = int(planes * base_width / 64) * cardinality`` channels go through the grouped 3x3
    convolution of a block (torchvision's formula), ``planes`` being ``base_planes`` (64, the stem
    width) doubled at every stage: 64, 128, 256, 512. Smaller ``base_planes`` make slim models.
    Every field is checked (type and bounds) on construction: configs also come from files.
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
        if self.stem not in ("imagenet", "cifar"):
            raise ConfigError(f"stem must be 'imagenet' or 'cifar', not {self.stem!r}")
        object.__setattr__(self, "layers", _stages(self.layers, self.stem))
        _whole(self.cardinality, "'cardinality'", MAX_CARDINALITY)
        _whole(self.base_width, "'base_width'", MAX_BASE_WIDTH)
        _whole(self.base_planes, "'base_planes'", MAX_BASE_PLANES)
        _whole(self.input_size, "'input_size'", MAX_INPUT_SIZE)
        check_float(self.bn_eps, "'bn_eps'", 0.0, 1.0, low_open=True)
        for name in ("stride_in_1x1", "conv_bias"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name!r} must be true or false, got {getattr(self, name)!r}")
        if not isinstance(self.description, str):
            raise ConfigError(f"'description' must be a string, got {self.description!r}")
        if int(self.base_planes * self.base_width / 64) < 1:
            raise ConfigError("base_planes * base_width / 64 must be >= 1 channel per group")
        self._check_size()

    def _check_size(self) -> None:
        """Refuse a config whose layers or weights no real model has, before anything is built."""
        planes = self.base_planes * 2 ** (len(self.layers) - 1)
        widest = max(int(planes * self.base_width / 64) * self.cardinality, planes * 4)
        if widest > MAX_CHANNELS:
            raise ConfigError(
                f"this architecture's last stage would have {widest:,} channels; at most "
                f"{MAX_CHANNELS:,} (cardinality x base_width x base_planes is too large)"
            )
        weights = self.conv_weights()
        if weights > MAX_PARAMETERS:
            raise ConfigError(
                f"this architecture would have {weights:,} convolution weights; at most "
                f"{MAX_PARAMETERS:,} (fewer blocks in 'layers', or narrower stages)"
            )

    def conv_weights(self) -> int:
        """The number of convolution weights (the bulk of the parameters), by arithmetic."""
        inplanes = self.base_planes
        total = 3 * inplanes * (49 if self.stem == "imagenet" else 9)
        for i, blocks in enumerate(self.layers):
            planes = self.base_planes * 2**i
            width = int(planes * self.base_width / 64) * self.cardinality
            block = width * (width // self.cardinality) * 9 + width * planes * 4
            total += blocks * block + width * (inplanes + (blocks - 1) * planes * 4)
            total += inplanes * planes * 4  # every stage opens with a downsample
            inplanes = planes * 4
        return total

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArchConfig:
        """Rebuild from :meth:`to_dict`; raises :class:`ArtifactError` naming a field of the
        wrong type or out of bounds (the dict comes from files a user may have edited)."""
        if not isinstance(data, dict):
            raise ArtifactError("architecture config must be an object")
        try:
            return arch_config_from_dict(data)
        except ConfigError as exc:
            raise ArtifactError(f"architecture config is invalid: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["layers"] = list(self.layers)
        return d


def arch_config_from_dict(data: Any) -> ArchConfig:
    """:class:`ArchConfig` from a dict (unknown keys ignored); raises :class:`ConfigError` naming
    the field that is missing, of the wrong type or out of bounds."""
    if not isinstance(data, dict):
        raise ConfigError(f"'arch_config' must be an object, got {_shown(data)}")
    known = {f.name for f in fields(ArchConfig)}
    kwargs = {k: v for k, v in data.items() if k in known}
    if "layers" not in kwargs:
        raise ConfigError("'arch_config' has no 'layers'")
    return ArchConfig(**kwargs)


def _stages(layers: Any, stem: str) -> tuple[int, ...]:
    """``layers`` as a tuple of block counts, one per stage of a ``stem`` ResNeXt."""
    expected = 4 if stem == "imagenet" else 3
    if (
        not isinstance(layers, list | tuple)
        or len(layers) != expected
        or not all(_is_int(n) and 1 <= n <= MAX_BLOCKS_PER_STAGE for n in layers)
    ):
        raise ConfigError(
            f"'layers': a {stem} ResNeXt needs {expected} stages of at least 1 and at most "
            f"{MAX_BLOCKS_PER_STAGE} blocks per stage, got {_shown(layers)}"
        )
    return tuple(layers)


@dataclass(frozen=True)
class ModelSpec:
    """Everything a consumer needs to feed the model and read its answer.

    Preprocessing: RGB image -> resize so the shorter side is ``resize`` -> centre crop
    ``input_size`` x ``input_size`` -> scale to [0, 1] -> ``(x - mean) / std`` -> NCHW float32.
    Every field is checked on construction (see :func:`check_spec_field`): specs come from
    options, checkpoints, manifests and ONNX metadata alike.
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
        for f in fields(self):
            object.__setattr__(self, f.name, check_spec_field(f.name, getattr(self, f.name)))
        if self.class_names and len(self.class_names) != self.num_classes:
            raise ConfigError(
                f"{len(self.class_names)} class names given for a model with "
                f"{self.num_classes} classes"
            )
        if self.resize < self.input_size:
            raise ConfigError(f"resize ({self.resize}) must be >= input_size ({self.input_size})")

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
        missing = [n for n in REQUIRED_FIELDS if n not in kwargs]
        if missing:
            raise ArtifactError(f"model spec is incomplete: no {', '.join(missing)}")
        try:
            return cls(**kwargs)
        except ConfigError as exc:
            raise ArtifactError(f"model spec is invalid: {exc}") from None

    @classmethod
    def from_json(cls, text: str) -> ModelSpec:
        """Rebuild from :meth:`to_json`; raises :class:`ArtifactError` for anything else
        (ONNX metadata is text a hostile file chooses)."""
        data = parse_json(text, "model spec", ArtifactError)
        if not isinstance(data, dict):
            raise ArtifactError("model spec must be a JSON object")
        return cls.from_dict(data)


REQUIRED_FIELDS = ("arch", "num_classes", "input_size", "resize")


def check_spec_field(name: str, value: Any) -> Any:
    """``value`` as the :class:`ModelSpec` field ``name`` (lists become tuples). Raises
    :class:`ConfigError` naming the field, the value and what is allowed."""
    checks: dict[str, Callable[[Any], Any]] = {
        "arch": _arch_name,
        "num_classes": lambda v: _whole(v, "'num_classes'", MAX_CLASSES),
        "input_size": lambda v: _whole(v, "'input_size'", MAX_INPUT_SIZE),
        "resize": lambda v: _whole(v, "'resize'", MAX_RESIZE),
        "mean": lambda v: _three_numbers(v, "'mean'", "three finite numbers", positive=False),
        "std": lambda v: _three_numbers(v, "'std'", "three finite numbers, std > 0", positive=True),
        "class_names": _class_names,
        "arch_config": _arch_config,
        "layout": _layout,
        "source_sha256": _sha256,
    }
    return checks[name](value)


def _arch_name(value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"'arch' must be a string, got {_shown(value)}")
    try:
        return check_name(value, "architecture name")
    except ConfigError as exc:
        raise ConfigError(
            f"{exc}; it names the folder exported/<arch> and the served model, so it cannot "
            "name a folder elsewhere"
        ) from None


def _three_numbers(value: Any, what: str, allowed: str, *, positive: bool) -> tuple[float, ...]:
    if (
        not isinstance(value, list | tuple)
        or len(value) != 3
        or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in value)
        or not all(_fits_a_float(x) and math.isfinite(x) and (x > 0 or not positive) for x in value)
    ):
        raise ConfigError(f"{what} must be {allowed}, got {_shown(value)}")
    return tuple(float(x) for x in value)


def _class_names(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(n, str) for n in value):
        raise ConfigError(f"'class_names' must be a list of strings, got {_shown(value)}")
    if len(value) > MAX_CLASSES:
        raise ConfigError(f"'class_names' holds {len(value):,} names; at most {MAX_CLASSES:,}")
    for name in value:
        check_class_name(name)
    return tuple(value)


def check_class_name(name: str) -> str:
    """``name`` if it can be one line of ``labels.txt``: not empty, at most
    ``MAX_NAME_LENGTH`` characters, no control character, line or paragraph separator, or
    lone surrogate (an undecodable byte in a folder name). Raises :class:`ConfigError`."""
    if not name:
        raise ConfigError("a class name is empty; every class needs a name")
    if len(name) > MAX_NAME_LENGTH:
        raise ConfigError(
            f"class name {name[:40]!r}... is {len(name)} characters long; at most {MAX_NAME_LENGTH}"
        )
    for char in name:
        category = unicodedata.category(char)
        if category == "Cs":
            raise ConfigError(
                f"class name {name!r} holds {char!r}, which is not text (a folder name that is "
                "not valid UTF-8?); rename the class"
            )
        if category in _BREAKING_CATEGORIES:
            raise ConfigError(
                f"class name {name!r} holds a line break or control character {char!r}; "
                "labels.txt holds one name per line: rename the class"
            )
    return name


def _arch_config(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"'arch_config' must be an object, got {_shown(value)}")
    if value:
        arch_config_from_dict(value)
    return value


def _layout(value: Any) -> str:
    allowed = [layout.value for layout in Layout]
    if value not in allowed:
        raise ConfigError(f"'layout' must be one of {', '.join(allowed)}, got {_shown(value)}")
    return str(value)


def _sha256(value: Any) -> str:
    if not isinstance(value, str) or not (value == "" or _SHA256.fullmatch(value)):
        raise ConfigError(f"'source_sha256' must be 64 hex digits, got {_shown(value)}")
    return value


_SHA256 = re.compile("[0-9a-f]{64}")


def _whole(value: Any, what: str, high: int) -> int:
    return check_int(value, what, 1, high)


def _shown(value: Any) -> str:
    return shown(value, 60)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _fits_a_float(value: Any) -> bool:
    """False for an int too large for a float (``math.isfinite`` and ``float`` raise on it)."""
    return not _is_int(value) or abs(value) < 2**1023
