"""TorchScript export: traced, frozen, with the spec in the archive's extra files."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from torch import nn

from resnext_deploy.errors import ArtifactError
from resnext_deploy.spec import ModelSpec

SPEC_EXTRA = "spec.json"
VERSIONS_EXTRA = "versions.json"


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
            _extra_files={SPEC_EXTRA: spec.to_json(), VERSIONS_EXTRA: json.dumps(versions)},
        )


def load_torchscript(
    path: Path, *, optimize: bool = False
) -> tuple[torch.jit.ScriptModule, dict[str, str]]:
    """Load a saved module and its extra files; ``optimize`` applies ``optimize_for_inference``."""
    extra = {SPEC_EXTRA: "", VERSIONS_EXTRA: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        except RuntimeError as exc:
            raise ArtifactError(f"{path} is not a readable TorchScript file ({exc})") from None
        if optimize:
            module = torch.jit.optimize_for_inference(module)
    return module, extra


def read_torchscript_spec(path: Path) -> ModelSpec:
    _, extra = load_torchscript(path)
    if not extra.get(SPEC_EXTRA):
        raise ArtifactError(f"{path} carries no resnext-deploy spec")
    return ModelSpec.from_json(extra[SPEC_EXTRA])
