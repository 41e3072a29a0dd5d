"""predict --ray on a four-node Ray cluster made on this machine (Ray's own
``ray.cluster_utils.Cluster``): two inference actors, necessarily on two nodes (one CPU each);
one actor killed, then a worker node holding one removed for good, mid-run; the run still
finishes with every image exactly once and the same answers as a run nothing happened to."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from resnext_deploy.batch.config import BatchConfig
from resnext_deploy.batch.ledger import read_results
from resnext_deploy.batch.run import predict_on_ray

pytest.importorskip("ray.data", reason="predict --ray needs the [batch] extra")

IMAGES = 600
ACTOR = "_RayInference"


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from PIL import Image
    from sklearn.datasets import load_sample_images

    folder = tmp_path_factory.mktemp("cluster") / "photos"
    folder.mkdir()
    colour = load_sample_images().images
    rng = np.random.default_rng(1)
    for i in range(IMAGES):
        h, w = rng.integers(16, 120, 2)
        Image.fromarray(colour[i % 2][:h, :w]).save(folder / f"{i:04d}.jpg")
    return folder


@pytest.fixture
def cluster() -> Iterator[Any]:
    """Four nodes of one CPU each: whichever two hold the actors, a lost one leaves CPUs for
    the restarted actor and a decode task."""
    from ray.cluster_utils import Cluster

    made = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        for _ in range(3):
            made.add_node(num_cpus=1)
        yield made
    finally:
        made.shutdown()


def _actors() -> list[Any]:
    """The inference actors' processes (their parent is their node's raylet)."""
    import psutil

    found = []
    for process in psutil.process_iter(["name", "cmdline"]):
        title = (process.info["name"] or "") + " ".join(process.info["cmdline"] or [])
        if ACTOR in title:
            found.append(process)
    return found


def _raylet(node: Any) -> int:
    return int(node.all_processes["raylet"][0].process.pid)


class Faults:
    """At a quarter of the run, SIGKILL one inference actor; at half, remove the worker node
    that holds the other one, for good (no node replaces it)."""

    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster
        self.done: list[str] = []
        self.nodes_with_actors: set[int] = set()  # their raylets' pids
        self.raylets = {_raylet(n) for n in [cluster.head_node, *cluster.worker_nodes]}

    def __call__(self, done: int, total: int) -> None:
        if not total:
            return
        actors = _actors()
        self.nodes_with_actors |= {a.ppid() for a in actors}
        if done >= total // 4 and "kill" not in self.done and actors:
            actors[0].send_signal(signal.SIGKILL)
            self.done.append("kill")
        elif done >= total // 2 and "remove" not in self.done and "kill" in self.done:
            workers = [
                n for n in self.cluster.worker_nodes if _raylet(n) in {a.ppid() for a in actors}
            ]
            self.cluster.remove_node(workers[0] if workers else self.cluster.list_all_nodes()[-1])
            self.done.append("remove")


def _config(photos: Path, out: Path, cluster: Any) -> BatchConfig:
    return BatchConfig(
        model=photos.parent / "export",
        source=photos,
        out_dir=out,
        shard_size=50,
        batch_size=16,
        actors=2,
        address=cluster.address,
    )


def test_a_killed_actor_and_a_lost_node_lose_and_repeat_no_image(
    tiny_export: Path, photos: Path, cluster: Any, tmp_path: Path
) -> None:
    import shutil

    if not (photos.parent / "export").exists():
        shutil.copytree(tiny_export, photos.parent / "export")
    faults = Faults(cluster)
    summary = predict_on_ray(_config(photos, tmp_path / "faulted", cluster), faults)
    assert faults.done == ["kill", "remove"]
    assert len(faults.nodes_with_actors & faults.raylets) >= 2  # actors ran on two nodes
    assert summary.images == IMAGES and summary.classified == IMAGES
    faulted = read_results(tmp_path / "faulted")
    assert faulted.column("index").to_pylist() == list(range(IMAGES))
    assert len(set(faulted.column("path").to_pylist())) == IMAGES

    calm = predict_on_ray(_config(photos, tmp_path / "calm", cluster), lambda d, t: None)
    assert calm.images == IMAGES
    clean = read_results(tmp_path / "calm")
    assert faulted.column("labels").to_pylist() == clean.column("labels").to_pylist()
    np.testing.assert_allclose(
        np.array(faulted.column("probabilities").to_pylist()),
        np.array(clean.column("probabilities").to_pylist()),
        atol=1e-6,
    )
