"""A classifier wrapped with its preprocessing, for graphs that take raw uint8 images."""

from __future__ import annotations

import torch
from torch import nn

from resnext_deploy.spec import ModelSpec


class PreprocessAndClassify(nn.Module):
    """uint8 ``[N, S, S, 3]`` RGB -> (logits, probabilities).

    ``(x / 255 - mean) / std`` is computed as ``(x - 255 mean) / (255 std)``: one subtraction and
    one division per element inside the graph.
    """

    mean: torch.Tensor
    scale: torch.Tensor

    def __init__(self, model: nn.Module, spec: ModelSpec) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("scale", torch.tensor(spec.std).view(1, 3, 1, 1) * 255.0)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = image.permute(0, 3, 1, 2).to(torch.float32)
        logits = self.model((x - self.mean) / self.scale)
        return logits, torch.softmax(logits, dim=1)
