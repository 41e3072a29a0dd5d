"""The real thing, end to end: a torchvision-layout ResNeXt-50 and a CIFAR ResNeXt-29."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from resnext_deploy.artifact import open_artifact
from resnext_deploy.export.pipeline import ExportConfig, export_checkpoint
from resnext_deploy.models.checkpoint import LoadOptions
from resnext_deploy.models.registry import build_model
from resnext_deploy.verify import VerifyConfig, verify_artifact
from tests.conftest import randomize_bn


@pytest.mark.slow
def test_torchvision_resnext50_exports_with_16_grouped_convs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ckpt = tmp_path / "resnext50.pth"
    torch.save(torchvision.models.resnext50_32x4d(weights=None).state_dict(), ckpt)
    result = export_checkpoint(
        ckpt,
        LoadOptions(arch="resnext50_32x4d"),
        ExportConfig(out_dir=tmp_path / "rx50", verify=VerifyConfig(batch_sizes=(1, 3))),
    )
    assert result.convs.by_group == {1: 37, 32: 16}
    assert result.parity.passed
    for backend in result.parity.backends:
        assert backend.max_rel <= 1e-4 and backend.top1 == 1.0
    assert result.spec.num_classes == 1000 and result.spec.resize == 256


@pytest.mark.slow
def test_resnext29_wrapped_checkpoint_with_module_prefix(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = randomize_bn(build_model("resnext29_8x64d", num_classes=10))
    ckpt = tmp_path / "r29.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, ckpt)
    out = tmp_path / "r29"
    # The export's own parity gate runs on one image; the verify below checks batches 2 and 7.
    config = ExportConfig(out_dir=out, verify=VerifyConfig(batch_sizes=(1,)))
    result = export_checkpoint(ckpt, LoadOptions(arch="resnext29_8x64d"), config)
    assert result.convs.by_group == {1: 22, 8: 9}
    assert result.spec.input_size == 32 and result.spec.resize == 32
    report = verify_artifact(open_artifact(out), VerifyConfig(batch_sizes=(2, 7)))
    assert report.passed and all(b.max_rel <= 1e-4 and b.top1 == 1.0 for b in report.backends)
