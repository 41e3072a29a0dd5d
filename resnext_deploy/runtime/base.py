"""The runner interface every backend implements (torch-free)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import Any

import numpy as np


class Runner(ABC):
    """Load once, then ``infer`` float32 NCHW batches into float32 logits.

    Runners never time themselves; the benchmark harness does. Use as a context manager or call
    :meth:`close`.
    """

    name: str = "runner"

    @abstractmethod
    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Logits for ``batch`` (float32, N x 3 x H x W)."""

    def describe(self) -> dict[str, Any]:
        """What actually runs (providers, threads, options), for reports."""
        return {"name": self.name}

    def close(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Release the session or module."""

    def __enter__(self) -> Runner:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
