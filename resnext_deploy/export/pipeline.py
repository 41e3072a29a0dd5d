"""The export command as a function: checkpoint -> verified export directory, or nothing."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from resnext_deploy.artifact import (
    ONNX_FILE,
    PARITY_FILE,
    TORCHSCRIPT_FILE,
    WEIGHTS_FILE,
    Manifest,
    Variant,
)
from resnext_deploy.environment import package_versions
from resnext_deploy.errors import ExportError, ParityError
from resnext_deploy.export.atomic import atomic_directory, check_destination
from resnext_deploy.export.calibration import CalibrationConfig, calibration_sets
from resnext_deploy.export.onnx_export import (
    DEFAULT_OPSET,
    ConvSummary,
    check_opset,
    conv_summary,
    export_onnx,
)
from resnext_deploy.export.quantize import Int8Config, Int8Result, export_int8
from resnext_deploy.export.torchscript import export_torchscript
from resnext_deploy.export.variants import (
    Precision,
    export_fp16,
    export_with_preprocessing,
)
from resnext_deploy.fileio import atomic_write_text
from resnext_deploy.models.checkpoint import LoadOptions, load_model
from resnext_deploy.parity import ParityReport
from resnext_deploy.runtime.openvino import LayerPrecisions
from resnext_deploy.spec import ModelSpec
from resnext_deploy.verify import VerifyConfig, compare_model_with_files

DEFAULT_ROOT = Path("exported")


@dataclass(frozen=True, kw_only=True)
class ExportConfig:
    """``out_dir`` defaults to ``exported/<arch>``. ``precisions``: the variants to write; fp32
    is always among them (the others derive from it), in :class:`Precision`'s order."""

    out_dir: Path | None = None
    opset: int = DEFAULT_OPSET
    overwrite: bool = False
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    precisions: tuple[Precision, ...] = (Precision.FP32,)
    embed_preprocess: bool = False
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)

    def __post_init__(self) -> None:
        check_opset(self.opset)
        written = tuple(p for p in Precision if p is Precision.FP32 or p in self.precisions)
        object.__setattr__(self, "precisions", written)


@dataclass(frozen=True)
class ExportResult:
    out_dir: Path
    spec: ModelSpec
    files: dict[str, int]
    convs: ConvSummary
    parity: ParityReport
    int8: Int8Result | None = None
    # which layers OpenVINO's CPU plugin runs in int8 (None: no int8 variant or no OpenVINO)
    openvino_int8: LayerPrecisions | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "out_dir": str(self.out_dir),
            "spec": self.spec.to_dict(),
            "files": self.files,
            "conv_groups": self.convs.by_group,
            "parity": self.parity.to_dict(),
            "int8": self.int8.to_dict() if self.int8 else None,
            "openvino_int8": self.openvino_int8.to_dict() if self.openvino_int8 else None,
        }


def export_checkpoint(checkpoint: Path, load: LoadOptions, config: ExportConfig) -> ExportResult:
    """Load a checkpoint (any supported layout) and export it; see :func:`export_model`."""
    if config.out_dir is not None:  # fail before loading, not after
        check_destination(config.out_dir, overwrite=config.overwrite)
    model, spec = load_model(checkpoint, load)
    return export_model(model, spec, config)


def export_model(model: nn.Module, spec: ModelSpec, config: ExportConfig) -> ExportResult:
    """Write weights, TorchScript, ONNX (plus any fp16/int8/preprocessing variants), the parity
    report and the manifest to ``config.out_dir``.

    Everything is staged in a sibling directory and renamed into place only after the parity gate
    (and, for int8, the accuracy gate) passes. Raises :class:`ParityError` (nothing written) when a
    backend disagrees with eager, :class:`ExportError` when the model cannot be exported.
    """
    check_exportable(model)
    model.eval()
    example = torch.randn(
        2, 3, spec.input_size, spec.input_size, generator=torch.Generator().manual_seed(0)
    )
    with torch.inference_mode():
        model(example)  # one eager pass in eval mode before tracing catches shape errors early
    versions = package_versions()
    out_dir = config.out_dir or default_out_dir(spec.arch)
    with atomic_directory(out_dir, overwrite=config.overwrite) as stage:
        torch.save({"state_dict": model.state_dict(), "spec": spec.to_dict()}, stage / WEIGHTS_FILE)
        export_torchscript(model, example, stage / TORCHSCRIPT_FILE, spec, versions)
        export_onnx(model, example, stage / ONNX_FILE, spec, versions, config.opset)
        convs = conv_summary(stage / ONNX_FILE)
        files = [WEIGHTS_FILE, TORCHSCRIPT_FILE, ONNX_FILE]
        int8 = None
        if Precision.FP16 in config.precisions:
            export_fp16(stage / ONNX_FILE, stage / Variant.FP16.file)
            files.append(Variant.FP16.file)
        if Precision.INT8 in config.precisions:
            calibration, held_out = calibration_sets(config.calibration, spec)
            int8 = export_int8(
                stage / ONNX_FILE,
                stage / Variant.INT8.file,
                calibration,
                held_out,
                Int8Config(
                    min_agreement=config.calibration.min_agreement,
                    method=config.calibration.method,
                ),
            )
            files.append(Variant.INT8.file)
        if config.embed_preprocess:
            export_with_preprocessing(model, spec, stage / Variant.PREPROCESS.file, config.opset)
            files.append(Variant.PREPROCESS.file)
        variants = tuple(v for v in Variant if v.file in files)
        report = compare_model_with_files(model, spec, stage, config.verify, variants)
        if not report.passed:
            failed = "; ".join(
                f"{b.backend}: {', '.join(b.failures)}" for b in report.backends if not b.passed
            )
            raise ParityError(f"parity gate failed, nothing was written ({failed})")
        parity = report.to_dict()
        openvino = openvino_layers(stage / Variant.INT8.file) if int8 else None
        if int8 is not None:
            parity["int8"] = asdict(int8) | {"speedup": int8.speedup}
            parity["int8"]["openvino"] = openvino.to_dict() if openvino else None
        atomic_write_text(stage / PARITY_FILE, json.dumps(parity, indent=2))
        files.append(PARITY_FILE)
        Manifest.build(stage, spec, versions, files).write(stage)
        sizes = {name: (stage / name).stat().st_size for name in files}
    return ExportResult(out_dir, spec, sizes, convs, report, int8, openvino)


def openvino_layers(path: Path) -> LayerPrecisions | None:
    """Which compute layers of the int8 file OpenVINO's CPU plugin runs in int8, read from its
    compiled runtime model; ``None`` where OpenVINO is not installed (an optional engine)."""
    from resnext_deploy.runtime.openvino import OpenVinoRunner, openvino_installed

    if not openvino_installed():
        return None

    with OpenVinoRunner(path, name="openvino-int8-layers") as runner:
        return runner.layer_precisions()


def default_out_dir(arch: str) -> Path:
    """``exported/<arch>``; an architecture name read from a checkpoint is not trusted to be a
    plain folder name (``../../x`` would write outside ``exported/``)."""
    if not arch or Path(arch).name != arch or arch.startswith(".") or "\\" in arch:
        raise ExportError(
            f"the architecture name {arch!r} cannot name a folder under {DEFAULT_ROOT}/; give "
            "an output folder"
        )
    return DEFAULT_ROOT / arch


def check_exportable(model: nn.Module) -> None:
    """Refuse models whose eval-mode output is undefined: BatchNorm without running statistics."""
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and (
            not module.track_running_stats or module.running_mean is None
        ):
            raise ExportError(
                f"BatchNorm layer {name!r} has no running statistics, so its eval-mode output "
                "depends on the batch; train it with track_running_stats=True"
            )
