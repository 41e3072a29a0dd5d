from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from resnext_deploy.artifact import FP32_TOLERANCE, INT8_TOLERANCE, Manifest, Tolerance
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


def rotated(b: np.ndarray, angle: float) -> np.ndarray:
    """The reference logits with every row turned by ``angle`` (radians) away from itself, in
    the plane of the row and a fixed direction: norms kept, cosine exactly cos(angle)."""
    ref = logits(b).astype(np.float64)
    away = np.zeros(ref.shape[1])
    away[-1] = 1.0
    out = np.empty_like(ref)
    for i, row in enumerate(ref):
        unit = row / np.linalg.norm(row)
        ortho = away - (away @ unit) * unit
        ortho /= np.linalg.norm(ortho)
        out[i] = np.linalg.norm(row) * (np.cos(angle) * unit + np.sin(angle) * ortho)
    return out.astype(np.float32)


def test_cosine_is_int8s_only_gate_and_it_fails_a_turned_output() -> None:
    """INT8_TOLERANCE leaves max_rel unbounded and top-1 free, so only the cosine check can
    fail an int8 model that computes something else: cosine 0.8 fails, 0.95 passes."""
    res = run(lambda b: rotated(b, np.arccos(0.8)), INT8_TOLERANCE)
    assert np.isclose(res.min_cosine, 0.8, atol=1e-4)
    assert res.max_rel <= INT8_TOLERANCE.max_rel  # the other gates let it through
    assert not res.passed
    assert res.failures == [f"cosine similarity {res.min_cosine:.7f} < 0.9"]
    assert run(lambda b: rotated(b, np.arccos(0.95)), INT8_TOLERANCE).passed
    # The opposite direction: what a sign flip in a layer gives.
    assert not run(lambda b: -logits(b), INT8_TOLERANCE).passed


def test_an_fp16_variant_off_by_five_percent_fails_verify(
    tiny_fp16_export: Path, tmp_path: Path
) -> None:
    """The fp16 file's logits scaled by 1.05 in the graph (the manifest re-hashed, so only the
    numbers can tell): cosine and top-1 are unchanged, the relative error is 5%, beyond fp16's
    1%. The fp32 file is untouched and passes."""
    from resnext_deploy.artifact import Variant, open_artifact
    from resnext_deploy.verify import VerifyConfig, verify_artifact

    export = tmp_path / "export"
    shutil.copytree(tiny_fp16_export, export)
    scale_output(export / Variant.FP16.file, 1.05)
    old = Manifest.read(export)
    Manifest.build(export, old.spec, old.versions, list(old.files)).write(export)
    report = verify_artifact(open_artifact(export), VerifyConfig(batch_sizes=(1, 2)))
    by_name = {b.backend: b for b in report.backends}
    fp16 = by_name["onnxruntime-cpu-fp16"]
    assert by_name["onnxruntime-cpu"].passed and not fp16.passed and not report.passed
    assert 0.04 < fp16.max_rel < 0.06 and fp16.min_cosine > 0.9999 and fp16.top1 == 1.0
    assert [f.split(" ")[0:3] for f in fp16.failures] == [["max", "relative", "error"]]


def scale_output(path: Path, factor: float) -> None:
    """Multiply ``path``'s (float32) output by ``factor`` with one Mul node before it."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    output = graph.output[0].name
    inner = f"{output}.unscaled"
    for node in graph.node:
        node.output[:] = [inner if o == output else o for o in node.output]
    graph.initializer.append(numpy_helper.from_array(np.float32(factor), f"{output}.scale"))
    graph.node.append(helper.make_node("Mul", [inner, f"{output}.scale"], [output]))
    onnx.save(model, str(path))
