"""One exception hierarchy for serving: each error carries its HTTP status.

Views raise these; one error handler (:func:`render_error`) turns any of
them, any werkzeug HTTP error and the store's lookup errors into
``{"error": "..."}`` with the right status. A client mistake is never a 500.
"""

from __future__ import annotations

from typing import Any, Sequence

from flask import Response, jsonify
from werkzeug.exceptions import HTTPException

from mlserve.store import ModelNotFoundError, StoreError

__all__ = [
    "BadRequest",
    "MethodNotAllowed",
    "ModelNotFound",
    "NotReady",
    "PayloadTooLarge",
    "ServingError",
    "UnsupportedMediaType",
    "render_error",
]


class ServingError(Exception):
    """Base of all serving errors; ``status`` is the HTTP status to answer with."""

    status = 500
    headers: dict[str, str] | None = None  # extra response headers (Retry-After, ...)

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(ServingError):
    """The request body or parameters are malformed or do not fit the model."""

    status = 400


class ModelNotFound(ServingError):
    """Unknown model, version or alias."""

    status = 404


class MethodNotAllowed(ServingError):
    """The route exists but not for this method; ``allowed`` goes to the Allow header."""

    status = 405

    def __init__(self, message: str, allowed: Sequence[str] = ()) -> None:
        super().__init__(message)
        if allowed:
            self.headers = {"Allow": ", ".join(allowed)}


class PayloadTooLarge(ServingError):
    """The body is larger than MLSERVE_MAX_BODY_BYTES."""

    status = 413


class UnsupportedMediaType(ServingError):
    """The Content-Type is not one the endpoint reads."""

    status = 415


class NotReady(ServingError):
    """The server cannot serve this model yet (e.g. it failed to load)."""

    status = 503


def error_response(message: str, status: int) -> Response:
    response = jsonify(error=message)
    response.status_code = status
    return response


def render_error(exc: Exception) -> Response:
    """The blueprint's one error handler."""
    if isinstance(exc, ServingError):
        response = error_response(exc.message, exc.status)
        if exc.headers:
            response.headers.update(exc.headers)
        return response
    if isinstance(exc, ModelNotFoundError):
        return error_response(str(exc), 404)
    if isinstance(exc, StoreError):
        return error_response(str(exc), 400)
    if isinstance(exc, HTTPException):
        response = error_response(exc.description or exc.name, exc.code or 500)
        if exc.code == 405:
            allowed = exc.get_headers()
            for key, value in allowed:
                if key.lower() == "allow":
                    response.headers["Allow"] = value
        return response
    raise exc


def error_body(message: Any) -> dict[str, str]:
    return {"error": str(message)}
