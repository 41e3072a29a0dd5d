"""Where the GPU time goes, kernel by kernel: onnxruntime's CUDA fp16 session against
torch.compile AMP on the same export, at one batch size.

    python benchmarks/gpu_kernels.py EXPORT_DIR [--batch-size 256] [--out kernels.json]

onnxruntime's own profiler times CUDA nodes on the host (their launches, not the kernels). CUPTI,
through ``torch.profiler`` with CUDA activity, records every kernel the process runs, whoever
launched it, so both engines are measured by one independent clock. Kernels are grouped by what
their names say they are (convolution, layout transpose, elementwise/fused epilogue, pooling,
GEMM, copies); the top kernels are listed by name.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RUNS = 10
CLASSES = (
    ("convolution", ("conv", "xmma", "implicit", "fprop", "cutlass", "wgrad", "dgrad", "sm90")),
    ("layout transpose", ("transpose", "nchw", "nhwc", "permute", "tensor_layout")),
    ("pooling", ("pool",)),
    ("gemm", ("gemm", "gemv", "matmul")),
    ("copy / cast", ("copy", "cast", "memcpy", "memset")),
)


def kind(name: str) -> str:
    low = name.lower()
    if low.startswith("triton_"):  # inductor's generated kernels: "triton_poi_fused_add_relu_5"
        return "inductor fused (triton)"
    for label, keys in CLASSES:
        if any(k in low for k in keys):
            return label
    return "elementwise / other"


def profile_call(run: Any, sync: Any) -> dict[str, Any]:
    """CUDA kernel time per kind and the top kernels for ``RUNS`` calls of ``run``."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    for _ in range(5):
        run()
    sync()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(RUNS):
            run()
        sync()
        torch.cuda.synchronize()
    kernels: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(trace))
        events = json.loads(trace.read_text())
    for event in events.get("traceEvents", events) if isinstance(events, dict) else events:
        if event.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset") and "dur" in event:
            kernels.setdefault(event["name"], []).append(float(event["dur"]) / 1e3)  # us -> ms
    total = sum(sum(v) for v in kernels.values()) / RUNS
    by_kind: dict[str, float] = {}
    for name, times in kernels.items():
        by_kind[kind(name)] = by_kind.get(kind(name), 0.0) + sum(times) / RUNS
    top = sorted(kernels.items(), key=lambda kv: -sum(kv[1]))[:15]
    return {
        "kernel_ms_per_call": total,
        "kernels_per_call": sum(len(v) for v in kernels.values()) / RUNS,
        "by_kind_ms": dict(sorted(by_kind.items(), key=lambda kv: -kv[1])),
        "top": [
            {
                "name": n[:160],
                "kind": kind(n),
                "ms_per_call": sum(t) / RUNS,
                "calls_per_run": len(t) / RUNS,
            }
            for n, t in top
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export", type=Path)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--out", type=Path, default=Path("kernels.json"))
    args = parser.parse_args()

    import torch

    from resnext_deploy.artifact import WEIGHTS_FILE, Variant, open_artifact
    from resnext_deploy.models.checkpoint import read_checkpoint
    from resnext_deploy.models.registry import build_model
    from resnext_deploy.runtime.ort import OrtRunner
    from resnext_deploy.runtime.providers import CudaOptions, Provider, SessionConfig
    from resnext_deploy.runtime.torch_runners import CompileRunner

    artifact = open_artifact(args.export)
    spec = artifact.spec
    size = spec.input_size
    batch = np.random.default_rng(0).standard_normal(
        (args.batch_size, 3, size, size), dtype=np.float32
    )
    found: dict[str, Any] = {
        "export": str(args.export),
        "batch_size": args.batch_size,
        "gpu": torch.cuda.get_device_name(0),
        "runs": RUNS,
    }
    config = SessionConfig(provider=Provider.CUDA, cuda=CudaOptions(prefer_nhwc=True))
    for label, file in (
        ("onnxruntime-cuda-fp16 (prefer_nhwc)", Variant.FP16.file),
        ("onnxruntime-cuda (prefer_nhwc)", Variant.FP32.file),
    ):
        with OrtRunner(artifact.file(file), config) as runner:
            bound = runner.bind(batch)
            found[label] = profile_call(bound.run, runner.sync)
        print(label, json.dumps(found[label]["by_kind_ms"]), flush=True)
    model = build_model(spec.architecture(), spec.num_classes)
    model.load_state_dict(read_checkpoint(artifact.file(WEIGHTS_FILE)).state_dict)
    with CompileRunner(model.eval(), device="cuda", amp=True, mode="default") as runner:
        bound = runner.bind(batch)
        found["torch-compile-amp (default mode)"] = profile_call(bound.run, runner.sync)
    print("torch-compile-amp", json.dumps(found["torch-compile-amp (default mode)"]["by_kind_ms"]))
    args.out.write_text(json.dumps(found, indent=1))


if __name__ == "__main__":
    main()
