"""Which images a predict --ray run classifies: a folder tree as predict lists it, or a listing
(.txt, a .csv or .parquet column), each path once, in a fixed order."""

from __future__ import annotations

from pathlib import Path

import pytest

from resnext_deploy.batch.source import read_source
from resnext_deploy.errors import DataError
from resnext_deploy.preprocess import list_images

pa = pytest.importorskip("pyarrow", reason="predict --ray needs the [batch] extra")
pq = pytest.importorskip("pyarrow.parquet")


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    for name in ("b/2.png", "a/1.jpg", "c.JPG", "notes.txt"):
        (tmp_path / "photos" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "photos" / name).write_bytes(b"x")
    return tmp_path / "photos"


def test_a_folder_is_listed_as_predict_lists_it(photos: Path) -> None:
    source = read_source(photos)
    assert source.paths == tuple(str(p.absolute()) for p in list_images([photos]))
    assert [Path(p).name for p in source.paths] == ["1.jpg", "2.png", "c.JPG"]


def test_a_text_listing_is_relative_to_its_folder_and_each_path_counts_once(
    photos: Path,
) -> None:
    listing = photos / "list.txt"
    listing.write_text("a/1.jpg\n\n/abs/x.png\r\na/1.jpg\nb/2.png\n")
    source = read_source(listing)
    assert source.paths == (str(photos / "a/1.jpg"), "/abs/x.png", str(photos / "b/2.png"))
    assert source.duplicates == 1


def test_csv_and_parquet_listings_take_the_named_column(photos: Path) -> None:
    (photos / "list.csv").write_text("id,file\n1,a/1.jpg\n2,c.JPG\n")
    pq.write_table(pa.table({"file": ["c.JPG", None, "b/2.png"]}), photos / "list.parquet")
    assert read_source(photos / "list.csv", "file").paths == (
        str(photos / "a/1.jpg"),
        str(photos / "c.JPG"),
    )
    assert read_source(photos / "list.parquet", "file").paths == (
        str(photos / "c.JPG"),
        str(photos / "b/2.png"),
    )
    for listing in ("list.csv", "list.parquet"):
        with pytest.raises(DataError, match="has no column 'path'.*--column"):
            read_source(photos / listing)


def test_the_order_is_part_of_what_a_resume_checks(photos: Path) -> None:
    (photos / "one.txt").write_text("a/1.jpg\nb/2.png\n")
    (photos / "two.txt").write_text("b/2.png\na/1.jpg\n")
    assert read_source(photos / "one.txt").sha256 != read_source(photos / "two.txt").sha256
    assert read_source(photos / "one.txt").sha256 == read_source(photos / "one.txt").sha256


@pytest.mark.parametrize(
    ("name", "content", "fragment"),
    [
        ("missing", None, "no such folder or file"),
        ("one.png", b"x", "neither a folder nor a listing"),
        ("empty.txt", b"\n\n", "no images found"),
        ("bad.parquet", b"not parquet", "not a readable Parquet file"),
        ("tab.txt", b"a\tb.png\n", "not a printable UTF-8 path"),
    ],
)
def test_a_source_that_names_no_image_is_one_error(
    tmp_path: Path, name: str, content: bytes | None, fragment: str
) -> None:

    if content is not None:
        (tmp_path / name).write_bytes(content)
    with pytest.raises(DataError, match=fragment):
        read_source(tmp_path / name)
