"""Summarise the headline CPU run: ratios to eager, the grouped-conv tax, and the targets.

Usage: python benchmarks/headline.py RESNEXT.json RESNET.json --out cpu-headline.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

from resnext_deploy.bench.report import BenchReport, load_report

# OpenVINO is a deployment engine (``--engine openvino``): its row, openvino-cpu, is deployed.
# Reports written before it was one name the same row openvino-f32, a peer then.
DEPLOYED = ("torchscript", "torchscript-optimized", "onnxruntime-cpu", "openvino-cpu")
PEERS = ("torch-compile", "openvino-f32", "openvino-default")


def p50(report: BenchReport, backend: str, batch: int) -> float | None:
    for m in report.rows(backend):
        if m.backend == backend and m.batch_size == batch and m.stats:
            return m.stats.p50_ms
    return None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("resnext", type=Path)
    parser.add_argument("resnet", type=Path)
    parser.add_argument("--int8", type=Path, help="bench report with onnxruntime and -int8")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    rx = load_report(args.resnext)
    rn = load_report(args.resnet)
    backends = rx.backend_names()
    env = rx.environment
    lines = [
        "# Headline CPU comparison: ResNeXt-50 32x4d vs ResNet-50, 224x224",
        "",
        f"Machine: {env['cpu']}, {env['cpu_count']} cores, {rx.threads} threads, no GPU; "
        f"{env['date']}. Versions: "
        + ", ".join(f"{k} {v}" for k, v in env["versions"].items())
        + ".",
        "",
        "Command: `benchmarks/cpu_headline.sh` (one `resnext-deploy bench` per model, all "
        "backends interleaved per batch size; figures are medians of >= 15 calls and >= 3 s).",
        "Figures on this machine move by +-30% from run to run; compare within a run.",
        "",
        "| backend | rx50 b1 ms | x eager | rx50 b8 ms | x eager | rn50 b1 ms "
        "| grouped-conv tax b1 |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for b in backends:
        r1, r8, n1 = p50(rx, b, 1), p50(rx, b, 8), p50(rn, b, 1)
        e1, e8 = p50(rx, "torch-eager", 1), p50(rx, "torch-eager", 8)

        def fmt(v: float | None) -> str:
            return f"{v:.1f}" if v else "-"

        def ratio(a: float | None, b_: float | None) -> str:
            return f"{a / b_:.2f}" if a and b_ else "-"

        lines.append(
            f"| {b} | {fmt(r1)} | {ratio(e1, r1)} | {fmt(r8)} | {ratio(e8, r8)} | "
            f"{fmt(n1)} | {ratio(r1, n1)} |"
        )
    lines += [
        "",
        "x eager = eager p50 / backend p50 (higher is faster). Grouped-conv tax = "
        "ResNeXt-50 latency / ResNet-50 latency on the same backend (same FLOPs).",
        "",
    ]

    eager1 = p50(rx, "torch-eager", 1)
    deployed = {b: p50(rx, b, 1) for b in DEPLOYED if p50(rx, b, 1)}
    peers = {b: p50(rx, b, 1) for b in PEERS if p50(rx, b, 1)}
    best_dep = min(deployed, key=deployed.get)
    best_ts = min((b for b in deployed if b.startswith("torchscript")), key=deployed.get)
    checks = [
        (
            f"fastest deployed path ({best_dep}) >= 1.8x eager at batch 1",
            eager1 / deployed[best_dep],
            eager1 / deployed[best_dep] >= 1.8,
        ),
        (
            f"best TorchScript path ({best_ts}) >= 1.3x eager",
            eager1 / deployed[best_ts],
            eager1 / deployed[best_ts] >= 1.3,
        ),
    ]
    if peers:
        best_peer = min(peers, key=peers.get)
        checks.append(
            (
                f"fastest deployed path no slower than the fastest peer ({best_peer})",
                peers[best_peer] / deployed[best_dep],
                deployed[best_dep] <= peers[best_peer],
            )
        )
    o = rx.overhead
    if o:
        checks.append(
            (
                f"harness overhead < 2% ({o.cost_us:.1f} us per call; paired check "
                f"{o.paired_pct:+.1f}%, within noise)",
                o.overhead_pct,
                o.overhead_pct < 2.0,
            )
        )
    if args.int8:
        q = load_report(args.int8)
        fp32_name = next(b for b in q.backend_names() if b == "onnxruntime-cpu")
        int8_name = next(b for b in q.backend_names() if b.endswith("-int8"))
        lines += [
            "## int8 vs fp32 onnxruntime (same run)",
            "",
            "| batch | eager ms | fp32 ms | int8 ms | int8 speed-up vs fp32 |",
            "| ---: | ---: | ---: | ---: | ---: |",
        ]
        for b in q.batch_sizes:
            e, f32, i8 = p50(q, "torch-eager", b), p50(q, fp32_name, b), p50(q, int8_name, b)
            if f32 and i8:
                lines.append(f"| {b} | {e:.1f} | {f32:.1f} | {i8:.1f} | {f32 / i8:.2f} |")
        b1 = (p50(q, fp32_name, 1) or 0) / (p50(q, int8_name, 1) or float("inf"))
        checks.append(("int8 >= 2x faster than fp32 onnxruntime at batch 1", b1, b1 >= 2.0))
        lines += ["", f"Command: `{q.command}`", ""]
    lines += ["## Targets", "", "| target | measured | met |", "| --- | ---: | --- |"]
    for label, value, ok in checks:
        lines.append(f"| {label} | {value:.4f} | {'yes' if ok else 'NO'} |")
    f = rx.compute_floor
    if f:
        lines += [
            "",
            f"Compute floor: {f.gflop_per_image:.2f} GFLOP per image at "
            f"{f.peak_gflops:.0f} GFLOP/s (larger of nominal {f.peak_gflops_nominal:.0f}: "
            f"{f.nominal_basis}, and a measured MatMul {f.peak_gflops_matmul:.0f}; on "
            f"{rx.threads} threads) = {f.floor_ms_per_image:.1f} ms. The best batch-1 "
            f"path takes {f.best_batch1_ms:.1f} ms ({f.efficiency_batch1:.0%} of the "
            f"floor); the best per-image time over batch sizes is "
            f"{f.best_ms_per_image:.1f} ms ({f.efficiency_best:.0%}).",
        ]
    lines += [
        "",
        "Full tables and plots: [cpu-resnext50_32x4d.md](cpu-resnext50_32x4d.md), "
        "[cpu-resnet50.md](cpu-resnet50.md).",
        "",
        "![resnext50_32x4d](cpu-resnext50_32x4d.png)",
        "",
    ]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
