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
    EngineOpt,
    ExportDir,
    Force,
    GpusPerReplica,
    GrpcPort,
    Host,
    Instances,
    MaxBatchSize,
    MaxBodyMb,
    MetricsPort,
    ModelName,
    Port,
    ProviderOpt,
    QueueDelayUs,
    RayAddress,
    Replicas,
    Threads,
    VariantOpt,
    WriteConfig,
    parse_ints,
)
from resnext_deploy.errors import ConfigError
from resnext_deploy.predict import choose_engine
from resnext_deploy.recommendation import Engine, EngineChoice
from resnext_deploy.runtime.providers import ConvAlgoSearch, Provider
from resnext_deploy.serve.config import (
    DEFAULT_BODY_TIMEOUT_S,
    DEFAULT_MAX_UPLOADS,
    MAX_BODY_TIMEOUT_S,
    MAX_UPLOADS,
    ServeConfig,
)
from resnext_deploy.terminal import styled

ServeVariant = Annotated[
    Variant | None,
    typer.Option(help="Which ONNX file of the export \\[default: fp32; auto: the recorded one]."),
]
# Serve's limits on request bodies (kept here until cli/options.py takes them).
BodyTimeoutS = Annotated[
    float,
    typer.Option(
        # The config checks the range: Click's FloatRange would call NaN "over the maximum".
        help=f"Seconds a request body may take to arrive, over 0 and at most "
        f"{MAX_BODY_TIMEOUT_S:g} (408 after it); read before the request reaches a replica.",
    ),
]
MaxUploads = Annotated[
    int,
    typer.Option(
        min=1,
        max=MAX_UPLOADS,
        help="Request bodies read at once (each up to --max-body-mb); more wait, up to the "
        "body timeout.",
    ),
]


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
    queue_delay_us: QueueDelayUs = 100,
    gpu: Annotated[
        bool, typer.Option(help="KIND_GPU instances with CUDA provider options.")
    ] = False,
    instances: Instances = 1,
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
    variant: ServeVariant = None,
    provider: ProviderOpt = Provider.CPU,
    engine: EngineOpt = EngineChoice.ONNXRUNTIME,
    name: ModelName = None,
    replicas: Replicas = 1,
    max_batch_size: MaxBatchSize = 32,
    batch_wait_ms: BatchWaitMs = 5.0,
    batching: Batching = True,
    host: Host = "127.0.0.1",
    port: Port = 8000,
    grpc_port: GrpcPort = None,
    address: RayAddress = None,
    threads: Threads = None,
    cpus_per_replica: CpusPerReplica = 1.0,
    gpus_per_replica: GpusPerReplica = 1.0,
    max_body_mb: MaxBodyMb = 64.0,
    body_timeout_s: BodyTimeoutS = DEFAULT_BODY_TIMEOUT_S,
    max_uploads: MaxUploads = DEFAULT_MAX_UPLOADS,
    metrics_port: MetricsPort = None,
    access_log: AccessLog = True,
    write_config: WriteConfig = None,
) -> None:
    """Serve an export on Ray Serve (Open Inference Protocol over HTTP, and gRPC with
    --grpc-port), until Ctrl-C."""
    chosen_engine, chosen_variant = served_engine(
        export_dir, engine, variant, max_batch_size, provider
    )
    config = ServeConfig(
        export_dir=export_dir,
        variant=chosen_variant,
        provider=provider,
        engine=chosen_engine,
        model_name=name,
        replicas=replicas,
        max_batch_size=max_batch_size,
        batch_wait_ms=batch_wait_ms,
        batching=batching,
        host=host,
        port=port,
        grpc_port=grpc_port,
        address=address,
        threads=threads,
        cpus_per_replica=cpus_per_replica,
        gpus_per_replica=gpus_per_replica,
        max_body_bytes=ServeConfig.body_bytes(max_body_mb),
        body_timeout_s=body_timeout_s,
        max_uploads=max_uploads,
        metrics_port=metrics_port,
        access_log=access_log,
    )
    _write_or_serve(config, write_config)


def _write_or_serve(config: ServeConfig, write_config: Path | None) -> None:
    """Write the Serve config file where asked, else serve until a signal."""
    from resnext_deploy.render import print_serving
    from resnext_deploy.serve.run import serve_model, write_serve_config

    if write_config is not None:
        written = write_serve_config(config, write_config)
        out.print(styled("wrote", "green"), str(written), highlight=False)
        return
    serve_model(
        config,
        on_ready=lambda info: print_serving(err, info),
        on_starting=lambda: err.print("starting Ray and deploying the model ..."),
    )
    err.print("stopped")


def served_engine(
    export_dir: Path,
    engine: EngineChoice,
    variant: Variant | None,
    max_batch_size: int,
    provider: Provider,
) -> tuple[Engine, Variant]:
    """The engine and variant ``serve`` runs: as named, or with ``auto`` the ones the manifest
    records for batches of ``max_batch_size`` (then ``--variant`` is refused: auto chooses it)."""
    chosen = choose_engine(export_dir, engine, max_batch_size, provider)
    if chosen.pick is None:
        return chosen.engine, variant or Variant.FP32
    if variant is not None:
        raise ConfigError(
            "--engine auto chooses the variant too: leave --variant out, or name the engine"
        )
    for line in chosen.notes():
        err.print(line)
    return chosen.engine, Variant(chosen.pick.variant)


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
