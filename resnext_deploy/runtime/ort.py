"""onnxruntime runner (numpy + onnxruntime only, no torch).

``infer`` is a plain ``session.run``. For timing, :meth:`OrtRunner.bind` uses IO binding: the
input is copied once into an ``OrtValue`` on the session's device, the output is pre-allocated
there, and the timed call is ``run_with_iobinding`` alone. The end-to-end call of the same
binding adds the host->device copy (``update_inplace``) and the device->host copy of the output.
The same calls run on the CPU provider (device ``cpu``), so they are tested without a GPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from resnext_deploy.errors import ConfigError
from resnext_deploy.runtime.base import BoundCall, Runner
from resnext_deploy.runtime.providers import Provider, SessionConfig, create_session


class OrtRunner(Runner):
    """Runs an ONNX file on the provider in ``config``; the guard in :func:`create_session`
    guarantees that provider is the one in use."""

    def __init__(
        self,
        model: str | Path | bytes,
        config: SessionConfig | None = None,
        name: str | None = None,
    ) -> None:
        self.config = config or SessionConfig()
        self.session: Any = create_session(model, self.config)
        self.input_name = self.session.get_inputs()[0].name
        self.input_type = self.session.get_inputs()[0].type
        outputs = self.session.get_outputs()
        self.output_name = outputs[0].name
        self.num_outputs = len(outputs)
        self.device = "cpu" if self.config.provider is Provider.CPU else "cuda"
        self.name = name or f"onnxruntime-{self.config.provider.value}"
        self._bindings: list[Any] = []
        self._graph_ids: dict[tuple[int, ...], int] = {}

    @property
    def device_id(self) -> int:
        return self.config.cuda.device_id if self.device == "cuda" else 0

    def infer(self, batch: np.ndarray) -> np.ndarray:
        if self.config.cuda.enable_cuda_graph and self.device == "cuda":
            # A CUDA-graph session only replays what it captured: feed it through a binding.
            bound = self.bind_end_to_end(batch)
            assert bound is not None
            bound.run()
            return bound.fetch()
        return self.session.run([self.output_name], {self.input_name: batch})[0]

    def _binding(self, batch: np.ndarray) -> tuple[Any, Any, Any, Any]:
        """(binding, input OrtValue, output OrtValue, run options) for ``batch``'s shape."""
        import onnxruntime as ort

        out_meta = self.session.get_outputs()[0]
        classes = out_meta.shape[1]
        if not isinstance(classes, int):
            raise ConfigError(f"{self.name}: the output's class axis is not a fixed size")
        # On the CPU an OrtValue wraps the numpy buffer it is given: give it a private copy, so
        # that the caller reusing its array cannot change what a bound call computes.
        x = ort.OrtValue.ortvalue_from_numpy(
            np.array(batch, copy=True), self.device, self.device_id
        )
        y = ort.OrtValue.ortvalue_from_shape_and_type(
            [batch.shape[0], classes], np.float32, self.device, self.device_id
        )
        binding = self.session.io_binding()
        binding.bind_ortvalue_input(self.input_name, x)
        binding.bind_ortvalue_output(self.output_name, y)
        for extra in self.session.get_outputs()[1:]:
            binding.bind_output(extra.name, self.device, self.device_id)
        options = ort.RunOptions()
        if self.config.cuda.enable_cuda_graph and self.device == "cuda":
            # One session, one captured graph per input shape (onnxruntime's gpu_graph_id).
            graph_id = self._graph_ids.setdefault(tuple(batch.shape), len(self._graph_ids) + 1)
            options.add_run_config_entry("gpu_graph_id", str(graph_id))
        self._bindings.append(binding)
        return binding, x, y, options

    def bind(self, batch: np.ndarray) -> BoundCall:
        binding, _x, y, options = self._binding(batch)
        session = self.session
        binding.synchronize_inputs()

        def run() -> None:
            session.run_with_iobinding(binding, options)

        # ``numpy()`` of a CPU OrtValue is a view of the bound buffer: copy it out.
        return BoundCall(run, lambda: np.array(y.numpy(), copy=True))

    def bind_end_to_end(self, batch: np.ndarray) -> BoundCall | None:
        if self.device == "cpu":
            return None
        binding, x, _y, options = self._binding(batch)
        session = self.session
        host = np.ascontiguousarray(batch)
        last: list[np.ndarray] = []

        def run() -> None:
            x.update_inplace(host)
            session.run_with_iobinding(binding, options)
            last[:] = [binding.copy_outputs_to_cpu()[0]]

        return BoundCall(run, lambda: last[0])

    def sync(self) -> None:
        if self.device != "cpu" and self._bindings:
            self._bindings[-1].synchronize_outputs()

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "name": self.name,
            "device": self.device,
            "providers": self.session.get_providers() if self.session is not None else [],
            "intra_op_threads": self.config.threads(),
        }
        if self.config.provider is not Provider.CPU and self.session is not None:
            info["provider_options"] = self.session.get_provider_options()
        return info

    def close(self) -> None:
        self._bindings.clear()
        self.session = None
