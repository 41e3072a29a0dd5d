"""The output folder of predict --ray, without Ray: a shard file only once complete, a row
counted once however often it arrives, a resume that redoes only what is missing, and no
folder of anything else taken over."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from resnext_deploy.batch.ledger import (
    PARTS,
    RUN_FILE,
    SCHEMA,
    Ledger,
    RunIdentity,
    read_results,
)
from resnext_deploy.errors import ConfigError, DataError

pa = pytest.importorskip("pyarrow", reason="predict --ray needs the [batch] extra")
pq = pytest.importorskip("pyarrow.parquet")

INPUTS = 10
SHARD = 4  # shards of 4, 4 and 2


def identity(**changes: object) -> RunIdentity:
    fields: dict[str, object] = {
        "model_sha256": "a" * 64,
        "source_sha256": "b" * 64,
        "inputs": INPUTS,
        "top_k": 3,
        "shard_size": SHARD,
        "model": "m",
        "source": "s",
    }
    return RunIdentity(**(fields | changes))  # type: ignore[arg-type]


def rows(indices: list[int], error: str | None = None) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                "index": i,
                "path": f"/img/{i}.png",
                "labels": None if error else ["x", "y", "z"],
                "class_indices": None if error else [0, 1, 2],
                "probabilities": None if error else [0.5, 0.3, 0.2],
                "error": error,
                "model_sha256": "a" * 64,
            }
            for i in indices
        ],
        schema=SCHEMA(),
    )


def started(out: Path, run: RunIdentity) -> Ledger:
    ledger = Ledger.open(out, run)
    ledger.start()
    return ledger


def parts(out: Path) -> list[str]:
    return sorted(p.name for p in (out / PARTS).iterdir())


def test_a_shard_is_written_once_complete_and_a_repeated_row_counts_once(tmp_path: Path) -> None:
    ledger = started(tmp_path / "out", identity())
    assert ledger.add(rows([0, 1, 2])) == 3
    assert parts(tmp_path / "out") == []  # 3 of 4: nothing written yet
    assert ledger.add(rows([2, 1])) == 0  # a retried task's rows again
    assert ledger.add(rows([3, 8, 9])) == 3
    assert parts(tmp_path / "out") == ["part-000000.parquet", "part-000002.parquet"]
    assert ledger.add(rows([0])) == 0  # a row of a written shard is not written twice
    with pytest.raises(DataError, match="1 of 3 shards got no complete result"):
        ledger.finish()
    ledger.add(rows([4, 5]))
    ledger.add(rows([6, 7], error="/img/6.png: not a readable image"))
    summary = ledger.finish()
    table = read_results(tmp_path / "out")
    assert table.column("index").to_pylist() == list(range(INPUTS))
    assert (summary.images, summary.classified, summary.errors) == (10, 8, 2)
    saved = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert saved["errors"] == 2 and saved["images"] == 10


def test_a_resume_redoes_only_missing_and_damaged_shards(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = started(out, identity())
    first.add(rows(list(range(INPUTS))))
    assert parts(out) == [f"part-00000{i}.parquet" for i in range(3)]
    (out / PARTS / "part-000001.parquet").write_bytes(b"PAR1 cut short")  # a damaged file
    again = Ledger.open(out, identity())
    assert again.todo() == [4, 5, 6, 7]
    assert again.resumed == 2 and again.resumed_inputs == 6
    again.add(rows([4, 5, 6, 7]))
    summary = again.finish()
    assert summary.images_this_run == 4 and summary.shards_resumed == 2
    assert read_results(out).column("index").to_pylist() == list(range(INPUTS))


def test_a_shard_file_with_the_wrong_row_count_is_redone(tmp_path: Path) -> None:
    out = tmp_path / "out"
    started(out, identity()).add(rows(list(range(INPUTS))))
    pq.write_table(rows([8]), out / PARTS / "part-000002.parquet")  # 1 row where 2 belong
    assert Ledger.open(out, identity()).todo() == [8, 9]


@pytest.mark.parametrize(
    "change", [{"model_sha256": "c" * 64}, {"source_sha256": "d" * 64}, {"top_k": 5}]
)
def test_a_folder_of_another_run_is_refused_untouched(tmp_path: Path, change: dict) -> None:
    out = tmp_path / "out"
    started(out, identity()).add(rows([0, 1, 2, 3]))
    before = (out / RUN_FILE).read_bytes()
    with pytest.raises(ConfigError, match="holds a run of another model, other inputs"):
        Ledger.open(out, identity(**change))
    assert (out / RUN_FILE).read_bytes() == before
    assert parts(out) == ["part-000000.parquet"]


def test_a_folder_of_the_users_files_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "photos"
    out.mkdir()
    (out / "cat.png").write_bytes(b"mine")
    with pytest.raises(ConfigError, match="not a predict --ray run"):
        Ledger.open(out, identity())
    assert [p.name for p in out.iterdir()] == ["cat.png"]


def test_an_empty_folder_is_used(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    started(tmp_path / "out", identity())
    assert (tmp_path / "out" / RUN_FILE).is_file()


def test_opening_writes_nothing_until_the_run_starts(tmp_path: Path) -> None:
    """The checks before Ray starts leave no folder behind when the run cannot start."""
    ledger = Ledger.open(tmp_path / "out", identity())
    assert not (tmp_path / "out").exists()
    assert ledger.todo() == list(range(INPUTS))


@pytest.mark.parametrize(
    ("cpus", "actors", "per_actor", "expected"),
    [(2, 2, 1.0, 1), (4, 2, 1.0, 2), (16, 4, 1.0, 4), (8, 8, 2.0, 3), (1.5, 3, 0.5, 1)],
)
def test_the_pool_starts_with_the_actors_that_leave_a_cpu_to_decode_with(
    cpus: float, actors: int, per_actor: float, expected: int
) -> None:
    """Two actors of 1 CPU on a 2-CPU machine would take both CPUs and wait forever for a
    decode task: the pool starts with one there."""
    from resnext_deploy.batch.config import BatchConfig
    from resnext_deploy.batch.run import _initial_actors

    config = BatchConfig(
        model=Path("m"), source=Path("s"), out_dir=Path("o"), actors=actors,
        cpus_per_actor=per_actor,
    )  # fmt: skip
    assert _initial_actors({"CPU": cpus}, config) == expected
