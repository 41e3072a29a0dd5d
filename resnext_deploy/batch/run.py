"""The Ray Data pipeline of ``predict --ray``: inputs -> decode (tasks) -> inference (an actor
pool of onnxruntime sessions) -> the ledger's atomic shard files, on a local Ray or a cluster."""

from __future__ import annotations

import hashlib
import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from resnext_deploy import interrupts
from resnext_deploy.batch.config import BatchConfig
from resnext_deploy.batch.ledger import BatchSummary, Ledger, RunIdentity
from resnext_deploy.batch.source import Source, read_source
from resnext_deploy.batch.stages import Inference, decode_batch
from resnext_deploy.errors import ArtifactError, BatchError, ConfigError
from resnext_deploy.predict import Classifier
from resnext_deploy.preprocess import MAX_RESIZED_PIXELS
from resnext_deploy.raylocal import LocalProcesses, ray_cause, signals_deferred, start_ray
from resnext_deploy.runtime.providers import Provider, SessionConfig
from resnext_deploy.spec import ModelSpec


@dataclass(frozen=True)
class BatchPlan:
    """A run about to start: its inputs, its model (checked) and what is left to do."""

    source: Source
    model: bytes
    spec: ModelSpec
    takes_images: bool
    ledger: Ledger


# The largest image a task decodes: predict's bound on the resized image (RGB, float32 once
# normalised); most are far smaller.
MAX_DECODED_BYTES = MAX_RESIZED_PIXELS * 3 * 4
Progress = Callable[[int, int], None]  # (rows done in this run, rows this run must do)


def plan_batch(config: BatchConfig) -> BatchPlan:
    """Read the inputs, check the model (manifest hashes, embedded spec; onnxruntime opens it
    on the CPU) and open the output folder, before Ray starts. Raises :class:`DataError`,
    :class:`ArtifactError` or :class:`ConfigError`."""
    source = read_source(config.source, config.column)
    checking = _session(config, check=True)
    with Classifier(config.model, checking, engine=config.engine) as classifier:
        path = classifier.path
        spec, takes_images = classifier.spec, classifier.takes_images
    assert path is not None
    model = path.read_bytes()
    digest = hashlib.sha256(model).hexdigest()
    entry = classifier.artifact.manifest.files.get(path.name) if classifier.artifact else None
    if entry is not None and entry.sha256 != digest:
        raise ArtifactError(f"{path} changed while it was being checked; run again")
    identity = RunIdentity(
        model_sha256=digest,
        source_sha256=source.sha256,
        inputs=len(source.paths),
        top_k=config.top_k,
        shard_size=config.shard_size,
        model=str(config.model),
        source=str(config.source),
    )
    ledger = Ledger.open(config.out_dir, identity)
    return BatchPlan(source, model, spec, takes_images, ledger)


def predict_on_ray(config: BatchConfig, on_progress: Progress) -> BatchSummary:
    """``predict --ray``: :func:`plan_batch` (every check before Ray starts), then
    :func:`run_batch`. Raises :class:`ConfigError` when Ray Data is not installed."""
    missing = [m for m in ("ray.data", "pyarrow", "pandas") if not _installed(m)]
    if missing:
        raise ConfigError(
            f"predict --ray needs Ray Data ({', '.join(missing)} not installed): "
            "pip install 'resnext-deploy[batch]'"
        )
    return run_batch(config, plan_batch(config), on_progress)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def run_batch(config: BatchConfig, plan: BatchPlan, on_progress: Progress) -> BatchSummary:
    """Classify what ``plan`` has left to do on Ray Data and return the finished run's summary.
    A signal stops it as :class:`Interrupted` with every finished shard kept (run again to
    resume). Raises :class:`BatchError` when Ray fails the run."""
    todo = plan.ledger.todo()
    if todo:
        import ray
        import ray.data

        ours = LocalProcesses() if config.address is None else None
        try:
            with signals_deferred(ray):
                start_ray(ray, config.address, BatchError)
            resources = ray.cluster_resources()
            _check_resources(resources, config)
            plan.ledger.start()
            _stream(ray, config, plan, todo, _initial_actors(resources, config), on_progress)
        finally:
            try:
                ray.shutdown()
            finally:
                if ours is not None:
                    ours.end_leftovers()
    return plan.ledger.finish()


def _check_resources(resources: dict[str, float], config: BatchConfig) -> None:
    """Refuse a run that could never start: an actor that fits on no cluster there is, or
    that leaves no CPU to decode with (Ray Data would wait for the resources forever)."""
    cpus, gpus = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
    if config.cpus_per_actor + 1 > cpus:
        raise ConfigError(
            f"an inference actor takes {config.cpus_per_actor:g} CPU(s) and decoding needs 1, "
            f"but the Ray cluster has {cpus:g}: lower --cpus-per-actor"
        )
    if config.actor_gpus > gpus:
        raise ConfigError(
            f"an inference actor takes {config.actor_gpus:g} GPU(s) but the Ray cluster has "
            f"{gpus:g}: lower --gpus-per-actor, or run where Ray sees a GPU"
        )


def _initial_actors(resources: dict[str, float], config: BatchConfig) -> int:
    """As many actors as ``--actors`` asks and the cluster's CPUs hold beside one decode task
    (a pool that took every CPU at once would leave none to decode with, and wait forever)."""
    fit = int((resources.get("CPU", 0.0) - 1) // config.cpus_per_actor)
    if config.actor_gpus:
        fit = min(fit, int(resources.get("GPU", 0.0) // config.actor_gpus))
    return max(1, min(config.actors, fit))


def _stream(
    ray: Any,
    config: BatchConfig,
    plan: BatchPlan,
    todo: list[int],
    actors: int,
    on_progress: Progress,
) -> None:
    """Run the pipeline over the inputs ``todo``, every result row into the ledger."""
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the command draws its own
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # failures raise; no chatter
    dataset = _pipeline(ray, config, plan, todo, actors)
    done = 0
    on_progress(0, len(todo))
    try:
        for table in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
            done += plan.ledger.add(table)
            on_progress(done, len(todo))
    except ray.data.exceptions.ExecutionTimeoutError:
        raise BatchError(
            f"Ray Data made no progress for {context.execution_no_progress_timeout_s:g} s: the "
            "cluster may lack the CPUs for the actors and the decode tasks at once (finished "
            "shards are kept; run the same command again to resume)"
        ) from None
    except ray.exceptions.RayError as exc:
        interrupts.raise_if_interrupted()
        raise BatchError(
            f"Ray Data failed the run: {ray_cause(exc)} (finished shards are kept; "
            "run the same command again to resume)"
        ) from None


def _pipeline(ray: Any, config: BatchConfig, plan: BatchPlan, todo: list[int], actors: int) -> Any:
    """The inputs ``todo`` -> decode tasks -> the pool of ``actors`` (up to ``--actors``)."""
    paths = plan.source.paths
    items = [{"index": i, "path": paths[i]} for i in todo]
    blocks = max(1, min(len(items) // config.batch_size, 1000))
    dataset = ray.data.from_items(items, override_num_blocks=blocks)
    dataset = dataset.map_batches(
        decode_batch,
        fn_kwargs={"spec": plan.spec, "takes_images": plan.takes_images},
        batch_size=config.batch_size,
        batch_format="numpy",
        num_cpus=1,
        # What a task holds: the batch it makes, and the images it decodes one at a time. A
        # stage asking for resources unlike the actors' is not fused into them, so images
        # decode in tasks, in parallel with inference.
        memory=_decode_memory(config, plan),
    )
    return dataset.map_batches(
        _RayInference,
        fn_constructor_kwargs={
            # Nested, so the actor's arguments stay small and inline: Ray keeps the model
            # alive for restarts and each actor fetches it from the object store once.
            "model": (ray.put(plan.model),),
            "spec": plan.spec,
            "session": _session(config),
            "engine": config.engine,
            "top_k": config.top_k,
            "model_sha256": plan.ledger.identity.model_sha256,
        },
        batch_size=config.batch_size,
        batch_format="numpy",
        # Starts with the actors that fit beside decoding, grows to --actors if the cluster
        # grows, and may shrink to one when a node is lost for good.
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=config.actors, initial_size=actors),
        num_cpus=config.cpus_per_actor,
        num_gpus=config.actor_gpus,
    )


def _decode_memory(config: BatchConfig, plan: BatchPlan) -> int:
    side = plan.spec.input_size
    batch = config.batch_size * side * side * 3 * (1 if plan.takes_images else 4)
    return 2 * batch + MAX_DECODED_BYTES


def _session(config: BatchConfig, check: bool = False) -> SessionConfig:
    """The actors' session; with ``check``, the driver's (on the CPU: it opens the model only
    to check it, on the engine the actors will use, before Ray starts)."""
    if check:
        return SessionConfig(intra_op_threads=1)
    threads = config.session_threads if config.provider is Provider.CPU else None
    return SessionConfig(provider=config.provider, intra_op_threads=threads)


class _RayInference(Inference):
    """:class:`Inference` whose model arrives through Ray's object store (sent once)."""

    def __init__(self, model: tuple[Any], **kwargs: Any) -> None:
        import ray

        super().__init__(ray.get(model[0]), **kwargs)
