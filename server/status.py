"""The one place where Osprey errors become gRPC status codes."""

from __future__ import annotations

import logging

import grpc

from . import errors

log = logging.getLogger("osprey.server")

GENERIC_INTERNAL_MESSAGE = "internal error; see the server log"

_CODES: dict[type[errors.OspreyError], grpc.StatusCode] = {
    errors.InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    errors.ModelNotFound: grpc.StatusCode.NOT_FOUND,
    errors.ModelNotReady: grpc.StatusCode.UNAVAILABLE,
    errors.ModelLoadError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Overloaded: grpc.StatusCode.UNAVAILABLE,
    errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.RequestCancelled: grpc.StatusCode.CANCELLED,
    errors.ShuttingDown: grpc.StatusCode.UNAVAILABLE,
    errors.Unsupported: grpc.StatusCode.UNIMPLEMENTED,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.ConfigError: grpc.StatusCode.INVALID_ARGUMENT,
    errors.Conflict: grpc.StatusCode.ABORTED,
    errors.PreconditionFailed: grpc.StatusCode.FAILED_PRECONDITION,
    errors.StoreUnavailable: grpc.StatusCode.UNAVAILABLE,
}


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and client-safe message for ``exc``.

    Unknown exceptions are logged with their traceback and answered generically.
    """
    if isinstance(exc, errors.OspreyError):
        for cls in type(exc).__mro__:
            code = _CODES.get(cls)
            if code is not None:
                return code, exc.message
    log.error("unexpected error while serving a request", exc_info=exc)
    return grpc.StatusCode.INTERNAL, GENERIC_INTERNAL_MESSAGE


def describe_quietly(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """``status_for`` without logging (for records of a failure logged elsewhere)."""
    if isinstance(exc, errors.OspreyError):
        return status_for(exc)
    return grpc.StatusCode.INTERNAL, GENERIC_INTERNAL_MESSAGE


def failure_reason(exc: BaseException) -> str:
    """The ``reason`` label of ``nv_inference_request_failure`` for ``exc``."""
    if isinstance(exc, errors.OspreyError):
        return exc.reason
    return "BACKEND"
