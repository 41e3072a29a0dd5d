"""Triton's statistics extension: the counts one replica keeps, their sum over replicas, and
the endpoint that answers them (no Ray: the HTTP API with a real model and a stand-in batcher)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import numpy as np

from resnext_deploy.serve.config import ServeConfig
from resnext_deploy.serve.model import ServedModel
from resnext_deploy.serve.routes import HttpRequest, InferenceAPI
from resnext_deploy.serve.stats import ModelStatistics, RequestTiming

MS = 1_000_000


def _timing(arrived: int, called: int, started: int, ended: int, images: int) -> RequestTiming:
    timing = RequestTiming(arrived=arrived)
    timing.ran(called, started, ended, images)
    return timing


def test_a_request_is_split_into_triton_stages_and_counted_once() -> None:
    stats = ModelStatistics()
    t0 = time.monotonic_ns() - 100 * MS
    stats.request_done(_timing(t0, t0 + 2 * MS, t0 + 7 * MS, t0 + 17 * MS, images=3), ok=True)
    stats.request_done(RequestTiming(arrived=t0), ok=False)  # refused before the model
    stats.batch_ran(images=3, input_ns=1 * MS, infer_ns=10 * MS, output_ns=2 * MS)
    entry = stats.to_dict("m")
    inference = entry["inference_stats"]
    assert (entry["inference_count"], entry["execution_count"]) == (3, 1)
    assert inference["success"]["count"] == 1 and inference["success"]["ns"] >= 100 * MS
    assert inference["fail"]["count"] == 1
    assert inference["compute_input"] == {"count": 1, "ns": 2 * MS}
    assert inference["queue"] == {"count": 1, "ns": 5 * MS}
    assert inference["compute_infer"] == {"count": 1, "ns": 10 * MS}
    assert inference["compute_output"]["count"] == 1
    assert entry["batch_stats"] == [
        {
            "batch_size": 3,
            "compute_input": {"count": 1, "ns": 1 * MS},
            "compute_infer": {"count": 1, "ns": 10 * MS},
            "compute_output": {"count": 1, "ns": 2 * MS},
        }
    ]
    assert abs(entry["last_inference"] - time.time() * 1000) < 5000


def test_replica_counts_sum_stage_by_stage_and_batch_size_by_batch_size() -> None:
    a, b = ModelStatistics(), ModelStatistics()
    t0 = time.monotonic_ns()
    for stats, images in ((a, 1), (a, 4), (b, 4)):
        stats.request_done(_timing(t0, t0 + MS, t0 + 2 * MS, t0 + 5 * MS, images), ok=True)
        stats.batch_ran(images, MS, 3 * MS, MS)
    b.request_done(RequestTiming(arrived=t0), ok=False)
    total = a + ModelStatistics.from_dict(json.loads(json.dumps(b.to_dict("m"))))
    entry = total.to_dict("m")
    assert entry["inference_count"] == 9 and entry["execution_count"] == 3
    assert entry["inference_stats"]["success"]["count"] == 3
    assert entry["inference_stats"]["fail"]["count"] == 1
    assert entry["inference_stats"]["queue"] == {"count": 3, "ns": 3 * MS}
    sizes = {s["batch_size"]: s["compute_infer"]["count"] for s in entry["batch_stats"]}
    assert sizes == {1: 1, 4: 2}
    assert a.to_dict("m")["inference_count"] == 5  # the sum is new; the parts stay


def test_the_stats_endpoint_answers_triton_s_form_for_the_model_and_for_all(
    tiny_export: Path,
) -> None:
    model = ServedModel(ServeConfig(export_dir=tiny_export, threads=1))
    counts = ModelStatistics()
    counts.batch_ran(2, 1, 2, 3)

    async def infer(batch: np.ndarray) -> dict[str, np.ndarray]:
        return model.run(batch)

    async def statistics() -> ModelStatistics:
        return counts

    api = InferenceAPI(model, infer, 10**6, statistics)
    for path in (f"/v2/models/{model.name}/stats", f"/v2/models/{model.name}/versions/1/stats",
                 "/v2/models/stats"):  # fmt: skip
        answer = asyncio.run(api.handle(HttpRequest("GET", path)))
        assert answer.status == 200, answer.body
        (entry,) = json.loads(answer.body)["model_stats"]
        assert entry["name"] == model.name and entry["version"] == "1"
        assert entry["execution_count"] == 1 and entry["batch_stats"][0]["batch_size"] == 2
    assert asyncio.run(api.handle(HttpRequest("GET", "/v2/models/other/stats"))).status == 404
    assert asyncio.run(api.handle(HttpRequest("POST", "/v2/models/stats"))).status == 405
    metadata = json.loads(asyncio.run(api.handle(HttpRequest("GET", "/v2"))).body)
    assert "statistics" in metadata["extensions"]
    model.close()
