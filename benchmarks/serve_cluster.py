"""`resnext-deploy serve --address` on a multi-node Ray cluster made on this machine, through the
loss of a worker node: what a client sees, second by second.

The cluster is Ray's own ``ray.cluster_utils.Cluster``: a head with no CPUs and worker nodes of
one CPU each (processes on this machine's cores), started with the proxy callback in their
environment as docs/serving.md tells operators, and the worker nodes' proxies on a port of
their own (Ray's per-node port: on one machine they would otherwise share the head's port, and
the kernel would choose which proxy a client reaches). `serve` deploys two 1-CPU replicas,
which can only land on two different worker nodes (checked from the process table: each
replica's ancestor raylet). Closed-loop asyncio clients (tritonclient's HTTP client, binary
tensors, one 224x224 colour photo per request, checked against in-process onnxruntime), half
through the head's proxy and half through the worker nodes', load it; after --before seconds
one worker node holding a replica is removed (``cluster.remove_node``), and the load goes on
for --after seconds. Reported: answered / failed / lost-connection / wrong counts per second,
totals, time to recover, and throughput before and after.

Usage (about 2 minutes on 2 cores; run it on an otherwise idle machine):

    python benchmarks/serve_cluster.py --out benchmarks/results

Without --export it builds a resnext50_32x4d with random weights (speed does not depend on
them) and exports it with `resnext-deploy export` under --work. Without --out it only prints.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from random_export import ensure_random_export

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "resnext_deploy"]


@dataclass(frozen=True)
class Answer:
    proxy: str  # "head" or "worker": the proxy's port the request went to
    sent: float  # seconds from the removal's start (negative: before it)
    done: float
    outcome: str  # "ok", "wrong" (a 200 with other logits), "failed" (HTTP error), "lost"
    status: int | None = None
    body_json: bool | None = None  # a failed answer's body is {"error": "..."}
    detail: str = ""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def photos(export: Path) -> tuple[list[np.ndarray], np.ndarray]:
    """Crops of scikit-learn's two colour photos as one-image inputs, and onnxruntime's logits."""
    import onnxruntime as ort
    from sklearn.datasets import load_sample_images

    from resnext_deploy.artifact import Manifest
    from resnext_deploy.preprocess import preprocess

    spec = Manifest.read(export).spec
    images = load_sample_images().images
    corners = ((0, 0), (120, 230))
    crops = [im[top : top + 300, left : left + 400] for im in images for top, left in corners]
    inputs = [preprocess([c], spec) for c in crops]
    session = ort.InferenceSession(str(export / "model.onnx"), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return inputs, np.concatenate([session.run(["logits"], {name: x})[0] for x in inputs])


def replica_nodes(cluster: Any, model: str) -> dict[int, int]:
    """Each model replica's pid -> the pid of its node's raylet (its ancestor)."""
    import psutil

    raylets = {int(n.all_processes["raylet"][0].process.pid) for n in nodes(cluster)}
    title = f"ray::ServeReplica:{model}:{model}"
    found = {}
    for process in psutil.process_iter(["cmdline"]):
        first = (process.info["cmdline"] or [""])[0]
        if first == title or first.startswith(title + "."):
            owners = [p.pid for p in process.parents() if p.pid in raylets]
            if owners:
                found[process.pid] = owners[0]
    return found


def nodes(cluster: Any) -> list[Any]:
    return [cluster.head_node, *cluster.worker_nodes]


def node_names(cluster: Any) -> dict[int, str]:
    """Raylet pid -> "head", "worker 1", "worker 2", ... in the order the nodes were added."""
    names = ["head", *(f"worker {i}" for i in range(1, len(cluster.worker_nodes) + 1))]
    pids = [int(n.all_processes["raylet"][0].process.pid) for n in nodes(cluster)]
    return dict(zip(pids, names, strict=True))


async def drive(
    ports: dict[str, int], model: str, inputs: list[np.ndarray], expected: np.ndarray,
    args: argparse.Namespace, remove: Any,
) -> tuple[list[Answer], float]:  # fmt: skip
    """Closed loop: ``args.concurrency`` clients, alternately on the head's and the worker
    nodes' proxy port; ``remove()`` (in a thread) after warm-up and ``args.before`` seconds,
    then ``args.after`` more seconds. Times are from the removal's start. Returns the answers
    and how long the removal took."""
    import tritonclient.http.aio as triton
    from tritonclient.utils import InferenceServerException

    clients = {
        proxy: triton.InferenceServerClient(
            f"127.0.0.1:{port}", conn_limit=args.concurrency, conn_timeout=60
        )
        for proxy, port in ports.items()
    }
    clock = {"zero": time.perf_counter() + args.warmup + args.before, "stop": float("inf")}
    answers: list[Answer] = []

    async def one(proxy: str, i: int) -> Answer:
        tensor = triton.InferInput("input", list(inputs[i].shape), "FP32")
        tensor.set_data_from_numpy(inputs[i])
        sent = time.perf_counter() - clock["zero"]
        try:
            logits = (await clients[proxy].infer(model, [tensor])).as_numpy("logits")
        except InferenceServerException as exc:
            done = time.perf_counter() - clock["zero"]
            plain = exc.debug_details() is not None or exc.message().startswith("client received")
            status = int(exc.status()) if exc.status() else None
            return Answer(proxy, sent, done, "failed", status, not plain, str(exc)[:300])
        except Exception as exc:  # noqa: BLE001 - no HTTP answer: counted, not raised
            done = time.perf_counter() - clock["zero"]
            return Answer(proxy, sent, done, "lost", detail=f"{type(exc).__name__}: {exc}"[:300])
        done = time.perf_counter() - clock["zero"]
        right = np.allclose(logits[0], expected[i], rtol=0, atol=1e-5)
        return Answer(proxy, sent, done, "ok" if right else "wrong", 200)

    async def worker(k: int) -> None:
        i, proxy = k, list(clients)[k % len(clients)]
        while time.perf_counter() < clock["stop"]:
            answers.append(await one(proxy, i % len(inputs)))
            i += args.concurrency

    workers = asyncio.gather(*(worker(k) for k in range(args.concurrency)))
    try:
        await asyncio.sleep(max(0.0, clock["zero"] - time.perf_counter()))
        await asyncio.to_thread(remove)
    finally:
        removal_s = time.perf_counter() - clock["zero"]
        clock["stop"] = time.perf_counter() + args.after
        await workers
        for client in clients.values():
            await client.close()
    return answers, removal_s


def per_second(answers: list[Answer], args: argparse.Namespace) -> list[dict[str, int]]:
    """Answers by the second they completed in (second 0 starts with the removal)."""
    counts: dict[int, Counter[str]] = {}
    for a in answers:
        if a.done >= -args.before:
            counts.setdefault(int(np.floor(a.done)), Counter())[a.outcome] += 1
    return [
        {"second": s, **{k: counts.get(s, Counter())[k] for k in ("ok", "failed", "lost", "wrong")}}
        for s in range(-int(args.before), int(np.ceil(max(a.done for a in answers))))
    ]


def summarize(answers: list[Answer], removal_s: float, args: argparse.Namespace) -> dict[str, Any]:
    """Totals; recovery: from the removal's start to the completion of the last request that
    did not get a right 200 (0 when none failed after it started); throughput of right 200s
    per second in the --before window and from recovery to the end."""
    recovered = max((a.done for a in answers if a.outcome != "ok" and a.done >= 0), default=0.0)
    end = max(a.done for a in answers)
    ok = [a.done for a in answers if a.outcome == "ok"]
    after_s = end - max(recovered, removal_s)
    totals = Counter(a.outcome for a in answers)
    return {
        "sent": len(answers),
        "ok": totals["ok"],
        "failed": totals["failed"],
        "lost": totals["lost"],
        "wrong": totals["wrong"],
        "not_ok_before_removal": sum(a.outcome != "ok" and a.done < 0 for a in answers),
        "failed_bodies_json": all(a.body_json for a in answers if a.outcome == "failed"),
        "removal_s": removal_s,
        "recovered_s": recovered,
        "first_ok_after_removal_s": min((t for t in ok if t > 0), default=None),
        "ok_per_s_before": sum(-args.before <= t < 0 for t in ok) / args.before,
        "ok_per_s_after": sum(t > max(recovered, removal_s) for t in ok) / after_s,
        "after_window_s": after_s,
    }


def rate_back(rows: list[dict[str, int]], before_per_s: float) -> int | None:
    """The first second after the removal from which every whole second answered at least 90%
    of the rate before it (the last, partial second left out); None when it never did."""
    whole = [r for r in rows if r["second"] >= 0][:-1]
    for k, row in enumerate(whole):
        if all(r["ok"] >= 0.9 * before_per_s for r in whole[k:]):
            return row["second"]
    return None


def run_scenario(export: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Cluster up, `serve` deployed, load through the removal, everything stopped."""
    from ray.cluster_utils import Cluster

    from resnext_deploy.artifact import Manifest
    from resnext_deploy.serve.run import PROXY_CALLBACK, PROXY_CALLBACK_ENV

    model = Manifest.read(export).spec.arch
    inputs, expected = photos(export)
    ports = {"head": free_port(), "worker": free_port()}
    os.environ |= {
        PROXY_CALLBACK_ENV: PROXY_CALLBACK,
        "RAY_SERVE_WORKER_PROXY_HTTP_PORT": str(ports["worker"]),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    try:
        for _ in range(2 + args.spare_nodes):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        command = [
            *CLI, "serve", str(export), "--address", cluster.address, "--replicas", "2",
            "--cpus-per-replica", "1", "--threads", "1", "--host", "127.0.0.1",
            "--port", str(ports["head"]), "--max-batch-size", str(args.max_batch_size),
            "--no-access-log",
        ]  # fmt: skip
        log = args.work / "serve-cluster.log"
        with log.open("wb") as sink:
            proc = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
        try:
            ready_s = wait_serving(proc, log)
            placed = wait_placed(cluster, model)
            names = node_names(cluster)
            raylets = {int(n.all_processes["raylet"][0].process.pid): n for n in nodes(cluster)}
            lost_raylet = next(iter(placed.values()))
            lost = raylets[lost_raylet]
            answers, removal_s = asyncio.run(
                drive(
                    ports, model, inputs, expected, args,
                    lambda: cluster.remove_node(lost, allow_graceful=args.graceful),
                )
            )  # fmt: skip
            after = replica_nodes(cluster, model)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=120)
    finally:
        cluster.shutdown()
    summary, rows = summarize(answers, removal_s, args), per_second(answers, args)
    summary["rate_back_s"] = rate_back(rows, summary["ok_per_s_before"])
    return {
        "model": model,
        "serve_ready_s": ready_s,
        "serve_exit_code": code,
        "replica_nodes_before": sorted(names[pid] for pid in placed.values()),
        "replica_nodes_after": sorted(names.get(pid, str(pid)) for pid in after.values()),
        "removed_node": names[lost_raylet],
        "summary": summary,
        "per_second": rows,
        "failures": [asdict(a) for a in answers if a.outcome != "ok"],
    }


def wait_serving(proc: subprocess.Popen[bytes], log: Path) -> float:
    """Seconds until `serve` printed its ready line (a line that starts with "serving")."""
    start = time.monotonic()
    while not re.search(rb"^serving ", log.read_bytes(), re.MULTILINE):
        if proc.poll() is not None or time.monotonic() - start > 300:
            raise RuntimeError(f"serve did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.5)
    return time.monotonic() - start


def wait_placed(cluster: Any, model: str) -> dict[int, int]:
    deadline = time.monotonic() + 30
    while len(placed := replica_nodes(cluster, model)) != 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    if len(set(placed.values())) != 2:
        raise RuntimeError(f"the two replicas are not on two nodes: {placed}")
    return placed


def markdown(report: dict[str, Any]) -> str:
    env, cfg, s = report["environment"], report["config"], report["summary"]
    lines = [
        f"# `serve --address` on a Ray cluster, through the loss of a worker node "
        f"({report['model']})",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Machine: {env['cpu']}, {env['cpu_count']} cores, no GPU; {env['date']}; 1-minute load "
        f"average {report['load_average'][0]:.2f} at the start, "
        f"{report['load_average'][1]:.2f} at the end. Versions: "
        + ", ".join(f"{k} {v}" for k, v in env["versions"].items())
        + ".",
        "",
        f"Cluster (`ray.cluster_utils.Cluster`, every node a set of processes on this machine): "
        f"a head with 0 CPUs and {2 + cfg['spare_nodes']} worker nodes of 1 CPU each, started "
        "with the proxy callback in their environment. `serve`: 2 replicas of 1 CPU and 1 "
        f"onnxruntime thread, max batch {cfg['max_batch_size']}; they ran on "
        + " and ".join(report["replica_nodes_before"])
        + f" (by their processes' ancestor raylets), and {report['removed_node']} was removed "
        f"(`remove_node`, graceful={cfg['graceful']}); at the end replicas ran on "
        + (" and ".join(report["replica_nodes_after"]) or "no node")
        + f". Load: {cfg['concurrency']} closed-loop clients (tritonclient HTTP, asyncio), half "
        "on the head's proxy, half on the worker nodes' (their own port), one 224x224 "
        f"photo per request; {cfg['warmup']} s warm-up, {cfg['before']} s before the removal, "
        f"{cfg['after']} s after it. `serve` was ready {report['serve_ready_s']:.0f} s after "
        f"its start and exited with {report['serve_exit_code']}.",
        "",
        "| sent | right 200s | failed (HTTP error) | lost (no HTTP answer) | wrong 200s |",
        "| ---: | ---: | ---: | ---: | ---: |",
        f"| {s['sent']} | {s['ok']} | {s['failed']} | {s['lost']} | {s['wrong']} |",
        "",
        f"- The removal took {s['removal_s']:.2f} s (`remove_node` returning).",
        f"- Recovered {s['recovered_s']:.2f} s after the removal started: the last request that "
        "did not get a right 200 completed then; every request after it succeeded.",
        f"- Right answers per second: {s['ok_per_s_before']:.2f} in the {cfg['before']} s before "
        f"the removal, {s['ok_per_s_after']:.2f} in the {s['after_window_s']:.1f} s after "
        "recovery; "
        + (
            f"back to at least 90% of the rate before from second {s['rate_back_s']} on."
            if s["rate_back_s"] is not None
            else "never back to 90% of the rate before (one replica fewer)."
        ),
        '- Every failed answer\'s body was `{"error": ...}`: '
        + ("yes." if s["failed_bodies_json"] else "NO."),
        f"- Requests that did not get a right 200 before the removal: "
        f"{s['not_ok_before_removal']}.",
        "",
    ]
    return "\n".join(lines + _details(report)) + "\n"


def _details(report: dict[str, Any]) -> list[str]:
    """The failed requests one by one, and the per-second table."""
    lines = [
        "Every request that did not get a right 200 (time of its answer, proxy, what came back):",
        "",
        *(
            f"- {f['done']:+.2f} s, {f['proxy']}: {f['outcome']} {f['status'] or ''} "
            f"{f['detail'][:160]!r}"
            for f in report["failures"][:20]
        ),
        "",
        "Per second (second 0 starts with the removal; by completion time):",
        "",
        "| second | right 200s | failed | lost | wrong |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in report["per_second"]:
        lines.append(
            f"| {row['second']} | {row['ok']} | {row['failed']} | {row['lost']} | {row['wrong']} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--export", type=Path, help="an existing resnext50_32x4d export")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--warmup", type=float, default=10.0, help="unmeasured seconds first")
    parser.add_argument("--before", type=float, default=30.0, help="seconds before the removal")
    parser.add_argument("--after", type=float, default=30.0, help="seconds after the removal")
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--spare-nodes", type=int, default=0, help="1-CPU nodes beyond two")
    parser.add_argument("--graceful", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--out", type=Path, help="write <name>.json and <name>.md here")
    parser.add_argument("--name", default="serve-cluster-resnext50_32x4d")
    args = parser.parse_args()
    args.work = args.work.resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    from resnext_deploy.environment import environment, package_versions

    export = ensure_random_export(args.work, "rx50-serve", args.export).resolve()
    os.environ["RAY_ADDRESS"] = ""  # the cluster made here, never one from the environment
    load_start = os.getloadavg()[0]
    report: dict[str, Any] = {
        "command": "python benchmarks/serve_cluster.py " + shlex.join(sys.argv[1:]),
        "environment": environment(
            {"versions": package_versions() | package_versions(("ray", "tritonclient"))}
        ),
        "config": {k: v for k, v in vars(args).items() if k not in ("out", "work", "export")}
        | {"export": str(export)},
    }
    report |= run_scenario(export, args)
    report["load_average"] = [load_start, os.getloadavg()[0]]
    text = markdown(report)
    print(text)
    if args.out is not None:
        from resnext_deploy.fileio import atomic_write_text

        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out / f"{args.name}.json", json.dumps(report, indent=2) + "\n")
        atomic_write_text(args.out / f"{args.name}.md", text)


if __name__ == "__main__":
    main()
