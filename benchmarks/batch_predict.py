"""predict --ray (Ray Data) against single-process predict on the same images and cores, and
on a simulated multi-node cluster, side by side in one run.

Each round runs, in a rotating order: plain `predict` (one process, onnxruntime on every
core, decoding in the same process), `predict --ray` on a local Ray (two settings), and on a
cluster made with Ray's own `ray.cluster_utils.Cluster` on this machine (a head and one or two
worker nodes, sharing its cores). Every run classifies the same images with the same export
into a fresh folder. Reported: images/s end to end (Ray's start included) and in the steady
part (first result to last), with medians over rounds and the median of per-round ratios to
plain predict.

Usage (about 10 minutes on 2 cores):

    python benchmarks/batch_predict.py --rounds 3 --images 400 --out benchmarks/results

Without --export it builds a resnext50_32x4d with random weights (speed does not depend on
them) and exports it with `resnext-deploy export` under --work.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from random_export import ensure_random_export

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "resnext_deploy"]


@dataclass
class Run:
    mode: str
    round: int
    images: int
    seconds: float  # end to end: the call, Ray's start and shutdown included
    steady_seconds: float  # first result to last
    load_before: float

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds

    @property
    def steady_images_per_s(self) -> float:
        return self.images / self.steady_seconds if self.steady_seconds > 0 else float("nan")


def ensure_export(args: argparse.Namespace) -> Path:
    return ensure_random_export(args.work, "rx50-batch", args.export)


def make_images(folder: Path, count: int) -> Path:
    """``count`` JPEG crops of scikit-learn's two colour photographs, 160 to 420 pixels a side."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    if folder.is_dir() and len(list(folder.glob("*.jpg"))) == count:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    photos = load_sample_images().images
    rng = np.random.default_rng(0)
    for i in range(count):
        photo = photos[i % 2]
        h, w = rng.integers(160, 421, 2)
        top, left = rng.integers(0, photo.shape[0] - h + 1), rng.integers(0, photo.shape[1] - w)
        Image.fromarray(photo[top : top + h, left : left + w]).save(
            folder / f"{i:05d}.jpg", quality=90
        )
    return folder


class Timer:
    """The progress callback: when the first and the last result arrived."""

    def __init__(self) -> None:
        self.first: float | None = None
        self.last = 0.0

    def __call__(self, done: int, total: int) -> None:
        if done and self.first is None:
            self.first = time.perf_counter()
        if done:
            self.last = time.perf_counter()

    @property
    def steady(self) -> float:
        return self.last - self.first if self.first else float("nan")


def plain_predict(export: Path, images: Path, batch_size: int) -> tuple[float, float]:
    from resnext_deploy.predict import Classifier, predict_paths

    start = time.perf_counter()
    with Classifier(export) as classifier:
        ready = time.perf_counter()
        result = predict_paths(classifier, [images], top_k=5, batch_size=batch_size)
    end = time.perf_counter()
    assert not result.failures, result.failures[:3]
    return end - start, end - ready


def ray_predict(
    export: Path, images: Path, out: Path, batch_size: int, actors: int, threads: int,
    address: str | None = None,
) -> tuple[float, float]:  # fmt: skip
    from resnext_deploy.batch.config import BatchConfig
    from resnext_deploy.batch.run import predict_on_ray

    shutil.rmtree(out, ignore_errors=True)
    config = BatchConfig(
        model=export, source=images, out_dir=out, batch_size=batch_size, actors=actors,
        threads=threads, address=address,
    )  # fmt: skip
    timer = Timer()
    start = time.perf_counter()
    summary = predict_on_ray(config, timer)
    seconds = time.perf_counter() - start
    assert summary.classified == summary.images, summary
    return seconds, timer.steady


def cluster_predict(
    export: Path, images: Path, out: Path, batch_size: int, workers: int
) -> tuple[float, float]:
    """A head with 1 CPU (decoding) and ``workers`` 1-CPU nodes, one actor each."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        for _ in range(workers):
            cluster.add_node(num_cpus=1)
        return ray_predict(export, images, out, batch_size, workers, 1, cluster.address)
    finally:
        cluster.shutdown()


def modes(args: argparse.Namespace, export: Path, images: Path) -> dict[str, Callable[[], Any]]:
    out, b = args.work / "out", args.batch_size
    cores = os.cpu_count() or 1
    return {
        "predict": lambda: plain_predict(export, images, b),
        f"ray local, 1 actor x {cores} threads": lambda: ray_predict(
            export, images, out, b, 1, cores
        ),
        f"ray local, up to {cores} actors x 1 thread": lambda: ray_predict(
            export, images, out, b, cores, 1
        ),
        "ray cluster, head + 1 worker node": lambda: cluster_predict(export, images, out, b, 1),
        "ray cluster, head + 2 worker nodes": lambda: cluster_predict(export, images, out, b, 2),
    }


def measure(args: argparse.Namespace) -> list[Run]:
    export = ensure_export(args)
    images = make_images(args.work / "images", args.images)
    table = modes(args, export, images)
    names = list(table)
    runs = []
    for r in range(args.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            load = os.getloadavg()[0]
            seconds, steady = table[name]()
            runs.append(Run(name, r, args.images, seconds, steady, load))
            print(f"round {r} {name}: {args.images / seconds:.2f} images/s end to end, "
                  f"{args.images / steady:.2f} steady (load {load:.2f})", flush=True)  # fmt: skip
    return runs


def summarize(runs: list[Run]) -> dict[str, dict[str, float]]:
    """Per mode: median images/s (end to end and steady) and the median of per-round ratios to
    plain predict's images/s."""
    baseline = {r.round: r for r in runs if r.mode == "predict"}
    summary = {}
    for mode in dict.fromkeys(r.mode for r in runs):
        mine = [r for r in runs if r.mode == mode]
        summary[mode] = {
            "images_per_s": statistics.median(r.images_per_s for r in mine),
            "steady_images_per_s": statistics.median(r.steady_images_per_s for r in mine),
            "vs_predict": statistics.median(
                r.images_per_s / baseline[r.round].images_per_s for r in mine
            ),
            "steady_vs_predict": statistics.median(
                r.steady_images_per_s / baseline[r.round].steady_images_per_s for r in mine
            ),
        }
    return summary


def markdown(args: argparse.Namespace, summary: dict[str, dict[str, float]], host: str) -> str:
    lines = [
        "# predict --ray (Ray Data) vs single-process predict",
        "",
        f"Command: `python benchmarks/batch_predict.py --rounds {args.rounds} --images "
        f"{args.images} --batch-size {args.batch_size}`  ",
        f"Machine: {host}; nothing else running but the benchmark (the 1-minute load before "
        "each run, in the JSON, is its own previous runs winding down).  ",
        f"Model: resnext50_32x4d, random weights, 224x224, fp32, onnxruntime CPU; {args.images} "
        "JPEG photographs (crops of scikit-learn's two colour photos, 160-420 px), decoded, "
        "resized and cropped as `predict` does. Medians over rounds; ratios are medians of "
        "per-round ratios to plain `predict` in the same round.",
        "",
        "| mode | images/s end to end | x predict | images/s steady | x predict (steady) |",
        "|---|---:|---:|---:|---:|",
    ]
    for mode, s in summary.items():
        lines.append(
            f"| {mode} | {s['images_per_s']:.2f} | {s['vs_predict']:.2f} | "
            f"{s['steady_images_per_s']:.2f} | {s['steady_vs_predict']:.2f} |"
        )
    one, two = (summary.get(f"ray cluster, head + {n} worker node{'s' * (n > 1)}") for n in (1, 2))
    if one and two:
        lines += [
            "",
            "A second worker node (a second actor of 1 thread): "
            f"{two['steady_images_per_s'] / one['steady_images_per_s']:.2f}x the steady "
            "images/s of one.",
        ]
    lines += [
        "",
        "End to end includes starting Ray (or the cluster's nodes joining) and the actors "
        "loading the model; steady is the first result to the last. The cluster's nodes are "
        "processes on this machine's 2 cores, each worker node declaring 1 CPU (one actor of 1 "
        "thread), the head 1 CPU for decoding: two worker nodes can use both cores, and more "
        "nodes would add no compute here.",
        "",
    ]
    return "\n".join(lines)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export", type=Path, help="an existing export to classify with")
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--work", type=Path, default=Path("/tmp/resnext-deploy-batch-bench"))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    os.environ["RAY_ADDRESS"] = ""  # a local Ray, never one found in the environment
    runs = measure(args)
    summary = summarize(runs)
    host = f"{cpu_name()}, {os.cpu_count()} cores, no GPU"
    args.out.mkdir(parents=True, exist_ok=True)
    data = {
        "command": " ".join(sys.argv),
        "machine": host,
        "summary": summary,
        "runs": [asdict(r) | {"images_per_s": r.images_per_s} for r in runs],
    }
    (args.out / "batch-predict.json").write_text(json.dumps(data, indent=2) + "\n")
    (args.out / "batch-predict.md").write_text(markdown(args, summary, host))
    print(markdown(args, summary, host))


if __name__ == "__main__":
    main()
