"""Commands that measure: ``bench``, ``compare``, and the ``demo`` that runs every step."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from resnext_deploy.bench.backends import chosen_backends
from resnext_deploy.bench.compare import MAX_THRESHOLD_PCT
from resnext_deploy.cli.app import app, command_line, emit_json, err, handles_errors, out
from resnext_deploy.cli.options import (
    MAX_EPOCHS,
    AlgoSearch,
    AsJson,
    Backends,
    BenchBatchSizes,
    BenchModelArg,
    BenchProvider,
    CudaGraph,
    Engines,
    MaxTime,
    MaxWorkspace,
    MinIters,
    MinTime,
    Overhead,
    Peers,
    PreferNhwc,
    Profile,
    Record,
    ResultsOut,
    ResultStem,
    Tf32,
    Threads,
    TrtFp16,
    Tune,
    Warmup,
    Weights,
    parse_ints,
)
from resnext_deploy.runtime.providers import (
    ConvAlgoSearch,
    CudaOptions,
    Provider,
    TensorRTOptions,
)
from resnext_deploy.timing import Timing


@app.command()
@handles_errors
def bench(
    model: BenchModelArg,
    provider: BenchProvider = Provider.CPU,
    backend: Backends = None,
    peers: Peers = False,
    engines: Engines = False,
    record: Record = False,
    batch_sizes: BenchBatchSizes = None,
    checkpoint: Weights = None,
    threads: Threads = None,
    warmup: Warmup = 3,
    min_iters: MinIters = 10,
    min_time: MinTime = 1.0,
    max_time: MaxTime = 20.0,
    tune: Tune = False,
    algo_search: AlgoSearch = ConvAlgoSearch.EXHAUSTIVE,
    max_workspace: MaxWorkspace = True,
    prefer_nhwc: PreferNhwc = False,
    tf32: Tf32 = True,
    cuda_graph: CudaGraph = False,
    trt_fp16: TrtFp16 = False,
    out_dir: ResultsOut = Path("benchmarks/results"),
    name: ResultStem = None,
    overhead: Overhead = True,
    profile: Profile = False,
    as_json: AsJson = False,
) -> None:
    """Latency and throughput across batch sizes, every backend side by side."""
    from resnext_deploy.bench.recommend import check_recordable, run_and_record
    from resnext_deploy.bench.run import BenchConfig, held_variants, run_benchmark
    from resnext_deploy.render import bench_progress, print_bench_run, print_recorded

    engines = engines or record
    config = BenchConfig(
        backends=chosen_backends(backend, peers, engines),
        batch_sizes=parse_ints(batch_sizes, "--batch-sizes") if batch_sizes else None,
        provider=provider,
        threads=threads,
        timing=Timing(warmup=warmup, min_iters=min_iters, min_time_s=min_time, max_time_s=max_time),
        cuda=cuda_options(algo_search, max_workspace, prefer_nhwc, tf32, cuda_graph),
        tensorrt=TensorRTOptions(fp16=trt_fp16),
        tune=tune,
        measure_overhead=overhead,
        profile=profile,
        out_dir=out_dir,
        name=name,
        command=command_line(),
        engines=engines,
    )
    if record:
        check_recordable(model, config)  # before the progress bar: one line, no work
    planned = config.with_engines(held_variants(model) if engines else ()).planned_measurements()
    with bench_progress(err, planned) as progress:
        recorded = run_and_record(model, config, progress) if record else None
        run = recorded.run if recorded else run_benchmark(model, config, checkpoint, progress)
    if as_json:  # stdout holds the one JSON document; the tables are left out
        sys.stdout.write(run.report.to_json() + "\n")
    print_bench_run(out, err, run, tables=not as_json)
    if recorded:
        print_recorded(err if as_json else out, recorded)


def cuda_options(
    algo_search: ConvAlgoSearch, max_workspace: bool, prefer_nhwc: bool, tf32: bool, graph: bool
) -> CudaOptions:
    """``bench``'s CUDA options as the provider's config."""
    return CudaOptions(
        cudnn_conv_algo_search=algo_search,
        cudnn_conv_use_max_workspace=max_workspace,
        prefer_nhwc=prefer_nhwc,
        use_tf32=tf32,
        enable_cuda_graph=graph,
    )


@app.command()
@handles_errors
def compare(
    old: Annotated[Path, typer.Argument(help="Baseline JSON report.")],
    new: Annotated[Path, typer.Argument(help="New JSON report.")],
    threshold: Annotated[
        float,
        typer.Option(
            min=0.0, max=MAX_THRESHOLD_PCT, help="Slowdown in percent that counts as a regression."
        ),
    ] = 10.0,
    as_json: AsJson = False,
) -> None:
    """Median latency change per backend and batch size; exit 1 if anything regressed."""
    from resnext_deploy.bench.compare import compare_reports
    from resnext_deploy.bench.report import load_report
    from resnext_deploy.render import print_comparison

    changes = compare_reports(load_report(old), load_report(new), threshold)
    if as_json:
        emit_json([c.to_dict() for c in changes])
    else:
        print_comparison(out, changes, threshold)
    if any(c.regression for c in changes):
        raise typer.Exit(1)


@app.command()
@handles_errors
def demo(
    epochs: Annotated[int, typer.Option(min=1, max=MAX_EPOCHS, help="Training epochs.")] = 10,
    run_dir: Annotated[Path, typer.Option("--out", help="Run directory.")] = Path("runs/demo"),
    export_dir: Annotated[Path, typer.Option(help="Export directory (replaced).")] = Path(
        "exported/demo-digits"
    ),
) -> None:
    """Train on the bundled digits, export, verify, compare accuracy, benchmark and predict."""
    from resnext_deploy.demo import DemoConfig, run_demo

    run_demo(DemoConfig(run_dir=run_dir, export_dir=export_dir, epochs=epochs), out, err)
