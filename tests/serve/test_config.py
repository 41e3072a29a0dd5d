"""Serve settings, the Serve config file for `serve deploy` / KubeRay, and the layer rule that
keeps Ray out of the rest of the package. No Ray cluster is started here."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from resnext_deploy.artifact import Variant
from resnext_deploy.errors import ConfigError
from resnext_deploy.runtime.providers import Provider
from resnext_deploy.serve.config import IMPORT_PATH, ServeConfig

yaml = pytest.importorskip("yaml", reason="the serve tests need the [test] extra")

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "resnext_deploy"


def test_config_round_trips_through_application_args(tiny_export: Path) -> None:
    config = ServeConfig(
        export_dir=tiny_export, variant=Variant.FP32, replicas=3, batching=False, threads=2
    )
    args = config.to_args()
    assert Path(args["export_dir"]).is_absolute() and args["variant"] == "fp32"
    assert ServeConfig.from_args(args) == ServeConfig(
        export_dir=Path(args["export_dir"]), replicas=3, batching=False, threads=2
    )
    with pytest.raises(ConfigError, match="unknown serve setting.*colour"):
        ServeConfig.from_args(args | {"colour": "red"})
    with pytest.raises(ConfigError, match="unknown variant"):
        ServeConfig.from_args(args | {"variant": "bf16"})


@pytest.mark.parametrize("name", ["../../escape", 'a"b', "a/b", "x#1", ".hidden", "", "a..b"])
def test_model_names_that_are_not_one_url_segment_are_refused(tiny_export: Path, name: str) -> None:
    with pytest.raises(ConfigError, match="not allowed"):
        ServeConfig(export_dir=tiny_export, model_name=name)


def test_invalid_settings_are_refused(tiny_export: Path) -> None:
    for bad in (
        {"replicas": 0},
        {"max_batch_size": 0},
        {"batch_wait_ms": -1},
        {"port": 70000},
        {"provider": Provider.TENSORRT},
        {"provider": Provider.CUDA, "gpus_per_replica": 0},
    ):
        with pytest.raises(ConfigError):
            ServeConfig(export_dir=tiny_export, **bad)  # type: ignore[arg-type]


def test_serve_config_file_is_what_ray_serve_accepts(tiny_export: Path, tmp_path: Path) -> None:
    from ray.serve.schema import ServeDeploySchema

    from resnext_deploy.serve.app import build_app
    from resnext_deploy.serve.run import write_serve_config

    config = ServeConfig(
        export_dir=tiny_export, provider=Provider.CUDA, replicas=2, gpus_per_replica=0.5,
        max_batch_size=16, host="0.0.0.0", port=8123, grpc_port=8124,
    )  # fmt: skip
    path = write_serve_config(config, tmp_path / "serve.yaml")
    document = yaml.safe_load(path.read_text())
    schema = ServeDeploySchema.model_validate(document)
    assert schema.http_options.host == "0.0.0.0" and schema.http_options.port == 8123
    assert schema.grpc_options.port == 8124
    # Ray imports the servicer function by that path (in its proxy).
    servicer = schema.grpc_options.grpc_servicer_functions[0]
    module, _, attr = servicer.rpartition(".")
    assert callable(getattr(__import__(module, fromlist=[attr]), attr))
    (app,) = schema.applications
    assert app.import_path == IMPORT_PATH and app.route_prefix == "/"
    (deployment,) = app.deployments
    assert deployment.name == app.name == "resnext14_8x4d"
    assert deployment.num_replicas == 2 and deployment.max_ongoing_requests == 32
    assert deployment.ray_actor_options.num_gpus == 0.5
    assert ServeConfig.from_args(app.args) == ServeConfig.from_args(config.to_args())
    # The import path resolves to the builder, which builds from those args without a cluster.
    module, attr = IMPORT_PATH.split(":")
    assert getattr(__import__(module, fromlist=[attr]), attr) is build_app
    assert type(build_app(app.args)).__name__ == "Application"
    with pytest.raises(ConfigError, match="exists"):
        write_serve_config(config, path)


def test_cli_writes_the_config_and_refuses_bad_names(tiny_export: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from resnext_deploy.cli import app

    runner = CliRunner()
    out = tmp_path / "serve.yaml"
    result = runner.invoke(app, ["serve", str(tiny_export), "--write-config", str(out)])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(out.read_text())["applications"][0]["args"]["max_batch_size"] == 32
    result = runner.invoke(app, ["serve", str(tiny_export), "--name", "../../escape"])
    assert result.exit_code == 1 and "not allowed" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(
        app, ["serve", str(tiny_export), "--port", "8100", "--grpc-port", "8100"]
    )
    assert result.exit_code == 1 and "ports must differ" in result.output


def test_serve_refuses_a_port_in_use_before_starting_ray(tiny_export: Path) -> None:
    import socket

    from resnext_deploy.serve.run import serve_model

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = ServeConfig(export_dir=tiny_export, port=port, address=None)
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}"):
            serve_model(config, lambda info: None)
    assert "ray" not in sys.modules or not __import__("ray").is_initialized()


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


# The floors above the serve layer (pyproject.toml's layers contract): the CLI package, the demo
# and the rendering, which names ServeInfo for its type.
ABOVE_SERVE = {"__main__.py", "demo.py", "render.py"}


def test_only_serve_and_batch_runners_import_ray_and_nothing_below_imports_serve() -> None:
    ray_allowed = {
        PACKAGE / "serve" / "app.py",
        PACKAGE / "serve" / "run.py",
        PACKAGE / "serve" / "proxy.py",  # in Ray's proxy and replica processes
        PACKAGE / "serve" / "statstore.py",
        PACKAGE / "batch" / "run.py",
    }
    serve_allowed_deps = (
        "resnext_deploy.serve", "resnext_deploy.runtime", "resnext_deploy.predict",
        "resnext_deploy.preprocess", "resnext_deploy.artifact", "resnext_deploy.spec",
        "resnext_deploy.errors", "resnext_deploy.fileio", "resnext_deploy.validate",
        "resnext_deploy.interrupts", "resnext_deploy.raylocal", "resnext_deploy.recommendation",
    )  # fmt: skip
    for path in PACKAGE.rglob("*.py"):
        names = _imports(path)
        uses_ray = {n for n in names if n == "ray" or n.startswith("ray.")}
        assert not uses_ray or path in ray_allowed, f"{path} imports {uses_ray}"
        ours = {n for n in names if n.startswith("resnext_deploy.")}
        if path.parent.name == "serve":
            stray = {n for n in ours if not n.startswith(serve_allowed_deps)}
            assert not stray, f"{path} imports {stray} (the serve layer's allowed imports only)"
        elif path.parent.name != "cli" and path.name not in ABOVE_SERVE:
            assert not {n for n in ours if n.startswith("resnext_deploy.serve")}, path


def test_importing_the_package_and_the_serve_codec_does_not_import_ray() -> None:
    code = (
        "import sys, resnext_deploy.api, resnext_deploy.cli, resnext_deploy.serve.routes, "
        "resnext_deploy.serve.config; print('ray' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip() == "False"
