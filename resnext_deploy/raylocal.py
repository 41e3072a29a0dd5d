"""A local Ray that leaves nothing behind: ``ray.init`` shielded from signals, and every process
it started stopped at the end, also those it had not registered when a signal cut it short.
Shared by ``serve`` and ``predict --ray``; imports Ray only inside its functions."""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from types import FrameType
from typing import Any

from resnext_deploy import interrupts
from resnext_deploy.errors import DeployError, first_line

SIGNALS = (signal.SIGINT, signal.SIGTERM)
PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>
# Ray's switch between a cluster-capable node (its address: the machine's, its servers on every
# interface) and a single-machine one (its address: loopback, as Ray runs on macOS/Windows).
SINGLE_MACHINE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
# Ray starts its workers at nice +15 (RayConfig worker_niceness, an increment): a replica or an
# inference actor would yield the CPU to any ordinary process on a shared host.
LOCAL_SYSTEM_CONFIG = {"worker_niceness": 0}


@contextmanager
def signals_deferred(ray: Any) -> Iterator[None]:
    """While ``ray.init`` runs, the first SIGINT or SIGTERM is held until it returns and then
    raises :class:`Interrupted`; a second one raises at once. Cut short, ``ray.init`` leaves a
    half-built core worker that can crash the exit, and processes it had not registered yet.
    ``ray.init`` would also install a SIGTERM handler that calls ``sys.exit(15)`` (exit 15,
    not 143): kept out, and the handlers in place before come back afterwards."""
    received: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        if len(received) > 1:
            raise interrupts.Interrupted(signum)

    previous = {s: signal.getsignal(s) for s in SIGNALS}
    utils = ray._private.utils  # Ray's own hook for it; absent in another Ray: not patched
    install = getattr(utils, "set_sigterm_handler", None)
    for sig in SIGNALS:
        signal.signal(sig, hold)
    if install is not None:
        utils.set_sigterm_handler = lambda handler: None
    try:
        yield
    finally:
        if install is not None:
            utils.set_sigterm_handler = install
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
    if received:
        raise interrupts.Interrupted(received[-1])


def local_ray_alive() -> bool:
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


class LocalProcesses:
    """The processes a local Ray starts under this one. ``ray.shutdown`` stops those it knows;
    those it had not registered yet when a signal cut ``ray.init`` short (the GCS, the raylet,
    its dashboard and runtime-env agents) would stay running and listening. While serving,
    this process is their subreaper (Linux), so one orphaned by the raylet's end stays ours
    to stop."""

    def __init__(self) -> None:
        self.before = {p.pid for p in _descendants()}
        _set_subreaper(True)

    def end_leftovers(self, grace_s: float = 5.0) -> None:
        import psutil

        leftovers = [p for p in _descendants() if p.pid not in self.before]
        for process in leftovers:
            with suppress(psutil.Error):
                process.terminate()
        _, alive = psutil.wait_procs(leftovers, timeout=grace_s)
        for process in alive:
            with suppress(psutil.Error):
                process.kill()
        psutil.wait_procs(alive, timeout=grace_s)
        _set_subreaper(False)


def _set_subreaper(on: bool) -> None:
    """``prctl(PR_SET_CHILD_SUBREAPER)``: orphaned descendants are re-parented to this
    process instead of init. Nothing elsewhere."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    with suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0)


def _descendants() -> list[Any]:
    import psutil

    return psutil.Process().children(recursive=True)


def start_ray(
    ray: Any, address: str | None, error: type[DeployError], **local_options: Any
) -> None:
    """``ray.init``: a new local Ray when ``address`` is None (never one that ``ray start`` left
    running: plain ``ray.init()`` would join /tmp/ray/ray_current_cluster), started with
    ``local_options``, on loopback and with workers at this process's priority; else join the
    cluster at ``address``. Raises :class:`Interrupted` when
    Ray's own SIGTERM handler ends in ``sys.exit``, and ``error`` saying why Ray could not start
    or be reached."""
    try:
        if address is None:
            with _single_machine(ray):
                ray.init(
                    address="local",
                    include_dashboard=False,
                    logging_level=logging.WARNING,
                    _system_config=LOCAL_SYSTEM_CONFIG,
                    **local_options,
                )
        else:
            ray.init(address=address, logging_level=logging.WARNING)
    except SystemExit:
        raise interrupts.Interrupted(signal.SIGTERM) from None
    except (ConnectionError, RuntimeError, ValueError) as exc:
        if address is None:
            raise error(f"could not start a local Ray: {first_line(exc)}") from None
        raise error(
            f"could not connect to the Ray cluster at {address}: {first_line(exc)} (a cluster "
            "with token authentication also needs RAY_AUTH_MODE=token and its token)"
        ) from None


def ray_cause(exc: BaseException) -> str:
    """The worker's own error where Ray wraps it (the last ``SomethingError: ...`` line)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    ours = [ln for ln in lines if "Error: " in ln and not ln.startswith("File ")]
    return (ours[-1] if ours else first_line(exc))[:500]


@contextmanager
def _single_machine(ray: Any) -> Iterator[None]:
    """While a local Ray starts: its node address is loopback, so the GCS, the raylet, every
    worker's gRPC server, the agents and the metrics endpoint listen on loopback only (with the
    machine's address, they listen on every interface). Nothing outside this machine joins a
    local Ray. The environment reaches the processes Ray starts; the constant is this process's
    copy, read when ``ray.init`` picks the node address."""
    constants = ray._private.ray_constants
    saved_env, saved_flag = os.environ.get(SINGLE_MACHINE_ENV), constants.ENABLE_RAY_CLUSTER
    os.environ[SINGLE_MACHINE_ENV], constants.ENABLE_RAY_CLUSTER = "0", False
    try:
        yield
    finally:
        constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop(SINGLE_MACHINE_ENV, None)
        else:
            os.environ[SINGLE_MACHINE_ENV] = saved_env
