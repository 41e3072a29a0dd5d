"""Options several commands share, as ``Annotated`` aliases, and the parsers of list options.

A command's signature reads ``out_dir: OutDir = ...``: the option's name, type and help are
defined once here, so that ``--json``, ``--out``, ``--force``, ``--provider``, ``--threads`` and
their siblings mean the same in every command. Every count has its bounds here (``--help``
shows them), taken from the config object that checks them again where it is importable
without torch; the others are kept equal to theirs by tests/test_hostile_numbers.py.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from resnext_deploy import predict as predicting
from resnext_deploy.artifact import Precision, Variant
from resnext_deploy.batch import config as batching
from resnext_deploy.bench import run as bench
from resnext_deploy.bench.backends import BenchBackend
from resnext_deploy.errors import ConfigError
from resnext_deploy.export import triton
from resnext_deploy.export.calibration import CalibrationMethod
from resnext_deploy.recommendation import Engine, EngineChoice
from resnext_deploy.runtime.providers import ConvAlgoSearch, Provider
from resnext_deploy.serve import config as serving
from resnext_deploy.spec import MAX_CLASSES, MAX_INPUT_SIZE, MAX_RESIZE, Layout
from resnext_deploy.validate import check_int

# --- bounds of counts whose config module imports torch (train, verify) or that have none -------
MAX_SEED = 2**32 - 1  # numpy's seeds; train.MAX_SEED, bench.MAX_SEED
MAX_EPOCHS = 10_000  # train.MAX_EPOCHS
MAX_TRAIN_BATCH_SIZE = 4096  # train.MAX_BATCH_SIZE
MAX_TRAIN_INPUT_SIZE = 1024  # train.MAX_INPUT_SIZE
MAX_VAL_FRACTION = 0.9  # train.MAX_VAL_FRACTION
MAX_VERIFY_BATCH_SIZE = 1024  # a parity batch runs eager, TorchScript and onnxruntime at once
MAX_PREDICT_BATCH_SIZE = predicting.MAX_BATCH_SIZE
MAX_TOP_K = predicting.MAX_TOP_K
MAX_PORT = 65535

# --- shared by several commands ----------------------------------------------------------------
AsJson = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
Force = Annotated[bool, typer.Option(help="Replace an existing output directory.")]
ExportDir = Annotated[Path, typer.Argument(help="An export directory.")]
Images = Annotated[list[Path] | None, typer.Option("--image", help="Image or folder (repeatable).")]
BatchSizes = Annotated[
    str, typer.Option(help=f"Comma-separated batch sizes, each 1..{MAX_VERIFY_BATCH_SIZE}.")
]
Seed = Annotated[int, typer.Option(min=0, max=MAX_SEED, help="Random seed.")]
VariantOpt = Annotated[Variant, typer.Option(help="Which ONNX file of the export.")]
ModelName = Annotated[str | None, typer.Option(help="Model name \\[default: the arch].")]
ProviderOpt = Annotated[Provider, typer.Option(help="onnxruntime provider.")]
EngineOpt = Annotated[
    EngineChoice,
    typer.Option(
        help="onnxruntime, OpenVINO (CPU; pip install 'resnext-deploy[openvino]'), or auto: "
        "the engine and variant the export's manifest records as measured fastest "
        "(bench --engines --record)."
    ),
]
Threads = Annotated[
    int | None,
    typer.Option(min=1, max=bench.MAX_THREADS, help="CPU threads \\[default: all cores]."),
]
AlgoSearch = Annotated[ConvAlgoSearch, typer.Option(help="cuDNN conv algo search.")]
MaxBatchSize = Annotated[
    int,
    typer.Option(min=1, max=triton.MAX_BATCH_SIZE, help="Most images per onnxruntime call."),
]

# --- export ------------------------------------------------------------------------------------
Checkpoint = Annotated[Path, typer.Argument(help="State dict (.pth/.pt), any supported layout.")]
Arch = Annotated[
    str | None,
    typer.Option(
        help="Architecture name (see `models`); read from the checkpoint when it was saved by "
        "`train`."
    ),
]
ExportOut = Annotated[
    Path | None, typer.Option("--out", help="Output directory \\[default: exported/<arch>].")
]
NumClasses = Annotated[
    int | None,
    typer.Option(
        min=1,
        max=MAX_CLASSES,
        help="Check the classifier has this many classes \\[default: inferred].",
    ),
]
ClassNames = Annotated[str | None, typer.Option(help="Comma-separated names or @file.")]
LayoutOpt = Annotated[
    Layout | None,
    typer.Option(help="Checkpoint layout \\[default: detected from the keys].", show_default=False),
]
InputSize = Annotated[
    int | None, typer.Option(min=1, max=MAX_INPUT_SIZE, help="Input side in pixels.")
]
Resize = Annotated[
    int | None,
    typer.Option(min=1, max=MAX_RESIZE, help="Shorter side before the centre crop."),
]
Mean = Annotated[str | None, typer.Option(help="Normalisation mean, e.g. 0.485,0.456,0.406")]
Std = Annotated[str | None, typer.Option(help="Normalisation std, e.g. 0.229,0.224,0.225")]
Opset = Annotated[int, typer.Option(help="ONNX opset (18 to the newest onnx knows).")]
Precisions = Annotated[
    list[Precision] | None,
    typer.Option(
        help="Variants to write besides fp32 (repeatable, e.g. --precision fp16 --precision "
        "int8); fp32 is always written: the others derive from it.",
        show_default=False,
    ),
]
Calibration = Annotated[
    str | None,
    typer.Option(help="int8 calibration images: a folder, or 'digits' for a digits-trained model."),
]
Int8MinAgreement = Annotated[
    float,
    typer.Option(
        min=0.0,
        max=1.0,
        help="int8 gate: top-1 agreement with fp32 on held-out images. The layers adding the "
        "most quantization error stay fp32, as few as reach it; refused if none do.",
    ),
]
CalibrationMethodOpt = Annotated[
    CalibrationMethod, typer.Option(help="How int8 activation ranges are calibrated.")
]
Recommend = Annotated[
    bool,
    typer.Option(
        help="Then time every variant on onnxruntime and OpenVINO, gate each on accuracy, and "
        "record the fastest per batch size in the manifest (what --engine auto runs; needs "
        "the [openvino] extra; minutes on a CPU).",
    ),
]
EmbedPreprocess = Annotated[
    bool,
    typer.Option(help="Also write a graph that takes uint8 NHWC images and returns probabilities."),
]

# --- verify ------------------------------------------------------------------------------------
VerifyEngines = Annotated[
    list[Engine] | None,
    typer.Option(
        "--engine",
        help="Engine every variant runs on (repeatable) \\[default: onnxruntime; openvino adds "
        "OpenVINO's CPU plugin, held to the same tolerances].",
        show_default=False,
    ),
]
VerifyProviders = Annotated[
    list[Provider] | None,
    typer.Option(
        "--provider",
        help="onnxruntime provider that must run (repeatable) \\[default: cpu, plus cuda when "
        "usable].",
    ),
]
Localize = Annotated[
    bool,
    typer.Option(
        help="Compare every ONNX variant layer by layer with eager and name the first module "
        "beyond tolerance (done for failing backends anyway)."
    ),
]

# --- bench -------------------------------------------------------------------------------------
BenchProvider = Annotated[
    Provider,
    typer.Option(help="onnxruntime provider; torch backends run on the matching device."),
]
BenchModelArg = Annotated[
    str,
    typer.Argument(
        help="Export directory, or a registered architecture (random weights unless --checkpoint)."
    ),
]
Backends = Annotated[
    list[BenchBackend] | None,
    typer.Option(
        "--backend",
        help="Backend to measure (repeatable) \\[default: eager, torchscript, torchscript-opt, "
        "onnxruntime].",
        show_default=False,
    ),
]
Peers = Annotated[
    bool,
    typer.Option(help="Add torch.compile and OpenVINO (f32 and default) to the default backends."),
]
Engines = Annotated[
    bool,
    typer.Option(
        help="Measure every ONNX variant the run covers (none chosen: every variant of the "
        "export) on both engines, onnxruntime and OpenVINO (CPU), check each against eager with "
        "its variant's tolerance, and name the fastest that passed per batch size."
    ),
]
Record = Annotated[
    bool,
    typer.Option(
        help="Write the fastest passing engine x variant per batch size into the export's "
        "manifest, what --engine auto runs (implies --engines; an export folder, --provider cpu)."
    ),
]
BenchBatchSizes = Annotated[
    str | None,
    typer.Option(
        help=f"Comma-separated, each 1..{bench.MAX_BATCH_SIZE} \\[default: 1,2,4,8,16 on CPU; "
        "1..256 on GPU]."
    ),
]
Weights = Annotated[Path | None, typer.Option(help="Weights for an architecture name.")]
Warmup = Annotated[
    int, typer.Option(min=0, max=bench.MAX_WARMUP, help="Warm-up calls per batch size.")
]
MinIters = Annotated[int, typer.Option(min=1, max=bench.MAX_ITERS, help="Minimum timed calls.")]
MinTime = Annotated[
    float, typer.Option(min=0.0, max=bench.MAX_TIME_S, help="Minimum seconds of timed calls.")
]
MaxTime = Annotated[
    float, typer.Option(min=0.0, max=bench.MAX_TIME_S, help="Maximum seconds per batch size.")
]
Tune = Annotated[
    bool,
    typer.Option(
        help="Sweep provider options one change at a time (CUDA's; on tensorrt, TensorRT's own) "
        "and name the best per batch size."
    ),
]
MaxWorkspace = Annotated[bool, typer.Option(help="cudnn_conv_use_max_workspace.")]
PreferNhwc = Annotated[bool, typer.Option(help="prefer_nhwc (CUDA).")]
Tf32 = Annotated[bool, typer.Option(help="use_tf32 (CUDA).")]
CudaGraph = Annotated[bool, typer.Option(help="enable_cuda_graph (CUDA).")]
TrtFp16 = Annotated[
    bool, typer.Option(help="trt_fp16_enable (TensorRT: fp16 kernels where faster).")
]
ResultsOut = Annotated[Path, typer.Option("--out", help="Where result files go.")]
ResultStem = Annotated[
    str | None,
    typer.Option(
        "--name",
        help="Result file stem, a name (no '/') \\[default: <model>-<provider>-<time>].",
    ),
]
Overhead = Annotated[bool, typer.Option(help="Measure harness overhead vs a bare loop.")]
Profile = Annotated[
    bool,
    typer.Option(
        help="Then profile each onnxruntime variant: time per op kind (convolutions by group and "
        "kernel), top nodes, int8 vs fp32 per convolution class."
    ),
]


# --- triton ------------------------------------------------------------------------------------
QueueDelayUs = Annotated[
    int,
    typer.Option(
        min=0,
        max=triton.MAX_QUEUE_DELAY_US,
        help="max_queue_delay_microseconds: how long a request waits for a batch to fill.",
    ),
]
Instances = Annotated[
    int, typer.Option(min=1, max=triton.MAX_INSTANCES, help="Instances per device.")
]


# --- serve -------------------------------------------------------------------------------------
Replicas = Annotated[
    int,
    typer.Option(min=1, max=serving.MAX_REPLICAS, help="Replicas, each with its own session."),
]
BatchWaitMs = Annotated[
    float,
    typer.Option(
        min=0.0,
        max=serving.MAX_BATCH_WAIT_MS,
        help="How long a replica waits for a batch to fill.",
    ),
]
Batching = Annotated[
    bool, typer.Option(help="Dynamic batching; --no-batching runs each request alone.")
]
Host = Annotated[str, typer.Option(help="HTTP address to listen on.")]
Port = Annotated[int, typer.Option(min=1, max=MAX_PORT, help="HTTP port.")]
GrpcPort = Annotated[
    int | None,
    typer.Option(
        min=1,
        max=MAX_PORT,
        help="Also serve the protocol over gRPC on this port (Triton's GRPCInferenceService, "
        "on --host) \\[default: HTTP only].",
    ),
]
RayAddress = Annotated[
    str | None,
    typer.Option(help="Ray cluster to deploy to \\[default: $RAY_ADDRESS, else a local Ray]."),
]
CpusPerReplica = Annotated[float, typer.Option(help="Ray CPUs reserved per replica.")]
GpusPerReplica = Annotated[
    float, typer.Option(help="Ray GPUs per replica with --provider cuda (0.5: two per GPU).")
]
MaxBodyMb = Annotated[float, typer.Option(help="Largest request body accepted.")]
MetricsPort = Annotated[
    int | None,
    typer.Option(
        min=1, max=MAX_PORT, help="Prometheus metrics port of a local Ray \\[default: any]."
    ),
]
AccessLog = Annotated[
    bool, typer.Option(help="Log every request (Ray Serve access log, proxy and replica).")
]
WriteConfig = Annotated[
    Path | None,
    typer.Option(help="Write a Serve config file (serve deploy / KubeRay) and exit."),
]


def parse_ints(text: str, what: str, high: int = bench.MAX_BATCH_SIZE) -> tuple[int, ...]:
    """``"1,2,8"`` -> (1, 2, 8), each in 1..``high`` (default: the largest batch any command
    takes); raises :class:`ConfigError` naming ``what`` otherwise."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"{what} must be comma-separated integers, got {text!r}") from None
    if not values:
        raise ConfigError(f"{what} must be positive integers, got {text!r}")
    for value in values:
        check_int(value, f"{what}: a batch size", 1, high)
    return values


def parse_floats3(text: str | None, what: str) -> tuple[float, float, float] | None:
    """``"0.5,0.5,0.5"`` -> three finite floats, ``None`` -> ``None``."""
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
    if not text:
        return ()
    if text.startswith("@"):
        path = Path(text[1:])
        if not path.is_file():
            raise ConfigError(f"class-names file not found: {path}")
        return tuple(ln.strip() for ln in path.read_text().splitlines() if ln.strip())
    return tuple(n.strip() for n in text.split(",") if n.strip())


# --- predict --ray -------------------------------------------------------------------------------
RayOpt = Annotated[
    bool,
    typer.Option(
        "--ray",
        help="Classify a folder tree or a listing on Ray Data into --out (Parquet), resumable.",
    ),
]
BatchOut = Annotated[
    Path | None,
    typer.Option("--out", help="With --ray: the results folder; a run there is resumed."),
]
BatchAddress = Annotated[
    str | None,
    typer.Option(
        "--address", help="With --ray: a Ray cluster \\[default: $RAY_ADDRESS, else a local Ray]."
    ),
]
Actors = Annotated[
    int | None,
    typer.Option(
        min=1, max=batching.MAX_ACTORS, help="With --ray: onnxruntime sessions \\[default: 1]."
    ),
]
ActorThreads = Annotated[
    int | None,
    typer.Option(
        "--threads",
        min=1,
        max=batching.MAX_THREADS,
        help="With --ray: threads per session \\[default: its CPUs].",
    ),
]
CpusPerActor = Annotated[
    float | None,
    typer.Option(min=0.0, max=1024.0, help="With --ray: Ray CPUs per session \\[default: 1]."),
]
GpusPerActor = Annotated[
    float | None,
    typer.Option(
        min=0.0, max=64.0, help="With --ray and --provider cuda: GPUs per session \\[default: 1]."
    ),
]
ListingColumn = Annotated[
    str | None,
    typer.Option(
        "--column", help="With --ray: the column of paths in a .csv/.parquet listing \\[path]."
    ),
]
ShardSize = Annotated[
    int | None,
    typer.Option(
        min=1,
        max=batching.MAX_SHARD_SIZE,
        help="With --ray: inputs per output file, the most an interrupted run redoes "
        f"\\[default: {batching.DEFAULT_SHARD_SIZE}].",
    ),
]
