"""Benchmark result files: JSON (everything), CSV (one row per measurement), Markdown and a PNG
plot, all written atomically from a :class:`BenchReport`."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from resnext_deploy.bench.gate import GATE_BATCH_SIZES, GateResult
from resnext_deploy.bench.harness import HarnessOverhead
from resnext_deploy.bench.report import BenchReport
from resnext_deploy.bench.roofline import ComputeFloor
from resnext_deploy.fileio import atomic_write_text, save_figure
from resnext_deploy.recommendation import Pick
from resnext_deploy.validate import check_name

STAT_FIELDS = (
    "n",
    "p50_ms",
    "p90_ms",
    "p95_ms",
    "p99_ms",
    "mean_ms",
    "std_ms",
    "min_ms",
    "max_ms",
    "iqr_ms",
    "cv",
    "images_per_s",
    "ms_per_image",
)
EXTENSIONS = ("json", "csv", "md", "png")


def report_paths(out_dir: Path, name: str) -> dict[str, Path]:
    """The result files ``name.<ext>`` in ``out_dir``; raises :class:`ConfigError` for a
    ``name`` that is a path (it would put them elsewhere)."""
    check_name(name, "report name")
    return {ext: out_dir / f"{name}.{ext}" for ext in EXTENSIONS}


def write_reports(report: BenchReport, out_dir: Path, name: str) -> dict[str, Path]:
    """Write ``name.json``, ``.csv``, ``.md`` and ``.png`` under ``out_dir``; returns the paths."""
    paths = report_paths(out_dir, name)
    out_dir.mkdir(parents=True, exist_ok=True)
    report.save(paths["json"])
    atomic_write_text(paths["csv"], to_csv(report))
    atomic_write_text(paths["md"], to_markdown(report, plot_name=paths["png"].name))
    plot(report, paths["png"])
    return paths


def to_csv(report: BenchReport) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(
        [
            "model",
            "provider",
            "threads",
            "backend",
            "batch_size",
            "status",
            "first_call_ms",
            *STAT_FIELDS,
            "speedup_vs_eager",
            "e2e_p50_ms",
            "rss_mb",
            "peak_rss_mb",
            "device_memory_mb",
            "device_memory_scope",
            "engine_min_batch",
            "engine_opt_batch",
            "engine_max_batch",
            "error",
        ]
    )
    for m in report.results:
        s = m.stats.to_dict() if m.stats else {}
        p = m.engine_profile
        writer.writerow(
            [
                report.model,
                report.provider,
                report.threads,
                m.backend,
                m.batch_size,
                m.status.value,
                _num(m.first_call_ms),
                *(_num(s.get(f)) for f in STAT_FIELDS),
                _num(m.speedup_vs_eager),
                _num(m.end_to_end.p50_ms if m.end_to_end else None),
                _num(m.rss_mb),
                _num(m.peak_rss_mb),
                _num(m.device_memory_mb),
                m.device_memory_scope or "",
                *((p.min_batch, p.opt_batch, p.max_batch) if p else ("", "", "")),
                m.error,
            ]
        )
    return buffer.getvalue()


def to_markdown(report: BenchReport, plot_name: str | None = None) -> str:
    """The report as Markdown: how it was run, the table, then what the run found."""
    has_e2e = any(m.end_to_end for m in report.results)
    lines = [*_markdown_heading(report, has_e2e), *_markdown_table(report, has_e2e), ""]
    lines += engine_profile_lines(report)
    lines += _winner_lines(report)
    lines += gate_lines(report)
    if report.overhead:
        lines += _overhead_lines(report.overhead)
    f = report.compute_floor
    if f and f.floor_ms_per_image and f.best_batch1_ms:
        lines += _floor_lines(f)
    if plot_name:
        lines += [f"![throughput and latency against batch size]({plot_name})", ""]
    return "\n".join(lines)


def _markdown_heading(report: BenchReport, has_e2e: bool) -> list[str]:
    """Title, command, machine, versions and how to read the table."""
    env = report.environment
    gpu = (env.get("gpu") or {}).get("name", "none")
    return [
        f"# {report.arch} at {report.input_size}x{report.input_size}: "
        f"{report.provider.upper()} benchmark",
        "",
        f"- command: `{report.command or 'resnext-deploy bench'}`",
        f"- machine: {env.get('cpu')} ({env.get('cpu_count')} cores), GPU: {gpu}; "
        f"{report.threads} threads; {env.get('date')}",
        f"- versions: {', '.join(f'{k} {v}' for k, v in env.get('versions', {}).items())}",
        f"- {report.gmacs_per_image:.2f} GMACs per image; latency is the median (p50) of one "
        "call on a pre-bound batch; x eager = eager p50 / backend p50 at the same batch size"
        + ("; e2e = with host<->device copies" if has_e2e else ""),
        "",
    ]


def _markdown_table(report: BenchReport, has_e2e: bool) -> list[str]:
    """One row per measurement, batch-major, backends in the order they ran; with
    ``--engines``, whether each deployable row passed the accuracy gate."""
    gated = bool(report.gate)
    lines = [
        "| backend | batch | p50 ms | p90 ms | p99 ms | mean ± std ms | images/s | x eager "
        + ("| e2e p50 ms " if has_e2e else "")
        + "| first call ms | RSS MiB |"
        + (" gate |" if gated else ""),
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | "
        + ("---: | " if has_e2e else "")
        + "---: | ---: |"
        + (" --- |" if gated else ""),
    ]
    for m in report.results:
        s = m.stats
        gate = f" {gate_mark(report.gate_result(m.backend))} |" if gated else ""
        if s is None:
            blanks = "| " * (8 if has_e2e else 7)
            lines.append(
                f"| {m.backend} | {m.batch_size} | {m.status.value}: {m.error[:80]} {blanks}|{gate}"
            )
            continue
        speed = f"{m.speedup_vs_eager:.2f}" if m.speedup_vs_eager else ""
        e2e = (
            f"{m.end_to_end.p50_ms:.2f} | "
            if has_e2e and m.end_to_end
            else (" | " if has_e2e else "")
        )
        lines.append(
            f"| {m.backend} | {m.batch_size} | {s.p50_ms:.2f} | {s.p90_ms:.2f} | "
            f"{s.p99_ms:.2f} | {s.mean_ms:.2f} ± {s.std_ms:.2f} | {s.images_per_s:.1f} | "
            f"{speed} | {e2e}{_num(m.first_call_ms, '.1f')} | {m.rss_mb or 0:.0f} |{gate}"
        )
    return lines


def gate_mark(result: GateResult | None) -> str:
    """A table cell: ``pass``, ``FAIL``, or nothing for a row the gate does not judge."""
    if result is None:
        return ""
    return "pass" if result.passed else "FAIL"


def pick_text(batch_size: int, pick: Pick) -> str:
    """``batch 1: openvino int8 (4.10 ms, 1.92x onnxruntime fp32)``."""
    speedup = f", {pick.speedup:.2f}x onnxruntime fp32" if pick.speedup else ""
    engine = pick.engine.value
    return f"batch {batch_size}: {engine} {pick.variant} ({pick.p50_ms:.2f} ms{speedup})"


def gate_verdict(result: GateResult) -> str:
    """``passed (max rel 2e-07, cosine 1.000000)``, or why it failed."""
    if not result.passed:
        return f"FAILED: {result.reason}; never recommended"
    figures = [
        f"max rel {result.max_rel:.2g}" if result.max_rel is not None else "",
        f"cosine {result.min_cosine:.6f}" if result.min_cosine is not None else "",
    ]
    shown = ", ".join(f for f in figures if f)
    return f"passed ({shown})" if shown else "passed"


def gate_lines(report: BenchReport) -> list[str]:
    """Markdown (``--engines``): each deployable row's accuracy gate, then the fastest passing
    engine x variant per batch size."""
    if not report.gate:
        return []
    sizes = " and ".join(str(b) for b in GATE_BATCH_SIZES)
    lines = [
        "Accuracy gate: each engine x variant row's outputs against the eager model on seeded "
        f"random batches of {sizes}, held to its variant's tolerance:",
        *(f"- {g.backend}: {gate_verdict(g)}" for g in report.gate),
        "",
    ]
    if not report.recommended:
        return [*lines, "No engine x variant passed the accuracy gate: nothing to recommend.", ""]
    picks = ", ".join(pick_text(b, p) for b, p in report.recommended.items())
    heading = "Fastest deployable engine x variant per batch size (passed the accuracy gate)"
    return [*lines, f"{heading}: {picks}.", ""]


def _winner_lines(report: BenchReport) -> list[str]:
    """The fastest backend, and with ``--tune`` the best provider configuration, per batch."""
    lines = []
    if report.best:
        best = ", ".join(f"batch {b}: {n}" for b, n in report.best.items())
        lines += [f"Fastest backend per batch size: {best}.", ""]
    if report.tuning:
        best = ", ".join(f"batch {b}: {n}" for b, n in report.tuning.items())
        lines += [f"Best provider configuration per batch size: {best}.", ""]
    return lines


def _overhead_lines(o: HarnessOverhead) -> list[str]:
    return [
        f"Harness overhead ({o.backend}, batch 1): {o.cost_us:.2f} us per timed "
        "call (harness loop minus bare loop around an empty call) = "
        f"{o.overhead_pct:.4f}% of the {o.bare_ms:.2f} ms bare-loop latency. Paired "
        f"check around the real call (alternating blocks, medians): {o.paired_pct:+.1f}%, "
        "which measures this machine's noise more than the harness.",
        "",
    ]


def _floor_lines(f: ComputeFloor) -> list[str]:
    return [
        f"Compute floor: {f.gflop_per_image:.2f} GFLOP per image / "
        f"{f.peak_gflops:.0f} GFLOP/s peak (the larger of the nominal "
        f"{f.peak_gflops_nominal or 0:.0f} GFLOP/s = {f.nominal_basis}, and "
        f"{f.peak_gflops_matmul:.0f} GFLOP/s measured on a 2048^3 MatMul) = "
        f"{f.floor_ms_per_image:.1f} ms per image. {_best_path(f)}",
        "",
    ]


def _best_path(f: ComputeFloor) -> str:
    if not math.isfinite(f.best_ms_per_image):
        return "No row was measured."
    batch1 = (
        f"{f.best_batch1_ms:.1f} ms at batch 1 ({f.efficiency_batch1:.0%} of the floor), "
        if math.isfinite(f.best_batch1_ms)
        else ""
    )
    best = f"{f.best_ms_per_image:.1f} ms per image at best ({f.efficiency_best:.0%})"
    return f"Best path: {batch1}{best}."


def engine_profile_lines(report: BenchReport) -> list[str]:
    """Markdown: which TensorRT optimization profile each row's engine was built for."""
    profiles = report.engine_profiles()
    if not profiles:
        return []
    lines = ["TensorRT engine of each row, built for batch sizes min/opt/max:"]
    for backend, rows in profiles.items():
        each = ", ".join(
            f"batch {b}: {p.min_batch}/{p.opt_batch}/{p.max_batch}" for b, p in rows.items()
        )
        lines.append(f"- {backend}: {each}")
    return [*lines, ""]


def plot(report: BenchReport, path: Path) -> Path:
    """Throughput and median latency against batch size, one line per backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import ScalarFormatter

    fig, (thr, lat) = plt.subplots(1, 2, figsize=(11, 4.2))
    for backend in report.backend_names():
        rows = [m for m in report.rows() if m.backend == backend]
        if not rows:
            continue
        bs = [m.batch_size for m in rows]
        stats = [m.stats for m in rows if m.stats]
        thr.plot(bs, [s.images_per_s for s in stats], "o-", label=backend)
        lat.errorbar(
            bs,
            [s.p50_ms for s in stats],
            yerr=[[s.p50_ms - s.min_ms for s in stats], [s.p90_ms - s.p50_ms for s in stats]],
            fmt="o-",
            capsize=3,
            label=backend,
        )
    thr.set(title="Throughput", xlabel="batch size", ylabel="images / s")
    lat.set(title="Latency per call (p50, bars: min..p90)", xlabel="batch size", ylabel="ms")
    lat.set_yscale("log")
    for ax in (thr, lat):
        ax.set_xscale("log", base=2)
        ax.set_xticks(report.batch_sizes)
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.grid(alpha=0.3, which="both")
    lat.yaxis.set_major_formatter(ScalarFormatter())
    thr.legend(fontsize=8)
    device = (report.environment.get("gpu") or {}).get("name") or report.environment.get("cpu", "")
    fig.suptitle(
        f"{report.arch} {report.input_size}px, {report.provider}, {report.threads} threads — "
        f"{device}",
        fontsize=9,
    )
    fig.tight_layout()
    return save_figure(fig, path)


def _num(value: Any, fmt: str = ".6g") -> str:
    if value is None:
        return ""
    return format(value, fmt) if isinstance(value, float) else str(value)
