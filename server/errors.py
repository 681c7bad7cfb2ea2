"""Osprey's one error hierarchy.

Every error a client may see is an ``OspreyError`` subclass; its gRPC status code is
decided in one place (``server.status``). Messages are written for the caller: they
name the model, tensor or parameter, what was expected and what came. Anything that
is not an ``OspreyError`` is a bug and reaches the client as INTERNAL with a generic
message (the traceback goes to the log only).
"""

from __future__ import annotations


class OspreyError(Exception):
    """Base of every error Osprey reports to a caller.

    ``reason`` is the label of ``nv_inference_request_failure``; the values are
    Triton's (REJECTED, CANCELED, BACKEND, OTHER) so existing dashboards work.
    """

    reason = "OTHER"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(OspreyError):
    """The request is malformed: tensor name, datatype, shape, size or parameter."""

    reason = "OTHER"


class InvalidColumn(InvalidInput):
    """A raw column of a feature-spec model version is missing, unknown or malformed.

    ``column`` names it; the message says what was expected and what came. The
    transform's own ``native.feature_errors.ColumnError`` becomes this error.
    """

    def __init__(self, column: str, message: str) -> None:
        super().__init__(message)
        self.column = column


class ModelNotFound(OspreyError):
    """No model (or no such version of it) is known to the server."""

    reason = "OTHER"


class ModelNotReady(OspreyError):
    """The model is known but not serving (loading, unloading, or failed)."""

    reason = "REJECTED"


class ModelLoadError(OspreyError):
    """A model version could not be loaded; whatever served before keeps serving."""

    reason = "BACKEND"


class Overloaded(OspreyError):
    """The model's queue is full; the caller should retry later."""

    reason = "REJECTED"


class DeadlineExceeded(OspreyError):
    """The request's deadline (gRPC or ``timeout`` parameter) passed before it ran."""

    reason = "REJECTED"


class RequestCancelled(OspreyError):
    """The caller went away; the request left the queue."""

    reason = "CANCELED"


class ShuttingDown(OspreyError):
    """The server is draining and accepts no new work."""

    reason = "REJECTED"


class Unsupported(OspreyError):
    """A protocol feature Osprey does not implement (yet)."""

    reason = "OTHER"


class Unauthenticated(OspreyError):
    """The call carries no credentials this RPC accepts (or malformed ones)."""

    reason = "REJECTED"


class PermissionDenied(OspreyError):
    """The caller's credentials are wrong, or do not allow this RPC."""

    reason = "REJECTED"


class ConfigError(OspreyError):
    """Invalid server or model configuration; raised at start-up or load time."""

    reason = "OTHER"


class AddressInUse(ConfigError):
    """The port is already served by another process."""


class Conflict(OspreyError):
    """A concurrent change won: the caller's view is stale; re-read and retry."""

    reason = "REJECTED"


class PreconditionFailed(OspreyError):
    """The system is not in a state that allows the operation (named in the message)."""

    reason = "REJECTED"


class StoreUnavailable(OspreyError):
    """The database (or another store Osprey depends on) cannot be reached now."""

    reason = "REJECTED"
