"""onnxruntime runner (numpy + onnxruntime only)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from resnext_deploy.runtime.base import Runner
from resnext_deploy.runtime.providers import Provider, SessionConfig, create_session


class OrtRunner(Runner):
    """Runs an ONNX file on the provider in ``config``; the guard in :func:`create_session`
    guarantees that provider is the one in use."""

    def __init__(
        self,
        model: str | Path | bytes,
        config: SessionConfig = SessionConfig(),
        name: str | None = None,
    ) -> None:
        self.config = config
        self.session = create_session(model, config)
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        self.name = name or f"onnxruntime-{config.provider.value}"

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: batch})[0]

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "name": self.name,
            "providers": self.session.get_providers(),
            "intra_op_threads": self.config.session_options().intra_op_num_threads,
        }
        if self.config.provider is not Provider.CPU:
            info["provider_options"] = self.session.get_provider_options()
        return info

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]
