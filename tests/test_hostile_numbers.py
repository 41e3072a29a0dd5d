"""Hostile numbers, report files and names to ``bench``, ``compare`` and ``triton``, and the
bounds of every count option (issue 23, classes 3, 4, 7 and 8).

A count that cannot finish, a figure that is not a measurement, a report name that is a path
and a model file that cannot be loaded each end in one ``error:`` line and exit 1, before any
long work, with nothing written.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import subprocess
from pathlib import Path
from typing import Any

import pytest

from resnext_deploy.bench.backends import BackendFactory
from resnext_deploy.bench.harness import Status, sweep
from resnext_deploy.bench.report import load_report
from resnext_deploy.bench.run import BenchConfig
from resnext_deploy.errors import BenchmarkError, ConfigError
from resnext_deploy.export.triton import TritonConfig
from resnext_deploy.timing import Timing
from tests.bench.test_harness import FAST, SleepRunner, _report, spec, zeros
from tests.test_hostile import CLI, assert_one_error, invoke, workspace  # noqa: F401 - a fixture

QUICK = ["--backend", "onnxruntime", "--warmup", "0", "--min-iters", "1", "--min-time", "0"]


def never_called(what: str):  # noqa: ANN201
    def fail(*_args: object, **_kwargs: object) -> None:
        raise AssertionError(f"{what} ran although the input should have been refused")

    return fail


def copy_export(source: Path, target: Path) -> Path:
    target.mkdir()
    for f in source.iterdir():
        (target / f.name).write_bytes(f.read_bytes())
    return target


def replace_and_rehash(export: Path, name: str, data: bytes) -> None:
    """``export/name`` replaced by ``data``, its manifest entry updated to match: a file that
    passes every hash check and still cannot be used."""
    (export / name).write_bytes(data)
    manifest = json.loads((export / "manifest.json").read_text())
    entry = manifest["files"][name]
    entry["sha256"], entry["bytes"] = hashlib.sha256(data).hexdigest(), len(data)
    (export / "manifest.json").write_text(json.dumps(manifest))


# --- class 3: bench on a model it cannot load ---------------------------------------------------


def test_bench_on_a_model_file_onnxruntime_cannot_load_fails(
    workspace: Path,  # noqa: F811
    tiny_export: Path,
) -> None:
    """Root can read any file, so "unreadable" is a model.onnx that no runtime can read (its
    manifest rehashed): it was one "error" row and exit 0."""
    export = copy_export(tiny_export, workspace / "exp")
    replace_and_rehash(export, "model.onnx", b"not a protobuf" * 100)
    result = invoke("bench", "exp", *QUICK, "--batch-sizes", "1", "--no-overhead", "--out", "res")
    assert_one_error(result, "model.onnx")
    assert not (workspace / "res").exists()


class Unbuildable(Exception):
    pass


def failing_factory(name: str, **kwargs: Any) -> BackendFactory:
    def build() -> SleepRunner:
        raise Unbuildable(f"{name}: cannot load the model")

    return BackendFactory(name, build, **kwargs)


def test_a_backend_that_cannot_start_ends_the_sweep() -> None:
    ok = SleepRunner("torch-eager", 0.0)
    with pytest.raises(BenchmarkError, match="backend onnxruntime-cpu could not start"):
        sweep([spec(ok), failing_factory("onnxruntime-cpu")], (1, 2), zeros, FAST)
    assert ok.closed  # the runners built before are closed


def test_a_tuning_variant_that_cannot_start_is_recorded_and_the_others_go_on() -> None:
    ok = SleepRunner("onnxruntime-cuda", 0.0)
    tuned = failing_factory("onnxruntime-cuda[cuda_graph=1]", optional=True)
    result = sweep([spec(ok), tuned], (1, 2), zeros, FAST)
    by = {(m.backend, m.batch_size): m.status for m in result.results}
    assert by["onnxruntime-cuda", 1] is Status.OK and by["onnxruntime-cuda", 2] is Status.OK
    assert by["onnxruntime-cuda[cuda_graph=1]", 1] is Status.ERROR


def test_an_engine_that_cannot_be_built_for_a_later_batch_size_stays_an_error_row() -> None:
    """TensorRT builds an engine per batch size: the largest may fail where the others ran."""
    runner = SleepRunner("onnxruntime-tensorrt", 0.0)

    def for_batch(b: int) -> SleepRunner:
        if b > 1:
            raise Unbuildable("engine build failed")
        return runner

    per_batch = BackendFactory(runner.name, lambda: runner, for_batch)
    result = sweep([per_batch], (1, 2, 4), zeros, FAST)
    assert [m.status for m in result.results] == [Status.OK, Status.ERROR, Status.SKIPPED]


# --- class 4: report names are names -----------------------------------------------------------


@pytest.mark.parametrize("profile", [[], ["--profile"]], ids=["bench", "profile"])
@pytest.mark.parametrize("where", ["parent", "absolute"])
def test_bench_report_names_that_are_paths_are_refused(
    workspace: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    tiny_export: Path,
    where: str,
    profile: list[str],
) -> None:
    import resnext_deploy.bench.run as run

    monkeypatch.setattr(run, "bench_model", never_called("the benchmark"))
    escape = workspace.parent / f"escaped-{where}-{len(profile)}"
    name = "../" + escape.name if where == "parent" else str(escape)
    (workspace / "res").mkdir()
    result = invoke("bench", tiny_export, *QUICK, *profile, "--out", "res", "--name", name)
    assert_one_error(result, "is a path")
    assert not list(workspace.parent.glob(escape.name + "*"))
    assert not list((workspace / "res").iterdir())


def test_report_names_are_checked_by_the_config_and_the_writers(tmp_path: Path) -> None:
    from resnext_deploy.bench.files import write_reports
    from resnext_deploy.bench.report import BenchReport

    with pytest.raises(ConfigError, match="is a path"):
        BenchConfig(name="../x")
    with pytest.raises(ConfigError, match="is a path"):
        BenchConfig(name=str(tmp_path / "x"))
    report = BenchReport.from_dict(_report({("ort", 1): 1.0}))
    with pytest.raises(ConfigError, match="is a path"):
        write_reports(report, tmp_path / "out", "../x")
    assert not list(tmp_path.iterdir())


# --- class 7 and 8: counts bounded by what can finish -------------------------------------------


def _stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every long step replaced by a failure: an option that is not refused fails the test
    at once instead of running for hours."""
    import resnext_deploy.bench.run as bench_run
    import resnext_deploy.demo as demo
    import resnext_deploy.export.pipeline as pipeline
    import resnext_deploy.localize as localize
    import resnext_deploy.predict as predict
    import resnext_deploy.serve.run as serving
    import resnext_deploy.train as train

    monkeypatch.setattr(bench_run, "run_benchmark", never_called("the benchmark"))
    monkeypatch.setattr(demo, "run_demo", never_called("the demo"))
    monkeypatch.setattr(pipeline, "export_checkpoint", never_called("the export"))
    monkeypatch.setattr(localize, "check_artifact", never_called("verify"))
    monkeypatch.setattr(predict, "predict_paths", never_called("predict"))
    monkeypatch.setattr(train, "train", never_called("training"))
    monkeypatch.setattr(serving, "serve_model", never_called("the server"))


COUNTS = [
    (["bench", "m", "--warmup", "1000000000"], "--warmup"),
    (["bench", "m", "--min-iters", "1000000000"], "--min-iters"),
    (["bench", "m", "--min-time", "1e9"], "--min-time"),
    (["bench", "m", "--max-time", "inf"], "--max-time"),
    (["bench", "m", "--max-time", "nan"], "--max-time"),
    (["bench", "m", "--threads", "1000000"], "--threads"),
    (["bench", "m", "--batch-sizes", "1e9"], "--batch-sizes"),
    (["bench", "m", "--batch-sizes", "1,1000000000"], "batch size"),
    (["verify", "exp", "--batch-sizes", "1000000000"], "--batch-sizes"),
    (["verify", "exp", "--seed", "-1"], "--seed"),
    (["verify", "exp", "--seed", str(2**70)], "--seed"),
    (["export", "w.pth", "--batch-sizes", "1000000000"], "--batch-sizes"),
    (["export", "w.pth", "--input-size", "100000"], "--input-size"),
    (["export", "w.pth", "--resize", "100000"], "--resize"),
    (["export", "w.pth", "--int8-min-agreement", "2"], "--int8-min-agreement"),
    (["predict", "m.onnx", "photos", "--top-k", "1000000000"], "--top-k"),
    (["predict", "m.onnx", "photos", "--batch-size", "1000000000"], "--batch-size"),
    (["train", "digits", "--epochs", "1000000000"], "--epochs"),
    (["train", "digits", "--batch-size", "1000000000"], "--batch-size"),
    (["train", "digits", "--input-size", "100000"], "--input-size"),
    (["demo", "--epochs", "1000000000"], "--epochs"),
    (["compare", "a.json", "b.json", "--threshold", "nan"], "threshold"),
    (["compare", "a.json", "b.json", "--threshold", "inf"], "--threshold"),
    (["triton", "exp", "--max-batch-size", str(10**12)], "--max-batch-size"),
    (["triton", "exp", "--queue-delay-us", "-1"], "--queue-delay-us"),
    (["triton", "exp", "--queue-delay-us", str(2**64)], "--queue-delay-us"),
    (["triton", "exp", "--instances", "1000000000"], "instances"),
    (["serve", "exp", "--max-batch-size", str(10**12)], "--max-batch-size"),
    (["serve", "exp", "--port", "70000"], "--port"),
]


@pytest.mark.parametrize(("args", "fragment"), COUNTS, ids=[" ".join(a) for a, _ in COUNTS])
def test_counts_that_cannot_finish_are_refused_before_any_work(
    workspace: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    tiny_export: Path,
    args: list[str],
    fragment: str,
) -> None:
    _stopped(monkeypatch)
    copy_export(tiny_export, workspace / "exp")
    report = json.dumps(_report({("ort", 1): 10.0}))
    (workspace / "a.json").write_text(report)
    (workspace / "b.json").write_text(report)
    result = invoke(*args, "--out", "out") if args[0] in ("bench", "triton") else invoke(*args)
    assert_one_error(result, fragment)
    assert not (workspace / "out").exists()


# Number options that are not counts: the opset is checked against what onnx knows, a learning
# rate and a weight decay are any positive number (train checks them finite).
NOT_COUNTS = {"opset", "lr", "weight_decay"}
# serve's floats (body size and timeout, CPU and GPU shares) are bounded by ServeConfig, which
# says its ranges in --help text (a Click FloatRange calls NaN "over the maximum"): the server's
# tests hold them.


def _kinds(param: Any) -> set[type]:
    import typing

    annotation = param.type_descriptor.annotation
    return set(typing.get_args(annotation)) or {annotation}


def _count_options() -> list[tuple[str, Any]]:
    """(``"command --option"``, the option) for every int and float option of every command."""
    import typer.main

    from resnext_deploy.cli import app

    group = typer.main.get_command(app)
    return [
        (f"{name} --{param.name.replace('_', '-')}", param)
        for name, command in group.commands.items()  # type: ignore[attr-defined]
        for param in command.params
        if _kinds(param) & {int, float} and param.name not in NOT_COUNTS
    ]


def test_every_count_option_says_its_bounds_in_help() -> None:
    """Every count option of every command has a lower and an upper bound, which ``--help``
    shows."""
    unbounded = {
        name
        for name, param in _count_options()
        if param.min is None or param.max is None
        if not (name.startswith("serve ") and float in _kinds(param))
    }
    assert sorted(unbounded) == []
    result = invoke("bench", "--help", env={"COLUMNS": "250"})
    assert "0<=x<=1000" in result.stdout and "1<=x<=2000" in result.stdout


def test_the_cli_bounds_are_the_configs_bounds() -> None:
    """Bounds the CLI declares without importing torch equal those the configs check."""
    from resnext_deploy import train, verify
    from resnext_deploy.bench import run as bench
    from resnext_deploy.cli import options
    from resnext_deploy.export import triton
    from resnext_deploy.serve import config as serving

    assert options.MAX_SEED == train.MAX_SEED == bench.MAX_SEED == verify.MAX_SEED
    assert options.MAX_VERIFY_BATCH_SIZE == verify.MAX_BATCH_SIZE
    assert options.MAX_EPOCHS == train.MAX_EPOCHS
    assert options.MAX_TRAIN_BATCH_SIZE == train.MAX_BATCH_SIZE
    assert options.MAX_TRAIN_INPUT_SIZE == train.MAX_INPUT_SIZE
    assert options.MAX_VAL_FRACTION == train.MAX_VAL_FRACTION
    # one --max-batch-size and one --threads for triton, serve and bench
    assert triton.MAX_BATCH_SIZE == serving.MAX_BATCH_SIZE
    assert bench.MAX_THREADS == serving.MAX_THREADS


@pytest.mark.parametrize(
    "changes",
    [
        {"timing": Timing(warmup=10**9)},
        {"timing": Timing(min_iters=1, max_iters=10**9)},
        {"timing": Timing(min_time_s=float("nan"))},
        {"timing": Timing(max_time_s=float("inf"))},
        {"threads": 10**6},
        {"batch_sizes": (1, 10**9)},
        {"seed": -1},
        {"seed": 2**70},
    ],
)
def test_bench_config_refuses_counts_that_cannot_finish(changes: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        BenchConfig(**changes)


@pytest.mark.parametrize(
    "changes",
    [
        {"max_batch_size": 10**12},
        {"max_queue_delay_us": -1},
        {"max_queue_delay_us": 2**64},
        {"instances": 10**9},
        {"instances": 0},
        {"max_batch_size": 8, "preferred_batch_sizes": (4, 16)},
        {"max_batch_size": 8.5},
    ],
)
def test_triton_config_refuses_numbers_its_fields_cannot_carry(changes: dict[str, Any]) -> None:
    """config.pbtxt's max_batch_size is an int32, max_queue_delay_microseconds a uint64."""
    with pytest.raises(ConfigError):
        TritonConfig(**changes)


# --- class 3 and 8: report files that are not measurements --------------------------------------


def _with_p50(value: Any) -> str:
    data = _report({("onnxruntime-cpu", 1): 10.0})
    data["results"][0]["stats"]["p50_ms"] = value
    return json.dumps(data)


BAD_REPORTS = {
    "nan-p50": _with_p50(float("nan")),  # json.dumps writes NaN, which json.loads reads
    "negative-p50": _with_p50(-5.0),
    "string-p50": _with_p50("fast"),
    "null-p50": _with_p50(None),
    "huge-float-p50": _with_p50(1e300).replace("1e+300", "1e999"),  # inf when parsed
    "5000-digit-integer": _with_p50(10).replace('"p50_ms": 10', '"p50_ms": ' + "9" * 5000),
    "nested-10000-deep": "[" * 10000 + "]" * 10000,
    "threads-inf": json.dumps(_report({("ort", 1): 1.0})).replace(
        '"threads": 2', '"threads": 1e999'
    ),
}


@pytest.mark.parametrize("bad", list(BAD_REPORTS))
def test_compare_and_triton_refuse_reports_whose_figures_are_not_measurements(
    workspace: Path,  # noqa: F811
    tiny_export: Path,
    bad: str,
) -> None:
    """NaN and negative medians compared as "no regression"; a string median, a huge integer,
    deep nesting or an infinite count were tracebacks."""
    (workspace / "good.json").write_text(_with_p50(10.0))
    (workspace / "bad.json").write_text(BAD_REPORTS[bad])
    for old, new in (("good.json", "bad.json"), ("bad.json", "good.json")):
        assert_one_error(invoke("compare", old, new), "bad.json")
    result = invoke("triton", tiny_export, "--out", "repo", "--bench-report", "bad.json")
    assert_one_error(result, "bad.json")
    assert not (workspace / "repo").exists()


def _limited() -> None:
    """A child that would read /dev/zero to the end dies of MemoryError, not the machine."""
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "folder"])
def test_compare_refuses_what_is_not_a_regular_file_without_blocking(
    workspace: Path,  # noqa: F811
    kind: str,
) -> None:
    (workspace / "good.json").write_text(_with_p50(10.0))
    if kind == "fifo":
        os.mkfifo(workspace / "pipe.json")
        bad = "pipe.json"
    elif kind == "folder":
        (workspace / "dir.json").mkdir()
        bad = "dir.json"
    else:
        bad = "/dev/zero"
    run = subprocess.run(
        [str(CLI), "compare", "good.json", bad],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=_limited,  # noqa: PLW1509 - no threads in the child before exec
        cwd=workspace,
    )
    assert run.returncode == 1, run.stderr
    errors = [ln for ln in run.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and bad in errors[0] and "Traceback" not in run.stderr, run.stderr
    assert "not a regular file" in errors[0] or "folder" in errors[0]


def test_load_report_reads_every_committed_report() -> None:
    """The checks refuse nothing a benchmark wrote."""
    root = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
    read = 0
    for path in sorted(root.glob("*.json")):
        data = json.loads(path.read_text())
        if isinstance(data, dict) and "batch_sizes" in data and "results" in data:
            assert load_report(path).results
            read += 1
    assert read >= 5
