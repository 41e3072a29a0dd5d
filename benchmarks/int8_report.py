"""The result files of benchmarks/int8.py: which paths it times, the issue's targets, and the
JSON, CSV, Markdown and figure it writes (split from the measuring half, which imports this)."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BATCH_SIZES = (1, 8)
RX50 = "resnext50_32x4d"
CALIBRATION_IMAGES = 64  # what the export calibrates the random-weight model on

ORT, OPENVINO = "onnxruntime", "OpenVINO"
FP32, EXPORT, NNCF, EVERY = "fp32", "int8 (export)", "int8 (NNCF)", "int8 (every conv)"


@dataclass(frozen=True)
class EnginePath:
    """One engine running one model file."""

    engine: str
    model: str
    color: str

    @property
    def name(self) -> str:
        return f"{self.engine} {self.model}"

    @property
    def deployed_int8(self) -> bool:
        """The export's and NNCF's int8 are deployable; "every conv" is the naive reference."""
        return self.model in (EXPORT, NNCF)


PATHS = (
    EnginePath(ORT, FP32, "#8c8c8c"),
    EnginePath(ORT, EXPORT, "#2a9d8f"),
    EnginePath(ORT, NNCF, "#8ecae6"),
    EnginePath(ORT, EVERY, "#e9c46a"),
    EnginePath(OPENVINO, FP32, "#264653"),
    EnginePath(OPENVINO, EXPORT, "#e76f51"),
    EnginePath(OPENVINO, NNCF, "#9b5de5"),
)
BASE = PATHS[0].name
PATH_BY_NAME = {p.name: p for p in PATHS}

# the targets: (key in a side-by-side row, threshold, what it measures)
BEST_TARGETS = (
    ("speedup_b1", 1.9, "x onnxruntime fp32, batch 1"),
    ("speedup_b8", 1.8, "x onnxruntime fp32, batch 8"),
    ("digits_agreement", 0.99, "top-1 agreement with fp32, held-out digits"),
    ("photo_min_cosine", 0.999, "min centred-logit cosine to fp32, photo crops"),
)
ORT_INT8 = PATH_BY_NAME[f"{ORT} {EXPORT}"].name
ORT_TARGETS = (
    ("speedup_b1", 1.5, "x onnxruntime fp32, batch 1"),
    ("speedup_b8", 1.5, "x onnxruntime fp32, batch 8"),
)


def write(data: dict[str, Any], out: Path, name: str) -> None:
    from resnext_deploy.fileio import atomic_write_text, save_figure

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / f"{name}.json", json.dumps(data, indent=2, default=str))
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(
        ["path", "engine", "model", "batch_size", "median_ms", "speedup_vs_ort_fp32", "rounds_ms"]
    )
    for r in data["rows"]:
        writer.writerow(
            [
                r["path"],
                r["engine"],
                r["model"],
                r["batch_size"],
                f"{r['median_ms']:.2f}",
                f"{r['speedup_vs_base']:.3f}",
                " ".join(map(str, r["rounds_ms"])),
            ]
        )
    atomic_write_text(out / f"{name}.csv", buffer.getvalue())
    atomic_write_text(out / f"{name}.md", markdown(data))
    save_figure(figure(data["rows"], data["setup"]), out / f"{name}.png")


def figure(rows: list[dict[str, Any]], setup: dict[str, Any]) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(BATCH_SIZES), figsize=(12, 4.2))
    for ax, b in zip(axes, BATCH_SIZES, strict=True):
        order = {p.name: i for i, p in enumerate(PATHS)}
        sel = sorted((r for r in rows if r["batch_size"] == b), key=lambda r: -order[r["path"]])
        names = [r["path"] for r in sel]
        ms = [r["median_ms"] for r in sel]
        ax.barh(names, ms, color=[PATH_BY_NAME[n].color for n in names])
        for i, r in enumerate(sel):
            ax.text(r["median_ms"], i, f" {r['speedup_vs_base']:.2f}x", va="center", fontsize=8)
        ax.set_xlim(0, max(ms) * 1.2)
        ax.set_title(f"{setup['arch']}, {setup['input_size']} px, batch {b}")
        ax.set_xlabel("median ms per call (label: x onnxruntime fp32)")
        ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    return fig


def fmt(key: str, value: float | None) -> str:
    if value is None:
        return "not measured"
    if key.startswith("speedup"):
        return f"{value:.2f}x"
    if key == "digits_agreement":
        return f"{value:.2%}"
    return f"{value:.5f}"


def markdown(data: dict[str, Any]) -> str:
    sections = (
        md_header,
        md_targets,
        md_side_by_side,
        md_timing,
        md_layers,
        md_quantizers,
        md_profile,
        md_digits,
    )
    return "\n".join(line for section in sections for line in section(data)) + "\n"


def md_header(data: dict[str, Any]) -> list[str]:
    env, setup = data["environment"], data["setup"]
    v = env["versions"]
    ort = v.get("onnxruntime-gpu") or v.get("onnxruntime") or "?"
    load = env["load_average_1min"]
    phases = ", ".join(f"{k} {v:.0f} s" for k, v in data.get("phase_seconds", {}).items())
    return [
        "# Every deployed int8 path on the CPU: onnxruntime and OpenVINO",
        "",
        f"Command: `{data['command']}` ({data['seconds']} s; {phases}).",
        "",
        f"Machine: {env['cpu']} ({env['cpu_isa']['summary']}; int8 dot-product instructions: "
        f"{'yes' if env['cpu_isa']['int8_accelerated'] else 'none'}), {env['threads']} threads, "
        f"{env['cpu_count']} logical CPUs, {env['date']}. Versions: onnxruntime {ort}, OpenVINO "
        f"{v.get('openvino', '?')}, NNCF {v.get('nncf', '?')}.",
        "",
        f"1-minute load average {load['before_timing']:.2f} before timing, "
        f"{load['after_timing']:.2f} after (the machine is shared with other work).",
        "",
        f"Timed model: {setup['arch']} with random weights, {setup['input_size']}x"
        f"{setup['input_size']}, rounds: {setup['rounds']}.",
        "",
    ]


def md_targets(data: dict[str, Any]) -> list[str]:
    lines = [
        "## Targets",
        "",
        "| target | path | measured | result |",
        "| --- | --- | ---: | --- |",
    ]
    for t in data["targets"]:
        result = "**met**" if t["met"] else "**not met**"
        measured = fmt(t["key"], t["measured"])
        lines.append(f"| {t['target']} | {t['path']} | {measured} | {result} |")
    return [
        *lines,
        "",
        "The best int8 path is the deployed one (the export's or NNCF's int8, on either engine) "
        "that meets most of its four targets, the fastest at batch 1 among equals; a target "
        "not measured in this run counts as not met.",
        "",
    ]


def md_side_by_side(data: dict[str, Any]) -> list[str]:
    photos = data["photos"]
    lines = [
        "## Every deployed int8 path side by side",
        "",
        f"Speed-ups from the timing below; agreement on the demo model's held-out digits; centred-"
        f"logit cosine to onnxruntime fp32 on {photos['images']} crops of the two sample photos "
        f"({data['setup']['arch']}, random weights).",
        "",
        "| path | x fp32 b1 | x fp32 b8 | digits agreement | photo min cos | photo mean cos |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in data["side_by_side"]:
        keys = (
            "speedup_b1",
            "speedup_b8",
            "digits_agreement",
            "photo_min_cosine",
            "photo_mean_cosine",
        )
        lines.append(f"| {r['path']} | " + " | ".join(fmt(k, r[k]) for k in keys) + " |")
    others = {n: p for n, p in photos["paths"].items() if not PATH_BY_NAME[n].deployed_int8}
    lines += [""]
    lines += [
        f"Not deployed, for reference: {n}: photo min cos {p['min_cosine']:.5f}, mean "
        f"{p['mean_cosine']:.5f}."
        for n, p in others.items()
    ]
    return [*lines, ""]


def md_timing(data: dict[str, Any]) -> list[str]:
    lines = [
        "## Timing",
        "",
        "The paths take turns in short blocks; median over rounds of per-round medians; ratio = "
        "median of the per-round onnxruntime fp32 / path ratios. OpenVINO: CPU device, "
        "`INFERENCE_PRECISION_HINT=f32`, `PERFORMANCE_HINT=LATENCY`, `INFERENCE_NUM_THREADS` = "
        "threads; onnxruntime: CPU provider, `ORT_ENABLE_ALL`, intra-op threads = threads.",
        "",
        "| path | batch | median ms | x ort fp32 | rounds (ms) |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    order = {p.name: i for i, p in enumerate(PATHS)}
    for r in sorted(data["rows"], key=lambda r: (r["batch_size"], order[r["path"]])):
        lines.append(
            f"| {r['path']} | {r['batch_size']} | {r['median_ms']:.1f} | "
            f"{r['speedup_vs_base']:.2f} | {', '.join(map(str, r['rounds_ms']))} |"
        )
    return [*lines, ""]


def md_layers(data: dict[str, Any]) -> list[str]:
    lines = [
        "## Which layers run in int8",
        "",
        "onnxruntime: convolutions in its optimized graph (`QLinearConv` vs fp32 `Conv`); "
        "OpenVINO: compute layers of its compiled runtime model by type and runtime precision.",
        "",
        "| int8 file | onnxruntime int8 / fp32 convs | OpenVINO (type precision: layers) |",
        "| --- | ---: | --- |",
    ]
    for model, engines in data["layers"].items():
        ort, ov = engines[ORT], engines[OPENVINO]
        counts = ", ".join(f"{k}: {n}" for k, n in ov["by_type"].items())
        lines.append(
            f"| {model} | {ort['int8_convs']} / {ort['fp32_convs']} ({ort['from']}) | {counts} |"
        )
    q = data["int8_export"]
    if q:
        by_reason = Counter(layer["reason"] for layer in q["fp32_layers"])
        lines += ["", "The export kept in fp32 (onnxruntime):", ""]
        for reason, n in by_reason.items():
            names = [x["module"] for x in q["fp32_layers"] if x["reason"] == reason]
            shown = ", ".join(f"`{m}`" for m in names[:4]) + (", ..." if n > 4 else "")
            lines.append(f"- {n} layer{'s' if n > 1 else ''} ({shown}): {reason}")
        lines += ["", *(f"Warning from the export: {w}" for w in q["warnings"])]
    return [*lines, ""]


def md_quantizers(data: dict[str, Any]) -> list[str]:
    qz = data["quantizers"]
    nncf = qz["nncf"]
    lines = [
        "## The quantizers",
        "",
        f"- The export's int8 step: {qz['export_int8_s']:.1f} s (onnxruntime's `quantize_static`, "
        "min/max calibration, plus measuring which convolution classes are faster in fp32 and "
        "checking accuracy).",
        f"- NNCF `nncf.quantize` on the `onnx.load`ed fp32 file: {nncf['seconds']:.1f} s (its "
        f"defaults: preset performance, subset_size {nncf['subset_size']} = every calibration "
        f"image). Its ONNX backend returns an ONNX `{nncf['returns']}` (QDQ, opset "
        f"{nncf['opset']}, {nncf['quantize_linear']} QuantizeLinear, "
        f"{nncf['dequantize_linear']} DequantizeLinear) that onnxruntime and OpenVINO both run.",
        f"- Both calibrate on the same {CALIBRATION_IMAGES} bundled digits, upscaled.",
    ]
    lines += [f"- NNCF warned: {w}" for w in nncf["warnings"]]
    return [*lines, ""]


def md_profile(data: dict[str, Any]) -> list[str]:
    lines = ["## onnxruntime profile, batch 1 (time per op kind)", ""]
    for p in data["profile_batch1"]["profiles"]:
        lines += [f"**{p['variant']}**: {p['run_ms']:.1f} ms per run", ""]
        lines += ["| kind | nodes | ms | share |", "| --- | ---: | ---: | ---: |"]
        lines += [
            f"| {k['kind']} | {k['nodes']} | {k['ms']:.2f} | {k['share']:.1%} |"
            for k in p["kinds"][:10]
        ]
        lines.append("")
    return lines


def md_digits(data: dict[str, Any]) -> list[str]:
    d = data["digits"]
    if not d:
        return []
    lines = [
        "## Demo model: int8 accuracy per path",
        "",
        f"{d['arch']} trained on the digits as `make demo` does ({d['epochs']} epochs, validation "
        f"accuracy {d['val_accuracy']:.2%}); the export's int8 (its gate reported "
        f"{d['reported_by_export']:.2%}) and NNCF's int8 of the same fp32 file "
        f"({d['nncf']['seconds']:.1f} s, {d['calibration_images']} calibration digits). Top-1 "
        f"agreement with onnxruntime fp32 on {d['held_out_images']} held-out digits, recomputed "
        "from the files:",
        "",
        "| path | agreeing | agreement | accuracy |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, p in d["paths"].items():
        lines.append(
            f"| {name} | {p['agreeing']} | {p['top1_agreement']:.2%} | {p['accuracy']:.2%} |"
        )
    kept = ", ".join(f"`{x['module']}`" for x in d["fp32_layers"])
    return [*lines, "", f"The export kept in fp32: {kept}.", ""]
