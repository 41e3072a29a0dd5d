"""Commands for serving, embedding and the machine: ``triton``, ``serve``, ``web``, ``doctor``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from resnext_deploy.artifact import Variant
from resnext_deploy.cli.app import app, emit_json, err, handles_errors, out, warn_unlisted
from resnext_deploy.cli.options import (
    AccessLog,
    AlgoSearch,
    AsJson,
    Batching,
    BatchWaitMs,
    CpusPerReplica,
    ExportDir,
    Force,
    GpusPerReplica,
    Host,
    MaxBatchSize,
    MaxBodyMb,
    MetricsPort,
    ModelName,
    Port,
    ProviderOpt,
    RayAddress,
    Replicas,
    Threads,
    VariantOpt,
    WriteConfig,
    parse_ints,
)
from resnext_deploy.runtime.providers import ConvAlgoSearch, Provider


@app.command()
@handles_errors
def triton(
    export_dir: ExportDir,
    out_dir: Annotated[Path, typer.Option("--out", help="Model repository to create.")] = Path(
        "triton-models"
    ),
    name: ModelName = None,
    variant: VariantOpt = Variant.FP32,
    max_batch_size: MaxBatchSize = 32,
    preferred: Annotated[str | None, typer.Option(help="Preferred batch sizes, e.g. 8,16.")] = None,
    bench_report: Annotated[
        Path | None,
        typer.Option(
            help="Take preferred batch sizes from a `bench` JSON (highest onnxruntime throughput)."
        ),
    ] = None,
    queue_delay_us: Annotated[int, typer.Option(help="max_queue_delay_microseconds.")] = 100,
    gpu: Annotated[
        bool, typer.Option(help="KIND_GPU instances with CUDA provider options.")
    ] = False,
    instances: Annotated[int, typer.Option(help="Instances per device.")] = 1,
    algo_search: AlgoSearch = ConvAlgoSearch.EXHAUSTIVE,
    force: Force = False,
) -> None:
    """Write a Triton Inference Server model repository (onnxruntime backend) for an export."""
    from resnext_deploy.artifact import open_artifact
    from resnext_deploy.bench.report import load_report
    from resnext_deploy.export.triton import TritonConfig, write_repository
    from resnext_deploy.render import print_triton_repository
    from resnext_deploy.runtime.providers import CudaOptions

    sizes: tuple[int, ...] = parse_ints(preferred, "--preferred") if preferred else ()
    if bench_report is not None:
        sizes = load_report(bench_report).preferred_batch_sizes(max_batch_size)
    config = TritonConfig(
        model_name=name,
        variant=variant,
        max_batch_size=max_batch_size,
        preferred_batch_sizes=sizes,
        max_queue_delay_us=queue_delay_us,
        gpu=gpu,
        instances=instances,
        # TF32 off: `verify` checks CUDA parity with TF32 off; serve what was verified.
        cuda=CudaOptions(cudnn_conv_algo_search=algo_search, use_tf32=False),
    )
    warn_unlisted(open_artifact(export_dir, check_hashes=False))  # write_repository checks hashes
    model_dir = write_repository(export_dir, out_dir, config, overwrite=force)
    print_triton_repository(out, model_dir, out_dir, gpu)


@app.command()
@handles_errors
def serve(
    export_dir: ExportDir,
    variant: VariantOpt = Variant.FP32,
    provider: ProviderOpt = Provider.CPU,
    name: ModelName = None,
    replicas: Replicas = 1,
    max_batch_size: MaxBatchSize = 32,
    batch_wait_ms: BatchWaitMs = 5.0,
    batching: Batching = True,
    host: Host = "127.0.0.1",
    port: Port = 8000,
    address: RayAddress = None,
    threads: Threads = None,
    cpus_per_replica: CpusPerReplica = 1.0,
    gpus_per_replica: GpusPerReplica = 1.0,
    max_body_mb: MaxBodyMb = 64.0,
    metrics_port: MetricsPort = None,
    access_log: AccessLog = True,
    write_config: WriteConfig = None,
) -> None:
    """Serve an export over HTTP on Ray Serve (Open Inference Protocol), until Ctrl-C."""
    from resnext_deploy.render import print_serving
    from resnext_deploy.serve.config import ServeConfig
    from resnext_deploy.serve.run import serve_model, write_serve_config

    config = ServeConfig(
        export_dir=export_dir,
        variant=variant,
        provider=provider,
        model_name=name,
        replicas=replicas,
        max_batch_size=max_batch_size,
        batch_wait_ms=batch_wait_ms,
        batching=batching,
        host=host,
        port=port,
        address=address,
        threads=threads,
        cpus_per_replica=cpus_per_replica,
        gpus_per_replica=gpus_per_replica,
        max_body_bytes=int(max_body_mb * (1 << 20)),
        metrics_port=metrics_port,
        access_log=access_log,
    )
    if write_config is not None:
        out.print(f"[green]wrote[/] {write_serve_config(config, write_config)}", highlight=False)
        return
    err.print("starting Ray and deploying the model ...")
    serve_model(config, lambda info: print_serving(err, info))
    err.print("stopped")


@app.command()
@handles_errors
def web(
    export_dir: ExportDir,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write the site into.")] = Path(
        "site"
    ),
    variant: Annotated[
        Variant | None,
        typer.Option(
            help="ONNX file the page runs \\[default: preprocess when the export has it, else "
            "fp32].",
            show_default=False,
        ),
    ] = None,
    ort_web: Annotated[
        Path | None,
        typer.Option(
            help="Folder of the onnxruntime-web npm package \\[default: installed once by npm "
            "into ~/.cache/resnext-deploy]."
        ),
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace a site this command wrote.")] = False,
    as_json: AsJson = False,
) -> None:
    """Write a static page that classifies images in the browser with onnxruntime-web."""
    from resnext_deploy.render import print_site
    from resnext_deploy.web.site import WebConfig, write_site

    config = WebConfig(variant=variant, overwrite=force, ort_web=ort_web)
    with err.status("writing the site ..."):
        site = write_site(export_dir, out_dir, config)
    if as_json:
        emit_json(site.to_dict())
    else:
        print_site(out, site)


@app.command()
@handles_errors
def doctor(
    provider: Annotated[
        Provider, typer.Option(help="The provider to check and smoke-test.")
    ] = Provider.CPU,
    as_json: AsJson = False,
) -> None:
    """Check this machine: onnxruntime, CUDA libraries, driver and GPU, CPU features, and a live
    smoke test on a tiny built-in ResNeXt (exit 1 on any FAIL)."""
    from resnext_deploy.doctor import run_doctor, stdout_to_stderr
    from resnext_deploy.render import print_doctor

    with stdout_to_stderr(), err.status("checking ...") as status:
        report = run_doctor(provider, lambda step: status.update(f"checking {step} ..."))
    if as_json:
        emit_json(report.to_dict())
    else:
        print_doctor(out, report)
    if not report.passed:
        raise typer.Exit(1)
