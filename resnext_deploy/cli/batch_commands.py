"""``predict --ray``: the options of a Ray Data run, one library call, its rendering."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from resnext_deploy.cli.app import OutputFormat, emit_json, err, out
from resnext_deploy.errors import ConfigError
from resnext_deploy.recommendation import Engine
from resnext_deploy.runtime.providers import Provider


@dataclass(frozen=True)
class RayOptions:
    """``predict``'s options that only ``--ray`` takes (None: not given)."""

    out_dir: Path | None = None
    address: str | None = None
    actors: int | None = None
    threads: int | None = None
    cpus_per_actor: float | None = None
    gpus_per_actor: float | None = None
    column: str | None = None
    shard_size: int | None = None

    def given(self) -> list[str]:
        return [
            "--" + name.replace("_", "-").replace("out-dir", "out")
            for name, value in vars(self).items()
            if value is not None
        ]


def predict_with_ray(
    model: Path,
    sources: list[Path],
    options: RayOptions,
    *,
    top_k: int,
    batch_size: int,
    provider: Provider,
    engine: Engine,
    fmt: OutputFormat,
) -> None:
    from resnext_deploy.batch.config import DEFAULT_SHARD_SIZE, BatchConfig
    from resnext_deploy.batch.run import predict_on_ray
    from resnext_deploy.render import batch_progress, print_batch_summary

    if options.out_dir is None:
        raise ConfigError("--ray writes its results into a folder: give --out")
    if len(sources) != 1:
        raise ConfigError(
            f"--ray takes one source (a folder tree or a listing), got {len(sources)}"
        )
    config = BatchConfig(
        model=model,
        source=sources[0],
        out_dir=options.out_dir,
        column=options.column or "path",
        provider=provider,
        engine=engine,
        top_k=top_k,
        batch_size=batch_size,
        actors=options.actors or 1,
        threads=options.threads,
        cpus_per_actor=1.0 if options.cpus_per_actor is None else options.cpus_per_actor,
        gpus_per_actor=1.0 if options.gpus_per_actor is None else options.gpus_per_actor,
        address=options.address or os.environ.get("RAY_ADDRESS") or None,
        shard_size=options.shard_size or DEFAULT_SHARD_SIZE,
    )
    with batch_progress(err) as progress:
        summary = predict_on_ray(config, progress)
    if fmt is OutputFormat.JSON:
        emit_json(summary.to_dict())
    else:
        print_batch_summary(out, summary)


def refuse_without_ray(options: RayOptions) -> None:
    given = options.given()
    if given:
        raise ConfigError(f"{', '.join(given)} only work with --ray")
