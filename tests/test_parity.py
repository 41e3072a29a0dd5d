from __future__ import annotations

import numpy as np

from resnext_deploy.artifact import FP32_TOLERANCE, Tolerance
from resnext_deploy.parity import ParityInput, compare
from resnext_deploy.runtime.base import Runner


class FixedRunner(Runner):
    """Returns a function of the input, so parity metrics can be checked against known values."""

    def __init__(self, name: str, fn) -> None:  # noqa: ANN001
        self.name, self.fn = name, fn

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return self.fn(batch)


def logits(batch: np.ndarray) -> np.ndarray:
    # Well-separated classes: row i prefers class i % 4 by a margin of 1.0.
    out = np.zeros((batch.shape[0], 6), np.float32)
    out[np.arange(batch.shape[0]), np.arange(batch.shape[0]) % 4] = 2.0
    out[:, 5] = 1.0
    return out + batch.reshape(batch.shape[0], -1)[:, :6] * 1e-3


INPUTS = [ParityInput("a", np.random.default_rng(0).standard_normal((4, 3, 2, 2), np.float32))]
REF = FixedRunner("ref", logits)


def run(fn, tol: Tolerance = FP32_TOLERANCE):  # noqa: ANN001, ANN201
    return compare(REF, [(FixedRunner("cand", fn), tol)], INPUTS).backends[0]


def test_identical_outputs_pass_with_zero_error() -> None:
    res = run(logits)
    assert res.passed and res.max_abs == 0 and res.top1 == 1 and res.min_cosine > 0.999999


def test_relative_error_is_scaled_by_the_output_magnitude() -> None:
    res = run(lambda b: logits(b) + np.float32(2e-3))
    ref_max = float(np.abs(logits(INPUTS[0].batch)).max())
    assert np.isclose(res.max_abs, 2e-3, rtol=1e-3)
    assert np.isclose(res.max_rel, 2e-3 / ref_max, rtol=1e-3)
    assert not res.passed and "max relative error" in res.failures[0]


def test_nan_fails() -> None:
    res = run(lambda b: np.full_like(logits(b), np.nan))
    assert res.nonfinite and not res.passed


def test_a_real_top1_flip_fails_but_a_tie_may_flip() -> None:
    def swap_first_row(b: np.ndarray) -> np.ndarray:
        out = logits(b)
        out[0, [0, 5]] = out[0, [5, 0]]
        return out

    res = run(swap_first_row, Tolerance(max_rel=1.0, min_cosine=0.0))
    assert res.top1 == 0.75 and res.top1_true_mismatches == 1 and not res.passed

    def tied(b: np.ndarray) -> np.ndarray:
        out = np.ones((b.shape[0], 3), np.float32)
        out[:, 0] += 1e-7 * (b.shape[0])
        return out

    ref = FixedRunner("ref", tied)
    flipped = FixedRunner("cand", lambda b: tied(b)[:, ::-1].copy())
    res = compare(ref, [(flipped, Tolerance())], INPUTS).backends[0]
    assert res.top1 == 0.0 and res.top1_true_mismatches == 0 and res.passed


def test_one_failing_backend_fails_the_report_among_passing_ones() -> None:
    candidates = [
        (FixedRunner("good-1", logits), Tolerance()),
        (FixedRunner("bad", lambda b: logits(b) * np.float32(1.5)), Tolerance()),
        (FixedRunner("good-2", logits), Tolerance()),
    ]
    report = compare(REF, candidates, INPUTS)
    assert [b.passed for b in report.backends] == [True, False, True]
    assert not report.passed and not bool(report) and report.to_dict()["passed"] is False
    # Only when every backend passes does the report pass.
    assert compare(REF, [candidates[0], candidates[2]], INPUTS).passed
