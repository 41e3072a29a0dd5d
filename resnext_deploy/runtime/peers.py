"""OpenVINO, the CPU peer a user could pick instead of onnxruntime, measured side by side by the
benchmark (``torch.compile`` is a torch runner: :mod:`resnext_deploy.runtime.torch_runners`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from resnext_deploy.errors import ConfigError
from resnext_deploy.runtime.base import BoundCall, Runner


class OpenVinoRunner(Runner):
    """OpenVINO on the CPU, compiled per batch size (static shapes). ``f32`` asks for
    ``INFERENCE_PRECISION_HINT=f32``; ``default`` lets OpenVINO choose (bf16 on CPUs with
    avx512_bf16, which is slower and less accurate)."""

    def __init__(self, onnx_path: Path, precision: str, threads: int) -> None:
        try:
            import openvino as ov
        except ImportError:
            raise ConfigError(
                "the OpenVINO peer needs the optional package: pip install 'resnext-deploy[peers]'"
            ) from None
        if precision not in ("f32", "default"):
            raise ConfigError(f"OpenVINO precision must be f32 or default, not {precision!r}")
        self.ov, self.onnx_path = ov, onnx_path
        self.core: Any = ov.Core()
        self.name = f"openvino-{precision}"
        self.config: dict[str, Any] = {
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": threads,
        }
        if precision == "f32":
            self.config["INFERENCE_PRECISION_HINT"] = "f32"
        self._compiled: dict[tuple[int, ...], Any] = {}

    def _compile(self, shape: tuple[int, ...]) -> Any:
        if shape not in self._compiled:
            model = self.core.read_model(str(self.onnx_path))
            model.reshape({model.inputs[0].any_name: list(shape)})
            self._compiled[shape] = self.core.compile_model(model, "CPU", self.config)
        return self._compiled[shape]

    def infer(self, batch: np.ndarray) -> np.ndarray:
        request = self._compile(tuple(batch.shape)).create_infer_request()
        request.infer({0: np.ascontiguousarray(batch)})
        return np.array(request.get_output_tensor(0).data)

    def bind(self, batch: np.ndarray) -> BoundCall:
        request = self._compile(tuple(batch.shape)).create_infer_request()
        request.set_input_tensor(self.ov.Tensor(np.ascontiguousarray(batch)))
        return BoundCall(
            lambda: request.infer(), lambda: np.array(request.get_output_tensor(0).data)
        )

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"name": self.name, "device": "cpu", "config": self.config}
        if self._compiled:
            compiled = next(iter(self._compiled.values()))
            info["inference_precision"] = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
        return info

    def close(self) -> None:
        self._compiled.clear()
