"""``bench --record`` and ``export --recommend``: measure an export on both engines, then write
the fastest engine x variant per batch size that passed the accuracy gate into its manifest,
where ``--engine auto`` reads it (:class:`~resnext_deploy.recommendation.Recommendation`).

A record says what this CPU measured, so it is only written from a CPU run of an export folder
whose files are still the ones measured (their hashes are checked again before writing).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from resnext_deploy.artifact import open_artifact, record_recommendation
from resnext_deploy.bench.report import BenchReport
from resnext_deploy.bench.run import BenchConfig, BenchRun, run_benchmark
from resnext_deploy.errors import BenchmarkError, ConfigError
from resnext_deploy.recommendation import Recommendation
from resnext_deploy.runtime.providers import Provider
from resnext_deploy.timing import Timing

if TYPE_CHECKING:
    from resnext_deploy.export.pipeline import ExportConfig, ExportResult
    from resnext_deploy.models.checkpoint import LoadOptions


@dataclass(frozen=True)
class RecordedRun:
    """A benchmark run and what it recorded: the recommendation and the manifest written."""

    run: BenchRun
    recommendation: Recommendation
    manifest: Path

    @property
    def report(self) -> BenchReport:
        return self.run.report


def check_recordable(model: str, config: BenchConfig) -> None:
    """Raise :class:`ConfigError` before any work unless a run of ``model`` with ``config``
    can be recorded: an export folder, measured with ``--engines`` on the CPU provider."""
    if config.provider is not Provider.CPU:
        raise ConfigError(
            f"--record writes what this CPU measured, and this run is on {config.provider.value}:"
            " use --provider cpu"
        )
    if not Path(model).is_dir():
        raise ConfigError(
            f"--record writes into an export folder's manifest, and {model!r} is not a folder: "
            "export the model first, then bench that folder"
        )
    if not config.engines:
        raise ConfigError("--record needs --engines: a record compares both engines")


def recommendation_of(report: BenchReport) -> Recommendation:
    """The report's fastest passing engine x variant per batch size, with where and when it
    was measured. Raises :class:`BenchmarkError` when no deployable row passed the gate."""
    if not report.recommended:
        failed = "; ".join(f"{g.backend}: {g.reason}" for g in report.gate if not g.passed)
        why = f" ({failed})" if failed else ""
        raise BenchmarkError(
            f"no engine x variant passed the accuracy gate and was measured{why}; nothing was "
            "recorded"
        )
    env = report.environment
    return Recommendation(
        picks=dict(report.recommended),
        cpu=_cpu_label(),
        threads=report.threads,
        measured_at=str(env.get("date") or datetime.now(UTC).isoformat(timespec="seconds")),
        command=report.command,
    )


def _cpu_label() -> str:
    """This machine's CPU with its ISA (the bench measured here, just now)."""
    from resnext_deploy.machine.cpu import cpu_info

    return cpu_info().label


def record(export_dir: Path, report: BenchReport) -> tuple[Recommendation, Path]:
    """Write ``report``'s recommendation into ``export_dir``'s manifest (opened with every
    hash checked: the files measured must still be the files recorded). Returns it and the
    manifest's path; raises :class:`BenchmarkError` when nothing passed and
    :class:`ArtifactError` for an export that no longer checks out."""
    recommendation = recommendation_of(report)
    manifest = record_recommendation(open_artifact(export_dir), recommendation)
    return recommendation, manifest


def run_and_record(
    model: str,
    config: BenchConfig,
    progress: Callable[[str], None] | None = None,
) -> RecordedRun:
    """:func:`~resnext_deploy.bench.run.run_benchmark` on the export folder ``model``, then
    :func:`record`. Refuses before any work what :func:`check_recordable` refuses; the result
    files (``config.out_dir``) are written even when nothing passed, so that they say why."""
    check_recordable(model, config)
    run = run_benchmark(model, config, progress=progress)
    try:
        recommendation, manifest = record(Path(model), run.report)
    except BenchmarkError as exc:
        if "md" not in run.files:
            raise
        raise BenchmarkError(f"{exc} (the benchmark's report: {run.files['md']})") from None
    return RecordedRun(run, recommendation, manifest)


@dataclass(frozen=True, kw_only=True)
class RecordOptions:
    """How :func:`measure_and_record` measures: threads (``None``: every core), batch sizes
    (``None``: the CPU defaults), timing, and the command to note in the record."""

    threads: int | None = None
    batch_sizes: tuple[int, ...] | None = None
    timing: Timing = field(default_factory=Timing)
    command: str = ""


def measure_and_record(
    export_dir: Path,
    options: RecordOptions | None = None,
    progress: Callable[[str], None] | None = None,
) -> RecordedRun:
    """Measure every variant of the export at ``export_dir`` on onnxruntime and OpenVINO (no
    torch backends, no result files), gate each on accuracy, and record the fastest that passed
    per batch size in its manifest. Raises :class:`ConfigError` (OpenVINO missing, not an
    export folder), :class:`ArtifactError` (an export that does not check out) or
    :class:`BenchmarkError` (nothing passed: the manifest is left as it was)."""
    options = options or RecordOptions()
    config = BenchConfig(
        backends=(),
        engines=True,
        batch_sizes=options.batch_sizes,
        threads=options.threads,
        timing=options.timing,
        measure_overhead=False,
        command=options.command,
    )
    return run_and_record(str(export_dir), config, progress)


def export_and_record(
    checkpoint: Path,
    load: LoadOptions,
    config: ExportConfig,
    options: RecordOptions | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[ExportResult, RecordedRun]:
    """``export --recommend``: export (every gate as usual), then :func:`measure_and_record` on
    the new folder. OpenVINO's presence is checked first, before any long work."""
    from resnext_deploy.export.pipeline import export_checkpoint
    from resnext_deploy.runtime.openvino import openvino_module

    openvino_module()  # a ConfigError naming the extra, before the export runs
    exported = export_checkpoint(checkpoint, load, config)
    return exported, measure_and_record(exported.out_dir, options, progress)
