"""The export the benchmarks classify with: resnext50_32x4d with random weights (speed does
not depend on them), exported once with `resnext-deploy export` and reused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CLI = [sys.executable, "-m", "resnext_deploy"]


def ensure_random_export(work: Path, name: str, export: Path | None = None) -> Path:
    """``export`` when given; else ``work/name``, built on first use."""
    if export:
        return Path(export)
    out = work / name
    if (out / "manifest.json").is_file():
        return out
    work.mkdir(parents=True, exist_ok=True)
    checkpoint = work / "rx50-random.pth"
    code = (
        "import torch; from resnext_deploy.models.registry import build_model; "
        "torch.manual_seed(0); "
        f"torch.save(build_model('resnext50_32x4d', 1000).state_dict(), {str(checkpoint)!r})"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    subprocess.run(
        [*CLI, "export", str(checkpoint), "--arch", "resnext50_32x4d", "--out", str(out)]
        + ["--batch-sizes", "1,2", "--force"],
        check=True,
    )
    return out
