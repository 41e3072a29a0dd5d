"""``--engine``: predict, verify, the served model and the Ray Data actor run an export on OpenVINO
as they run it on onnxruntime; ``--engine auto`` runs what the manifest records, never a guess."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from resnext_deploy.artifact import Variant, open_artifact, record_recommendation
from resnext_deploy.errors import ArtifactError, ConfigError
from resnext_deploy.machine.cpu import cpu_info
from resnext_deploy.predict import Classifier, model_input
from resnext_deploy.recommendation import Engine, Pick, Recommendation
from resnext_deploy.runtime.openvino import OpenVinoRunner
from tests.photos import colour_photos, write_photos
from tests.test_cli import assert_clean_failure, invoke

pytest.importorskip("openvino")


def _predict_json(*args: object) -> dict:
    result = invoke("predict", *args, "--format", "json", "--top-k", "3")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _rows(data: dict) -> dict[str, list[tuple[int, float]]]:
    return {
        p["file"]: [(t["index"], t["probability"]) for t in p["top"]] for p in data["predictions"]
    }


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    write_photos(folder, ".png")
    return folder


@pytest.mark.parametrize("variant", [Variant.FP32, Variant.PREPROCESS])
def test_predict_on_openvino_gives_onnxruntime_top_k_on_colour_photos(
    tiny_every_variant: Path, photos: Path, variant: Variant, monkeypatch: pytest.MonkeyPatch
):
    model = tiny_every_variant / variant.file
    onnxruntime = _rows(_predict_json(model, photos))
    calls: list[int] = []  # proof that OpenVINO, not onnxruntime, answered
    real = OpenVinoRunner.run_outputs

    def counted(self: OpenVinoRunner, batch: np.ndarray) -> list[np.ndarray]:
        calls.append(len(batch))
        return real(self, batch)

    monkeypatch.setattr(OpenVinoRunner, "run_outputs", counted)
    data = _predict_json(model, photos, "--engine", "openvino")
    assert data["engine"] == "openvino" and sum(calls) == len(colour_photos())
    openvino = _rows(data)
    assert openvino.keys() == onnxruntime.keys() and len(openvino) == len(colour_photos())
    for name, want in onnxruntime.items():
        got = openvino[name]
        assert [i for i, _ in got] == [i for i, _ in want], name
        assert np.allclose([p for _, p in got], [p for _, p in want], rtol=0, atol=1e-5), name


def test_int8_on_openvino_keeps_the_direction_of_fp32(tiny_every_variant: Path):
    """int8 is judged at export; here only that OpenVINO runs the QDQ file as the same function
    (centred-logit cosine with plain onnxruntime's fp32 on the colour photos)."""
    import onnxruntime as ort

    spec = open_artifact(tiny_every_variant).spec
    batch = model_input(list(colour_photos().values()), spec, False)
    session = ort.InferenceSession(str(tiny_every_variant / "model.onnx"))
    (reference,) = session.run(None, {"input": batch})
    got = OpenVinoRunner(tiny_every_variant / Variant.INT8.file).infer(batch)
    a, b = reference - reference.mean(1, keepdims=True), got - got.mean(1, keepdims=True)
    assert (a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()) > 0.9


def _recorded(export: Path, tmp_path: Path, picks: dict[int, Pick], cpu: str | None = None) -> Path:
    copy = tmp_path / "export"
    shutil.copytree(export, copy)
    record = Recommendation(picks, cpu or cpu_info().label, 2, "2026-12-06T00:00:00+00:00", "test")
    record_recommendation(open_artifact(copy), record)
    return copy


PICKS = {
    1: Pick(Engine.ONNXRUNTIME, "fp32", 2.0, 1.0),
    8: Pick(Engine.OPENVINO, "int8", 1.0, 1.9),
}


def test_auto_runs_the_recorded_engine_and_variant_for_the_batch_size(
    tiny_every_variant: Path, photos: Path, tmp_path: Path
):
    export = _recorded(tiny_every_variant, tmp_path, PICKS)
    files = sorted(photos.iterdir())
    # batch 16 -> the pick measured at 8: OpenVINO on the int8 file
    result = invoke("predict", export, photos, "--engine", "auto", "--batch-size", "16",
                    "--format", "json", "--top-k", "7")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "openvino runs the int8 variant, measured fastest at batch 8" in result.stderr
    got = {p["file"]: {t["index"]: t["probability"] for t in p["top"]} for p in
           json.loads(result.stdout)["predictions"]}  # fmt: skip
    images = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    with Classifier(export / Variant.INT8.file, engine=Engine.OPENVINO) as want_openvino:
        want = want_openvino.classify(images, [str(f) for f in files], 7)
    with Classifier(export / Variant.INT8.file) as onnxruntime_int8:
        other = onnxruntime_int8.classify(images, [str(f) for f in files], 7)
    for w in want:
        assert np.allclose([got[w.file][i] for i in w.indices], w.probabilities, atol=1e-6)
    # the two engines differ on int8 (requantisation rounding): the test can tell them apart
    assert any(
        not np.allclose([got[o.file][i] for i in o.indices], o.probabilities, atol=1e-6)
        for o in other
    )
    # batch 2 -> the pick measured at 1: onnxruntime fp32
    result = invoke("predict", export, photos, "--engine", "auto", "--batch-size", "2")
    assert result.exit_code == 0 and "onnxruntime runs the fp32 variant" in result.stderr


def test_auto_warns_when_the_record_was_measured_on_another_cpu(
    tiny_every_variant: Path, photos: Path, tmp_path: Path
):
    export = _recorded(tiny_every_variant, tmp_path, PICKS, cpu="Some Other CPU 9000")
    result = invoke("predict", export, photos, "--engine", "auto")
    assert result.exit_code == 0, result.output
    assert "measured on Some Other CPU 9000" in result.stderr and "warning" in result.stderr
    # the same model name with other instruction sets is another machine too
    same_name = f"{cpu_info().model} (SSE2 only)"
    export = _recorded(tiny_every_variant, tmp_path / "b", PICKS, cpu=same_name)
    result = invoke("predict", export, photos, "--engine", "auto")
    assert f"measured on {same_name}" in result.stderr and "warning" in result.stderr
    export = _recorded(tiny_every_variant, tmp_path / "c", PICKS)  # here: no warning
    assert "warning" not in invoke("predict", export, photos, "--engine", "auto").stderr


def test_auto_without_a_record_or_without_an_export_folder_is_refused(
    tiny_every_variant: Path, photos: Path
):
    assert_clean_failure(
        invoke("predict", tiny_every_variant, photos, "--engine", "auto"), "records nothing yet"
    )
    assert_clean_failure(
        invoke("predict", tiny_every_variant / "model.onnx", photos, "--engine", "auto"),
        "pass the export folder",
    )
    assert_clean_failure(
        invoke("predict", tiny_every_variant, photos, "--engine", "auto", "--provider", "cuda"),
        "name the engine",
    )


def test_a_tampered_record_is_refused_when_the_export_is_opened(
    tiny_every_variant: Path, photos: Path, tmp_path: Path
):
    export = _recorded(tiny_every_variant, tmp_path, PICKS)
    manifest = json.loads((export / "manifest.json").read_text())
    manifest["recommendation"]["picks"]["8"]["engine"] = "tensorflow"
    (export / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="unknown engine 'tensorflow'"):
        open_artifact(export)
    assert_clean_failure(invoke("predict", export, photos), "recommendation is invalid")


def test_recording_keeps_every_other_manifest_field_and_refuses_a_missing_variant(
    tiny_fp16_export: Path, tmp_path: Path
):
    copy = tmp_path / "fp16"
    shutil.copytree(tiny_fp16_export, copy)
    before = json.loads((copy / "manifest.json").read_text())
    with pytest.raises(ArtifactError, match="no int8 variant"):
        record_recommendation(open_artifact(copy), Recommendation(PICKS, "x", 2, "now"))
    assert json.loads((copy / "manifest.json").read_text()) == before
    picks = {4: Pick(Engine.OPENVINO, "fp16", 3.0, None)}
    record_recommendation(open_artifact(copy), Recommendation(picks, "x", 2, "now"))
    after = json.loads((copy / "manifest.json").read_text())
    assert after.pop("recommendation")["picks"] == {"4": picks[4].to_dict()}
    assert after == before
    assert open_artifact(copy).recommended(100) == (4, picks[4])


def test_predict_on_openvino_without_the_package_names_the_extra(
    tiny_every_variant: Path, photos: Path, monkeypatch: pytest.MonkeyPatch
):
    import sys

    monkeypatch.setitem(sys.modules, "openvino", None)
    assert_clean_failure(
        invoke("predict", tiny_every_variant, photos, "--engine", "openvino"),
        "pip install 'resnext-deploy[openvino]'",
    )


def test_verify_holds_openvino_to_the_same_gate(
    tiny_every_variant: Path, monkeypatch: pytest.MonkeyPatch
):
    result = invoke("verify", tiny_every_variant, "--engine", "openvino", "--json",
                    "--batch-sizes", "1,2")  # fmt: skip
    assert result.exit_code == 0, result.output
    backends = {b["backend"]: b for b in json.loads(result.stdout)["backends"]}
    for name in ("openvino-cpu", "openvino-cpu-fp16", "openvino-cpu-int8", "openvino-cpu-preproc"):
        assert backends[name]["passed"], name
    # an OpenVINO that is off by 1% of the logit range fails fp32's tolerance, named
    real = OpenVinoRunner.infer

    def off(self: OpenVinoRunner, batch: np.ndarray) -> np.ndarray:
        out = real(self, batch)
        return out + 0.01 * np.abs(out).max() * (np.arange(out.shape[1]) % 2)

    monkeypatch.setattr(OpenVinoRunner, "infer", off)
    result = invoke("verify", tiny_every_variant, "--engine", "openvino", "--batch-sizes", "1")
    assert result.exit_code == 1
    assert "openvino-cpu" in result.stderr and "onnxruntime-cpu," not in result.stderr


def test_the_served_model_runs_on_openvino_with_onnxruntime_answers(tiny_every_variant: Path):
    from resnext_deploy.serve.config import ServeConfig
    from resnext_deploy.serve.model import ServedModel

    photos = list(colour_photos().values())
    answers = {}
    for engine in Engine:
        model = ServedModel(ServeConfig(export_dir=tiny_every_variant, engine=engine, threads=1))
        assert isinstance(model.runner, OpenVinoRunner) is (engine is Engine.OPENVINO)
        batch = np.concatenate([model.image_rows(p) for p in photos])
        answers[engine] = model.run(batch)
        assert model.metadata()["platform"] == {"onnxruntime": "onnxruntime_onnx"}.get(
            engine.value, "openvino"
        )
        model.close()
    want, got = answers[Engine.ONNXRUNTIME]["logits"], answers[Engine.OPENVINO]["logits"]
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


def test_serve_settings_carry_the_engine_and_refuse_openvino_on_cuda(tiny_every_variant: Path):
    from resnext_deploy.runtime.providers import Provider
    from resnext_deploy.serve.config import ServeConfig

    config = ServeConfig(export_dir=tiny_every_variant, engine=Engine.OPENVINO)
    assert ServeConfig.from_args(config.to_args()).engine is Engine.OPENVINO
    with pytest.raises(ConfigError, match="unknown engine"):
        ServeConfig.from_args(config.to_args() | {"engine": "tvm"})
    with pytest.raises(ConfigError, match="OpenVINO engine serves on the CPU"):
        ServeConfig(export_dir=tiny_every_variant, engine=Engine.OPENVINO, provider=Provider.CUDA)


def test_serve_auto_takes_the_recorded_variant_and_refuses_a_named_one(
    tiny_every_variant: Path, tmp_path: Path
):
    export = _recorded(tiny_every_variant, tmp_path, PICKS)
    out = tmp_path / "serve.yaml"
    result = invoke("serve", export, "--engine", "auto", "--max-batch-size", "8",
                    "--write-config", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    written = out.read_text()
    assert "engine: openvino" in written and "variant: int8" in written
    assert_clean_failure(
        invoke("serve", export, "--engine", "auto", "--variant", "fp32"), "chooses the variant too"
    )


def test_the_ray_data_actor_classifies_on_openvino_as_on_onnxruntime(tiny_every_variant: Path):
    from resnext_deploy.batch.stages import Inference
    from resnext_deploy.runtime.providers import SessionConfig

    spec = open_artifact(tiny_every_variant).spec
    images = list(colour_photos().values())
    batch = {
        "index": np.arange(len(images)),
        "path": np.array([f"p{i}" for i in range(len(images))]),
        "pixels": model_input(images, spec, False),
        "error": np.array([""] * len(images)),
    }
    model = (tiny_every_variant / "model.onnx").read_bytes()
    rows = {}
    for engine in Engine:
        actor = Inference(model, spec, SessionConfig(intra_op_threads=1), 3, "sha", engine)
        assert actor.classifier.engine is engine
        rows[engine] = actor(batch).to_pylist()
    for a, b in zip(rows[Engine.ONNXRUNTIME], rows[Engine.OPENVINO], strict=True):
        assert a["class_indices"] == b["class_indices"]
        assert np.allclose(a["probabilities"], b["probabilities"], atol=1e-5)


def test_export_recommend_records_a_measured_pick(tiny_checkpoint: Path, tmp_path: Path):
    from tests.conftest import TINY

    out = tmp_path / "rec"
    result = invoke("export", tiny_checkpoint, "--arch", TINY, "--out", out, "--recommend",
                    "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)["recommendation"]
    record = open_artifact(out).manifest.recommendation
    assert record is not None and record.to_dict() == printed
    assert set(record.picks) == {1, 2, 4, 8, 16} and record.cpu == cpu_info().label
    assert {p.variant for p in record.picks.values()} == {"fp32"}


def test_export_recommend_without_openvino_is_refused_before_exporting(
    tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import sys

    from tests.conftest import TINY

    monkeypatch.setitem(sys.modules, "openvino", None)
    out = tmp_path / "rec"
    result = invoke("export", tiny_checkpoint, "--arch", TINY, "--out", out, "--recommend")
    assert_clean_failure(result, "resnext-deploy[openvino]")
    assert not out.exists()
