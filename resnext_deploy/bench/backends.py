"""Backends the benchmark can time, each behind one small interface.

A backend is built once, then ``bind(batch)`` returns a zero-argument callable that runs one
inference on that pre-bound batch. The harness times only that call followed by ``sync()``, so
input preparation and device placement stay outside the measured region. Backends never time
themselves.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from resnext_deploy.errors import BenchmarkError, ConfigError
from resnext_deploy.runtime.providers import CudaOptions, Provider, SessionConfig, create_session

Call = Callable[[], Any]

CORE_BACKENDS = ("eager", "torchscript", "torchscript-opt", "onnxruntime")
VARIANT_BACKENDS = ("onnxruntime-fp16", "onnxruntime-int8")  # need an export with the variant
PEER_BACKENDS = ("compile", "openvino-f32", "openvino-default")
ALL_BACKENDS = CORE_BACKENDS + VARIANT_BACKENDS + PEER_BACKENDS


@dataclass(frozen=True)
class BackendContext:
    """What every backend may need: the eager model, the exported files, provider and threads."""

    model: Any
    onnx_path: Path
    torchscript_path: Path
    provider: Provider
    threads: int
    cuda: CudaOptions = field(default_factory=CudaOptions)


class Backend:
    name = "backend"
    device = "cpu"

    def bind(self, batch: np.ndarray) -> Call:
        raise NotImplementedError

    def bind_end_to_end(self, batch: np.ndarray) -> Call | None:
        """A call that includes host<->device copies, where those exist (``None`` on CPU)."""
        return None

    def sync(self) -> None:
        """Wait for queued device work; a no-op on the CPU."""

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "device": self.device}

    def device_memory_mb(self) -> float | None:
        return None

    def close(self) -> None:
        """Release sessions and modules."""


class TorchBackend(Backend):
    """Eager, TorchScript (frozen) or TorchScript + ``optimize_for_inference`` (applied after
    loading; the only order that round-trips in torch 2.14)."""

    def __init__(self, kind: str, ctx: BackendContext) -> None:
        import torch

        from resnext_deploy.export.torchscript import load_torchscript

        self.torch = torch
        self.name = {
            "eager": "torch-eager",
            "torchscript": "torchscript",
            "torchscript-opt": "torchscript-optimized",
        }[kind]
        self.device = "cuda" if ctx.provider is not Provider.CPU else "cpu"
        if self.device == "cuda" and not torch.cuda.is_available():
            raise BenchmarkError(
                "PyTorch sees no CUDA device; cannot run the torch backends on GPU"
            )
        if kind == "eager":
            self.module = ctx.model.eval().to(self.device)
        else:
            self.module, _ = load_torchscript(ctx.torchscript_path, optimize=kind.endswith("opt"))
            self.module = self.module.to(self.device)

    def bind(self, batch: np.ndarray) -> Call:
        x = self.torch.from_numpy(batch).to(self.device)
        module, torch = self.module, self.torch

        def call() -> Any:
            with torch.inference_mode():
                return module(x)

        return call

    def bind_end_to_end(self, batch: np.ndarray) -> Call | None:
        if self.device == "cpu":
            return None
        module, torch, device = self.module, self.torch, self.device

        def call() -> Any:
            with torch.inference_mode():
                return module(torch.from_numpy(batch).to(device)).cpu()

        return call

    def sync(self) -> None:
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def device_memory_mb(self) -> float | None:
        if self.device != "cuda":
            return None
        return self.torch.cuda.max_memory_allocated() / 2**20

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "device": self.device, "threads": self.torch.get_num_threads()}


class OrtBackend(Backend):
    """onnxruntime on the requested provider (guarded: never a silent CPU run).

    On CUDA the input and output live on the device through IO binding, so the timed call is the
    device work alone; :meth:`bind_end_to_end` gives the figure with host<->device copies. With
    CUDA graphs enabled, each batch size gets its own session (graphs need fixed shapes).
    """

    def __init__(
        self,
        ctx: BackendContext,
        cuda: CudaOptions | None = None,
        name: str | None = None,
        model_path: Path | None = None,
    ) -> None:
        self.ctx = ctx
        self.model_path = model_path or ctx.onnx_path
        self.cuda = cuda or ctx.cuda
        self.config = SessionConfig(
            provider=ctx.provider, cuda=self.cuda, intra_op_threads=ctx.threads
        )
        self.session = create_session(self.model_path, self.config)
        self.device = "cpu" if ctx.provider is Provider.CPU else "cuda"
        self.name = name or f"onnxruntime-{ctx.provider.value}"
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        self._binding: Any = None

    def bind(self, batch: np.ndarray) -> Call:
        session, inp, out = self.session, self.input_name, self.output_name
        if self.device == "cpu":
            return lambda: session.run([out], {inp: batch})
        import onnxruntime as ort

        if self.cuda.enable_cuda_graph:  # one session per shape: graphs are captured per shape
            session = create_session(self.model_path, self.config)
        device_id = self.cuda.device_id
        x = ort.OrtValue.ortvalue_from_numpy(batch, "cuda", device_id)
        binding = session.io_binding()
        binding.bind_ortvalue_input(inp, x)
        binding.bind_output(out, "cuda", device_id)
        binding.synchronize_inputs()
        self._binding = binding
        return lambda: session.run_with_iobinding(binding)

    def bind_end_to_end(self, batch: np.ndarray) -> Call | None:
        if self.device == "cpu":
            return None
        session, inp, out = self.session, self.input_name, self.output_name
        return lambda: session.run([out], {inp: batch})

    def sync(self) -> None:
        if self._binding is not None:
            self._binding.synchronize_outputs()

    def device_memory_mb(self) -> float | None:
        return _cuda_used_mb() if self.device == "cuda" else None

    def describe(self) -> dict[str, Any]:
        info = {
            "name": self.name,
            "device": self.device,
            "providers": self.session.get_providers(),
            "intra_op_threads": self.ctx.threads,
        }
        if self.device == "cuda":
            info["cuda_options"] = self.cuda.to_ort()
        return info

    def close(self) -> None:
        self.session = None
        self._binding = None


class CompileBackend(Backend):
    """``torch.compile`` (inductor) with freezing. ``options={"freezing": True}`` is silently
    ignored in torch 2.14.1, so the inductor config is patched around every call instead."""

    name = "torch-compile"

    def __init__(self, ctx: BackendContext) -> None:
        import torch
        import torch._inductor.config as inductor_config

        if ctx.provider is not Provider.CPU:
            raise ConfigError("the torch.compile peer is measured on the CPU only")
        self.torch, self.inductor_config = torch, inductor_config
        torch._dynamo.reset()  # a previous compiled wrapper must not hand us its graphs
        self.compiled = torch.compile(ctx.model.eval(), backend="inductor", dynamic=False)

    def bind(self, batch: np.ndarray) -> Call:
        x = self.torch.from_numpy(batch)
        torch, compiled, config = self.torch, self.compiled, self.inductor_config

        def call() -> Any:
            with config.patch(freezing=True), torch.inference_mode():
                return compiled(x)

        return call


class OpenVinoBackend(Backend):
    """OpenVINO on the CPU, compiled per batch size (static shapes). ``f32`` asks for
    ``INFERENCE_PRECISION_HINT=f32``; ``default`` lets OpenVINO choose (bf16 on CPUs with
    avx512_bf16, which is slower and less accurate here)."""

    def __init__(self, ctx: BackendContext, precision: str) -> None:
        try:
            import openvino as ov
        except ImportError:
            raise ConfigError(
                "the OpenVINO peer needs the optional package: pip install 'resnext-deploy[peers]'"
            ) from None
        if ctx.provider is not Provider.CPU:
            raise ConfigError("the OpenVINO peer is measured on the CPU only")
        self.ov, self.ctx, self.precision = ov, ctx, precision
        self.core = ov.Core()
        self.name = f"openvino-{precision}"
        self.config: dict[str, Any] = {
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": ctx.threads,
        }
        if precision == "f32":
            self.config["INFERENCE_PRECISION_HINT"] = "f32"

    def bind(self, batch: np.ndarray) -> Call:
        model = self.core.read_model(str(self.ctx.onnx_path))
        model.reshape({model.inputs[0].any_name: list(batch.shape)})
        compiled = self.core.compile_model(model, "CPU", self.config)
        request = compiled.create_infer_request()
        request.set_input_tensor(self.ov.Tensor(batch))
        self.compiled = compiled
        return lambda: request.infer()

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"name": self.name, "device": "cpu", "config": self.config}
        if getattr(self, "compiled", None) is not None:
            info["inference_precision"] = str(
                self.compiled.get_property("INFERENCE_PRECISION_HINT")
            )
        return info


def build_backend(kind: str, ctx: BackendContext) -> Backend:
    """Construct a backend by name; raises :class:`ConfigError` for an unknown one."""
    if kind in ("eager", "torchscript", "torchscript-opt"):
        return TorchBackend(kind, ctx)
    if kind == "onnxruntime":
        return OrtBackend(ctx)
    if kind in VARIANT_BACKENDS:
        from resnext_deploy.export.variants import FP16_FILE, INT8_FILE

        precision = kind.rsplit("-", 1)[1]
        path = ctx.onnx_path.parent / (FP16_FILE if precision == "fp16" else INT8_FILE)
        if not path.is_file():
            raise ConfigError(
                f"backend {kind} needs an export with the {precision} variant "
                f"(export --precision {precision}); {path} is missing"
            )
        return OrtBackend(
            ctx, name=f"onnxruntime-{ctx.provider.value}-{precision}", model_path=path
        )
    if kind == "compile":
        return CompileBackend(ctx)
    if kind in ("openvino-f32", "openvino-default"):
        return OpenVinoBackend(ctx, kind.split("-", 1)[1])
    raise ConfigError(f"unknown backend {kind!r}; choose from: {', '.join(ALL_BACKENDS)}")


def _cuda_used_mb() -> float | None:
    try:
        import torch

        free, total = torch.cuda.mem_get_info()
    except Exception:  # noqa: BLE001 - no torch CUDA runtime: the figure is simply unknown
        return None
    return (total - free) / 2**20


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
