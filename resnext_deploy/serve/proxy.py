"""What runs inside Ray Serve's proxy process, through Ray's proxy callback
(``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH``, which ``serve`` sets for the local Ray it
starts): the ASGI middlewares in front of every HTTP request, and the address its gRPC server
listens on.

Ray's gRPC proxy listens on ``[::]`` (every interface) whatever ``--host`` says; the callback
runs in the proxy's constructor, before its gRPC server starts, and points Serve's address
helper at the host ``serve`` was given (``RESNEXT_DEPLOY_GRPC_HOST``).
"""

from __future__ import annotations

import functools
import os
from typing import Any

from resnext_deploy.serve.exposure import is_loopback
from resnext_deploy.serve.faults import FaultGate
from resnext_deploy.serve.uploads import LIMITS_ENV, UploadGate, UploadLimits

PROXY_CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
PROXY_CALLBACK = "resnext_deploy.serve.proxy:proxy_middlewares"
GRPC_HOST_ENV = "RESNEXT_DEPLOY_GRPC_HOST"


def proxy_middlewares() -> list[Any]:
    """Ray Serve's proxy callback: :class:`FaultGate` (outermost: every error response in
    protocol JSON, readiness within a deadline), then :class:`UploadGate` with the limits in
    ``RESNEXT_DEPLOY_UPLOADS``. Binds the gRPC proxy to ``RESNEXT_DEPLOY_GRPC_HOST`` when set."""
    from starlette.middleware import Middleware

    host = os.environ.get(GRPC_HOST_ENV)
    if host:
        bind_grpc_proxy(host)
    limits = UploadLimits.from_env(os.environ.get(LIMITS_ENV))
    return [Middleware(FaultGate), Middleware(UploadGate, limits=limits)]


def with_host(address: str, host: str) -> str:
    """``address`` (``[::]:PORT``, ``0.0.0.0:PORT``) with its host replaced by ``host``."""
    port = address.rsplit(":", 1)[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bind_grpc_proxy(host: str) -> None:
    """In the proxy process: Serve's gRPC server listens on ``host``."""
    from ray.serve._private import default_impl

    _rehost(default_impl, "add_grpc_address", host)


def keep_replica_server_on_node() -> None:
    """In a replica's constructor: the gRPC server Serve starts in every replica after it (for
    calls between deployments), on ``[::]``, listens on the node's address instead where that
    is loopback (a local Ray, :func:`resnext_deploy.raylocal.start_ray`); elsewhere it stays."""
    import ray
    from ray.serve._private import replica

    node = ray.util.get_node_ip_address()
    if is_loopback(node):
        _rehost(replica, "add_port_to_grpc_server", node)


def _rehost(module: Any, name: str, host: str) -> None:
    """Wrap ``module.name(server, address)`` so the address's host is ``host``. Nothing happens
    where the module has no such helper (another Ray): ``serve`` then finds the socket beyond
    loopback and refuses to run."""
    add = getattr(module, name, None)
    if add is None or hasattr(add, "__wrapped__"):
        return

    @functools.wraps(add)
    def on_host(server: Any, address: str) -> Any:
        return add(server, with_host(address, host))

    setattr(module, name, on_host)
