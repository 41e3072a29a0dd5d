"""Files that appear complete or not at all, with the permissions the user's umask gives.

Ground floor: imports nothing of the package but :mod:`resnext_deploy.errors`, so every layer
(training, export, benchmarks, serving) writes its results the same way.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from pathlib import Path
from typing import Any

from resnext_deploy.errors import ConfigError


def current_umask() -> int:
    """The process umask (read without changing it for longer than one call)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """What ``open(..., "w")`` would give a new file: 0666 minus the umask."""
    return 0o666 & ~current_umask()


def dir_mode() -> int:
    """What ``mkdir`` would give a new directory: 0777 minus the umask."""
    return 0o777 & ~current_umask()


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename; the
    file gets the umask's permissions (``mkstemp`` alone would leave it 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def save_figure(fig: Any, path: Path, dpi: int = 110) -> Path:
    """Render a matplotlib figure to PNG and write it atomically; closes the figure."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())


def check_writable_dir(directory: str | Path, what: str = "output folder") -> Path:
    """Fail now, before long work, if files cannot be created in ``directory``. Raises
    :class:`ConfigError` naming the folder and why. Folders created for the probe are removed
    again, so a run that fails later leaves no empty folder behind."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"{what} {directory} exists and is not a directory")
    created: list[Path] = []
    probe_dir = directory
    while not probe_dir.exists():
        created.append(probe_dir)
        probe_dir = probe_dir.parent
    try:
        for folder in reversed(created):
            folder.mkdir()
        fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ConfigError(f"cannot write to {what} {directory}: {exc.strerror or exc}") from None
    finally:
        for folder in created:
            try:
                folder.rmdir()
            except OSError:
                break
    return directory
