"""PyTorch eager and TorchScript runners, on the CPU or a CUDA device."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from resnext_deploy.artifact import TORCHSCRIPT_SPEC_EXTRA, TORCHSCRIPT_VERSIONS_EXTRA
from resnext_deploy.errors import ArtifactError, ProviderUnavailableError
from resnext_deploy.runtime.base import BoundCall, Runner
from resnext_deploy.runtime.device_memory import DeviceMemory, MemoryScope
from resnext_deploy.spec import ModelSpec


def load_torchscript(
    path: Path, *, optimize: bool = False
) -> tuple[torch.jit.ScriptModule, dict[str, str]]:
    """Load a saved module and its extra files; ``optimize`` applies ``optimize_for_inference``
    after loading (torch 2.14 saves an optimized module to a file it cannot load again)."""
    extra = {TORCHSCRIPT_SPEC_EXTRA: "", TORCHSCRIPT_VERSIONS_EXTRA: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation FutureWarnings
        try:
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        except (RuntimeError, ValueError, OSError) as exc:
            raise ArtifactError(f"{path} is not a readable TorchScript file ({exc})") from None
        if optimize:
            module = torch.jit.optimize_for_inference(module)
    return module, extra


def read_torchscript_spec(path: Path) -> ModelSpec:
    _, extra = load_torchscript(path)
    if not extra.get(TORCHSCRIPT_SPEC_EXTRA):
        raise ArtifactError(f"{path} carries no resnext-deploy spec")
    return ModelSpec.from_json(extra[TORCHSCRIPT_SPEC_EXTRA])


def torch_device(device: str) -> str:
    """``device`` if PyTorch can use it; raises :class:`ProviderUnavailableError` otherwise."""
    if device == "cuda" and not torch.cuda.is_available():
        raise ProviderUnavailableError(
            "PyTorch sees no CUDA device; the torch backends cannot run on the GPU here"
        )
    return device


class _TorchRunner(Runner):
    module: Any
    amp: bool = False

    def infer(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)
        with torch.inference_mode(), self._autocast():
            return self.module(x).float().cpu().numpy()

    def _autocast(self) -> Any:
        return torch.autocast("cuda", dtype=torch.float16, enabled=self.amp)

    def bind(self, batch: np.ndarray) -> BoundCall:
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)
        module = self.module
        last: list[torch.Tensor] = []

        def run() -> None:
            with torch.inference_mode(), self._autocast():
                last[:] = [module(x)]

        return BoundCall(run, lambda: last[0].float().cpu().numpy())

    def bind_end_to_end(self, batch: np.ndarray) -> BoundCall | None:
        if self.device == "cpu":
            return None
        module, device = self.module, self.device
        last: list[np.ndarray] = []

        def run() -> None:
            with torch.inference_mode(), self._autocast():
                last[:] = [module(torch.from_numpy(batch).to(device)).float().cpu().numpy()]

        return BoundCall(run, lambda: last[0])

    def sync(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()

    def reset_peak_memory(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

    def device_memory(self) -> DeviceMemory | None:
        """Peak memory PyTorch's allocator handed out since the last reset: this runner's own
        figure (PyTorch's cache and the CUDA context are not in it)."""
        if self.device != "cuda":
            return None
        peak = torch.cuda.max_memory_allocated() / 2**20
        return DeviceMemory(peak, MemoryScope.ALLOCATOR_PEAK, "torch")

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"name": self.name, "device": self.device}
        info["threads"] = torch.get_num_threads()
        if self.amp:
            info["autocast"] = "float16"
        return info

    def close(self) -> None:
        self.module = None
        if self.device == "cuda":
            torch.cuda.empty_cache()


class EagerRunner(_TorchRunner):
    """The reference: the PyTorch module itself, in eval mode. ``amp`` runs it under CUDA
    autocast (float16), PyTorch's own mixed-precision inference."""

    def __init__(
        self, model: nn.Module, name: str | None = None, device: str = "cpu", amp: bool = False
    ) -> None:
        self.device = torch_device(device)
        if amp and self.device != "cuda":
            raise ProviderUnavailableError("autocast (AMP) eager inference needs a CUDA device")
        self.amp = amp
        # A copy on the GPU: moving the caller's model would move it for every other user.
        self.module = model.eval() if self.device == "cpu" else copy.deepcopy(model).eval().cuda()
        self.name = name or ("torch-eager-amp" if amp else "torch-eager")


class TorchScriptRunner(_TorchRunner):
    """A saved TorchScript file; ``optimize`` applies ``optimize_for_inference`` after loading
    (the only order that works in torch 2.14)."""

    def __init__(self, path: Path, optimize: bool = False, device: str = "cpu") -> None:
        self.device = torch_device(device)
        module, _ = load_torchscript(path, optimize=optimize)
        self.module = module.to(self.device)
        self.name = "torchscript-optimized" if optimize else "torchscript"
