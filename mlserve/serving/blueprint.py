"""The Flask blueprint: routes for TF Serving/KServe V1, KServe V2, MLflow and simple clients.

``mlserve.blueprint(store)`` returns a new Blueprint each call (there is no
module-level blueprint); registering it on an app creates that app's
:class:`~mlserve.serving.runtime.ServingState` in ``app.extensions["mlserve"]``,
keyed by the blueprint's registered name, and loads and warms the models.
Views reach their state through ``current_app``.
"""

from __future__ import annotations

import os
import re
import time
import zlib
from functools import partial
from typing import Any, Callable, Mapping

import numpy as np
from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

import mlserve
from mlserve.serving import codecs, images, recommend, tabular, ui
from mlserve.serving.cache import cache_key
from mlserve.serving.commands import register_flask_commands
from mlserve.serving.config import ServingConfig
from mlserve.serving.errors import (
    BadRequest,
    MethodNotAllowed,
    ModelNotFound,
    PayloadTooLarge,
    UnsupportedMediaType,
    render_error,
)
from mlserve.serving.deferred import FLUSH_INTERVAL_SECONDS
from mlserve.serving.drift import DriftMonitor
from mlserve.serving.explain import EXPLAIN, explain_rows, require_explainable
from mlserve.serving.hooks import ServingBlueprint
from mlserve.serving.metrics import (
    MULTIPROC_ENV,
    REQUEST_ID_HEADER,
    RequestMetrics,
    RequestRecord,
    render_metrics,
    request_id_from,
)
from mlserve.serving.registry import EXTENSION_KEY, serving_state
from mlserve.serving.runtime import (
    PREDICT,
    PREDICT_PROBA,
    TRANSFORM,
    LoadedModel,
    ServingState,
    Timings,
    predict,
)
from mlserve.serving.security import Guard
from mlserve.serving.shadow import ShadowMirror, served_alias
from mlserve.store import ModelStore

__all__ = ["blueprint", "serving_state"]

JSON = "application/json"
NPY = "application/x-npy"
OCTET = "application/octet-stream"
CSV = "text/csv"
READ_CHUNK = 1 << 16
DRAIN_LIMIT_BYTES = 8 << 20  # drain refused bodies up to this size to keep the connection
REQUEST_ID_ENVIRON = "HTTP_" + REQUEST_ID_HEADER.upper().replace("-", "_")
#: environ key of an error the WSGI fast path (serving/fastpath.py) met while predicting
FAST_PATH_ERROR = "mlserve.fast_path_error"
#: the routes whose requests count in the V2 statistics (GET /v2/models/stats);
#: grpc_infer is the gRPC ModelInfer (mlserve.serving.grpc_service)
INFERENCE_ENDPOINTS = ("v1_model", "v2_infer", "v2_infer_version", "invocations", "predict",
                       "recommend", "similar", "grpc_infer")  # fmt: skip
#: methods a route of the blueprint answers with a JSON 405 when it does not take them
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE")
SERVING_DEFAULT = "serving_default"  # TF Serving's default signature name
#: mounted at the root of an app, the paths below which unknown URLs get a JSON 404
ROOT_MOUNT_PATHS = ("/v1", "/v2", "/predict", "/models", "/admin", "/docs", "/drift")

_V1_TARGET = re.compile(
    r"(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
    r"(?::(?P<verb>[a-zA-Z]+)|/(?P<resource>metadata))?"
)


def blueprint(
    store: ModelStore | str,
    *,
    name: str = "mlserve",
    max_body_bytes: int | None = None,
    reload_interval: float | None = None,
    default_model: str | None = None,
    default_alias: str | None = None,
    warmup: bool | None = None,
    admin_enabled: bool | None = None,
) -> ServingBlueprint:
    """A Flask blueprint that serves the models of ``store``.

    Parameters
    ----------
    store : ModelStore or path
        The model store to serve from.
    name : str, default "mlserve"
        The blueprint's name (and its ``flask <name> ...`` command group).
    max_body_bytes, reload_interval, default_model, default_alias, warmup, admin_enabled
        Override the app's ``MLSERVE_MAX_BODY_BYTES``, ``MLSERVE_RELOAD_INTERVAL``,
        ``MLSERVE_DEFAULT_MODEL``, ``MLSERVE_DEFAULT_ALIAS``, ``MLSERVE_WARMUP``
        and ``MLSERVE_ADMIN_ENABLED`` (see :data:`mlserve.serving.config.DEFAULTS`).

    Returns
    -------
    ServingBlueprint
        A Flask Blueprint with ``preprocessor(model)`` / ``postprocessor(model)``
        decorators for custom hooks around ``/predict/<model>`` (mlserve.serving.hooks).

    Examples
    --------
    >>> app.register_blueprint(mlserve.blueprint(store), url_prefix="/ml")
    """
    if not isinstance(store, ModelStore):
        store = ModelStore(store)
    overrides = {
        "MLSERVE_MAX_BODY_BYTES": max_body_bytes,
        "MLSERVE_RELOAD_INTERVAL": reload_interval,
        "MLSERVE_DEFAULT_MODEL": default_model,
        "MLSERVE_DEFAULT_ALIAS": default_alias,
        "MLSERVE_WARMUP": warmup,
        "MLSERVE_ADMIN_ENABLED": admin_enabled,
    }
    bp = ServingBlueprint(name, __name__, cli_group=name)

    @bp.record
    def _create_state(setup: Any) -> None:
        key = ".".join(p for p in (setup.name_prefix, setup.name) if p)
        config = ServingConfig.from_mapping(setup.app.config, overrides)
        state = ServingState(store, config)
        state.guard = Guard(config)
        state.request_metrics = RequestMetrics(INFERENCE_ENDPOINTS)
        state.hooks = bp.hooks  # the same object: hooks added after registering count too
        if config.drift:
            state.drift = DriftMonitor(
                config.drift_window, config.drift_psi_threshold, str(store.root)
            )
        state.shadow = ShadowMirror(state, config.shadow_queue)
        state.refresh()
        setup.app.extensions.setdefault(EXTENSION_KEY, {})[key] = state

    _add_routes(bp)  # last: its routing fallbacks must come after every route
    register_flask_commands(bp)
    return bp


def _state() -> ServingState:
    """This request's ServingState (noted on the request by _served)."""
    return request._get_current_object().mlserve_state  # type: ignore[no-any-return]


# Every route is wrapped in _served instead of before/after/teardown hooks:
# Flask's hook dispatch (a coroutine check per hook and request) cost about as
# much as the hooks' own work, half of mlserve's overhead on a cheap request.


def _served(view: Callable[..., Any], endpoint: str) -> Callable[..., Response]:
    """``view`` with the per-request work of the blueprint around it.

    Notes the request's state and RequestRecord on the request, authenticates,
    authorizes and rate-limits (Guard), refreshes the store when due, turns
    errors into JSON responses (_handle_error), and when the response leaves
    adds X-Request-ID and CORS headers and counts and logs the request. The
    route takes OPTIONS itself (no automatic OPTIONS), so a CORS preflight
    passes here too: it gets Flask's default answer, without a key check.
    """

    def serve(**view_args: Any) -> Response:
        req = request._get_current_object()
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        state: ServingState = app.extensions[EXTENSION_KEY][req.blueprint]
        environ = req.environ
        record = RequestRecord(request_id_from(environ.get(REQUEST_ID_ENVIRON)), endpoint)
        req.mlserve_state = state  # type: ignore[attr-defined]
        req.mlserve_record = record  # type: ignore[attr-defined]
        metrics = state.request_metrics
        metrics.started(record)  # in flight until record.finish
        try:
            try:
                if req.method == "OPTIONS":
                    response = app.make_default_options_response()
                else:
                    guard = state.guard
                    if guard.active:
                        key = guard.check(
                            endpoint, req.method, req.headers, req.remote_addr,
                            lambda: _requested_model(req, state, endpoint),
                        )  # fmt: skip
                        record.key_id = key.id if key is not None else None
                    state.maybe_refresh()
                    response = view(**view_args)
            except Exception as exc:  # noqa: BLE001 - the blueprint's one error path
                response = _handle_error(exc)  # re-raises what is not a client error
            if not isinstance(response, Response):
                response = app.make_response(response)
            response.headers.add(REQUEST_ID_HEADER, record.request_id)
            if state.config.cache is not None and "mlserve_cache" in req.__dict__:
                response.headers.add("X-Cache", req.__dict__["mlserve_cache"])
            record.finish(metrics, response.status_code, req, state.config.access_log)
            if "mlserve_payload" in req.__dict__:  # noted by _predict (MLSERVE_PAYLOAD_LOG)
                _log_payload(state, record, response.status_code, req.__dict__["mlserve_payload"])
            if state.guard.cors_origins is not None:
                state.guard.cors_headers(app, response)
            return response
        finally:
            if not record.done:  # an error no handler turned into a response: Flask's 500
                record.finish(metrics, 500, req, state.config.access_log)

    serve.__name__ = serve.__qualname__ = getattr(view, "__name__", endpoint)
    serve.__doc__ = view.__doc__
    return serve


def _context() -> tuple[Any, ServingState, RequestRecord]:
    """This request, its ServingState and its RequestRecord (as _served noted them).

    The predict views take these once and pass them on: every werkzeug proxy
    access costs a context lookup.
    """
    req = request._get_current_object()
    return req, req.mlserve_state, req.mlserve_record


def _requested_model(req: Any, state: ServingState, endpoint: str) -> str | None:
    """The model a predict request names (for predict:<model> scopes and per-model limits)."""
    args = req.view_args or {}
    if endpoint == "v1_model":
        match = _V1_TARGET.fullmatch(args.get("target", ""))
        return match["name"] if match else None
    if endpoint == "invocations":
        try:
            return state.default_model_name()
        except ModelNotFound:
            return None
    return args.get("name")  # type: ignore[no-any-return]


def _select(
    state: ServingState, record: RequestRecord, name: str, version: str | int | None = None,
    alias: str | None = None,
) -> LoadedModel:  # fmt: skip
    """state.select, noting the model and version for the metrics and the access log."""
    header = state.config.canary_key_header
    sticky_key = request.headers.get(header) if header else None
    loaded = state.select(name, version, alias, sticky_key=sticky_key or None)
    record.model, record.version = loaded.name, str(loaded.version)
    shadows = state.manifest(name).shadows
    if shadows:  # shadow traffic (mlserve.serving.shadow): noted for _predict
        served = served_alias(state.manifest(name), version, alias, state.config.default_alias)
        target = shadows.get(served) if served is not None else None
        if target is not None and target != loaded.version:
            request._get_current_object().mlserve_shadow = (served, target)
    return loaded


def _predict(
    state: ServingState, record: RequestRecord, loaded: LoadedModel, rows: np.ndarray,
    outputs: Any, timings: Timings, pending: Exception | None = None,
) -> dict[str, np.ndarray]:  # fmt: skip
    """runtime.predict after the MLSERVE_MAX_ROWS check, noting the row count.

    ``pending``: the error this request's prediction already raised in the
    WSGI fast path (mlserve.serving.fastpath), raised here instead of predicting again.
    """
    n_rows = int(rows.shape[0]) if rows.ndim else 1
    record.rows = n_rows
    record.timings = timings  # for the V2 statistics, read when the request ends
    _check_rows(n_rows, state)
    if pending is not None:
        raise pending
    cache = state.config.cache
    key = None
    if cache is not None and n_rows:
        hit, key, outputs = _cache_lookup(cache, loaded, rows, outputs, timings)
        if hit is not None:
            if state.config.payload_log is not None:
                _note_payload(state.config.payload_log, loaded, rows, hit)
            _observed(state, loaded, rows, hit)
            return hit
    results = predict(loaded, rows, outputs, timings)
    if state.config.payload_log is not None:
        _note_payload(state.config.payload_log, loaded, rows, results)
    if key is not None:
        cache.put(loaded.name, key, results, cache.ttl_for(loaded.name))
    _observed(state, loaded, rows, results)
    # a batcher reports its own core calls (its listener, runtime._with_batcher)
    if loaded.batcher is None and n_rows:
        state.request_metrics.observe_execution(
            loaded.name, loaded.version, n_rows, timings.compute
        )
    return results


def _note_payload(
    payload_log: Any, loaded: LoadedModel, rows: np.ndarray, results: dict[str, np.ndarray]
) -> None:
    """Note a sampled request's rows and results; _served queues them when the response leaves."""
    if payload_log.sampled():
        req = request._get_current_object()
        req.mlserve_payload = (loaded.name, loaded.version, rows, results)  # type: ignore[attr-defined]


def _log_payload(state: ServingState, record: RequestRecord, status: int, noted: tuple) -> None:
    name, version, rows, results = noted
    latency_ms = (time.perf_counter() - record.start) * 1000.0
    state.config.payload_log.submit(
        record.request_id, record.endpoint, name, version, status, latency_ms, rows, results
    )


def _observed(
    state: ServingState, loaded: LoadedModel, rows: np.ndarray, results: dict[str, np.ndarray]
) -> None:
    """Hand an answered request to drift monitoring and to its shadow (each one append)."""
    drift = state.drift
    if drift is not None:
        drift.observe(loaded, rows, results)
    try:
        shadows = state.manifest(loaded.name).shadows
    except ModelNotFound:  # unloaded from this worker since the request chose it
        return
    if shadows:
        target = request._get_current_object().__dict__.get("mlserve_shadow")
        if target is not None:
            state.shadow.observe(loaded, target[0], target[1], rows, results)


def _cache_lookup(
    cache: Any, loaded: LoadedModel, rows: np.ndarray, outputs: Any, timings: Timings,
) -> tuple[dict[str, np.ndarray] | None, str | None, Any]:  # fmt: skip
    """(the cached results or None, the key to store under or None, the outputs).

    Notes hit/miss on the request for the X-Cache header."""
    if cache.ttl_for(loaded.name) is None:  # MLSERVE_CACHE_MODELS turns this model off
        return None, None, outputs
    outputs = tuple(outputs)
    key = cache_key(loaded.name, loaded.version, outputs, rows)
    results = cache.get(loaded.name, key)
    req = request._get_current_object()
    if results is not None and all(name in results for name in outputs):
        req.mlserve_cache = "hit"  # type: ignore[attr-defined]
        timings.batch = rows.shape[0]
        return {name: results[name] for name in outputs}, None, outputs
    req.mlserve_cache = "miss"  # type: ignore[attr-defined]
    return None, key, outputs


def _check_rows(n_rows: int, state: ServingState) -> None:
    limit = state.config.max_rows
    if n_rows > limit:
        raise PayloadTooLarge(
            f"the request has {n_rows} rows; the limit is {limit} (MLSERVE_MAX_ROWS)"
        )


def _handle_error(exc: Exception) -> Response:
    if isinstance(exc, HTTPException) and exc.code and exc.code < 400:
        return exc  # redirects are not errors
    _discard_unread_body()
    return render_error(exc)


def _discard_unread_body() -> None:
    """Read and drop what is left of a refused request's body (up to DRAIN_LIMIT_BYTES).

    A body left unread stays on the connection: gunicorn drains only a little
    of it and otherwise closes the connection, so a keep-alive client's next
    request on it would fail. A body larger than the limit is left alone (the
    connection closes; the client reconnects).
    """
    if getattr(request, "_cached_data", None) is not None:
        return  # the body was read whole
    length = request.content_length
    if length is not None and length > DRAIN_LIMIT_BYTES:
        return
    try:
        stream = request.stream
        total = 0
        while total <= DRAIN_LIMIT_BYTES:
            chunk = stream.read(READ_CHUNK)
            if not chunk:
                break
            total += len(chunk)
    except Exception:  # a client that went away: nothing left to keep alive
        pass


# ----------------------------------------------------------------- helpers


def _read_body(request: Any, state: ServingState) -> bytes:
    """The request body, refusing (413) anything over MLSERVE_MAX_BODY_BYTES."""
    limit = state.config.max_body_bytes
    environ = request.environ
    raw_length = environ.get("CONTENT_LENGTH")
    if (
        raw_length
        and raw_length.isdigit()
        and "HTTP_CONTENT_ENCODING" not in environ
        and "HTTP_TRANSFER_ENCODING" not in environ
        and getattr(request, "_cached_data", None) is None
        and request.max_content_length is None  # else werkzeug enforces MAX_CONTENT_LENGTH
    ):
        # the common case, without werkzeug's stream wrappers: one read of a known length
        length = int(raw_length)
        if length > limit:
            raise PayloadTooLarge(
                f"request body is {length} bytes; the limit is {limit} (MLSERVE_MAX_BODY_BYTES)"
            )
        body = environ["wsgi.input"].read(length) if length else b""
        if len(body) != length:
            raise BadRequest(f"the request body ended after {len(body)} of {length} bytes")
        request._cached_data = body  # for request.get_data() and the error path
        return body
    length = request.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(
            f"request body is {length} bytes; the limit is {limit} (MLSERVE_MAX_BODY_BYTES)"
        )
    if length is not None:
        body = request.get_data(cache=True)
    else:
        chunks, total = [], 0
        stream = request.stream
        while True:
            chunk = stream.read(READ_CHUNK)
            if not chunk:
                break
            total += len(chunk)
            if total > limit:
                raise PayloadTooLarge(
                    f"request body is over the limit of {limit} bytes (MLSERVE_MAX_BODY_BYTES)"
                )
            chunks.append(chunk)
        body = b"".join(chunks)
    encoding = (request.headers.get("Content-Encoding") or "identity").lower()
    if encoding in ("gzip", "deflate"):
        body = _decompress(body, encoding, limit)
    elif encoding != "identity":
        raise UnsupportedMediaType(
            f"unsupported Content-Encoding {encoding!r}; use gzip or deflate"
        )
    return body


def _decompress(body: bytes, encoding: str, limit: int) -> bytes:
    wbits = 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS
    decompressor = zlib.decompressobj(wbits)
    try:
        data = decompressor.decompress(body, limit + 1)
    except zlib.error as exc:
        raise BadRequest(f"malformed {encoding} body: {exc}") from None
    if len(data) > limit or decompressor.unconsumed_tail:
        raise PayloadTooLarge(
            f"decompressed request body is over the limit of {limit} bytes (MLSERVE_MAX_BODY_BYTES)"
        )
    return data


def _mimetype(request: Any) -> str:
    content_type = request.environ.get("CONTENT_TYPE")
    if content_type == JSON:  # the usual exact header, without parsing it
        return JSON
    return request.mimetype or ""


def _require_mimetype(request: Any, *allowed: str) -> str:
    """The request's mimetype if allowed (a missing Content-Type counts as JSON), else 415."""
    mimetype = _mimetype(request)
    if mimetype == "" or mimetype in allowed or (JSON in allowed and mimetype.endswith("+json")):
        return mimetype
    raise UnsupportedMediaType(
        f"unsupported Content-Type {request.content_type!r}; send {' or '.join(allowed)}"
    )


def _finish(response: Response, loaded: LoadedModel, timings: Timings) -> Response:
    headers = response.headers  # a new response: add() skips set()'s search for the name
    headers.add("X-Model-Version", str(loaded.version))
    headers.add("Server-Timing", timings.header())
    return response


def _predict_response(payload: Any) -> Response:
    """A predict endpoint's JSON response, encoded in C (output arrays never become lists)."""
    # content_type, not mimetype: the same header without werkzeug's charset rules
    return Response(codecs.encode_json(payload), content_type=JSON)


def _json_response(payload: Any, status: int = 200) -> Response:
    response = jsonify(payload)
    response.status_code = status
    return response


def _since(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


def _parse_query_ref(request: Any) -> tuple[str | None, str | None]:
    return request.args.get("version"), request.args.get("alias")


# ------------------------------------------------------------------ routes


def _add_routes(bp: Blueprint) -> None:
    rules: list[tuple[str, set[str]]] = []  # each route's rule and the methods it takes

    def route(rule: str, endpoint: str, view: Callable[..., Any], methods: list[str]) -> None:
        bp.add_url_rule(rule, endpoint, _served(view, endpoint), methods=[*methods, "OPTIONS"])
        rules.append((rule, {*methods, "OPTIONS", *(["HEAD"] if "GET" in methods else [])}))

    # KServe V1 liveness at the mount point (only where it shadows no page: _add_fallbacks)
    root_live = _served(_root_live, "root_live")
    # TF Serving / KServe V1
    route("/v1/models", "v1_models", _v1_models, methods=["GET"])
    route("/v1/models/<path:target>", "v1_model", _v1_model, methods=["GET", "POST"])
    # KServe V2 / Open Inference Protocol
    route("/v2", "v2_server", _v2_server_metadata, methods=["GET"])
    route("/v2/health/live", "v2_live", _v2_live, methods=["GET"])
    route("/v2/health/ready", "v2_ready", _v2_ready, methods=["GET"])
    route("/v2/models/<name>", "v2_model", _v2_model_metadata, methods=["GET"])
    route(
        "/v2/models/<name>/versions/<version>",
        "v2_model_version",
        _v2_model_metadata,
        methods=["GET"],
    )
    route("/v2/models/<name>/ready", "v2_model_ready", _v2_model_ready, methods=["GET"])
    route(
        "/v2/models/<name>/versions/<version>/ready",
        "v2_model_version_ready",
        _v2_model_ready,
        methods=["GET"],
    )
    route("/v2/models/<name>/infer", "v2_infer", _v2_infer, methods=["POST"])
    # Triton's extensions: model configuration, statistics, model repository
    route("/v2/models/<name>/config", "v2_model_config", _v2_model_config, methods=["GET"])
    route(
        "/v2/models/<name>/versions/<version>/config",
        "v2_model_version_config",
        _v2_model_config,
        methods=["GET"],
    )
    route("/v2/models/stats", "v2_stats", _v2_stats, methods=["GET"])
    route("/v2/models/<name>/stats", "v2_model_stats", _v2_stats, methods=["GET"])
    route(
        "/v2/models/<name>/versions/<version>/stats",
        "v2_model_version_stats",
        _v2_stats,
        methods=["GET"],
    )
    route("/v2/repository/index", "repository_index", _repository_index, methods=["POST"])
    route(
        "/v2/repository/models/<name>/load", "repository_load", _repository_load, methods=["POST"]
    )
    route(
        "/v2/repository/models/<name>/unload",
        "repository_unload",
        _repository_unload,
        methods=["POST"],
    )
    route(
        "/v2/models/<name>/versions/<version>/infer",
        "v2_infer_version",
        _v2_infer,
        methods=["POST"],
    )
    # MLflow scoring protocol
    route("/invocations", "invocations", _mlflow_invocations, methods=["POST"])
    route("/ping", "ping", _ping, methods=["GET"])
    route("/health", "health", _ping, methods=["GET"])
    route("/version", "version", _version, methods=["GET"])
    # simple
    route("/predict/<name>", "predict", _simple_predict, methods=["POST"])
    # recommenders (mlserve.serving.recommend)
    route("/recommend/<name>", "recommend", _recommend, methods=["POST"])
    route("/similar/<name>", "similar", _similar, methods=["POST"])
    route("/models", "models", _models, methods=["GET"])
    route("/models/<name>", "model", _model, methods=["GET"])
    route("/drift/<name>", "drift", _drift, methods=["GET"])
    # admin, docs
    route("/admin/reload", "admin_reload", _admin_reload, methods=["POST"])
    route("/openapi.json", "openapi", _openapi, methods=["GET"])
    route("/metrics", "metrics", _metrics, methods=["GET"])
    # the API in a browser (mlserve.serving.ui): Swagger UI and the models page
    route("/docs", "docs", ui.docs_page, methods=["GET"])
    route("/docs/assets/<name>", "docs_asset", ui.docs_asset, methods=["GET"])
    route("/ui", "ui", ui.ui_page, methods=["GET"])

    @bp.record
    def _add_fallbacks(setup: Any) -> None:
        """JSON errors for what Flask's routing would answer in HTML under this mount.

        Routing fails before any view (so before _served) and a blueprint's error
        handlers never see it; app-wide handlers would change the host app's own
        pages. Rules do neither: each route gets a twin taking the other methods
        (a JSON 405 with Allow), and the paths below the mount point that match
        no route get a JSON 404. Mounted at the root of an app, only the
        blueprint's own path prefixes are claimed, so the host's pages keep their
        errors, and GET / is registered only if the app has no "/" of its own.
        """
        prefix = (setup.url_prefix or "").rstrip("/")
        app_rules = {rule.rule for rule in setup.app.url_map.iter_rules()}
        mounted = list(rules)
        if prefix or "/" not in app_rules:
            setup.add_url_rule("/", "root_live", root_live, methods=["GET", "OPTIONS"])
            mounted.append(("/", {"GET", "HEAD", "OPTIONS"}))
        wrong_method = _served(_wrong_method, "wrong_method")
        for rule, taken in mounted:
            setup.add_url_rule(
                rule, "wrong_method", wrong_method, provide_automatic_options=False,
                methods=[m for m in HTTP_METHODS if m not in taken],
            )  # fmt: skip
        no_route = _served(partial(_no_route, prefix), "no_route")
        roots = [""] if prefix else list(ROOT_MOUNT_PATHS)
        for root in roots:
            setup.add_url_rule(
                f"{root}/<path:rest>", "no_route", no_route, methods=list(HTTP_METHODS),
                provide_automatic_options=False,
            )  # fmt: skip


# ---------------------------------------------------------------------- V1


def _v1_models() -> Response:
    """The served model names (KServe V1 model listing)."""
    return _json_response({"models": _state().names()})


def _v1_model(target: str) -> Response:
    match = _V1_TARGET.fullmatch(target)
    if match is None:
        raise ModelNotFound(f"no such endpoint: /v1/models/{target}")
    name, version, label, verb, resource = match.group(
        "name", "version", "label", "verb", "resource"
    )
    req, state, record = _context()
    if req.method == "GET":
        if verb is not None:
            raise MethodNotAllowed(f"use POST for :{verb}")
        if resource == "metadata":
            loaded = _described(state, name, version, label)
            return _json_response(_v1_metadata(state, loaded))
        return _json_response(_v1_status(state, name, version, label))
    if verb is None or resource is not None:
        raise MethodNotAllowed(f"use GET for /v1/models/{target}; POST to :predict")
    if verb == "explain":
        return _v1_explain(req, state, record, name, version, label)
    if verb != "predict":
        raise ModelNotFound(f"unsupported verb :{verb}; mlserve supports :predict and :explain")
    start = time.perf_counter()
    timings = Timings()
    _require_mimetype(req, JSON)
    body = _read_body(req, state)
    loaded = _select(state, record, name, version, label)
    payload = codecs.decode_json(body)
    if images.is_image_model(loaded) and isinstance(payload, dict):
        blobs = images.b64_images(payload.get("instances"))
        if blobs is not None:  # TF Serving's {"instances": [{"b64": ...}]}
            return _image_answer(state, record, loaded, blobs, payload, start, timings,
                                 envelope=False)  # fmt: skip
    decoded = codecs.decode_v1(payload, loaded)
    outputs = _signature_outputs(payload, loaded, decoded.outputs)
    timings.decode = _since(start)
    results = _predict(state, record, loaded, decoded.rows, outputs, timings,
                       req.environ.get(FAST_PATH_ERROR))  # fmt: skip
    start = time.perf_counter()
    response = _predict_response(codecs.encode_v1(results, decoded))
    timings.encode = _since(start)
    return _finish(response, loaded, timings)


def _v1_explain(
    req: Any, state: ServingState, record: RequestRecord, name: str, version: str | None,
    label: str | None,
) -> Response:  # fmt: skip
    """V1 :explain: ``{"explanations": ...}``, one row of contributions (bias last) per instance."""
    start = time.perf_counter()
    timings = Timings()
    _require_mimetype(req, JSON)
    body = _read_body(req, state)
    loaded = _select(state, record, name, version, label)
    require_explainable(loaded)
    payload = codecs.decode_json(body)
    for key in ("return", "signature_name"):
        if key in payload:
            raise BadRequest(f"{key!r} does not apply to :explain; drop it")
    decoded = codecs.decode_v1(payload, loaded)
    timings.decode = _since(start)
    contributions = _explain(state, record, loaded, decoded.rows, timings)
    start = time.perf_counter()
    response = _predict_response({"explanations": contributions})
    timings.encode = _since(start)
    return _finish(response, loaded, timings)


def _explain(
    state: ServingState, record: RequestRecord, loaded: LoadedModel, rows: np.ndarray,
    timings: Timings,
) -> np.ndarray:  # fmt: skip
    """explain_rows after the MLSERVE_MAX_ROWS check, noting the row count (like _predict)."""
    n_rows = int(rows.shape[0]) if rows.ndim else 1
    record.rows = n_rows
    record.timings = timings
    _check_rows(n_rows, state)
    contributions = explain_rows(loaded, rows, timings)
    state.request_metrics.observe_execution(loaded.name, loaded.version, n_rows, timings.compute)
    return contributions


def _serving(state: ServingState, name: str) -> tuple[str, list[int]]:
    """The alias a request for ``name`` without a version uses, and its versions, heaviest first."""
    alias, targets = state.store.serving(
        name, state.manifest(name), default_alias=state.config.default_alias
    )
    ordered = sorted(targets, key=lambda t: (-t.weight, t.version))
    return alias, [t.version for t in ordered]


def _described(
    state: ServingState, name: str, version: str | int | None, label: str | None
) -> LoadedModel:
    """The version a metadata request describes: the one it names, else what the default
    alias serves (of a canary split, its heaviest version, not a coin toss per request)."""
    if version is None and label is None:
        versions = _serving(state, name)[1]
        version = versions[0] if versions else None
    return state.select(name, version, label)


def _v1_status(state: ServingState, name: str, version: str | None, label: str | None) -> dict:
    # like TF Serving, the versions that answer requests: without a version, the
    # default alias's (the newest version when the model has no such alias)
    if version is not None or label is not None:
        versions = [state.select(name, version, label).version]
    else:
        versions = _serving(state, name)[1]
    return {
        "name": name,
        "ready": True,
        "model_version_status": [
            {
                "version": str(v),
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
            for v in versions
        ],
    }


def _v1_signatures(loaded: LoadedModel) -> dict[str, tuple[str, ...] | None]:
    """TF Serving signature names -> the outputs they select (None: as the body's "return" says).

    serving_default is the default (labels, or what "return" asks); each output
    of the model (predict, and predict_proba for a classifier) is a signature too.
    """
    return {SERVING_DEFAULT: None, **{name: (name,) for name in loaded.outputs}}


def _signature_outputs(
    payload: Any, loaded: LoadedModel, default: tuple[str, ...]
) -> tuple[str, ...]:
    """The outputs a V1 body's "signature_name" selects (``default`` for serving_default)."""
    signature = payload.get("signature_name") if isinstance(payload, dict) else None
    if signature is None or signature == SERVING_DEFAULT:
        return default
    signatures = _v1_signatures(loaded)
    if not isinstance(signature, str) or signature not in signatures:
        raise BadRequest(
            f"unknown signature_name {signature!r}; model {loaded.name!r} has the signatures "
            + ", ".join(signatures)
        )
    if "return" in payload:
        raise BadRequest(
            f"signature_name {signature!r} selects the outputs itself; drop 'return' "
            f"or use signature_name {SERVING_DEFAULT!r}"
        )
    return signatures[signature]  # type: ignore[return-value]


def _v1_inputs(loaded: LoadedModel) -> dict[str, Any]:
    """The signature's inputs: one row tensor, or a pipeline's named columns."""
    if tabular.is_pipeline(loaded):
        return {name: {"dtype": "DT_STRING" if dt == "BYTES" else "DT_DOUBLE", "shape": [-1]}
                for name, dt in tabular.column_datatypes(loaded)}
    return {"input": {"dtype": "DT_DOUBLE", "shape": [-1, loaded.n_features]}}


def _v1_signature_defs(loaded: LoadedModel) -> dict[str, Any]:
    """TF Serving's SignatureDefMap of the model: one entry per _v1_signatures name."""
    inputs = _v1_inputs(loaded)
    defs = {}
    for signature, outputs in _v1_signatures(loaded).items():
        specs = [loaded.outputs[o] for o in outputs or (PREDICT,)]
        defs[signature] = {
            "inputs": inputs,
            "outputs": {
                o.name: {"dtype": codecs.v2_datatype(o.dtype), "shape": [-1, *o.shape]}
                for o in specs
            },
            "method_name": "tensorflow/serving/predict",
        }
    return defs


def _v1_metadata(state: ServingState, loaded: LoadedModel) -> dict:
    alias, versions = _serving(state, loaded.name)
    return {
        "model_spec": {"name": loaded.name, "version": str(loaded.version)},
        "metadata": {
            "signature_def": {
                "inputs": _v1_inputs(loaded),
                "outputs": {
                    o.name: {"dtype": codecs.v2_datatype(o.dtype), "shape": [-1, *o.shape]}
                    for o in loaded.outputs.values()
                },
                "signature_def": _v1_signature_defs(loaded),  # the names signature_name takes
            },
            "mlserve": {
                "latest_version": str(state.manifest(loaded.name).latest),
                "serving": {"alias": alias, "versions": [str(v) for v in versions]},
            },
        },
    }


# ---------------------------------------------------------------------- V2


def _v2_server_metadata() -> Response:
    return _json_response(
        {
            "name": "mlserve",
            "version": mlserve.__version__,
            "extensions": [
                "binary_tensor_data", "model_configuration", "statistics",
                "model_repository", "model_repository(unload_dependents)",
            ],
        }  # fmt: skip
    )


def _v2_live() -> Response:
    return _json_response({"live": True})


def _v2_ready() -> Response:
    ready = _state().ready
    return _json_response({"ready": ready}, 200 if ready else 503)


def _v2_model_metadata(name: str, version: str | None = None) -> Response:
    state = _state()
    loaded = _described(state, name, version, None)
    manifest = state.manifest(name)
    alias, serving_versions = _serving(state, name)
    inputs = [{"name": "input", "datatype": "FP64", "shape": [-1, loaded.n_features]}]
    if loaded.input_shape is not None:  # a graph model: its input tensor's name and shape
        graph = loaded.metadata["graph"]
        shape = [-1, *loaded.input_shape]
        inputs = [{"name": graph["input_names"][0], "datatype": "FP32", "shape": shape}]
    if "image" in loaded.metadata:  # also takes encoded images (mlserve.serving.images)
        inputs[0]["parameters"] = {"image": images.describe(loaded)}
    if loaded.feature_names:
        inputs[0]["parameters"] = {"feature_names": list(loaded.feature_names)}
    if tabular.is_pipeline(loaded):  # one input per column: BYTES strings, FP64 numbers
        inputs = [{"name": n, "datatype": dt, "shape": [-1],
                   "parameters": {"kind": "string" if dt == "BYTES" else "numeric"}}
                  for n, dt in tabular.column_datatypes(loaded)]
    outputs = []
    if loaded.is_recommender:  # user ids in, items and scores out (mlserve.serving.recommend)
        meta = loaded.metadata
        ids = {"int": "INT64", "str": "BYTES"}
        inputs = [{"name": "users", "datatype": ids.get(meta.get("user_id_type"), "INT64"),
                   "shape": [-1]}]  # fmt: skip
        outputs = [
            {"name": "items", "datatype": ids.get(meta.get("item_id_type"), "INT64"),
             "shape": [-1, -1]},
            {"name": "scores", "datatype": codecs.v2_datatype(np.dtype(meta.get("dtype"))),
             "shape": [-1, -1]},
        ]  # fmt: skip
    for output in () if loaded.is_recommender else loaded.outputs.values():
        entry: dict[str, Any] = {
            "name": output.name,
            "datatype": codecs.v2_datatype(output.dtype),
            "shape": [-1, *output.shape],
        }
        if loaded.is_classifier:
            entry["parameters"] = {"classes": np.asarray(loaded.model.classes_).tolist()}
        elif loaded.is_clusterer:  # ids in [0, n_clusters); distances: one per center
            entry["parameters"] = {"n_clusters": _n_clusters(loaded)}
        outputs.append(entry)
    return _json_response(
        {
            "name": name,
            "versions": [str(v) for v in sorted(manifest.versions)],
            "platform": "mlserve",
            "inputs": inputs,
            "outputs": outputs,
            "parameters": {
                "version": str(loaded.version),
                "task": loaded.metadata.get("task"),
                "estimator": loaded.metadata.get("estimator"),
                # V2 parameters are flat strings/numbers: what a request without a version gets
                "latest_version": str(manifest.latest),
                "serving_alias": alias,
                "serving_versions": ",".join(str(v) for v in serving_versions),
            },
        }
    )


def _n_clusters(loaded: LoadedModel) -> int:
    return int(loaded.outputs[TRANSFORM].shape[0])


def _v2_model_ready(name: str, version: str | None = None) -> Response:
    loaded = _state().select(name, version)
    return _json_response({"name": name, "version": str(loaded.version), "ready": True})


def _v2_infer(name: str, version: str | None = None) -> Response:
    req, state, record = _context()
    start = time.perf_counter()
    timings = Timings()
    _require_mimetype(req, JSON, OCTET)
    body = _read_body(req, state)
    loaded = _select(state, record, name, version, req.args.get("alias"))  # ?alias=: mlserve's
    if loaded.is_recommender:
        return _v2_recommend(req, state, record, loaded, body, start, timings)
    header_length = req.headers.get("Inference-Header-Content-Length")
    if images.is_image_model(loaded):
        found = images.v2_request(body, header_length)
        if found is not None:  # a BYTES tensor of encoded images
            return _v2_images(state, record, loaded, found, start, timings)
    decoded = codecs.decode_v2(body, header_length, loaded)
    timings.decode = _since(start)
    wanted = tuple(output.name for output in decoded.outputs)
    results = _predict(state, record, loaded, decoded.rows, wanted, timings)
    start = time.perf_counter()
    payload, header_length = codecs.encode_v2(results, decoded, name, loaded.version)
    if header_length is None:
        response = Response(payload, mimetype=JSON)
    else:
        response = Response(payload, mimetype=OCTET)
        response.headers.add("Inference-Header-Content-Length", str(header_length))
    timings.encode = _since(start)
    return _finish(response, loaded, timings)


def _v2_images(
    state: ServingState, record: RequestRecord, loaded: LoadedModel, found: tuple,
    start: float, timings: Timings,
) -> Response:  # fmt: skip
    """V2 infer of encoded images: the model's outputs plus each image's label and probability."""
    header, _, blobs = found
    rows = images.to_rows(blobs, loaded, state.config.max_image_pixels)
    model_outputs = images.outputs_for(loaded, "label")
    request = codecs.V2Request(rows, [], header.get("id"))
    _, binary_default = codecs._v2_requested_outputs(
        {k: v for k, v in header.items() if k != "outputs"}, loaded
    )
    request.binary_default = binary_default
    names = [*model_outputs, *images.V2_EXTRA_OUTPUTS]
    wanted = header.get("outputs")
    if wanted is not None:
        if not isinstance(wanted, list) or not all(
            isinstance(w, dict) and isinstance(w.get("name"), str) for w in wanted
        ):
            raise BadRequest("'outputs' must be a list of {\"name\": ...} objects")
        unknown = [w["name"] for w in wanted if w["name"] not in names]
        if unknown:
            raise BadRequest(f"model {loaded.name!r} has no output {unknown[0]!r} for images; "
                             f"its outputs are {', '.join(names)}")
        names = [w["name"] for w in wanted]
    request.outputs = [codecs.V2Output(n, binary_default) for n in names]
    timings.decode = _since(start)
    results = _predict(state, record, loaded, rows, model_outputs, timings)
    start = time.perf_counter()
    results = images.v2_results(loaded, results)
    payload, header_length = codecs.encode_v2(results, request, loaded.name, loaded.version)
    if header_length is None:
        response = Response(payload, mimetype=JSON)
    else:
        response = Response(payload, mimetype=OCTET)
        response.headers.add("Inference-Header-Content-Length", str(header_length))
    timings.encode = _since(start)
    return _finish(response, loaded, timings)


# --------------------------------------- Triton: configuration, statistics, repository

#: V2 datatype -> Triton's model configuration DataType name
_TRITON_TYPES = {"BYTES": "TYPE_STRING", "BOOL": "TYPE_BOOL"}


def _triton_type(dtype: np.dtype) -> str:
    datatype = codecs.v2_datatype(dtype)
    return _TRITON_TYPES.get(datatype, "TYPE_" + datatype)


def _v2_model_config(name: str, version: str | None = None) -> Response:
    """Triton's model configuration (model_config.proto's ModelConfig as JSON)."""
    state = _state()
    loaded = state.select(name, version)
    # a request may carry up to MLSERVE_MAX_ROWS rows: the batch dimension is not
    # in dims, as for any Triton model with max_batch_size > 0
    outputs = []
    for output in loaded.outputs.values():
        entry: dict[str, Any] = {
            "name": output.name,
            "data_type": _triton_type(output.dtype),
            "dims": list(output.shape) or [1],
        }
        if not output.shape:  # one value per row: the response's shape is [rows]
            entry["reshape"] = {"shape": []}
        outputs.append(entry)
    parameters = {
        key: {"string_value": str(value)}
        for key, value in (
            ("task", loaded.metadata.get("task")),
            ("estimator", loaded.metadata.get("estimator")),
        )
        if value is not None
    }
    if loaded.feature_names:
        parameters["feature_names"] = {"string_value": ",".join(loaded.feature_names)}
    if loaded.is_classifier:
        classes = np.asarray(loaded.model.classes_).tolist()
        parameters["classes"] = {"string_value": ",".join(map(str, classes))}
    if loaded.is_clusterer:
        parameters["n_clusters"] = {"string_value": str(_n_clusters(loaded))}
    config: dict[str, Any] = {
        "name": name,
        "platform": "mlserve",
        "backend": "mlserve",
        "version_policy": {"all": {}},  # every published version answers when named
        "max_batch_size": state.config.max_rows,
        "input": [
            {
                "name": "input",
                "data_type": _triton_type(loaded.input_dtype),
                "format": "FORMAT_NONE",
                "dims": [loaded.n_features],
            }
        ],
        "output": outputs,
        "parameters": {"version": {"string_value": str(loaded.version)}, **parameters},
    }
    batching = state.config.batching_for(name)
    if batching.enabled:
        config["dynamic_batching"] = {
            "max_queue_delay_microseconds": int(batching.max_delay_ms * 1000),
            "preferred_batch_size": [batching.max_batch_size],
        }
    return _json_response(config)


def _v2_stats(name: str | None = None, version: str | None = None) -> Response:
    """Triton's statistics of this worker: GET /v2/models[/<name>[/versions/<v>]]/stats."""
    state = _state()
    state.request_metrics.flush()  # this worker's requests up to now
    stats = state.request_metrics.inference
    if name is None:
        served = set(state.names())
        wanted = {
            (model, number)
            for model, numbers in state.loaded_versions().items()
            for number in numbers
        } | {(model, number) for model, number in stats.counted() if model in served}
    else:
        manifest = state.manifest(name)  # 404 for an unknown or unloaded model
        if version is not None:
            number = state.store.resolve(name, version, manifest=manifest)  # 404 if absent
            wanted = {(name, number)}
        else:
            wanted = {(name, n) for n in state.loaded_versions().get(name, ())}
            wanted |= {(m, n) for m, n in stats.counted() if m == name and n in manifest.versions}
    return _json_response({"model_stats": stats.report(sorted(wanted))})


def _admin_body(
    req: Any, state: ServingState, known: Mapping[str, type], takes: str
) -> dict[str, Any]:
    """A repository request's optional body: {} or {"parameters": {...}} with ``known`` names.

    ``takes`` says what the endpoint takes, for the message that refuses another parameter.
    """
    _require_mimetype(req, JSON)
    body = _read_body(req, state)
    payload = codecs.decode_json(body) if body.strip() else {}  # a JSON object, or a 400
    if set(payload) - {"parameters"}:
        raise BadRequest(
            'the body must be empty or {"parameters": {...}}, got the keys '
            + ", ".join(map(repr, payload))
        )
    parameters = payload.get("parameters", {})
    if not isinstance(parameters, dict):
        raise BadRequest(f"'parameters' must be an object, got {type(parameters).__name__}")
    for key, value in parameters.items():
        if key not in known:
            raise BadRequest(f"unknown parameter {key!r}; {takes}")
        if not isinstance(value, known[key]):
            raise BadRequest(
                f"parameter {key!r} must be {known[key].__name__}, got {type(value).__name__}"
            )
    return parameters


def _repository_index() -> Response:
    """Triton's repository index: every model of the store, each version READY or not."""
    req, state, _ = _context()
    _require_mimetype(req, JSON)
    body = _read_body(req, state)
    payload = codecs.decode_json(body) if body.strip() else {}  # a JSON object, or a 400
    if set(payload) - {"ready"}:
        raise BadRequest(
            'the body must be empty or {"ready": true|false}, got the keys '
            + ", ".join(map(repr, payload))
        )
    ready_only = payload.get("ready", False)
    if not isinstance(ready_only, bool):
        raise BadRequest(f"'ready' must be true or false, got {ready_only!r}")
    served = set(state.names())
    index = []
    for name in state.store.names():
        if name in served:
            versions = sorted(state.manifest(name).versions)
            index += [{"name": name, "version": str(v), "state": "READY", "reason": ""}
                      for v in versions]  # fmt: skip
        elif not ready_only:
            reason = (
                f"unloaded (POST /v2/repository/models/{name}/load serves it again)"
                if name in state.unloaded
                else "cannot be loaded; the server log says why"
            )
            index.append({"name": name, "state": "UNAVAILABLE", "reason": reason})
    return _json_response(index)


def _repository_load(name: str) -> Response:
    """Load (or reload) a model: re-read it from the store and warm what it serves."""
    req, state, _ = _context()
    _require_admin(state)
    # Triton's "config" and "file:..." parameters would replace the model here
    _admin_body(
        req, state, {}, "load takes no parameters: a model changes only by publishing a "
        "new version to the store (mlserve publish)",
    )  # fmt: skip
    versions = state.load(name)
    return _json_response({"name": name, "loaded": [str(v) for v in versions]})


def _repository_unload(name: str) -> Response:
    """Stop serving a model in this worker until it is loaded again (the store is unchanged)."""
    req, state, _ = _context()
    _require_admin(state)
    # no mlserve model has dependents: the parameter is accepted and changes nothing
    _admin_body(req, state, {"unload_dependents": bool}, "unload takes 'unload_dependents'")
    state.manifest(name)  # 404 for a model this worker does not serve
    state.unload(name)
    return _json_response({"name": name, "unloaded": True})


# ------------------------------------------------------------------- MLflow


def _mlflow_invocations() -> Response:
    req, state, record = _context()
    start = time.perf_counter()
    timings = Timings()
    mimetype = _require_mimetype(req, JSON, CSV)
    body = _read_body(req, state)
    loaded = _select(state, record, state.default_model_name(), *_parse_query_ref(req))
    if mimetype == CSV:
        rows = codecs.decode_mlflow_csv(body, loaded)
        outputs: tuple[str, ...] = (PREDICT,)
    else:
        payload = codecs.decode_json(body)
        rows = codecs.decode_mlflow_json(payload, loaded)
        outputs = _mlflow_outputs(payload, loaded)
    timings.decode = _since(start)
    results = _predict(state, record, loaded, rows, outputs, timings)
    start = time.perf_counter()
    response = _predict_response(codecs.encode_mlflow(results))
    timings.encode = _since(start)
    return _finish(response, loaded, timings)


MLFLOW_OUTPUT_PARAM = "output"  # the one MLflow inference param mlserve reads


def _mlflow_outputs(payload: Any, loaded: LoadedModel) -> tuple[str, ...]:
    """The outputs an MLflow body's "params" select: {"output": "predict" | "proba" | "all"}."""
    params = payload.get("params") if isinstance(payload, dict) else None
    if params is None:
        return (PREDICT,)
    choices = ", ".join(map(repr, codecs.RETURN_CHOICES))
    known = f"{MLFLOW_OUTPUT_PARAM!r} ({choices})"
    if not isinstance(params, dict):
        raise BadRequest(f"'params' must be an object; known params: {known}; got {params!r}")
    unknown = [k for k in params if k != MLFLOW_OUTPUT_PARAM]
    if unknown:
        raise BadRequest(f"unknown params {', '.join(map(repr, unknown))}; known params: {known}")
    value = params.get(MLFLOW_OUTPUT_PARAM, "predict")
    outputs = codecs.RETURN_CHOICES.get(value) if isinstance(value, str) else None
    if outputs is None:
        raise BadRequest(f"params {MLFLOW_OUTPUT_PARAM!r} must be one of {choices}, got {value!r}")
    if loaded.is_clusterer or TRANSFORM in outputs:  # k-means: ids, "distances" or "all"
        return codecs.checked_outputs(value, outputs, loaded, f"model {loaded.name!r}")
    if PREDICT_PROBA in outputs and not loaded.is_classifier:
        raise BadRequest(
            f"params {MLFLOW_OUTPUT_PARAM!r} {value!r} asks for probabilities, and model "
            f"{loaded.name!r} is not a classifier; use 'predict'"
        )
    return outputs


def _root_live() -> Response:
    """KServe V1 liveness at the mount point, as KServe's model server answers it."""
    return _json_response({"status": "alive"})


def _ping() -> Response:
    return _json_response({"status": "ok"})


def _version() -> Response:
    return Response(mlserve.__version__, mimetype="text/plain")


# ------------------------------------------------------------------- simple


def _simple_predict(name: str) -> Response:
    req, state, record = _context()
    start = time.perf_counter()
    timings = Timings()
    if _mimetype(req) in images.UPLOAD_MIMETYPES:  # an image model's upload
        return _image_upload(req, state, record, name, start, timings)
    mimetype = _require_mimetype(req, JSON, NPY)
    body = _read_body(req, state)
    loaded = _select(state, record, name, *_parse_query_ref(req))
    hooks = state.hooks
    hooked = hooks is not None and (hooks.pre or hooks.post)  # no method call when none
    if mimetype == NPY and req.args.get("return") == EXPLAIN:
        require_explainable(loaded)
        decoded = codecs.decode_npy(body, loaded, (), max_rows=state.config.max_rows)
        return _simple_explain(req, state, record, loaded, decoded, start, timings)
    if mimetype == NPY:
        outputs = codecs.outputs_for_return(req.args.get("return"), loaded)
        decoded = codecs.decode_npy(body, loaded, outputs, max_rows=state.config.max_rows)
    elif hooked:  # custom hooks (mlserve.serving.hooks), in this thread, outside the batcher
        payload = hooks.preprocess(name, codecs.decode_json(body), record.request_id)
        decoded = codecs.decode_simple_json(payload, loaded)
    else:
        payload = codecs.decode_json(body)
        blobs = images.b64_images(payload.get("instances")) \
            if images.is_image_model(loaded) and isinstance(payload, dict) else None  # fmt: skip
        if blobs is not None:  # {"instances": [{"b64": ...}]} to an image model
            return _image_answer(state, record, loaded, blobs, payload, start, timings)
        # "return" may hold anything a client sent (an array decodes to an ndarray)
        if isinstance(payload, dict) and isinstance(payload.get("return"), str) \
                and payload["return"] == EXPLAIN:  # fmt: skip
            require_explainable(loaded)
            payload = {k: v for k, v in payload.items() if k != "return"}
            decoded = codecs.decode_simple_json(payload, loaded)
            return _simple_explain(req, state, record, loaded, decoded, start, timings)
        decoded = codecs.decode_simple_json(payload, loaded)
    timings.decode = _since(start)
    results = _predict(state, record, loaded, decoded.rows, decoded.outputs, timings)
    start = time.perf_counter()
    if hooked and name in hooks.post:
        response = _postprocessed(hooks, name, loaded, results, decoded, record)
        timings.encode = _since(start)
        return _finish(response, loaded, timings)
    if req.accept_mimetypes.best_match([JSON, NPY], default=JSON) == NPY and _wants_npy(req):
        response = Response(codecs.encode_npy(results), mimetype=NPY)
    else:
        response = _predict_response(codecs.encode_simple(results, decoded, name, loaded.version))
    timings.encode = _since(start)
    return _finish(response, loaded, timings)


def _image_upload(
    req: Any, state: ServingState, record: RequestRecord, name: str, start: float,
    timings: Timings,
) -> Response:  # fmt: skip
    """/predict/<name> with multipart/form-data (field ``file``) or a raw image/png|jpeg body."""
    mimetype = _mimetype(req)
    body = _read_body(req, state)
    loaded = _select(state, record, name, *_parse_query_ref(req))
    images.require_image_model(loaded)
    options: dict[str, Any] = dict(req.args.items())
    if mimetype == images.MULTIPART:
        blobs, form = images.multipart_images(body, req.content_type or "")
        options.update(form)
    else:
        blobs = [body]
    return _image_answer(state, record, loaded, blobs, options, start, timings)


def _image_answer(
    state: ServingState, record: RequestRecord, loaded: LoadedModel, blobs: list,
    options: Mapping[str, Any], start: float, timings: Timings, envelope: bool = True,
) -> Response:  # fmt: skip
    """Decode the images, run the one predict path, answer with labels and probabilities."""
    ret, k = images.options(options)
    rows = images.to_rows(blobs, loaded, state.config.max_image_pixels)
    timings.decode = _since(start)
    results = _predict(state, record, loaded, rows, images.outputs_for(loaded, ret), timings)
    start = time.perf_counter()
    payload = images.answer(loaded, results, ret, k)
    if envelope:
        payload = {"model": loaded.name, "version": loaded.version, **payload}
    response = _predict_response(payload)
    timings.encode = _since(start)
    return _finish(response, loaded, timings)


def _simple_explain(
    req: Any, state: ServingState, record: RequestRecord, loaded: LoadedModel,
    decoded: codecs.SimpleRequest, start: float, timings: Timings,
) -> Response:  # fmt: skip
    """/predict/<name> with "return": "explain": "explanation" (one row) or "explanations"."""
    timings.decode = _since(start)
    contributions = _explain(state, record, loaded, decoded.rows, timings)
    start = time.perf_counter()
    if req.accept_mimetypes.best_match([JSON, NPY], default=JSON) == NPY and _wants_npy(req):
        response = Response(codecs.encode_npy({EXPLAIN: contributions}), mimetype=NPY)
    else:
        key = "explanation" if decoded.single else "explanations"
        value = contributions[0] if decoded.single else contributions
        response = _predict_response({"model": loaded.name, "version": loaded.version, key: value})
    timings.encode = _since(start)
    return _finish(response, loaded, timings)


def _postprocessed(
    hooks: Any, name: str, loaded: LoadedModel, results: dict[str, np.ndarray],
    decoded: Any, record: RequestRecord,
) -> Response:  # fmt: skip
    """The response of model ``name``'s postprocessor (mlserve.serving.hooks)."""
    prediction = codecs.encode_simple(results, decoded, name, loaded.version)
    answer = hooks.postprocess(name, prediction, record.request_id)
    if isinstance(answer, Response):
        return answer
    try:
        return _predict_response(answer)
    except BadRequest:
        raise  # NaN or infinity in the answer: encode_json's own 400
    except Exception as exc:  # not JSON-able: the hook's bug, a 500
        raise hooks.failed("postprocessor", name, record.request_id, exc) from exc


# ------------------------------------------------------------- recommenders


def _recommender(state: ServingState, record: RequestRecord, name: str, req: Any) -> LoadedModel:
    loaded = _select(state, record, name, *_parse_query_ref(req))
    if not loaded.is_recommender:
        raise BadRequest(
            f"model {name!r} is not a recommender; use POST /predict/{name} for its predictions"
        )
    return loaded


def _recommend(name: str) -> Response:
    return _recommender_view(name, recommend.recommend_payload)


def _similar(name: str) -> Response:
    return _recommender_view(name, recommend.similar_payload)


def _recommender_view(name: str, answer: Callable[..., tuple[dict, int]]) -> Response:
    req, state, record = _context()
    start = time.perf_counter()
    timings = Timings()
    _require_mimetype(req, JSON)
    body = _read_body(req, state)
    loaded = _recommender(state, record, name, req)
    payload = codecs.decode_json(body)
    timings.decode = _since(start)
    start = time.perf_counter()
    result, n_rows = answer(loaded.model, payload)
    _check_rows(n_rows, state)
    record.rows = timings.batch = n_rows
    timings.compute = _since(start)
    state.request_metrics.inference.observe_execution(
        loaded.name, loaded.version, n_rows, timings.compute
    )
    return _finish(_json_response(result), loaded, timings)


def _v2_recommend(
    req: Any, state: ServingState, record: RequestRecord, loaded: LoadedModel, body: bytes,
    start: float, timings: Timings,
) -> Response:  # fmt: skip
    """V2 infer for a recommender: the user ids in, the items and scores out (JSON only)."""
    if req.headers.get("Inference-Header-Content-Length") is not None:
        raise BadRequest("a recommender takes V2 JSON, not binary tensors")
    payload = codecs.decode_json(body)
    timings.decode = _since(start)
    start = time.perf_counter()
    result = recommend.v2_recommend(loaded.model, payload, loaded.name, loaded.version)
    n_rows = int(result["outputs"][0]["shape"][0])
    _check_rows(n_rows, state)
    record.rows = timings.batch = n_rows
    timings.compute = _since(start)
    return _finish(_json_response(result), loaded, timings)


def _wants_npy(request: Any) -> bool:
    return NPY in (request.headers.get("Accept") or "")


def _models() -> Response:
    state = _state()
    alias = state.config.default_alias
    return _json_response(
        {
            "models": [
                state.store.describe(n, state.manifest(n), default_alias=alias)
                for n in state.names()
            ]
        }
    )


def _model(name: str) -> Response:
    """What a request for ``name`` without a version gets (the default alias), and the newest."""
    state = _state()
    manifest = state.manifest(name)
    described = state.store.describe(name, manifest, default_alias=state.config.default_alias)
    if manifest.shadows:  # each shadow with its agreement so far (mlserve.serving.shadow)
        classifier = described.get("task") in ("classification", "clustering")
        described["shadows"] = state.shadow.describe(name, manifest.shadows, classifier)
    return _json_response(described)


def _drift_report(state: ServingState, name: str, version: Any = None, alias: Any = None) -> dict:
    """The drift report of model ``name``: the version asked for, else the default alias's."""
    if version is not None or alias is not None:
        loaded = state.select(name, version, alias)
        versions = [(loaded.version, loaded)]
    else:
        versions = [(v, state.select(name, v)) for v in sorted(_serving(state, name)[1])]
    return state.drift.report(name, versions)


def _drift(name: str) -> Response:
    """Per feature PSI and KS of the served rows against the training data (MLSERVE_DRIFT)."""
    state = _state()
    if state.drift is None:
        raise ModelNotFound("drift monitoring is off; turn it on with MLSERVE_DRIFT=true")
    state.manifest(name)  # 404 for an unknown model
    if os.environ.get(MULTIPROC_ENV):
        time.sleep(2 * FLUSH_INTERVAL_SECONDS)  # the other workers' drift threads catch up
    report = _drift_report(state, name, *_parse_query_ref(request))
    state.drift.update_gauges(name, report)
    return _json_response(report)


# ------------------------------------------------------------- admin, docs


def _require_admin(state: ServingState) -> None:
    """404 unless the admin endpoints are on (see MLSERVE_ADMIN_ENABLED; scopes: the Guard)."""
    guard = state.guard
    if not guard.admin_enabled:
        raise ModelNotFound(f"the admin endpoints are disabled: {guard.admin_disabled_reason}")


def _admin_reload() -> Response:
    state = _state()
    _require_admin(state)
    loaded = state.refresh()
    return _json_response({"reloaded": True, "loaded": {k: v for k, v in loaded.items()}})


def _wrong_method(**_: Any) -> Response:
    """A route of the blueprint asked with a method it does not take (JSON 405)."""
    rule = request.url_rule
    allowed = sorted(
        {
            method
            for other in current_app.url_map.iter_rules()
            if other.rule == rule.rule and other.endpoint != rule.endpoint
            for method in other.methods or ()
        }
    )
    usable = [m for m in allowed if m not in ("HEAD", "OPTIONS")]
    raise MethodNotAllowed(
        f"method {request.method} is not allowed for {request.path}; use {' or '.join(usable)}",
        allowed,
    )


def _no_route(prefix: str, rest: str = "") -> Response:
    """A path below the blueprint's mount point ``prefix`` that names no route (JSON 404)."""
    raise ModelNotFound(
        f"no endpoint {request.path}; the endpoints are listed at {prefix}/openapi.json"
    )


def _metrics() -> Response:
    """Prometheus metrics (all gunicorn workers summed in multiprocess mode)."""
    if not _state().config.metrics_enabled:
        raise ModelNotFound("metrics are disabled (MLSERVE_METRICS_ENABLED)")
    # this worker's requests so far; the other workers' flushers run within
    # FLUSH_INTERVAL_SECONDS, so after twice that the sum holds every request
    # answered before the scrape
    _state().request_metrics.flush()
    if os.environ.get(MULTIPROC_ENV):
        time.sleep(2 * FLUSH_INTERVAL_SECONDS)
    state = _state()
    if state.drift is not None:  # the drift gauges, from every worker's window
        for name in state.names():
            try:
                state.drift.update_gauges(name, _drift_report(state, name))
            except Exception:  # noqa: BLE001 - a model that cannot report must not fail a scrape
                continue
    payload, content_type = render_metrics()
    return Response(payload, content_type=content_type)


def _openapi() -> Response:
    from mlserve.serving.openapi import openapi_document

    prefix = request.path[: -len("/openapi.json")]
    state = _state()
    example, width = None, None
    names = state.names()
    if names:
        try:
            loaded = state.select(names[0])
            example, width = loaded.name, loaded.n_features
        except Exception:  # noqa: BLE001  the document must not depend on a model loading
            example = names[0]
    schemas = {}  # pipelines: the record each takes
    for name in names:
        try:
            loaded = state.select(name)
        except Exception:  # noqa: BLE001, S112  as above: no schema for a model that fails
            continue
        if tabular.is_pipeline(loaded):
            schemas[name] = loaded.metadata["input_schema"]
    return _json_response(openapi_document(prefix, example, width, schemas))
