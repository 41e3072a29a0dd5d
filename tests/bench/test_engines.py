"""``bench --engines``: every variant on onnxruntime and OpenVINO side by side, the accuracy gate,
the fastest passing engine x variant per batch size, and ``--record`` into the manifest."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

from resnext_deploy.artifact import MANIFEST_FILE, Variant, open_artifact
from resnext_deploy.bench import roofline
from resnext_deploy.bench.backends import (
    DEFAULT_BACKENDS,
    BenchBackend,
    check_installed,
    chosen_backends,
    with_engines,
)
from resnext_deploy.bench.files import to_markdown
from resnext_deploy.bench.gate import GateResult, fastest_passing
from resnext_deploy.bench.harness import Measurement, Status
from resnext_deploy.bench.recommend import (
    RecordOptions,
    check_recordable,
    measure_and_record,
    recommendation_of,
)
from resnext_deploy.bench.report import BenchReport, load_report
from resnext_deploy.bench.run import BenchConfig, run_benchmark
from resnext_deploy.cli import app
from resnext_deploy.errors import BenchmarkError, ConfigError
from resnext_deploy.machine.cpu import cpu_info
from resnext_deploy.recommendation import Engine, Pick
from resnext_deploy.render import print_bench
from resnext_deploy.runtime.base import BoundCall
from resnext_deploy.runtime.providers import Provider
from resnext_deploy.timing import LatencyStats, Timing
from tests.conftest import TINY

QUICK = Timing(warmup=0, min_iters=2, min_time_s=0.0, max_iters=3)
QUICK_ARGS = ["--batch-sizes", "1,2", "--min-iters", "2", "--min-time", "0", "--warmup", "0"]
QUICK_ARGS += ["--threads", "1", "--no-overhead"]
ONNX_VARIANTS = (Variant.FP32, Variant.FP16, Variant.INT8)
ROW_NAMES = {
    f"{engine}{v.suffix}" for engine in ("onnxruntime-cpu", "openvino-cpu") for v in ONNX_VARIANTS
}


@pytest.fixture(scope="module")
def engines_export(tiny_every_variant: Path) -> Path:
    """The tiny model with fp32, fp16, int8 and the preprocessing graph (tests/conftest.py),
    shared read-only: copy it to record into it."""
    assert Variant.PREPROCESS in open_artifact(tiny_every_variant).variants  # never benchmarked
    return tiny_every_variant


@pytest.fixture
def openvino() -> None:
    pytest.importorskip("openvino")


@pytest.fixture(autouse=True)
def no_matmul_peak(monkeypatch: pytest.MonkeyPatch) -> None:
    """The compute floor's MatMul takes seconds and is not what these tests check."""
    monkeypatch.setattr(roofline, "peak_matmul_gflops", lambda threads: 100.0)


def copied(export: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(export, tmp_path / "export"))


def spoil(monkeypatch: pytest.MonkeyPatch, runner_class: type, row: str) -> None:
    """The runners named ``row`` return negated logits, and their timed call does nothing:
    the fastest row by far, and a wrong one (cosine -1 against eager)."""
    real_infer: Callable[[Any, np.ndarray], np.ndarray] = runner_class.infer

    def infer(self: Any, batch: np.ndarray) -> np.ndarray:
        out = real_infer(self, batch)
        return -out if self.name == row else out

    real_bind = runner_class.bind

    def bind(self: Any, batch: np.ndarray) -> BoundCall:
        if self.name != row:
            return real_bind(self, batch)
        wrong = -real_infer(self, batch)
        return BoundCall(lambda: None, lambda: wrong)

    monkeypatch.setattr(runner_class, "infer", infer)
    monkeypatch.setattr(runner_class, "bind", bind)


def manifest_text(export: Path) -> str:
    return (export / MANIFEST_FILE).read_text()


# --- which backends --engines measures ------------------------------------------------------


def test_every_engine_backend_knows_its_engine_and_variant() -> None:
    assert BenchBackend.OPENVINO.engine is Engine.OPENVINO
    assert BenchBackend.OPENVINO.variant is Variant.FP32
    assert BenchBackend.OPENVINO_INT8.variant is Variant.INT8
    assert BenchBackend.ONNXRUNTIME_FP16.engine is Engine.ONNXRUNTIME
    assert BenchBackend.OPENVINO_DEFAULT.engine is Engine.OPENVINO
    assert BenchBackend.OPENVINO_DEFAULT.variant is None  # a peer, never deployed
    assert BenchBackend.EAGER.engine is None and BenchBackend.EAGER.variant is None


def test_engines_cover_every_variant_of_the_export_when_none_is_chosen() -> None:
    held = (Variant.FP32, Variant.FP16, Variant.INT8, Variant.PREPROCESS)
    chosen = chosen_backends(None, peers=True, engines=True)
    assert BenchBackend.ONNXRUNTIME not in chosen and BenchBackend.OPENVINO not in chosen
    expanded = with_engines(chosen, held)
    assert expanded == (
        BenchBackend.EAGER,
        BenchBackend.TORCHSCRIPT,
        BenchBackend.TORCHSCRIPT_OPT,
        BenchBackend.COMPILE,
        BenchBackend.OPENVINO_DEFAULT,
        BenchBackend.ONNXRUNTIME,
        BenchBackend.OPENVINO,
        BenchBackend.ONNXRUNTIME_FP16,
        BenchBackend.OPENVINO_FP16,
        BenchBackend.ONNXRUNTIME_INT8,
        BenchBackend.OPENVINO_INT8,
    )
    assert with_engines(expanded, held) == expanded  # resolving again changes nothing
    # a chosen variant backend: that variant alone, on both engines
    assert with_engines((BenchBackend.OPENVINO_INT8,), held) == (
        BenchBackend.ONNXRUNTIME_INT8,
        BenchBackend.OPENVINO_INT8,
    )
    assert with_engines((), ()) == (BenchBackend.ONNXRUNTIME, BenchBackend.OPENVINO)
    assert chosen_backends(None) == DEFAULT_BACKENDS


def test_engines_off_the_cpu_are_refused() -> None:
    with pytest.raises(ConfigError, match="OpenVINO runs on the CPU here"):
        BenchConfig(engines=True, provider=Provider.CUDA)


def test_without_openvino_its_backends_and_engines_are_refused_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # find_spec says: not installed
    for kinds, engines in (((BenchBackend.OPENVINO_INT8,), False), ((), True)):
        with pytest.raises(ConfigError, match=r"pip install 'resnext-deploy\[openvino\]'"):
            check_installed(kinds, engines=engines)
    check_installed((BenchBackend.EAGER, BenchBackend.ONNXRUNTIME))


# --- the pick: pure, on synthetic measurements -------------------------------------------------


def row(backend: str, batch: int, p50: float | None, status: Status = Status.OK) -> Measurement:
    stats = None
    if p50 is not None:
        fields = dict.fromkeys(("p90_ms", "p95_ms", "p99_ms", "mean_ms", "min_ms", "max_ms"), p50)
        stats = LatencyStats(
            n=5,
            batch_size=batch,
            p50_ms=p50,
            std_ms=0.0,
            iqr_ms=0.0,
            cv=0.0,
            images_per_s=batch / p50 * 1e3,
            ms_per_image=p50 / batch,
            **fields,
        )
    return Measurement(backend=backend, batch_size=batch, status=status, stats=stats)


def gated(backend: str, engine: Engine, variant: Variant, ok: bool = True) -> GateResult:
    failures = () if ok else ("cosine similarity -1.0000000 < 0.9",)
    return GateResult(backend=backend, engine=engine, variant=variant, failures=failures)


GATE = [
    gated("onnxruntime-cpu", Engine.ONNXRUNTIME, Variant.FP32),
    gated("openvino-cpu", Engine.OPENVINO, Variant.FP32),
    gated("onnxruntime-cpu-int8", Engine.ONNXRUNTIME, Variant.INT8),
    gated("openvino-cpu-int8", Engine.OPENVINO, Variant.INT8, ok=False),
]


def test_the_fastest_row_that_passed_is_picked_per_batch_size() -> None:
    results = [
        row("torch-eager", 1, 0.5),  # fastest of all, but not a deployable row
        row("onnxruntime-cpu", 1, 10.0),
        row("openvino-cpu", 1, 8.0),
        row("onnxruntime-cpu-int8", 1, 5.0),
        row("openvino-cpu-int8", 1, 1.0),  # faster still, but failed the gate
        row("onnxruntime-cpu", 4, 40.0),
        row("openvino-cpu", 4, 20.0),
        row("onnxruntime-cpu-int8", 4, 25.0),
        row("openvino-cpu-int8", 4, 2.0),
        row("openvino-cpu", 8, None, Status.OOM),  # not timed: never picked
        row("onnxruntime-cpu-int8", 8, 90.0),
    ]
    picks = fastest_passing(results, GATE)
    assert picks == {
        1: Pick(Engine.ONNXRUNTIME, "int8", 5.0, 2.0),
        4: Pick(Engine.OPENVINO, "fp32", 20.0, 2.0),
        8: Pick(Engine.ONNXRUNTIME, "int8", 90.0, None),  # no onnxruntime fp32 at batch 8
    }


def test_a_tie_goes_to_the_row_measured_first_and_nothing_passed_picks_nothing() -> None:
    results = [row("openvino-cpu", 2, 3.0), row("onnxruntime-cpu", 2, 3.0)]
    assert fastest_passing(results, GATE)[2].engine is Engine.OPENVINO
    failed = [replace_failed(g) for g in GATE]
    assert fastest_passing(results, failed) == {}


def replace_failed(g: GateResult) -> GateResult:
    return GateResult(backend=g.backend, engine=g.engine, variant=g.variant, failures=("wrong",))


def batch1_report(
    results: list[Measurement], gate: list[GateResult], recommended: dict[int, Pick] | None = None
) -> BenchReport:
    """A report of the tiny model at batch 1 with these rows and gate results."""
    return BenchReport(
        model="m",
        arch=TINY,
        input_size=64,
        gmacs_per_image=0.1,
        provider="cpu",
        threads=1,
        batch_sizes=[1],
        results=results,
        gate=gate,
        recommended=recommended or {},
    )


def test_a_report_with_no_passing_row_cannot_be_recorded() -> None:
    report = batch1_report([row("openvino-cpu-int8", 1, 1.0)], [GATE[3]])
    with pytest.raises(BenchmarkError, match="openvino-cpu-int8: cosine similarity"):
        recommendation_of(report)


def test_the_gate_and_the_picks_round_trip_through_the_json_report() -> None:
    results = [row(g.backend, 1, 2.0 + i) for i, g in enumerate(GATE)]
    report = batch1_report(results, GATE, fastest_passing(results, GATE))
    again = BenchReport.from_dict(json.loads(report.to_json()))
    assert again.gate == GATE and again.recommended == report.recommended
    assert again.recommended[1] == Pick(Engine.ONNXRUNTIME, "fp32", 2.0, 1.0)
    text = to_markdown(again)
    assert "- openvino-cpu-int8: FAILED: cosine similarity" in text
    assert "never recommended" in text
    assert (
        "Fastest deployable engine x variant per batch size (passed the accuracy gate): "
        "batch 1: onnxruntime fp32 (2.00 ms, 1.00x onnxruntime fp32)." in text
    )


# --- real runs on the tiny export ---------------------------------------------------------------


def test_engines_time_every_variant_on_both_engines_and_name_the_fastest_that_passed(
    openvino: None, engines_export: Path, tmp_path: Path
) -> None:
    res = CliRunner().invoke(
        app,
        [
            "bench",
            str(engines_export),
            "--backend",
            "eager",
            "--engines",
            "--out",
            str(tmp_path),
            "--name",
            "e",
            "--json",
            *QUICK_ARGS,
        ],
    )
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    rows = {(r["backend"], r["batch_size"]): r for r in data["results"]}
    assert {name for name, _ in rows} == ROW_NAMES | {"torch-eager"}
    assert all(r["status"] == "ok" and r["output_shape"] == [b, 7] for (_, b), r in rows.items())
    gate = {g["backend"]: g for g in data["gate"]}
    assert set(gate) == ROW_NAMES and all(g["passed"] for g in gate.values())
    report = load_report(tmp_path / "e.json")
    assert sorted(report.recommended) == [1, 2]
    for b, pick in report.recommended.items():  # the fastest of the rows, all of which passed
        fastest = min(
            (m for m in report.rows() if m.backend in ROW_NAMES and m.batch_size == b),
            key=lambda m: m.stats.p50_ms if m.stats else float("inf"),
        )
        assert fastest.stats is not None and pick.p50_ms == fastest.stats.p50_ms
        assert fastest.backend == f"{pick.engine.value}-cpu{Variant(pick.variant).suffix}"
        fp32 = rows[("onnxruntime-cpu", b)]["stats"]["p50_ms"]
        assert pick.speedup == pytest.approx(fp32 / pick.p50_ms)
    markdown = (tmp_path / "e.md").read_text()
    assert "Fastest deployable engine x variant per batch size (passed the accuracy gate): " in (
        markdown
    )
    assert "- openvino-cpu-int8: passed" in markdown


def test_a_row_whose_outputs_are_wrong_is_never_recommended(
    openvino: None, engines_export: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from resnext_deploy.runtime.openvino import OpenVinoRunner

    spoil(monkeypatch, OpenVinoRunner, "openvino-cpu-int8")
    config = BenchConfig(
        backends=(BenchBackend.OPENVINO_INT8,),
        engines=True,
        batch_sizes=(1, 2),
        threads=1,
        timing=QUICK,
        measure_overhead=False,
    )
    report = run_benchmark(str(engines_export), config).report
    p50 = {(m.backend, m.batch_size): m.stats.p50_ms for m in report.rows()}
    assert set(p50) == {
        (n, b) for n in ("onnxruntime-cpu-int8", "openvino-cpu-int8") for b in (1, 2)
    }
    for b in (1, 2):  # the spoiled row is by far the fastest ...
        assert p50[("openvino-cpu-int8", b)] < p50[("onnxruntime-cpu-int8", b)]
    # ... and is never picked: the one row that passed is, at every batch size
    assert {b: (p.engine, p.variant) for b, p in report.recommended.items()} == {
        1: (Engine.ONNXRUNTIME, "int8"),
        2: (Engine.ONNXRUNTIME, "int8"),
    }
    spoiled = report.gate_result("openvino-cpu-int8")
    assert spoiled is not None and not spoiled.passed and "cosine" in spoiled.reason
    assert "FAILED: cosine similarity" in to_markdown(report)
    console = Console(record=True, width=200)
    print_bench(console, report)
    shown = console.export_text()
    assert "openvino-cpu-int8: failed the accuracy gate, never recommended: cosine" in shown
    assert "passed the accuracy gate): batch 1: onnxruntime int8 (" in shown


def test_record_writes_the_picks_into_the_manifest_and_nothing_else(
    openvino: None, engines_export: Path, tmp_path: Path
) -> None:
    export = copied(engines_export, tmp_path)
    before = json.loads(manifest_text(export))
    res = CliRunner().invoke(
        app, ["bench", str(export), "--record", "--out", str(tmp_path / "out"), *QUICK_ARGS]
    )
    assert res.exit_code == 0, res.output
    assert f"recorded in {export / MANIFEST_FILE} (what --engine auto runs)" in res.stdout
    report = load_report(next((tmp_path / "out").glob("*.json")))
    assert {g.backend for g in report.gate} == ROW_NAMES
    recorded = open_artifact(export).manifest.recommendation  # every hash checked again
    assert recorded is not None and recorded.picks == report.recommended
    assert sorted(recorded.picks) == [1, 2] and recorded.threads == 1
    assert recorded.cpu == cpu_info().label and recorded.measured_at
    assert recorded.command == report.command and recorded.command.startswith("resnext-deploy")
    after = json.loads(manifest_text(export))
    assert after.pop("recommendation") == recorded.to_dict()
    assert after == before


def test_measure_and_record_is_the_library_path_and_refuses_when_nothing_passed(
    openvino: None, engines_export: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from resnext_deploy.runtime.openvino import OpenVinoRunner
    from resnext_deploy.runtime.ort import OrtRunner

    export = copied(engines_export, tmp_path)
    options = RecordOptions(threads=1, batch_sizes=(1,), timing=QUICK, command="api")
    recorded = measure_and_record(export, options)
    assert recorded.manifest == export / MANIFEST_FILE
    assert {m.backend for m in recorded.report.results} == ROW_NAMES  # no torch rows
    assert open_artifact(export).manifest.recommendation == recorded.recommendation
    before = manifest_text(export)
    for variant in ONNX_VARIANTS:
        spoil(monkeypatch, OrtRunner, f"onnxruntime-cpu{variant.suffix}")
        spoil(monkeypatch, OpenVinoRunner, f"openvino-cpu{variant.suffix}")
    with pytest.raises(BenchmarkError, match="no engine x variant passed the accuracy gate"):
        measure_and_record(export, options)
    assert manifest_text(export) == before


def test_record_when_nothing_passed_says_so_and_where_the_report_is(
    openvino: None, engines_export: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from resnext_deploy.runtime.openvino import OpenVinoRunner
    from resnext_deploy.runtime.ort import OrtRunner

    export = copied(engines_export, tmp_path)
    before = manifest_text(export)
    spoil(monkeypatch, OrtRunner, "onnxruntime-cpu-int8")
    spoil(monkeypatch, OpenVinoRunner, "openvino-cpu-int8")
    out = tmp_path / "out"
    args = ["--backend", "onnxruntime-int8", "--out", str(out), "--name", "r", *QUICK_ARGS]
    res = CliRunner().invoke(app, ["bench", str(export), "--record", *args])
    assert res.exit_code == 1, res.output
    (line,) = res.stderr.strip().splitlines()
    assert "no engine x variant passed the accuracy gate" in line
    assert f"nothing was recorded (the benchmark's report: {out / 'r.md'})" in line
    assert manifest_text(export) == before
    assert "- onnxruntime-cpu-int8: FAILED" in (out / "r.md").read_text()


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("architecture", "is not a folder: export the model first"),
        ("cuda", "OpenVINO runs on the CPU here, not on cuda"),
        ("no-openvino", "needs OpenVINO, which is not installed: pip install"),
    ],
)
def test_record_is_refused_in_one_line_before_any_work(
    case: str,
    message: str,
    engines_export: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    export = copied(engines_export, tmp_path)
    before = manifest_text(export)
    model = "resnext11_mini" if case == "architecture" else str(export)
    if case == "no-openvino":
        monkeypatch.setitem(sys.modules, "openvino", None)
    provider = ["--provider", "cuda"] if case == "cuda" else []
    out = tmp_path / "out"
    res = CliRunner().invoke(
        app, ["bench", model, "--record", *provider, "--out", str(out), *QUICK_ARGS]
    )
    assert res.exit_code == 1, res.output
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith("error:") and message in line
    assert "Traceback" not in res.output and not out.exists()
    assert manifest_text(export) == before


def test_check_recordable_names_what_a_record_needs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs --engines"):
        check_recordable(str(tmp_path), BenchConfig())
    check_recordable(str(tmp_path), BenchConfig(engines=True))
