"""The registry's errors: members of Osprey's one hierarchy (``server.errors``).

Each names the model, version or command involved, so the CLI prints it as is and
the server maps it to a gRPC status in ``server.status`` like any other error.
"""

from __future__ import annotations

from server.errors import (
    Conflict,
    InvalidInput,
    ModelNotFound,
    OspreyError,
    PreconditionFailed,
    StoreUnavailable,
)


class RegistryError(OspreyError):
    """Base of the registry's own errors (every one is also a more specific kind)."""


class UnknownModel(ModelNotFound, RegistryError):
    """No model of that name is registered."""


class UnknownVersion(ModelNotFound, RegistryError):
    """The model has no such version."""


class InvalidArtifact(InvalidInput, RegistryError):
    """The file given to register is not an ONNX model ONNX Runtime can load, or its
    feature spec / profile / settings are invalid."""


class VersionRejected(PreconditionFailed, RegistryError):
    """The version failed validation (e.g. a checksum mismatch) and may not serve."""


class DeploymentConflict(Conflict, RegistryError):
    """The deployment changed since it was read (compare-and-set on its revision)."""


class RolloutInProgress(PreconditionFailed, RegistryError):
    """A rollout is already running for the model: promote or abort it first."""


class NoRolloutInProgress(PreconditionFailed, RegistryError):
    """The command needs a running rollout and there is none."""


class SignatureChanged(PreconditionFailed, RegistryError):
    """The version's input/output signature differs from the stable version's."""


class InvalidTransition(PreconditionFailed, RegistryError):
    """The deployment cannot make the requested change from its current state."""


class SchemaOutOfDate(PreconditionFailed, RegistryError):
    """The database schema is older (or newer) than this code: run ``osprey db upgrade``."""


class RegistryUnavailable(StoreUnavailable, RegistryError):
    """The registry database cannot be reached."""
