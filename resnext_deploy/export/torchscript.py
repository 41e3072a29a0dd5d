"""TorchScript export: traced, frozen, with the spec in the archive's extra files."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from torch import nn

from resnext_deploy.artifact import TORCHSCRIPT_SPEC_EXTRA, TORCHSCRIPT_VERSIONS_EXTRA
from resnext_deploy.spec import ModelSpec


def export_torchscript(
    model: nn.Module, example: torch.Tensor, path: Path, spec: ModelSpec, versions: dict[str, str]
) -> None:
    """Trace ``model`` on ``example``, freeze it and save it with the spec inside.

    ``optimize_for_inference`` is deliberately not applied here: torch 2.14 saves such a module to
    a file ``torch.jit.load`` cannot read. Runners apply it after loading.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation FutureWarnings
        with torch.no_grad():
            traced = torch.jit.trace(model.eval(), example, check_trace=False)
            frozen = torch.jit.freeze(traced)
        torch.jit.save(
            frozen,
            str(path),
            _extra_files={
                TORCHSCRIPT_SPEC_EXTRA: spec.to_json(),
                TORCHSCRIPT_VERSIONS_EXTRA: json.dumps(versions),
            },
        )
