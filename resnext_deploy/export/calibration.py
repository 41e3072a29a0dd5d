"""Images for int8 calibration and for checking the quantized model on images it never saw."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np

from resnext_deploy.errors import ConfigError, DataError
from resnext_deploy.preprocess import list_images, load_image, normalize, preprocess
from resnext_deploy.spec import ModelSpec


class CalibrationMethod(StrEnum):
    """How activation ranges are taken from the calibration images (onnxruntime's calibrators):
    min/max seen, the range minimising KL divergence of the histogram (entropy), or a
    percentile of the histogram (99.999%) that ignores outliers."""

    MINMAX = "minmax"
    ENTROPY = "entropy"
    PERCENTILE = "percentile"


@dataclass(frozen=True, kw_only=True)
class CalibrationConfig:
    """``source``: a folder of images, or ``digits`` (the bundled digits: calibrate on the
    training split, check on the validation split). ``min_agreement``: the int8 gate.
    ``method``: how activation ranges are calibrated."""

    source: str | None = None
    max_calibration: int = 256
    max_held_out: int = 1000
    min_agreement: float = 0.99
    seed: int = 0
    method: CalibrationMethod = CalibrationMethod.MINMAX

    def __post_init__(self) -> None:
        if not 0 <= self.min_agreement <= 1:
            raise ConfigError("the int8 agreement threshold must be between 0 and 1")


def calibration_sets(config: CalibrationConfig, spec: ModelSpec) -> tuple[np.ndarray, np.ndarray]:
    """(calibration, held-out) float32 NCHW arrays, disjoint."""
    if not config.source:
        raise ConfigError(
            "int8 needs real calibration images: a folder of representative images, or "
            "'digits' for a model trained on the bundled digits"
        )
    if config.source == "digits":
        from resnext_deploy.data import load_digits

        data = load_digits(spec.input_size, seed=config.seed)
        calib = normalize(data.train.images[: config.max_calibration], spec)
        return calib, normalize(data.val.images[: config.max_held_out], spec)
    root = Path(config.source)
    if not root.exists():
        raise DataError(f"calibration folder not found: {root}")
    files = list_images([root])
    readable = []
    for f in files:
        try:
            readable.append(load_image(f))
        except DataError:
            continue
    if len(readable) < 4:
        raise DataError(
            f"{root}: {len(readable)} readable images; int8 calibration needs at least "
            "4 (half to calibrate, half to check)"
        )
    order = np.random.default_rng(config.seed).permutation(len(readable))
    half = len(order) // 2
    calib_idx = order[:half][: config.max_calibration]
    held_idx = order[half:][: config.max_held_out]
    return (
        preprocess([readable[i] for i in calib_idx], spec),
        preprocess([readable[i] for i in held_idx], spec),
    )
