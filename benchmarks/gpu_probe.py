"""One-shot probe of onnxruntime's CUDA path on one ONNX file, independent of the bench harness:
provider options stick, nodes per provider, IO binding equals a plain CPU session, a CUDA graph
replay sees an in-place input update, and what a plain ``run()`` does on a graph session.

    python benchmarks/gpu_probe.py exported/model/model.onnx [cuda|cpu]

Prints one JSON object. On ``cpu`` the CUDA-only checks are left out (the suite runs it so).
"""

from __future__ import annotations

import collections
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from resnext_deploy.runtime.providers import (  # noqa: E402
    CudaOptions,
    Provider,
    SessionConfig,
    create_session,
)


def probe(path: str, device: str) -> dict[str, Any]:
    prov = Provider.CPU if device == "cpu" else Provider.CUDA
    cpu = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    meta = cpu.get_inputs()[0]
    size = meta.shape[-1]
    x = np.random.default_rng(0).standard_normal((8, 3, size, size), dtype=np.float32)
    inp, out = meta.name, cpu.get_outputs()[0].name
    ref = cpu.run([out], {inp: x})[0]
    found: dict[str, Any] = {"model": path, "device": device, "input": [8, 3, size, size]}
    tried = (
        CudaOptions(),
        CudaOptions(use_tf32=False, prefer_nhwc=True, cudnn_conv_algo_search="HEURISTIC"),
    )
    for i, opts in enumerate(tried):
        s = create_session(path, SessionConfig(provider=prov, cuda=opts))
        effective = s.get_provider_options().get("CUDAExecutionProvider", {})
        asked = opts.to_ort()
        found[f"options_{i}"] = {
            "providers": s.get_providers(),
            "stuck": all(str(effective.get(k)) == str(v) for k, v in asked.items())
            if effective
            else None,
            "effective": {k: effective.get(k) for k in asked},
        }
    so = SessionConfig(provider=prov).session_options()
    so.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
    s = ort.InferenceSession(path, so, providers=SessionConfig(provider=prov).providers())
    found["nodes_per_ep"] = dict(
        collections.Counter(
            sg.ep_name for sg in s.get_provider_graph_assignment_info() for _ in sg.get_nodes()
        )
    )
    b = s.io_binding()
    b.bind_ortvalue_input(inp, ort.OrtValue.ortvalue_from_numpy(x, device, 0))
    b.bind_output(out, device, 0)
    b.synchronize_inputs()
    s.run_with_iobinding(b)
    p1 = b.get_outputs()[0].data_ptr()
    s.run_with_iobinding(b)
    b.synchronize_outputs()
    y = b.copy_outputs_to_cpu()[0]
    found["iobinding"] = {
        "max_abs_diff_vs_cpu": float(np.abs(y - ref).max()),
        "max_abs_ref": float(np.abs(ref).max()),
        "same_output_buffer": p1 == b.get_outputs()[0].data_ptr(),
    }
    if device == "cuda":
        found["cuda_graph"] = _graph(path, prov, x, inp, out, cpu)
    return found


def _graph(path: str, prov: Provider, x: np.ndarray, inp: str, out: str, cpu: Any) -> dict:
    g = create_session(path, SessionConfig(provider=prov, cuda=CudaOptions(enable_cuda_graph=True)))
    xv = ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0)
    gb = g.io_binding()
    gb.bind_ortvalue_input(inp, xv)
    gb.bind_output(out, "cuda", 0)
    for _ in range(3):
        g.run_with_iobinding(gb)
    x2 = -x
    xv.update_inplace(x2)
    g.run_with_iobinding(gb)
    want = cpu.run([out], {inp: x2})[0]
    got = gb.copy_outputs_to_cpu()[0]
    result: dict[str, Any] = {
        "replay_sees_new_input": bool(np.allclose(got, want, atol=1e-3)),
        "max_abs_diff": float(np.abs(got - want).max()),
    }
    try:
        r = g.run([out], {inp: x})
        result["plain_run"] = f"returned {type(r).__name__} of {len(r)}"
    except Exception as exc:  # noqa: BLE001 - what onnxruntime does is the finding
        result["plain_run"] = f"raised {type(exc).__name__}: {str(exc)[:200]}"
    return result


if __name__ == "__main__":
    print(json.dumps(probe(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "cuda"), indent=1))
