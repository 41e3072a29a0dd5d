"""One exception hierarchy for everything a user can get wrong.

Every subclass of :class:`DeployError` carries a message that says what was wrong and what to do;
the CLI prints it on one line and exits with status 1. Anything else that escapes is a bug in
resnext-deploy and is reported as such.
"""

from __future__ import annotations


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first non-empty line of ``exc``'s message, cut to ``limit`` characters; the exception
    type's name when the message is empty. Library errors are often many lines long."""
    lines = str(exc).strip().splitlines()
    return lines[0][:limit] if lines else type(exc).__name__


class DeployError(Exception):
    """Base class for user-facing failures (bad input, missing hardware, failed checks)."""

    exit_code = 1


class ConfigError(DeployError):
    """An option or a combination of options is invalid."""


class RegistryError(DeployError):
    """An architecture name is unknown or registered twice."""


class CheckpointError(DeployError):
    """A checkpoint file is missing, unreadable, unsafe, or does not fit the architecture."""


class ArtifactError(DeployError):
    """An exported artifact is missing, corrupt, tampered with, or lacks its metadata."""


class ExportError(DeployError):
    """Export could not produce a valid artifact."""


class ParityError(DeployError):
    """Backends disagree beyond tolerance."""


class ProviderUnavailableError(DeployError):
    """An onnxruntime execution provider was requested but is not usable on this machine."""


class DataError(DeployError):
    """A dataset, image folder or image cannot be used."""


class BenchmarkError(DeployError):
    """A benchmark could not run or its result files cannot be read."""


class TrainingError(DeployError):
    """Training could not go on (the loss diverged, a batch is too small for BatchNorm)."""


class ServeError(DeployError):
    """A model server could not start, deploy or shut down."""


class BatchError(DeployError):
    """A ``predict --ray`` run could not start, or Ray failed it (what was done stays done)."""
