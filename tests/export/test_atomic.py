"""The staging directory behind every export and Triton repository: it takes the destination's
name at the end, atomically, and never destroys what is not ours."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from resnext_deploy.errors import ConfigError
from resnext_deploy.export.atomic import STALE_AFTER_S, atomic_directory, remove_stale_staging
from resnext_deploy.interrupts import Interrupted, handle_signals


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".partial-" in p.name or ".old-" in p.name)


def an_export(folder: Path, marker: str = "old") -> Path:
    folder.mkdir()
    (folder / "manifest.json").write_text("{}")
    (folder / "model.onnx").write_text(marker)
    return folder


def test_a_directory_that_appears_during_the_work_is_not_replaced(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with pytest.raises(ConfigError, match="appeared while the work ran"):
        with atomic_directory(target) as stage:
            (stage / "model.onnx").write_text("new")
            target.mkdir()  # another process, or the user, creates it meanwhile
            (target / "mine.txt").write_text("precious")
    assert (target / "mine.txt").read_text() == "precious"
    assert sorted(p.name for p in target.iterdir()) == ["mine.txt"]
    assert leftovers(tmp_path) == []


def test_two_writers_to_one_destination_one_wins_the_other_fails(tmp_path: Path) -> None:
    target = tmp_path / "out"
    first = atomic_directory(target)
    second = atomic_directory(target)
    stage_a, stage_b = first.__enter__(), second.__enter__()
    (stage_a / "model.onnx").write_text("a")
    (stage_b / "model.onnx").write_text("b")
    first.__exit__(None, None, None)
    with pytest.raises(ConfigError, match="appeared"):
        second.__exit__(None, None, None)
    assert (target / "model.onnx").read_text() == "a"
    assert leftovers(tmp_path) == []


def test_overwrite_replaces_an_export(tmp_path: Path) -> None:
    target = an_export(tmp_path / "out")
    with atomic_directory(target, overwrite=True) as stage:
        (stage / "manifest.json").write_text("{}")
        (stage / "model.onnx").write_text("new")
    assert (target / "model.onnx").read_text() == "new"
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("appears_late", [False, True])
def test_overwrite_never_replaces_a_folder_that_is_not_an_export(
    tmp_path: Path, appears_late: bool
) -> None:
    target = tmp_path / "photos"
    if not appears_late:
        target.mkdir()
        (target / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(ConfigError, match="not a resnext-deploy export"):
        with atomic_directory(target, overwrite=True) as stage:
            (stage / "model.onnx").write_text("new")
            if appears_late:
                target.mkdir()
                (target / "holiday.jpg").write_bytes(b"precious")
    assert (target / "holiday.jpg").read_bytes() == b"precious"
    assert leftovers(tmp_path) == []


def test_overwrite_refuses_a_file(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.write_text("a file")
    with pytest.raises(ConfigError, match="not a directory"):
        with atomic_directory(target, overwrite=True):
            pass
    assert target.read_text() == "a file"


@pytest.mark.parametrize("where", [".", "..", "cwd-absolute", "sub/.."])
def test_the_current_directory_and_its_parents_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    work = an_export(tmp_path / "work")
    (work / "sub").mkdir()
    monkeypatch.chdir(work)
    target = Path(str(work) if where == "cwd-absolute" else where)
    with pytest.raises(ConfigError, match="current directory"):
        with atomic_directory(target, overwrite=True):
            pass
    assert (work / "model.onnx").read_text() == "old"
    assert leftovers(work) == [] and leftovers(tmp_path) == []


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_the_final_tree_gets_the_umask_permissions(tmp_path: Path, umask: int) -> None:
    target = tmp_path / "out"
    previous = os.umask(umask)
    try:
        with atomic_directory(target) as stage:
            (stage / "sub").mkdir()
            (stage / "sub" / "model.onnx").write_text("x")
            os.chmod(stage / "sub" / "model.onnx", 0o600)  # as mkstemp leaves a file
    finally:
        os.umask(previous)
    modes = {p: stat.S_IMODE(p.stat().st_mode) for p in (target, target / "sub")}
    assert set(modes.values()) == {0o777 & ~umask}
    assert stat.S_IMODE((target / "sub" / "model.onnx").stat().st_mode) == 0o666 & ~umask


def test_an_unwritable_folder_fails_before_the_work(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    ran = False
    with pytest.raises(ConfigError, match="cannot create output folder"):
        with atomic_directory(blocker / "a" / "out"):
            ran = True
    assert not ran and blocker.read_text() == "x"


def test_parents_created_for_a_failed_write_are_removed(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        with atomic_directory(tmp_path / "a" / "b" / "out") as stage:
            (stage / "x").write_text("x")
            raise RuntimeError("export failed")
    assert list(tmp_path.iterdir()) == []


def test_sigterm_inside_the_block_cleans_the_staging_directory(tmp_path: Path) -> None:
    target = an_export(tmp_path / "out")
    with pytest.raises(Interrupted) as caught, handle_signals():
        with atomic_directory(target, overwrite=True) as stage:
            (stage / "half.onnx").write_text("partial")
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises before this ends
    assert caught.value.exit_code == 143
    assert leftovers(tmp_path) == [] and (target / "model.onnx").read_text() == "old"


def test_a_swallowed_interrupt_still_stops_the_commit(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with pytest.raises(Interrupted), handle_signals():
        with atomic_directory(target) as stage:
            (stage / "model.onnx").write_text("x")
            try:  # a library that catches everything, KeyboardInterrupt included
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(5)
            except BaseException:  # noqa: BLE001
                pass
    assert not target.exists() and leftovers(tmp_path) == []


def test_stale_staging_of_a_dead_process_is_removed_a_live_ones_is_kept(tmp_path: Path) -> None:
    from resnext_deploy.export.atomic import _owner_tag

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], **_text())
    dead_pid = int(dead.stdout)
    host = _owner_tag().split("-")[0]
    crashed = tmp_path / f".out.partial-{host}-{dead_pid}-abcd1234"
    live = tmp_path / f".other.partial-{host}-{os.getpid()}-abcd1234"
    other_host = tmp_path / f".out.partial-00000000-{dead_pid}-abcd1234"
    legacy_old = tmp_path / ".out.partial-k2j4h5g6"
    legacy_new = tmp_path / ".out.partial-a1b2c3d4"
    user = tmp_path / "partial-results"
    for d in (crashed, live, other_host, legacy_old, legacy_new, user):
        d.mkdir()
        (d / "x").write_text("x")
    day_ago = time.time() - STALE_AFTER_S - 60
    os.utime(legacy_old, (day_ago, day_ago))
    removed = remove_stale_staging(tmp_path)
    assert sorted(p.name for p in removed) == sorted([crashed.name, legacy_old.name])
    assert live.is_dir() and other_host.is_dir() and legacy_new.is_dir() and user.is_dir()


def test_a_new_export_cleans_what_a_killed_one_left(tmp_path: Path) -> None:
    script = (
        "import time, pathlib\n"
        "from resnext_deploy.export.atomic import atomic_directory\n"
        f"with atomic_directory(pathlib.Path({str(tmp_path / 'out')!r})) as s:\n"
        "    (s / 'half').write_text('x'); print('staged', flush=True); time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "staged"
    proc.kill()  # SIGKILL: no cleanup can run
    proc.wait()
    assert len(leftovers(tmp_path)) == 1
    with atomic_directory(tmp_path / "out") as stage:
        (stage / "model.onnx").write_text("x")
    assert leftovers(tmp_path) == []


def _text() -> dict:
    return {"capture_output": True, "text": True, "check": True}
