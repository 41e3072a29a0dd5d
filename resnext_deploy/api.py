"""The public Python API in one place (imports torch; the torch-free path is
:mod:`resnext_deploy.predict`, :mod:`resnext_deploy.artifact` and
:mod:`resnext_deploy.runtime.ort`).
"""

from resnext_deploy.artifact import (
    Artifact,
    Manifest,
    Precision,
    Tolerance,
    Variant,
    open_artifact,
    record_recommendation,
)
from resnext_deploy.bench.backends import DEFAULT_BACKENDS, BenchBackend
from resnext_deploy.bench.report import BenchReport, load_report
from resnext_deploy.bench.run import BenchConfig, BenchRun, run_benchmark
from resnext_deploy.errors import (
    ArtifactError,
    BenchmarkError,
    CheckpointError,
    ConfigError,
    DataError,
    DeployError,
    ExportError,
    ParityError,
    ProviderUnavailableError,
)
from resnext_deploy.export.calibration import CalibrationConfig
from resnext_deploy.export.pipeline import (
    ExportConfig,
    ExportResult,
    export_checkpoint,
    export_model,
)
from resnext_deploy.localize import CheckedArtifact, check_artifact
from resnext_deploy.models.checkpoint import LoadOptions, load_model, read_checkpoint
from resnext_deploy.models.registry import ARCHS, build_model, describe
from resnext_deploy.parity import ParityReport
from resnext_deploy.predict import Classifier
from resnext_deploy.recommendation import Engine, EngineChoice, Pick, Recommendation
from resnext_deploy.runtime.base import BoundCall, Runner
from resnext_deploy.runtime.engines import open_runner
from resnext_deploy.runtime.openvino import OpenVinoConfig, OpenVinoRunner
from resnext_deploy.runtime.ort import OrtRunner
from resnext_deploy.runtime.providers import (
    CudaOptions,
    Provider,
    SessionConfig,
    TensorRTOptions,
    create_session,
)
from resnext_deploy.runtime.torch_runners import EagerRunner, TorchScriptRunner
from resnext_deploy.spec import ArchConfig, ModelSpec
from resnext_deploy.timing import Timing
from resnext_deploy.verify import VerifyConfig, verify_artifact
from resnext_deploy.web.site import WebConfig, WebSite, write_site

__all__ = [
    "ARCHS",
    "DEFAULT_BACKENDS",
    "ArchConfig",
    "Artifact",
    "ArtifactError",
    "BenchBackend",
    "BenchConfig",
    "BenchReport",
    "BenchRun",
    "BenchmarkError",
    "BoundCall",
    "CalibrationConfig",
    "CheckedArtifact",
    "CheckpointError",
    "Classifier",
    "ConfigError",
    "CudaOptions",
    "DataError",
    "DeployError",
    "EagerRunner",
    "Engine",
    "EngineChoice",
    "ExportConfig",
    "ExportError",
    "ExportResult",
    "LoadOptions",
    "Manifest",
    "ModelSpec",
    "OpenVinoConfig",
    "OpenVinoRunner",
    "OrtRunner",
    "ParityError",
    "ParityReport",
    "Pick",
    "Precision",
    "Provider",
    "ProviderUnavailableError",
    "Recommendation",
    "Runner",
    "SessionConfig",
    "TensorRTOptions",
    "Timing",
    "Tolerance",
    "TorchScriptRunner",
    "Variant",
    "VerifyConfig",
    "WebConfig",
    "WebSite",
    "build_model",
    "check_artifact",
    "create_session",
    "describe",
    "export_checkpoint",
    "export_model",
    "load_model",
    "load_report",
    "open_artifact",
    "open_runner",
    "read_checkpoint",
    "record_recommendation",
    "run_benchmark",
    "verify_artifact",
    "write_site",
]
