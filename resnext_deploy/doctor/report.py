"""The doctor's result: rows of PASS / FAIL / SKIP, each with the reason (rendered in render.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from resnext_deploy.runtime.providers import Provider


class CheckStatus(StrEnum):
    PASS = "PASS"
    FAIL = "FAIL"  # something the chosen provider needs is broken or missing
    SKIP = "SKIP"  # not checked, or not needed for the chosen provider: the detail says which


@dataclass(frozen=True, kw_only=True)
class Check:
    """One row: ``section`` (onnxruntime, cuda, gpu, cpu, smoke), what was checked, the verdict
    and why; ``data`` holds the numbers behind the detail for ``--json``."""

    section: str
    name: str
    status: CheckStatus
    detail: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "section": self.section,
            "name": self.name,
            "status": self.status.value,
            "detail": self.detail,
            "data": self.data,
        }


@dataclass(frozen=True, kw_only=True)
class DoctorReport:
    provider: Provider
    checks: tuple[Check, ...]

    @property
    def failures(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.status is CheckStatus.FAIL)

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider.value,
            "passed": self.passed,
            "checks": [c.to_dict() for c in self.checks],
        }


def needed(provider: Provider, status_if_needed: CheckStatus = CheckStatus.FAIL) -> CheckStatus:
    """The verdict for something missing: FAIL when ``provider`` needs it (a GPU provider),
    SKIP when it does not (the CPU provider)."""
    return status_if_needed if provider is not Provider.CPU else CheckStatus.SKIP
