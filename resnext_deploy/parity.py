"""Numerical parity: every backend against the eager reference, on the same inputs.

Metrics, per backend, worst case over all inputs:

* ``max_abs`` -- max |y - y_ref|
* ``max_rel`` -- max |y - y_ref| / max |y_ref| (per input set). Element-wise relative error is
  meaningless for logits near zero, so the error is scaled by the output's magnitude.
* ``min_cosine`` -- smallest cosine similarity between a row and its reference row
* ``top1`` / ``top5`` -- fraction of rows whose top-1 class / top-5 set match the reference
* ``top1_true_mismatches`` -- top-1 disagreements where the reference's top-2 margin exceeds
  ``tie_margin``; a near-tie within numerical noise may flip legitimately, anything else fails
* ``nonfinite`` -- any NaN or Inf in the output
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from resnext_deploy.artifact import Tolerance
from resnext_deploy.runtime.base import Runner
from resnext_deploy.runtime.placement import Placement


@dataclass(frozen=True)
class ParityInput:
    name: str
    batch: np.ndarray


@dataclass
class BackendParity:
    backend: str
    max_abs: float = 0.0
    max_rel: float = 0.0
    min_cosine: float = 1.0
    top1: float = 1.0
    top5: float = 1.0
    top1_true_mismatches: int = 0
    rows: int = 0
    nonfinite: bool = False
    tolerance: Tolerance = field(default_factory=Tolerance)
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"passed": self.passed}


@dataclass
class ParityReport:
    reference: str
    inputs: list[str]
    backends: list[BackendParity]
    skipped: dict[str, str] = field(default_factory=dict)
    # Where onnxruntime placed the nodes, for each backend on a non-CPU provider.
    placements: dict[str, Placement] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(b.passed for b in self.backends)

    def __bool__(self) -> bool:
        return self.passed

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "reference": self.reference,
            "inputs": self.inputs,
            "backends": [b.to_dict() for b in self.backends],
            "skipped": self.skipped,
            "placements": {name: p.to_dict() for name, p in self.placements.items()},
        }


def random_inputs(
    batch_sizes: tuple[int, ...], input_size: int, seed: int = 0
) -> list[ParityInput]:
    """Seeded standard-normal batches (the range of normalised images) at each batch size."""
    rng = np.random.default_rng(seed)
    return [
        ParityInput(
            f"random batch={b}",
            rng.standard_normal((b, 3, input_size, input_size), dtype=np.float32),
        )
        for b in batch_sizes
    ]


def compare(
    reference: Runner, candidates: list[tuple[Runner, Tolerance]], inputs: list[ParityInput]
) -> ParityReport:
    """Run every runner on every input and compare each candidate with ``reference``."""
    results = [BackendParity(r.name, tolerance=tol) for r, tol in candidates]
    for item in inputs:
        ref = reference.infer(item.batch)
        for (runner, _), res in zip(candidates, results, strict=True):
            _accumulate(res, ref, runner.infer(item.batch))
    for res in results:
        _judge(res)
    return ParityReport(reference.name, [i.name for i in inputs], results)


def _accumulate(res: BackendParity, ref: np.ndarray, out: np.ndarray) -> None:
    ref64, out64 = ref.astype(np.float64), out.astype(np.float64)
    if out.shape != ref.shape:
        res.failures.append(f"output shape {out.shape} != reference {ref.shape}")
        return
    if not np.isfinite(out64).all():
        res.nonfinite = True
        return
    diff = np.abs(out64 - ref64)
    scale = max(float(np.abs(ref64).max()), 1e-12)
    res.max_abs = max(res.max_abs, float(diff.max()))
    res.max_rel = max(res.max_rel, float(diff.max()) / scale)
    cos = (ref64 * out64).sum(1) / (
        np.linalg.norm(ref64, axis=1) * np.linalg.norm(out64, axis=1) + 1e-30
    )
    res.min_cosine = min(res.min_cosine, float(cos.min()))

    n, k = ref.shape[0], min(5, ref.shape[1])
    ref_top1, out_top1 = ref64.argmax(1), out64.argmax(1)
    same1 = ref_top1 == out_top1
    ranked = np.sort(ref64, axis=1)
    margin = ranked[:, -1] - ranked[:, -2] if ref.shape[1] > 1 else np.full(n, np.inf)
    res.top1_true_mismatches += int(((~same1) & (margin > res.tolerance.tie_margin)).sum())
    ref5 = np.argsort(-ref64, axis=1)[:, :k]
    out5 = np.argsort(-out64, axis=1)[:, :k]
    same5 = np.array([set(a) == set(b) for a, b in zip(ref5, out5, strict=True)])
    total = res.rows + n
    res.top1 = (res.top1 * res.rows + same1.sum()) / total
    res.top5 = (res.top5 * res.rows + same5.sum()) / total
    res.rows = total


def _judge(res: BackendParity) -> None:
    tol = res.tolerance
    if res.nonfinite:
        res.failures.append("output contains NaN or Inf")
    if res.max_rel > tol.max_rel:
        res.failures.append(f"max relative error {res.max_rel:.3g} > {tol.max_rel:g}")
    if res.min_cosine < tol.min_cosine:
        res.failures.append(f"cosine similarity {res.min_cosine:.7f} < {tol.min_cosine}")
    if res.top1 < tol.min_top1 and res.top1_true_mismatches:
        res.failures.append(
            f"top-1 agreement {res.top1:.2%} ({res.top1_true_mismatches} disagreements "
            "outside numerical ties)"
        )
