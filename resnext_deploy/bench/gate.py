"""The accuracy gate of ``bench --engines``, and the pick it allows per batch size.

Every deployable row (an engine running one variant of the export, as ``--engine`` deploys it)
is compared with the eager model on seeded random batches, held to its variant's tolerance
(:attr:`~resnext_deploy.artifact.Variant.tolerance`, as ``verify`` holds it). A row that fails
can never be picked, however fast: a recommendation names only what computes the model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from resnext_deploy.artifact import Variant
from resnext_deploy.bench.backends import BackendFactory
from resnext_deploy.bench.harness import Measurement, Status
from resnext_deploy.errors import BenchmarkError, first_line
from resnext_deploy.parity import ParityInput, compare, random_inputs
from resnext_deploy.recommendation import Engine, Pick
from resnext_deploy.runtime.base import Runner

# Batch sizes the gate compares on: 2 catches a row that runs part of a batch; larger batches
# would only add eager time to every benchmark.
GATE_BATCH_SIZES = (1, 2)


@dataclass(frozen=True, kw_only=True)
class GateResult:
    """One deployable row against eager: passed, or ``failures`` saying why not. The figures
    are the worst over the gate's inputs (``None`` where the row could not run)."""

    backend: str
    engine: Engine
    variant: Variant
    failures: tuple[str, ...] = ()
    max_rel: float | None = None
    min_cosine: float | None = None
    top1: float | None = None

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def reason(self) -> str:
        return "; ".join(self.failures)

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "engine": self.engine.value,
            "variant": self.variant.value,
            "passed": self.passed,
            "failures": list(self.failures),
            "max_rel": self.max_rel,
            "min_cosine": self.min_cosine,
            "top1": self.top1,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GateResult:
        """Read :meth:`to_dict`'s keys back (raises ``KeyError``/``TypeError``/``ValueError``
        for another shape)."""
        failures = data.get("failures") or []
        if not isinstance(failures, list):
            raise TypeError("failures must be a list")
        passed = data.get("passed")
        if not isinstance(passed, bool) or passed == bool(failures):
            raise ValueError(f"{data['backend']}: 'passed' must agree with its failures")
        return cls(
            backend=str(data["backend"]),
            engine=Engine(data["engine"]),
            variant=Variant(data["variant"]),
            failures=tuple(str(f) for f in failures),
            max_rel=_optional_float(data.get("max_rel")),
            min_cosine=_optional_float(data.get("min_cosine")),
            top1=_optional_float(data.get("top1")),
        )


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def gate_rows(
    model: Any,
    factories: list[BackendFactory],
    input_size: int,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> list[GateResult]:
    """Each deployable factory's runner against the eager ``model`` on the CPU (seeded random
    batches of :data:`GATE_BATCH_SIZES`). A runner that cannot be built or run fails the gate
    with the reason; nothing is raised for it."""
    from resnext_deploy.runtime.torch_runners import EagerRunner

    deployable = [f for f in factories if f.deployable]
    if not deployable:
        return []
    inputs = random_inputs(GATE_BATCH_SIZES, input_size, seed)
    with EagerRunner(model) as reference:
        results = []
        for factory in deployable:
            if progress:
                progress(f"accuracy gate: {factory.name}")
            results.append(gate_one(reference, factory, inputs))
    return results


def gate_one(reference: Runner, factory: BackendFactory, inputs: list[ParityInput]) -> GateResult:
    """``factory``'s runner against ``reference`` on ``inputs``, held to its variant's
    tolerance."""
    if factory.engine is None or factory.variant is None:
        raise BenchmarkError(f"{factory.name} is not a deployable row; it has no accuracy gate")
    row = partial(GateResult, backend=factory.name, engine=factory.engine, variant=factory.variant)
    try:
        with factory.build() as runner:
            tolerance = factory.variant.tolerance
            parity = compare(reference, [(runner, tolerance)], inputs).backends[0]
    except Exception as exc:  # noqa: BLE001 - a row that cannot run fails the gate, recorded
        return row(failures=(f"could not run: {first_line(exc)}",))
    return row(
        failures=tuple(parity.failures),
        max_rel=parity.max_rel,
        min_cosine=parity.min_cosine,
        top1=parity.top1,
    )


def fastest_passing(results: list[Measurement], gate: list[GateResult]) -> dict[int, Pick]:
    """Per batch size, the row with the lowest median latency among those that passed
    ``gate`` (the first measured on a tie), as a :class:`Pick`; its speed-up is onnxruntime
    fp32's median at that batch size over the pick's, where onnxruntime fp32 was measured."""
    passed = {g.backend: g for g in gate if g.passed}
    baseline = next(
        (g.backend for g in gate if (g.engine, g.variant) == (Engine.ONNXRUNTIME, Variant.FP32)),
        None,
    )
    timed = _timed(results)
    base_ms = {m.batch_size: p50 for m, p50 in timed if m.backend == baseline}
    best: dict[int, tuple[GateResult, float]] = {}
    for m, p50 in timed:
        held = best.get(m.batch_size)
        if m.backend in passed and (held is None or p50 < held[1]):
            best[m.batch_size] = (passed[m.backend], p50)
    picks = {}
    for batch_size, (row, p50) in sorted(best.items()):
        base = base_ms.get(batch_size)
        picks[batch_size] = Pick(row.engine, row.variant.value, p50, base / p50 if base else None)
    return picks


def _timed(results: list[Measurement]) -> list[tuple[Measurement, float]]:
    """The rows that were timed, with their median latency."""
    return [(m, m.stats.p50_ms) for m in results if m.status is Status.OK and m.stats is not None]
