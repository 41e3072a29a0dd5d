"""The memory-bound floor of a ResNeXt on a GPU, and how close measured results come to it.

    python benchmarks/memory_floor.py [--arch resnext50_32x4d] [--bandwidth-tbs 4.8]
        [--bench benchmarks/results/gpu-h200-resnext50_32x4d-best.json] [--out FILE]

The least DRAM traffic one image needs, with every BatchNorm folded and every ReLU and residual
add fused into a convolution's epilogue: the input read once, every convolution's and pooling's
output written once and read once by its consumer, each block's output read once more by the
residual add, and the weights read once per batch. At batch b that is
``activations + weights / b`` bytes per image; dividing the GPU's DRAM bandwidth by it gives the
images/s no engine can beat. (Caches can only lower the traffic for tensors that fit in L2,
50 MB on an H200: at batch 256 the activations do not.) The default bandwidth is the H200's
4.8 TB/s (NVIDIA's data sheet).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def traffic(arch: str) -> dict[str, float]:
    """Elements one image moves through DRAM at the least, and the weights' element count."""
    import torch

    from resnext_deploy.models.registry import ARCHS, build_model

    cfg = ARCHS.get(arch)
    model = build_model(cfg, 1000).eval()
    outputs: list[int] = []
    blocks: list[int] = []
    kinds = (torch.nn.Conv2d, torch.nn.MaxPool2d, torch.nn.AdaptiveAvgPool2d, torch.nn.Linear)
    for module in model.modules():
        if isinstance(module, kinds):
            module.register_forward_hook(lambda m, i, o: outputs.append(o.numel()))
        elif hasattr(module, "conv1") and hasattr(module, "conv3"):  # a bottleneck block
            module.register_forward_hook(lambda m, i, o: blocks.append(o.numel()))
    size = cfg.input_size
    with torch.inference_mode():
        model(torch.zeros(1, 3, size, size))
    return {
        "input": 3 * size * size,
        "outputs": float(sum(outputs)),
        "block_outputs": float(sum(blocks)),
        "weights": float(sum(p.numel() for p in model.parameters())),
    }


def floor(elements: dict[str, float], bytes_per: int, batch: int, bandwidth: float) -> float:
    per_image = elements["input"] + 2 * elements["outputs"] + elements["block_outputs"]
    per_image_bytes = per_image * bytes_per + elements["weights"] * bytes_per / batch
    return bandwidth / per_image_bytes


def measured(bench: Path) -> dict[str, dict[int, float]]:
    data = json.loads(bench.read_text())
    rows: dict[str, dict[int, float]] = {}
    for r in data["results"]:
        if r.get("stats"):
            rows.setdefault(r["backend"], {})[r["batch_size"]] = r["stats"]["images_per_s"]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnext50_32x4d")
    parser.add_argument("--bandwidth-tbs", type=float, default=4.8)
    parser.add_argument("--bench", type=Path, action="append", default=[])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    bandwidth = args.bandwidth_tbs * 1e12
    elements = traffic(args.arch)
    result: dict[str, Any] = {
        "arch": args.arch,
        "bandwidth_tb_s": args.bandwidth_tbs,
        "elements_per_image": elements,
        "floor_images_per_s": {
            dtype: {b: floor(elements, size, b, bandwidth) for b in (1, 8, 64, 256)}
            for dtype, size in (("fp16", 2), ("fp32", 4))
        },
        "measured": {},
    }
    for bench in args.bench:
        for backend, by_batch in measured(bench).items():
            dtype = "fp32" if backend in ("onnxruntime-cuda", "torch-eager") else "fp16"
            result["measured"][backend] = {
                b: {
                    "images_per_s": ips,
                    "share_of_fp16_floor": ips / result["floor_images_per_s"]["fp16"][b],
                    f"share_of_{dtype}_floor": ips
                    / floor(elements, 2 if dtype == "fp16" else 4, b, bandwidth),
                }
                for b, ips in by_batch.items()
                if b in (1, 8, 64, 256)
            }
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
