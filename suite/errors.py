"""Exceptions raised by the engine; each says what was expected, what was seen and what to do."""

from __future__ import annotations


class GateError(Exception):
    """Base class of every error the engine raises on purpose."""


class PlatformError(GateError):
    """Raised when a platform manifest is missing, unreadable or does not match the schema."""


class EnvironmentProblem(GateError):
    """Raised when this machine lacks something the gate needs (a binary, a package version)."""


class Unsupported(GateError):
    """Raised when the target cannot do what is asked of it (a cluster's pods are not the gate's to kill)."""


class StackStartError(GateError):
    """Raised when a server of the embedded stack exits or never becomes ready."""


class RegistryError(GateError):
    """Raised when the MLflow registry cannot give the requested model version or alias."""


class RepositoryError(GateError):
    """Raised when the model repository is in a state the deploy path refuses to touch."""


class DeployLockedError(GateError):
    """Raised when another deploy holds the environment's lock for longer than we may wait."""


class TritonError(GateError):
    """Raised when Triton refuses a request or answers something other than expected."""


class GoldenMismatch(GateError):
    """Raised when a model's outputs differ from its golden set."""
