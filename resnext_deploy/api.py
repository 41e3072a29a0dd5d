"""The public Python API in one place (imports torch; the torch-free path is
:mod:`resnext_deploy.predict`)."""

from resnext_deploy.errors import (
    ArtifactError,
    CheckpointError,
    ConfigError,
    DeployError,
    ExportError,
    ParityError,
    ProviderUnavailableError,
)
from resnext_deploy.artifact import Artifact, Variant, open_artifact
from resnext_deploy.export.pipeline import (
    ExportConfig,
    ExportResult,
    export_checkpoint,
    export_model,
)
from resnext_deploy.models.checkpoint import LoadOptions, load_model, read_checkpoint
from resnext_deploy.models.registry import ARCHS, build_model, describe
from resnext_deploy.artifact import Tolerance
from resnext_deploy.parity import ParityReport
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
from resnext_deploy.verify import VerifyConfig, verify_artifact

__all__ = [
    "ARCHS",
    "ArchConfig",
    "Artifact",
    "ArtifactError",
    "CheckpointError",
    "ConfigError",
    "CudaOptions",
    "DeployError",
    "EagerRunner",
    "ExportConfig",
    "ExportError",
    "ExportResult",
    "LoadOptions",
    "ModelSpec",
    "OrtRunner",
    "ParityError",
    "ParityReport",
    "Provider",
    "ProviderUnavailableError",
    "SessionConfig",
    "TensorRTOptions",
    "Tolerance",
    "TorchScriptRunner",
    "Variant",
    "VerifyConfig",
    "build_model",
    "create_session",
    "describe",
    "export_checkpoint",
    "export_model",
    "load_model",
    "open_artifact",
    "read_checkpoint",
    "verify_artifact",
]
