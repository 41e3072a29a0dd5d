from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from resnext_deploy.data import load_digits, load_image_folder, split_indices
from resnext_deploy.errors import DataError


def make_folder(root: Path, classes: dict[str, int], size: int = 20, seed: int = 0) -> Path:
    """Class per subfolder; class i is a solid colour with noise, so it is learnable."""
    rng = np.random.default_rng(seed)
    palette = [(220, 30, 30), (30, 30, 220), (30, 200, 30), (200, 200, 30)]
    for c, (name, count) in enumerate(classes.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            img = np.clip(np.array(palette[c]) + rng.normal(0, 20, (size, size + 4, 3)), 0, 255)
            Image.fromarray(img.astype(np.uint8)).save(root / name / f"{i}.png")
    return root


def test_digits_are_real_upscaled_and_split_stratified() -> None:
    data = load_digits(16, val_fraction=0.2, seed=0)
    assert data.train.images.shape[1:] == (16, 16, 3) and data.train.images.dtype == np.uint8
    assert len(data.train) + len(data.val) == 1797
    assert abs(len(data.val) - 0.2 * 1797) < 10
    assert set(np.unique(data.val.labels)) == set(range(10))
    again = load_digits(16, val_fraction=0.2, seed=0)
    np.testing.assert_array_equal(data.val.labels, again.val.labels)


def test_split_is_disjoint_and_seeded() -> None:
    labels = np.repeat(np.arange(3), 10)
    t1, v1 = split_indices(labels, 0.2, seed=1)
    t2, v2 = split_indices(labels, 0.2, seed=2)
    assert not set(t1) & set(v1) and len(t1) + len(v1) == 30
    assert not np.array_equal(v1, v2)


def test_image_folder_split_and_unreadable_files(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "ds", {"cat": 6, "dog": 5})
    (root / "cat" / "broken.jpg").write_text("not a jpeg")
    (root / "dog" / "notes.txt").write_text("hello")
    data = load_image_folder(root, 16)
    assert data.class_names == ("cat", "dog")
    assert len(data.train) + len(data.val) == 11
    assert any("broken.jpg" in s for s in data.skipped) and any(
        "notes.txt" in s for s in data.skipped
    )


def test_existing_train_val_split_is_used(tmp_path: Path) -> None:
    make_folder(tmp_path / "ds" / "train", {"a": 4, "b": 4})
    make_folder(tmp_path / "ds" / "val", {"a": 2, "b": 1})
    data = load_image_folder(tmp_path / "ds", 16)
    assert (len(data.train), len(data.val)) == (8, 3)


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class subfolders"):
        load_image_folder(tmp_path / "empty", 16)


def test_one_class_only(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "ds", {"only": 4})
    with pytest.raises(DataError, match="only one class"):
        load_image_folder(root, 16)


def test_class_without_readable_images(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "ds", {"a": 4})
    (root / "b").mkdir()
    (root / "b" / "x.png").write_text("broken")
    with pytest.raises(DataError, match="no readable images for class"):
        load_image_folder(root, 16)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_image_folder(tmp_path / "nope", 16)
