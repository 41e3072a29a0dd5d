from __future__ import annotations

import numpy as np
import pytest

from resnext_deploy.timing import summarize


def test_percentiles_and_moments_of_known_samples() -> None:
    # 1..100 ms: numpy's linear interpolation gives p50 = 50.5, p90 = 90.1, p99 = 99.01.
    samples = np.arange(1, 101) / 1e3
    s = summarize(samples, batch_size=4)
    assert s.n == 100
    assert s.p50_ms == pytest.approx(50.5)
    assert s.p90_ms == pytest.approx(90.1)
    assert s.p95_ms == pytest.approx(95.05)
    assert s.p99_ms == pytest.approx(99.01)
    assert s.mean_ms == pytest.approx(50.5)
    assert s.std_ms == pytest.approx(29.011491975882016)  # sample std (ddof=1) of 1..100
    assert (s.min_ms, s.max_ms) == (pytest.approx(1.0), pytest.approx(100.0))
    assert s.iqr_ms == pytest.approx(75.25 - 25.75)
    assert s.images_per_s == pytest.approx(4 / 0.0505)
    assert s.ms_per_image == pytest.approx(50.5 / 4)


def test_single_sample_has_zero_spread() -> None:
    s = summarize([0.002], batch_size=1)
    assert s.std_ms == 0 and s.p99_ms == pytest.approx(2.0) and s.cv == 0


def test_no_samples_is_an_error() -> None:
    with pytest.raises(ValueError):
        summarize([], batch_size=1)
