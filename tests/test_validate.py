"""The validation layer every command uses for names, numbers, files and JSON (issue 23)."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from resnext_deploy.errors import BenchmarkError, ConfigError
from resnext_deploy.validate import (
    MAX_JSON_DEPTH,
    check_float,
    check_int,
    check_name,
    load_json,
    parse_json,
    read_bytes,
    regular_file,
)


@pytest.mark.parametrize("name", ["report", "bench-2026.12", "a b", "café"])
def test_a_plain_name_is_kept(name: str) -> None:
    assert check_name(name, "--name") == name


@pytest.mark.parametrize(
    "name",
    ["", ".", "..", "../escape", "/tmp/abs", "a/b", "a\\b", "x\x00y", "x\ny", " x", "n" * 201],
)
def test_a_name_that_is_a_path_or_not_printable_is_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="--name"):
        check_name(name, "--name")


def test_the_error_class_is_the_callers() -> None:
    with pytest.raises(BenchmarkError):
        check_name("../x", "report name", BenchmarkError)


@pytest.mark.parametrize("value", [-1, 2**70, True, 1.5, "3", None])
def test_a_count_out_of_range_or_not_an_int_is_refused(value: object) -> None:
    with pytest.raises(ConfigError, match="seed"):
        check_int(value, "seed", 0, 2**32 - 1)


def test_a_count_in_range_is_kept() -> None:
    assert check_int(0, "seed", 0, 2**32 - 1) == 0
    assert check_int(2**32 - 1, "seed", 0, 2**32 - 1) == 2**32 - 1


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), 0.0, 1.5, "0.1"])
def test_a_fraction_that_is_not_finite_or_out_of_range_is_refused(value: object) -> None:
    with pytest.raises(ConfigError, match="fraction"):
        check_float(value, "fraction", 0.0, 0.9, low_open=True)


def test_a_finite_number_in_range_is_kept() -> None:
    assert check_float(0.5, "fraction", 0.0, 0.9, low_open=True) == 0.5
    assert check_float(3, "x", 0, 5) == 3.0


def test_a_fifo_is_not_a_file_and_reading_it_does_not_block(tmp_path: Path) -> None:
    fifo = tmp_path / "report.json"
    os.mkfifo(fifo)
    errors: list[Exception] = []

    def read() -> None:
        try:
            read_bytes(fifo, "bench report", 1000)
        except ConfigError as exc:
            errors.append(exc)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    thread.join(timeout=5)
    assert not thread.is_alive(), "reading a FIFO blocked"
    assert errors and "not a regular file" in str(errors[0])


@pytest.mark.parametrize("path", ["/dev/zero", "/dev/null"])
def test_a_device_is_not_a_file(path: str) -> None:
    with pytest.raises(ConfigError, match="not a regular file"):
        regular_file(path, "bench report")


def test_a_folder_and_a_missing_file_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a folder"):
        regular_file(tmp_path, "manifest")
    with pytest.raises(ConfigError, match="no such file"):
        regular_file(tmp_path / "nope.json", "manifest")


def test_a_file_over_its_size_limit_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.json"
    big.write_bytes(b" " * 101)
    with pytest.raises(ConfigError, match="over"):
        read_bytes(big, "report", 100)
    assert read_bytes(big, "report", 101) == b" " * 101


@pytest.mark.parametrize(
    "text",
    [
        "[" * 10_000 + "]" * 10_000,
        '{"a": ' * 100 + "1" + "}" * 100,
        "1" * 5000,
        '{"p50": ' + "9" * 41 + "}",
        "NaN",
        '{"p50": -Infinity}',
        "{not json",
        b"\xff\xfe",
    ],
)
def test_json_that_would_exhaust_or_mislead_the_parser_is_one_error(text: str | bytes) -> None:
    with pytest.raises(ConfigError, match="report"):
        parse_json(text, "report")


def test_json_as_our_tools_write_it_is_read() -> None:
    deep = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    assert parse_json(deep, "x") is not None
    data = {"a": [1, 2.5, None, True], "s": "brackets [[[ { in a string", "n": -(10**39)}
    assert parse_json(json.dumps(data), "x") == data


def test_load_json_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    path.write_text("[" * 1000)
    with pytest.raises(ConfigError, match=str(path)):
        load_json(path, "manifest")
