"""``resnext-deploy demo``: the whole road on a built-in default, narrated.

Train a slim ResNeXt on scikit-learn's bundled handwritten digits (real data, offline), export it
to TorchScript and ONNX (fp32, fp16, int8 and a graph with the preprocessing inside), prove parity
on random and real inputs, compare held-out accuracy of PyTorch and onnxruntime, benchmark the
backends across batch sizes, and classify a few images with the torch-free predictor.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console

from resnext_deploy.errors import ParityError


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


@dataclass
class DemoResult:
    val_acc_torch: float
    val_acc_onnx: float
    disagreements: int
    export_dir: Path
    bench_files: dict[str, Path]


def run_demo(config: DemoConfig, console: Console, err: Console) -> DemoResult:
    from PIL import Image

    from resnext_deploy.bench.backends import DEFAULT_BACKENDS, BenchBackend
    from resnext_deploy.bench.files import write_reports
    from resnext_deploy.bench.run import BenchConfig, run_benchmark
    from resnext_deploy.export.calibration import CalibrationConfig
    from resnext_deploy.export.pipeline import ExportConfig, export_checkpoint
    from resnext_deploy.export.variants import Precision
    from resnext_deploy.models.checkpoint import LoadOptions, load_model
    from resnext_deploy.predict import Classifier, predict_paths
    from resnext_deploy.render import (
        RichTrainObserver,
        print_bench,
        print_parity,
        print_predictions,
    )
    from resnext_deploy.timing import Timing
    from resnext_deploy.train import TrainConfig, evaluate, train
    from resnext_deploy.verify import VerifyConfig

    def step(n: int, text: str) -> None:
        console.rule(f"[bold]{n}/5 {text}")

    step(
        1,
        f"Train {config.arch} on the digits (scikit-learn's 1,797 real 8x8 scans, "
        f"upscaled to {config.input_size}px; seeded 80/20 split)",
    )
    train_cfg = TrainConfig(
        data="digits",
        arch=config.arch,
        out_dir=config.run_dir / "train",
        epochs=config.epochs,
        input_size=config.input_size,
        lr=config.lr,
        overwrite=True,  # the demo's run folder is its own: a rerun replaces it
    )
    with RichTrainObserver(err) as observer:
        trained = train(train_cfg, observer)
    val = trained.val_images
    assert val is not None  # train() always returns its validation split
    console.print(
        f"best validation accuracy {trained.best_val_acc:.2%} (epoch "
        f"{trained.best_epoch}); checkpoint {trained.checkpoint}, curves {trained.curves}"
    )
    samples_dir = config.run_dir / "held-out"
    samples_dir.mkdir(parents=True, exist_ok=True)
    for i in range(len(val)):
        Image.fromarray(val.images[i]).save(samples_dir / f"{i:03d}_label{val.labels[i]}.png")

    step(2, "Export TorchScript + ONNX (fp32, fp16, int8, uint8-input graph), gated by parity")
    with err.status("exporting (int8 calibration takes a few seconds) ..."):
        exported = export_checkpoint(
            trained.checkpoint,
            LoadOptions(),
            ExportConfig(
                out_dir=config.export_dir,
                overwrite=True,
                verify=VerifyConfig(batch_sizes=(1, 2, 3, 8), images=(samples_dir,)),
                precisions=tuple(Precision),
                embed_preprocess=True,
                calibration=CalibrationConfig(source="digits"),
            ),
        )
    print_parity(console, exported.parity)
    groups = ", ".join(f"{n} with group={g}" for g, n in exported.convs.by_group.items())
    console.print(
        f"ONNX graph: {exported.convs.total} Conv nodes ({groups}); the spec (classes, "
        "input size, mean/std) is inside every file's metadata"
    )
    if exported.int8:
        q = exported.int8
        console.print(
            f"int8: top-1 agreement with fp32 {q.top1_agreement:.2%} on "
            f"{q.held_out_images} held-out digits (gate 99%); "
            f"{q.fp32_bytes / 1e6:.2f} MB -> {q.int8_bytes / 1e6:.2f} MB"
        )

    step(3, "Held-out accuracy: PyTorch eager vs onnxruntime on the same images")
    model, spec = load_model(trained.checkpoint)
    _, acc_torch, pred_torch = evaluate(model, val, spec)
    classifier = Classifier(exported.out_dir)
    pred_onnx = np.concatenate(
        [
            classifier.probabilities(list(val.images[i : i + 128])).argmax(1)
            for i in range(0, len(val), 128)
        ]
    )
    acc_onnx = float((pred_onnx == val.labels).mean())
    disagreements = int((pred_onnx != pred_torch).sum())
    console.print(
        f"PyTorch top-1 {acc_torch:.2%}, onnxruntime top-1 {acc_onnx:.2%} on "
        f"{len(val)} held-out digits; {disagreements} predictions differ"
    )
    if disagreements:
        raise ParityError(f"onnxruntime and PyTorch disagree on {disagreements} held-out digits")

    step(4, "Benchmark every backend across batch sizes on this CPU")
    with err.status("benchmarking ..."):
        report = run_benchmark(
            str(exported.out_dir),
            BenchConfig(
                backends=(
                    *DEFAULT_BACKENDS,
                    BenchBackend.ONNXRUNTIME_FP16,
                    BenchBackend.ONNXRUNTIME_INT8,
                ),
                batch_sizes=config.bench_batch_sizes,
                measure_overhead=False,
                timing=Timing(warmup=3, min_iters=20, min_time_s=0.5),
                command="resnext-deploy demo",
            ),
        )
    files = write_reports(report, config.run_dir / "bench", "demo-cpu")
    print_bench(console, report)

    step(5, "Classify a few held-out images with the torch-free predictor")
    picks = sorted(samples_dir.iterdir())[: config.samples]
    print_predictions(console, predict_paths(classifier, picks, top_k=3).predictions)

    console.rule("[bold]Where everything is")
    out = exported.out_dir
    console.print(
        f"checkpoint + curves  {config.run_dir / 'train'}\n"
        f"export (verified)    {out}: model.onnx (+ .fp16 .int8 .preprocess), "
        "model.torchscript.pt, weights.pt, parity.json, manifest.json\n"
        f"held-out images      {samples_dir}\n"
        f"benchmark            {files['md']} (+ .json .csv .png)\n\n"
        "What the numbers mean: 'max rel' is the largest |difference| divided by the largest "
        "|logit| of the reference (PyTorch eager); 'x eager' is eager's median latency over the "
        "backend's at the same batch size; img/s = batch size / median latency.\n"
        f"Next: resnext-deploy predict {out} your_images/ | resnext-deploy triton {out} | "
        f"node examples/node/classify.js {out}/model.preprocess.onnx {samples_dir}/000_*.png",
        highlight=False,
        soft_wrap=True,
    )
    return DemoResult(acc_torch, acc_onnx, disagreements, out, files)
