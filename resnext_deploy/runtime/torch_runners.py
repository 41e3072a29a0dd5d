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
    path: Path, *, optimize: bool = False, device: str = "cpu"
) -> tuple[torch.jit.ScriptModule, dict[str, str]]:
    """Load a saved module and its extra files onto ``device``; ``optimize`` applies
    ``optimize_for_inference`` after loading (torch 2.14 saves an optimized module to a file it
    cannot load again).

    The export is frozen: its weights are graph constants, not parameters or buffers, so
    ``.to(device)`` after loading moves nothing. ``map_location`` is the only way to put them on
    the device, and it must happen before ``optimize_for_inference`` folds them further."""
    extra = {TORCHSCRIPT_SPEC_EXTRA: "", TORCHSCRIPT_VERSIONS_EXTRA: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation FutureWarnings
        try:
            module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
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
    """``device`` if PyTorch can use it; raises :class:`ProviderUnavailableError` otherwise.

    On CUDA it switches on ``cudnn.benchmark`` (cuDNN times its convolution algorithms per input
    shape, as onnxruntime's EXHAUSTIVE search does): the torch baselines run at their best."""
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ProviderUnavailableError(
                "PyTorch sees no CUDA device; the torch backends cannot run on the GPU here"
            )
        torch.backends.cudnn.benchmark = True
    return device


def cuda_math() -> dict[str, Any]:
    """The CUDA math settings a torch row ran with (TF32 changes fp32 results and speed)."""
    return {
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "tf32_conv": bool(torch.backends.cudnn.allow_tf32),
        "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
    }


class _TorchRunner(Runner):
    module: Any
    amp: bool = False
    channels_last: bool = False
    kind = "torch"  # what the runner runs, in messages

    def _place(self, device: str, amp: bool, channels_last: bool | None) -> None:
        """Device, autocast and layout of a runner built from an ``nn.Module`` (channels_last
        by default on CUDA, where it selects cuDNN's NHWC tensor-core kernels)."""
        self.device = torch_device(device)
        if amp and self.device != "cuda":
            raise ProviderUnavailableError(
                f"autocast (AMP) {self.kind} inference needs a CUDA device"
            )
        self.amp = amp
        self.channels_last = self.device == "cuda" if channels_last is None else channels_last

    def _prepared(self, model: nn.Module) -> nn.Module:
        """``model`` in eval mode on this runner's device and layout; a copy whenever that
        moves or re-lays it out (changing the caller's model would change it for every user)."""
        if self.device == "cpu" and not self.channels_last:
            return model.eval()
        module = copy.deepcopy(model).eval().to(self.device)
        if self.channels_last:
            module = module.to(memory_format=torch.channels_last)
        return module

    def _to_device(self, batch: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """One call of the module on a prepared input (the call every method times or runs)."""
        with torch.inference_mode(), self._autocast():
            return self.module(x)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return self._forward(self._to_device(batch)).float().cpu().numpy()

    def _autocast(self) -> Any:
        return torch.autocast("cuda", dtype=torch.float16, enabled=self.amp)

    def bind(self, batch: np.ndarray) -> BoundCall:
        x = self._to_device(batch)
        last: list[torch.Tensor] = []

        def run() -> None:
            last[:] = [self._forward(x)]

        return BoundCall(run, lambda: last[0].float().cpu().numpy())

    def bind_end_to_end(self, batch: np.ndarray) -> BoundCall | None:
        if self.device == "cpu":
            return None
        host = np.array(batch, order="C", copy=True)
        last: list[np.ndarray] = []

        def run() -> None:  # the host->device copy and layout change are part of end-to-end
            last[:] = [self._forward(self._to_device(host)).float().cpu().numpy()]

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
        if self.device == "cuda":
            info["channels_last"] = self.channels_last
            info.update(cuda_math())
        return info

    def close(self) -> None:
        self.module = None
        if self.device == "cuda":
            torch.cuda.empty_cache()


class EagerRunner(_TorchRunner):
    """The reference: the PyTorch module itself, in eval mode. ``amp`` runs it under CUDA
    autocast (float16), PyTorch's own mixed-precision inference. On CUDA it runs as its users
    would at their best: weights and inputs in ``channels_last`` (NHWC tensor-core kernels; the
    default on CUDA, ``channels_last`` chooses) with ``cudnn.benchmark`` on; TF32 convolutions
    are torch's default and are reported per row."""

    kind = "eager"

    def __init__(
        self,
        model: nn.Module,
        name: str | None = None,
        device: str = "cpu",
        amp: bool = False,
        channels_last: bool | None = None,
    ) -> None:
        self._place(device, amp, channels_last)
        self.module = self._prepared(model)
        self.name = name or ("torch-eager-amp" if amp else "torch-eager")


class TorchScriptRunner(_TorchRunner):
    """A saved TorchScript file; ``optimize`` applies ``optimize_for_inference`` after loading
    (the only order that works in torch 2.14)."""

    def __init__(self, path: Path, optimize: bool = False, device: str = "cpu") -> None:
        self.device = torch_device(device)
        self.module, _ = load_torchscript(path, optimize=optimize, device=self.device)
        self.name = "torchscript-optimized" if optimize else "torchscript"


class CompileRunner(_TorchRunner):
    """``torch.compile`` (inductor) with freezing, compiled per input shape (``dynamic=False``:
    the first call of a new shape compiles). ``options={"freezing": True}`` is silently ignored
    in torch 2.14.1, so the inductor config is patched around every call instead. On CUDA it
    runs as PyTorch users would at their best: ``channels_last``, ``cudnn.benchmark`` and mode
    ``reduce-overhead`` (CUDA graphs, the counterpart of onnxruntime's); ``amp`` adds float16
    autocast."""

    kind = "compiled"

    def __init__(
        self, model: nn.Module, device: str = "cpu", amp: bool = False, mode: str | None = None
    ) -> None:
        import torch._inductor.config as inductor_config

        self._place(device, amp, channels_last=None)
        self.mode = mode or ("reduce-overhead" if self.device == "cuda" else "default")
        self._inductor = inductor_config
        torch._dynamo.reset()  # a previous compiled wrapper must not hand us its graphs
        self.module = torch.compile(
            self._prepared(model), backend="inductor", dynamic=False, mode=self.mode
        )
        self.name = "torch-compile-amp" if amp else "torch-compile"

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "reduce-overhead":
            # a new inference step: the previous replay's outputs may be overwritten
            torch.compiler.cudagraph_mark_step_begin()
        with self._inductor.patch(freezing=True):
            return super()._forward(x)

    def describe(self) -> dict[str, Any]:
        return super().describe() | {"compile_mode": self.mode, "freezing": True}

    def close(self) -> None:
        super().close()
        torch._dynamo.reset()
