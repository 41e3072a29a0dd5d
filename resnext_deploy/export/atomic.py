"""Write a directory of artifacts so that it appears complete or not at all.

Everything is written into a staging directory beside the destination
(``.<name>.partial-<host>-<pid>-<random>``), which takes the destination's name in one rename at
the end. The destination is claimed only then, atomically: whatever appeared there in the
meantime is never replaced without ``overwrite``, and even with it, only a directory that
``replaceable`` recognises (an export: it has a ``manifest.json``) or an empty one is replaced.
Staging directories of earlier runs that crashed or were killed are removed when it is safe.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from resnext_deploy.artifact import MANIFEST_FILE
from resnext_deploy.errors import ConfigError
from resnext_deploy.fileio import dir_mode, file_mode
from resnext_deploy.interrupts import raise_if_interrupted

# A staging directory whose owner cannot be checked is stale after this long untouched.
STALE_AFTER_S = 24 * 3600
_STAGING = re.compile(r"^\.(?P<name>.+)\.(?:partial|old)-(?:(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-)?")


def is_export(directory: Path) -> bool:
    """What ``overwrite`` may replace by default: an export directory (it has a manifest)."""
    return (directory / MANIFEST_FILE).is_file()


@contextmanager
def atomic_directory(
    target: Path,
    *,
    overwrite: bool = False,
    replaceable: Callable[[Path], bool] = is_export,
    what: str = "export",
) -> Iterator[Path]:
    """Yield a staging directory beside ``target``; on success it takes ``target``'s place in one
    rename, on any failure (Ctrl-C and SIGTERM included) it is deleted and ``target`` is left as
    it was. The final tree gets the umask's permissions, as ``mkdir``/``open`` would give it.

    Raises :class:`ConfigError` before anything is written when ``target`` is the current
    directory or one of its parents, exists (without ``overwrite``), is not something
    ``replaceable`` accepts (``what`` names it in the message), or its folder is not writable;
    and at the end, when such a thing appeared at ``target`` while the work ran.
    """
    target = Path(target)
    check_destination(target, overwrite=overwrite, replaceable=replaceable, what=what)
    created = _make_parents(target.parent)
    remove_stale_staging(target.parent)
    staging = target.parent / f".{target.name}.partial-{_owner_tag()}-{secrets.token_hex(4)}"
    try:
        staging.mkdir(mode=0o700)
    except OSError as exc:
        _remove_empty(created)
        raise ConfigError(
            f"cannot write to output folder {target.parent}: {exc.strerror or exc}"
        ) from None
    committed = False
    try:
        yield staging
        raise_if_interrupted()  # a signal whose exception a library swallowed still stops us
        _apply_umask(staging)
        _commit(staging, target, overwrite=overwrite, replaceable=replaceable, what=what)
        committed = True
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
        if not committed:
            _remove_empty(created)


def check_destination(
    target: Path,
    *,
    overwrite: bool = False,
    replaceable: Callable[[Path], bool] = is_export,
    what: str = "export",
) -> None:
    """Raise :class:`ConfigError` if ``target`` cannot be (re)placed; see
    :func:`atomic_directory`. Call it before long work to fail early."""
    resolved = target.resolve()
    cwd = Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents or not resolved.name:
        raise ConfigError(
            f"refusing to write to {target}: it is the current directory or holds it; name a "
            "new folder for the output"
        )
    if not (target.exists() or target.is_symlink()):
        return
    if not overwrite:
        raise ConfigError(
            f"{target} already exists; allow replacing it (force) or choose another folder"
        )
    _check_replaceable(target, replaceable, what)


def _check_replaceable(target: Path, replaceable: Callable[[Path], bool], what: str) -> None:
    if target.is_symlink() or not target.is_dir():
        raise ConfigError(f"{target} exists and is not a directory; refusing to replace it")
    if any(target.iterdir()) and not replaceable(target):
        raise ConfigError(
            f"{target} is not a resnext-deploy {what} (it holds other files); refusing to "
            "replace it: choose another output folder or move it away first"
        )


def _commit(
    staging: Path, target: Path, *, overwrite: bool, replaceable: Callable[[Path], bool], what: str
) -> None:
    """Give ``staging`` the name ``target``, deciding about what is there only now."""
    try:
        # Claim the name: mkdir is atomic and fails if anything exists; renaming a directory
        # onto an empty directory then replaces it (POSIX rename).
        os.mkdir(target)
    except FileExistsError:
        if not overwrite:
            raise ConfigError(
                f"{target} appeared while the work ran; it was left untouched and nothing was "
                "written; allow replacing it (force) to write over it"
            ) from None
        _check_replaceable(target, replaceable, what)
        _swap(staging, target)
        return
    try:
        os.rename(staging, target)
    except OSError:
        _remove_empty([target])
        raise ConfigError(
            f"{target} was filled by another process while the work ran; it was left untouched "
            "and nothing was written"
        ) from None


def _swap(staging: Path, target: Path) -> None:
    """Replace the existing ``target`` by ``staging``; the old one is deleted only once the new
    one is in place, and restored if the second rename fails."""
    backup = target.parent / f".{target.name}.old-{_owner_tag()}-{secrets.token_hex(4)}"
    os.rename(target, backup)
    try:
        os.rename(staging, target)
    except BaseException:
        os.rename(backup, target)
        raise
    shutil.rmtree(backup, ignore_errors=True)


def remove_stale_staging(folder: Path, now: float | None = None) -> list[Path]:
    """Delete staging directories (``.*.partial-*``) that earlier runs left in ``folder`` when
    they crashed or were killed: those whose owner process (on this host) is gone, and any left
    untouched for :data:`STALE_AFTER_S`. A live export's staging directory is never touched.
    Returns what was removed."""
    now = time.time() if now is None else now
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return []
    for entry in entries:
        match = _STAGING.match(entry.name)
        if not match or ".partial-" not in entry.name or not entry.is_dir() or entry.is_symlink():
            continue
        try:
            age = now - entry.stat().st_mtime
        except OSError:
            continue
        pid = int(match["pid"]) if match["pid"] else None
        owner_gone = pid is not None and match["host"] == _host_tag() and not _alive(pid)
        if owner_gone or age > STALE_AFTER_S:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def _apply_umask(root: Path) -> None:
    """``mkdtemp``-style 0700 staging -> what the user's umask gives new files and folders, so
    that a serving process running as another user can read the artifacts."""
    dmode, fmode = dir_mode(), file_mode()
    for directory, _dirs, files in os.walk(root):
        os.chmod(directory, dmode)
        for name in files:
            path = os.path.join(directory, name)
            if not os.path.islink(path):
                os.chmod(path, fmode)


def _make_parents(folder: Path) -> list[Path]:
    """Create ``folder`` and missing ancestors; return the ones created, deepest first."""
    missing = []
    probe = folder
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _remove_empty(missing)
        raise ConfigError(f"cannot create output folder {folder}: {exc.strerror or exc}") from None
    return missing


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:
        try:
            folder.rmdir()  # only ever removes an empty directory
        except OSError:
            return


def _host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _owner_tag() -> str:
    return f"{_host_tag()}-{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True
