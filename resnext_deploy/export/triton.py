"""A Triton Inference Server model repository for an export (onnxruntime backend).

Layout: ``DIR/<model>/config.pbtxt`` and ``DIR/<model>/1/model.onnx``. The config declares the
ONNX model's real input/output names, dtypes and dims (batch axis excluded, as Triton wants with
``max_batch_size > 0``), dynamic batching with preferred batch sizes, instance groups and, for GPU
instances, the CUDA execution provider options as Triton accelerator parameters.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resnext_deploy.errors import ArtifactError, ConfigError
from resnext_deploy.export.atomic import atomic_directory
from resnext_deploy.artifact import Variant, open_artifact
from resnext_deploy.runtime.providers import CudaOptions

VARIANT_FILES = {v.value: v.file for v in Variant}
ONNX_TO_TRITON = {
    "float32": "TYPE_FP32",
    "float16": "TYPE_FP16",
    "uint8": "TYPE_UINT8",
    "int64": "TYPE_INT64",
    "int32": "TYPE_INT32",
    "int8": "TYPE_INT8",
}


@dataclass(frozen=True, kw_only=True)
class TritonConfig:
    model_name: str | None = None
    variant: str = "fp32"
    max_batch_size: int = 32
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_us: int = 100
    gpu: bool = False
    instances: int = 1
    cuda: CudaOptions = field(default_factory=CudaOptions)
    version: int = 1

    def __post_init__(self) -> None:
        if self.variant not in VARIANT_FILES:
            raise ConfigError(f"variant must be one of {', '.join(VARIANT_FILES)}")
        if self.max_batch_size < 1 or self.instances < 1:
            raise ConfigError("max_batch_size and instances must be >= 1")
        if any(b < 1 or b > self.max_batch_size for b in self.preferred_batch_sizes):
            raise ConfigError(f"preferred batch sizes must lie in 1..{self.max_batch_size}")


def render_config(name: str, onnx_path: Path, config: TritonConfig) -> str:
    """``config.pbtxt`` text for the ONNX file, in protobuf text format."""
    inputs, outputs = _io(onnx_path)
    preferred = config.preferred_batch_sizes or _default_preferred(config.max_batch_size)
    instance_kind = "KIND_GPU" if config.gpu else "KIND_CPU"
    lines = [
        f'name: "{name}"',
        'backend: "onnxruntime"',
        f"max_batch_size: {config.max_batch_size}",
    ]
    for kind, tensors in (("input", inputs), ("output", outputs)):
        lines.append(f"{kind} [")
        lines.append(
            ",\n".join(
                f'  {{\n    name: "{t["name"]}"\n    data_type: {t["type"]}\n'
                f"    dims: [ {', '.join(str(d) for d in t['dims'])} ]\n  }}"
                for t in tensors
            )
        )
        lines.append("]")
    lines += [
        "dynamic_batching {",
        f"  preferred_batch_size: [ {', '.join(map(str, preferred))} ]",
        f"  max_queue_delay_microseconds: {config.max_queue_delay_us}",
        "}",
        "instance_group [",
        f"  {{\n    count: {config.instances}\n    kind: {instance_kind}\n  }}",
        "]",
    ]
    if config.gpu:
        params = {k: v for k, v in config.cuda.to_ort().items() if k != "device_id"}
        lines += [
            "optimization {",
            "  execution_accelerators {",
            "    gpu_execution_accelerator: [",
            "      {",
            '        name: "cuda"',
        ]
        lines += [f'        parameters {{ key: "{k}" value: "{v}" }}' for k, v in params.items()]
        lines += ["      }", "    ]", "  }", "}"]
    return "\n".join(lines) + "\n"


def write_repository(
    export_dir: Path, out_dir: Path, config: TritonConfig, overwrite: bool = False
) -> Path:
    """Create (atomically) a model repository holding one model; returns the model's folder."""
    artifact = open_artifact(export_dir)
    filename = VARIANT_FILES[config.variant]
    if not artifact.has(filename):
        raise ArtifactError(
            f"{export_dir} has no {config.variant} variant ({filename}); export it "
            "with --precision / --embed-preprocess first"
        )
    name = config.model_name or artifact.spec.arch.replace("/", "_")
    with atomic_directory(
        out_dir,
        overwrite=overwrite,
        # --force replaces a repository this command wrote, never another folder.
        replaceable=lambda d: any(d.glob("*/resnext_deploy.json")),
        what="Triton model repository",
    ) as stage:
        version_dir = stage / name / str(config.version)
        version_dir.mkdir(parents=True)
        shutil.copyfile(artifact.file(filename), version_dir / "model.onnx")
        (stage / name / "config.pbtxt").write_text(
            render_config(name, version_dir / "model.onnx", config)
        )
        (stage / name / "labels.txt").write_text("\n".join(artifact.spec.labels()) + "\n")
        (stage / name / "resnext_deploy.json").write_text(
            json.dumps(
                {
                    "source": str(export_dir),
                    "variant": config.variant,
                    "spec": artifact.spec.to_dict(),
                },
                indent=2,
            )
        )
    return out_dir / name


def _io(onnx_path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    import onnx
    from onnx import helper

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    init = {i.name for i in graph.initializer}

    def describe(values: Any) -> list[dict[str, Any]]:
        found = []
        for v in values:
            if v.name in init:
                continue
            tt = v.type.tensor_type
            dtype = helper.tensor_dtype_to_np_dtype(tt.elem_type).name
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim]
            if not dims or dims[0] != -1:
                raise ArtifactError(
                    f"{v.name} has no dynamic batch axis; Triton batching needs one"
                )
            if any(d == -1 for d in dims[1:]):
                raise ArtifactError(f"{v.name} has dynamic dimensions besides the batch axis")
            found.append({"name": v.name, "type": ONNX_TO_TRITON[dtype], "dims": dims[1:]})
        return found

    return describe(graph.input), describe(graph.output)


def _default_preferred(max_batch_size: int) -> tuple[int, ...]:
    return tuple(b for b in (4, 8, 16) if b <= max_batch_size) or (max_batch_size,)
