"""``bench --profile``: time per op kind with grouped convolutions apart from dense ones."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from typer.testing import CliRunner

from resnext_deploy.cli import app
from resnext_deploy.runtime.profiling import summarize_events
from resnext_deploy.runtime.providers import SessionConfig

runner = CliRunner()


def onnx_conv_groups(path: Path) -> dict[int, int]:
    groups: dict[int, int] = {}
    for node in onnx.load(str(path)).graph.node:
        if node.op_type == "Conv":
            g = next((a.i for a in node.attribute if a.name == "group"), 1)
            groups[g] = groups.get(g, 0) + 1
    return groups


def test_bench_profile_shows_grouped_convolutions_apart(tiny_export: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "bench",
            str(tiny_export),
            "--backend",
            "onnxruntime",
            "--batch-sizes",
            "1",
            "--warmup",
            "1",
            "--min-iters",
            "2",
            "--min-time",
            "0",
            "--no-overhead",
            "--threads",
            "1",
            "--out",
            str(tmp_path),
            "--name",
            "tiny",
            "--profile",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "group=8 3x3" in result.stdout
    data = json.loads((tmp_path / "tiny-profile.json").read_text())
    (prof,) = data["profiles"]
    kinds = {k["kind"]: k for k in prof["kinds"]}
    grouped = [k for k in kinds if "group=8 3x3" in k]
    dense = [k for k in kinds if "group=1" in k]
    assert grouped and dense
    # Every grouped convolution of the ONNX file is counted as grouped, and no dense one is.
    assert (
        sum(kinds[k]["nodes"] for k in grouped) == onnx_conv_groups(tiny_export / "model.onnx")[8]
    )
    assert sum(k["share"] for k in prof["kinds"]) == pytest.approx(1.0)
    assert 0 < prof["node_ms"] <= prof["run_ms"] * 1.05
    assert (tmp_path / "tiny-profile.md").read_text().count("group=8 3x3") >= 1


def _event(name: str, ts: int, dur: int, op: str = "Conv", cat: str = "Node") -> dict:
    return {
        "cat": cat,
        "name": name,
        "ts": ts,
        "dur": dur,
        "args": {"op_name": op, "provider": "CPUExecutionProvider"},
    }


def test_warm_up_runs_are_left_out_and_times_are_per_run() -> None:
    graph = {
        "a": ("QLinearConv", 32, (3, 3)),
        "b": ("QLinearConv", 1, (1, 1)),
        "c": ("Add", None, ()),
    }
    events = [
        _event("model_run", 0, 100, cat="Session"),
        _event("a_kernel_time", 1, 1000),  # warm-up: left out
        _event("model_run", 200, 100, cat="Session"),
        _event("a_kernel_time", 201, 3000),
        _event("b_kernel_time", 202, 1000),
        _event("model_run", 400, 100, cat="Session"),
        _event("a_kernel_time", 401, 5000),
        _event("c_kernel_time", 402, 2000, op="Add"),
    ]
    prof = summarize_events(events, graph, "m", SessionConfig(), 1, runs=2, warmup=1)
    kinds = {k.kind: k for k in prof.kinds}
    assert kinds["QLinearConv group=32 3x3"].ms == pytest.approx(4.0)  # (3 + 5) ms over 2 runs
    assert kinds["QLinearConv group=1 1x1"].ms == pytest.approx(0.5)
    assert kinds["Add"].ms == pytest.approx(1.0)
    assert prof.kinds[0].kind == "QLinearConv group=32 3x3"
    assert prof.conv_ms() == {"group=32 3x3": pytest.approx(4.0), "group=1 1x1": pytest.approx(0.5)}
