"""Which images a ``predict --ray`` run classifies: a folder tree, or a listing of paths."""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

from resnext_deploy.errors import DataError
from resnext_deploy.preprocess import list_images
from resnext_deploy.validate import read_bytes

LISTING_SUFFIXES = (".txt", ".csv", ".parquet")
MAX_LISTING_BYTES = 4 << 30


@dataclass(frozen=True)
class Source:
    """The inputs in a fixed order (absolute paths, each once), and what was dropped."""

    paths: tuple[str, ...]
    duplicates: int = 0

    @property
    def sha256(self) -> str:
        """What a resumed run must find again: the same inputs in the same order."""
        digest = hashlib.sha256()
        for path in self.paths:
            digest.update(path.encode("utf-8", "surrogateescape") + b"\0")
        return digest.hexdigest()


def read_source(source: Path, column: str = "path") -> Source:
    """The images under the folder ``source`` (recursively, sorted, as ``predict`` lists them),
    or the paths its listing names: a ``.txt`` file (one per line), the ``column`` of a ``.csv``
    or ``.parquet`` file. Relative paths in a listing are relative to the listing's folder.
    Raises :class:`DataError` for a source that is none of these, or names no image."""
    if not source.exists():
        raise DataError(f"{source}: no such folder or file")
    if source.is_dir():
        paths = [str(p.absolute()) for p in list_images([source])]
    else:
        suffix = source.suffix.lower()
        if suffix not in LISTING_SUFFIXES:
            raise DataError(
                f"{source} is neither a folder nor a listing of images "
                f"({', '.join(LISTING_SUFFIXES)}); for a few images, use predict without --ray"
            )
        base = source.absolute().parent
        paths = [str(base / name) for name in _listed(source, suffix, column)]
    unique = list(dict.fromkeys(paths))
    for path in unique:
        if not path.isprintable() or any("\udc80" <= c <= "\udcff" for c in path):
            raise DataError(
                f"{path!r} is not a printable UTF-8 path, which Ray Data and Parquet cannot "
                "carry; rename it or leave it out of the listing"
            )
    if not unique:
        raise DataError(f"no images found in {source}")
    return Source(tuple(unique), duplicates=len(paths) - len(unique))


def _listed(source: Path, suffix: str, column: str) -> list[str]:
    if suffix == ".parquet":
        return _parquet_column(source, column)
    text = read_bytes(source, "listing", MAX_LISTING_BYTES, DataError).decode(
        "utf-8", "surrogateescape"
    )
    if suffix == ".txt":
        return [line.strip("\r") for line in text.split("\n") if line.strip()]
    rows = csv.DictReader(io.StringIO(text, newline=""))
    if column not in (rows.fieldnames or []):
        raise DataError(
            f"{source} has no column {column!r} (it has {', '.join(rows.fieldnames or [])}); "
            "name the column of paths with --column"
        )
    return [row[column] for row in rows if row[column]]


def _parquet_column(source: Path, column: str) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(source)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{source} is not a readable Parquet file ({exc})") from None
    if column not in schema.names:
        raise DataError(
            f"{source} has no column {column!r} (it has {', '.join(schema.names)}); "
            "name the column of paths with --column"
        )
    if not pa.types.is_string(schema.field(column).type) and not pa.types.is_large_string(
        schema.field(column).type
    ):
        raise DataError(f"{source}: column {column!r} holds {schema.field(column).type}, not paths")
    values = pq.read_table(source, columns=[column]).column(column).to_pylist()
    return [v for v in values if v]
