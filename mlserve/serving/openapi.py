"""The OpenAPI 3.1 document of the blueprint's own endpoints (served at /openapi.json)."""

from __future__ import annotations

from typing import Any

import mlserve

__all__ = ["openapi_document"]

_ERROR = {
    "type": "object",
    "properties": {"error": {"type": "string"}},
    "required": ["error"],
}
_ROWS = {"type": "array", "items": {"type": "array", "items": {"type": "number"}}}


def _json_body(schema: dict[str, Any], *extra: str) -> dict[str, Any]:
    content = {"application/json": {"schema": schema}}
    for mimetype in extra:
        content[mimetype] = {"schema": {"type": "string", "format": "binary"}}
    return {"required": True, "content": content}


def _responses(ok: str, *errors: int) -> dict[str, Any]:
    descriptions = {
        400: "Malformed body, wrong shape or feature count, non-numeric values, NaN",
        404: "Unknown model, version or alias",
        413: "Body larger than MLSERVE_MAX_BODY_BYTES",
        415: "Unsupported Content-Type",
        503: "Not ready",
    }
    responses: dict[str, Any] = {"200": {"description": ok}}
    for status in errors:
        responses[str(status)] = {
            "description": descriptions[status],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
    return responses


_NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
_VERSION = {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}
_QUERY_REF = [
    {"name": "version", "in": "query", "schema": {"type": "integer"}},
    {"name": "alias", "in": "query", "schema": {"type": "string"}},
]
_PREDICT_ERRORS = (400, 404, 413, 415)


def _get(summary: str, tag: str, params: list[dict] | None = None, errors: tuple = (404,)) -> dict:
    return {
        "get": {
            "summary": summary,
            "tags": [tag],
            "parameters": params or [],
            "responses": _responses("OK", *errors),
        }
    }


def _post(summary: str, tag: str, body: dict, params: list[dict] | None = None) -> dict:
    return {
        "post": {
            "summary": summary,
            "tags": [tag],
            "parameters": params or [],
            "requestBody": body,
            "responses": _responses("Predictions", *_PREDICT_ERRORS),
        }
    }


def openapi_document(prefix: str = "") -> dict[str, Any]:
    """The document, with every path under ``prefix`` (where the blueprint is mounted)."""
    v1_body = _json_body(
        {
            "type": "object",
            "properties": {
                "instances": {"type": "array"},
                "inputs": {},
                "return": {"enum": ["predict", "proba", "all"]},
            },
        }
    )
    v2_body = _json_body(
        {
            "type": "object",
            "properties": {
                "id": {"type": "string"},
                "inputs": {"type": "array", "items": {"$ref": "#/components/schemas/V2Tensor"}},
                "outputs": {"type": "array"},
                "parameters": {"type": "object"},
            },
            "required": ["inputs"],
        },
        "application/octet-stream",
    )
    mlflow_body = _json_body(
        {
            "type": "object",
            "properties": {
                "dataframe_split": {"type": "object"},
                "dataframe_records": {"type": "array"},
                "instances": {"type": "array"},
                "inputs": {},
            },
        },
        "text/csv",
    )
    simple_body = _json_body(
        {
            "type": "object",
            "properties": {
                "features": {"type": "array", "items": {"type": "number"}},
                "instances": _ROWS,
                "return": {"enum": ["predict", "proba", "all"]},
            },
        },
        "application/x-npy",
    )
    paths: dict[str, Any] = {
        "/v1/models": _get("Model names (KServe V1)", "v1", errors=()),
        "/v1/models/{name}": _get("Model status (TF Serving / KServe V1)", "v1", [_NAME]),
        "/v1/models/{name}/metadata": _get("Model signature", "v1", [_NAME]),
        "/v1/models/{name}:predict": _post(
            "Predict (TF Serving / KServe V1)", "v1", v1_body, [_NAME]
        ),
        "/v1/models/{name}/versions/{version}:predict": _post(
            "Predict with one version", "v1", v1_body, [_NAME, _VERSION]
        ),
        "/v1/models/{name}/labels/{label}:predict": _post(
            "Predict with the version an alias points to",
            "v1",
            v1_body,
            [
                _NAME,
                {"name": "label", "in": "path", "required": True, "schema": {"type": "string"}},
            ],
        ),
        "/v2": _get("Server metadata", "v2", errors=()),
        "/v2/health/live": _get("Liveness", "v2", errors=()),
        "/v2/health/ready": _get("Readiness", "v2", errors=(503,)),
        "/v2/models/{name}": _get("Model metadata", "v2", [_NAME]),
        "/v2/models/{name}/versions/{version}": _get(
            "Model version metadata", "v2", [_NAME, _VERSION]
        ),
        "/v2/models/{name}/ready": _get("Model readiness", "v2", [_NAME]),
        "/v2/models/{name}/versions/{version}/ready": _get(
            "Model version readiness", "v2", [_NAME, _VERSION]
        ),
        "/v2/models/{name}/infer": _post(
            "Inference (KServe V2 / Open Inference Protocol)", "v2", v2_body, [_NAME]
        ),
        "/v2/models/{name}/versions/{version}/infer": _post(
            "Inference with one version", "v2", v2_body, [_NAME, _VERSION]
        ),
        "/invocations": _post(
            "MLflow scoring protocol (the default model)", "mlflow", mlflow_body, _QUERY_REF
        ),
        "/ping": _get("Health (MLflow)", "mlflow", errors=()),
        "/health": _get("Health (MLflow)", "mlflow", errors=()),
        "/version": _get("Server version (MLflow)", "mlflow", errors=()),
        "/predict/{name}": _post(
            "Predict one row or a batch", "simple", simple_body, [_NAME, *_QUERY_REF]
        ),
        "/models": _get("List models, versions, aliases and input shapes", "simple", errors=()),
        "/models/{name}": _get("One model's versions, aliases and shapes", "simple", [_NAME]),
        "/admin/reload": {
            "post": {
                "summary": "Re-read the store now (new versions, moved aliases)",
                "tags": ["admin"],
                "responses": _responses("Reloaded", 404),
            }
        },
        "/openapi.json": _get("This document", "docs", errors=()),
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "mlserve", "version": mlserve.__version__},
        "servers": [{"url": prefix or "/"}],
        "paths": paths,
        "components": {
            "schemas": {
                "Error": _ERROR,
                "V2Tensor": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "shape": {"type": "array", "items": {"type": "integer"}},
                        "datatype": {"type": "string"},
                        "data": {"type": "array"},
                        "parameters": {"type": "object"},
                    },
                    "required": ["name", "shape", "datatype"],
                },
            }
        },
    }
