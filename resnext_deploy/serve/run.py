"""Start (or join) Ray, deploy the model, serve until SIGINT/SIGTERM, shut down cleanly; and
the Serve config file for ``serve deploy`` / KubeRay."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from resnext_deploy.artifact import open_artifact
from resnext_deploy.errors import ConfigError, ServeError, first_line
from resnext_deploy.fileio import atomic_write_text
from resnext_deploy.runtime.providers import Provider, check_provider
from resnext_deploy.serve.config import IMPORT_PATH, ServeConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ServeInfo:
    """Where a deployed model answers."""

    model: str
    url: str
    cluster: str | None  # the Ray address joined, None for a local Ray
    metrics_url: str | None
    replicas: int
    batching: bool

    @property
    def infer_url(self) -> str:
        return f"{self.url}/v2/models/{self.model}/infer"

    @property
    def classify_url(self) -> str:
        return f"{self.url}/models/{self.model}/classify"


def cluster_address(config: ServeConfig) -> str | None:
    return config.address or os.environ.get("RAY_ADDRESS") or None


def serve_model(config: ServeConfig, on_ready: Callable[[ServeInfo], None]) -> None:
    """Deploy ``config``'s model and block until SIGINT or SIGTERM, then remove it (and stop
    the local Ray this call started). ``on_ready`` is called once the model answers.

    Raises :class:`ArtifactError` for an export that fails its manifest check,
    :class:`ProviderUnavailableError` when the provider cannot start here (local Ray only),
    :class:`ConfigError` for a port in use, :class:`ServeError` when Ray or the deployment
    fails.
    """
    artifact = open_artifact(config.export_dir, check_hashes=config.check_hashes)
    artifact.require(config.variant)
    address = cluster_address(config)
    if address is None:
        # Fail here, in one line, rather than in a replica's traceback.
        if config.provider is Provider.CUDA:
            check_provider(Provider.CUDA)
        _check_port_free(config.host, config.port)
    from resnext_deploy.serve.app import deployment_name

    name = deployment_name(config)
    stop = threading.Event()
    ray = _start_ray(config, address)
    try:
        _trap_signals(stop)
        on_ready(_deploy(config, name, address, ray))
        stop.wait()
    finally:
        _shutdown(ray, name, address)


def _start_ray(config: ServeConfig, address: str | None) -> Any:
    import ray

    try:
        if address is None:
            ray.init(
                # "local": a new Ray even when `ray start` left a cluster on this machine
                # (plain ray.init() would join the one in /tmp/ray/ray_current_cluster).
                address="local",
                include_dashboard=False,
                _metrics_export_port=config.metrics_port,
                logging_level=logging.WARNING,
            )
        else:
            ray.init(address=address, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        if address is None:
            raise ServeError(f"could not start a local Ray: {first_line(exc)}") from None
        raise ServeError(
            f"could not connect to the Ray cluster at {address}: {first_line(exc)} (a cluster "
            "with token authentication also needs RAY_AUTH_MODE=token and its token)"
        ) from None
    return ray


def _deploy(config: ServeConfig, name: str, address: str | None, ray: Any) -> ServeInfo:
    from ray import serve
    from ray.serve.exceptions import RayServeException

    from resnext_deploy.serve.app import build_app

    try:
        serve.start(
            http_options={"host": config.host, "port": config.port},
            logging_config={"enable_access_log": config.access_log},
        )
        serve.run(build_app(config.to_args()), name=name, route_prefix="/")
    except (RayServeException, ray.exceptions.RayError, RuntimeError) as exc:
        raise ServeError(f"deploying {name} failed: {_cause(exc)}") from None
    return ServeInfo(
        model=name,
        url=f"http://{_url_host(config.host)}:{config.port}",
        cluster=address,
        metrics_url=_metrics_url(ray),
        replicas=config.replicas,
        batching=config.batching,
    )


def _shutdown(ray: Any, app: str, address: str | None) -> None:
    from ray import serve

    try:
        if address is not None:
            serve.delete(app)  # leave the cluster's other applications alone
        elif _local_ray_alive():
            serve.shutdown()  # drains in-flight requests, then stops the replicas
    finally:
        ray.shutdown()


def _local_ray_alive() -> bool:
    """False when the local Ray's GCS or raylet already exited: a signal sent to the whole
    process group (``kill -TERM -PGID``) reaches them too, and a graceful Serve shutdown
    would then wait 30 s for a GCS that is gone."""
    import psutil

    alive = set()
    for child in psutil.Process().children():
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                alive.add(child.name())
        except psutil.Error:
            continue
    return {"gcs_server", "raylet"} <= alive


def _trap_signals(stop: threading.Event) -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)


def _check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def _cause(exc: BaseException) -> str:
    """The replica's own error where Ray wraps it (the last ``SomethingError: ...`` line)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    ours = [ln for ln in lines if "Error: " in ln and not ln.startswith("File ")]
    return (ours[-1] if ours else first_line(exc))[:500]


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _metrics_url(ray: Any) -> str | None:
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    port = nodes[0].get("MetricsExportPort") if nodes else None
    host = nodes[0].get("NodeManagerAddress") if nodes else None
    return f"http://{host}:{port}/metrics" if port and host else None


def serve_config_document(config: ServeConfig) -> dict[str, Any]:
    """The ``serve build``-style config: one application whose builder is :func:`build_app`."""
    from resnext_deploy.serve.app import deployment_options

    options = deployment_options(config)
    name = options["name"]
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": config.host, "port": config.port},
        "logging_config": {"enable_access_log": config.access_log},
        "applications": [
            {
                "name": name,
                "route_prefix": "/",
                "import_path": IMPORT_PATH,
                "args": config.to_args(),
                "deployments": [options],
            }
        ],
    }


def write_serve_config(config: ServeConfig, path: Path) -> Path:
    """Validate the document with Ray's own schema and write it as YAML (atomically); refuses
    to replace an existing file. Raises :class:`ConfigError` or :class:`ArtifactError`."""
    import yaml
    from ray.serve.schema import ServeDeploySchema

    if path.exists():
        raise ConfigError(f"{path} exists; remove it or choose another path")
    open_artifact(config.export_dir, check_hashes=config.check_hashes).require(config.variant)
    document = serve_config_document(config)
    ServeDeploySchema.model_validate(document)
    header = (
        "# Ray Serve config for `serve deploy` / KubeRay (RayService serveConfigV2), written by\n"
        "# resnext-deploy. Every node needs resnext-deploy[serve] installed and export_dir.\n"
    )
    text = header + yaml.safe_dump(document, sort_keys=False, default_flow_style=False)
    return atomic_write_text(path, text)
