"""``train`` refuses what would destroy an earlier run or waste the work, and stops on what would
produce a useless model: checks before training, a last batch of one image, a diverging loss."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from resnext_deploy.errors import ConfigError, RegistryError, TrainingError
from resnext_deploy.train import TrainConfig, train
from tests.test_data import make_folder

ARCH = "resnext11_8x4d"  # CIFAR stem: at 4 px its last feature map is 1x1


def folder(root: Path, train_counts: dict[str, int]) -> Path:
    make_folder(root / "train", train_counts, size=8)
    make_folder(root / "val", {name: 1 for name in train_counts}, size=8, seed=1)
    return root


def config(data: Path, out: Path, **changes: object) -> TrainConfig:
    settings: dict = {"data": str(data), "arch": ARCH, "out_dir": out, "epochs": 1, "input_size": 4}
    return TrainConfig(**(settings | changes))


def test_a_last_batch_of_one_image_joins_the_one_before(tmp_path: Path) -> None:
    data = folder(tmp_path / "data", {"a": 3, "b": 2})  # 5 images in batches of 4: 4 + 1
    result = train(config(data, tmp_path / "run", batch_size=4))
    assert result.checkpoint.is_file() and len(result.history) == 1


def test_batch_size_one_at_a_1x1_feature_map_is_a_clear_error(tmp_path: Path) -> None:
    data = folder(tmp_path / "data", {"a": 2, "b": 2})
    with pytest.raises(TrainingError, match="too small for BatchNorm"):
        train(config(data, tmp_path / "run", batch_size=1))


def test_a_diverging_loss_stops_training_and_saves_nothing(tmp_path: Path) -> None:
    data = folder(tmp_path / "data", {"a": 3, "b": 3})
    with pytest.raises(TrainingError, match="diverged.*nan"):
        train(config(data, tmp_path / "run", batch_size=3, lr=1e12, epochs=2))
    assert not (tmp_path / "run").exists()


def test_an_earlier_run_is_not_replaced_without_overwrite(tmp_path: Path) -> None:
    data = folder(tmp_path / "data", {"a": 2, "b": 2})
    run = tmp_path / "run"
    run.mkdir()
    earlier = {"state_dict": {}, "best_val_acc": 1.0}
    torch.save(earlier, run / "best.pth")
    before = (run / "best.pth").read_bytes()
    with pytest.raises(ConfigError, match="already holds a trained model"):
        train(config(data, run, batch_size=2))
    assert (run / "best.pth").read_bytes() == before
    result = train(config(data, run, batch_size=2, overwrite=True))
    assert (run / "best.pth").read_bytes() != before
    assert torch.load(result.checkpoint, weights_only=True)["spec"]["arch"] == ARCH


def test_an_unwritable_run_folder_fails_before_loading_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import resnext_deploy.train as training

    def never(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("data was loaded before the run folder was checked")

    monkeypatch.setattr(training, "load_dataset", never)
    blocker = tmp_path / "run"
    blocker.write_text("a file where the run folder should go")
    with pytest.raises(ConfigError, match="not a directory"):
        train(config(tmp_path, blocker))
    assert blocker.read_text() == "a file where the run folder should go"


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"lr": float("nan")}, "learning rate"),
        ({"lr": float("inf")}, "learning rate"),
        ({"weight_decay": -1.0}, "weight decay"),
        ({"input_size": 0}, "input size"),
        ({"input_size": 100_000}, "input size"),
        ({"epochs": 10**9}, "epochs"),
        ({"batch_size": 10**9}, "batch size"),
        ({"seed": -1}, "seed"),  # numpy: "expected non-negative integer"
        ({"seed": 2**70}, "seed"),  # torch: "Overflow when unpacking long long"
        ({"seed": True}, "seed"),
        ({"val_fraction": 0.999}, "val_fraction"),  # an empty training split: ZeroDivisionError
        ({"val_fraction": 0.0}, "val_fraction"),
        ({"val_fraction": float("nan")}, "val_fraction"),
    ],
)
def test_values_that_cannot_train_are_refused(tmp_path: Path, changes: dict, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        config(tmp_path, tmp_path / "run", **changes)


def test_an_unknown_architecture_is_refused_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="unknown architecture 'nope'"):
        config(tmp_path, tmp_path / "run", arch="nope")


def test_the_largest_seed_and_validation_share_train(tmp_path: Path) -> None:
    """The bounds are usable: seed 2**32-1, and a validation share of 0.9 of classes of two
    images still leaves each class one training image."""
    data = tmp_path / "data"
    make_folder(data, {"a": 2, "b": 2}, size=8)
    run = config(data, tmp_path / "run", batch_size=2, seed=2**32 - 1, val_fraction=0.9)
    result = train(run)
    assert result.checkpoint.is_file() and len(result.val_images or []) == 2


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_folder_of_the_users_files_is_refused_even_with_overwrite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overwrite: bool
) -> None:
    import resnext_deploy.train as training

    def never(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("data was loaded before the run folder was checked")

    monkeypatch.setattr(training, "load_dataset", never)
    plots = tmp_path / "plots"
    plots.mkdir()
    (plots / "curves.png").write_bytes(b"the user's own plot")
    with pytest.raises(ConfigError, match=r"is not a training run \(it holds curves.png"):
        train(config(tmp_path, plots, overwrite=overwrite))
    assert [p.name for p in plots.iterdir()] == ["curves.png"]
    assert (plots / "curves.png").read_bytes() == b"the user's own plot"


def test_an_existing_empty_folder_is_used_and_kept(tmp_path: Path) -> None:
    data = folder(tmp_path / "data", {"a": 2, "b": 2})
    run = tmp_path / "run"
    run.mkdir()
    result = train(config(data, run, batch_size=2))
    assert sorted(p.name for p in run.iterdir()) == ["best.pth", "curves.png"]
    assert result.checkpoint == run / "best.pth"
