"""Every deployed int8 path on the CPU side by side: onnxruntime and OpenVINO, the export's int8
and NNCF's, in one interleaved run against onnxruntime fp32, with their accuracy.

    .venv/bin/python benchmarks/int8.py            # 15-20 min on 2 idle cores (estimated)
    .venv/bin/python benchmarks/int8.py --smoke    # resnext11_mini at 32 px: about 1.5 minutes

(The full run's time is scaled from smoke runs and one at 64 px, not yet measured;
``--skip-every-conv`` saves about a seventh of the timing.)

ResNeXt-50 32x4d with random weights (speed does not depend on them; nothing is downloaded) is
exported with ``--precision int8`` as the CLI does it (calibrated on 64 bundled digits upscaled to
224 px; the accuracy gate is off: top-1 agreement means nothing on random weights), and the same
fp32 file goes through NNCF's post-training quantization (its defaults) on the same 64 images;
each quantizer is timed. onnxruntime (fp32, the export's int8, NNCF's int8, and every convolution
int8 as the naive reference) and OpenVINO's CPU plugin through the project's runner (f32 precision
hint, ``LATENCY``, same threads; fp32, the export's int8, NNCF's int8) take turns in short blocks
at batch 1 and 8; each figure is the median over rounds of per-round medians, each ratio the
median of per-round ratios to onnxruntime fp32. Then: onnxruntime's profile of fp32 and the
export's int8 at batch 1; which layers each engine runs in int8; centred-logit cosine to fp32 on
crops of scikit-learn's two sample photos; resnext11_mini trained on the digits as ``make demo``
trains it, int8 by the export and by NNCF, top-1 agreement with fp32 on the held-out digits (all
recomputed from the files with plain runners); and the issue's targets, met or not.

Writes benchmarks/results/cpu-int8.{json,csv,md,png} (``--smoke``: a temporary folder).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

sys.path.insert(0, str(Path(__file__).resolve().parent))  # int8_report beside it, also for tests
from int8_report import (  # noqa: E402
    BASE,
    BATCH_SIZES,
    BEST_TARGETS,
    CALIBRATION_IMAGES,
    EVERY,
    EXPORT,
    FP32,
    NNCF,
    OPENVINO,
    ORT,
    ORT_INT8,
    ORT_TARGETS,
    PATH_BY_NAME,
    PATHS,
    RX50,
    EnginePath,
    figure,
    fmt,
    markdown,
    write,
)

__all__ = ["figure", "fmt", "markdown", "write"]  # the report half, used by the tests
BLOCK = {1: 10, 8: 3}  # timed calls per turn
BLOCKS = 4  # turns per model, per round and batch size
SETTLE = 2  # untimed calls at the start of each turn

# the engine x model paths, their colours and the targets: int8_report.py


@dataclass(frozen=True, kw_only=True)
class Setup:
    """What one run measures; ``--smoke`` shrinks it to check the script end to end."""

    arch: str = RX50
    input_size: int = 224
    rounds: int = 5
    threads: int = 2
    crops: int = 16
    digits_epochs: int = 10
    every_conv: bool = True


# --- the model files ----------------------------------------------------------------------------


def random_spec(setup: Setup) -> Any:
    from resnext_deploy.models.registry import ARCHS
    from resnext_deploy.spec import ModelSpec

    cfg = ARCHS.get(setup.arch)
    size = setup.input_size
    return ModelSpec(setup.arch, 1000, size, size, arch_config=cfg.to_dict())


def calibration_config() -> Any:
    from resnext_deploy.export.calibration import CalibrationConfig

    return CalibrationConfig(source="digits", min_agreement=0.0, max_calibration=CALIBRATION_IMAGES)


@contextmanager
def timing_int8_step(spent: list[float]) -> Iterator[None]:
    """Times the export pipeline's int8 step on its own (the export also writes TorchScript and
    checks parity, which is not quantizing): the pipeline's ``export_int8``, wrapped."""
    from unittest import mock

    from resnext_deploy.export import pipeline

    real = pipeline.export_int8

    def timed(*args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            spent.append(time.perf_counter() - began)

    with mock.patch.object(pipeline, "export_int8", timed):
        yield


def export_random(setup: Setup, out: Path) -> tuple[dict[str, Any] | None, float]:
    """The architecture with seeded random weights, exported with int8 as the CLI does it.
    Returns the export's int8 result and the seconds its int8 step took."""
    import torch

    from resnext_deploy.artifact import Precision
    from resnext_deploy.export.pipeline import ExportConfig, export_model
    from resnext_deploy.models.registry import build_model
    from resnext_deploy.verify import VerifyConfig

    torch.manual_seed(0)
    model = build_model(setup.arch, 1000)
    spent: list[float] = []
    config = ExportConfig(
        out_dir=out,
        overwrite=True,
        verify=VerifyConfig(batch_sizes=(1, 2), auto_cuda=False),
        precisions=(Precision.FP32, Precision.INT8),
        calibration=calibration_config(),
    )
    with timing_int8_step(spent):
        result = export_model(model, random_spec(setup), config)
    return (result.int8.to_dict() if result.int8 else None), sum(spent)


class _Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def nncf_quantize(fp32: Path, calibration: np.ndarray, out: Path) -> dict[str, Any]:
    """NNCF's post-training int8 of ``fp32`` with its defaults (preset ``performance``: symmetric
    weights and activations) and ``subset_size`` = every calibration image, one image per item.
    On an ``onnx.ModelProto`` NNCF 3.4 uses its ONNX backend (statistics through onnxruntime) and
    returns a QDQ ``ModelProto``, written to ``out``. Returns what it did and took."""
    import nncf
    import onnx

    model = onnx.load(str(fp32))
    name = model.graph.input[0].name
    items = [calibration[i : i + 1] for i in range(len(calibration))]
    dataset = nncf.Dataset(items, lambda x: {name: x})
    caught = _Warnings()
    logging.getLogger("nncf").addHandler(caught)
    began = time.perf_counter()
    try:
        quantized = nncf.quantize(model, dataset, subset_size=len(items))
    finally:
        logging.getLogger("nncf").removeHandler(caught)
    seconds = time.perf_counter() - began
    onnx.save(quantized, str(out))
    ops = Counter(n.op_type for n in quantized.graph.node)
    return {
        "seconds": seconds,
        "backend": "onnx",
        "returns": type(quantized).__name__,
        "opset": quantized.opset_import[0].version,
        "subset_size": len(items),
        "quantize_linear": ops["QuantizeLinear"],
        "dequantize_linear": ops["DequantizeLinear"],
        "warnings": caught.messages,
    }


def quantize_everything(fp32: Path, work: Path, spec: Any) -> Path:
    """The naive int8: every convolution quantized (the classifier stays fp32, as in the export)."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from resnext_deploy.export.calibration import CalibrationMethod, calibration_sets
    from resnext_deploy.export.quantize import calibrate, quantize

    prepared = work / "prepared.onnx"
    quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
    calibration, _ = calibration_sets(calibration_config(), spec)
    ranges = calibrate(prepared, calibration, CalibrationMethod.MINMAX, work / "ranges.json")
    graph = onnx.load(str(prepared), load_external_data=False).graph
    classifier = [n.name for n in graph.node if n.op_type == "Gemm"]
    out = work / "int8-all.onnx"
    quantize(prepared, out, ranges, CalibrationMethod.MINMAX, classifier)
    return out


def prepare_files(setup: Setup, work: Path) -> tuple[dict[str, Path], dict[str, Any]]:
    """The model files by :class:`EnginePath` model (fp32, the export's int8, NNCF's, every
    conv) and how they were made; reused from ``work`` when an earlier run there made them."""
    from resnext_deploy.export.calibration import calibration_sets

    saved = work / "files.json"
    facts = json.loads(saved.read_text()) if saved.is_file() else {}
    files = {k: Path(v) for k, v in facts.get("files", {}).items()}
    wanted = {FP32, EXPORT, NNCF} | ({EVERY} if setup.every_conv else set())
    same = facts.get("arch") == setup.arch and facts.get("input_size") == setup.input_size
    if same and wanted <= set(files) and all(f.is_file() for f in files.values()):
        return files, facts
    out = work / "model"
    log(f"exporting {setup.arch} at {setup.input_size} px with int8 ...")
    q, export_s = export_random(setup, out)
    files = {FP32: out / "model.onnx", EXPORT: out / "model.int8.onnx"}
    log("quantizing the same fp32 file with NNCF ...")
    calibration, _ = calibration_sets(calibration_config(), random_spec(setup))
    nncf_facts = nncf_quantize(files[FP32], calibration, work / "nncf.int8.onnx")
    files[NNCF] = work / "nncf.int8.onnx"
    if setup.every_conv:
        files[EVERY] = quantize_everything(files[FP32], work, random_spec(setup))
    facts = {
        "arch": setup.arch,
        "input_size": setup.input_size,
        "files": {k: str(v) for k, v in files.items()},
        "int8_export": q,
        "quantizers": {"export_int8_s": export_s, "nncf": nncf_facts},
    }
    saved.write_text(json.dumps(facts, default=str))
    return files, facts


# --- runners and timing -------------------------------------------------------------------------


def open_runner(path: EnginePath, file: Path, threads: int) -> Any:
    """The project's runner for ``path``: OpenVINO on its CPU device with its own hints for one
    synchronous caller (f32 precision, ``LATENCY``, ``threads``), or onnxruntime's CPU provider."""
    if path.engine == OPENVINO:
        from resnext_deploy.runtime.openvino import (
            OpenVinoConfig,
            OpenVinoPrecision,
            OpenVinoRunner,
            PerformanceHint,
        )

        config = OpenVinoConfig(
            precision=OpenVinoPrecision.F32, hint=PerformanceHint.LATENCY, threads=threads
        )
        return OpenVinoRunner(file, config, name=path.name)
    from resnext_deploy.runtime.ort import OrtRunner
    from resnext_deploy.runtime.providers import SessionConfig

    return OrtRunner(file, SessionConfig(intra_op_threads=threads), name=path.name)


def runner_factories(files: dict[str, Path], threads: int) -> dict[str, Callable[[], Any]]:
    return {
        p.name: partial(open_runner, p, files[p.model], threads) for p in PATHS if p.model in files
    }


def time_interleaved(
    factories: dict[str, Callable[[], Any]], setup: Setup
) -> tuple[dict[str, dict[int, list[float]]], dict[str, Any]]:
    """Per round and batch size, the runners take turns in short blocks (``BLOCK[b]`` timed calls
    after ``SETTLE`` untimed ones, ``BLOCKS`` turns each), so that they share the machine's state
    (it is shared with other work) without timing one engine while another's idle threads still
    spin. Returns each runner's per-round medians (ms) and what each runner ran."""
    from resnext_deploy.timing import summarize as stats_of

    runners = {name: make() for name, make in factories.items()}
    engines = {name: runner.describe() for name, runner in runners.items()}
    rng = np.random.default_rng(0)
    size = setup.input_size
    batches = {b: rng.standard_normal((b, 3, size, size), dtype=np.float32) for b in BATCH_SIZES}
    samples: dict[str, dict[int, list[float]]] = {n: {b: [] for b in BATCH_SIZES} for n in runners}
    try:
        for r in range(setup.rounds):
            for b in BATCH_SIZES:
                times = time_turns({n: x.bind(batches[b]) for n, x in runners.items()}, b)
                for name, values in times.items():
                    p50 = stats_of(values, b).p50_ms
                    samples[name][b].append(p50)
                    log(f"round {r + 1}/{setup.rounds} batch {b} {name}: {p50:.1f} ms")
    finally:
        for runner in runners.values():
            runner.close()
    return samples, engines


def time_turns(bound: dict[str, Any], batch: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in bound}
    for _ in range(BLOCKS):
        for name, call in bound.items():
            for _ in range(SETTLE):
                call.run()
            for _ in range(BLOCK.get(batch, 5)):
                began = time.perf_counter()
                call.run()  # CPU runners: the call returns when the work is done
                times[name].append(time.perf_counter() - began)
    return times


def summarize(samples: dict[str, dict[int, list[float]]], base: str) -> list[dict[str, Any]]:
    rows = []
    for name, by_batch in samples.items():
        path = PATH_BY_NAME[name]
        for b, values in by_batch.items():
            ratios = [f / v for f, v in zip(samples[base][b], values, strict=True)]
            rows.append(
                {
                    "path": name,
                    "engine": path.engine,
                    "model": path.model,
                    "batch_size": b,
                    "median_ms": float(np.median(values)),
                    "rounds_ms": [round(v, 2) for v in values],
                    "speedup_vs_base": float(np.median(ratios)),
                    "speedup_rounds": [round(x, 3) for x in ratios],
                }
            )
    return rows


def profile_ort(fp32: Path, int8: Path, setup: Setup) -> dict[str, Any]:
    from resnext_deploy.artifact import Variant
    from resnext_deploy.bench.profile import ProfileConfig, profile_files

    report = profile_files(
        {Variant.FP32: fp32, Variant.INT8: int8},
        setup.input_size,
        ProfileConfig(variants=(Variant.FP32, Variant.INT8), threads=setup.threads, runs=10),
        setup.arch,
    )
    return report.to_dict()


def int8_layers(files: dict[str, Path], q: dict[str, Any] | None, threads: int) -> dict[str, Any]:
    """Which convolutions each engine runs in int8, for the export's and NNCF's int8 files:
    onnxruntime's counts from its optimized graph (the export's as the export reported them),
    OpenVINO's from its compiled runtime model."""
    from resnext_deploy.export.quantize import running_convs
    from resnext_deploy.runtime.openvino import OpenVinoRunner

    layers: dict[str, Any] = {}
    for model in (EXPORT, NNCF):
        if q is not None and model == EXPORT:
            ort = {"int8_convs": q["int8_convs"], "fp32_convs": q["fp32_convs"], "from": "export"}
        else:
            int8_convs, fp32_convs = running_convs(files[model], threads)
            ort = {"int8_convs": int8_convs, "fp32_convs": fp32_convs, "from": "this run"}
        with OpenVinoRunner(files[model], name=f"{OPENVINO} {model}") as runner:
            layers[model] = {ORT: ort, OPENVINO: runner.layer_precisions().to_dict()}
    return layers


# --- accuracy -----------------------------------------------------------------------------------


def logits_of(path: EnginePath, file: Path, images: np.ndarray, threads: int) -> np.ndarray:
    with open_runner(path, file, threads) as runner:
        return np.concatenate([runner.infer(images[i : i + 8]) for i in range(0, len(images), 8)])


def all_logits(files: dict[str, Path], images: np.ndarray, threads: int) -> dict[str, np.ndarray]:
    return {
        p.name: logits_of(p, files[p.model], images, threads) for p in PATHS if p.model in files
    }


def centred_cosines(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """Per row, the cosine between the two logit vectors after subtracting each one's mean
    (softmax ignores a constant shift; random-weight logits share a large one)."""
    a = reference.astype(np.float64) - reference.mean(axis=1, keepdims=True)
    b = candidate.astype(np.float64) - candidate.mean(axis=1, keepdims=True)
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def photo_crops(count: int, spec: Any) -> np.ndarray:
    """``count`` crops of scikit-learn's two sample photos (427x640), alternating photos, of
    shrinking sizes (the whole short side down to 30% of it) at seeded positions, preprocessed
    as ``predict`` does for ``spec``."""
    from sklearn.datasets import load_sample_images

    from resnext_deploy.preprocess import preprocess

    photos = load_sample_images().images
    rng = np.random.default_rng(0)
    fractions = (1.0, 0.8, 0.6, 0.45, 0.3)
    crops = []
    for i in range(count):
        photo = photos[i % len(photos)]
        h, w = photo.shape[:2]
        side = int(min(h, w) * fractions[(i // len(photos)) % len(fractions)])
        width = min(w, int(side * rng.uniform(0.75, 1.5)))
        top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - width + 1))
        crops.append(photo[top : top + side, left : left + width])
    return preprocess(crops, spec)


def photo_accuracy(files: dict[str, Path], setup: Setup) -> dict[str, Any]:
    """Centred-logit cosine of every path to onnxruntime fp32 on the photo crops."""
    crops = photo_crops(setup.crops, random_spec(setup))
    logits = all_logits(files, crops, setup.threads)
    paths = {}
    for name, values in logits.items():
        if name != BASE:
            cos = centred_cosines(logits[BASE], values)
            paths[name] = {
                "min_cosine": float(cos.min()),
                "mean_cosine": float(cos.mean()),
                "cosines": [round(float(c), 6) for c in cos],
            }
    return {"images": len(crops), "reference": BASE, "paths": paths}


def train_and_export_digits(work: Path, epochs: int) -> tuple[Any, Any]:
    """resnext11_mini trained on the digits as ``make demo`` trains it (16 px), exported with
    int8 at the default gate (99%)."""
    from resnext_deploy.artifact import Precision
    from resnext_deploy.export.calibration import CalibrationConfig
    from resnext_deploy.export.pipeline import ExportConfig, export_checkpoint
    from resnext_deploy.models.checkpoint import LoadOptions
    from resnext_deploy.train import TrainConfig, train

    trained = train(
        TrainConfig(
            data="digits",
            arch="resnext11_mini",
            out_dir=work / "train",
            epochs=epochs,
            input_size=16,
            lr=2e-3,
            overwrite=True,
        )
    )
    exported = export_checkpoint(
        trained.checkpoint,
        LoadOptions(),
        ExportConfig(
            out_dir=work / "digits",
            overwrite=True,
            precisions=(Precision.FP32, Precision.INT8),
            calibration=CalibrationConfig(source="digits"),
        ),
    )
    return trained, exported


def digits_accuracy(work: Path, setup: Setup) -> dict[str, Any]:
    """Top-1 agreement with onnxruntime fp32 on the held-out digits, per path: the export's int8
    and NNCF's (quantized from the same fp32 file on the export's calibration digits)."""
    from resnext_deploy.artifact import ONNX_FILE, Variant
    from resnext_deploy.export.calibration import CalibrationConfig, calibration_sets
    from resnext_deploy.preprocess import normalize

    trained, exported = train_and_export_digits(work, setup.digits_epochs)
    q, val = exported.int8, trained.val_images
    assert q is not None and val is not None  # int8 was asked for; train keeps its split
    files = {FP32: exported.out_dir / ONNX_FILE, EXPORT: exported.out_dir / Variant.INT8.file}
    calibration, _ = calibration_sets(CalibrationConfig(source="digits"), exported.spec)
    nncf_facts = nncf_quantize(files[FP32], calibration, work / "digits-nncf.onnx")
    files[NNCF] = work / "digits-nncf.onnx"
    logits = all_logits(files, normalize(val.images, exported.spec), setup.threads)
    reference = logits[BASE].argmax(1)
    paths = {}
    for name, values in logits.items():
        agreeing = int((values.argmax(1) == reference).sum())
        paths[name] = {
            "agreeing": agreeing,
            "top1_agreement": agreeing / len(val),
            "accuracy": float((values.argmax(1) == val.labels).mean()),
        }
    return {
        "arch": "resnext11_mini",
        "epochs": setup.digits_epochs,
        "val_accuracy": trained.best_val_acc,
        "held_out_images": len(val),
        "calibration_images": len(calibration),
        "reported_by_export": q.top1_agreement,
        "fp32_layers": [vars(layer) for layer in q.fp32_layers],
        "nncf": nncf_facts,
        "paths": paths,
    }


# --- targets ------------------------------------------------------------------------------------


def side_by_side(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Per deployed int8 path: its speed-ups, digits agreement and photo cosines (``None``
    where not measured)."""
    speed = {(r["path"], r["batch_size"]): r["speedup_vs_base"] for r in data["rows"]}
    digits = (data.get("digits") or {}).get("paths", {})
    photos = data["photos"]["paths"]
    side = []
    for path in PATHS:
        if path.deployed_int8 and (path.name, 1) in speed:
            side.append(
                {
                    "path": path.name,
                    "speedup_b1": speed.get((path.name, 1)),
                    "speedup_b8": speed.get((path.name, 8)),
                    "digits_agreement": digits.get(path.name, {}).get("top1_agreement"),
                    "photo_min_cosine": photos.get(path.name, {}).get("min_cosine"),
                    "photo_mean_cosine": photos.get(path.name, {}).get("mean_cosine"),
                }
            )
    return side


def check(row: dict[str, Any], target: tuple[str, float, str], label: str) -> dict[str, Any]:
    key, threshold, what = target
    measured = row.get(key)
    return {
        "target": f"{label}: {what} >= {threshold:g}",
        "path": row["path"],
        "key": key,
        "measured": measured,
        "threshold": threshold,
        "met": measured is not None and measured >= threshold,
    }


def targets(side: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets: the best deployed int8 path (the one meeting most of its four
    targets, then the fastest at batch 1) against all four, and onnxruntime's own int8 against
    its speed-ups."""
    if not side:
        return []

    def score(row: dict[str, Any]) -> tuple[int, float]:
        met = sum(check(row, t, "")["met"] for t in BEST_TARGETS)
        return met, row["speedup_b1"] or 0.0

    best = max(side, key=score)
    rows = [check(best, t, "best int8 path") for t in BEST_TARGETS]
    ort = [r for r in side if r["path"] == ORT_INT8]
    return rows + [check(r, t, "onnxruntime int8") for r in ort for t in ORT_TARGETS]


# --- running it ---------------------------------------------------------------------------------


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def wait_for_quiet(threshold: float, limit_s: float = 1200) -> float:
    """The machine is shared: wait until the 1-minute load average is below ``threshold``."""
    began = time.time()
    while os.getloadavg()[0] >= threshold and time.time() - began < limit_s:
        log(f"load {os.getloadavg()[0]:.2f} >= {threshold}: waiting")
        time.sleep(30)
    return os.getloadavg()[0]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="Check the script end to end in a few minutes: resnext11_mini at 32 px, 1 round, "
        "4 photo crops, 3 digits epochs, no waiting for a quiet machine, results in a temp folder.",
    )
    parser.add_argument("--arch", default=RX50, help="Random-weight architecture to time.")
    parser.add_argument("--input-size", type=int, help="Default: the architecture's own.")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--crops", type=int, default=16, help="Photo crops for the cosines.")
    parser.add_argument("--digits-epochs", type=int, default=10)
    parser.add_argument("--skip-digits", action="store_true")
    parser.add_argument(
        "--skip-every-conv", action="store_true", help="Leave out the naive every-conv int8."
    )
    parser.add_argument("--out", type=Path, help="Default: benchmarks/results.")
    parser.add_argument("--name", default="cpu-int8")
    parser.add_argument(
        "--work", type=Path, help="Keep exports here and reuse them on the next run (timing only)."
    )
    parser.add_argument(
        "--quiet-load",
        type=float,
        default=1.0,
        help="Before timing, wait (up to 20 min) for the 1-minute load average to fall below this.",
    )
    return parser.parse_args(argv)


def setup_from(args: argparse.Namespace) -> Setup:
    from resnext_deploy.models.registry import ARCHS

    if args.smoke:
        args.quiet_load = float("inf")
        args.out = args.out or Path(tempfile.gettempdir()) / "int8-smoke"
        return Setup(
            arch="resnext11_mini",
            input_size=32,
            rounds=1,
            threads=args.threads,
            crops=4,
            digits_epochs=3,
            every_conv=not args.skip_every_conv,
        )
    args.out = args.out or ROOT / "benchmarks" / "results"
    return Setup(
        arch=args.arch,
        input_size=args.input_size or ARCHS.get(args.arch).input_size,
        rounds=args.rounds,
        threads=args.threads,
        crops=args.crops,
        digits_epochs=args.digits_epochs,
        every_conv=not args.skip_every_conv,
    )


def measure(setup: Setup, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Everything the result files hold, but the environment."""
    phases: dict[str, float] = {}
    began = time.perf_counter()
    files, facts = prepare_files(setup, work)
    phases["files"] = time.perf_counter() - began
    load_before = wait_for_quiet(args.quiet_load)
    began = time.perf_counter()
    samples, engines = time_interleaved(runner_factories(files, setup.threads), setup)
    phases["timing"] = time.perf_counter() - began
    load_after = os.getloadavg()[0]
    log("profiling, reading layer precisions, checking accuracy on photo crops ...")
    began = time.perf_counter()
    data: dict[str, Any] = {
        "setup": asdict(setup),
        "load_average_1min": {"before_timing": load_before, "after_timing": load_after},
        "rows": summarize(samples, BASE),
        "engines": engines,
        "int8_export": facts["int8_export"],
        "quantizers": facts["quantizers"],
        "layers": int8_layers(files, facts["int8_export"], setup.threads),
        "profile_batch1": profile_ort(files[FP32], files[EXPORT], setup),
        "photos": photo_accuracy(files, setup),
    }
    phases["checks"] = time.perf_counter() - began
    began = time.perf_counter()
    data["digits"] = None if args.skip_digits else digits_kept(work, setup, reuse=bool(args.work))
    phases["digits"] = time.perf_counter() - began
    data["phase_seconds"] = {k: round(v, 1) for k, v in phases.items()}
    data["side_by_side"] = side_by_side(data)
    data["targets"] = targets(data["side_by_side"])
    return data


def digits_kept(work: Path, setup: Setup, *, reuse: bool) -> dict[str, Any]:
    """:func:`digits_accuracy`, or what an earlier run in ``work`` saved with the same epochs."""
    kept = work / "digits.json"
    if reuse and kept.is_file():
        saved = json.loads(kept.read_text())
        if saved.get("epochs") == setup.digits_epochs:
            return dict(saved)
    log(f"training resnext11_mini on the digits ({setup.digits_epochs} epochs) ...")
    digits = digits_accuracy(work, setup)
    kept.write_text(json.dumps(digits, default=str))
    return digits


def main(argv: list[str] | None = None) -> int:
    from resnext_deploy.environment import BENCH_PACKAGES, environment, package_versions
    from resnext_deploy.machine.cpu import cpu_info

    args = parse_args(argv)
    setup = setup_from(args)
    started = time.time()
    command = "python benchmarks/int8.py " + " ".join(sys.argv[1:] if argv is None else argv)
    with tempfile.TemporaryDirectory(prefix="int8-bench-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        measured = measure(setup, args, work)
    extra = {
        "cpu_isa": cpu_info().to_dict(),
        "threads": setup.threads,
        "load_average_1min": measured.pop("load_average_1min"),
        "versions": package_versions((*BENCH_PACKAGES, "nncf")),
    }
    data = {
        "command": command,
        "environment": environment(extra),
        "seconds": round(time.time() - started),
        **measured,
    }
    write(data, args.out, args.name)
    log(f"wrote {args.out}/{args.name}.{{json,csv,md,png}}")
    return 0


# --- rendering ----------------------------------------------------------------------------------


if __name__ == "__main__":
    raise SystemExit(main())
