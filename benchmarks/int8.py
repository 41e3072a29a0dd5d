"""int8 against fp32 onnxruntime, side by side in one run, and int8 accuracy on the demo model.

    .venv/bin/python benchmarks/int8.py            # ~10 minutes on 2 cores; run on an idle machine

1. ResNeXt-50 32x4d with random weights (speed does not depend on them; nothing is downloaded),
   exported with ``--precision int8`` as the CLI does it (calibrated on the bundled digits upscaled
   to 224 px; the accuracy gate is off because top-1 agreement means nothing on random weights).
   Timed with onnxruntime's CPU provider at batch 1 and 8: fp32, the exported int8 (fp32 layers
   chosen by measured speed), and, for reference, int8 with every convolution quantized. The
   models take turns in short blocks (the machine is shared); each figure is the median over
   rounds of per-round medians, and each ratio the median of the per-round ratios.
2. A profile of fp32 and the exported int8 at batch 1 (time per convolution class).
3. resnext11_mini trained on the digits as ``make demo`` trains it (10 epochs, 16 px), exported
   with int8 at the default gate (99%); top-1 agreement with fp32 on the held-out digits,
   recomputed here with plain onnxruntime from the two files.

Writes benchmarks/results/cpu-int8.{json,csv,md,png}.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RX50 = "resnext50_32x4d"
BLOCK = {1: 10, 8: 3}  # timed calls per turn
BLOCKS = 4  # turns per model, per round and batch size
SETTLE = 2  # untimed calls at the start of each turn


def export_rx50(work: Path) -> tuple[Path, Any, Any]:
    import torch

    from resnext_deploy.artifact import Precision
    from resnext_deploy.export.calibration import CalibrationConfig
    from resnext_deploy.export.pipeline import ExportConfig, export_model
    from resnext_deploy.models.registry import ARCHS, build_model
    from resnext_deploy.spec import ModelSpec
    from resnext_deploy.verify import VerifyConfig

    cfg = ARCHS.get(RX50)
    torch.manual_seed(0)
    model = build_model(cfg, 1000)
    spec = ModelSpec(RX50, 1000, cfg.input_size, cfg.input_size, arch_config=cfg.to_dict())
    out = work / "rx50"
    result = export_model(
        model,
        spec,
        ExportConfig(
            out_dir=out,
            overwrite=True,
            verify=VerifyConfig(batch_sizes=(1, 2), auto_cuda=False),
            precisions=(Precision.FP32, Precision.INT8),
            calibration=CalibrationConfig(source="digits", min_agreement=0.0, max_calibration=64),
        ),
    )
    return out, result, spec


def quantize_everything(fp32: Path, work: Path) -> Path:
    """The naive int8: every convolution quantized (the classifier stays fp32, as in the export)."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from resnext_deploy.export.calibration import (
        CalibrationConfig,
        CalibrationMethod,
        calibration_sets,
    )
    from resnext_deploy.export.quantize import calibrate, quantize
    from resnext_deploy.spec import ModelSpec

    prepared = work / "prepared.onnx"
    quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
    spec = ModelSpec(RX50, 1000, 224, 224)
    calibration, _ = calibration_sets(CalibrationConfig(source="digits", max_calibration=64), spec)
    ranges = calibrate(prepared, calibration, CalibrationMethod.MINMAX, work / "ranges.json")
    graph = onnx.load(str(prepared), load_external_data=False).graph
    classifier = [n.name for n in graph.node if n.op_type == "Gemm"]
    out = work / "int8-all.onnx"
    quantize(prepared, out, ranges, CalibrationMethod.MINMAX, classifier)
    return out


def time_interleaved(
    models: dict[str, Path], batch_sizes: tuple[int, ...], rounds: int, threads: int
) -> dict[str, Any]:
    """Per round and batch size, the models take turns in short blocks (``BLOCK[b]`` timed calls
    after ``SETTLE`` untimed ones, ``BLOCKS`` turns each), so that they share the machine's state
    (it is shared with other work) without timing one session while another's idle threads still
    spin. The round's figure per model is the median of its timed calls."""
    from resnext_deploy.runtime.ort import OrtRunner
    from resnext_deploy.runtime.providers import SessionConfig
    from resnext_deploy.timing import summarize as stats_of

    config = SessionConfig(intra_op_threads=threads)
    runners = {name: OrtRunner(path, config, name=name) for name, path in models.items()}
    rng = np.random.default_rng(0)
    batches = {b: rng.standard_normal((b, 3, 224, 224), dtype=np.float32) for b in batch_sizes}
    samples: dict[str, dict[int, list[float]]] = {n: {b: [] for b in batch_sizes} for n in models}
    for r in range(rounds):
        for b in batch_sizes:
            bound = {name: runner.bind(batches[b]) for name, runner in runners.items()}
            times: dict[str, list[float]] = {name: [] for name in runners}
            for _ in range(BLOCKS):
                for name, call in bound.items():
                    for _ in range(SETTLE):
                        call.run()
                    for _ in range(BLOCK.get(b, 5)):
                        t0 = time.perf_counter()
                        call.run()
                        runners[name].sync()
                        times[name].append(time.perf_counter() - t0)
            for name in runners:
                p50 = stats_of(times[name], b).p50_ms
                samples[name][b].append(p50)
                print(f"round {r + 1}/{rounds} batch {b} {name}: {p50:.1f} ms", flush=True)
    for runner in runners.values():
        runner.close()
    return samples


def summarize(samples: dict[str, dict[int, list[float]]], base: str) -> list[dict[str, Any]]:
    rows = []
    for name, by_batch in samples.items():
        for b, values in by_batch.items():
            ratios = [f / v for f, v in zip(samples[base][b], values, strict=True)]
            rows.append(
                {
                    "model": name,
                    "batch_size": b,
                    "median_ms": float(np.median(values)),
                    "rounds_ms": [round(v, 2) for v in values],
                    "speedup_vs_fp32": float(np.median(ratios)),
                    "speedup_rounds": [round(x, 3) for x in ratios],
                }
            )
    return rows


def profile_rx50(fp32: Path, int8: Path, threads: int) -> dict[str, Any]:
    from resnext_deploy.artifact import Variant
    from resnext_deploy.bench.profile import ProfileConfig, profile_files

    report = profile_files(
        {Variant.FP32: fp32, Variant.INT8: int8},
        224,
        ProfileConfig(variants=(Variant.FP32, Variant.INT8), threads=threads, runs=10),
        RX50,
    )
    return report.to_dict()


def digits_agreement(work: Path) -> dict[str, Any]:
    import onnxruntime as ort

    from resnext_deploy.artifact import ONNX_FILE, Precision, Variant
    from resnext_deploy.export.calibration import CalibrationConfig
    from resnext_deploy.export.pipeline import ExportConfig, export_checkpoint
    from resnext_deploy.models.checkpoint import LoadOptions
    from resnext_deploy.preprocess import normalize
    from resnext_deploy.train import TrainConfig, train

    trained = train(
        TrainConfig(
            data="digits",
            arch="resnext11_mini",
            out_dir=work / "train",
            epochs=10,
            input_size=16,
            lr=2e-3,
            overwrite=True,
        )
    )
    exported = export_checkpoint(
        trained.checkpoint,
        LoadOptions(),
        ExportConfig(
            out_dir=work / "digits",
            overwrite=True,
            precisions=(Precision.FP32, Precision.INT8),
            calibration=CalibrationConfig(source="digits"),
        ),
    )
    q = exported.int8
    assert q is not None
    val = trained.val_images
    batch = normalize(val.images, exported.spec)
    logits = []
    for path in (exported.out_dir / ONNX_FILE, exported.out_dir / Variant.INT8.file):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        logits.append(session.run(None, {"input": batch})[0])
    agree = int((logits[0].argmax(1) == logits[1].argmax(1)).sum())
    return {
        "arch": "resnext11_mini",
        "val_accuracy": trained.best_val_acc,
        "held_out_images": len(val),
        "agreeing": agree,
        "top1_agreement": agree / len(val),
        "reported_by_export": q.top1_agreement,
        "fp32_layers": [vars(layer) for layer in q.fp32_layers],
        "attempts": q.attempts,
    }


def wait_for_quiet(threshold: float, limit_s: float = 1200) -> float:
    """The machine is shared: wait until the 1-minute load average is below ``threshold``."""
    began = time.time()
    while os.getloadavg()[0] >= threshold and time.time() - began < limit_s:
        print(f"load {os.getloadavg()[0]:.2f} >= {threshold}: waiting", flush=True)
        time.sleep(30)
    return os.getloadavg()[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--name", default="cpu-int8")
    parser.add_argument("--skip-digits", action="store_true")
    parser.add_argument(
        "--work", type=Path, help="Keep exports here and reuse them on the next run (timing only)."
    )
    parser.add_argument(
        "--quiet-load",
        type=float,
        default=1.0,
        help="Before timing, wait (up to 20 min) for the 1-minute load average to fall below this.",
    )
    args = parser.parse_args()

    from resnext_deploy.environment import environment
    from resnext_deploy.machine.cpu import cpu_info

    started = time.time()
    command = "python benchmarks/int8.py " + " ".join(sys.argv[1:])
    with tempfile.TemporaryDirectory(prefix="int8-bench-") as tmp:
        work = args.work or Path(tmp)
        out = work / "rx50"
        saved = work / "rx50-int8.json"
        if args.work and saved.is_file() and (out / "manifest.json").is_file():
            q = json.loads(saved.read_text())
        else:
            print("exporting resnext50_32x4d with int8 ...", flush=True)
            exported = export_rx50(work)[1]
            q = exported.int8.to_dict() if exported.int8 else None
            saved.write_text(json.dumps(q, default=str))
        fp32, int8 = out / "model.onnx", out / "model.int8.onnx"
        naive = work / "int8-all.onnx"
        if not (args.work and naive.is_file()):
            naive = quantize_everything(fp32, work)
        models = {"fp32": fp32, "int8 (exported)": int8, "int8 (every conv)": naive}
        load_before = wait_for_quiet(args.quiet_load)
        samples = time_interleaved(models, (1, 8), args.rounds, args.threads)
        load_after = os.getloadavg()[0]
        profile = profile_rx50(fp32, int8, args.threads)
        digits = None
        if not args.skip_digits:
            kept = work / "digits.json"
            if args.work and kept.is_file():
                digits = json.loads(kept.read_text())
            else:
                digits = digits_agreement(work)
                kept.write_text(json.dumps(digits, default=str))
    data = {
        "command": command,
        "environment": environment(
            {
                "cpu_isa": cpu_info().to_dict(),
                "threads": args.threads,
                "load_average_1min": {"before_timing": load_before, "after_timing": load_after},
            }
        ),
        "seconds": round(time.time() - started),
        "resnext50": {
            "rows": summarize(samples, "fp32"),
            "int8_export": q,
            "profile_batch1": profile,
        },
        "digits": digits,
    }
    write(data, args.out, args.name)
    return 0


def write(data: dict[str, Any], out: Path, name: str) -> None:
    from resnext_deploy.fileio import atomic_write_text, save_figure

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / f"{name}.json", json.dumps(data, indent=2, default=str))
    rows = data["resnext50"]["rows"]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["model", "batch_size", "median_ms", "speedup_vs_fp32", "rounds_ms"])
    for r in rows:
        writer.writerow(
            [
                r["model"],
                r["batch_size"],
                f"{r['median_ms']:.2f}",
                f"{r['speedup_vs_fp32']:.3f}",
                " ".join(map(str, r["rounds_ms"])),
            ]
        )
    atomic_write_text(out / f"{name}.csv", buffer.getvalue())
    atomic_write_text(out / f"{name}.md", markdown(data))
    save_figure(figure(rows), out / f"{name}.png")


def figure(rows: list[dict[str, Any]]) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, b in zip(axes, (1, 8), strict=True):
        sel = [r for r in rows if r["batch_size"] == b]
        ax.bar(
            [r["model"] for r in sel], [r["median_ms"] for r in sel], color=["#888", "#2a7", "#c84"]
        )
        for i, r in enumerate(sel):
            ax.text(i, r["median_ms"], f"{r['speedup_vs_fp32']:.2f}x", ha="center", va="bottom")
        ax.set_title(f"{RX50}, batch {b}")
        ax.set_ylabel("median ms per call")
        ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    return fig


def markdown(data: dict[str, Any]) -> str:
    env = data["environment"]
    rx = data["resnext50"]
    q = rx["int8_export"] or {}
    lines = [
        "# int8 vs fp32 onnxruntime (CPU)",
        "",
        f"Command: `{data['command']}` ({data['seconds']} s). Machine: {env['cpu']} "
        f"({env['cpu_isa']['summary']}), {env['threads']} threads, onnxruntime "
        f"{env['versions'].get('onnxruntime-gpu') or env['versions'].get('onnxruntime')}, "
        f"{env['date']}.",
        "",
        f"## {RX50}, random weights, 224x224",
        "",
        "The models take turns in short blocks; median over rounds of per-round medians; ratio = "
        "median of the per-round fp32 / model ratios.",
        "",
        "| model | batch | median ms | x fp32 | rounds (ms) |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for r in sorted(rx["rows"], key=lambda r: (r["batch_size"], r["model"])):
        lines.append(
            f"| {r['model']} | {r['batch_size']} | {r['median_ms']:.1f} | "
            f"{r['speedup_vs_fp32']:.2f} | {', '.join(map(str, r['rounds_ms']))} |"
        )
    if q:
        lines += [
            "",
            f"Exported int8: {q['int8_convs']} convolutions run as int8 kernels, {q['fp32_convs']} "
            "in fp32 (read from onnxruntime's optimized graph). Layers kept in fp32:",
            "",
        ]
        lines += [f"- `{layer['module']}`: {layer['reason']}" for layer in q["fp32_layers"]]
        lines += [
            "",
            "Per convolution class, profiled during export (ms per call, batch 1 + 8):",
            "",
        ]
        lines += ["| class | nodes | fp32 ms | int8 ms |", "| --- | ---: | ---: | ---: |"]
        lines += [
            f"| {s['conv_class']} | {s['nodes']} | {s['fp32_ms']:.2f} | {s['int8_ms']:.2f} |"
            for s in q["class_speeds"]
        ]
        lines += ["", *[f"Warning from the export: {w}" for w in q["warnings"]]]
    prof = rx["profile_batch1"]
    lines += ["", "## Profile, batch 1 (time per op kind)", ""]
    for p in prof["profiles"]:
        lines += [f"**{p['variant']}**: {p['run_ms']:.1f} ms per run", ""]
        lines += ["| kind | nodes | ms | share |", "| --- | ---: | ---: | ---: |"]
        lines += [
            f"| {k['kind']} | {k['nodes']} | {k['ms']:.2f} | {k['share']:.1%} |"
            for k in p["kinds"][:10]
        ]
        lines.append("")
    load = env.get("load_average_1min", {})
    if load:
        lines.insert(
            4,
            f"1-minute load average {load['before_timing']:.2f} before timing, "
            f"{load['after_timing']:.2f} after (2 cores, shared with other work).",
        )
    d = data["digits"]
    if d:
        lines += [
            "## Demo model: int8 accuracy",
            "",
            f"{d['arch']} trained on the digits as `make demo` does (validation accuracy "
            f"{d['val_accuracy']:.2%}); int8 agrees with fp32 on {d['agreeing']} of "
            f"{d['held_out_images']} held-out digits (**{d['top1_agreement']:.2%}**, recomputed "
            f"from the two files; the export reported {d['reported_by_export']:.2%}).",
            "",
            "Layers kept in fp32: "
            + ", ".join(f"`{x['module']}` ({x['reason']})" for x in d["fp32_layers"]),
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
