"""--tune on TensorRT varies TensorRT's own options, one at a time, so every variant is another
engine; CUDA-provider variants, which do not reach nodes inside a TensorRT engine, are refused
there. On CUDA, the CUDA options are still the ones tuned."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from resnext_deploy.bench import backends
from resnext_deploy.bench.backends import BackendContext, BenchBackend, tuning_factories
from resnext_deploy.bench.harness import tensorrt_tuning_variants, tuning_variants
from resnext_deploy.bench.run import BenchConfig, backend_factories
from resnext_deploy.doctor.smoke import tiny_resnext_onnx
from resnext_deploy.errors import ConfigError
from resnext_deploy.runtime.providers import (
    CudaOptions,
    Provider,
    SessionConfig,
    TensorRTOptions,
)
from resnext_deploy.runtime.tensorrt import resolve_engine

TRT = "TensorrtExecutionProvider"


def built_configs(monkeypatch: pytest.MonkeyPatch) -> dict[str, SessionConfig]:
    """Backend name -> the session config its runner is built with (no session is created)."""
    built: dict[str, SessionConfig] = {}

    def capture(path: Path, config: SessionConfig, name: str) -> Any:
        built[name] = config
        return None

    monkeypatch.setattr(backends, "_ort", capture)
    return built


def test_tensorrt_tune_varies_tensorrt_options_one_at_a_time(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "model.onnx").write_bytes(tiny_resnext_onnx())
    built = built_configs(monkeypatch)
    config = BenchConfig(
        backends=(BenchBackend.ONNXRUNTIME,), provider=Provider.TENSORRT, tune=True
    )
    ctx = BackendContext(
        model=None,
        export_dir=tmp_path,
        provider=Provider.TENSORRT,
        tensorrt=TensorRTOptions(batch_sizes=(1, 8), cache_dir=str(tmp_path / "trt")),
    )
    specs = backend_factories(config, ctx)
    for spec in specs:
        spec.runner_for(8)
    names = [s.name for s in specs]
    assert names[0] == "onnxruntime-tensorrt" and len(names) == 5
    assert all(n.startswith("onnxruntime-tensorrt[") for n in names[1:])
    base = built.pop("onnxruntime-tensorrt")

    def trt_options(config: SessionConfig) -> dict[str, str]:
        (name, options), *_ = config.providers()
        assert name == TRT
        return dict(options)

    for name, variant in built.items():
        assert variant.cuda == base.cuda, name  # CUDA's options cannot change TensorRT's engine
        changed = {k for k, v in trt_options(variant).items() if trt_options(base).get(k) != v}
        assert len(changed) == 1, (name, changed)
    assert {n.split("[")[1] for n in built} == {
        "fp16=1]",
        "opt_level=5]",
        "cuda_graph=1]",
        "aux_streams=0]",
    }
    # each variant but the CUDA graph (a replay of the same engine) builds an engine of its own
    keys = {
        name: resolve_engine(tmp_path / "model.onnx", c.tensorrt).key for name, c in built.items()
    }
    baseline = resolve_engine(tmp_path / "model.onnx", base.tensorrt).key
    assert keys.pop("onnxruntime-tensorrt[cuda_graph=1]") == baseline
    assert len({baseline, *keys.values()}) == 4


def test_cuda_variants_are_refused_on_tensorrt(tmp_path: Path) -> None:
    ctx = BackendContext(model=None, export_dir=tmp_path, provider=Provider.TENSORRT)
    with pytest.raises(ConfigError, match="TensorRT's options"):
        tuning_factories(ctx, tuning_variants(CudaOptions()))
    cuda = BackendContext(model=None, export_dir=tmp_path, provider=Provider.CUDA)
    with pytest.raises(ConfigError):
        tuning_factories(cuda, tensorrt_tuning_variants(TensorRTOptions()))


def test_cuda_tune_still_varies_cuda_options(tmp_path: Path) -> None:
    variants = tuning_variants(CudaOptions())
    variants.pop("baseline")
    cuda = BackendContext(model=None, export_dir=tmp_path, provider=Provider.CUDA)
    names = [s.name for s in tuning_factories(cuda, variants)]
    assert "onnxruntime-cuda[cuda_graph=1]" in names and len(names) == len(variants)


def test_tensorrt_variants_flip_what_the_baseline_has() -> None:
    base = TensorRTOptions(fp16=True, builder_optimization_level=5, cuda_graph=True)
    variants = tensorrt_tuning_variants(base)
    assert set(variants) == {"baseline", "fp16=0", "opt_level=3", "cuda_graph=0", "aux_streams=0"}
    for label, options in variants.items():
        differing = [k for k, v in options.to_ort(0).items() if base.to_ort(0)[k] != v]
        assert len(differing) == (0 if label == "baseline" else 1), label


def test_progress_total_counts_each_providers_own_tuning_variants() -> None:
    """The progress bar's total comes from the config: TensorRT tunes four knobs of its own, the
    CUDA provider five options (the CLI used to assume five everywhere)."""
    two = (1, 8)
    cuda = BenchConfig(provider=Provider.CUDA, tune=True, batch_sizes=two)
    trt = BenchConfig(provider=Provider.TENSORRT, tune=True, batch_sizes=two)
    assert cuda.planned_measurements() == 2 * (len(cuda.backends) + 5)
    assert trt.planned_measurements() == 2 * (len(trt.backends) + 4)
    assert BenchConfig(batch_sizes=two).planned_measurements() == 2 * len(cuda.backends)
