"""Hostile and careless input to ``train`` and ``demo`` (issue 23, classes 5, 8 and 9).

A run folder holding the user's files is never written into, numbers that cannot train are
refused before any data is loaded, and ``demo`` checks every folder it will write before it
trains: one ``error:`` line, exit 1, nothing left behind.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_hostile import assert_one_error, invoke, workspace  # noqa: F401 - a fixture

QUICK = ["--epochs", "1", "--input-size", "8"]


def never_called(what: str):  # noqa: ANN201
    def fail(*_args: object, **_kwargs: object) -> None:
        raise AssertionError(f"{what} ran before the outputs were checked")

    return fail


# --- train: the run folder (class 5) ------------------------------------------------------------


@pytest.mark.parametrize("force", [[], ["--force"]], ids=["plain", "force"])
def test_train_never_writes_into_a_folder_of_the_users_files(
    workspace: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    force: list[str],
) -> None:
    import resnext_deploy.train as training

    plots = workspace / "plots"
    plots.mkdir()
    (plots / "curves.png").write_bytes(b"the user's own plot")
    monkeypatch.setattr(training, "load_dataset", never_called("loading the data"))
    result = invoke("train", "digits", "--out", plots, *QUICK, *force)
    assert_one_error(result, "is not a training run")
    assert [p.name for p in plots.iterdir()] == ["curves.png"]
    assert (plots / "curves.png").read_bytes() == b"the user's own plot"


# --- train: numbers (class 8) -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "fragment"),
    [
        (["--seed", "-1"], "seed"),
        (["--seed", str(2**70)], "seed"),
        (["--val-fraction", "0.999"], "fraction"),
        (["--val-fraction", "nan"], "fraction"),
    ],
)
def test_train_numbers_that_cannot_train_are_refused(
    workspace: Path,  # noqa: F811
    option: list[str],
    fragment: str,
) -> None:
    result = invoke("train", "digits", "--out", "run", *QUICK, *option)
    assert_one_error(result, fragment)
    assert not (workspace / "run").exists()


# --- demo: every output checked before training (class 9) ---------------------------------------


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        (["--export-dir", "photos"], "not a resnext-deploy export"),
        (["--export-dir", "notes.txt"], "not a directory"),
        (["--export-dir", "."], "current directory"),
        (["--export-dir", "run"], "export folder"),
        (["--export-dir", "run/held-out"], "export folder"),
        (["--export-dir", "exp", "--out", "exp/run"], "export folder"),
        (["--out", "notes.txt"], "not a directory"),
        (["--out", "."], "run folder"),
        (["--epochs", "0"], "epochs"),
    ],
)
def test_demo_refuses_its_outputs_before_it_trains(
    workspace: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    options: list[str],
    fragment: str,
) -> None:
    import resnext_deploy.train as training

    monkeypatch.setattr(training, "train", never_called("training"))
    args = {
        "--out": "run",
        "--export-dir": "exported",
        **dict(zip(options[::2], options[1::2], strict=True)),
    }
    result = invoke("demo", *[x for pair in args.items() for x in pair])
    assert_one_error(result, fragment)
    assert sorted(p.name for p in workspace.iterdir()) == ["notes.txt", "photos"]


@pytest.mark.parametrize(
    ("folder", "files"),
    [
        ("train", ["curves.png"]),  # the user's plot where the demo's training run goes
        ("train/cats", ["tabby.png"]),  # an ImageFolder: a class folder is no run's
        ("held-out", ["holiday.png"]),
        ("bench", ["my-results.md"]),
    ],
)
def test_demo_refuses_a_run_folder_holding_the_users_files(
    workspace: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    folder: str,
    files: list[str],
) -> None:
    import resnext_deploy.train as training

    monkeypatch.setattr(training, "train", never_called("training"))
    where = workspace / "mine" / folder
    where.mkdir(parents=True)
    for name in files:
        (where / name).write_bytes(b"the user's")
    before = sorted(str(p.relative_to(workspace)) for p in (workspace / "mine").rglob("*"))
    result = invoke("demo", "--out", "mine", "--export-dir", "exported")
    assert_one_error(result, str(Path("mine") / folder.split("/")[0]))
    after = sorted(str(p.relative_to(workspace)) for p in (workspace / "mine").rglob("*"))
    assert after == before and not (workspace / "exported").exists()
    assert all((where / name).read_bytes() == b"the user's" for name in files)


def test_demo_accepts_its_own_earlier_run(
    workspace: Path,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A rerun replaces the demo's own folders: the checks let an earlier run through, and the
    training step is reached (here it stops the demo)."""
    import resnext_deploy.train as training
    from resnext_deploy.errors import TrainingError

    def stop(*_args: object, **_kwargs: object) -> None:
        raise TrainingError("stopped here by the test")

    monkeypatch.setattr(training, "train", stop)
    run = workspace / "run"
    for folder in ("train", "held-out", "bench"):
        (run / folder).mkdir(parents=True)
    (run / "train" / "best.pth").write_bytes(b"an earlier demo's model")
    (run / "train" / "curves.png").write_bytes(b"its plot")
    (run / "held-out" / "000_label3.png").write_bytes(b"a digit")
    (run / "bench" / "demo-cpu.md").write_text("an earlier report")
    exported = workspace / "exported"
    exported.mkdir()
    (exported / "manifest.json").write_text("{}")
    result = invoke("demo", "--out", run, "--export-dir", exported)
    assert_one_error(result, "stopped here by the test")
