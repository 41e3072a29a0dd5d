"""Load test of `resnext-deploy serve` against in-process onnxruntime, side by side in one run.

For each round: in-process onnxruntime throughput at batch 1, 8 and the server's max batch
(the same session settings the replicas use), then the server with dynamic batching on and
with it off, each driven at concurrency 1, 2, 4, 8, 16, 32 and 64 by closed-loop asyncio
clients using tritonclient's HTTP client (binary tensors, as Triton clients send them). Every
request is one 224x224 image. Rounds interleave the three, and the report gives medians over rounds.

Usage (about 35 minutes for 3 rounds on 2 cores):

    python benchmarks/serve_load.py --rounds 3 --out benchmarks/results

Without --export it builds a resnext50_32x4d with random weights (speed does not depend on
them) and exports it with `resnext-deploy export` under --work.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from random_export import ensure_random_export

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "resnext_deploy"]
METRIC = "ray_resnext_deploy_batch_images"  # histogram: its _count is exact, its _sum is not
IMAGES = "ray_resnext_deploy_images_total"  # counter: images run, exact


@dataclass
class LoadResult:
    mode: str  # "batching" or "no-batching"
    concurrency: int
    sent: int = 0
    ok: int = 0
    errors: int = 0
    window_s: float = 0.0
    completed_in_window: int = 0
    images_per_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    mean_batch_images: float | None = None  # images per onnxruntime call in the window
    # In-process onnxruntime at batch min(concurrency, max batch), measured just before this
    # level (the server idle), so that both see the same background load.
    in_process_batch: int = 0
    in_process_images_per_s: float = 0.0
    load_average: tuple[float, float] = (0.0, 0.0)  # 1-minute load before and after the level
    batch_histogram: dict[str, float] = field(default_factory=dict)


@dataclass
class InProcessResult:
    batch_size: int
    images_per_s: float
    p50_ms: float
    p99_ms: float
    n: int


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ensure_export(args: argparse.Namespace) -> Path:
    return ensure_random_export(args.work, "rx50-serve", args.export)


def in_process(export: Path, batch_sizes: list[int], seconds: float) -> list[InProcessResult]:
    """onnxruntime in this process, with the session settings a replica uses."""
    from resnext_deploy.runtime.ort import OrtRunner
    from resnext_deploy.serve.config import ServeConfig
    from resnext_deploy.serve.model import session_config
    from resnext_deploy.timing import Timing, measure

    config = ServeConfig(export_dir=export)
    results = []
    with OrtRunner(export / "model.onnx", session_config(config)) as runner:
        dims = runner.session.get_inputs()[0].shape[1:]
        for b in batch_sizes:
            x = np.random.default_rng(b).standard_normal((b, *dims)).astype(np.float32)
            bound = runner.bind(x)
            timing = Timing(warmup=1, min_iters=3, min_time_s=seconds, max_time_s=4 * seconds)
            _, stats = measure(bound.run, runner.sync, timing, b)
            results.append(
                InProcessResult(b, stats.images_per_s, stats.p50_ms, stats.p99_ms, stats.n)
            )
            print(f"  in-process batch {b}: {stats.images_per_s:.2f} img/s", flush=True)
    return results


class Server:
    """`resnext-deploy serve` in a subprocess (its own local Ray), stopped with SIGTERM."""

    def __init__(self, export: Path, args: argparse.Namespace, batching: bool) -> None:
        self.port, self.metrics_port = free_port(), free_port()
        self.log = args.work / f"serve-{'on' if batching else 'off'}.log"
        self.command = [
            *CLI, "serve", str(export), "--host", "127.0.0.1", "--port", str(self.port),
            "--metrics-port", str(self.metrics_port), "--max-batch-size",
            str(args.max_batch_size), "--batch-wait-ms", str(args.batch_wait_ms),
            "--batching" if batching else "--no-batching",
            "--access-log" if args.access_log else "--no-access-log",
        ]  # fmt: skip
        env = os.environ | {
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_metrics_report_interval_ms": "1000",
        }
        with self.log.open("wb") as sink:
            self.proc = subprocess.Popen(
                self.command, stdout=sink, stderr=subprocess.STDOUT, env=env
            )
        deadline = time.monotonic() + 300
        while b"serving" not in self.log.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"serve did not start:\n{self.log.read_text()[-2000:]}")
            time.sleep(0.5)

    @property
    def metadata(self) -> dict[str, Any]:
        text = self.log.read_text()
        model = text.split("/v2/models/", 1)[1].split()[0]
        url = f"http://127.0.0.1:{self.port}/v2/models/{model}"
        with urllib.request.urlopen(url, timeout=30) as response:
            return dict(json.loads(response.read()))

    @property
    def model(self) -> str:
        return str(self.metadata["name"])

    @property
    def shape(self) -> list[int]:
        return list(self.metadata["inputs"][0]["shape"])

    def histogram(self) -> dict[str, float]:
        """The batch-size histogram (cumulative ``le=`` counts, ``count``) and ``images``."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=30) as response:
            text = response.read().decode()
        found: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith(IMAGES + "{"):
                found["images"] = found.get("images", 0.0) + float(line.rsplit(" ", 1)[1])
            if not line.startswith(METRIC):
                continue
            value = float(line.rsplit(" ", 1)[1])
            if line.startswith(METRIC + "_bucket{"):
                key = "le=" + line.split('le="', 1)[1].split('"', 1)[0]
            elif line.startswith(METRIC + "_sum"):
                key = "sum"
            elif line.startswith(METRIC + "_count"):
                key = "count"
            else:
                continue
            found[key] = found.get(key, 0.0) + value
        return found

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=120)


async def drive(
    url: str, model: str, shape: list[int], concurrency: int, warmup_s: float, window_s: float
) -> tuple[int, int, int, list[tuple[float, float]]]:
    """Closed loop: ``concurrency`` workers, each sending the next request when its answer
    arrives. Returns (sent, ok, errors, [(finish time, latency s)])."""
    import tritonclient.http.aio as triton

    x = np.random.default_rng(0).standard_normal([1, *shape[1:]]).astype(np.float32)
    tensor = triton.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    client = triton.InferenceServerClient(url, conn_limit=max(concurrency, 1), conn_timeout=300)
    stop_at = time.perf_counter() + warmup_s + window_s
    counts = {"sent": 0, "ok": 0, "errors": 0}
    done: list[tuple[float, float]] = []

    async def worker() -> None:
        while time.perf_counter() < stop_at:
            counts["sent"] += 1
            start = time.perf_counter()
            try:
                result = await client.infer(model, [tensor])
                if result.as_numpy("logits").shape[0] != 1:
                    raise ValueError("wrong output shape")
            except Exception as exc:  # noqa: BLE001 - counted and reported, not raised
                counts["errors"] += 1
                print(f"    error: {type(exc).__name__}: {exc}", flush=True)
                continue
            end = time.perf_counter()
            counts["ok"] += 1
            done.append((end, end - start))

    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        await client.close()
    return counts["sent"], counts["ok"], counts["errors"], [(t - stop_at, lat) for t, lat in done]


def load(server: Server, mode: str, concurrency: int, args: argparse.Namespace) -> LoadResult:
    before: dict[str, float] = {}
    model, shape = server.model, server.shape

    async def run() -> tuple[int, int, int, list[tuple[float, float]]]:
        task = asyncio.create_task(
            drive(f"127.0.0.1:{server.port}", model, shape, concurrency, args.warmup, args.duration)
        )
        await asyncio.sleep(args.warmup)
        before.update(await asyncio.to_thread(server.histogram))
        return await task

    sent, ok, errors, done = asyncio.run(run())
    after = server.histogram()
    # Completions inside the measured window: the last `duration` seconds before the stop time.
    window = [lat for t, lat in done if -args.duration <= t <= 0]
    result = LoadResult(mode, concurrency, sent, ok, errors, args.duration, len(window))
    if window:
        result.images_per_s = len(window) / args.duration
        result.p50_ms = float(np.percentile(window, 50) * 1e3)
        result.p99_ms = float(np.percentile(window, 99) * 1e3)
    calls = after.get("count", 0) - before.get("count", 0)
    if calls > 0:
        result.mean_batch_images = (after.get("images", 0) - before.get("images", 0)) / calls
        result.batch_histogram = {
            k: after[k] - before.get(k, 0.0) for k in after if k.startswith("le=")
        }
    print(
        f"  {mode} c={concurrency}: {result.images_per_s:.2f} img/s, p50 {result.p50_ms:.0f} ms, "
        f"p99 {result.p99_ms:.0f} ms, sent {sent} ok {ok} errors {errors}, "
        f"mean batch {result.mean_batch_images}",
        flush=True,
    )
    return result


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def summarize(rounds: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    served: dict[str, dict[str, float | None]] = {}
    for mode in ("batching", "no-batching"):
        for c in args.concurrency:
            rows = [
                r
                for rnd in rounds
                for r in rnd["served"]
                if r["mode"] == mode and r["concurrency"] == c
            ]
            batches = [r["mean_batch_images"] for r in rows if r["mean_batch_images"] is not None]
            served[f"{mode} c={c}"] = {
                "images_per_s": median([r["images_per_s"] for r in rows]),
                "p50_ms": median([r["p50_ms"] for r in rows]),
                "p99_ms": median([r["p99_ms"] for r in rows]),
                "mean_batch_images": median(batches) if batches else None,
            }
    inproc = {
        b: median(
            [r["images_per_s"] for rnd in rounds for r in rnd["in_process"] if r["batch_size"] == b]
        )
        for b in args.in_process_batches
    }
    top = max(args.concurrency)
    for name, row in served.items():
        mode, c = name.split(" c=")
        rows = [
            r
            for rnd in rounds
            for r in rnd["served"]
            if r["mode"] == mode and r["concurrency"] == int(c)
        ]
        row["ratio_to_in_process"] = median(
            [r["images_per_s"] / r["in_process_images_per_s"] for r in rows]
        )
        row["in_process_batch"] = rows[0]["in_process_batch"]
        row["in_process_images_per_s"] = median([r["in_process_images_per_s"] for r in rows])
    ratios, strict = [], []
    for rnd in rounds:
        (level,) = [r for r in rnd["served"] if r["mode"] == "batching" and r["concurrency"] == top]
        best = max(
            [r["images_per_s"] for r in rnd["in_process"]]
            + [r["in_process_images_per_s"] for r in rnd["served"]]
        )
        ratios.append(level["images_per_s"] / level["in_process_images_per_s"])
        strict.append(level["images_per_s"] / best)
    return {
        "served": served,
        "in_process_images_per_s": inproc,
        "ratio_per_round": ratios,
        "ratio_median": median(ratios),
        "ratio_to_best_batch_per_round": strict,
        "ratio_to_best_batch_median": median(strict),
        "target": 0.70,
        "target_met": median(ratios) >= 0.70,
        "all_requests_ok": all(
            r["sent"] == r["ok"] and r["errors"] == 0 for rnd in rounds for r in rnd["served"]
        ),
    }


def markdown(report: dict[str, Any]) -> str:
    env, cfg, s = report["environment"], report["config"], report["summary"]
    top, maxb = max(cfg["concurrency"]), cfg["max_batch_size"]
    loads = [x for rnd in report["rounds"] for r in rnd["served"] for x in r["load_average"]]
    low, high = min(loads), max(loads)
    lines = [
        f"# Serving {cfg['arch']} on Ray Serve vs in-process onnxruntime (CPU)",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Machine: {env['cpu']}, {env['cpu_count']} cores, no GPU; {env['date']}; 1-minute load "
        f"average {low:.1f} to {high:.1f} across the levels (the cores are shared with other "
        "work: compare within this run, level by level). Versions: "
        + ", ".join(f"{k} {v}" for k, v in env["versions"].items())
        + ".",
        "",
        f"Model: {cfg['arch']}, random weights, {cfg['input_size']}x{cfg['input_size']}, fp32, "
        "onnxruntime CPU provider, "
        f"{cfg['threads']} intra-op threads in the replica and in-process. Server: 1 replica, "
        f"max batch {maxb}, batch wait {cfg['batch_wait_ms']} ms. Each request carries one image "
        "(binary tensor, tritonclient's HTTP client, asyncio closed loop on the same machine). "
        f"{cfg['rounds']} rounds of {cfg['warmup']} s warm-up + {cfg['duration']} s measured per "
        "level; medians over rounds.",
        "",
        "Each served level is paired with in-process onnxruntime at batch min(concurrency, max "
        "batch) measured just before it, with the server idle; the last column is the median over "
        "rounds of served / in-process within each pair.",
        "",
        "| served | images/s | p50 ms | p99 ms | images per onnxruntime call | in-process "
        "images/s (batch) just before | served / in-process |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, row in s["served"].items():
        batch = f"{row['mean_batch_images']:.1f}" if row["mean_batch_images"] else "-"
        lines.append(
            f"| {name} | {row['images_per_s']:.2f} | {row['p50_ms']:.0f} | "
            f"{row['p99_ms']:.0f} | {batch} | {row['in_process_images_per_s']:.2f} "
            f"({row['in_process_batch']}) | {row['ratio_to_in_process']:.2f} |"
        )
    lines += [
        "",
        "In-process onnxruntime alone at the start of each round (no server running), images/s: "
        + ", ".join(f"batch {b}: {ips:.2f}" for b, ips in s["in_process_images_per_s"].items())
        + ".",
    ]
    ratios = ", ".join(f"{r:.2f}" for r in s["ratio_per_round"])
    verdict = "met" if s["target_met"] else "NOT met"
    lines += [
        "",
        f"**Served throughput at concurrency {top} with batching, as a share of in-process "
        f"onnxruntime at batch {maxb} measured just before it: {s['ratio_median']:.2f} "
        f"(median; per round: {ratios}). "
        f"Target >= {s['target']:.2f}: {verdict}.**",
        "",
        "Against the fastest in-process figure of each round (any batch size, any moment of "
        f"the round): {s['ratio_to_best_batch_median']:.2f} (median; per round: "
        + ", ".join(f"{r:.2f}" for r in s["ratio_to_best_batch_per_round"])
        + ").",
        "",
        "Requests sent = 200 responses, no errors: "
        + ("yes, in every level of every round." if s["all_requests_ok"] else "NO (see the JSON)."),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--export", type=Path, help="an existing resnext50_32x4d export")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds per level")
    parser.add_argument("--warmup", type=float, default=6.0, help="unmeasured seconds per level")
    parser.add_argument(
        "--concurrency",
        type=lambda t: [int(v) for v in t.split(",")],
        default=[1, 2, 4, 8, 16, 32, 64],
    )
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--batch-wait-ms", type=float, default=5.0)
    parser.add_argument("--access-log", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--name", default="serve-resnext50_32x4d")
    args = parser.parse_args()
    args.work = args.work.resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    args.in_process_batches = sorted({1, 8, args.max_batch_size})
    from resnext_deploy.artifact import Manifest
    from resnext_deploy.environment import environment, package_versions
    from resnext_deploy.runtime.providers import available_cores

    export = ensure_export(args).resolve()
    load_start = os.getloadavg()[0]
    rounds = []
    for r in range(args.rounds):
        print(f"round {r + 1}/{args.rounds}", flush=True)
        record: dict[str, Any] = {"in_process": [], "served": []}
        record["in_process"] = [
            asdict(x) for x in in_process(export, args.in_process_batches, args.duration / 2)
        ]
        for batching in (True, False):
            server = Server(export, args, batching)
            try:
                for c in args.concurrency:
                    mode = "batching" if batching else "no-batching"
                    b = min(c, args.max_batch_size)
                    before = os.getloadavg()[0]
                    (reference,) = in_process(export, [b], args.duration / 2)
                    result = load(server, mode, c, args)
                    result.load_average = (before, os.getloadavg()[0])
                    result.in_process_batch = b
                    result.in_process_images_per_s = reference.images_per_s
                    record["served"].append(asdict(result))
            finally:
                code = server.stop()
            if code != 0:
                raise RuntimeError(f"serve exited with {code}; see {server.log}")
        rounds.append(record)
    report = {
        "command": "python benchmarks/serve_load.py " + shlex.join(sys.argv[1:]),
        "environment": environment(
            {"versions": package_versions() | package_versions(("ray", "tritonclient"))}
        ),
        "load_average": [load_start, os.getloadavg()[0]],
        "config": {
            "rounds": args.rounds,
            "duration": args.duration,
            "warmup": args.warmup,
            "concurrency": args.concurrency,
            "max_batch_size": args.max_batch_size,
            "batch_wait_ms": args.batch_wait_ms,
            "threads": available_cores(),
            "export": str(export),
            "arch": Manifest.read(export).spec.arch,
            "input_size": Manifest.read(export).spec.input_size,
        },
        "rounds": rounds,
    }
    report["summary"] = summarize(rounds, args)
    args.out.mkdir(parents=True, exist_ok=True)
    from resnext_deploy.fileio import atomic_write_text

    atomic_write_text(args.out / f"{args.name}.json", json.dumps(report, indent=2) + "\n")
    atomic_write_text(args.out / f"{args.name}.md", markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
