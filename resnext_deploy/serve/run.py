"""Start (or join) Ray, deploy the model, serve until SIGINT/SIGTERM, shut down cleanly; and
the Serve config file for ``serve deploy`` / KubeRay."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import Any

from resnext_deploy import interrupts
from resnext_deploy.errors import ConfigError, ServeError
from resnext_deploy.fileio import atomic_write_text, check_writable_dir
from resnext_deploy.raylocal import (
    LOCAL_SYSTEM_CONFIG,
    SIGNALS,
    LocalProcesses,
    local_ray_alive,
    ray_cause,
    signals_deferred,
    start_ray,
)
from resnext_deploy.runtime.providers import Provider, check_provider
from resnext_deploy.serve.config import IMPORT_PATH, ServeConfig
from resnext_deploy.serve.exposure import check_not_exposed, endpoints
from resnext_deploy.serve.model import ServedModel
from resnext_deploy.serve.proxy import GRPC_HOST_ENV, PROXY_CALLBACK, PROXY_CALLBACK_ENV
from resnext_deploy.serve.uploads import LIMITS_ENV, UploadLimits

log = logging.getLogger(__name__)
GRPC_MESSAGE_ENV = "RAY_SERVE_GRPC_MAX_MESSAGE_SIZE"
NICENESS_ENV = "RAY_worker_niceness"  # RayConfig's worker_niceness, as a `ray start` node reads it
GRPC_SERVICER = "resnext_deploy.serve.grpc_service.add_service_to_server"


@dataclass(frozen=True, kw_only=True)
class ServeInfo:
    """Where a deployed model answers."""

    model: str
    url: str
    grpc_address: str | None  # host:port of the gRPC service, None without one
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


def serve_model(
    config: ServeConfig,
    on_ready: Callable[[ServeInfo], None],
    on_starting: Callable[[], None] = lambda: None,
) -> None:
    """Deploy ``config``'s model and block until SIGINT or SIGTERM, then remove it (and stop
    the local Ray this call started, every process of it). ``on_starting`` is called once the
    model and the port passed their checks, before Ray starts; ``on_ready`` once the model
    answers. A signal before then raises :class:`Interrupted` once Ray is stopped.

    Raises :class:`ArtifactError` for an export that fails its manifest check or whose model
    onnxruntime cannot open (checked before Ray starts), :class:`ProviderUnavailableError`
    when the provider cannot start here (local Ray only), :class:`ConfigError` for a port in
    use, :class:`ServeError` when Ray or the deployment fails, or when a process of the local
    Ray listens beyond loopback on a port other than the server's own.
    """
    name = check_model(config)
    address = cluster_address(config)
    if address is None:
        # Fail here, in one line, rather than in a replica's traceback.
        if config.provider is Provider.CUDA:
            check_provider(Provider.CUDA)
        for port in _ports(config):
            _check_port_free(config.host, port)
    on_starting()
    stop = threading.Event()
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    # Imported before anything starts: a signal during the import leaves nothing to stop.
    import ray
    import ray.serve

    ours = LocalProcesses() if address is None else None
    try:
        with signals_deferred(ray):
            _start_ray(ray, config, address)
        info = _deploy(config, name, address, ray)
        interrupts.raise_if_interrupted()  # a signal Ray swallowed while deploying
        if address is None:
            check_not_exposed(endpoints(config.host, _ports(config)))
        _stop_on_signals(stop)
        on_ready(info)
        stop.wait()
    finally:
        _stop_on_signals(stop)  # a second Ctrl-C must not cut the shutdown short
        try:
            _shutdown(name, address)
        finally:
            if ours is not None:
                ours.end_leftovers()
            for sig, handler in previous.items():
                signal.signal(sig, signal.SIG_DFL if handler is None else handler)


def check_model(config: ServeConfig) -> str:
    """The served model's name, once its export passed its manifest check and onnxruntime
    opened its model (on the CPU, whatever the provider) and found the tensors a served model
    needs: a broken model is one line here, not a replica's traceback after Ray started.
    Raises :class:`ArtifactError`."""
    model = ServedModel(replace(config, provider=Provider.CPU, threads=1))
    try:
        return model.name
    finally:
        model.close()


def _ports(config: ServeConfig) -> list[int]:
    """The ports the server listens on beyond loopback: HTTP, and gRPC where asked for."""
    return [config.port] + ([config.grpc_port] if config.grpc_port is not None else [])


def _start_ray(ray: Any, config: ServeConfig, address: str | None) -> None:
    if address is None:
        with _proxy_environment(config):
            start_ray(ray, None, ServeError, _metrics_export_port=config.metrics_port)
    else:
        start_ray(ray, address, ServeError)


@contextmanager
def _proxy_environment(config: ServeConfig) -> Iterator[None]:
    """The environment the local Ray's processes inherit: Serve's proxy answers faults in the
    protocol and reads every request body within ``config``'s limits
    (:mod:`resnext_deploy.serve.proxy`), and its gRPC server listens on ``config.host``."""
    theirs = os.environ.get(PROXY_CALLBACK_ENV)
    if theirs and theirs != PROXY_CALLBACK:
        log.warning(
            "%s is set to %s: request bodies are read in the replicas, with no bound on "
            "uploads at once; faults may be answered in plain text; gRPC listens on every "
            "interface",
            PROXY_CALLBACK_ENV,
            theirs,
        )
        yield
        return
    settings = {
        PROXY_CALLBACK_ENV: PROXY_CALLBACK,
        LIMITS_ENV: UploadLimits.of(config).to_env(),
        GRPC_HOST_ENV: config.host,
        # A gRPC message is one request body: the same bound as over HTTP (Ray's is 2 GiB).
        GRPC_MESSAGE_ENV: str(config.max_body_bytes),
    }
    saved = {k: os.environ.get(k) for k in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _deploy(config: ServeConfig, name: str, address: str | None, ray: Any) -> ServeInfo:
    from ray import serve
    from ray.serve.exceptions import RayServeException

    from resnext_deploy.serve.app import build_app

    try:
        serve.start(
            http_options={"host": config.host, "port": config.port},
            grpc_options=grpc_options(config),
            logging_config={"enable_access_log": config.access_log},
        )
        serve.run(build_app(config.to_args()), name=name, route_prefix="/")
    except (RayServeException, ray.exceptions.RayError, RuntimeError, TypeError) as exc:
        raise ServeError(f"deploying {name} failed: {ray_cause(exc)}") from None
    host = _url_host(config.host)
    return ServeInfo(
        model=name,
        url=f"http://{host}:{config.port}",
        grpc_address=f"{host}:{config.grpc_port}" if config.grpc_port else None,
        cluster=address,
        metrics_url=_metrics_url(ray),
        replicas=config.replicas,
        batching=config.batching,
    )


def grpc_options(config: ServeConfig) -> dict[str, Any] | None:
    """Serve's gRPC proxy with the service definition Triton's client ships, or None."""
    if config.grpc_port is None:
        return None
    return {"port": config.grpc_port, "grpc_servicer_functions": [GRPC_SERVICER]}


def _shutdown(app: str, address: str | None) -> None:
    """Remove the application (all of a local Ray's), then disconnect from Ray and stop the
    processes of a local one; also when ``ray.init`` did not return."""
    import ray
    from ray import serve

    try:
        if ray.is_initialized():
            if address is not None:
                serve.delete(app)  # leave the cluster's other applications alone
            elif local_ray_alive():
                serve.shutdown()  # drains in-flight requests, then stops the replicas
    finally:
        ray.shutdown(wait_for_processes=address is None)


def _stop_on_signals(stop: threading.Event) -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for sig in SIGNALS:
        signal.signal(sig, handler)


def _check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


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
        **({"grpc_options": grpc_options(config)} if config.grpc_port is not None else {}),
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
    to replace an existing file, and checks the destination and the model before any work.
    Raises :class:`ConfigError` or :class:`ArtifactError`."""
    import yaml
    from ray.serve.schema import ServeDeploySchema

    if os.path.lexists(path):
        raise ConfigError(f"{path} exists; remove it or choose another path")
    check_writable_dir(path.parent, "the folder of --write-config")
    check_model(config)
    document = serve_config_document(config)
    ServeDeploySchema.model_validate(document)
    header = (
        "# Ray Serve config for `serve deploy` / KubeRay (RayService serveConfigV2), written by\n"
        "# resnext-deploy. Every node needs resnext-deploy[serve] installed and export_dir.\n"
        "# Start every node with these in its environment: Serve's proxy then reads request\n"
        "# bodies within a deadline before they reach a replica (stalled uploads), answers\n"
        "# faults in the protocol's JSON and readiness within 0.5 s, its gRPC server listens\n"
        "# on the host below; and replicas run at the node's priority (Ray's default: nice 15):\n"
        f"#   {PROXY_CALLBACK_ENV}={PROXY_CALLBACK}\n"
        f"#   {LIMITS_ENV}='{UploadLimits.of(config).to_env()}'\n"
        f"#   {GRPC_HOST_ENV}={config.host}\n"
        f"#   {NICENESS_ENV}={LOCAL_SYSTEM_CONFIG['worker_niceness']}\n"
    )
    text = header + yaml.safe_dump(document, sort_keys=False, default_flow_style=False)
    try:
        return atomic_write_text(path, text)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None
