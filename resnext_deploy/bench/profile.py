"""``bench --profile``: where onnxruntime spends its time, per ONNX variant and batch size.

Each variant is profiled in its own session (see :mod:`resnext_deploy.runtime.profiling`); with
both fp32 and int8 profiled, the report sets their convolution classes side by side, so that an
int8 kernel slower than its fp32 counterpart (grouped ``QLinearConv`` on CPUs without VNNI) is
visible in one table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from resnext_deploy.artifact import Variant
from resnext_deploy.errors import ConfigError
from resnext_deploy.machine.cpu import CpuInfo, cpu_info
from resnext_deploy.runtime.profiling import OrtProfile, profile_model
from resnext_deploy.runtime.providers import (
    CudaOptions,
    Provider,
    SessionConfig,
    TensorRTOptions,
)
from resnext_deploy.validate import check_int, check_name

if TYPE_CHECKING:
    from resnext_deploy.bench.source import BenchModel

PROFILE_FORMAT = 1
MAX_RUNS = 1000  # each profiled run writes trace events: more is a huge trace, no better figure
MAX_TOP = 1000


@dataclass(frozen=True, kw_only=True)
class ProfileConfig:
    variants: tuple[Variant, ...] = (Variant.FP32,)
    batch_sizes: tuple[int, ...] = (1,)
    provider: Provider = Provider.CPU
    threads: int | None = None
    cuda: CudaOptions = field(default_factory=CudaOptions)
    tensorrt: TensorRTOptions = field(default_factory=TensorRTOptions)
    runs: int = 10
    warmup: int = 3
    top: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.variants or not self.batch_sizes:
            raise ConfigError("profiling needs at least one variant and one batch size")
        if Variant.PREPROCESS in self.variants:
            raise ConfigError(
                "profile the fp32, fp16 or int8 graph; the preprocessing graph "
                "adds only its input conversion"
            )
        check_int(self.runs, "profiled runs", 1, MAX_RUNS)
        check_int(self.warmup, "profiling warm-up runs", 0, MAX_RUNS)
        check_int(self.top, "top nodes", 1, MAX_TOP)
        check_int(self.seed, "seed", 0, 2**32 - 1)


@dataclass(frozen=True)
class VariantProfile:
    variant: Variant
    profile: OrtProfile


@dataclass(frozen=True)
class ConvComparison:
    """One convolution class (``group=32 3x3``) in fp32 and int8 at one batch size."""

    conv_class: str
    batch_size: int
    fp32_ms: float
    int8_ms: float

    @property
    def int8_speedup(self) -> float:
        return self.fp32_ms / self.int8_ms if self.int8_ms else float("inf")


@dataclass(frozen=True)
class ProfileReport:
    model: str
    provider: str
    threads: int
    isa: CpuInfo
    profiles: tuple[VariantProfile, ...]
    top: int = 10
    comparisons: tuple[ConvComparison, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": PROFILE_FORMAT,
            "model": self.model,
            "provider": self.provider,
            "threads": self.threads,
            "cpu": self.isa.to_dict(),
            "profiles": [
                {"variant": p.variant.value}
                | p.profile.to_dict()
                | {"nodes": [_node(n) for n in p.profile.top(self.top)]}
                for p in self.profiles
            ],
            "int8_vs_fp32": [
                {
                    "conv_class": c.conv_class,
                    "batch_size": c.batch_size,
                    "fp32_ms": c.fp32_ms,
                    "int8_ms": c.int8_ms,
                    "int8_speedup": c.int8_speedup,
                }
                for c in self.comparisons
            ],
        }


def _node(node: Any) -> dict[str, Any]:
    return {
        "name": node.name,
        "op_type": node.op_type,
        "kind": node.kind,
        "provider": node.provider,
        "ms": node.ms,
    }


def compare_convs(fp32: OrtProfile, int8: OrtProfile) -> tuple[ConvComparison, ...]:
    """fp32 vs int8 milliseconds per convolution class present in both profiles."""
    a, b = fp32.conv_ms(), int8.conv_ms()
    return tuple(
        ConvComparison(cls, fp32.batch_size, a[cls], b[cls]) for cls in sorted(a) if cls in b
    )


def profile_files(
    files: dict[Variant, Path], input_size: int, config: ProfileConfig, model: str
) -> ProfileReport:
    """Profile each ONNX file at each batch size on seeded standard-normal input (on TensorRT
    with an engine built for that batch size, as ``bench`` measures it)."""
    session = SessionConfig(
        provider=config.provider,
        intra_op_threads=config.threads,
        cuda=config.cuda,
        tensorrt=config.tensorrt,
    )
    rng = np.random.default_rng(config.seed)
    profiles = []
    comparisons: list[ConvComparison] = []
    for batch_size in config.batch_sizes:
        batch = rng.standard_normal((batch_size, 3, input_size, input_size), dtype=np.float32)
        sized = replace(session, tensorrt=config.tensorrt.for_batch(batch_size))
        by_variant = {}
        for variant, path in files.items():
            result = profile_model(path, batch, sized, config.runs, config.warmup)
            by_variant[variant] = result
            profiles.append(VariantProfile(variant, result))
        if Variant.FP32 in by_variant and Variant.INT8 in by_variant:
            comparisons += compare_convs(by_variant[Variant.FP32], by_variant[Variant.INT8])
    return ProfileReport(
        model,
        config.provider.value,
        session.threads(),
        cpu_info(),
        tuple(profiles),
        config.top,
        tuple(comparisons),
    )


def profile_source(source: BenchModel, config: ProfileConfig) -> ProfileReport:
    """Profile the ONNX files ``bench`` measured (``source``: an export folder, or the one a
    name was exported to). Raises :class:`~resnext_deploy.errors.ArtifactError` for a variant
    the export does not hold."""
    files = source.files(config.variants)
    return profile_files(files, source.spec.input_size, config, source.name)


def write_profile(report: ProfileReport, out_dir: Path, stem: str) -> dict[str, Path]:
    """``<stem>-profile.json`` and ``<stem>-profile.md`` in ``out_dir``; raises
    :class:`ConfigError` for a ``stem`` that is a path."""
    from resnext_deploy.fileio import atomic_write_text

    check_name(stem, "report name")
    out_dir.mkdir(parents=True, exist_ok=True)
    data = report.to_dict()
    json_path = atomic_write_text(out_dir / f"{stem}-profile.json", json.dumps(data, indent=2))
    md_path = atomic_write_text(out_dir / f"{stem}-profile.md", profile_markdown(report))
    return {"json": json_path, "markdown": md_path}


def profile_markdown(report: ProfileReport) -> str:
    lines = [
        f"# onnxruntime profile: {report.model}",
        "",
        f"{report.provider} provider, {report.threads} threads, CPU {report.isa.model} "
        f"({report.isa.summary}). Times per inference call, averaged over the profiled runs.",
    ]
    for p in report.profiles:
        prof = p.profile
        lines += [
            "",
            f"## {p.variant.value}, batch {prof.batch_size}: {prof.run_ms:.2f} ms per run "
            f"({prof.node_ms:.2f} ms in nodes)",
            "",
            "| kind | nodes | ms | share |",
            "| --- | ---: | ---: | ---: |",
        ]
        lines += [f"| {k.kind} | {k.nodes} | {k.ms:.2f} | {k.share:.1%} |" for k in prof.kinds]
        lines += ["", "| top node | kind | ms |", "| --- | --- | ---: |"]
        lines += [f"| {n.name} | {n.kind} | {n.ms:.2f} |" for n in prof.top(report.top)]
        if prof.unmapped:
            lines += [
                "",
                f"Not mapped to ONNX nodes ({len(prof.unmapped)}; TensorRT engines hide their "
                "layers, and onnxruntime cannot save a graph with compiled nodes): "
                + ", ".join(prof.unmapped[:10])
                + (" ..." if len(prof.unmapped) > 10 else ""),
            ]
    if report.comparisons:
        lines += [
            "",
            "## Convolutions, int8 vs fp32",
            "",
            "| class | batch | fp32 ms | int8 ms | int8 speed-up |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        lines += [
            f"| {c.conv_class} | {c.batch_size} | {c.fp32_ms:.2f} | {c.int8_ms:.2f} | "
            f"{c.int8_speedup:.2f}x |"
            for c in report.comparisons
        ]
    return "\n".join(lines) + "\n"
