from __future__ import annotations

import pytest
import torch
import torchvision

from resnext_deploy.errors import ConfigError, RegistryError
from resnext_deploy.models.registry import ARCHS, Registry, build_model, describe
from resnext_deploy.spec import ArchConfig


@pytest.mark.parametrize("name", ["resnext50_32x4d", "resnet50"])
def test_torchvision_state_dict_loads_strictly_and_matches_outputs(name: str) -> None:
    torch.manual_seed(0)
    reference = getattr(torchvision.models, name)(weights=None).eval()
    ours = build_model(name)
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        torch.testing.assert_close(ours(x), reference(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", ["resnext101_32x8d", "resnext101_64x4d"])
def test_large_variants_have_torchvision_keys_and_shapes(name: str) -> None:
    with torch.device("meta"):
        reference = getattr(torchvision.models, name)(weights=None)
        ours = build_model(name)
    ref_shapes = {k: v.shape for k, v in reference.state_dict().items()}
    assert {k: v.shape for k, v in ours.state_dict().items()} == ref_shapes


def test_describe_counts_parameters_and_macs_like_torchvision() -> None:
    info = describe("resnext50_32x4d")
    tv = torchvision.models.resnext50_32x4d(weights=None)
    assert info.params == sum(p.numel() for p in tv.parameters())
    # torchvision documents 4.23 "GFLOPS" (multiply-accumulates) for ResNeXt-50 32x4d.
    assert info.gmacs == pytest.approx(4.23, abs=0.01)


def test_resnext29_matches_the_paper_parameter_count() -> None:
    # The paper lists 34.4M parameters for CIFAR ResNeXt-29 8x64d (10 classes).
    assert describe("resnext29_8x64d", num_classes=10).params / 1e6 == pytest.approx(34.4, abs=0.1)


def test_cifar_stem_has_three_stages_and_keeps_resolution() -> None:
    model = build_model("resnext29_8x64d", 10)
    assert not hasattr(model, "layer4")
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert model.layer1[0].conv2.groups == 8 and model.layer1[0].conv2.in_channels == 512


def test_stride_in_1x1_moves_the_stride() -> None:
    cfg = ArchConfig((1, 1, 1, 1), 4, 4, stride_in_1x1=True, conv_bias=True, bn_eps=1e-3)
    block = build_model(cfg, 3).layer2[0]
    assert block.conv1.stride == (2, 2) and block.conv2.stride == (1, 1)
    assert block.conv1.bias is not None and block.bn1.eps == 1e-3


def test_registry_refuses_duplicates_and_names_valid_choices() -> None:
    reg = Registry()
    reg.register("a", ArchConfig((1, 1, 1, 1)))
    with pytest.raises(RegistryError, match="already registered"):
        reg.register("a", ArchConfig((1, 1, 1, 1)))
    with pytest.raises(RegistryError, match="resnext50_32x4d"):
        ARCHS.get("resnext51")


def test_arch_config_validates_stage_count() -> None:
    with pytest.raises(ConfigError, match="3 stages"):
        ArchConfig((1, 1, 1, 1), stem="cifar")
