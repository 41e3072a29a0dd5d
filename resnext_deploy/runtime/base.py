"""The runner interface every backend implements (torch-free).

Polygraphy-style: one small class per backend, loaded in its constructor, used as a context
manager (``with``) so that it is always closed, also on errors. Runners never time themselves;
they give the timing harness what it needs instead: :meth:`Runner.bind` prepares a batch once
(on the device, where there is one) and returns a :class:`BoundCall` whose ``run`` is the work
to time, :meth:`Runner.sync` waits for queued device work, and ``BoundCall.fetch`` reads the
outputs of the last run back so that the harness can check them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import numpy as np

from resnext_deploy.errors import ArtifactError, ConfigError
from resnext_deploy.runtime.device_memory import DeviceMemory
from resnext_deploy.spec import ModelSpec

if TYPE_CHECKING:
    from resnext_deploy.runtime.tensorrt import TensorRTProfile


@dataclass(frozen=True)
class BoundCall:
    """``run()`` performs one inference on a pre-bound batch; ``fetch()`` returns the outputs of
    the last ``run()`` as a numpy array (copying them to the host where needed)."""

    run: Callable[[], Any]
    fetch: Callable[[], np.ndarray]


@dataclass(frozen=True)
class TensorInfo:
    """One input or output of a model file: its name, its element type as onnxruntime names it
    (``tensor(float)``, ``tensor(uint8)``) and its shape, -1 for a dynamic axis."""

    name: str
    type: str
    shape: tuple[int, ...]


def spec_from_metadata(raw: str | None, source: str, expected: ModelSpec | None) -> ModelSpec:
    """The :class:`ModelSpec` an export wrote into a model file's metadata (``raw``, ``None``
    when the file has none). Raises :class:`ArtifactError` naming ``source`` when there is none,
    when it does not parse, or when it differs from ``expected`` (the spec of the manifest beside
    it: class names, sizes and normalisation must be the ones every consumer of the export
    uses)."""
    if raw is None:
        raise ArtifactError(f"{source} carries no resnext-deploy spec in its metadata")
    what = f"the spec in {source}'s metadata"
    try:
        spec = ModelSpec.from_json(raw)
    except (ArtifactError, ConfigError) as exc:
        raise ArtifactError(f"{what} is invalid: {exc}") from None
    if expected is not None and spec != expected:
        raise ArtifactError(
            f"{what} differs from its export's manifest (class names, sizes or "
            "normalisation): one of them was edited after export; re-export"
        )
    return spec


class Runner(ABC):
    """Load once, then ``infer`` float32 NCHW batches (or uint8 NHWC images for a graph with
    its preprocessing inside) into float32 logits."""

    name: str = "runner"
    device: str = "cpu"

    @abstractmethod
    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Logits for ``batch``; the batch is always run whole."""

    def bind(self, batch: np.ndarray) -> BoundCall:
        """Prepare ``batch`` once for repeated timed runs. The default runs :meth:`infer`."""
        last: list[np.ndarray] = []

        def run() -> None:
            last[:] = [self.infer(batch)]

        return BoundCall(run, lambda: last[0])

    def bind_end_to_end(self, batch: np.ndarray) -> BoundCall | None:
        """A call that includes host<->device copies, where those exist (``None`` on CPU)."""
        return None

    def sync(self) -> None:  # noqa: B027 - optional hook, a no-op on the CPU
        """Wait for queued device work before the clock is read."""

    def describe(self) -> dict[str, Any]:
        """What actually runs (providers, threads, options), for reports."""
        return {"name": self.name, "device": self.device}

    def shape_profile(self) -> TensorRTProfile | None:
        """The input shapes a compiled engine was built for (TensorRT's optimization profile);
        ``None`` for a runner that takes any shape as it comes."""
        return None

    def reset_peak_memory(self) -> None:  # noqa: B027 - optional hook
        """Forget the device-memory peak so that :meth:`device_memory` covers what follows."""

    def device_memory(self) -> DeviceMemory | None:
        """Device memory with what the figure covers (:class:`MemoryScope`: this runner's
        allocator peak since :meth:`reset_peak_memory`, the process, or the whole device);
        ``None`` on the CPU."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Release the session or module."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
