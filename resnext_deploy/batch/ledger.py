"""The output folder of a ``predict --ray`` run: what is done, and nothing twice.

The inputs are cut into shards of ``shard_size`` in their fixed order; a shard's results are
one Parquet file, ``parts/part-NNNNNN.parquet``, written atomically once every one of its inputs
has a row (a row arriving twice, from a retried task, counts once). So a shard file is complete
or absent: an interrupted run restarted with the same ``--out`` redoes only the shards without a
file, and the finished folder holds each input exactly once. ``run.json`` says which model and
inputs the folder is for; a run of another model, other inputs or another ``top_k`` is refused.
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from resnext_deploy.errors import ConfigError, DataError
from resnext_deploy.fileio import atomic_write_bytes, atomic_write_text, check_writable_dir
from resnext_deploy.validate import load_json

RUN_FILE = "run.json"
SUMMARY_FILE = "summary.json"
PARTS = "parts"
FORMAT = 1


@dataclass(frozen=True, kw_only=True)
class RunIdentity:
    """What makes two runs the same run (resumable into one folder)."""

    model_sha256: str
    source_sha256: str
    inputs: int
    top_k: int
    shard_size: int
    model: str
    source: str

    def same_run(self, other: dict[str, Any]) -> bool:
        keys = ("model_sha256", "source_sha256", "inputs", "top_k", "shard_size")
        return all(other.get(k) == getattr(self, k) for k in keys)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT} | asdict(self)


@dataclass(frozen=True, kw_only=True)
class BatchSummary:
    """What a finished run holds (counted from its files) and how fast this run went."""

    out_dir: str
    images: int
    classified: int
    errors: int
    shards: int
    shards_resumed: int
    images_this_run: int
    seconds: float
    model_sha256: str

    @property
    def images_per_s(self) -> float:
        return self.images_this_run / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"images_per_s": self.images_per_s}


@dataclass
class Ledger:
    """The shards of one run in ``out_dir``: which are written, and the rows of the others."""

    out_dir: Path
    identity: RunIdentity
    pending: dict[int, dict[int, dict[str, Any]]] = field(default_factory=dict)
    written: set[int] = field(default_factory=set)
    resumed: int = 0
    resumed_inputs: int = 0
    started: float = field(default_factory=time.perf_counter)

    @classmethod
    def open(cls, out_dir: Path, identity: RunIdentity) -> Ledger:
        """The ledger of ``out_dir``, nothing written yet (:meth:`start` does): a new folder
        (or an empty one) starts a run, a folder of the same run resumes it. Raises
        :class:`ConfigError` for a folder holding anything else (nothing of the user's is ever
        overwritten) or one that cannot be written."""
        _check_folder(out_dir, identity)
        check_writable_dir(out_dir, "--out folder")
        ledger = cls(out_dir, identity)
        ledger.written = {s for s in range(ledger.shards) if ledger._complete(s)}
        ledger.resumed = len(ledger.written)
        ledger.resumed_inputs = sum(ledger.expected(s) for s in ledger.written)
        return ledger

    def start(self) -> None:
        """Create the folder and its ``run.json``, as the first results are about to come."""
        (self.out_dir / PARTS).mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.identity.to_dict(), indent=2) + "\n"
        atomic_write_text(self.out_dir / RUN_FILE, text)

    @property
    def shards(self) -> int:
        return -(-self.identity.inputs // self.identity.shard_size)

    def expected(self, shard: int) -> int:
        size = self.identity.shard_size
        return min(size, self.identity.inputs - shard * size)

    def todo(self) -> list[int]:
        """The indices of the inputs whose shard has no file yet."""
        size = self.identity.shard_size
        return [
            i
            for s in range(self.shards)
            if s not in self.written
            for i in range(s * size, s * size + self.expected(s))
        ]

    def add(self, table: Any) -> int:
        """Take a table of result rows; write every shard it completes. Returns the number of
        rows new to this ledger."""
        new = 0
        for row in table.to_pylist():
            shard = row["index"] // self.identity.shard_size
            if shard in self.written:
                continue
            rows = self.pending.setdefault(shard, {})
            new += row["index"] not in rows
            rows[row["index"]] = row
            if len(rows) == self.expected(shard):
                self._write(shard, rows)
        return new

    def _write(self, shard: int, rows: dict[int, dict[str, Any]]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist([rows[i] for i in sorted(rows)], schema=SCHEMA())
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        atomic_write_bytes(self._part(shard), buffer.getvalue())
        self.written.add(shard)
        del self.pending[shard]

    def _part(self, shard: int) -> Path:
        return self.out_dir / PARTS / f"part-{shard:06d}.parquet"

    def _complete(self, shard: int) -> bool:
        """A shard's file is there and holds its rows (a file of another shape is redone)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = self._part(shard)
        if not path.is_file():
            return False
        try:
            return bool(pq.read_metadata(path).num_rows == self.expected(shard))
        except (OSError, pa.ArrowException):
            return False

    def finish(self) -> BatchSummary:
        """Check that every input has exactly one row, write ``summary.json``, return it.
        Raises :class:`DataError` if a shard is missing (the run did not get every row)."""
        missing = [s for s in range(self.shards) if s not in self.written]
        if missing:
            raise DataError(
                f"{len(missing)} of {self.shards} shards got no complete result; run the same "
                "command again to finish them"
            )
        table = read_results(self.out_dir)
        indices = table.column("index").to_pylist()
        if indices != list(range(self.identity.inputs)):
            raise DataError(
                f"{self.out_dir} holds {len(indices)} rows that are not each of the "
                f"{self.identity.inputs} inputs once; choose a new --out folder"
            )
        classified = table.column("error").null_count
        summary = BatchSummary(
            out_dir=str(self.out_dir),
            images=table.num_rows,
            classified=classified,
            errors=table.num_rows - classified,
            shards=self.shards,
            shards_resumed=self.resumed,
            images_this_run=self.identity.inputs - self.resumed_inputs,
            seconds=time.perf_counter() - self.started,
            model_sha256=self.identity.model_sha256,
        )
        atomic_write_text(
            self.out_dir / SUMMARY_FILE, json.dumps(summary.to_dict(), indent=2) + "\n"
        )
        return summary


def SCHEMA() -> Any:  # noqa: N802 - a constant that needs pyarrow, imported late
    import pyarrow as pa

    return pa.schema(
        [
            ("index", pa.int64()),
            ("path", pa.string()),
            ("labels", pa.list_(pa.string())),
            ("class_indices", pa.list_(pa.int32())),
            ("probabilities", pa.list_(pa.float64())),
            ("error", pa.string()),
            ("model_sha256", pa.string()),
        ]
    )


def read_results(out_dir: str | Path) -> Any:
    """Every row of a run's ``parts/`` as one pyarrow table, in input order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = sorted((Path(out_dir) / PARTS).glob("part-*.parquet"))
    if not parts:
        return SCHEMA().empty_table()
    return pa.concat_tables([pq.read_table(p, schema=SCHEMA()) for p in parts])


def _check_folder(out_dir: Path, identity: RunIdentity) -> None:
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} exists and is not a folder")
    if not any(out_dir.iterdir()):
        return
    if not (out_dir / RUN_FILE).is_file():
        raise ConfigError(
            f"--out {out_dir} holds files that are not a predict --ray run; "
            "choose an empty or new folder"
        )
    earlier = load_json(out_dir / RUN_FILE, "run file", ConfigError)
    if not isinstance(earlier, dict) or not identity.same_run(earlier):
        raise ConfigError(
            f"--out {out_dir} holds a run of another model, other inputs or another --top-k; "
            "choose a new folder (a run resumes only with the same model, inputs and --top-k)"
        )
