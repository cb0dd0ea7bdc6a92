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


_GUARDED = (401, 403, 429)


def _responses(
    ok: str, *errors: int, ok_schema: dict | None = None, guarded: bool = True
) -> dict[str, Any]:
    descriptions = {
        400: "Malformed body, wrong shape or feature count, non-numeric values, NaN",
        404: "Unknown model, version or alias",
        413: "Body larger than MLSERVE_MAX_BODY_BYTES, or more rows than MLSERVE_MAX_ROWS",
        415: "Unsupported Content-Type",
        503: "Not ready",
        401: "No valid API key (when MLSERVE_API_KEYS is set)",
        403: "The API key lacks the scope this request needs",
        429: "Over a rate limit (MLSERVE_RATE_LIMIT); see Retry-After",
    }
    responses: dict[str, Any] = {"200": {"description": ok}}
    if ok_schema is not None:
        responses["200"]["content"] = {
            "application/json": {"schema": ok_schema},
            # V2 binary tensors, .npy answers to Accept: application/x-npy
            **({"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
               if ok_schema is _V2_OK else {}),
            **({"application/x-npy": {"schema": {"type": "string", "format": "binary"}}}
               if ok_schema is _SIMPLE_OK else {}),
        }  # fmt: skip
    for status in (*errors, *(_GUARDED if guarded else ())):
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


def _get(
    summary: str,
    tag: str,
    params: list[dict] | None = None,
    errors: tuple = (404,),
    ok_schema: dict | None = None,
    guarded: bool = True,
) -> dict:
    return {
        "get": {
            "summary": summary,
            "tags": [tag],
            "parameters": params or [],
            "responses": _responses("OK", *errors, ok_schema=ok_schema, guarded=guarded),
        }
    }


def _html(summary: str, params: list[dict] | None = None) -> dict:
    ok = {"description": "An HTML page", "content": {"text/html": {"schema": {"type": "string"}}}}
    return {"get": {"summary": summary, "tags": ["docs"], "parameters": params or [],
                    "responses": {**_responses("OK", 400), "200": ok}}}


def _post(
    summary: str, tag: str, body: dict, params: list[dict] | None = None, ok_schema: dict | None = None
) -> dict:
    return {
        "post": {
            "summary": summary,
            "tags": [tag],
            "parameters": params or [],
            "requestBody": body,
            "responses": _responses("Predictions", *_PREDICT_ERRORS, ok_schema=ok_schema),
        }
    }


def _object(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required}


_HEALTH_OK = _object({"status": {"type": "string"}}, ["status"])
_SIMPLE_OK = _object(
    {
        "model": {"type": "string"},
        "version": {"type": "integer"},
        "prediction": {},
        "predictions": {"type": "array"},
        "probabilities": {"type": "array"},
        "distances": {"type": "array"},  # k-means: "return": "distances"
        # "return": "explain": contributions per feature, the bias last (mlserve.serving.explain)
        "explanation": {"type": "array"},
        "explanations": {"type": "array"},
    },
    ["model", "version"],
)
_ID = {"type": ["integer", "string"]}
_IDS = {"type": "array", "items": _ID}
_RECOMMEND_OK = _object(  # mlserve.serving.recommend
    {
        "items": {"type": "array", "items": _IDS},
        "scores": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
    },
    ["items", "scores"],
)
_RECOMMEND_BODY = _json_body(
    {
        "type": "object",
        "description": 'Exactly one of "user", "users" or "items" (a new user\'s history).',
        "properties": {
            "user": _ID,
            "users": _IDS,
            "items": _IDS,
            "k": {"type": "integer", "minimum": 1, "default": 10},
            "exclude": {"type": "array", "description": "ids for every user, or a list per user"},
            "candidates": _IDS,
        },
    }
)
_SIMILAR_BODY = _json_body(
    {
        "type": "object",
        "description": 'Exactly one of "item" or "items".',
        "properties": {"item": _ID, "items": _IDS, "k": {"type": "integer", "minimum": 1}},
    }
)
_V1_OK = {"type": "object", "properties": {"predictions": {"type": "array"}, "outputs": {}}}
_V1_EXPLAIN_OK = _object({"explanations": {"type": "array"}}, ["explanations"])
_V2_OK = _object(
    {
        "model_name": {"type": "string"},
        "model_version": {"type": "string"},
        "id": {"type": "string"},
        "outputs": {"type": "array", "items": {"$ref": "#/components/schemas/V2Tensor"}},
    },
    ["model_name", "outputs"],
)


_DURATION = _object({"count": {"type": "integer"}, "ns": {"type": "integer"}}, ["count", "ns"])
_STATS_OK = _object(
    {
        "model_stats": {
            "type": "array",
            "items": _object(
                {
                    "name": {"type": "string"},
                    "version": {"type": "string"},
                    "last_inference": {"type": "integer"},
                    "inference_count": {"type": "integer"},
                    "execution_count": {"type": "integer"},
                    "inference_stats": {"type": "object", "additionalProperties": _DURATION},
                    "batch_stats": {"type": "array"},
                },
                ["name", "version", "inference_count", "execution_count", "inference_stats"],
            ),
        }
    },
    ["model_stats"],
)

def _parameters_body(parameters: dict[str, Any]) -> dict[str, Any]:
    """A repository request's body: {"parameters": {...}} with exactly these parameters."""
    return {
        "type": "object",
        "properties": {
            "parameters": {
                "type": "object",
                "properties": parameters,
                "additionalProperties": False,
            }
        },
        "additionalProperties": False,
    }


def _repository(
    summary: str, name: dict | None, body: dict, errors: tuple, tag: str = "admin"
) -> dict:
    """A Triton repository POST: an optional JSON body."""
    return {
        "post": {
            "summary": summary,
            "tags": [tag],
            "parameters": [name] if name else [],
            "requestBody": {"required": False, "content": {"application/json": {"schema": body}}},
            "responses": _responses("OK", *errors),
        }
    }


def record_schema(input_schema: list) -> dict[str, Any]:
    """A pipeline's input record as a JSON schema: each column by name, numbers or
    strings (null: missing), the known categories of a string column as examples."""
    properties: dict[str, Any] = {}
    for col in input_schema:
        if col["kind"] == "numeric":
            properties[col["name"]] = {"type": ["number", "null"]}
        else:
            cats = list(col.get("categories") or [])
            entry: dict[str, Any] = {"type": ["string", "null"]}
            if cats:
                entry["examples"] = cats[:20]
                entry["description"] = (f"{len(cats)} known categories; others are unknown "
                                        "to the model")
            properties[col["name"]] = entry
    return {"type": "object", "properties": properties,
            "required": [c["name"] for c in input_schema]}


def openapi_document(
    prefix: str = "", example_model: str | None = None, example_features: int | None = None,
    input_schemas: dict[str, list] | None = None,
) -> dict[str, Any]:
    """The document, with every path under ``prefix`` (where the blueprint is mounted).

    ``example_model`` and ``example_features`` (a served model and its width) give
    the model name parameters and the request bodies working examples.
    ``input_schemas`` (model name -> a pipeline's input schema) adds one component
    schema per pipeline, ``<name>.record``: the record its routes take.
    """
    v1_body = _json_body(
        {
            "type": "object",
            "properties": {
                "instances": {"type": "array"},
                "inputs": {},
                "return": {"enum": ["predict", "proba", "all", "distances"]},
                # serving_default, or an output's name: predict, predict_proba (classifiers),
                # transform (k-means distances)
                "signature_name": {"type": "string"},
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
    v1_explain_body = _json_body(
        {"type": "object", "properties": {"instances": {"type": "array"}, "inputs": {}}}
    )
    mlflow_body = _json_body(
        {
            "type": "object",
            "properties": {
                "dataframe_split": {"type": "object"},
                "dataframe_records": {"type": "array"},
                "instances": {"type": "array"},
                "inputs": {},
                "params": _object({"output": {"enum": ["predict", "proba", "all", "distances"]}}, []),
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
                "return": {"enum": ["predict", "proba", "all", "distances", "explain"]},
            },
        },
        "application/x-npy",
    )
    # an image model (mlserve.with_image_input) also takes uploads (mlserve/serving/images.py)
    simple_body["content"]["multipart/form-data"] = {"schema": {
        "type": "object",
        "properties": {
            "file": {"type": "array", "items": {"type": "string", "format": "binary"}},
            "return": {"enum": ["label", "topk", "proba", "predict"]},
            "k": {"type": "integer", "minimum": 1},
        },
    }}  # fmt: skip
    for mimetype in ("image/png", "image/jpeg"):
        simple_body["content"][mimetype] = {"schema": {"type": "string", "format": "binary"}}
    name_param = dict(_NAME)
    if example_model:
        name_param["schema"] = {"type": "string", "examples": [example_model]}
        name_param["example"] = example_model
        row = [0.0] * (example_features or 1)
        for body, example in [
            (v1_body, {"instances": [row]}),
            (v1_explain_body, {"instances": [row]}),
            (v2_body, {"inputs": [{"name": "input", "shape": [1, len(row)], "datatype": "FP64", "data": row}]}),
            (mlflow_body, {"instances": [row]}),
            (simple_body, {"features": row}),
        ]:
            body["content"]["application/json"]["example"] = example
    _NAME_ = name_param
    paths: dict[str, Any] = {
        "/": _get(
            "Liveness (KServe V1)", "v1", errors=(), guarded=False, ok_schema=_HEALTH_OK
        ),
        "/v1/models": _get("Model names (KServe V1)", "v1", errors=()),
        "/v1/models/{name}": _get("Model status (TF Serving / KServe V1)", "v1", [_NAME_]),
        "/v1/models/{name}/metadata": _get("Model signature", "v1", [_NAME_]),
        "/v1/models/{name}:predict": _post(
            "Predict (TF Serving / KServe V1)", "v1", v1_body, [_NAME_], ok_schema=_V1_OK
        ),
        "/v1/models/{name}:explain": _post(
            "Explain: per-feature contributions to the raw score, the bias last (trees, linear)",
            "v1", v1_explain_body, [_NAME_], ok_schema=_V1_EXPLAIN_OK,
        ),
        "/v1/models/{name}/versions/{version}:predict": _post(
            "Predict with one version", "v1", v1_body, [_NAME_, _VERSION]
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
        "/v2/health/live": _get(
            "Liveness", "v2", errors=(), guarded=False,
            ok_schema=_object({"live": {"type": "boolean"}}, ["live"]),
        ),  # fmt: skip
        "/v2/health/ready": _get(
            "Readiness", "v2", errors=(503,), guarded=False,
            ok_schema=_object({"ready": {"type": "boolean"}}, ["ready"]),
        ),  # fmt: skip
        "/v2/models/{name}": _get("Model metadata", "v2", [_NAME_]),
        "/v2/models/{name}/versions/{version}": _get(
            "Model version metadata", "v2", [_NAME_, _VERSION]
        ),
        "/v2/models/{name}/ready": _get("Model readiness", "v2", [_NAME_]),
        "/v2/models/{name}/versions/{version}/ready": _get(
            "Model version readiness", "v2", [_NAME_, _VERSION]
        ),
        "/v2/models/{name}/config": _get("Model configuration (Triton)", "v2", [_NAME_]),
        "/v2/models/{name}/versions/{version}/config": _get(
            "Model version configuration (Triton)", "v2", [_NAME_, _VERSION]
        ),
        "/v2/models/stats": _get(
            "Inference statistics of every model (Triton; this worker's counts)", "v2",
            errors=(), ok_schema=_STATS_OK,
        ),  # fmt: skip
        "/v2/models/{name}/stats": _get(
            "Inference statistics of one model (Triton)", "v2", [_NAME_], ok_schema=_STATS_OK
        ),
        "/v2/models/{name}/versions/{version}/stats": _get(
            "Inference statistics of one model version (Triton)", "v2", [_NAME_, _VERSION],
            ok_schema=_STATS_OK,
        ),  # fmt: skip
        "/v2/repository/index": _repository(
            "Every model of the store and its state (Triton)", None,
            {**_object({"ready": {"type": "boolean"}}, []), "additionalProperties": False},
            (400, 413, 415), tag="v2",
        ),  # fmt: skip
        "/v2/repository/models/{name}/load": _repository(
            "Serve a model again in this worker, re-read from the store (admin)", _NAME_,
            _parameters_body({}), (400, 404, 413, 415, 503),
        ),  # fmt: skip
        "/v2/repository/models/{name}/unload": _repository(
            "Stop serving a model in this worker until it is loaded (admin)", _NAME_,
            _parameters_body({"unload_dependents": {"type": "boolean"}}), (400, 404, 413, 415),
        ),  # fmt: skip
        "/v2/models/{name}/infer": _post(
            "Inference (KServe V2 / Open Inference Protocol)", "v2", v2_body,
            [_NAME_, _QUERY_REF[1]], ok_schema=_V2_OK,  # ?alias=: mlserve's addition
        ),
        "/v2/models/{name}/versions/{version}/infer": _post(
            "Inference with one version", "v2", v2_body, [_NAME_, _VERSION]
        ),
        "/invocations": _post(
            "MLflow scoring protocol (the default model)", "mlflow", mlflow_body, _QUERY_REF
        ),
        "/ping": _get("Health (MLflow)", "mlflow", errors=(), ok_schema=_HEALTH_OK, guarded=False),
        "/health": _get("Health (MLflow)", "mlflow", errors=(), ok_schema=_HEALTH_OK, guarded=False),
        "/version": _get("Server version (MLflow)", "mlflow", errors=()),
        "/predict/{name}": _post(
            "Predict one row or a batch", "simple", simple_body, [_NAME_, *_QUERY_REF],
            ok_schema=_SIMPLE_OK,
        ),  # fmt: skip
        "/recommend/{name}": _post(
            "Top-k items for users, or for a new user's history (a Recommender)", "recommend",
            _RECOMMEND_BODY, [_NAME_, *_QUERY_REF], ok_schema=_RECOMMEND_OK,
        ),  # fmt: skip
        "/similar/{name}": _post(
            "The k most similar items by cosine (a Recommender)", "recommend", _SIMILAR_BODY,
            [_NAME_, *_QUERY_REF], ok_schema=_RECOMMEND_OK,
        ),  # fmt: skip
        "/models": _get("List models, versions, aliases and input shapes", "simple", errors=()),
        "/models/{name}": _get("One model's versions, aliases and shapes", "simple", [_NAME_]),
        "/drift/{name}": _get(
            "Drift of the served rows against the training data: PSI and KS per feature"
            " (MLSERVE_DRIFT; 404 when off)",
            "operations",
            [_NAME_, *_QUERY_REF],
        ),
        "/admin/reload": {
            "post": {
                "summary": "Re-read the store now (new versions, moved aliases)",
                "tags": ["admin"],
                "responses": _responses("Reloaded", 404),  # 404: admin disabled
            }
        },
        "/openapi.json": _get("This document", "docs", errors=()),
        "/docs": _html("This document in Swagger UI (served by the app, works offline)"),
        "/docs/assets/{name}": _get(
            "A file of Swagger UI (a fixed list)", "docs",
            [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
        ),
        "/ui": _html("Models, versions, aliases, canary weights, request rate and latency, refreshing",
                     [{"name": "refresh", "in": "query", "required": False,
                       "schema": {"type": "number", "minimum": 1, "default": 3},
                       "description": "seconds between refreshes"}]),
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics (all gunicorn workers)",
                "tags": ["operations"],
                "responses": {
                    **_responses("Metrics in the Prometheus text format", 404),
                    "200": {
                        "description": "Metrics in the Prometheus text format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                },
            }
        },
    }
    document = {
        "openapi": "3.1.0",
        "info": {"title": "mlserve", "version": mlserve.__version__},
        "servers": [{"url": prefix or "/"}],
        "paths": paths,
        "security": [{}, {"bearer": []}, {"apiKey": []}],
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
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
    for name, schema in (input_schemas or {}).items():
        document["components"]["schemas"][f"{name}.record"] = record_schema(schema)
    return document
