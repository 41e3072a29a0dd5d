"""Console rendering of result objects (the CLI's only formatting code).

It prints on the CLI's :class:`~resnext_deploy.terminal.SafeConsole`: a ``str`` shows as given (a
name is never markup, its control characters are shown escaped), and colour comes only from
:func:`~resnext_deploy.terminal.styled` parts.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Column, Table
from rich.text import Text

from resnext_deploy.bench.compare import Change
from resnext_deploy.bench.files import gate_mark, pick_text
from resnext_deploy.bench.report import BenchReport
from resnext_deploy.doctor.report import DoctorReport
from resnext_deploy.inspect_model import ModelInfo
from resnext_deploy.parity import ParityReport
from resnext_deploy.runtime.placement import Placement
from resnext_deploy.terminal import joined, plain, styled

if TYPE_CHECKING:
    from collections.abc import Iterable

    from rich.progress import Progress, TaskID

    from resnext_deploy.artifact import Tolerance
    from resnext_deploy.batch.ledger import BatchSummary
    from resnext_deploy.bench.harness import Measurement
    from resnext_deploy.bench.profile import ProfileReport
    from resnext_deploy.bench.recommend import RecordedRun
    from resnext_deploy.bench.run import BenchRun
    from resnext_deploy.export.pipeline import ExportResult
    from resnext_deploy.export.quantize import Int8Result
    from resnext_deploy.localize import CheckedArtifact, LocalizationReport
    from resnext_deploy.models.registry import ArchInfo
    from resnext_deploy.predict import Prediction
    from resnext_deploy.serve.run import ServeInfo
    from resnext_deploy.train import EpochStats, TrainResult
    from resnext_deploy.web.site import WebSite


def parity_table(report: ParityReport) -> Table:
    table = Table(title=f"Parity against {report.reference} on: {', '.join(report.inputs)}")
    for col in ("backend", "max abs", "max rel", "cosine", "top-1", "top-5", "result"):
        table.add_column(
            col,
            justify="left" if col in ("backend", "result") else "right",
            no_wrap=col != "result",
        )
    for b in report.backends:
        table.add_row(
            b.backend,
            f"{b.max_abs:.1e}",
            f"{b.max_rel:.1e}",
            f"{b.min_cosine:.6f}",
            f"{b.top1:.0%}",
            f"{b.top5:.0%}",
            styled("pass", "green")
            if b.passed
            else joined(styled("FAIL", "red"), " " + "; ".join(b.failures)),
        )
    return table


def print_parity(console: Console, report: ParityReport) -> None:
    console.print(parity_table(report))
    for name, why in report.skipped.items():
        console.print(
            styled("skipped", "yellow"), f"{name}: {why}", highlight=False, soft_wrap=True
        )
    print_placements(console, report.placements)
    groups: dict[Tolerance, list[str]] = {}
    for b in report.backends:
        groups.setdefault(b.tolerance, []).append(b.backend)
    for tol, names in groups.items():
        who = "all" if len(groups) == 1 else ", ".join(names)
        if tol.max_rel == float("inf"):
            console.print(
                f"tolerance ({who}): cosine >= {tol.min_cosine}; int8 accuracy is "
                "gated at export by top-1 agreement on held-out real images",
                highlight=False,
            )
            continue
        console.print(
            f"tolerance ({who}): max rel error <= {tol.max_rel:g} (|diff| / max|reference|), "
            f"cosine >= {tol.min_cosine}, top-1 agreement >= {tol.min_top1:.0%} outside ties "
            f"(reference top-2 margin <= {tol.tie_margin:g})",
            highlight=False,
        )
    console.print(styled("PARITY OK", "green") if report.passed else styled("PARITY FAILED", "red"))


def print_models(console: Console, infos: list[ArchInfo]) -> None:
    """The architecture registry (``resnext-deploy models``)."""
    table = Table(title="Registered architectures (1000 classes, default input size)")
    for col in ("name", "blocks", "C", "d", "stem", "input", "params M", "GMACs"):
        table.add_column(col, justify="left" if col in ("name", "stem") else "right", no_wrap=True)
    for i in infos:
        c = i.config
        table.add_row(
            i.name,
            "/".join(map(str, c.layers)),
            str(c.cardinality),
            str(c.base_width),
            c.stem,
            str(c.input_size),
            f"{i.params / 1e6:.2f}",
            f"{i.gmacs:.2f}",
        )
    console.print(table)
    console.print(
        "C = cardinality (groups), d = channels per group in the first stage; "
        "GMACs = multiply-accumulates per image, as torchvision counts them."
    )


def print_export(console: Console, result: ExportResult) -> None:
    """What ``export`` wrote and why it can be trusted."""
    print_parity(console, result.parity)
    groups = ", ".join(f"{n}x group={g}" for g, n in result.convs.by_group.items())
    console.print(f"ONNX convolutions: {result.convs.total} ({groups})")
    for name, size in result.files.items():
        console.print(f"  {result.out_dir / name}  {size / 1e6:.1f} MB", highlight=False)
    if result.int8:
        console.print(f"int8: {int8_summary(result.int8)}", highlight=False)
        print_int8_choice(console, result.int8)
        if result.openvino_int8:
            layers = result.openvino_int8
            console.print(
                f"int8 on OpenVINO: {layers.int8_convs} convolutions run in int8, "
                f"{layers.other_convs} in another precision (its compiled runtime model)",
                highlight=False,
            )
    console.print(
        styled("exported", "green"),
        f"{result.spec.arch} ({result.spec.num_classes} classes) to {result.out_dir}",
    )


def int8_summary(q: Int8Result) -> str:
    """One line on the int8 variant: size, agreement with fp32 and, where measured, speed."""
    parts = [f"{q.fp32_bytes / 1e6:.1f} MB -> {q.int8_bytes / 1e6:.1f} MB"]
    if q.fp32_ms and q.int8_ms:
        parts.append(
            f"batch-1 {q.fp32_ms:.1f} ms -> {q.int8_ms:.1f} ms ({q.fp32_ms / q.int8_ms:.2f}x)"
        )
    parts.append(
        f"top-1 agreement with fp32 {q.top1_agreement:.2%} on {q.held_out_images} held-out "
        f"images (calibrated on {q.calibration_images})"
    )
    return ", ".join(parts)


def print_model_info(console: Console, info: ModelInfo) -> None:
    opset = f", opset {info.opset}" if info.opset else ""
    console.print(styled(info.path, "bold"), f"({info.format}{opset})")
    console.print(f"parameters: {info.parameters:,}")
    for label, tensors in (("inputs", info.inputs), ("outputs", info.outputs)):
        for t in tensors:
            shape = "x".join(str(d) for d in t.shape) if t.shape else "?"
            console.print(f"{label[:-1]}: {t.name} {t.dtype} [{shape}]")
    if info.conv_groups:
        groups = ", ".join(f"{n} with group={g}" for g, n in info.conv_groups.items())
        console.print(f"convolutions: {sum(info.conv_groups.values())} ({groups})")
    counts = ((op, str(n)) for op, n in info.op_counts.items())
    _print_pairs(console, "operators", ("op", Column("count", justify="right")), counts)
    if info.metadata:
        meta = ((k, _short(v)) for k, v in info.metadata.items())
        _print_pairs(console, "metadata", ("key", Column("value", overflow="fold")), meta)


def _print_pairs(
    console: Console,
    title: str,
    columns: tuple[str | Column, str | Column],
    pairs: Iterable[tuple[str, str]],
) -> None:
    """A two-column table: operator counts, metadata."""
    table = Table(*columns, title=title)
    for key, value in pairs:
        table.add_row(key, value)
    console.print(table)


def predictions_csv(predictions: list[Prediction]) -> str:
    """One row per (image, rank): file, rank, label, index, probability."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["file", "rank", "label", "index", "probability"])
    for p in predictions:
        for rank, (label, idx, prob) in enumerate(
            zip(p.labels, p.indices, p.probabilities, strict=True), 1
        ):
            writer.writerow([p.file, rank, label, idx, f"{prob:.6f}"])
    return buffer.getvalue()


def print_predictions(console: Console, predictions: list[Prediction]) -> None:
    table = Table(title="Predictions")
    table.add_column("file", overflow="fold")
    table.add_column("top-1")
    table.add_column("prob", justify="right")
    table.add_column("next best")
    for p in predictions:
        rest = ", ".join(
            f"{lb} {pr:.1%}" for lb, pr in zip(p.labels[1:], p.probabilities[1:], strict=True)
        )
        table.add_row(p.file, p.labels[0], f"{p.probabilities[0]:.1%}", rest)
    console.print(table)


class RichTrainObserver:
    """A progress bar per epoch and one line of metrics when it ends (on stderr)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = _progress_bar(console)
        self.task: TaskID | None = None

    def __enter__(self) -> RichTrainObserver:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def start_epoch(self, epoch: int, batches: int) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task(f"epoch {epoch}", total=batches)

    def advance(self) -> None:
        assert self.task is not None  # start_epoch comes first
        self.progress.advance(self.task)

    def end_epoch(self, stats: EpochStats) -> None:
        self.progress.console.print(
            f"epoch {stats.epoch:>3}  train loss {stats.train_loss:.3f} acc {stats.train_acc:6.1%}"
            f"  |  val loss {stats.val_loss:.3f} acc {stats.val_acc:6.1%}  ({stats.seconds:.1f} s)",
            highlight=False,
        )


def print_training(console: Console, result: TrainResult) -> None:
    for line in result.skipped:
        console.print(styled("skipped", "yellow"), line, highlight=False, soft_wrap=True)
    names = result.spec.labels()
    table = Table(title="Confusion matrix on the validation split (rows: true, columns: predicted)")
    table.add_column("")
    for n in names:
        table.add_column(n[:8], justify="right")
    for name, row in zip(names, result.confusion, strict=True):
        table.add_row(name[:12], *[str(v) if v else "." for v in row])
    console.print(table)
    console.print(
        f"best validation accuracy {result.best_val_acc:.2%} at epoch {result.best_epoch}"
        f" of {len(result.history)}"
    )
    console.print(
        f"checkpoint: {result.checkpoint} (spec inside: export it with "
        f"`resnext-deploy export {result.checkpoint}`)"
    )
    if result.curves:
        console.print(f"curves: {result.curves}")


def print_bench(console: Console, report: BenchReport) -> None:
    """The latency table, the rows that failed and why, then what the run found."""
    table, failed = _bench_table(report)
    console.print(table)
    for m in failed:
        failure = styled(f"{m.backend} batch {m.batch_size}: {m.status.value}", "red")
        console.print(failure, m.error, highlight=False)
    _print_bench_findings(console, report)
    _print_gate(console, report)
    placed = [d for d in report.backends if "placement" in d]
    print_placements(console, {d["name"]: Placement.from_dict(d["placement"]) for d in placed})
    _print_engines(console, report)


def _bench_table(report: BenchReport) -> tuple[Table, list[Measurement]]:
    """One row per measurement, batch-major, backends in the order they ran; and the rows
    without timings."""
    table = Table(
        title=f"{report.arch} {report.input_size}px on {report.provider}, "
        f"{report.threads} threads: latency per call"
    )
    has_e2e = any(m.end_to_end for m in report.results)
    cols = ["backend", "batch", "p50 ms", "p90 ms", "img/s", "x eager"]
    cols += ["e2e p50 ms"] if has_e2e else []
    for col in [*cols, "1st ms", *(["gate"] if report.gate else [])]:
        table.add_column(col, justify="left" if col == "backend" else "right", no_wrap=True)
    failed = []
    for m in report.results:
        s = m.stats
        gate = [_gate_cell(report, m.backend)] if report.gate else []
        if s is None:
            failed.append(m)
            blanks = [""] * (len(cols) - 2)
            table.add_row(
                m.backend, str(m.batch_size), styled(m.status.value, "red"), *blanks, *gate
            )
            continue
        speed = f"{m.speedup_vs_eager:.2f}" if m.speedup_vs_eager else ""
        e2e = [f"{m.end_to_end.p50_ms:.2f}" if m.end_to_end else ""] if has_e2e else []
        table.add_row(
            m.backend,
            str(m.batch_size),
            f"{s.p50_ms:.2f}",
            f"{s.p90_ms:.2f}",
            f"{s.images_per_s:.1f}",
            speed,
            *e2e,
            f"{m.first_call_ms or 0:.0f}",
            *gate,
        )
    return table, failed


def _gate_cell(report: BenchReport, backend: str) -> str | Text:
    mark = gate_mark(report.gate_result(backend))
    return styled(mark, "red") if mark == "FAIL" else mark


def _print_gate(console: Console, report: BenchReport) -> None:
    """``--engines``: the rows that failed the accuracy gate and why, then the fastest passing
    engine x variant per batch size."""
    if not report.gate:
        return
    for g in report.gate:
        if not g.passed:
            console.print(
                styled(f"{g.backend}: failed the accuracy gate, never recommended:", "red"),
                g.reason,
                highlight=False,
            )
    if not report.recommended:
        console.print(styled("no engine x variant passed the accuracy gate", "red"))
        return
    picks = ", ".join(pick_text(b, p) for b, p in report.recommended.items())
    console.print(
        f"fastest deployable engine x variant (passed the accuracy gate): {picks}",
        highlight=False,
    )


def _print_bench_findings(console: Console, report: BenchReport) -> None:
    """Harness overhead, the compute floor (CPU) and the best configuration (``--tune``)."""
    if report.overhead:
        o = report.overhead
        console.print(
            f"harness overhead: {o.cost_us:.2f} us per timed call "
            f"({o.overhead_pct:.3f}% of {o.bare_ms:.2f} ms)"
        )
    f = report.compute_floor
    if f and math.isfinite(f.floor_ms_per_image):
        reached = (
            f"best batch-1 path reaches {f.efficiency_batch1:.0%} of it"
            if math.isfinite(f.efficiency_batch1)
            else "no batch-1 row was measured"
        )
        console.print(
            f"compute floor {f.floor_ms_per_image:.1f} ms/image "
            f"({f.gflop_per_image:.2f} GFLOP at {f.peak_gflops:.0f} GFLOP/s peak); {reached}"
        )
    for b, name in (report.tuning or {}).items():
        console.print(f"best provider configuration at batch {b}: {name}")


def _print_engines(console: Console, report: BenchReport) -> None:
    """TensorRT: how each engine came to be (built or loaded with its session) and the
    optimization profile each row's engine was built for."""
    for d in report.backends:
        for engine in d.get("engines") or [d]:  # TensorRT on a GPU: one engine per batch size
            build = engine.get("session_build") or {}
            if build.get("cache_dir"):  # TensorRT: the engine is built with the session
                how = "loaded from its cache" if build.get("from_cache") else "built"
                size = f" (batch {engine['batch_size']})" if "batch_size" in engine else ""
                console.print(
                    f"{d['name']}{size}: engine {how} in {build['seconds']:.1f} s when "
                    "the session was created (not part of the first-call times); cache: "
                    + build["cache_dir"],
                    highlight=False,
                )
    for backend, rows in report.engine_profiles().items():
        each = ", ".join(f"{b}: {p.min_batch}/{p.opt_batch}/{p.max_batch}" for b, p in rows.items())
        console.print(f"{backend} engine profile per batch (min/opt/max) {each}")


def placement_line(name: str, placement: Placement) -> str:
    """``name: 50 of 53 nodes on CUDAExecutionProvider (all 53 Conv); elsewhere: ...``"""
    convs = (
        f"all {placement.convs} Conv"
        if placement.convs and placement.convs == placement.convs_on_requested
        else f"{placement.convs_on_requested} of {placement.convs} Conv"
    )
    line = (
        f"{name}: {placement.on_requested} of {placement.total} nodes on "
        f"{placement.requested} ({convs})"
    )
    if placement.elsewhere:
        line += f"; elsewhere: {placement.describe_elsewhere()}"
    return line


def print_placements(console: Console, placements: dict[str, Placement]) -> None:
    """Where onnxruntime placed the nodes, one line per backend on a non-CPU provider."""
    for name, placement in placements.items():
        mark = "placement" if placement.ok else styled("placement", "red")
        console.print(mark, placement_line(name, placement), highlight=False)


def print_doctor(console: Console, report: DoctorReport) -> None:
    table = Table(title=f"resnext-deploy doctor (provider: {report.provider.value})")
    for col in ("section", "check", "result", "detail"):
        table.add_column(col, no_wrap=col != "detail", overflow="fold")
    colours = {"PASS": "green", "FAIL": "red", "SKIP": "yellow"}
    for c in report.checks:
        status = styled(c.status.value, colours[c.status.value])
        table.add_row(c.section, c.name, status, c.detail)
    console.print(table)
    failed = report.failures
    if failed:
        names = ", ".join(f"{c.section}/{c.name}" for c in failed)
        console.print(styled(f"{len(failed)} check(s) failed:", "red"), names, highlight=False)
    else:
        console.print(
            styled(f"all checks passed for the {report.provider.value} provider", "green")
        )


def print_comparison(console: Console, changes: list[Change], threshold: float) -> None:
    table = Table(title=f"Median latency change (regression: slower by > {threshold:g}%)")
    for col in ("backend", "batch", "old p50 ms", "new p50 ms", "change", ""):
        table.add_column(col, justify="left" if col in ("backend", "") else "right")
    for c in changes:
        fmt = lambda v: f"{v:.2f}" if v is not None else "-"  # noqa: E731
        pct = f"{c.change_pct:+.1f}%" if c.change_pct is not None else "-"
        table.add_row(
            c.backend,
            str(c.batch_size),
            fmt(c.old_p50_ms),
            fmt(c.new_p50_ms),
            pct,
            styled("REGRESSION", "red") if c.regression else "",
        )
    console.print(table)
    n = sum(c.regression for c in changes)
    console.print(styled(f"{n} regression(s)", "red") if n else styled("no regressions", "green"))


def _short(value: object, limit: int = 200) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def print_serving(console: Console, info: ServeInfo) -> None:
    """Where a served model answers (a :class:`resnext_deploy.serve.run.ServeInfo`)."""
    where = f"Ray cluster {info.cluster}" if info.cluster else "a local Ray"
    batching = "dynamic batching" if info.batching else "no batching"
    lines = [
        f"{info.model} on {where}: {info.replicas} replica(s), {batching}",
        f"  health    {info.url}/v2/health/ready",
        f"  metadata  {info.url}/v2/models/{info.model}",
        f"  infer     {info.infer_url}   (Open Inference Protocol / tritonclient)",
        f"  images    {info.classify_url}?top_k=5   (POST JPEG or PNG bytes)",
        f"  stats     {info.url}/v2/models/{info.model}/stats",
    ]
    if info.grpc_address:
        lines.append(
            f"  grpc      {info.grpc_address}   (GRPCInferenceService / tritonclient.grpc)"
        )
    lines += [
        f"  metrics   {info.metrics_url or 'see the Ray cluster metrics endpoint'}",
        "Ctrl-C stops it.",
    ]
    console.print(styled("serving", "green"), "\n".join(lines), highlight=False, soft_wrap=True)


def print_localization(
    console: Console, report: LocalizationReport, rows: int | None = None
) -> None:
    """Per-layer error tables of a :class:`~resnext_deploy.localize.LocalizationReport`, each
    headed by the first module beyond tolerance (fp16: where values first leave its range)."""
    for loc in report.results:
        table = Table(title=f"{loc.backend} vs {loc.reference}, layer by layer ({report.inputs})")
        for col in ("layer", "op", "max abs", "max rel", "cosine", "rel L2", "added", ""):
            table.add_column(col, justify="left" if col in ("layer", "op", "") else "right")
        first = loc.first_exceeding
        for layer in loc.layers[:rows] if rows else loc.layers:
            mark = styled("<- first" if layer is first else "x" if layer.exceeds else "", "red")
            table.add_row(
                layer.name,
                layer.op,
                f"{layer.max_abs:.1e}",
                f"{layer.max_rel:.1e}",
                f"{layer.cosine:.6f}",
                f"{layer.rel_l2:.1e}",
                f"{layer.added:+.1e}",
                mark,
            )
        console.print(table)
        if first is None:
            console.print(f"{loc.backend}: every compared layer is within tolerance")
        else:
            console.print(
                joined(
                    styled(f"{loc.backend}: first module beyond tolerance: ", "red"),
                    styled(first.name, "bold red"),
                ),
                f"({first.op}, max rel {first.max_rel:.2g}, cosine {first.cosine:.6f})",
                highlight=False,
            )
        if loc.backend.endswith("-fp16"):
            over = loc.first_overflow
            console.print(
                f"fp16 range first exceeded at {over.name} (|x| up to {over.ref_max:.3g})"
                if over
                else "fp16 range: no layer exceeds 65504",
                highlight=False,
            )
        worst = ", ".join(f"{w.name} {w.added:+.1e}" for w in loc.worst(3) if w.added > 0)
        if worst:
            console.print(f"adds the most relative error: {worst}", highlight=False)
        for name, why in loc.missing.items():
            console.print(styled("not compared", "yellow"), f"{name}: {why}", highlight=False)


def print_profile(console: Console, report: ProfileReport) -> None:
    """Time per op kind and the top nodes of each profiled variant, then int8 vs fp32 per
    convolution class (a :class:`~resnext_deploy.bench.profile.ProfileReport`)."""
    console.print(
        f"onnxruntime profile on {report.provider}, {report.threads} threads, "
        f"CPU {report.isa.model} ({report.isa.summary})",
        highlight=False,
    )
    for p in report.profiles:
        prof = p.profile
        table = Table(
            title=f"{p.variant.value}, batch {prof.batch_size}: {prof.run_ms:.2f} ms per run"
        )
        for col in ("kind", "nodes", "ms", "share"):
            table.add_column(col, justify="left" if col == "kind" else "right")
        for k in prof.kinds:
            table.add_row(k.kind, str(k.nodes), f"{k.ms:.2f}", f"{k.share:.1%}")
        console.print(table)
        top = ", ".join(f"{n.name} ({n.kind}) {n.ms:.2f} ms" for n in prof.top(min(report.top, 5)))
        console.print(f"top nodes: {top}", highlight=False)
        if prof.unmapped:
            console.print(
                f"not mapped to ONNX nodes: {len(prof.unmapped)} (TensorRT engines hide their "
                "layers)",
                highlight=False,
            )
    if report.comparisons:
        table = Table(title="Convolutions: int8 vs fp32 (per class, all nodes of it)")
        for col in ("class", "batch", "fp32 ms", "int8 ms", "int8 speed-up"):
            table.add_column(col, justify="left" if col == "class" else "right")
        for c in report.comparisons:
            speed = f"{c.int8_speedup:.2f}x"
            table.add_row(
                c.conv_class,
                str(c.batch_size),
                f"{c.fp32_ms:.2f}",
                f"{c.int8_ms:.2f}",
                speed if c.int8_speedup >= 1 else styled(speed, "red"),
            )
        console.print(table)


def print_int8_choice(console: Console, q: Int8Result) -> None:
    """Which layers stay fp32 and why, what runs where, and warnings about this CPU."""
    for layer in q.fp32_layers:
        console.print(f"  fp32: {layer.module} ({layer.reason})", highlight=False)
    if q.int8_convs or q.fp32_convs:
        console.print(
            f"  onnxruntime runs {q.int8_convs} convolutions in int8 and {q.fp32_convs} in fp32 "
            f"(calibration: {q.method}; CPU {q.isa.get('summary', '?')})",
            highlight=False,
        )
    for note in q.warnings:
        console.print(styled("warning", "yellow"), f"int8: {note}", highlight=False)


def print_checked(console: Console, checked: CheckedArtifact) -> None:
    """``verify``'s outcome: the parity table, then the layer-by-layer tables when localized."""
    print_parity(console, checked.parity)
    if checked.localization:
        print_localization(console, checked.localization)


def print_failures(console: Console, failures: list[str]) -> None:
    """The files ``predict`` could not classify, one escaped line each, then their count."""
    for failure in failures:
        console.print(styled("skipped", "red"), plain(failure), highlight=False, soft_wrap=True)
    if failures:
        console.print(f"{len(failures)} file(s) could not be classified")


def _progress_bar(console: Console) -> Progress:
    """A transient bar whose description is literal text (Rich's default column reads it as
    markup); callers pass it through :func:`~resnext_deploy.terminal.plain`."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    description = TextColumn("{task.description}", style="progress.description", markup=False)
    columns = (description, BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    return Progress(*columns, console=console, transient=True)


@contextmanager
def bench_progress(console: Console, total: int) -> Iterator[Callable[[str], None]]:
    """A progress bar for ``bench``: the callback names the step; a measurement
    (``"<backend> batch=<b>"``) advances it."""
    with _progress_bar(console) as bar:
        task = bar.add_task("preparing", total=total)

        def progress(step: str) -> None:
            bar.update(task, description=plain(step), advance=1 if "batch=" in step else 0)

        yield progress


@contextmanager
def batch_progress(console: Console) -> Iterator[Callable[[int, int], None]]:
    """A progress bar for ``predict --ray``: images done of those this run does, and images/s."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("classifying"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}", markup=False),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    started = time.perf_counter()
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("classifying", total=None, rate="")

        def progress(done: int, total: int) -> None:
            seconds = time.perf_counter() - started
            rate = f"{done / seconds:.1f} img/s" if done and seconds > 0 else ""
            bar.update(task, completed=done, total=total, rate=rate)

        yield progress


def print_batch_summary(console: Console, summary: BatchSummary) -> None:
    """What a finished ``predict --ray`` run holds and where."""
    resumed = (
        f" ({summary.shards_resumed} of {summary.shards} shards were done already)"
        if summary.shards_resumed
        else ""
    )
    console.print(
        styled("done", "green"),
        f"{summary.images:,} images: {summary.classified:,} classified, {summary.errors:,} "
        f"could not be read (their 'error' column says why){resumed}",
        highlight=False,
    )
    console.print(
        f"this run: {summary.images_this_run:,} images in {summary.seconds:.1f} s "
        f"({summary.images_per_s:.1f} images/s); results: {summary.out_dir}/parts/*.parquet, "
        f"summary: {summary.out_dir}/summary.json",
        highlight=False,
    )


def print_triton_repository(console: Console, model_dir: Path, repository: Path, gpu: bool) -> None:
    """The written ``config.pbtxt``, then how to serve the repository with Triton."""
    console.print((model_dir / "config.pbtxt").read_text(), highlight=False)
    console.print(
        styled("wrote", "green"),
        f"{model_dir} - serve it with:\n"
        f"  docker run --rm {'--gpus all ' if gpu else ''}-p 8000:8000 -p 8001:8001 "
        f"-v {repository.resolve()}:/models nvcr.io/nvidia/tritonserver:<yy.mm>-py3 "
        "tritonserver --model-repository=/models",
        highlight=False,
    )


def print_written(console: Console, paths: dict[str, Path]) -> None:
    console.print("written: " + ", ".join(str(p) for p in paths.values()), highlight=False)


def print_bench_run(out: Console, err: Console, run: BenchRun, tables: bool = True) -> None:
    """``bench``'s tables (with ``tables``) and the files it wrote; the profile's file names go
    to ``err``, so that stdout keeps one JSON document when the tables are left out."""
    if tables:
        print_bench(out, run.report)
        print_written(out, run.files)
        if run.profile:
            print_profile(out, run.profile)
    if run.profile_files:
        print_written(err, run.profile_files)


def print_recorded(console: Console, recorded: RecordedRun) -> None:
    """What ``bench --record`` wrote into the export's manifest."""
    r = recorded.recommendation
    picks = ", ".join(pick_text(b, p) for b, p in sorted(r.picks.items()))
    console.print(
        styled("recorded", "green"),
        f"in {recorded.manifest} (what --engine auto runs): {picks}; measured on {r.cpu}, "
        f"{r.threads} threads, {r.measured_at}",
        highlight=False,
        soft_wrap=True,
    )


def print_site(console: Console, site: WebSite) -> None:
    """The variants a page could run with their download sizes, the chosen one marked, and how
    to open the page."""
    table = Table(title=f"{site.out_dir}: the page runs {site.variant.value}")
    for col in ("variant", "model MB", ""):
        table.add_column(col, justify="right" if col == "model MB" else "left")
    for name, size in site.variant_bytes.items():
        chosen = styled("<- on the page", "green") if name == site.variant.value else ""
        table.add_row(name, f"{size / 1e6:.1f}", chosen)
    console.print(table)
    console.print(
        f"a visitor downloads {site.download_bytes / 1e6:.1f} MB (model, onnxruntime-web "
        f"{site.ort_web_version}, page); model sha256 {site.model_sha256[:12]}\n"
        f"open it with: python -m http.server --directory {site.out_dir} 8000, "
        "then http://127.0.0.1:8000/",
        highlight=False,
        soft_wrap=True,
    )
