"""Datasets for training: an ImageFolder directory or scikit-learn's bundled digits (offline).

Images are held as uint8 RGB at the model's input size; :func:`resnext_deploy.preprocess.normalize`
turns a batch into model input, so training and deployment share one preprocessing path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from resnext_deploy.errors import DataError
from resnext_deploy.preprocess import IMAGE_SUFFIXES, load_image, resize_and_crop
from resnext_deploy.spec import ModelSpec

DIGITS = "digits"
DIGITS_MEAN = (0.5, 0.5, 0.5)
DIGITS_STD = (0.5, 0.5, 0.5)


@dataclass
class Split:
    """uint8 images ``N x S x S x 3`` with integer labels."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Dataset:
    train: Split
    val: Split
    class_names: tuple[str, ...]
    source: str
    skipped: list[str] = field(default_factory=list)


def load_dataset(source: str, input_size: int, val_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """``digits`` or an ImageFolder path; raises :class:`DataError` for unusable data."""
    if source == DIGITS:
        return load_digits(input_size, val_fraction, seed)
    return load_image_folder(Path(source), input_size, val_fraction, seed)


def load_digits(input_size: int, val_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """scikit-learn's 1,797 real 8x8 handwritten digits, upscaled (bilinear) to ``input_size``."""
    from PIL import Image
    from sklearn.datasets import load_digits as sk_digits

    digits = sk_digits()
    gray = (digits.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    images = np.stack(
        [
            np.asarray(
                Image.fromarray(g).resize((input_size, input_size), Image.Resampling.BILINEAR)
            )
            for g in gray
        ]
    )
    rgb = np.repeat(images[..., None], 3, axis=-1)
    train_idx, val_idx = split_indices(digits.target, val_fraction, seed)
    labels = digits.target.astype(np.int64)
    return Dataset(
        Split(rgb[train_idx], labels[train_idx]),
        Split(rgb[val_idx], labels[val_idx]),
        tuple(str(i) for i in range(10)),
        DIGITS,
    )


def split_indices(
    labels: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded, stratified split: each class contributes ``val_fraction`` of its items to val,
    at least one, and keeps at least one for training (a class of one item trains only)."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        n_val = min(len(idx) - 1, max(1, round(len(idx) * val_fraction)))
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def load_image_folder(
    root: Path, input_size: int, val_fraction: float = 0.2, seed: int = 0
) -> Dataset:
    """A class-per-subfolder tree; ``root/train`` + ``root/val`` are used as given when present,
    otherwise a seeded stratified split. Unreadable images are skipped and listed."""
    if not root.is_dir():
        raise DataError(f"dataset folder not found: {root}")
    spec = ModelSpec("data", 1, input_size, input_size)
    skipped: list[str] = []
    if (root / "train").is_dir() and (root / "val").is_dir():
        names = _class_names(root / "train")
        train = _read_split(root / "train", names, spec, skipped)
        val = _read_split(root / "val", names, spec, skipped)
    else:
        names = _class_names(root)
        everything = _read_split(root, names, spec, skipped)
        t, v = split_indices(everything.labels, val_fraction, seed)
        train = Split(everything.images[t], everything.labels[t])
        val = Split(everything.images[v], everything.labels[v])
    if len(train) == 0 or len(val) == 0:
        raise DataError(f"{root}: too few readable images to make a training and validation split")
    return Dataset(train, val, names, str(root), skipped)


def _class_names(root: Path) -> tuple[str, ...]:
    names = tuple(
        sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    )
    if not names:
        raise DataError(f"{root} has no class subfolders (expected {root}/<class>/<image>)")
    if len(names) < 2:
        raise DataError(f"{root} has only one class ({names[0]!r}); a classifier needs two or more")
    return names


def _read_split(root: Path, names: tuple[str, ...], spec: ModelSpec, skipped: list[str]) -> Split:
    images, labels = [], []
    for label, name in enumerate(names):
        folder = root / name
        files = sorted(f for f in folder.rglob("*") if f.is_file()) if folder.is_dir() else []
        for f in files:
            if f.suffix.lower() not in IMAGE_SUFFIXES:
                skipped.append(f"{f}: not an image file extension")
                continue
            try:
                images.append(resize_and_crop(load_image(f), spec))
            except DataError as exc:
                skipped.append(str(exc))
                continue
            labels.append(label)
    empty = [n for i, n in enumerate(names) if i not in set(labels)]
    if not images:
        raise DataError(f"{root}: no readable images in {', '.join(names)}")
    if empty:
        raise DataError(f"{root}: no readable images for class(es) {', '.join(empty)}")
    return Split(np.stack(images), np.asarray(labels, dtype=np.int64))
