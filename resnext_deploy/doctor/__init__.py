"""``resnext-deploy doctor``: what a user runs first on a new machine.

Rows of PASS / FAIL / SKIP, each with its reason: onnxruntime's build and which providers are
built in and really usable; the CUDA libraries onnxruntime would load; the driver and GPU; the
CPU's instruction sets and what they mean for int8 and bf16; threads; then a live smoke test on a
tiny built-in ResNeXt on the chosen provider. torch is never imported, so it works on a
torch-free install.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from resnext_deploy.doctor.report import Check, CheckStatus, DoctorReport
from resnext_deploy.runtime.providers import Provider

__all__ = ["Check", "CheckStatus", "DoctorReport", "run_doctor", "stdout_to_stderr"]


def run_doctor(
    provider: Provider = Provider.CPU, progress: Callable[[str], None] | None = None
) -> DoctorReport:
    """Check this machine for ``provider``. Never raises for what it finds: a problem is a FAIL
    row (when ``provider`` needs the thing) or a SKIP row (when it does not)."""
    from resnext_deploy.doctor import smoke, system

    steps: list[tuple[str, Callable[[], list[Check]]]] = [
        ("onnxruntime", lambda: system.onnxruntime_checks(provider)),
        ("CUDA libraries", lambda: system.cuda_library_checks(provider)),
        ("driver and GPU", lambda: [*system.driver_checks(provider),
                                    system.tensorrt_cache_check(provider)]),
        ("CPU", system.cpu_checks),
        ("smoke test", lambda: smoke.smoke_checks(provider)),
    ]  # fmt: skip
    checks: list[Check] = []
    for label, step in steps:
        if progress:
            progress(label)
        checks += step()
    return DoctorReport(provider=provider, checks=tuple(checks))


@contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send whatever native libraries (or a stray ``print``) write to file descriptor 1 to
    stderr for the duration, so that ``--json`` output on stdout stays the only thing there."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os.dup2(saved, 1)
        os.close(saved)
