"""What a benchmark measures, resolved once: an export folder, or an architecture name exported
to a temporary folder first. The sweep, the overhead measurement and ``--profile`` all take the
one :class:`BenchModel`, so a name is exported once and every step times the same files."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resnext_deploy.artifact import WEIGHTS_FILE, Artifact, Precision, Variant, open_artifact
from resnext_deploy.errors import ConfigError
from resnext_deploy.spec import ModelSpec

Progress = Callable[[str], None]


@dataclass(frozen=True)
class BenchModel:
    """The eager model, its spec and the export its files are in."""

    name: str  # as the user gave it: an export folder or an architecture name
    eager: Any  # torch.nn.Module in eval mode
    artifact: Artifact

    @property
    def spec(self) -> ModelSpec:
        return self.artifact.spec

    @property
    def export_dir(self) -> Path:
        return self.artifact.path

    def files(self, variants: tuple[Variant, ...]) -> dict[Variant, Path]:
        """The ONNX file of each variant; raises :class:`ArtifactError` for one the export has
        not."""
        return {v: self.artifact.require(v) for v in variants}


@contextmanager
def bench_model(
    model: str,
    checkpoint: Path | None = None,
    variants: tuple[Variant, ...] = (Variant.FP32,),
    progress: Progress | None = None,
) -> Iterator[BenchModel]:
    """``model`` as an export folder (its hashes checked), or an architecture name with random
    weights (speed does not depend on them) or ``checkpoint``'s, exported with ``variants`` to a
    temporary folder that lives as long as the context and parity-checked first."""
    if Path(model).is_dir():
        yield _opened(model)
        return
    precisions = precisions_for(variants)  # before minutes of loading and exporting
    with tempfile.TemporaryDirectory(prefix="resnext-bench-") as tmp:
        yield _exported(model, checkpoint, precisions, Path(tmp) / "model", progress)


def precisions_for(variants: tuple[Variant, ...]) -> tuple[Precision, ...]:
    """The precisions an architecture name must be exported with to hold ``variants``. int8
    needs calibration images, which a bare architecture name has not: refused with what to do."""
    if Variant.INT8 in variants:
        raise ConfigError(
            "backend onnxruntime-int8 needs an int8 variant calibrated on images, which an "
            "architecture name has not: export the model with precision int8 and calibration "
            "images, then benchmark that export folder"
        )
    return (Precision.FP32, *((Precision.FP16,) if Variant.FP16 in variants else ()))


def _opened(folder: str) -> BenchModel:
    from resnext_deploy.models.checkpoint import read_checkpoint
    from resnext_deploy.models.registry import build_model

    artifact = open_artifact(folder)
    spec = artifact.spec
    eager = build_model(spec.architecture(), spec.num_classes)
    eager.load_state_dict(read_checkpoint(artifact.file(WEIGHTS_FILE)).state_dict)
    return BenchModel(folder, eager.eval(), artifact)


def _exported(
    name: str,
    checkpoint: Path | None,
    precisions: tuple[Precision, ...],
    out_dir: Path,
    progress: Progress | None,
) -> BenchModel:
    from resnext_deploy.export.pipeline import ExportConfig, export_model
    from resnext_deploy.verify import VerifyConfig

    eager, spec = _built(name, checkpoint)
    if progress:
        progress(f"exporting {name} (random weights)" if checkpoint is None else "exporting")
    verify = VerifyConfig(batch_sizes=(1, 2), auto_cuda=False)
    export_model(eager, spec, ExportConfig(out_dir=out_dir, verify=verify, precisions=precisions))
    return BenchModel(name, eager, open_artifact(out_dir, check_hashes=False))  # just written


def _built(name: str, checkpoint: Path | None) -> tuple[Any, ModelSpec]:
    """The architecture ``name`` with ``checkpoint``'s weights, or seeded random ones."""
    from resnext_deploy.models.checkpoint import LoadOptions, load_model
    from resnext_deploy.models.registry import ARCHS, build_model

    if checkpoint is not None:
        eager, spec = load_model(checkpoint, LoadOptions(arch=name))
        return eager.eval(), spec
    import torch

    cfg = ARCHS.get(name)
    torch.manual_seed(0)
    spec = ModelSpec(name, 1000, cfg.input_size, cfg.input_size, arch_config=cfg.to_dict())
    return build_model(cfg, 1000).eval(), spec
