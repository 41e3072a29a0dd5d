"""PyTorch eager and TorchScript runners."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from resnext_deploy.runtime.base import Runner


class _TorchRunner(Runner):
    module: Any

    def infer(self, batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.module(torch.from_numpy(np.ascontiguousarray(batch))).numpy()

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "threads": torch.get_num_threads()}

    def close(self) -> None:
        self.module = None


class EagerRunner(_TorchRunner):
    """The reference: the PyTorch module itself, in eval mode."""

    def __init__(self, model: nn.Module, name: str = "torch-eager") -> None:
        self.module = model.eval()
        self.name = name


class TorchScriptRunner(_TorchRunner):
    """A saved TorchScript file; ``optimize`` applies ``optimize_for_inference`` after loading
    (the only order that works in torch 2.14)."""

    def __init__(self, path: Path, optimize: bool = False) -> None:
        from resnext_deploy.export.torchscript import load_torchscript

        self.module, _ = load_torchscript(path, optimize=optimize)
        self.name = "torchscript-optimized" if optimize else "torchscript"
