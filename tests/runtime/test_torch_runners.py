"""The torch runners as a GPU user meets them: a frozen TorchScript export is loaded onto the
device asked for (its weights are graph constants: ``.to(device)`` moves nothing), and the eager
and compiled baselines run at their best on CUDA (channels_last, cudnn.benchmark, TF32 stated)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from resnext_deploy.artifact import TORCHSCRIPT_FILE
from resnext_deploy.runtime import torch_runners
from resnext_deploy.runtime.torch_runners import (
    CompileRunner,
    EagerRunner,
    TorchScriptRunner,
    load_torchscript,
)


def tensor_constants(module: torch.jit.ScriptModule) -> list[torch.Tensor]:
    """Every tensor a frozen module holds as a graph constant (its weights)."""
    found = []
    for node in module.graph.findAllNodes("prim::Constant"):
        if node.output().type().kind() == "TensorType":
            found.append(node.output().toIValue())
    return found


def test_a_frozen_export_holds_its_weights_as_constants(tiny_export: Path) -> None:
    """The premise of the fix: nothing for ``.to(device)`` to move."""
    module, _ = load_torchscript(tiny_export / TORCHSCRIPT_FILE)
    assert list(module.parameters()) == [] and list(module.buffers()) == []
    assert len(tensor_constants(module)) > 10


def test_torchscript_is_loaded_onto_the_device_asked_for(
    tiny_export: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``map_location`` is the device, not "cpu" followed by a ``.to(device)`` that moves
    nothing (the old code), and it is applied before optimize_for_inference folds further."""
    seen: list[Any] = []
    real_load = torch.jit.load

    def load(path: str, map_location: Any = None, **kwargs: Any) -> Any:
        seen.append(map_location)
        return real_load(path, map_location="cpu", **kwargs)  # no GPU here to load onto

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.jit, "load", load)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    for optimize in (False, True):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                TorchScriptRunner(tiny_export / TORCHSCRIPT_FILE, optimize=optimize, device="cuda")
            except (RuntimeError, AssertionError):
                pass  # a later step may need a real GPU; the load already happened
    assert seen == ["cuda", "cuda"]
    assert torch.backends.cudnn.benchmark, "the torch baselines time cuDNN's best algorithms"


def test_every_constant_lands_on_the_device(tiny_export: Path) -> None:
    for optimize in (False, True):
        with TorchScriptRunner(tiny_export / TORCHSCRIPT_FILE, optimize=optimize) as runner:
            devices = {t.device.type for t in tensor_constants(runner.module)}
            assert devices == {"cpu"}


def test_channels_last_eager_equals_plain_eager_and_leaves_the_callers_model(
    tiny_model: torch.nn.Module,
) -> None:
    batch = np.random.default_rng(0).standard_normal((3, 3, 64, 64), dtype=np.float32)
    with torch.inference_mode():
        expected = tiny_model(torch.from_numpy(batch)).numpy()
    with EagerRunner(tiny_model, channels_last=True) as runner:
        conv = next(m for m in runner.module.modules() if isinstance(m, torch.nn.Conv2d))
        assert conv.weight.is_contiguous(memory_format=torch.channels_last)
        bound = runner.bind(batch)
        bound.run()
        np.testing.assert_allclose(bound.fetch(), expected, rtol=1e-4, atol=1e-5)
        assert runner.describe()["name"] == "torch-eager"
    conv = next(m for m in tiny_model.modules() if isinstance(m, torch.nn.Conv2d))
    assert not conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_eager_on_cuda_defaults_to_channels_last_and_states_tf32(
    tiny_model: torch.nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On CUDA (faked: the module stays on the CPU) the baseline is laid out channels_last, and
    its report row says whether convolutions ran in TF32."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.nn.Module, "cuda", lambda self, *a, **k: self)
    monkeypatch.setattr(torch.nn.Module, "to", _to_on_cpu(torch.nn.Module.to))
    runner = EagerRunner(tiny_model, device="cuda")
    assert runner.channels_last
    info = runner.describe()
    assert info["channels_last"] is True
    assert info["tf32_conv"] == torch.backends.cudnn.allow_tf32
    assert info["cudnn_benchmark"] is True


def _to_on_cpu(real: Any) -> Any:
    def to(self: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        args = tuple("cpu" if a == "cuda" else a for a in args)
        return real(self, *args, **kwargs)

    return to


def test_compile_on_cuda_uses_cuda_graphs_and_channels_last(
    tiny_model: torch.nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: dict[str, Any] = {}

    def compile_(module: torch.nn.Module, **kwargs: Any) -> torch.nn.Module:
        calls.update(kwargs, module=module)
        return module

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.nn.Module, "to", _to_on_cpu(torch.nn.Module.to))
    monkeypatch.setattr(torch_runners.torch, "compile", compile_)
    runner = CompileRunner(tiny_model, device="cuda", amp=True)
    assert calls["mode"] == "reduce-overhead" and calls["dynamic"] is False
    conv = next(m for m in calls["module"].modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert runner.name == "torch-compile-amp"
    assert runner.describe()["compile_mode"] == "reduce-overhead"


def test_amp_needs_cuda(tiny_model: torch.nn.Module) -> None:
    from resnext_deploy.errors import ProviderUnavailableError

    with pytest.raises(ProviderUnavailableError):
        EagerRunner(tiny_model, amp=True)
    with pytest.raises(ProviderUnavailableError):
        CompileRunner(tiny_model, amp=True)


@pytest.mark.gpu
def test_torch_runners_run_on_cuda(tiny_export: Path, tiny_model: torch.nn.Module) -> None:
    if not torch.cuda.is_available():
        pytest.skip("PyTorch sees no CUDA device here")
    batch = np.random.default_rng(1).standard_normal((2, 3, 64, 64), dtype=np.float32)
    with torch.inference_mode():
        expected = tiny_model(torch.from_numpy(batch)).numpy()
    for optimize in (False, True):
        with TorchScriptRunner(
            tiny_export / TORCHSCRIPT_FILE, optimize=optimize, device="cuda"
        ) as runner:
            assert {t.device.type for t in tensor_constants(runner.module)} == {"cuda"}
            np.testing.assert_allclose(runner.infer(batch), expected, rtol=1e-2, atol=1e-3)
    with EagerRunner(tiny_model, device="cuda") as runner:
        np.testing.assert_allclose(runner.infer(batch), expected, rtol=1e-2, atol=1e-3)
