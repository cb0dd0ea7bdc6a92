"""The KServe V2 / Open Inference Protocol gRPC service (``inference.GRPCInferenceService``).

``mlserve serve --grpc-port 8001`` (or ``MLSERVE_GRPC_PORT``) runs it next to the
HTTP server; ``tritonclient.grpc`` and any other V2 gRPC client work unchanged::

    import numpy as np, tritonclient.grpc as grpcclient
    client = grpcclient.InferenceServerClient("127.0.0.1:8001")
    x = grpcclient.InferInput("input", [2, 4], "FP32")
    x.set_data_from_numpy(np.zeros((2, 4), np.float32))
    client.infer("churn", [x]).as_numpy("predict")

RPCs: ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata and
ModelInfer, with inputs as typed ``contents`` or as ``raw_input_contents``
(little-endian, row-major bytes). The answer's outputs are raw
(``raw_output_contents``) when the inputs were, typed otherwise; the request
parameter ``binary_data_output`` (bool) chooses explicitly. ``model_version``
names a version ("" for the default alias), the request parameter ``alias`` an
alias, as ``?alias=`` does over HTTP.

One predict path
----------------
The service answers from the same :class:`~mlserve.serving.runtime.ServingState`
as the HTTP blueprint of the same app: the store snapshot (aliases, versions,
canary splits, sticky canary keys from the ``MLSERVE_CANARY_KEY_HEADER``
metadata key, lower-cased as gRPC sends it), the loaded models and their
micro-batchers (HTTP and gRPC requests for one version share a batch), the
prediction cache, the Guard (API keys, scopes, rate limits) and the metrics.

Auth: the ``authorization`` metadata key carries the API key, as
``Bearer <key>`` or the bare key (``x-api-key`` works too). ServerLive and
ServerReady are health checks (open by default, as over HTTP); ModelReady and
the metadata RPCs need the ``read`` scope, ModelInfer ``predict`` or
``predict:<model>``.

Status codes: a client's mistake never gets UNKNOWN or INTERNAL.

=================== =========================================================
INVALID_ARGUMENT    malformed or mismatched inputs (HTTP 400), a request message
                    that does not parse (grpcio's own answer would be INTERNAL)
NOT_FOUND           unknown model, version or alias (404)
UNAUTHENTICATED     missing, unknown or malformed key (401)
PERMISSION_DENIED   a valid key without the scope (403)
RESOURCE_EXHAUSTED  rate limit (429, ``retry-after`` trailing metadata), more
                    rows than MLSERVE_MAX_ROWS (413), a message over
                    MLSERVE_MAX_BODY_BYTES or more RPCs at once than
                    MLSERVE_GRPC_MAX_CONCURRENT_RPCS (both refused by grpcio)
UNAVAILABLE         a model that cannot be loaded, a batch that timed out (503)
INTERNAL            a bug in mlserve (logged with the request id)
=================== =========================================================

Metrics: the HTTP series, with ``endpoint`` ``grpc_<rpc>`` (``grpc_infer``,
``grpc_model_metadata``, ...) and ``status`` the HTTP status the same outcome
gets over HTTP (200, 400, 404, ...), so one dashboard covers both protocols;
ModelInfer counts in the V2 statistics too. The access log gets one line per
RPC (path ``/inference.GRPCInferenceService/<rpc>``). The request id is the
``x-request-id`` metadata key's when it is a short token, and comes back in the
trailing metadata, as ``x-cache`` (hit or miss) does when the cache is on.

Process model
-------------
Under ``mlserve serve`` every gunicorn worker runs its own gRPC server on the
same port with SO_REUSEPORT (the kernel spreads connections over the workers),
started after the fork (gunicorn's post_worker_init) and stopped before the
worker's micro-batchers drain (worker_exit): grpcio's core is not fork-safe, so
the arbiter never imports grpc, and each worker's server answers from that
worker's state, with no second copy of the models or a hop to a sidecar.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent import futures
from typing import Any

import numpy as np

import mlserve
from mlserve.serving import codecs
from mlserve.serving.cache import cache_key
from mlserve.serving.errors import BadRequest, PayloadTooLarge, ServingError
from mlserve.serving.metrics import RequestRecord, request_id_from
from mlserve.serving.runtime import LoadedModel, ServingState, Timings, predict
from mlserve.store import ModelNotFoundError, StoreError

__all__ = ["SERVICE", "GrpcServer", "decode_infer_request", "start_grpc_server"]

log = logging.getLogger("mlserve.serving")

SERVICE = "inference.GRPCInferenceService"
#: Seconds in-flight RPCs get to finish when the server stops.
STOP_GRACE_SECONDS = 5.0
#: each RPC -> (the Guard's endpoint name, the metrics' endpoint name); the Guard's
#: names are the HTTP routes', so the scopes are the same for both protocols
ENDPOINTS = {
    "ServerLive": ("v2_live", "grpc_server_live"),
    "ServerReady": ("v2_ready", "grpc_server_ready"),
    "ModelReady": ("v2_model_ready", "grpc_model_ready"),
    "ServerMetadata": ("v2_server", "grpc_server_metadata"),
    "ModelMetadata": ("v2_model", "grpc_model_metadata"),
    "ModelInfer": ("v2_infer", "grpc_infer"),
}
#: the metrics' endpoint name of ModelInfer (counted in the V2 statistics)
INFER_ENDPOINT = ENDPOINTS["ModelInfer"][1]

#: typed contents field of each V2 datatype (FP16 has none: it travels raw only)
_CONTENTS_FIELDS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
#: the numpy dtype a contents field holds its values as (before the datatype's own check)
_CONTENTS_DTYPES = {
    "bool_contents": np.bool_,
    "int_contents": np.int64,
    "int64_contents": np.int64,
    "uint_contents": np.uint64,
    "uint64_contents": np.uint64,
    "fp32_contents": np.float32,
    "fp64_contents": np.float64,
}
_INPUT_DATATYPES = ", ".join(codecs._V2_INPUT_DATATYPES)


def _status_codes() -> dict[int, Any]:
    import grpc

    code = grpc.StatusCode
    return {
        400: code.INVALID_ARGUMENT,
        401: code.UNAUTHENTICATED,
        403: code.PERMISSION_DENIED,
        404: code.NOT_FOUND,
        405: code.INVALID_ARGUMENT,
        413: code.RESOURCE_EXHAUSTED,
        415: code.INVALID_ARGUMENT,
        429: code.RESOURCE_EXHAUSTED,
        503: code.UNAVAILABLE,
    }


# ------------------------------------------------------------------ decoding


def _parameter(parameters: Mapping[str, Any], key: str, kind: str, what: str) -> Any:
    """The value of InferParameter ``key`` if set (``kind``: bool_param, string_param...)."""
    if key not in parameters:
        return None
    parameter = parameters[key]
    choice = parameter.WhichOneof("parameter_choice")
    if choice != kind:
        wanted = {"bool_param": "a bool", "string_param": "a string", "int64_param": "an int64"}
        raise BadRequest(f"{what} parameter {key!r} must be {wanted[kind]}_param, got {choice}")
    return getattr(parameter, kind)


def _input_array(tensor: Any, position: int, raw: Any) -> np.ndarray:
    """One InferInputTensor as a numpy array of its shape (``raw``: its raw bytes or None)."""
    name = tensor.name
    if not name:
        raise BadRequest(f"input {position} has no 'name'")
    datatype = tensor.datatype
    if datatype == "BYTES":
        raise BadRequest(f"input {name!r}: datatype BYTES is not supported; send numbers")
    dtype = codecs.V2_DATATYPES.get(datatype)
    if dtype is None:
        shown = repr(datatype) if datatype else "none"
        raise BadRequest(
            f"input {name!r}: unknown datatype {shown}; expected one of {_INPUT_DATATYPES}"
        )
    shape = list(tensor.shape)
    if any(s < 0 for s in shape):
        raise BadRequest(f"input {name!r}: 'shape' must be non-negative integers, got {shape}")
    codecs.check_dimensions(shape, dtype.itemsize, f"input {name!r}")
    count = math.prod(shape)
    if "shared_memory_region" in tensor.parameters:
        raise BadRequest(f"input {name!r}: shared memory is not supported")
    if raw is not None:
        if tensor.HasField("contents"):
            raise BadRequest(
                f"input {name!r} has both 'contents' and raw_input_contents; send one of them"
            )
        needed = count * dtype.itemsize
        if len(raw) != needed:
            raise BadRequest(
                f"input {name!r}: raw_input_contents holds {len(raw)} bytes but shape "
                f"{shape} of {datatype} needs {needed}"
            )
        if dtype.kind == "b":
            as_bytes = np.frombuffer(raw, dtype=np.uint8)
            if (as_bytes > 1).any():
                i = int(np.argmax(as_bytes > 1))
                raise BadRequest(
                    f"input {name!r}: BOOL raw data holds byte {int(as_bytes[i])} at "
                    f"position {i}; expected 0 (false) or 1 (true)"
                )
        return np.frombuffer(raw, dtype=dtype).reshape(shape)
    field_name = _CONTENTS_FIELDS.get(datatype)
    if field_name is None:  # FP16
        raise BadRequest(f"input {name!r}: {datatype} travels only in raw_input_contents")
    values = getattr(tensor.contents, field_name)
    if len(values) != count:
        others = [
            f for f in sorted(set(_CONTENTS_FIELDS.values()))
            if f != field_name and len(getattr(tensor.contents, f))
        ]  # fmt: skip
        where = f" (its values are in {others[0]})" if others else ""
        raise BadRequest(
            f"input {name!r}: shape {shape} needs {count} values, "
            f"contents.{field_name} has {len(values)}{where}"
        )
    array = np.asarray(values, dtype=_CONTENTS_DTYPES[field_name]).reshape(shape)
    if dtype.kind in "iu" and array.dtype != dtype:  # int_contents for INT8: within range?
        codecs._check_v2_integers(array, dtype, datatype, name)
        array = array.astype(dtype)
    return array


def decode_infer_request(
    request: Any, loaded: LoadedModel
) -> tuple[np.ndarray, list[str], bool]:
    """A ModelInferRequest as (rows, the outputs wanted, whether to answer raw)."""
    inputs = request.inputs
    if not inputs:
        raise BadRequest("the request has no inputs; send at least one tensor")
    raw = request.raw_input_contents
    if raw and len(raw) != len(inputs):
        raise BadRequest(
            f"raw_input_contents has {len(raw)} entries for {len(inputs)} inputs; "
            "send one per input, in the order of 'inputs'"
        )
    arrays = [
        (tensor.name, _input_array(tensor, position, raw[position] if raw else None))
        for position, tensor in enumerate(inputs)
    ]
    rows = codecs._v2_inputs_to_rows(arrays, loaded)
    answer_raw = _parameter(request.parameters, "binary_data_output", "bool_param", "request")
    outputs = []
    for requested in request.outputs:
        name = requested.name
        if name not in loaded.outputs:
            raise BadRequest(
                f"model {loaded.name!r} has no output {name!r}; "
                f"its outputs are {', '.join(loaded.outputs)}"
            )
        if "class_count" in requested.parameters:
            raise BadRequest("the classification extension (class_count) is not supported")
        if name in outputs:
            raise BadRequest(f"output {name!r} is requested twice")
        outputs.append(name)
    return rows, outputs or list(loaded.outputs), bool(raw) if answer_raw is None else answer_raw


def _encode_outputs(
    response: Any, results: Mapping[str, np.ndarray], outputs: Sequence[str], raw: bool
) -> None:
    for name in outputs:
        array = results[name]
        datatype = codecs.v2_datatype(array.dtype)
        tensor = response.outputs.add(name=name, datatype=datatype, shape=array.shape)
        if raw:
            if datatype == "BYTES":
                data = codecs._v2_bytes_tensor(array)
            else:
                data = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
            response.raw_output_contents.append(data)
            continue
        flat = array.ravel()
        if datatype == "BYTES":
            tensor.contents.bytes_contents.extend(
                v if isinstance(v, bytes) else str(v).encode() for v in flat.tolist()
            )
        elif datatype == "FP16":
            raise BadRequest(f"output {name!r} is FP16, which travels only raw: "
                             "set the bool parameter binary_data_output")  # fmt: skip
        else:
            getattr(tensor.contents, _CONTENTS_FIELDS[datatype]).extend(flat.tolist())


# ------------------------------------------------------------------ the service


class _Call:
    """What the access log reads of a request (the werkzeug request's method, path, address)."""

    __slots__ = ("method", "path", "remote_addr")

    def __init__(self, rpc: str, remote_addr: str | None) -> None:
        self.method = "POST"  # gRPC calls are HTTP/2 POSTs
        self.path = f"/{SERVICE}/{rpc}"
        self.remote_addr = remote_addr


def _peer_address(peer: str) -> str | None:
    """The client's address from grpc's peer string ("ipv4:127.0.0.1:5000", "ipv6:[::1]:5000")."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0] or None
    if kind == "ipv6":
        return rest.rpartition(":")[0].strip("[]") or None
    return rest or None


def _headers(metadata: Mapping[str, str]) -> dict[str, str]:
    """The request's key as the Guard reads HTTP headers: ``authorization`` takes
    "Bearer <key>" or the bare key."""
    authorization = metadata.get("authorization")
    if authorization is not None:
        scheme, _, value = authorization.strip().partition(" ")
        if value.strip() or scheme.lower() == "bearer":
            return {"Authorization": authorization}  # "Bearer <key>", or a scheme refused
        return {"X-API-Key": scheme}
    key = metadata.get("x-api-key")
    return {"X-API-Key": key} if key is not None else {}


class InferenceServicer:
    """The six RPCs of ``inference.GRPCInferenceService`` over one ServingState."""

    def __init__(self, state: ServingState) -> None:
        from mlserve.serving.proto import grpc_predict_v2_pb2 as pb

        self.state = state
        self.pb = pb
        self.codes = _status_codes()
        self.canary_key = (state.config.canary_key_header or "").lower() or None

    # every RPC goes through here: guard, refresh, errors, metrics, access log
    def _serve(self, rpc: str, request: Any, context: Any, answer: Callable[..., Any],
               empty: Any, model: Callable[[], str | None] = lambda: None) -> Any:  # fmt: skip
        state = self.state
        guard_endpoint, endpoint = ENDPOINTS[rpc]
        metadata = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
        record = RequestRecord(request_id_from(metadata.get("x-request-id")), endpoint)
        call = _Call(rpc, _peer_address(context.peer()))
        metrics = state.request_metrics
        if metrics is not None:
            metrics.started(record)
        trailing = [("x-request-id", record.request_id)]
        status = 500
        try:
            try:
                guard = state.guard
                if guard is not None and guard.active:
                    key = guard.check(
                        guard_endpoint, "POST" if rpc == "ModelInfer" else "GET",
                        _headers(metadata), call.remote_addr, model,
                    )  # fmt: skip
                    record.key_id = key.id if key is not None else None
                state.maybe_refresh()
                response = answer(request, record, metadata, trailing)
                status = 200
            except Exception as exc:  # noqa: BLE001 - the service's one error path
                status, code, message, extra = self._error(exc, record)
                trailing += extra
                context.set_code(code)
                context.set_details(message)
                response = empty
            context.set_trailing_metadata(trailing)
            return response
        finally:
            if metrics is not None:
                record.finish(metrics, status, call, state.config.access_log)

    def _error(self, exc: Exception, record: RequestRecord) -> tuple[int, Any, str, list]:
        """(HTTP status, gRPC code, message, trailing metadata) of an exception."""
        import grpc

        if isinstance(exc, ServingError):
            code = self.codes.get(exc.status)
            if code is not None:
                extra = []
                if exc.headers and "Retry-After" in exc.headers:
                    extra.append(("retry-after", exc.headers["Retry-After"]))
                return exc.status, code, exc.message, extra
        elif isinstance(exc, ModelNotFoundError):
            return 404, grpc.StatusCode.NOT_FOUND, str(exc), []
        elif isinstance(exc, StoreError):
            return 400, grpc.StatusCode.INVALID_ARGUMENT, str(exc), []
        log.exception("mlserve: gRPC request %s failed", record.request_id)
        message = f"internal error (request id {record.request_id}; the server log has it)"
        return 500, grpc.StatusCode.INTERNAL, message, []

    def _select(self, record: RequestRecord, name: str, version: str | None,
                alias: str | None = None, metadata: Mapping[str, str] | None = None,
                ) -> LoadedModel:  # fmt: skip
        if not name:
            raise BadRequest("the request names no model")
        sticky = metadata.get(self.canary_key) if metadata and self.canary_key else None
        loaded = self.state.select(name, version or None, alias, sticky_key=sticky or None)
        record.model, record.version = loaded.name, str(loaded.version)
        return loaded

    # -- health and metadata

    def ServerLive(self, request: Any, context: Any) -> Any:
        pb = self.pb
        return self._serve("ServerLive", request, context,
                           lambda *_: pb.ServerLiveResponse(live=True), pb.ServerLiveResponse())

    def ServerReady(self, request: Any, context: Any) -> Any:
        pb = self.pb
        return self._serve("ServerReady", request, context,
                           lambda *_: pb.ServerReadyResponse(ready=bool(self.state.ready)),
                           pb.ServerReadyResponse())  # fmt: skip

    def ModelReady(self, request: Any, context: Any) -> Any:
        pb = self.pb

        def answer(request: Any, record: RequestRecord, *_: Any) -> Any:
            self._select(record, request.name, request.version)  # NOT_FOUND if unknown
            return pb.ModelReadyResponse(ready=True)

        return self._serve("ModelReady", request, context, answer, pb.ModelReadyResponse())

    def ServerMetadata(self, request: Any, context: Any) -> Any:
        pb = self.pb
        return self._serve(
            "ServerMetadata", request, context,
            lambda *_: pb.ServerMetadataResponse(name="mlserve", version=mlserve.__version__),
            pb.ServerMetadataResponse(),
        )  # fmt: skip

    def ModelMetadata(self, request: Any, context: Any) -> Any:
        pb = self.pb
        return self._serve("ModelMetadata", request, context, self._model_metadata,
                           pb.ModelMetadataResponse())  # fmt: skip

    def _model_metadata(self, request: Any, record: RequestRecord, *_: Any) -> Any:
        state, pb = self.state, self.pb
        name = request.name
        version = request.version or None
        if version is None and name:  # what the default alias serves: its heaviest version
            _, targets = state.store.serving(
                name, state.manifest(name), default_alias=state.config.default_alias
            )
            ordered = sorted(targets, key=lambda t: (-t.weight, t.version))
            version = str(ordered[0].version) if ordered else None
        loaded = self._select(record, name, version)
        tensor = pb.ModelMetadataResponse.TensorMetadata
        meta = loaded.metadata
        if loaded.is_recommender:  # user ids in, items and scores out (HTTP V2 JSON only)
            ids = {"int": "INT64", "str": "BYTES"}
            inputs = [tensor(name="users", datatype=ids.get(meta.get("user_id_type"), "INT64"),
                             shape=[-1])]  # fmt: skip
            outputs = [
                tensor(name="items", datatype=ids.get(meta.get("item_id_type"), "INT64"),
                       shape=[-1, -1]),
                tensor(name="scores", datatype=codecs.v2_datatype(np.dtype(meta.get("dtype"))),
                       shape=[-1, -1]),
            ]  # fmt: skip
        else:
            inputs = [tensor(name="input", datatype="FP64", shape=[-1, loaded.n_features])]
            outputs = [
                tensor(name=o.name, datatype=codecs.v2_datatype(o.dtype), shape=[-1, *o.shape])
                for o in loaded.outputs.values()
            ]
        return pb.ModelMetadataResponse(
            name=name,
            versions=[str(v) for v in sorted(state.manifest(name).versions)],
            platform="mlserve",
            inputs=inputs,
            outputs=outputs,
        )

    # -- inference

    def ModelInfer(self, request: Any, context: Any) -> Any:
        def model() -> str | None:  # for predict:<model> scopes and per-model rate limits
            return request.model_name or None

        return self._serve(
            "ModelInfer", request, context, self._infer, self.pb.ModelInferResponse(), model
        )

    def _infer(self, request: Any, record: RequestRecord, metadata: Mapping[str, str],
               trailing: list) -> Any:  # fmt: skip
        start = time.perf_counter()
        timings = Timings()
        alias = _parameter(request.parameters, "alias", "string_param", "request")
        loaded = self._select(record, request.model_name, request.model_version, alias, metadata)
        if loaded.is_recommender:
            raise BadRequest(
                f"model {loaded.name!r} is a recommender; ask it over HTTP "
                f"(POST /v2/models/{loaded.name}/infer with JSON, or /recommend/{loaded.name})"
            )
        rows, outputs, raw = decode_infer_request(request, loaded)
        timings.decode = (time.perf_counter() - start) * 1000.0
        results = self._predict(loaded, rows, outputs, timings, record, trailing)
        start = time.perf_counter()
        response = self.pb.ModelInferResponse(
            model_name=loaded.name, model_version=str(loaded.version), id=request.id
        )
        _encode_outputs(response, results, outputs, raw)
        timings.encode = (time.perf_counter() - start) * 1000.0
        return response

    def _predict(self, loaded: LoadedModel, rows: np.ndarray, outputs: Sequence[str],
                 timings: Timings, record: RequestRecord, trailing: list,
                 ) -> Mapping[str, np.ndarray]:  # fmt: skip
        """runtime.predict after the MLSERVE_MAX_ROWS check, through the cache (as HTTP's)."""
        state = self.state
        n_rows = int(rows.shape[0]) if rows.ndim else 1
        record.rows = n_rows
        record.timings = timings
        limit = state.config.max_rows
        if n_rows > limit:
            raise PayloadTooLarge(
                f"the request has {n_rows} rows; the limit is {limit} (MLSERVE_MAX_ROWS)"
            )
        cache = state.config.cache
        key = None
        if cache is not None and n_rows and cache.ttl_for(loaded.name) is not None:
            key = cache_key(loaded.name, loaded.version, tuple(outputs), rows)
            hit = cache.get(loaded.name, key)
            if hit is not None and all(name in hit for name in outputs):
                trailing.append(("x-cache", "hit"))
                timings.batch = n_rows
                return hit
            trailing.append(("x-cache", "miss"))
        results = predict(loaded, rows, outputs, timings)
        if key is not None:
            cache.put(loaded.name, key, results, cache.ttl_for(loaded.name))
        if loaded.batcher is None and n_rows and state.request_metrics is not None:
            state.request_metrics.observe_execution(
                loaded.name, loaded.version, n_rows, timings.compute
            )
        return results


# ------------------------------------------------------------------ the server

#: each RPC's request and response message names (grpc_predict_v2.proto)
RPCS = {
    "ServerLive": ("ServerLiveRequest", "ServerLiveResponse"),
    "ServerReady": ("ServerReadyRequest", "ServerReadyResponse"),
    "ModelReady": ("ModelReadyRequest", "ModelReadyResponse"),
    "ServerMetadata": ("ServerMetadataRequest", "ServerMetadataResponse"),
    "ModelMetadata": ("ModelMetadataRequest", "ModelMetadataResponse"),
    "ModelInfer": ("ModelInferRequest", "ModelInferResponse"),
}


def service_handler(servicer: InferenceServicer) -> Any:
    """The service's handlers, each parsing its request message itself.

    grpcio would answer a request that does not parse (truncated, not protobuf,
    invalid UTF-8 in a string) with INTERNAL, as if the server had failed; here
    it is the client's INVALID_ARGUMENT, naming the message that did not parse.
    """
    import grpc
    from google.protobuf.message import DecodeError

    pb = servicer.pb

    def handler(rpc: str, request_type: Any, response_type: Any) -> Any:
        method = getattr(servicer, rpc)

        def call(data: bytes, context: Any) -> Any:
            try:
                request = request_type.FromString(data)
            except DecodeError as exc:
                context.set_code(grpc.StatusCode.INVALID_ARGUMENT)
                context.set_details(
                    f"the request is not a valid {request_type.DESCRIPTOR.full_name} "
                    f"message: {exc}"
                )
                return response_type()
            return method(request, context)

        return grpc.unary_unary_rpc_method_handler(
            call, response_serializer=response_type.SerializeToString
        )

    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            rpc: handler(rpc, getattr(pb, request), getattr(pb, response))
            for rpc, (request, response) in RPCS.items()
        },
    )



class GrpcServer:
    """A running gRPC server (grpc.Server) and the address it is bound to."""

    def __init__(self, server: Any, host: str, port: int) -> None:
        self.server = server
        self.host = host
        self.port = port

    def stop(self, grace: float | None = STOP_GRACE_SECONDS) -> None:
        """Refuse new RPCs, let those in flight finish for up to ``grace`` seconds, then close."""
        self.server.stop(grace).wait()


def start_grpc_server(
    state: Any,
    port: int | None = None,
    *,
    host: str = "127.0.0.1",
    threads: int = 4,
    options: Iterable[tuple[str, Any]] = (),
) -> GrpcServer:
    """Start ``inference.GRPCInferenceService`` over a ServingState (or a Flask app with one
    mlserve blueprint) on ``host:port``; ``port`` defaults to MLSERVE_GRPC_PORT.

    Call it in the process that serves (after a fork: grpcio is not fork-safe),
    e.g. from gunicorn's ``post_worker_init`` as ``mlserve serve`` does; several
    processes may bind one port (SO_REUSEPORT). Raises OSError when the port
    cannot be bound.
    """
    import grpc

    if not isinstance(state, ServingState):
        from mlserve.serving.registry import serving_state

        state = serving_state(state)
    config = state.config
    port = config.grpc_port if port is None else port
    if port is None:
        raise ValueError("no gRPC port: pass port= or set MLSERVE_GRPC_PORT")
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="mlserve-grpc"),
        maximum_concurrent_rpcs=config.grpc_max_concurrent_rpcs,
        options=[
            ("grpc.so_reuseport", 1),
            ("grpc.max_receive_message_length", config.max_body_bytes),
            ("grpc.max_send_message_length", -1),
            *options,
        ],
    )
    server.add_generic_rpc_handlers((service_handler(InferenceServicer(state)),))
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:  # grpcio >= 1.60 raises; older ones return 0
        raise OSError(f"cannot listen for gRPC on {address}: {exc}") from None
    if not bound:
        raise OSError(f"cannot listen for gRPC on {address}")
    server.start()
    return GrpcServer(server, host, bound)
