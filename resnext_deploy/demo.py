"""``resnext-deploy demo``: the whole road on a built-in default, narrated.

Train a slim ResNeXt on scikit-learn's bundled handwritten digits (real data, offline), export it
to TorchScript and ONNX (fp32, fp16, int8 and a graph with the preprocessing inside), prove parity
on random and real inputs, compare held-out accuracy of PyTorch and onnxruntime, benchmark the
backends across batch sizes, and classify a few images with the torch-free predictor.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from rich.console import Console

from resnext_deploy.errors import ConfigError, ParityError
from resnext_deploy.fileio import check_writable_dir
from resnext_deploy.terminal import styled
from resnext_deploy.validate import check_int

if TYPE_CHECKING:
    from resnext_deploy.data import Split
    from resnext_deploy.export.pipeline import ExportResult
    from resnext_deploy.predict import Classifier
    from resnext_deploy.train import TrainConfig


# What the demo writes in its run folder, each checked before step 1: the training run, the
# held-out digits as PNG files, the benchmark report files.
TRAIN_DIR, HELD_OUT_DIR, BENCH_DIR = "train", "held-out", "bench"
_RUN_ENTRIES = (TRAIN_DIR, HELD_OUT_DIR, BENCH_DIR)
BENCH_NAME = "demo-cpu"
_HELD_OUT_IMAGE = re.compile(r"\d{3}_label\d+\.png")
MAX_SAMPLES = 100


@dataclass(frozen=True, kw_only=True)
class DemoConfig:
    run_dir: Path = Path("runs/demo")
    export_dir: Path = Path("exported/demo-digits")
    arch: str = "resnext11_mini"
    epochs: int = 10
    input_size: int = 16
    lr: float = 2e-3
    bench_batch_sizes: tuple[int, ...] = (1, 8, 32)
    samples: int = 6

    def __post_init__(self) -> None:
        from resnext_deploy.train import MAX_BATCH_SIZE

        self.train_config()  # validates the architecture, epochs, input size and learning rate
        check_int(self.samples, "samples", 1, MAX_SAMPLES)
        if not self.bench_batch_sizes:
            raise ConfigError("the demo needs at least one benchmark batch size")
        for size in self.bench_batch_sizes:
            check_int(size, "benchmark batch size", 1, MAX_BATCH_SIZE)

    def train_config(self) -> TrainConfig:
        """Step 1's training run, in ``run_dir/train``."""
        from resnext_deploy.train import TrainConfig

        return TrainConfig(
            data="digits",
            arch=self.arch,
            out_dir=self.run_dir / TRAIN_DIR,
            epochs=self.epochs,
            input_size=self.input_size,
            lr=self.lr,
            overwrite=True,  # the demo's run folder is its own: a rerun replaces it
        )


@dataclass
class DemoResult:
    val_acc_torch: float
    val_acc_onnx: float
    disagreements: int
    export_dir: Path
    bench_files: dict[str, Path]


@dataclass(frozen=True)
class _Demo:
    """One demo run: its config, where it narrates (``console``) and where progress goes
    (``err``)."""

    config: DemoConfig
    console: Console
    err: Console

    @property
    def samples_dir(self) -> Path:
        """The held-out images, saved as PNG files: the predictor's input in step 5."""
        return self.config.run_dir / HELD_OUT_DIR

    def step(self, n: int, text: str) -> None:
        self.console.rule(styled(f"{n}/5 {text}", "bold"))


@dataclass(frozen=True)
class _Trained:
    """The checkpoint, and the held-out split it was validated on (saved as images in step 1,
    scored again in step 3)."""

    checkpoint: Path
    held_out: Split


@dataclass(frozen=True)
class _HeldOutAccuracy:
    """Top-1 of both runtimes on the held-out digits; ``classifier`` is the torch-free one,
    kept for step 5."""

    torch: float
    onnx: float
    disagreements: int
    classifier: Classifier


def run_demo(config: DemoConfig, console: Console, err: Console) -> DemoResult:
    """Run the five steps, narrated on ``console``. Raises :class:`ConfigError` before any work
    when :func:`check_outputs` refuses a folder, :class:`ParityError` when the export and
    PyTorch disagree on a held-out digit, and what each step raises."""
    check_outputs(config)
    demo = _Demo(config, console, err)
    trained = _train_on_digits(demo)
    exported = _export_every_precision(demo, trained.checkpoint)
    accuracy = _compare_held_out_accuracy(demo, trained, exported.out_dir)
    files = _benchmark_backends(demo, exported.out_dir)
    _classify_samples(demo, accuracy.classifier)
    _print_where_everything_is(demo, exported.out_dir, files)
    return DemoResult(
        accuracy.torch, accuracy.onnx, accuracy.disagreements, exported.out_dir, files
    )


def check_outputs(config: DemoConfig) -> None:
    """Raise :class:`ConfigError` unless every folder the demo writes can take its files: the
    run folder is new, empty or an earlier demo run (only :data:`TRAIN_DIR`, :data:`HELD_OUT_DIR`
    and :data:`BENCH_DIR` in it), each of those holds only what the demo writes there, the
    export folder is new, empty or an export (it is replaced), and the two folders lie apart.
    Called before step 1, so a refusal costs no training and leaves nothing behind."""
    from resnext_deploy.export.atomic import check_destination
    from resnext_deploy.train import check_run_folder

    run_dir, export_dir = config.run_dir, config.export_dir
    check_destination(export_dir, overwrite=True)
    _check_apart(run_dir, export_dir)
    _check_run_dir(run_dir)
    check_run_folder(run_dir / TRAIN_DIR, overwrite=True)
    _check_own_files(run_dir / HELD_OUT_DIR, _HELD_OUT_IMAGE.fullmatch, "held-out digits")
    _check_own_files(run_dir / BENCH_DIR, _is_bench_report, "benchmark reports")
    check_writable_dir(export_dir.parent, "export folder's parent")


def _check_apart(run_dir: Path, export_dir: Path) -> None:
    """The export replaces its whole folder, and the run folder takes only the demo's own
    entries: neither may hold the other."""
    run, export = run_dir.resolve(), export_dir.resolve()
    if run == export or export in run.parents:
        raise ConfigError(
            f"export folder {export_dir} holds the run folder {run_dir}: replacing the export "
            "would delete the run; give them separate folders"
        )
    if run in export.parents:
        raise ConfigError(
            f"export folder {export_dir} is inside the run folder {run_dir}, which holds only "
            "the demo's own folders; give the export a folder of its own"
        )


def _check_run_dir(run_dir: Path) -> None:
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"run folder {run_dir} exists and is not a directory")
    if not run_dir.is_dir():
        return
    foreign = sorted(p.name for p in run_dir.iterdir() if p.name not in _RUN_ENTRIES)
    if foreign:
        raise ConfigError(
            f"run folder {run_dir} is not a demo run (it holds {_listed(foreign)}); the demo "
            f"writes {', '.join(_RUN_ENTRIES)} there: choose a new or empty run folder"
        )


def _check_own_files(folder: Path, own: Callable[[str], object], what: str) -> None:
    """``folder`` is absent, or a folder holding only files ``own`` recognises (an earlier
    demo's, which a rerun replaces)."""
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{folder} exists and is not a directory; the demo writes {what} there")
    if not folder.is_dir():
        return
    foreign = sorted(p.name for p in folder.iterdir() if not (p.is_file() and own(p.name)))
    if foreign:
        raise ConfigError(
            f"{folder} holds files the demo did not write ({_listed(foreign)}); refusing to "
            f"write {what} into it: choose a new or empty run folder"
        )


def _is_bench_report(name: str) -> bool:
    return name.startswith(f"{BENCH_NAME}.")


def _listed(names: list[str], limit: int = 3) -> str:
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown} and {len(names) - limit} more"


def _train_on_digits(demo: _Demo) -> _Trained:
    """Step 1, and the held-out split saved as images for the later steps."""
    from PIL import Image

    from resnext_deploy.render import RichTrainObserver
    from resnext_deploy.train import train

    config = demo.config
    demo.step(
        1,
        f"Train {config.arch} on the digits (scikit-learn's 1,797 real 8x8 scans, "
        f"upscaled to {config.input_size}px; seeded 80/20 split)",
    )
    with RichTrainObserver(demo.err) as observer:
        trained = train(config.train_config(), observer)
    val = trained.val_images
    assert val is not None  # train() always returns its validation split
    demo.console.print(
        f"best validation accuracy {trained.best_val_acc:.2%} (epoch "
        f"{trained.best_epoch}); checkpoint {trained.checkpoint}, curves {trained.curves}"
    )
    demo.samples_dir.mkdir(parents=True, exist_ok=True)
    for i in range(len(val)):
        Image.fromarray(val.images[i]).save(demo.samples_dir / f"{i:03d}_label{val.labels[i]}.png")
    return _Trained(trained.checkpoint, val)


def _export_every_precision(demo: _Demo, checkpoint: Path) -> ExportResult:
    """Step 2: every precision and the preprocessing graph, gated by parity on the held-out
    images as well as random ones."""
    from resnext_deploy.export.calibration import CalibrationConfig
    from resnext_deploy.export.pipeline import ExportConfig, export_checkpoint
    from resnext_deploy.export.variants import Precision
    from resnext_deploy.models.checkpoint import LoadOptions
    from resnext_deploy.render import print_parity
    from resnext_deploy.verify import VerifyConfig

    demo.step(2, "Export TorchScript + ONNX (fp32, fp16, int8, uint8-input graph), gated by parity")
    with demo.err.status("exporting (int8 calibration takes a few seconds) ..."):
        exported = export_checkpoint(
            checkpoint,
            LoadOptions(),
            ExportConfig(
                out_dir=demo.config.export_dir,
                overwrite=True,
                verify=VerifyConfig(batch_sizes=(1, 2, 3, 8), images=(demo.samples_dir,)),
                precisions=tuple(Precision),
                embed_preprocess=True,
                calibration=CalibrationConfig(source="digits"),
            ),
        )
    print_parity(demo.console, exported.parity)
    groups = ", ".join(f"{n} with group={g}" for g, n in exported.convs.by_group.items())
    demo.console.print(
        f"ONNX graph: {exported.convs.total} Conv nodes ({groups}); the spec (classes, "
        "input size, mean/std) is inside every file's metadata"
    )
    if exported.int8:
        q = exported.int8
        demo.console.print(
            f"int8: top-1 agreement with fp32 {q.top1_agreement:.2%} on "
            f"{q.held_out_images} held-out digits (gate 99%); "
            f"{q.fp32_bytes / 1e6:.2f} MB -> {q.int8_bytes / 1e6:.2f} MB"
        )
    return exported


def _compare_held_out_accuracy(demo: _Demo, trained: _Trained, out_dir: Path) -> _HeldOutAccuracy:
    """Step 3: PyTorch eager and onnxruntime on the same held-out digits. Raises
    :class:`ParityError` when they pick a different class for any of them."""
    from resnext_deploy.models.checkpoint import load_model
    from resnext_deploy.predict import Classifier
    from resnext_deploy.train import evaluate

    demo.step(3, "Held-out accuracy: PyTorch eager vs onnxruntime on the same images")
    val = trained.held_out
    model, spec = load_model(trained.checkpoint)
    _, acc_torch, pred_torch = evaluate(model, val, spec)
    classifier = Classifier(out_dir)
    pred_onnx = np.concatenate(
        [
            classifier.probabilities(list(val.images[i : i + 128])).argmax(1)
            for i in range(0, len(val), 128)
        ]
    )
    acc_onnx = float((pred_onnx == val.labels).mean())
    disagreements = int((pred_onnx != pred_torch).sum())
    demo.console.print(
        f"PyTorch top-1 {acc_torch:.2%}, onnxruntime top-1 {acc_onnx:.2%} on "
        f"{len(val)} held-out digits; {disagreements} predictions differ"
    )
    if disagreements:
        raise ParityError(f"onnxruntime and PyTorch disagree on {disagreements} held-out digits")
    return _HeldOutAccuracy(acc_torch, acc_onnx, disagreements, classifier)


def _benchmark_backends(demo: _Demo, out_dir: Path) -> dict[str, Path]:
    """Step 4: every backend, fp16 and int8 included, at the demo's batch sizes. Returns the
    report files written, by format."""
    from resnext_deploy.bench.backends import DEFAULT_BACKENDS, BenchBackend
    from resnext_deploy.bench.run import BenchConfig, run_benchmark
    from resnext_deploy.render import print_bench
    from resnext_deploy.timing import Timing

    demo.step(4, "Benchmark every backend across batch sizes on this CPU")
    with demo.err.status("benchmarking ..."):
        run = run_benchmark(
            str(out_dir),
            BenchConfig(
                backends=(
                    *DEFAULT_BACKENDS,
                    BenchBackend.ONNXRUNTIME_FP16,
                    BenchBackend.ONNXRUNTIME_INT8,
                ),
                batch_sizes=demo.config.bench_batch_sizes,
                measure_overhead=False,
                timing=Timing(warmup=3, min_iters=20, min_time_s=0.5),
                out_dir=demo.config.run_dir / BENCH_DIR,
                name=BENCH_NAME,
                command="resnext-deploy demo",
            ),
        )
    print_bench(demo.console, run.report)
    return run.files


def _classify_samples(demo: _Demo, classifier: Classifier) -> None:
    """Step 5: the first few held-out images, as files, through the torch-free predictor."""
    from resnext_deploy.predict import predict_paths
    from resnext_deploy.render import print_predictions

    demo.step(5, "Classify a few held-out images with the torch-free predictor")
    picks = sorted(demo.samples_dir.iterdir())[: demo.config.samples]
    print_predictions(demo.console, predict_paths(classifier, picks, top_k=3).predictions)


def _print_where_everything_is(demo: _Demo, out: Path, files: dict[str, Path]) -> None:
    """The files the demo left, what its numbers mean, and the commands to try next."""
    samples_dir = demo.samples_dir
    demo.console.rule(styled("Where everything is", "bold"))
    demo.console.print(
        f"checkpoint + curves  {demo.config.run_dir / TRAIN_DIR}\n"
        f"export (verified)    {out}: model.onnx (+ .fp16 .int8 .preprocess), "
        "model.torchscript.pt, weights.pt, parity.json, manifest.json\n"
        f"held-out images      {samples_dir}\n"
        f"benchmark            {files['md']} (+ .json .csv .png)\n\n"
        "What the numbers mean: 'max rel' is the largest |difference| divided by the largest "
        "|logit| of the reference (PyTorch eager); 'x eager' is eager's median latency over the "
        "backend's at the same batch size; img/s = batch size / median latency.\n"
        f"Next: resnext-deploy predict {out} your_images/ | resnext-deploy triton {out} | "
        f"resnext-deploy bench {out} --engines --record (onnxruntime or OpenVINO, measured; "
        "then predict --engine auto) | "
        f"node examples/node/classify.js {out}/model.preprocess.onnx {samples_dir}/000_*.png",
        highlight=False,
        soft_wrap=True,
    )
