"""A benchmark resolves its model once: the sweep and ``--profile`` time the same files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from resnext_deploy.artifact import Variant
from resnext_deploy.bench import profile as profile_module
from resnext_deploy.bench.backends import BenchBackend
from resnext_deploy.bench.profile import ProfileConfig, profile_files
from resnext_deploy.bench.run import BenchConfig, run_benchmark
from resnext_deploy.bench.source import bench_model
from resnext_deploy.errors import ConfigError
from resnext_deploy.export import onnx_export, pipeline
from resnext_deploy.runtime.providers import CudaOptions, Provider
from resnext_deploy.timing import Timing

QUICK = Timing(warmup=1, min_iters=2, min_time_s=0.0, max_time_s=5.0)


@pytest.fixture
def onnx_exports(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every ONNX file written by the exporter, wherever it is called from."""
    written: list[Path] = []
    real = onnx_export.export_onnx

    def counting(model: Any, example: Any, path: Path, *args: Any, **kwargs: Any) -> Any:
        written.append(Path(path))
        return real(model, example, path, *args, **kwargs)

    monkeypatch.setattr(onnx_export, "export_onnx", counting)
    monkeypatch.setattr(pipeline, "export_onnx", counting)
    return written


def test_a_name_is_exported_once_and_profiled_from_that_export(
    onnx_exports: list[Path], tmp_path: Path
) -> None:
    config = BenchConfig(
        backends=(BenchBackend.ONNXRUNTIME,),
        batch_sizes=(1,),
        threads=1,
        timing=QUICK,
        measure_overhead=False,
        profile=True,
        out_dir=tmp_path,
        name="mini",
    )
    run = run_benchmark("resnext11_mini", config)
    assert len(onnx_exports) == 1  # the sweep's export; the profile did not export again
    assert run.report.arch == "resnext11_mini" and run.profile is not None
    (profiled,) = run.profile.profiles
    assert profiled.variant is Variant.FP32
    # the file the sweep timed: written in a staging folder of the bench's temporary folder
    assert Path(profiled.profile.model).parent.parent == onnx_exports[0].parent.parent
    names = sorted(p.name for p in tmp_path.iterdir())
    assert "mini.json" in names and "mini-profile.json" in names
    assert run.files["json"] == tmp_path / "mini.json"


def test_an_export_folder_is_opened_with_its_hashes_checked(tiny_export: Path) -> None:
    with bench_model(str(tiny_export)) as source:
        assert source.export_dir == tiny_export and source.spec.arch
        files = source.files((Variant.FP32,))
    assert files == {Variant.FP32: tiny_export / Variant.FP32.file}


def test_an_int8_backend_on_a_name_is_refused_before_any_export(
    onnx_exports: list[Path],
) -> None:
    with pytest.raises(ConfigError, match="calibrated on images"):
        with bench_model("resnext11_mini", variants=(Variant.FP32, Variant.INT8)):
            pass
    assert onnx_exports == []


def test_profiling_runs_on_the_bench_options_with_the_cuda_graph_off() -> None:
    options = CudaOptions(prefer_nhwc=True, enable_cuda_graph=True, use_tf32=False)
    config = BenchConfig(
        provider=Provider.CUDA,
        backends=(BenchBackend.ONNXRUNTIME_FP16, BenchBackend.EAGER),
        batch_sizes=(1, 8),
        cuda=options,
        profile=True,
    )
    profiled = config.profile_config()
    assert profiled.variants == (Variant.FP16,) and profiled.batch_sizes == (1, 8)
    assert profiled.cuda.prefer_nhwc and not profiled.cuda.use_tf32
    assert not profiled.cuda.enable_cuda_graph  # a replay has no per-node events


def test_the_profile_session_gets_the_cuda_options(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []

    def fake_profile(path: Path, batch: np.ndarray, session: Any, runs: int, warmup: int) -> Any:
        seen.append(session)
        raise RuntimeError("stop here")

    monkeypatch.setattr(profile_module, "profile_model", fake_profile)
    config = ProfileConfig(provider=Provider.CUDA, cuda=CudaOptions(prefer_nhwc=True))
    with pytest.raises(RuntimeError, match="stop here"):
        profile_files({Variant.FP32: Path("model.onnx")}, 8, config, "m")
    assert seen[0].provider is Provider.CUDA and seen[0].cuda.prefer_nhwc
