"""Benchmark report files: JSON (everything), CSV (one row per measurement), Markdown, PNG; and
the comparison of two JSON reports."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resnext_deploy.errors import BenchmarkError
from resnext_deploy.export.atomic import atomic_write_text, save_figure

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


def write_reports(report: dict[str, Any], out_dir: Path, name: str) -> dict[str, Path]:
    """Write ``name.json``, ``.csv``, ``.md`` and ``.png`` under ``out_dir``; returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {ext: out_dir / f"{name}.{ext}" for ext in ("json", "csv", "md", "png")}
    atomic_write_text(paths["json"], json.dumps(report, indent=2, default=str))
    atomic_write_text(paths["csv"], to_csv(report))
    atomic_write_text(paths["md"], to_markdown(report, plot_name=paths["png"].name))
    plot(report, paths["png"])
    return paths


def load_report(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BenchmarkError(f"benchmark report not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BenchmarkError(f"{path} is not a JSON benchmark report ({exc})") from None
    if not isinstance(data, dict) or "results" not in data:
        raise BenchmarkError(f"{path} is not a resnext-deploy benchmark report (no 'results')")
    return data


def to_csv(report: dict[str, Any]) -> str:
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
            "error",
        ]
    )
    for r in report["results"]:
        s = r.get("stats") or {}
        e2e = r.get("end_to_end") or {}
        writer.writerow(
            [
                report["model"],
                report["provider"],
                report["threads"],
                r["backend"],
                r["batch_size"],
                r["status"],
                _num(r.get("first_call_ms")),
                *(_num(s.get(f)) for f in STAT_FIELDS),
                _num(r.get("speedup_vs_eager")),
                _num(e2e.get("p50_ms")),
                _num(r.get("rss_mb")),
                _num(r.get("peak_rss_mb")),
                _num(r.get("device_memory_mb")),
                r.get("error", ""),
            ]
        )
    return buffer.getvalue()


def to_markdown(report: dict[str, Any], plot_name: str | None = None) -> str:
    env = report["environment"]
    lines = [
        f"# {report['arch']} at {report['input_size']}x{report['input_size']}: "
        f"{report['provider'].upper()} benchmark",
        "",
        f"- command: `{report['config'].get('command', 'resnext-deploy bench')}`",
        f"- machine: {env.get('cpu')} ({env.get('cpu_count')} cores), "
        f"GPU: {(env.get('gpu') or {}).get('name', 'none')}; {report['threads']} threads; "
        f"{env.get('date')}",
        f"- versions: {', '.join(f'{k} {v}' for k, v in env.get('versions', {}).items())}",
        f"- {report['gmacs_per_image']:.2f} GMACs per image; latency is the median (p50) of one "
        "call on a pre-bound batch; x eager = eager p50 / backend p50 at the same batch size",
        "",
        "| backend | batch | p50 ms | p90 ms | p99 ms | mean ± std ms | images/s | x eager "
        "| first call ms | RSS MiB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in report["results"]:  # batch-major, backends in the order they ran
        s = r.get("stats")
        if not s:
            lines.append(
                f"| {r['backend']} | {r['batch_size']} | {r['status']}: "
                f"{r.get('error', '')[:80]} | | | | | | | |"
            )
            continue
        speed = f"{r['speedup_vs_eager']:.2f}" if r.get("speedup_vs_eager") else ""
        lines.append(
            f"| {r['backend']} | {r['batch_size']} | {s['p50_ms']:.2f} | {s['p90_ms']:.2f} | "
            f"{s['p99_ms']:.2f} | {s['mean_ms']:.2f} ± {s['std_ms']:.2f} | "
            f"{s['images_per_s']:.1f} | {speed} | {r['first_call_ms']:.1f} | "
            f"{r.get('rss_mb') or 0:.0f} |"
        )
    lines.append("")
    if report.get("best"):
        best = ", ".join(f"batch {b}: {n}" for b, n in report["best"].items())
        lines += [f"Fastest backend per batch size: {best}.", ""]
    if report.get("tuning"):
        best = ", ".join(f"batch {b}: {n}" for b, n in report["tuning"].items())
        lines += [f"Best CUDA provider configuration per batch size: {best}.", ""]
    if report.get("overhead"):
        o = report["overhead"]
        lines += [
            f"Harness overhead ({o.get('backend')}, batch 1): {o['cost_us']:.2f} us per timed "
            "call (harness loop minus bare loop around an empty call) = "
            f"{o['overhead_pct']:.4f}% of the {o['bare_ms']:.2f} ms bare-loop latency. Paired "
            f"check around the real call (alternating blocks, medians): {o['paired_pct']:+.1f}%, "
            "which measures this machine's noise more than the harness.",
            "",
        ]
    if report.get("compute_floor"):
        f = report["compute_floor"]
        lines += [
            f"Compute floor: {f['gflop_per_image']:.2f} GFLOP per image / "
            f"{f['peak_gflops']:.0f} GFLOP/s peak (the larger of the nominal "
            f"{f['peak_gflops_nominal']:.0f} GFLOP/s = {f['nominal_basis']}, and "
            f"{f['peak_gflops_matmul']:.0f} GFLOP/s measured on a 2048^3 MatMul) = "
            f"{f['floor_ms_per_image']:.1f} ms per image. Best path: "
            f"{f['best_batch1_ms']:.1f} ms at batch 1 ({f['efficiency_batch1']:.0%} of the "
            f"floor), {f['best_ms_per_image']:.1f} ms per image at best "
            f"({f['efficiency_best']:.0%}).",
            "",
        ]
    if plot_name:
        lines += [f"![throughput and latency against batch size]({plot_name})", ""]
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> Path:
    """Throughput and median latency against batch size, one line per backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (thr, lat) = plt.subplots(1, 2, figsize=(11, 4.2))
    for backend in dict.fromkeys(r["backend"] for r in report["results"]):
        rows = [r for r in report["results"] if r["backend"] == backend and r.get("stats")]
        if not rows:
            continue
        bs = [r["batch_size"] for r in rows]
        thr.plot(bs, [r["stats"]["images_per_s"] for r in rows], "o-", label=backend)
        lat.errorbar(
            bs,
            [r["stats"]["p50_ms"] for r in rows],
            yerr=[
                [r["stats"]["p50_ms"] - r["stats"]["min_ms"] for r in rows],
                [r["stats"]["p90_ms"] - r["stats"]["p50_ms"] for r in rows],
            ],
            fmt="o-",
            capsize=3,
            label=backend,
        )
    thr.set(title="Throughput", xlabel="batch size", ylabel="images / s", xscale="log")
    lat.set(
        title="Latency per call (p50, bars: min..p90)",
        xlabel="batch size",
        ylabel="ms",
        xscale="log",
        yscale="log",
    )
    from matplotlib.ticker import ScalarFormatter

    for ax in (thr, lat):
        ax.set_xscale("log", base=2)
        ax.set_xticks(report["batch_sizes"])
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.grid(alpha=0.3, which="both")
    lat.yaxis.set_major_formatter(ScalarFormatter())
    thr.legend(fontsize=8)
    fig.suptitle(
        f"{report['arch']} {report['input_size']}px, {report['provider']}, "
        f"{report['threads']} threads — {report['environment'].get('cpu', '')}",
        fontsize=9,
    )
    fig.tight_layout()
    return save_figure(fig, path)


@dataclass(frozen=True)
class Change:
    backend: str
    batch_size: int
    old_p50_ms: float | None
    new_p50_ms: float | None
    change_pct: float | None
    regression: bool


def compare_reports(
    old: dict[str, Any], new: dict[str, Any], threshold_pct: float = 10.0
) -> list[Change]:
    """Median latency change per (backend, batch size). A slowdown beyond ``threshold_pct`` is a
    regression; so is a measurement the old report had and the new one lost."""

    def index(report: dict[str, Any]) -> dict[tuple[str, int], float | None]:
        return {
            (r["backend"], r["batch_size"]): (r["stats"] or {}).get("p50_ms")
            if r.get("stats")
            else None
            for r in report["results"]
        }

    a, b = index(old), index(new)
    changes = []
    for key in sorted(set(a) | set(b), key=lambda k: (k[1], k[0])):
        o, n = a.get(key), b.get(key)
        pct = (n / o - 1) * 100 if o and n else None
        regression = (pct is not None and pct > threshold_pct) or (
            o is not None and n is None and key in b
        )
        changes.append(Change(key[0], key[1], o, n, pct, regression))
    return changes


def _num(value: Any) -> str:
    if value is None:
        return ""
    return f"{value:.6g}" if isinstance(value, float) else str(value)
