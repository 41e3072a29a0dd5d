"""Commands on one model: ``models``, ``export``, ``verify``, ``inspect``, ``train``, ``predict``.

Heavy imports happen inside the commands, so that ``predict`` never imports torch.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from resnext_deploy.cli.app import (
    OutputFormat,
    app,
    command_line,
    emit_json,
    err,
    fail,
    handles_errors,
    out,
    warn_unlisted,
)
from resnext_deploy.cli.options import (
    MAX_EPOCHS,
    MAX_PREDICT_BATCH_SIZE,
    MAX_TOP_K,
    MAX_TRAIN_BATCH_SIZE,
    MAX_TRAIN_INPUT_SIZE,
    MAX_VAL_FRACTION,
    MAX_VERIFY_BATCH_SIZE,
    Actors,
    ActorThreads,
    Arch,
    AsJson,
    BatchAddress,
    BatchOut,
    BatchSizes,
    Calibration,
    CalibrationMethodOpt,
    Checkpoint,
    ClassNames,
    CpusPerActor,
    EmbedPreprocess,
    EngineOpt,
    ExportDir,
    ExportOut,
    Force,
    GpusPerActor,
    Images,
    InputSize,
    Int8MinAgreement,
    LayoutOpt,
    ListingColumn,
    Localize,
    Mean,
    NumClasses,
    Opset,
    Precisions,
    ProviderOpt,
    RayOpt,
    Recommend,
    Resize,
    Seed,
    ShardSize,
    Std,
    VerifyEngines,
    VerifyProviders,
    parse_floats3,
    parse_ints,
    read_class_names,
)
from resnext_deploy.export.calibration import CalibrationMethod

if TYPE_CHECKING:
    from resnext_deploy.export.pipeline import ExportConfig
    from resnext_deploy.models.checkpoint import LoadOptions
    from resnext_deploy.predict import EngineDecision
from resnext_deploy.recommendation import Engine, EngineChoice
from resnext_deploy.runtime.providers import Provider
from resnext_deploy.spec import Optimizer


@app.command()
@handles_errors
def models(as_json: AsJson = False) -> None:
    """List the registered architectures with parameters and GMACs."""
    from resnext_deploy.models.registry import ARCHS, describe
    from resnext_deploy.render import print_models

    infos = [describe(name) for name in ARCHS.names()]
    if as_json:
        emit_json([i.to_dict() for i in infos])
    else:
        print_models(out, infos)


@app.command()
@handles_errors
def export(
    checkpoint: Checkpoint,
    arch: Arch = None,
    out_dir: ExportOut = None,
    num_classes: NumClasses = None,
    class_names: ClassNames = None,
    layout: LayoutOpt = None,
    input_size: InputSize = None,
    resize: Resize = None,
    mean: Mean = None,
    std: Std = None,
    opset: Opset = 20,
    images: Images = None,
    batch_sizes: BatchSizes = "1,2,3,8",
    precision: Precisions = None,
    calibration: Calibration = None,
    int8_min_agreement: Int8MinAgreement = 0.99,
    calibration_method: CalibrationMethodOpt = CalibrationMethod.MINMAX,
    embed_preprocess: EmbedPreprocess = False,
    recommend: Recommend = False,
    force: Force = False,
    as_json: AsJson = False,
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
    config = ExportConfig(
        out_dir=out_dir,
        opset=opset,
        overwrite=force,
        verify=VerifyConfig(
            batch_sizes=parse_ints(batch_sizes, "--batch-sizes", MAX_VERIFY_BATCH_SIZE),
            images=tuple(images or ()),
        ),
        precisions=tuple(precision or ()),
        embed_preprocess=embed_preprocess,
        calibration=CalibrationConfig(
            source=calibration, min_agreement=int8_min_agreement, method=calibration_method
        ),
    )
    if recommend:
        export_recommended(checkpoint, load, config, as_json)
        return
    with err.status(f"exporting {checkpoint} ..."):
        result = export_checkpoint(checkpoint, load, config)
    if as_json:
        emit_json(result.to_dict())
    else:
        print_export(out, result)


def export_recommended(
    checkpoint: Path, load: LoadOptions, config: ExportConfig, as_json: bool
) -> None:
    """``export --recommend``: the export, then both engines measured on every variant and the
    fastest that passed recorded in the manifest."""
    from resnext_deploy.bench.recommend import RecordOptions, export_and_record
    from resnext_deploy.render import print_export, print_recorded

    with err.status(f"exporting {checkpoint}, then measuring the engines ...") as status:
        result, recorded = export_and_record(
            checkpoint,
            load,
            config,
            RecordOptions(command=command_line()),
            lambda step: status.update(f"measuring {step} ..."),
        )
    if as_json:
        emit_json(result.to_dict() | {"recommendation": recorded.recommendation.to_dict()})
        return
    print_export(out, result)
    print_recorded(out, recorded)


@app.command()
@handles_errors
def verify(
    export_dir: ExportDir,
    images: Images = None,
    batch_sizes: BatchSizes = "1,2,3,8",
    provider: VerifyProviders = None,
    engine: VerifyEngines = None,
    seed: Seed = 0,
    localize: Localize = False,
    as_json: AsJson = False,
) -> None:
    """Check eager vs TorchScript vs onnxruntime (and OpenVINO) parity of an export (exit 1 on
    failure)."""
    from resnext_deploy.artifact import open_artifact
    from resnext_deploy.localize import check_artifact
    from resnext_deploy.render import print_checked
    from resnext_deploy.verify import VerifyConfig

    artifact = open_artifact(export_dir)
    warn_unlisted(artifact)
    config = VerifyConfig(
        batch_sizes=parse_ints(batch_sizes, "--batch-sizes", MAX_VERIFY_BATCH_SIZE),
        images=tuple(images or ()),
        seed=seed,
        providers=tuple(provider or (Provider.CPU,)),
        auto_cuda=not provider,
        engines=(Engine.ONNXRUNTIME, *(engine or ())),
    )
    with err.status("comparing backends ...") as status:
        checked = check_artifact(artifact, config, localize, lambda s: status.update(f"{s} ..."))
    if as_json:
        emit_json(checked.to_dict())
    else:
        print_checked(out, checked)
    if not checked.passed:
        fail(f"parity check failed for {', '.join(checked.failed_backends())} (see the report)")


@app.command()
@handles_errors
def inspect(
    path: Annotated[Path, typer.Argument(help=".onnx file, TorchScript .pt file or export dir.")],
    as_json: AsJson = False,
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
            help="ImageFolder directory (class per subfolder), or 'digits' for scikit-learn's "
            "bundled digits."
        ),
    ] = "digits",
    arch: Annotated[str, typer.Option(help="Registered architecture.")] = "resnext11_mini",
    out_dir: Annotated[Path, typer.Option("--out", help="Run directory.")] = Path("runs/train"),
    epochs: Annotated[int, typer.Option(min=1, max=MAX_EPOCHS, help="Training epochs.")] = 10,
    batch_size: Annotated[
        int, typer.Option(min=1, max=MAX_TRAIN_BATCH_SIZE, help="Batch size.")
    ] = 64,
    lr: Annotated[float, typer.Option(help="Learning rate.")] = 1e-3,
    optimizer: Annotated[Optimizer, typer.Option(help="Optimizer.")] = Optimizer.ADAM,
    weight_decay: Annotated[float, typer.Option(min=0.0, help="Weight decay.")] = 0.0,
    input_size: Annotated[
        int | None,
        typer.Option(min=1, max=MAX_TRAIN_INPUT_SIZE, help="Input side \\[default: the arch's]."),
    ] = None,
    val_fraction: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=MAX_VAL_FRACTION,
            help="Validation share when there is no train/ + val/ (above 0).",
        ),
    ] = 0.2,
    augment: Annotated[bool, typer.Option(help="Random flips and shifts.")] = False,
    seed: Seed = 0,
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
    top_k: Annotated[int, typer.Option(min=1, max=MAX_TOP_K, help="Labels per image.")] = 5,
    batch_size: Annotated[
        int, typer.Option(min=1, max=MAX_PREDICT_BATCH_SIZE, help="Images per inference call.")
    ] = 16,
    provider: ProviderOpt = Provider.CPU,
    engine: EngineOpt = EngineChoice.ONNXRUNTIME,
    fmt: Annotated[
        OutputFormat, typer.Option("--format", help="Output format.")
    ] = OutputFormat.TABLE,
    ray: RayOpt = False,
    out_dir: BatchOut = None,
    address: BatchAddress = None,
    actors: Actors = None,
    threads: ActorThreads = None,
    cpus_per_actor: CpusPerActor = None,
    gpus_per_actor: GpusPerActor = None,
    column: ListingColumn = None,
    shard_size: ShardSize = None,
) -> None:
    """Top-k labels with probabilities, using only onnxruntime (or OpenVINO), numpy and Pillow.

    Unreadable files are reported by name and skipped; the exit status is 1 if any were.
    With --ray: a folder tree or a listing (.txt, or a .csv/.parquet column) classified on Ray
    Data into Parquet files in --out; unreadable images get a row with an error, and a run
    started again with the same --out finishes what is left (needs the [batch] extra).
    """
    from resnext_deploy.cli.batch_commands import RayOptions, predict_with_ray, refuse_without_ray
    from resnext_deploy.predict import choose_engine

    options = RayOptions(
        out_dir, address, actors, threads, cpus_per_actor, gpus_per_actor, column, shard_size
    )
    if not ray:
        refuse_without_ray(options)
    chosen = choose_engine(model, engine, batch_size, provider)
    for line in chosen.notes():
        err.print(line)
    if ray:
        predict_with_ray(
            Path(chosen.model),
            images,
            options,
            top_k=top_k,
            batch_size=batch_size,
            provider=provider,
            engine=chosen.engine,
            fmt=fmt,
        )
    else:
        predict_here(chosen, images, top_k, batch_size, provider, fmt)


def predict_here(
    chosen: EngineDecision,
    images: list[Path],
    top_k: int,
    batch_size: int,
    provider: Provider,
    fmt: OutputFormat,
) -> None:
    """``predict`` without ``--ray``: this process classifies, the results are printed."""
    from resnext_deploy.predict import Classifier, predict_paths
    from resnext_deploy.render import predictions_csv, print_failures, print_predictions
    from resnext_deploy.runtime.providers import SessionConfig

    session = SessionConfig(provider=provider)
    with Classifier(chosen.model, session, engine=chosen.engine) as classifier:
        if classifier.artifact is not None:
            warn_unlisted(classifier.artifact)
        result = predict_paths(classifier, images, top_k, batch_size)
    if fmt is OutputFormat.JSON:
        emit_json({"model": str(chosen.model), "engine": chosen.engine.value} | result.to_dict())
    elif fmt is OutputFormat.CSV:
        sys.stdout.write(predictions_csv(result.predictions))
    else:
        print_predictions(out, result.predictions)
    print_failures(err, result.failures)
    if result.failures:
        raise typer.Exit(1)
