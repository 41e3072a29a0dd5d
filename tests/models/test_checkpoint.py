from __future__ import annotations

from pathlib import Path

import pytest
import torch

from resnext_deploy.errors import CheckpointError, ExportError
from resnext_deploy.export.pipeline import check_exportable
from resnext_deploy.models.checkpoint import LoadOptions, load_model, read_checkpoint
from resnext_deploy.models.registry import build_model
from tests.conftest import TINY


def test_wrapped_state_dict_with_module_prefix_loads(tiny_model, tmp_path: Path) -> None:
    path = tmp_path / "wrapped.pth"
    state = {f"module.{k}": v for k, v in tiny_model.state_dict().items()}
    torch.save({"state_dict": state, "epoch": 3}, path)
    model, spec = load_model(path, LoadOptions(arch=TINY))
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(model(x), tiny_model(x), rtol=0, atol=0)
    assert spec.num_classes == 7 and spec.input_size == 64
    assert len(spec.source_sha256) == 64


def test_model_key_wrapper_is_accepted(tiny_model, tmp_path: Path) -> None:
    path = tmp_path / "m.pth"
    torch.save({"model": tiny_model.state_dict()}, path)
    assert set(read_checkpoint(path).state_dict) == set(tiny_model.state_dict())


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(tmp_path / "nope.pth")


def test_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "notes.pth"
    path.write_text("these are not weights")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        read_checkpoint(path)


def test_pickled_full_model_is_refused_with_advice(tiny_model, tmp_path: Path) -> None:
    path = tmp_path / "full.pth"
    torch.save(tiny_model, path)
    with pytest.raises(CheckpointError, match=r"state_dict\(\)") as info:
        read_checkpoint(path)
    assert "arbitrary code" in str(info.value)


def test_wrong_architecture_names_keys_and_suggests_the_fit(tiny_checkpoint: Path) -> None:
    with pytest.raises(CheckpointError) as info:
        load_model(tiny_checkpoint, LoadOptions(arch="resnext11_8x4d"))
    message = str(info.value)
    assert "does not fit architecture 'resnext11_8x4d'" in message
    assert "unexpected keys: layer4" in message
    assert "It fits: resnext14_8x4d" in message


def test_wrong_class_count(tiny_checkpoint: Path) -> None:
    with pytest.raises(CheckpointError, match="classes asked for \\(10\\) .* 7 classes"):
        load_model(tiny_checkpoint, LoadOptions(arch=TINY, num_classes=10))


def test_class_names_must_match_class_count(tiny_checkpoint: Path) -> None:
    with pytest.raises(CheckpointError, match="2 class names"):
        load_model(tiny_checkpoint, LoadOptions(arch=TINY, class_names=("a", "b")))


def test_arch_is_required_when_the_checkpoint_does_not_say(tiny_checkpoint: Path) -> None:
    with pytest.raises(CheckpointError, match="name it \\(arch\\)"):
        load_model(tiny_checkpoint)


def test_batchnorm_without_running_stats_is_refused(tmp_path: Path) -> None:
    model = build_model(TINY, 3)
    model.bn1 = torch.nn.BatchNorm2d(64, track_running_stats=False)
    with pytest.raises(ExportError, match="no running statistics"):
        check_exportable(model)
    state = {
        k: v
        for k, v in build_model(TINY, 3).state_dict().items()
        if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
    }
    path = tmp_path / "nostats.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="without running statistics"):
        load_model(path, LoadOptions(arch=TINY))


def test_spec_saved_beside_the_weights_is_used(tiny_model, tmp_path: Path) -> None:
    path = tmp_path / "trained.pth"
    spec = {
        "arch": TINY,
        "class_names": [f"k{i}" for i in range(7)],
        "input_size": 64,
        "resize": 72,
        "mean": [0.5, 0.5, 0.5],
        "std": [0.25, 0.25, 0.25],
    }
    torch.save({"state_dict": tiny_model.state_dict(), "spec": spec}, path)
    _, loaded = load_model(path)
    assert loaded.arch == TINY and loaded.class_names[3] == "k3"
    assert loaded.resize == 72 and loaded.mean == (0.5, 0.5, 0.5)
