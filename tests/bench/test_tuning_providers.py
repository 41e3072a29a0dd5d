"""--tune on TensorRT: variants are named after TensorRT and leave out the CUDA-graph one, which
a TensorRT session refuses."""

from __future__ import annotations

from pathlib import Path

from resnext_deploy.bench.backends import BackendContext, tuning_specs
from resnext_deploy.bench.harness import tuning_variants
from resnext_deploy.runtime.providers import CudaOptions, Provider


def test_tensorrt_tuning_is_named_for_tensorrt_without_cuda_graphs(tmp_path: Path) -> None:
    variants = tuning_variants(CudaOptions())
    ctx = BackendContext(model=None, export_dir=tmp_path, provider=Provider.TENSORRT)
    names = [spec.name for spec in tuning_specs(ctx, variants)]
    assert names and all(n.startswith("onnxruntime-tensorrt[") for n in names)
    assert "onnxruntime-tensorrt[cuda_graph=1]" not in names
    assert len(names) == len(variants) - 1
    cuda = BackendContext(model=None, export_dir=tmp_path, provider=Provider.CUDA)
    assert "onnxruntime-cuda[cuda_graph=1]" in [s.name for s in tuning_specs(cuda, variants)]
