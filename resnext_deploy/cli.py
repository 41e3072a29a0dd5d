"""The ``resnext-deploy`` command line: options -> config object -> library call -> rendering.

User errors (:class:`DeployError`) and usage errors (a bad option or argument) end in one
``error:`` line on stderr and exit status 1; Ctrl-C and SIGTERM end a command alike (status 130 or
143), with its cleanup run. Heavy imports happen inside commands so that ``predict`` never
imports torch.
"""

from __future__ import annotations

import functools
import json
import math
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from resnext_deploy.artifact import Precision, Variant
from resnext_deploy.bench.backends import BenchBackend
from resnext_deploy.errors import DeployError
from resnext_deploy.export.calibration import CalibrationMethod
from resnext_deploy.runtime.providers import ConvAlgoSearch, Provider
from resnext_deploy.spec import Layout, Optimizer

USAGE_EXIT_CODE = 1  # as for every other bad input (README, "Commands")
ANSI_CODES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")


def plain(text: str) -> str:
    """``text`` as one safe terminal line: colour codes removed (torch puts them in its error
    messages), line breaks made spaces, other control characters (a hostile file name) shown
    escaped, and Rich markup escaped (a file named ``[red]x.png`` is text)."""
    text = ANSI_CODES.sub("", text).replace("\r\n", " ").replace("\n", " ").replace("\t", " ")
    return escape("".join(c if c.isprintable() else repr(c)[1:-1] for c in text))


# Click's UsageError: Typer >= 0.29 vendors its own copy of Click, older ones use Click itself.
UsageError: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError"
)


@contextmanager
def usage_errors_on_one_line() -> Iterator[None]:
    """Click reports a bad command line (unknown option, missing argument, value out of range) in
    a boxed panel with exit status 2; report it like any other bad input instead: one ``error:``
    line on stderr and exit status 1. A bare ``resnext-deploy`` still prints the help."""
    try:
        yield
    except UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":
            raise
        ctx = getattr(exc, "ctx", None)
        where = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        text = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        message = plain(text.rstrip(". ") + where)
        err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
        raise typer.Exit(USAGE_EXIT_CODE) from None


class OneLineErrorsGroup(TyperGroup):
    """The command group, with usage errors on one line (see :func:`usage_errors_on_one_line`)."""

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        with usage_errors_on_one_line():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: Any) -> Any:
        with usage_errors_on_one_line():
            return super().invoke(ctx)


app = typer.Typer(
    name="resnext-deploy",
    cls=OneLineErrorsGroup,
    help="Export, verify, run and benchmark ResNeXt image classifiers (TorchScript + ONNX).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
out = Console()
err = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


class OutputFormat(StrEnum):
    TABLE = "table"
    JSON = "json"
    CSV = "csv"


def handles_errors(func: F) -> F:
    """Turn :class:`DeployError` into one clear line and a non-zero exit, with no traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from resnext_deploy.interrupts import Interrupted, handle_signals, raise_if_interrupted

        try:
            with handle_signals():  # SIGTERM cleans up like Ctrl-C
                try:
                    return func(*args, **kwargs)
                except DeployError:
                    raise_if_interrupted()  # torch.onnx.export turns Ctrl-C into its own error
                    raise
        except DeployError as exc:
            err.print(f"[bold red]error:[/] {plain(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt as exc:
            signal_exc = exc if isinstance(exc, Interrupted) else Interrupted()
            err.print(
                f"interrupted ({signal_exc}); nothing half-written was left behind",
                markup=False,
                highlight=False,
            )
            raise typer.Exit(signal_exc.exit_code) from None

    return wrapper  # type: ignore[return-value]


def parse_ints(text: str, what: str) -> tuple[int, ...]:
    from resnext_deploy.errors import ConfigError

    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"{what} must be comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise ConfigError(f"{what} must be positive integers, got {text!r}")
    return values


def parse_floats3(text: str | None, what: str) -> tuple[float, float, float] | None:
    from resnext_deploy.errors import ConfigError

    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or not all(math.isfinite(v) for v in values):
        raise ConfigError(f"{what} needs three comma-separated finite numbers, got {text!r}")
    return values  # type: ignore[return-value]


def read_class_names(text: str | None) -> tuple[str, ...]:
    """``a,b,c`` or ``@file`` with one name per line."""
    from resnext_deploy.errors import ConfigError

    if not text:
        return ()
    if text.startswith("@"):
        path = Path(text[1:])
        if not path.is_file():
            raise ConfigError(f"class-names file not found: {path}")
        return tuple(ln.strip() for ln in path.read_text().splitlines() if ln.strip())
    return tuple(n.strip() for n in text.split(",") if n.strip())


def command_line() -> str:
    """The command as the user typed it, for result files."""
    return "resnext-deploy " + " ".join(sys.argv[1:])


def warn_unlisted(artifact: Any) -> None:
    """Files in an export that its manifest does not list are never used; say so on stderr."""
    if artifact.unlisted:
        err.print(
            f"[yellow]warning:[/] {plain(str(artifact.path))} holds files its manifest does not "
            f"list, which are not used: {plain(', '.join(artifact.unlisted))}",
            highlight=False,
            soft_wrap=True,
        )


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


@app.command()
@handles_errors
def models(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List the registered architectures with parameters and GMACs."""
    from resnext_deploy.models.registry import ARCHS, describe

    infos = [describe(name) for name in ARCHS.names()]
    if as_json:
        emit_json(
            [
                {"name": i.name, "params": i.params, "gmacs": i.gmacs, "config": i.config.to_dict()}
                for i in infos
            ]
        )
        return
    from resnext_deploy.render import print_models

    print_models(out, infos)


@app.command()
@handles_errors
def export(
    checkpoint: Annotated[
        Path, typer.Argument(help="State dict (.pth/.pt), any supported layout.")
    ],
    arch: Annotated[
        str | None,
        typer.Option(
            help="Architecture name (see `models`); read from "
            "the checkpoint when it was saved by `train`."
        ),
    ] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Output directory \\[default: exported/<arch>].")
    ] = None,
    num_classes: Annotated[
        int | None,
        typer.Option(
            min=1, help="Check the classifier has this many classes \\[default: inferred]."
        ),
    ] = None,
    class_names: Annotated[str | None, typer.Option(help="Comma-separated names or @file.")] = None,
    layout: Annotated[
        Layout | None,
        typer.Option(
            help="Checkpoint layout \\[default: detected from the keys].", show_default=False
        ),
    ] = None,
    input_size: Annotated[int | None, typer.Option(min=1, help="Input side in pixels.")] = None,
    resize: Annotated[
        int | None, typer.Option(min=1, help="Shorter side before the centre crop.")
    ] = None,
    mean: Annotated[
        str | None, typer.Option(help="Normalisation mean, e.g. 0.485,0.456,0.406")
    ] = None,
    std: Annotated[
        str | None, typer.Option(help="Normalisation std, e.g. 0.229,0.224,0.225")
    ] = None,
    opset: Annotated[int, typer.Option(help="ONNX opset (18 to the newest onnx knows).")] = 20,
    image: Annotated[
        list[Path] | None, typer.Option(help="Image or folder for the parity gate (repeatable).")
    ] = None,
    batch_sizes: Annotated[str, typer.Option(help="Parity batch sizes.")] = "1,2,3,8",
    precision: Annotated[
        list[Precision] | None,
        typer.Option(
            help="Variants to write besides fp32 (repeatable, e.g. --precision fp16 --precision "
            "int8); fp32 is always written: the others derive from it.",
            show_default=False,
        ),
    ] = None,
    calibration: Annotated[
        str | None,
        typer.Option(
            help="int8 calibration images: a folder, or 'digits' for a digits-trained model."
        ),
    ] = None,
    int8_min_agreement: Annotated[
        float,
        typer.Option(
            help="int8 gate: top-1 agreement with fp32 on held-out images. The layers adding the "
            "most quantization error stay fp32, as few as reach it; refused if none do."
        ),
    ] = 0.99,
    calibration_method: Annotated[
        CalibrationMethod, typer.Option(help="How int8 activation ranges are calibrated.")
    ] = CalibrationMethod.MINMAX,
    embed_preprocess: Annotated[
        bool,
        typer.Option(
            help="Also write a graph that takes uint8 NHWC images and returns probabilities."
        ),
    ] = False,
    force: Annotated[bool, typer.Option(help="Replace an existing output directory.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Export a checkpoint to TorchScript and ONNX, gated by a parity check."""
    from resnext_deploy.export.calibration import CalibrationConfig
    from resnext_deploy.export.pipeline import ExportConfig, export_checkpoint
    from resnext_deploy.models.checkpoint import LoadOptions
    from resnext_deploy.render import print_export
    from resnext_deploy.verify import VerifyConfig

    load = LoadOptions(
        arch=arch,
        num_classes=num_classes,
        class_names=read_class_names(class_names),
        layout=layout,
        input_size=input_size,
        resize=resize,
        mean=parse_floats3(mean, "--mean"),
        std=parse_floats3(std, "--std"),
    )
    verify = VerifyConfig(
        batch_sizes=parse_ints(batch_sizes, "--batch-sizes"), images=tuple(image or ())
    )
    config = ExportConfig(
        out_dir=out_dir,
        opset=opset,
        overwrite=force,
        verify=verify,
        precisions=tuple(p for p in Precision if p is Precision.FP32 or p in (precision or ())),
        embed_preprocess=embed_preprocess,
        calibration=CalibrationConfig(
            source=calibration, min_agreement=int8_min_agreement, method=calibration_method
        ),
    )
    with err.status(f"exporting {checkpoint} ..."):
        result = export_checkpoint(checkpoint, load, config)
    if as_json:
        emit_json(
            {
                "out_dir": str(result.out_dir),
                "spec": result.spec.to_dict(),
                "files": result.files,
                "conv_groups": result.convs.by_group,
                "parity": result.parity.to_dict(),
                "int8": result.int8.to_dict() if result.int8 else None,
            }
        )
        return
    print_export(out, result)


@app.command()
@handles_errors
def verify(
    export_dir: Annotated[Path, typer.Argument(help="An export directory.")],
    image: Annotated[list[Path] | None, typer.Option(help="Image or folder (repeatable).")] = None,
    batch_sizes: Annotated[str, typer.Option(help="Batch sizes to compare at.")] = "1,2,3,8",
    provider: Annotated[
        list[Provider] | None,
        typer.Option(
            help="onnxruntime provider that must run (repeatable) \\[default: cpu, plus cuda when "
            "usable]."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random inputs.")] = 0,
    localize: Annotated[
        bool,
        typer.Option(
            help="Compare every ONNX variant layer by layer with eager and name the first module "
            "beyond tolerance (done for failing backends anyway)."
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Check eager vs TorchScript vs onnxruntime parity of an export (exit 1 on failure)."""
    from resnext_deploy.artifact import open_artifact
    from resnext_deploy.render import print_parity
    from resnext_deploy.verify import VerifyConfig, verify_artifact

    artifact = open_artifact(export_dir)
    warn_unlisted(artifact)
    config = VerifyConfig(
        batch_sizes=parse_ints(batch_sizes, "--batch-sizes"),
        images=tuple(image or ()),
        seed=seed,
        providers=tuple(provider or (Provider.CPU,)),
        auto_cuda=not provider,
    )
    with err.status("comparing backends ..."):
        report = verify_artifact(artifact, config)
    from resnext_deploy.localize import LocalizeConfig, localization_targets, localize_artifact

    where = LocalizeConfig(images=tuple(image or ()), seed=seed)
    targets = localization_targets(report, artifact, where, everything=localize)
    localization = None
    if targets:
        with err.status("comparing layer by layer ..."):
            localization = localize_artifact(artifact, where, targets)
    if as_json:
        extra = {"localization": localization.to_dict()} if localization else {}
        emit_json(report.to_dict() | extra)
    else:
        from resnext_deploy.render import print_localization

        print_parity(out, report)
        if localization:
            print_localization(out, localization)
    if not report.passed:
        failed = ", ".join(b.backend for b in report.backends if not b.passed)
        err.print(
            f"[bold red]error:[/] parity check failed for {plain(failed)} (see the report)",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1)


@app.command()
@handles_errors
def inspect(
    path: Annotated[Path, typer.Argument(help=".onnx file, TorchScript .pt file or export dir.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show metadata, inputs/outputs, opset, operator counts and Conv groups of a model file."""
    from resnext_deploy.inspect_model import inspect_file
    from resnext_deploy.render import print_model_info

    info = inspect_file(path)
    if as_json:
        emit_json(info.to_dict())
    else:
        print_model_info(out, info)


@app.command()
@handles_errors
def train(
    data: Annotated[
        str,
        typer.Argument(
            help="ImageFolder directory (class per subfolder), or "
            "'digits' for scikit-learn's bundled digits."
        ),
    ] = "digits",
    arch: Annotated[str, typer.Option(help="Registered architecture.")] = "resnext11_mini",
    out_dir: Annotated[Path, typer.Option("--out", help="Run directory.")] = Path("runs/train"),
    epochs: Annotated[int, typer.Option(min=1, help="Training epochs.")] = 10,
    batch_size: Annotated[int, typer.Option(min=1, help="Batch size.")] = 64,
    lr: Annotated[float, typer.Option(help="Learning rate.")] = 1e-3,
    optimizer: Annotated[Optimizer, typer.Option(help="Optimizer.")] = Optimizer.ADAM,
    weight_decay: Annotated[float, typer.Option(min=0.0, help="Weight decay.")] = 0.0,
    input_size: Annotated[
        int | None, typer.Option(min=1, help="Input side \\[default: the arch's].")
    ] = None,
    val_fraction: Annotated[
        float, typer.Option(help="Validation share when there is no train/ + val/.")
    ] = 0.2,
    augment: Annotated[bool, typer.Option(help="Random flips and shifts.")] = False,
    seed: Annotated[int, typer.Option(help="Seed for split, init and shuffling.")] = 0,
    force: Annotated[
        bool, typer.Option(help="Replace the trained model of an earlier run in --out.")
    ] = False,
) -> None:
    """Train a ResNeXt; the best epoch is saved with its spec, ready for `export`."""
    from resnext_deploy.render import RichTrainObserver, print_training
    from resnext_deploy.train import TrainConfig
    from resnext_deploy.train import train as run_training

    config = TrainConfig(
        data=data,
        arch=arch,
        out_dir=out_dir,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        optimizer=optimizer,
        weight_decay=weight_decay,
        seed=seed,
        val_fraction=val_fraction,
        input_size=input_size,
        augment=augment,
        overwrite=force,
    )
    with RichTrainObserver(err) as observer:
        result = run_training(config, observer)
    print_training(out, result)


@app.command()
@handles_errors
def predict(
    model: Annotated[Path, typer.Argument(help="model.onnx or an export directory.")],
    images: Annotated[list[Path], typer.Argument(help="Image files or folders.")],
    top_k: Annotated[int, typer.Option(min=1, help="Labels per image.")] = 5,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per inference call.")] = 16,
    provider: Annotated[Provider, typer.Option(help="onnxruntime provider.")] = Provider.CPU,
    fmt: Annotated[
        OutputFormat, typer.Option("--format", help="Output format.")
    ] = OutputFormat.TABLE,
) -> None:
    """Top-k labels with probabilities, using only onnxruntime, numpy and Pillow (no torch).

    Unreadable files are reported by name and skipped; the exit status is 1 if any were.
    """
    from resnext_deploy.artifact import MANIFEST_FILE, open_artifact
    from resnext_deploy.predict import Classifier, predict_paths
    from resnext_deploy.runtime.providers import SessionConfig

    if (model / MANIFEST_FILE).is_file():
        warn_unlisted(open_artifact(model, check_hashes=False))
    with Classifier(model, SessionConfig(provider=provider)) as classifier:
        result = predict_paths(classifier, images, top_k, batch_size)
    if fmt is OutputFormat.JSON:
        emit_json(
            {
                "model": str(model),
                "predictions": [p.to_dict() for p in result.predictions],
                "failures": result.failures,
            }
        )
    elif fmt is OutputFormat.CSV:
        from resnext_deploy.render import predictions_csv

        sys.stdout.write(predictions_csv(result.predictions))
    else:
        from resnext_deploy.render import print_predictions

        print_predictions(out, result.predictions)
    for failure in result.failures:
        err.print(f"[red]skipped[/] {plain(failure)}", highlight=False, soft_wrap=True)
    if result.failures:
        err.print(f"{len(result.failures)} file(s) could not be classified")
        raise typer.Exit(1)


@app.command()
@handles_errors
def bench(
    model: Annotated[
        str,
        typer.Argument(
            help="Export directory, or a registered architecture "
            "(random weights unless --checkpoint)."
        ),
    ],
    provider: Annotated[
        Provider,
        typer.Option(help="onnxruntime provider; torch backends run on the matching device."),
    ] = Provider.CPU,
    backend: Annotated[
        list[BenchBackend] | None,
        typer.Option(
            help="Backend to measure (repeatable) \\[default: eager, torchscript, "
            "torchscript-opt, onnxruntime].",
            show_default=False,
        ),
    ] = None,
    peers: Annotated[
        bool,
        typer.Option(
            help="Add torch.compile and OpenVINO (f32 and default) to the default backends."
        ),
    ] = False,
    batch_sizes: Annotated[
        str | None,
        typer.Option(help="Comma-separated \\[default: 1,2,4,8,16 on CPU; 1..256 on GPU]."),
    ] = None,
    checkpoint: Annotated[
        Path | None, typer.Option(help="Weights for an architecture name.")
    ] = None,
    threads: Annotated[
        int | None, typer.Option(min=1, help="CPU threads \\[default: all cores].")
    ] = None,
    warmup: Annotated[int, typer.Option(help="Warm-up calls per batch size.")] = 3,
    min_iters: Annotated[int, typer.Option(help="Minimum timed calls.")] = 10,
    min_time: Annotated[float, typer.Option(help="Minimum seconds of timed calls.")] = 1.0,
    max_time: Annotated[float, typer.Option(help="Maximum seconds per batch size.")] = 20.0,
    tune: Annotated[
        bool,
        typer.Option(
            help="Sweep provider options one change at a time (CUDA's; on tensorrt, TensorRT's "
            "own) and name the best per batch size."
        ),
    ] = False,
    algo_search: Annotated[
        ConvAlgoSearch, typer.Option(help="cuDNN conv algo search.")
    ] = ConvAlgoSearch.EXHAUSTIVE,
    max_workspace: Annotated[bool, typer.Option(help="cudnn_conv_use_max_workspace.")] = True,
    prefer_nhwc: Annotated[bool, typer.Option(help="prefer_nhwc (CUDA).")] = False,
    tf32: Annotated[bool, typer.Option(help="use_tf32 (CUDA).")] = True,
    cuda_graph: Annotated[bool, typer.Option(help="enable_cuda_graph (CUDA).")] = False,
    trt_fp16: Annotated[
        bool, typer.Option(help="trt_fp16_enable (TensorRT: fp16 kernels where faster).")
    ] = False,
    out_dir: Annotated[Path, typer.Option("--out", help="Where result files go.")] = Path(
        "benchmarks/results"
    ),
    name: Annotated[
        str | None, typer.Option(help="Result file stem \\[default: <model>-<provider>-<time>].")
    ] = None,
    overhead: Annotated[bool, typer.Option(help="Measure harness overhead vs a bare loop.")] = True,
    profile: Annotated[
        bool,
        typer.Option(
            help="Then profile each onnxruntime variant: time per op kind (convolutions by group "
            "and kernel), top nodes, int8 vs fp32 per convolution class."
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Latency and throughput across batch sizes, every backend side by side."""
    from datetime import datetime

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from resnext_deploy.bench.backends import DEFAULT_BACKENDS, PEER_BACKENDS
    from resnext_deploy.bench.files import write_reports
    from resnext_deploy.bench.run import BenchConfig, run_benchmark
    from resnext_deploy.fileio import check_writable_dir
    from resnext_deploy.render import print_bench
    from resnext_deploy.runtime.providers import CudaOptions, TensorRTOptions
    from resnext_deploy.timing import Timing

    kinds = tuple(backend or DEFAULT_BACKENDS)
    if peers:
        kinds += tuple(k for k in PEER_BACKENDS if k not in kinds)
    config = BenchConfig(
        backends=kinds,
        batch_sizes=parse_ints(batch_sizes, "--batch-sizes") if batch_sizes else None,
        provider=provider,
        threads=threads,
        timing=Timing(warmup=warmup, min_iters=min_iters, min_time_s=min_time, max_time_s=max_time),
        cuda=CudaOptions(
            cudnn_conv_algo_search=algo_search,
            cudnn_conv_use_max_workspace=max_workspace,
            prefer_nhwc=prefer_nhwc,
            use_tf32=tf32,
            enable_cuda_graph=cuda_graph,
        ),
        tensorrt=TensorRTOptions(fp16=trt_fp16),
        tune=tune,
        measure_overhead=overhead,
        command=command_line(),
    )
    check_writable_dir(out_dir, "--out folder")  # before minutes of measuring, not after
    steps = config.planned_measurements()
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task("preparing", total=steps)

        def progress(step: str) -> None:
            measuring = "batch=" in step
            bar.update(task, description=step, advance=1 if measuring else 0)

        report = run_benchmark(model, config, checkpoint, progress)
    stem = name or f"{Path(model).name}-{provider.value}-{datetime.now():%Y%m%d-%H%M%S}"
    paths = write_reports(report, out_dir, stem)
    if as_json:
        sys.stdout.write(report.to_json() + "\n")
    else:
        print_bench(out, report)
        out.print("written: " + ", ".join(str(p) for p in paths.values()))
    if profile:
        from resnext_deploy.bench.profile import ProfileConfig, profile_bench_model, write_profile
        from resnext_deploy.render import print_profile

        variants = tuple(dict.fromkeys(k.variant for k in kinds if k.variant)) or (Variant.FP32,)
        where = ProfileConfig(
            variants=variants,
            batch_sizes=config.resolved_batch_sizes(),
            provider=provider,
            threads=threads,
            tensorrt=config.tensorrt,
        )
        with err.status("profiling onnxruntime ..."):
            profiled = profile_bench_model(model, where, checkpoint)
        written = write_profile(profiled, out_dir, stem)
        if not as_json:  # stdout keeps one JSON document
            print_profile(out, profiled)
        err.print("written: " + ", ".join(str(p) for p in written.values()), highlight=False)


@app.command()
@handles_errors
def compare(
    old: Annotated[Path, typer.Argument(help="Baseline JSON report.")],
    new: Annotated[Path, typer.Argument(help="New JSON report.")],
    threshold: Annotated[
        float, typer.Option(min=0.0, help="Slowdown in percent that counts as a regression.")
    ] = 10.0,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Median latency change per backend and batch size; exit 1 if anything regressed."""
    from resnext_deploy.bench.compare import compare_reports
    from resnext_deploy.bench.report import load_report
    from resnext_deploy.render import print_comparison

    changes = compare_reports(load_report(old), load_report(new), threshold)
    if as_json:
        emit_json([c.__dict__ for c in changes])
    else:
        print_comparison(out, changes, threshold)
    if any(c.regression for c in changes):
        raise typer.Exit(1)


@app.command()
@handles_errors
def demo(
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 10,
    run_dir: Annotated[Path, typer.Option("--out", help="Run directory.")] = Path("runs/demo"),
    export_dir: Annotated[Path, typer.Option(help="Export directory (replaced).")] = Path(
        "exported/demo-digits"
    ),
) -> None:
    """Train on the bundled digits, export, verify, compare accuracy, benchmark and predict."""
    from resnext_deploy.demo import DemoConfig, run_demo

    run_demo(DemoConfig(run_dir=run_dir, export_dir=export_dir, epochs=epochs), out, err)


@app.command()
@handles_errors
def triton(
    export_dir: Annotated[Path, typer.Argument(help="An export directory.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Model repository to create.")] = Path(
        "triton-models"
    ),
    name: Annotated[str | None, typer.Option(help="Model name \\[default: the arch].")] = None,
    variant: Annotated[Variant, typer.Option(help="Which ONNX file of the export.")] = Variant.FP32,
    max_batch_size: Annotated[int, typer.Option(help="Triton max_batch_size.")] = 32,
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
    algo_search: Annotated[
        ConvAlgoSearch, typer.Option(help="cuDNN conv algo search for GPU instances.")
    ] = ConvAlgoSearch.EXHAUSTIVE,
    force: Annotated[bool, typer.Option(help="Replace an existing repository.")] = False,
) -> None:
    """Write a Triton Inference Server model repository (onnxruntime backend) for an export."""
    from resnext_deploy.bench.report import load_report
    from resnext_deploy.export.triton import TritonConfig, write_repository
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
    from resnext_deploy.artifact import open_artifact

    warn_unlisted(open_artifact(export_dir, check_hashes=False))  # write_repository checks hashes
    model_dir = write_repository(export_dir, out_dir, config, overwrite=force)
    out.print((model_dir / "config.pbtxt").read_text(), highlight=False)
    out.print(
        f"[green]wrote[/] {model_dir} - serve it with:\n"
        f"  docker run --rm {'--gpus all ' if gpu else ''}-p 8000:8000 -p 8001:8001 "
        f"-v {out_dir.resolve()}:/models nvcr.io/nvidia/tritonserver:<yy.mm>-py3 "
        "tritonserver --model-repository=/models",
        highlight=False,
    )


@app.command()
@handles_errors
def serve(
    export_dir: Annotated[Path, typer.Argument(help="An export directory.")],
    variant: Annotated[Variant, typer.Option(help="Which ONNX file of the export.")] = Variant.FP32,
    provider: Annotated[Provider, typer.Option(help="onnxruntime provider: cpu or cuda.")] = (
        Provider.CPU
    ),
    name: Annotated[str | None, typer.Option(help="Model name \\[default: the arch].")] = None,
    replicas: Annotated[int, typer.Option(help="Replicas, each with its own session.")] = 1,
    max_batch_size: Annotated[
        int, typer.Option(help="Most images per onnxruntime call (and per request).")
    ] = 32,
    batch_wait_ms: Annotated[
        float, typer.Option(help="How long a replica waits for a batch to fill.")
    ] = 5.0,
    batching: Annotated[
        bool, typer.Option(help="Dynamic batching; --no-batching runs each request alone.")
    ] = True,
    host: Annotated[str, typer.Option(help="HTTP address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP port.")] = 8000,
    address: Annotated[
        str | None,
        typer.Option(help="Ray cluster to deploy to \\[default: $RAY_ADDRESS, else a local Ray]."),
    ] = None,
    threads: Annotated[
        int | None, typer.Option(help="onnxruntime threads per replica \\[default: all cores].")
    ] = None,
    cpus_per_replica: Annotated[float, typer.Option(help="Ray CPUs reserved per replica.")] = 1.0,
    gpus_per_replica: Annotated[
        float, typer.Option(help="Ray GPUs per replica with --provider cuda (0.5: two per GPU).")
    ] = 1.0,
    max_body_mb: Annotated[float, typer.Option(help="Largest request body accepted.")] = 64.0,
    metrics_port: Annotated[
        int | None, typer.Option(help="Prometheus metrics port of a local Ray \\[default: any].")
    ] = None,
    access_log: Annotated[
        bool, typer.Option(help="Log every request (Ray Serve access log, proxy and replica).")
    ] = True,
    write_config: Annotated[
        Path | None,
        typer.Option(help="Write a Serve config file (serve deploy / KubeRay) and exit."),
    ] = None,
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
def doctor(
    provider: Annotated[
        Provider, typer.Option(help="The provider to check and smoke-test.")
    ] = Provider.CPU,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
