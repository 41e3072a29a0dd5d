"""Compare two benchmark reports: median latency change per (backend, batch size)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from resnext_deploy.bench.report import BenchReport
from resnext_deploy.validate import check_float

MAX_THRESHOLD_PCT = 10_000.0  # a hundred times slower


@dataclass(frozen=True)
class Change:
    backend: str
    batch_size: int
    old_p50_ms: float | None
    new_p50_ms: float | None
    change_pct: float | None
    regression: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare_reports(
    old: BenchReport, new: BenchReport, threshold_pct: float = 10.0
) -> list[Change]:
    """A slowdown beyond ``threshold_pct`` percent is a regression; so is a measurement the old
    report had and the new one lost. Raises :class:`ConfigError` for a threshold that is not a
    percentage in 0..:data:`MAX_THRESHOLD_PCT`. (The reports' medians are positive finite
    numbers: :meth:`BenchReport.from_dict` checks them.)"""
    check_float(threshold_pct, "the regression threshold (percent)", 0.0, MAX_THRESHOLD_PCT)

    def index(report: BenchReport) -> dict[tuple[str, int], float | None]:
        return {
            (m.backend, m.batch_size): m.stats.p50_ms if m.stats else None for m in report.results
        }

    a, b = index(old), index(new)
    changes = []
    for key in sorted(set(a) | set(b), key=lambda k: (k[1], k[0])):
        o, n = a.get(key), b.get(key)
        pct = (n / o - 1) * 100 if o and n else None
        regression = (pct is not None and pct > threshold_pct) or (
            o is not None and n is None and key in b
        )
        changes.append(Change(key[0], key[1], o, n, pct, regression))
    return changes
