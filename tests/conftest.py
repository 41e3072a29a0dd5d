"""Shared fixtures: tiny models, their checkpoints and one export, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from resnext_deploy.models.registry import build_model

TINY = "resnext14_8x4d"  # ImageNet stem, 4 stages of one block, cardinality 8, 64 px


def randomize_bn(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give BatchNorm layers non-trivial statistics so that folding bugs cannot hide."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
            m.weight.data.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
    return model


@pytest.fixture(scope="session")
def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return randomize_bn(build_model(TINY, num_classes=7))


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_model: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pth"
    torch.save(tiny_model.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def tiny_export(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One verified export of the tiny model, shared read-only by many tests."""
    from resnext_deploy.export.pipeline import ExportConfig, export_checkpoint
    from resnext_deploy.models.checkpoint import LoadOptions

    out = tmp_path_factory.mktemp("exports") / "tiny"
    names = tuple(f"c{i}" for i in range(7))
    export_checkpoint(
        tiny_checkpoint, LoadOptions(arch=TINY, class_names=names), ExportConfig(out_dir=out)
    )
    return out


@pytest.fixture(scope="session")
def tiny_preprocess_export(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model exported with its preprocessing graph, shared read-only. Its ImageNet mean
    and std differ per channel (the digits model's do not), so channel-order mistakes show on
    colour photos."""
    from resnext_deploy.export.pipeline import ExportConfig, export_checkpoint
    from resnext_deploy.models.checkpoint import LoadOptions

    out = tmp_path_factory.mktemp("preprocess") / "tiny"
    names = tuple(f"c{i}" for i in range(7))
    config = ExportConfig(out_dir=out, embed_preprocess=True)
    export_checkpoint(tiny_checkpoint, LoadOptions(arch=TINY, class_names=names), config)
    return out


@pytest.fixture(scope="session")
def tiny_fp16_export(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model exported with its fp16 variant, shared read-only (copy it to change it)."""
    from resnext_deploy.artifact import Precision
    from resnext_deploy.export.pipeline import ExportConfig, export_checkpoint
    from resnext_deploy.models.checkpoint import LoadOptions

    out = tmp_path_factory.mktemp("fp16") / "tiny"
    names = tuple(f"c{i}" for i in range(7))
    config = ExportConfig(out_dir=out, precisions=(Precision.FP32, Precision.FP16))
    export_checkpoint(tiny_checkpoint, LoadOptions(arch=TINY, class_names=names), config)
    return out


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """A resnext11_mini trained for 3 epochs on the bundled digits (16 px), and its export."""
    from resnext_deploy.export.pipeline import ExportConfig, export_checkpoint
    from resnext_deploy.models.checkpoint import LoadOptions
    from resnext_deploy.train import TrainConfig, train

    out = tmp_path_factory.mktemp("digits")
    config = TrainConfig(data="digits", out_dir=out / "train", epochs=3, input_size=16, lr=2e-3)
    result = train(config)
    export = export_checkpoint(
        result.checkpoint, LoadOptions(), ExportConfig(out_dir=out / "export")
    )
    return result, export


def has_cuda() -> bool:
    """True when this machine has an NVIDIA GPU: a ``/dev/nvidia<N>`` device node exists and the
    driver library ``libcuda.so.1`` loads.

    Decided without the code under test (onnxruntime, the provider guard), so that a broken guard
    makes the GPU tests or the no-GPU tests fail; it can never make both halves skip.
    """
    import ctypes
    import glob

    if not glob.glob("/dev/nvidia[0-9]*"):
        return False
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


@pytest.fixture(scope="session")
def cuda_or_skip() -> None:
    """Skip GPU-only tests, with the reason, on machines without an NVIDIA GPU."""
    if not has_cuda():
        pytest.skip("no NVIDIA GPU here (no /dev/nvidia<N> device node or no libcuda.so.1)")


@pytest.fixture(scope="session")
def tiny_every_variant(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with fp32, fp16, int8 and the preprocessing graph, shared read-only (copy
    it to change it). Its int8 gate is off: the random weights make agreement meaningless; the
    point is a real QDQ file for the engines to run."""
    from resnext_deploy.artifact import Precision
    from resnext_deploy.export.calibration import CalibrationConfig
    from resnext_deploy.export.pipeline import ExportConfig, export_checkpoint
    from resnext_deploy.models.checkpoint import LoadOptions
    from resnext_deploy.verify import VerifyConfig

    out = tmp_path_factory.mktemp("every-variant") / "tiny"
    names = tuple(f"c{i}" for i in range(7))
    config = ExportConfig(
        out_dir=out,
        precisions=tuple(Precision),
        embed_preprocess=True,
        verify=VerifyConfig(batch_sizes=(1, 2), auto_cuda=False),
        calibration=CalibrationConfig(source="digits", min_agreement=0.0, max_calibration=64),
    )
    export_checkpoint(tiny_checkpoint, LoadOptions(arch=TINY, class_names=names), config)
    return out
