"""A Triton Inference Server model repository for an export (onnxruntime backend).

Layout: ``DIR/<model>/config.pbtxt``, ``DIR/<model>/1/model.onnx``, ``labels.txt`` and
``resnext_deploy.json``. The config declares the ONNX model's real input/output names, dtypes
and dims (batch axis excluded, as Triton wants with ``max_batch_size > 0``), dynamic batching,
instance groups, a warm-up at batch 1 and at the largest batch, ``label_filename`` on the
class-score outputs (Triton's classification extension answers with labels) and, for GPU
instances, the CUDA execution provider options as Triton accelerator parameters.

What a real Triton needs, read from its sources and release notes:

- The ``cuda`` execution accelerator exists from Triton 24.06 (r24.05 and older refuse the model:
  "unknown Execution Accelerator 'cuda'").
- Triton 24.04 ships onnxruntime 1.17.3, 24.05 and 24.06 ship 1.18.0. onnxruntime 1.17 refuses
  ONNX IR version 10 ("Unsupported model IR version: 10, max supported IR version: 9"); 1.18
  reads it and implements opset 21. The exported file's IR version and opsets are read from the
  file and written, with the minimum Triton they imply, into the config's comments and
  ``resnext_deploy.json``.
- TF32 is off in the served GPU config: ``verify`` checks CUDA parity with TF32 off, so Triton
  serves what was verified. CUDA graphs are refused: Triton moves inputs between requests, and a
  captured graph replays fixed device addresses.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resnext_deploy import __version__
from resnext_deploy.artifact import (
    ONNX_TO_V2,
    Variant,
    check_model_name,
    model_name_for,
    open_artifact,
    parse_variant,
)
from resnext_deploy.errors import ArtifactError, ConfigError
from resnext_deploy.export.atomic import atomic_directory
from resnext_deploy.runtime.ort import check_onnx_file
from resnext_deploy.runtime.providers import CudaOptions
from resnext_deploy.validate import check_int

LABELS_FILE = "labels.txt"
TENSOR_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:/-]*")
CUDA_ACCELERATOR_MIN_TRITON = "24.06"
# ONNX IR version -> (highest default-domain opset, first onnxruntime that reads both, first
# Triton release shipping that onnxruntime). Only what was checked; other files get no claim.
IR_REQUIREMENTS = {10: (21, "1.18", "24.05")}
# Triton's config types are the KServe v2 datatypes with a prefix: TYPE_FP32.
TRITON_TYPES = {onnx_type: f"TYPE_{v2}" for onnx_type, v2 in ONNX_TO_V2.items()}
# How errors call a model name here (Triton loads a model from a folder of its name).
NAME_KIND = "Triton model name"
# Bounds of the numbers a config carries. Triton reads max_batch_size as an int32 and warms
# each instance up at it (zero-filled, at load time); the queue delay is a uint64 of
# microseconds that each request may wait for a batch to fill. Beyond these, what is written
# is a config Triton cannot load or a server nobody would run.
MAX_BATCH_SIZE = 4096
MAX_QUEUE_DELAY_US = 10_000_000  # 10 s, as `serve --batch-wait-ms` at most
MAX_INSTANCES = 64
MAX_VERSION = 2**31 - 1


@dataclass(frozen=True, kw_only=True)
class TritonConfig:
    """``cuda`` options apply to GPU instances; TF32 must stay off and CUDA graphs are refused
    (see the module docstring)."""

    model_name: str | None = None
    variant: Variant | str = Variant.FP32
    max_batch_size: int = 32
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_us: int = 100
    gpu: bool = False
    instances: int = 1
    cuda: CudaOptions = field(default_factory=lambda: CudaOptions(use_tf32=False))
    version: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "variant", parse_variant(str(self.variant)))
        if self.model_name is not None:
            check_model_name(self.model_name, NAME_KIND)
        check_int(self.max_batch_size, "max batch size", 1, MAX_BATCH_SIZE)
        for size in self.preferred_batch_sizes:
            check_int(size, "preferred batch size", 1, self.max_batch_size)
        check_int(self.max_queue_delay_us, "max queue delay (microseconds)", 0, MAX_QUEUE_DELAY_US)
        check_int(self.instances, "instances", 1, MAX_INSTANCES)
        check_int(self.version, "model version", 1, MAX_VERSION)
        if self.cuda.enable_cuda_graph:
            raise ConfigError(
                "enable_cuda_graph is refused in a Triton config: Triton moves inputs between "
                "requests and a captured CUDA graph replays fixed device addresses"
            )
        if self.gpu and self.cuda.use_tf32:
            raise ConfigError(
                "use_tf32 is refused in a Triton config: `verify` checks CUDA parity with TF32 "
                "off, so the served model must run with TF32 off (CudaOptions(use_tf32=False))"
            )


@dataclass(frozen=True)
class Requirements:
    """What a Triton server needs to load the repository."""

    onnx_ir_version: int
    onnx_opsets: dict[str, int]
    min_onnxruntime: str | None
    min_triton: str | None
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "onnx_ir_version": self.onnx_ir_version,
            "onnx_opsets": self.onnx_opsets,
            "min_onnxruntime": self.min_onnxruntime,
            "min_triton": self.min_triton,
            "reasons": list(self.reasons),
        }


def requirements(onnx_path: Path, gpu: bool) -> Requirements:
    """The ONNX IR version and opsets of ``onnx_path`` and the oldest Triton that loads it."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    ir = int(model.ir_version)
    opsets = {imp.domain or "ai.onnx": int(imp.version) for imp in model.opset_import}
    reasons, versions = [], []
    known = IR_REQUIREMENTS.get(ir)
    ort = known[1:] if known and opsets.get("ai.onnx", 0) <= known[0] else None
    if ort is not None:
        reasons.append(
            f"ONNX IR version {ir} needs onnxruntime {ort[0]} or later "
            f"(Triton {ort[1]} or later ships it)"
        )
        versions.append(ort[1])
    else:
        reasons.append(
            f"ONNX IR version {ir}, opset {opsets.get('ai.onnx')}: check that Triton's "
            "onnxruntime reads them"
        )
    if gpu:
        reasons.append(
            f"the 'cuda' execution accelerator needs Triton {CUDA_ACCELERATOR_MIN_TRITON} or later"
        )
        versions.append(CUDA_ACCELERATOR_MIN_TRITON)
    return Requirements(
        onnx_ir_version=ir,
        onnx_opsets=opsets,
        min_onnxruntime=ort[0] if ort else None,
        min_triton=max(versions, key=lambda v: tuple(map(int, v.split(".")))) if versions else None,
        reasons=tuple(reasons),
    )


def render_config(
    name: str, onnx_path: Path, config: TritonConfig, num_classes: int | None = None
) -> str:
    """``config.pbtxt`` text for the ONNX file, in protobuf text format. Outputs with
    ``num_classes`` scores per image get ``label_filename``."""
    check_model_name(name, NAME_KIND)
    inputs, outputs = _io(onnx_path)
    needs = requirements(onnx_path, config.gpu)
    preferred = config.preferred_batch_sizes or _default_preferred(config.max_batch_size)
    instance_kind = "KIND_GPU" if config.gpu else "KIND_CPU"
    opsets = ", ".join(f"{d} {v}" for d, v in needs.onnx_opsets.items())
    lines = [
        f"# Written by resnext-deploy {__version__} (variant {config.variant}).",
        f"# Needs Triton {needs.min_triton or '(see below)'} or later: "
        + "; ".join(needs.reasons)
        + ".",
        f"# model.onnx: ONNX IR version {needs.onnx_ir_version}, opsets: {opsets}.",
        f'name: "{name}"',
        'backend: "onnxruntime"',
        f"max_batch_size: {config.max_batch_size}",
    ]
    for kind, tensors in (("input", inputs), ("output", outputs)):
        entries = []
        for t in tensors:
            label = (
                f'\n    label_filename: "{LABELS_FILE}"'
                if kind == "output" and num_classes is not None and t["dims"] == [num_classes]
                else ""
            )
            entries.append(
                f'  {{\n    name: "{t["name"]}"\n    data_type: {t["type"]}\n'
                f"    dims: [ {', '.join(str(d) for d in t['dims'])} ]{label}\n  }}"
            )
        lines += [f"{kind} [", ",\n".join(entries), "]"]
    lines += [
        "dynamic_batching {",
        f"  preferred_batch_size: [ {', '.join(map(str, preferred))} ]",
        f"  max_queue_delay_microseconds: {config.max_queue_delay_us}",
        "}",
        "instance_group [",
        f"  {{\n    count: {config.instances}\n    kind: {instance_kind}\n  }}",
        "]",
    ]
    lines += _warmup(inputs[0], sorted({1, config.max_batch_size}))
    if config.gpu:
        params = {k: v for k, v in config.cuda.to_ort().items() if k != "device_id"}
        lines += [
            "# TF32 off (use_tf32 0): `resnext-deploy verify` checks CUDA parity with TF32 off.",
            "optimization {",
            "  execution_accelerators {",
            "    gpu_execution_accelerator: [",
            "      {",
            '        name: "cuda"',
        ]
        lines += [f'        parameters {{ key: "{k}" value: "{v}" }}' for k, v in params.items()]
        lines += ["      }", "    ]", "  }", "}"]
    return "\n".join(lines) + "\n"


def _warmup(tensor: dict[str, Any], batch_sizes: list[int]) -> list[str]:
    """Zero-filled warm-up requests, so that session start-up and cuDNN's algorithm search
    (per input shape) happen at load time, not on the first user request."""
    dims = ", ".join(str(d) for d in tensor["dims"])
    lines = ["model_warmup ["]
    entries = [
        f'  {{\n    name: "zeros_batch_{b}"\n    batch_size: {b}\n'
        f'    inputs {{\n      key: "{tensor["name"]}"\n      value: {{\n'
        f"        data_type: {tensor['type']}\n        dims: [ {dims} ]\n"
        "        zero_data: true\n      }\n    }\n  }"
        for b in batch_sizes
    ]
    return [*lines, ",\n".join(entries), "]"]


def write_repository(
    export_dir: Path, out_dir: Path, config: TritonConfig, overwrite: bool = False
) -> Path:
    """Create (atomically) a model repository holding one model; returns the model's folder.

    Raises :class:`ArtifactError` for an export that fails its manifest check or lacks the
    variant, :class:`ConfigError` for a model name Triton could misread.
    """
    artifact = open_artifact(export_dir)
    variant = Variant(config.variant)
    artifact.require(variant)
    # The model must load and carry the manifest's spec, or Triton would fail at load, less clearly.
    check_onnx_file(artifact.file(variant), spec=artifact.spec)
    name = config.model_name or model_name_for(artifact.spec.arch, NAME_KIND)
    with atomic_directory(
        out_dir,
        overwrite=overwrite,
        # --force replaces a repository this command wrote, never another folder.
        replaceable=lambda d: any(d.glob("*/resnext_deploy.json")),
        what="Triton model repository",
    ) as stage:
        model_dir = stage / name
        if model_dir.resolve().parent != stage.resolve():
            raise ConfigError(f"model name {name!r} would leave the repository folder")
        version_dir = model_dir / str(config.version)
        version_dir.mkdir(parents=True)
        onnx_path = version_dir / "model.onnx"
        shutil.copyfile(artifact.file(variant), onnx_path)
        (model_dir / "config.pbtxt").write_text(
            render_config(name, onnx_path, config, artifact.spec.num_classes)
        )
        (model_dir / LABELS_FILE).write_text("\n".join(artifact.spec.labels()) + "\n")
        (model_dir / "resnext_deploy.json").write_text(
            json.dumps(
                {
                    "source": str(export_dir),
                    "variant": variant.value,
                    "spec": artifact.spec.to_dict(),
                    "requirements": requirements(onnx_path, config.gpu).to_dict(),
                    "cuda": {"use_tf32": False, "verified_as": "verify runs CUDA with TF32 off"}
                    if config.gpu
                    else None,
                },
                indent=2,
            )
        )
    return out_dir / name


def _io(onnx_path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    init = {i.name for i in graph.initializer}

    def describe(values: Any) -> list[dict[str, Any]]:
        found = []
        for v in values:
            if v.name in init:
                continue
            if not TENSOR_NAME.fullmatch(v.name):
                raise ArtifactError(f"tensor name {v.name!r} cannot be written into a config")
            tt = v.type.tensor_type
            dtype = onnx.TensorProto.DataType.Name(tt.elem_type).lower()
            if dtype not in TRITON_TYPES:
                raise ArtifactError(f"{v.name} has type {dtype}, which Triton configs cannot carry")
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim]
            if not dims or dims[0] != -1:
                raise ArtifactError(
                    f"{v.name} has no dynamic batch axis; Triton batching needs one"
                )
            if any(d == -1 for d in dims[1:]):
                raise ArtifactError(f"{v.name} has dynamic dimensions besides the batch axis")
            found.append({"name": v.name, "type": TRITON_TYPES[dtype], "dims": dims[1:]})
        return found

    return describe(graph.input), describe(graph.output)


def _default_preferred(max_batch_size: int) -> tuple[int, ...]:
    return tuple(b for b in (4, 8, 16) if b <= max_batch_size) or (max_batch_size,)
