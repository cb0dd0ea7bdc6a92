"""The KServe V2 gRPC service against a real ``mlserve serve --grpc-port`` on 127.0.0.1.

The client is tritonclient.grpc unchanged (and, for what it cannot send,
tritonclient's own protobuf messages through a plain grpc stub).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serving_support import (
    Server,
    fit_classifier,
    fit_named_classifier,
    fit_regressor,
    training_data,
)
from tritonclient.grpc import service_pb2 as triton_pb
from tritonclient.grpc import service_pb2_grpc as triton_grpc
from tritonclient.utils import InferenceServerException

from mlserve.serving.config import ConfigError, ServingConfig
from mlserve.serving.proto import grpc_predict_v2_pb2 as mlserve_pb
from mlserve.serving.security import create_key
from mlserve.store import ModelStore

X, _ = training_data(seed=5, n=7)
GRPC_LINE = re.compile(r"gRPC \(inference\.GRPCInferenceService\) listening at 127\.0\.0\.1:(\d+)")
MAX_ROWS = 1000
MAX_BODY = 200_000
RATE = 20  # per key and minute, on the auth server
CODE = grpc.StatusCode


def grpc_port(server: Server, timeout: float = 30.0) -> int:
    """The port the server's (one) worker printed for its gRPC service."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in list(server.log):
            match = GRPC_LINE.search(line)
            if match:
                return int(match.group(1))
        time.sleep(0.05)
    raise RuntimeError("no gRPC port in the log:\n" + "".join(server.log))


@pytest.fixture(scope="module")
def models():
    return {
        "reg": fit_regressor(),
        "reg2": fit_regressor(seed=9),
        "clf": fit_classifier(),
        "named": fit_named_classifier(),
    }


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory, models):
    root = tmp_path_factory.mktemp("grpc") / "models"
    store = ModelStore(root)
    store.publish("reg", models["reg"], alias="production")
    store.publish("reg", models["reg2"])
    store.publish("clf", models["clf"], alias="production")
    store.publish("named", models["named"])
    return root


@pytest.fixture(scope="module")
def server(store_dir):
    server = Server(
        store_dir, "--workers", "1", "--threads", "4", "--reload-interval", "0",
        "--grpc-port", "0", "--max-rows", str(MAX_ROWS), "--max-body-bytes", str(MAX_BODY),
        "--cache", "memory",
    )  # fmt: skip
    server.grpc_port = grpc_port(server)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(server):
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    yield client
    client.close()


@pytest.fixture(scope="module")
def stub(server):
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    yield triton_grpc.GRPCInferenceServiceStub(channel)
    channel.close()


def infer_input(array: np.ndarray, datatype: str, name: str = "input") -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def grpc_error(call) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as info:
        call()
    return info.value


def stub_error(call, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=10)
    return info.value


# ---------------------------------------------------------------- the proto


def test_proto_matches_the_kserve_messages_tritonclient_sends():
    """Every field of mlserve's proto has the name, number and type of tritonclient's
    (Triton's grpc_service.proto extends the same KServe messages), and both import
    into one process (mlserve's messages live in a descriptor pool of their own)."""
    ours = mlserve_pb.DESCRIPTOR
    theirs = triton_pb.DESCRIPTOR
    checked = 0

    def compare(mine, other):
        nonlocal checked
        for field in mine.fields:
            match = other.fields_by_name.get(field.name)
            assert match is not None, f"{mine.full_name}.{field.name} is not in tritonclient's"
            assert (match.number, match.type, match.is_repeated) == (
                field.number, field.type, field.is_repeated,
            ), f"{mine.full_name}.{field.name}"  # fmt: skip
            checked += 1
        for nested in mine.nested_types:
            compare(nested, other.nested_types_by_name[nested.name])

    for name, message in ours.message_types_by_name.items():
        compare(message, theirs.message_types_by_name[name])
    service = ours.services_by_name["GRPCInferenceService"]
    triton_service = theirs.services_by_name["GRPCInferenceService"]
    for method in service.methods:
        other = triton_service.methods_by_name[method.name]
        assert method.input_type.full_name == other.input_type.full_name
        assert method.output_type.full_name == other.output_type.full_name
    assert [m.name for m in service.methods] == [
        "ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer",
    ]  # fmt: skip
    assert checked > 60


def test_committed_stubs_match_the_proto(tmp_path):
    """The committed messages are what grpcio-tools makes of grpc_predict_v2.proto now
    (rerun scripts/gen_grpc.py after editing the proto)."""
    from google.protobuf import descriptor_pb2
    from grpc_tools import protoc

    proto_dir = os.path.dirname(mlserve_pb.__file__)
    out = tmp_path / "descriptor.pb"
    assert protoc.main(["protoc", f"-I{proto_dir}", f"--descriptor_set_out={out}",
                        os.path.join(proto_dir, "grpc_predict_v2.proto")]) == 0  # fmt: skip
    files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
    assert len(files) == 1
    fresh = files[0]

    def drop_json_names(messages):  # protoc adds them to a descriptor set, not to _pb2.py
        for message in messages:
            for field in message.field:
                field.ClearField("json_name")
            drop_json_names(message.nested_type)

    drop_json_names(fresh.message_type)
    committed = descriptor_pb2.FileDescriptorProto.FromString(mlserve_pb.DESCRIPTOR.serialized_pb)
    assert fresh == committed


# ---------------------------------------------------------------- inference


@pytest.mark.parametrize(
    "datatype,dtype", [("FP32", np.float32), ("FP64", np.float64), ("INT64", np.int64)]
)
def test_regressor_infer_with_numpy_inputs(client, models, datatype, dtype):
    rows = (X * 10).astype(dtype)
    result = client.infer("reg", [infer_input(rows, datatype)])
    np.testing.assert_allclose(result.as_numpy("predict"), models["reg"].predict(rows), rtol=1e-12)
    assert result.as_numpy("predict").dtype == np.float64
    response = result.get_response()
    assert (response.model_name, response.model_version) == ("reg", "1")  # production
    assert len(response.raw_output_contents) == 1  # raw inputs: raw outputs


def test_classifier_infer_labels_and_probabilities(client, models):
    result = client.infer("clf", [infer_input(X.astype(np.float32), "FP32")])
    labels = result.as_numpy("predict")
    assert labels.dtype == object and labels.shape == (len(X),)
    expected = models["clf"].predict(X.astype(np.float32))
    assert [v.decode() for v in labels] == list(expected)
    proba = result.as_numpy("predict_proba")
    assert proba.shape == (len(X), 2)
    np.testing.assert_allclose(proba, models["clf"].predict_proba(X.astype(np.float32)), rtol=1e-12)
    outputs = {o.name: (o.datatype, list(o.shape)) for o in result.get_response().outputs}
    assert outputs == {"predict": ("BYTES", [len(X)]), "predict_proba": ("FP64", [len(X), 2])}


def test_requested_outputs_and_request_id(client, models):
    result = client.infer(
        "clf", [infer_input(X, "FP64")], outputs=[grpcclient.InferRequestedOutput("predict_proba")],
        request_id="req-7",
    )  # fmt: skip
    response = result.get_response()
    assert [o.name for o in response.outputs] == ["predict_proba"]
    assert response.id == "req-7"
    np.testing.assert_allclose(result.as_numpy("predict_proba"), models["clf"].predict_proba(X))


def test_integer_labels_and_named_feature_columns(client, models):
    """One input per feature column ([n] each, by name, in any order), INT64 labels out."""
    columns = [
        infer_input(np.ascontiguousarray(X[:, i]), "FP64", name) for i, name in [
            (2, "c"), (0, "a"), (3, "d"), (1, "b"),
        ]
    ]  # fmt: skip
    result = client.infer("named", columns)
    labels = result.as_numpy("predict")
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(labels, models["named"].predict(X))


def test_typed_contents_in_typed_contents_out(stub, models):
    """Inputs as InferTensorContents (no raw bytes): the answer is typed too, unless
    the bool parameter binary_data_output asks for raw."""
    for datatype, field, values in [
        ("FP64", "fp64_contents", X),
        ("FP32", "fp32_contents", X.astype(np.float32)),
        ("INT64", "int64_contents", (X * 10).astype(np.int64)),
        ("INT32", "int_contents", (X * 10).astype(np.int32)),
    ]:
        request = triton_pb.ModelInferRequest(model_name="clf")
        tensor = request.inputs.add(name="input", datatype=datatype, shape=values.shape)
        getattr(tensor.contents, field).extend(values.ravel().tolist())
        response = stub.ModelInfer(request, timeout=10)
        assert not response.raw_output_contents
        by_name = {o.name: o for o in response.outputs}
        expected = models["clf"].predict(values)
        assert [b.decode() for b in by_name["predict"].contents.bytes_contents] == list(expected)
        np.testing.assert_allclose(
            np.reshape(by_name["predict_proba"].contents.fp64_contents, (len(X), 2)),
            models["clf"].predict_proba(values), rtol=1e-12,
        )  # fmt: skip
    request.parameters["binary_data_output"].bool_param = True
    response = stub.ModelInfer(request, timeout=10)
    assert len(response.raw_output_contents) == 2
    proba = np.frombuffer(response.raw_output_contents[1], dtype="<f8").reshape(len(X), 2)
    np.testing.assert_allclose(proba, models["clf"].predict_proba(values), rtol=1e-12)


def test_versions_and_aliases(client, stub, models):
    rows = infer_input(X, "FP64")
    result = client.infer("reg", [rows], model_version="2")
    assert result.get_response().model_version == "2"
    np.testing.assert_allclose(result.as_numpy("predict"), models["reg2"].predict(X))
    result = client.infer("reg", [rows], parameters={"alias": "latest"})
    assert result.get_response().model_version == "2"
    result = client.infer("reg", [rows], parameters={"alias": "production"})
    assert result.get_response().model_version == "1"
    np.testing.assert_allclose(result.as_numpy("predict"), models["reg"].predict(X))


def test_one_and_many_rows(client, models):
    rng = np.random.default_rng(1)
    for n in (1, MAX_ROWS):
        rows = rng.normal(size=(n, 4))
        result = client.infer("reg", [infer_input(rows, "FP64")])
        np.testing.assert_allclose(result.as_numpy("predict"), models["reg"].predict(rows))


# ----------------------------------------------------- metadata, readiness


def test_server_and_model_metadata(client):
    metadata = client.get_server_metadata()
    assert metadata.name == "mlserve"
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", metadata.version)
    model = client.get_model_metadata("clf")
    assert (model.name, list(model.versions), model.platform) == ("clf", ["1"], "mlserve")
    assert [(t.name, t.datatype, list(t.shape)) for t in model.inputs] == [
        ("input", "FP64", [-1, 4])
    ]
    assert [(t.name, t.datatype, list(t.shape)) for t in model.outputs] == [
        ("predict", "BYTES", [-1]), ("predict_proba", "FP64", [-1, 2]),
    ]  # fmt: skip
    reg = client.get_model_metadata("reg")
    assert list(reg.versions) == ["1", "2"]
    assert [(t.name, t.datatype) for t in reg.outputs] == [("predict", "FP64")]
    assert client.get_model_metadata("reg", model_version="2").name == "reg"


def test_readiness(client):
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("clf")
    assert client.is_model_ready("reg", model_version="2")
    error = grpc_error(lambda: client.is_model_ready("nope"))
    assert error.status() == "StatusCode.NOT_FOUND"
    assert error.message() == "model 'nope' not found"
    error = grpc_error(lambda: client.is_model_ready("reg", model_version="7"))
    assert (error.status(), error.message()) == (
        "StatusCode.NOT_FOUND", "model 'reg' has no version 7",
    )  # fmt: skip


# ------------------------------------------------------------------ errors


def test_unknown_model_version_or_alias_is_not_found(client):
    rows = [infer_input(X, "FP64")]
    cases = [
        (lambda: client.infer("nope", rows), "model 'nope' not found"),
        (lambda: client.infer("reg", rows, model_version="9"), "model 'reg' has no version 9"),
        (
            lambda: client.infer("reg", rows, model_version="x"),
            "invalid version 'x' of model 'reg': expected a number",
        ),
        (lambda: client.get_model_metadata("nope"), "model 'nope' not found"),
    ]
    for call, message in cases:
        error = grpc_error(call)
        assert (error.status(), error.message()) == ("StatusCode.NOT_FOUND", message)
    error = grpc_error(lambda: client.infer("reg", rows, parameters={"alias": "staging"}))
    assert error.status() == "StatusCode.NOT_FOUND"
    assert "staging" in error.message()


def _request(model="reg", datatype="FP64", shape=(7, 4), raw=None, **contents):
    request = triton_pb.ModelInferRequest(model_name=model)
    tensor = request.inputs.add(name="input", datatype=datatype, shape=shape)
    for field, values in contents.items():
        getattr(tensor.contents, field).extend(values)
    if raw is not None:
        request.raw_input_contents.append(raw)
    return request


def test_bad_input_is_invalid_argument(client, stub):
    def no_inputs():
        return triton_pb.ModelInferRequest(model_name="reg")

    def raw_and_contents():
        request = _request(raw=X.tobytes(), fp64_contents=X.ravel().tolist())
        return request

    def two_raw():
        request = _request(raw=X.tobytes())
        request.raw_input_contents.append(b"")
        return request

    def unknown_output():
        request = _request(raw=X.tobytes())
        request.outputs.add(name="predict_proba")
        return request

    def bad_parameter():
        request = _request(raw=X.tobytes())
        request.parameters["binary_data_output"].string_param = "yes"
        return request

    cases = [
        (no_inputs(), "the request has no inputs; send at least one tensor"),
        (_request(shape=(7, 5), raw=np.zeros((7, 5)).tobytes()), "expected 4 features, got 5"),
        (_request(datatype="FP99", raw=X.tobytes()),
         ("input 'input': unknown datatype 'FP99'; expected one of FP64, FP32, FP16, INT64, "
          "INT32, INT16, INT8, UINT64, UINT32, UINT16, UINT8, BOOL")),
        (_request(datatype="BYTES", shape=(1,), bytes_contents=[b"a"]),
         "input 'input': datatype BYTES is not supported; send numbers"),
        (_request(raw=X.tobytes()[:-8]),
         "input 'input': raw_input_contents holds 216 bytes but shape [7, 4] of FP64 needs 224"),
        (two_raw(), ("raw_input_contents has 2 entries for 1 inputs; send one per input, in "
                     "the order of 'inputs'")),
        (raw_and_contents(),
         "input 'input' has both 'contents' and raw_input_contents; send one of them"),
        (_request(fp64_contents=[1.0, 2.0]),
         "input 'input': shape [7, 4] needs 28 values, contents.fp64_contents has 2"),
        (_request(datatype="FP32", fp64_contents=X.ravel().tolist()),
         ("input 'input': shape [7, 4] needs 28 values, contents.fp32_contents has 0 "
          "(its values are in fp64_contents)")),
        (_request(datatype="INT8", shape=(1, 4), int_contents=[1, 2, 300, 4]),
         "input 'input': 300 at position 2 is out of range for INT8 (-128 to 127)"),
        (_request(datatype="FP16", shape=(1, 4), fp32_contents=[1, 2, 3, 4]),
         "input 'input': FP16 travels only in raw_input_contents"),
        (_request(datatype="BOOL", shape=(1, 4), raw=bytes([0, 1, 2, 1])),
         "input 'input': BOOL raw data holds byte 2 at position 2; expected 0 (false) or 1 (true)"),
        (_request(shape=(-1, 4), raw=X.tobytes()),
         "input 'input': 'shape' must be non-negative integers, got [-1, 4]"),
        (_request(shape=(1, 4), fp64_contents=[1.0, float("nan"), 0.0, 0.0]), None),
        (unknown_output(), "model 'reg' has no output 'predict_proba'; its outputs are predict"),
        (bad_parameter(), ("request parameter 'binary_data_output' must be a bool_param, "
                           "got string_param")),
        (_request(model="", raw=X.tobytes()), "the request names no model"),
    ]  # fmt: skip
    for request, message in cases:
        error = stub_error(stub.ModelInfer, request)
        assert error.code() == CODE.INVALID_ARGUMENT, (message, error.details())
        if message is not None:
            assert error.details() == message
        else:  # the model's own NaN message
            assert "nan" in error.details().lower()
    # and through tritonclient, unchanged
    error = grpc_error(lambda: client.infer("reg", [infer_input(np.zeros((2, 3)), "FP64")]))
    assert (error.status(), error.message()) == (
        "StatusCode.INVALID_ARGUMENT", "expected 4 features, got 3",
    )  # fmt: skip


def test_a_request_that_does_not_parse_is_invalid_argument(server, client):
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    try:
        call = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=None, response_deserializer=None,
        )  # fmt: skip
        for data in (b"\xff\xff\xff", b"\x0a\x02\xc3\x28"):  # garbage; invalid UTF-8 name
            with pytest.raises(grpc.RpcError) as info:
                call(data, timeout=10)
            assert info.value.code() == CODE.INVALID_ARGUMENT
            assert info.value.details().startswith(
                "the request is not a valid inference.ModelInferRequest message: "
            )
    finally:
        channel.close()
    assert client.is_server_live()


def test_limits_are_resource_exhausted(client, stub):
    rows = np.zeros((MAX_ROWS + 1, 4))
    error = grpc_error(lambda: client.infer("reg", [infer_input(rows, "FP64")]))
    assert (error.status(), error.message()) == (
        "StatusCode.RESOURCE_EXHAUSTED",
        f"the request has {MAX_ROWS + 1} rows; the limit is {MAX_ROWS} (MLSERVE_MAX_ROWS)",
    )
    big = np.zeros((MAX_BODY // 32 + 10, 4))  # over MLSERVE_MAX_BODY_BYTES: grpcio refuses it
    error = stub_error(stub.ModelInfer, _request(shape=big.shape, raw=big.tobytes()))
    assert error.code() == CODE.RESOURCE_EXHAUSTED
    assert client.is_server_live()  # and the server goes on


def test_metrics_statistics_and_request_id(server, stub, models):
    request = _request(model="clf", raw=X.tobytes())
    _, call = stub.ModelInfer.with_call(
        request, metadata=[("x-request-id", "grpc-trace-1")], timeout=10
    )
    assert dict(call.trailing_metadata())["x-request-id"] == "grpc-trace-1"
    with pytest.raises(grpc.RpcError):
        stub.ModelInfer(_request(model="clf", shape=(1, 3), raw=bytes(24)), timeout=10)
    text = requests.get(f"{server.url}/metrics", timeout=10).text
    ok = re.search(
        r'mlserve_requests_total\{endpoint="grpc_infer",model="clf",status="200",version="1"\} '
        r"(\d+)", text,
    )  # fmt: skip
    assert ok and int(ok.group(1)) >= 1, text
    assert re.search(
        r'mlserve_requests_total\{endpoint="grpc_infer",model="clf",status="400"', text
    )
    stats = requests.get(f"{server.url}/v2/models/clf/stats", timeout=10).json()
    counted = stats["model_stats"][0]
    assert counted["inference_count"] >= len(X)
    assert counted["inference_stats"]["fail"]["count"] >= 1


def test_prediction_cache_over_grpc(stub, models):
    """The same rows twice: a miss, then a hit with the same answer (x-cache in the
    trailing metadata); another version of the model is its own entry."""
    rows = np.random.default_rng(11).normal(size=(3, 4))
    answers = []
    for version, expected in [("1", "miss"), ("1", "hit"), ("2", "miss")]:
        request = _request(shape=rows.shape, raw=rows.tobytes())
        request.model_version = version
        response, call = stub.ModelInfer.with_call(request, timeout=10)
        assert dict(call.trailing_metadata())["x-cache"] == expected
        answers.append(np.frombuffer(response.raw_output_contents[0], dtype="<f8"))
    np.testing.assert_array_equal(answers[0], answers[1])
    np.testing.assert_allclose(answers[0], models["reg"].predict(rows))
    np.testing.assert_allclose(answers[2], models["reg2"].predict(rows))


# ----------------------------------------------------------------- auth


@pytest.fixture(scope="module")
def auth_server(store_dir, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("keys") / "keys.json")
    keys = {}
    for name, scopes in [
        ("all", ["predict", "read"]), ("clf_only", ["predict:clf"]), ("reader", ["read"]),
        ("burst", ["predict"]),
    ]:  # fmt: skip
        keys[name], _ = create_key(path, scopes, name=name)
    server = Server(
        store_dir, "--workers", "1", "--reload-interval", "0", "--grpc-port", "0",
        "--api-keys", path, "--rate-limit", f"{RATE}/minute",
    )  # fmt: skip
    server.grpc_port = grpc_port(server)
    server.keys = keys
    yield server
    server.stop()


def test_auth_over_grpc(auth_server):
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{auth_server.grpc_port}")
    keys = auth_server.keys
    rows = [infer_input(X, "FP64")]
    try:
        assert client.is_server_live() and client.is_server_ready()  # health: open
        for headers in [None, {"authorization": "Bearer mls_wrong"}, {"authorization": "mls_x"},
                        {"authorization": "Basic " + keys["all"]}]:  # fmt: skip
            calls = (lambda h=headers: client.infer("clf", rows, headers=h),
                     lambda h=headers: client.get_model_metadata("clf", headers=h))  # fmt: skip
            for call in calls:
                error = grpc_error(call)
                assert error.status() == "StatusCode.UNAUTHENTICATED"
                assert error.message().startswith("unauthorized: send a valid API key")
        for value in ("Bearer " + keys["all"], keys["all"]):  # "Bearer <key>" or the bare key
            result = client.infer("clf", rows, headers={"authorization": value})
            assert result.as_numpy("predict").shape == (len(X),)
        assert client.get_model_metadata("clf", headers={"authorization": keys["reader"]}).name
        assert client.infer("clf", rows, headers={"authorization": keys["clf_only"]})
        for key, model, needed in [
            ("reader", "clf", "'predict' or 'predict:clf'"),
            ("clf_only", "reg", "'predict' or 'predict:reg'"),
        ]:
            error = grpc_error(
                lambda key=key, model=model: client.infer(
                    model, rows, headers={"authorization": keys[key]}
                )
            )
            assert (error.status(), error.message()) == (
                "StatusCode.PERMISSION_DENIED",
                ("forbidden: the API key does not have the scope this request needs; "
                 f"it needs {needed}"),
            )
        error = grpc_error(
            lambda: client.get_model_metadata("clf", headers={"authorization": keys["clf_only"]})
        )
        assert error.status() == "StatusCode.PERMISSION_DENIED"
        # over the rate limit: RESOURCE_EXHAUSTED with retry-after
        channel = grpc.insecure_channel(f"127.0.0.1:{auth_server.grpc_port}")
        stub = triton_grpc.GRPCInferenceServiceStub(channel)
        request = _request(model="clf", raw=X.tobytes())
        metadata = [("authorization", keys["burst"])]
        for _ in range(RATE):
            stub.ModelInfer(request, metadata=metadata, timeout=10)
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer.with_call(request, metadata=metadata, timeout=10)
        error = info.value
        assert error.code() == CODE.RESOURCE_EXHAUSTED
        assert error.details().startswith(f"rate limit exceeded: {RATE} per 1 minute")
        assert int(dict(error.trailing_metadata())["retry-after"]) >= 1
        channel.close()
    finally:
        client.close()


# ----------------------------------------- shared batcher, overload, shutdown


HEAVY_ROWS = 600_000  # a converted forest takes 1-3 s on them here: long enough on a quiet machine


@pytest.fixture(scope="module")
def forest(tmp_path_factory):
    """A RandomForestRegressor (50 trees, depth 12) converted, in a store of its own."""
    from sklearn.ensemble import RandomForestRegressor

    import mlserve

    rng = np.random.default_rng(0)
    features = rng.normal(size=(2000, 4))
    target = features @ [1.0, 2.0, 3.0, 4.0] + rng.normal(size=2000)
    model = mlserve.convert(
        RandomForestRegressor(n_estimators=50, max_depth=12, random_state=0).fit(features, target)
    )
    root = tmp_path_factory.mktemp("forest") / "models"
    ModelStore(root).publish("forest", model, alias="production")
    return root, model


def test_shared_batcher_overload_and_graceful_shutdown(forest):
    """MLSERVE_GRPC_PORT and MLSERVE_GRPC_MAX_CONCURRENT_RPCS=2 from the environment.
    While a heavy gRPC request computes, an HTTP and a gRPC one-row request queue in
    the model's batcher and share one core call, a third RPC at once is over the
    limit, and SIGTERM lets an RPC in flight finish before the server exits."""
    root, model = forest
    env = {"MLSERVE_GRPC_PORT": "0", "MLSERVE_GRPC_MAX_CONCURRENT_RPCS": "2"}
    os.environ.update(env)
    try:
        server = Server(
            root, "--workers", "1", "--threads", "4", "--reload-interval", "0",
            "--max-rows", str(HEAVY_ROWS), "--max-delay-ms", "5000",
            "--batching-models", '{"forest": {"min_compute_ms": 0}}',
        )  # fmt: skip
    finally:
        for key in env:
            os.environ.pop(key)
    heavy = np.random.default_rng(2).normal(size=(HEAVY_ROWS, 4))
    row = X[:1]
    try:
        port = grpc_port(server)
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
        results: dict[str, object] = {}
        finished: dict[str, float] = {}

        def grpc_infer(key: str, rows: np.ndarray) -> None:
            try:
                results[key] = client.infer(
                    "forest", [infer_input(rows, "FP64")], client_timeout=60
                ).as_numpy("predict")
            except InferenceServerException as exc:
                results[key] = exc
            finished[key] = time.monotonic()

        def http_infer() -> None:
            body = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP64",
                                "data": row.ravel().tolist()}]}  # fmt: skip
            results["http"] = requests.post(
                f"{server.url}/v2/models/forest/infer", json=body, timeout=60
            )

        threads = [threading.Thread(target=grpc_infer, args=("heavy", heavy))]
        threads[0].start()
        time.sleep(0.3)  # the heavy request computes
        threads += [threading.Thread(target=grpc_infer, args=("small", row)),
                    threading.Thread(target=http_infer)]  # fmt: skip
        for thread in threads[1:]:
            thread.start()
        time.sleep(0.1)
        grpc_infer("third", row)  # a third RPC at once: over MLSERVE_GRPC_MAX_CONCURRENT_RPCS
        for thread in threads:
            thread.join(60)
        assert finished["third"] < finished["heavy"]  # refused while the heavy one ran
        assert isinstance(results["third"], InferenceServerException)
        assert results["third"].status() == "StatusCode.RESOURCE_EXHAUSTED"
        np.testing.assert_allclose(results["heavy"], model.predict(heavy))
        np.testing.assert_allclose(results["small"], model.predict(row))
        assert results["http"].status_code == 200
        np.testing.assert_allclose(results["http"].json()["outputs"][0]["data"], model.predict(row))
        assert "batch;desc=2" in results["http"].headers["Server-Timing"]  # one core call

        # graceful shutdown: the RPC in flight when SIGTERM arrives is answered
        results.clear()
        thread = threading.Thread(target=grpc_infer, args=("late", heavy))
        thread.start()
        time.sleep(0.3)
        terminated = time.monotonic()
        server.process.terminate()
        thread.join(60)
        assert finished["late"] > terminated  # it was in flight
        np.testing.assert_allclose(results["late"], model.predict(heavy))
        assert server.process.wait(timeout=20) == 0
        client.close()
        with socket.socket() as probe:  # nobody listens any more
            assert probe.connect_ex(("127.0.0.1", port)) != 0
    finally:
        server.stop()


# ------------------------------------ two workers, store changes, sticky canary


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_workers_one_port_store_changes_and_sticky_canary(tmp_path, models):
    """Two workers share one gRPC port (SO_REUSEPORT); an alias moved in the store is
    followed over gRPC; with MLSERVE_CANARY_KEY_HEADER, the key's metadata value picks
    the version of a canary split stably (in both workers), and many keys use both."""
    root = tmp_path / "models"
    store = ModelStore(root)
    store.publish("reg", models["reg"], alias="production")
    store.publish("reg", models["reg2"])
    store.set_alias("reg", "canary", {1: 50, 2: 50})
    port = free_port()
    os.environ["MLSERVE_CANARY_KEY_HEADER"] = "X-User-ID"
    try:
        server = Server(
            root, "--workers", "2", "--threads", "2", "--reload-interval", "0.2",
            "--grpc-port", str(port),
        )  # fmt: skip
    finally:
        os.environ.pop("MLSERVE_CANARY_KEY_HEADER")
    try:
        deadline = time.monotonic() + 30
        while True:
            pids = {m.group(0) for m in re.finditer(rf"at 127\.0\.0\.1:{port} \(pid \d+\)",
                                                     "".join(server.log))}  # fmt: skip
            if len(pids) == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert len(pids) == 2, "".join(server.log)
        # grpcio is not fork-safe: loaded in the workers, never in the arbiter that forks them
        worker = int(re.search(r"\d+", next(iter(pids)).split("pid")[1]).group(0))
        with open(f"/proc/{worker}/maps") as maps:
            assert "cygrpc" in maps.read()
        with open(f"/proc/{server.process.pid}/maps") as maps:
            assert "cygrpc" not in maps.read()
        rows = [infer_input(X, "FP64")]

        def version(**kwargs) -> str:
            # a new connection each time: the kernel spreads them over both workers
            with grpcclient.InferenceServerClient(f"127.0.0.1:{port}") as client:
                return client.infer("reg", rows, **kwargs).get_response().model_version

        assert version() == "1"
        users = [f"user-{i}" for i in range(40)]
        picked = {}
        for user in users:
            seen = {version(parameters={"alias": "canary"}, headers={"x-user-id": user})
                    for _ in range(3)}  # fmt: skip
            assert len(seen) == 1, (user, seen)
            picked[user] = seen.pop()
        assert set(picked.values()) == {"1", "2"}
        store.set_alias("reg", "production", 2)
        deadline = time.monotonic() + 20
        answers: set[str] = set()
        while time.monotonic() < deadline:
            answers = {version() for _ in range(6)}
            if answers == {"2"}:
                break
            time.sleep(0.2)
        assert answers == {"2"}
    finally:
        server.stop()


# ----------------------------------------------------------------- config


def test_grpc_config_keys():
    assert ServingConfig.from_mapping({}).grpc_port is None
    assert ServingConfig.from_mapping({"MLSERVE_GRPC_PORT": 8001}).grpc_port == 8001
    assert ServingConfig.from_environ({"MLSERVE_GRPC_PORT": "8001"}).grpc_port == 8001
    for bad in (70000, -1, "abc", 1.5, True):
        with pytest.raises(ConfigError, match="MLSERVE_GRPC_PORT must be a port number"):
            ServingConfig.from_mapping({"MLSERVE_GRPC_PORT": bad})
    with pytest.raises(ConfigError, match="MLSERVE_GRPC_MAX_CONCURRENT_RPCS must be a positive"):
        ServingConfig.from_mapping({"MLSERVE_GRPC_MAX_CONCURRENT_RPCS": 0})


def test_serve_refuses_a_grpc_port_in_use(store_dir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "mlserve.cli", "serve", str(store_dir), "--port", "0",
             "--grpc-port", str(port)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert done.returncode == 2
    assert f"--grpc-port / MLSERVE_GRPC_PORT: cannot listen on 127.0.0.1:{port}" in done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "mlserve.cli", "serve", str(store_dir), "--port", "0"],
        capture_output=True, text=True, timeout=60, check=False,
        env=dict(os.environ, MLSERVE_GRPC_PORT="http"),
    )  # fmt: skip
    assert done.returncode == 2
    assert "MLSERVE_GRPC_PORT must be a port number from 0 to 65535, got 'http'" in done.stderr


# ------------------------------------------------------------------- fuzz


class _Context:
    """The part of grpc.ServicerContext the service uses, for calling it in-process."""

    def __init__(self) -> None:
        self.code = None
        self.details = None

    def invocation_metadata(self):
        return ()

    def peer(self):
        return "ipv4:127.0.0.1:1"

    def set_code(self, code):
        self.code = code

    def set_details(self, details):
        self.details = details

    def set_trailing_metadata(self, metadata):
        pass


@pytest.fixture(scope="module")
def servicer(store_dir):
    from mlserve.serving.app import create_app
    from mlserve.serving.grpc_service import InferenceServicer
    from mlserve.serving.registry import serving_state

    app = create_app(store_dir, MLSERVE_RELOAD_INTERVAL=0, MLSERVE_ACCESS_LOG=False)
    return InferenceServicer(serving_state(app))


FIELDS = ["bool_contents", "int_contents", "int64_contents", "uint_contents",
          "uint64_contents", "fp32_contents", "fp64_contents", "bytes_contents"]  # fmt: skip
VALUES = {
    "bool_contents": st.booleans(),
    "int_contents": st.integers(-(2**31), 2**31 - 1),
    "int64_contents": st.integers(-(2**63), 2**63 - 1),
    "uint_contents": st.integers(0, 2**32 - 1),
    "uint64_contents": st.integers(0, 2**64 - 1),
    "fp32_contents": st.floats(width=32),
    "fp64_contents": st.floats(),
    "bytes_contents": st.binary(max_size=5),
}


CONTENTS_FIELD = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents",
                  "INT32": "int_contents", "INT64": "int64_contents", "UINT8": "uint_contents",
                  "UINT16": "uint_contents", "UINT32": "uint_contents",
                  "UINT64": "uint64_contents", "FP32": "fp32_contents",
                  "FP64": "fp64_contents"}  # fmt: skip


@st.composite
def infer_requests(draw):
    """Mostly well-formed requests (so the predict path runs), each part sometimes wrong."""
    sometimes = st.integers(0, 4).map(lambda n: n == 0)  # true one time in five
    request = mlserve_pb.ModelInferRequest(
        model_name=draw(st.sampled_from(["reg", "clf", "named"]))
        if not draw(sometimes) else draw(st.sampled_from(["nope", ""])),
        model_version=draw(st.sampled_from(["", "1"])) if not draw(sometimes) else "x",
    )  # fmt: skip
    raw = draw(st.booleans())
    rows = draw(st.integers(0, 4))
    n_inputs = 1 if not draw(sometimes) else draw(st.integers(0, 4))
    for _ in range(n_inputs):
        datatype = draw(st.sampled_from(sorted(CONTENTS_FIELD) + ["FP16"]))
        if draw(sometimes):
            datatype = draw(st.sampled_from(["BYTES", "FP99", ""]))
        width = 4 if n_inputs == 1 else 1
        shape = [rows, width] if not draw(sometimes) else draw(
            st.lists(st.integers(-2, 6), max_size=3)
        )  # fmt: skip
        tensor = request.inputs.add(
            name="input" if n_inputs == 1 else draw(st.sampled_from(["a", "b", "c", "d", "x"])),
            datatype=datatype, shape=shape,
        )  # fmt: skip
        count = max(0, int(np.prod(shape))) if shape and min(shape) >= 0 else 0
        field = CONTENTS_FIELD.get(datatype, "fp64_contents")
        if draw(sometimes):
            count = draw(st.integers(0, 12))
            field = draw(st.sampled_from(FIELDS))
        values = draw(st.lists(VALUES[field], min_size=min(count, 40), max_size=min(count, 40)))
        if raw:
            from mlserve.serving.codecs import V2_DATATYPES

            dtype = V2_DATATYPES.get(datatype, np.dtype("<f8"))
            data = np.zeros(len(values), dtype=dtype).tobytes()
            if draw(sometimes):
                data = draw(st.binary(max_size=80))
            request.raw_input_contents.append(data)
        else:
            getattr(tensor.contents, field).extend(values)
    for name in draw(st.lists(st.sampled_from(["predict", "predict_proba", "x"]), max_size=2)):
        request.outputs.add(name=name)
    if draw(sometimes):
        request.parameters["binary_data_output"].bool_param = draw(st.booleans())
    return request


def codecs_datatypes():
    from mlserve.serving.codecs import V2_DATATYPES

    return list(V2_DATATYPES)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(request=infer_requests())
def test_fuzzed_requests_never_get_internal(servicer, request):
    context = _Context()
    response = servicer.ModelInfer(request, context)
    assert context.code in (None, CODE.INVALID_ARGUMENT, CODE.NOT_FOUND), context.details
    if context.code is None:
        assert response.model_name == request.model_name
        assert response.outputs
    else:
        assert context.details


def test_start_grpc_server_in_your_own_app(store_dir, models):
    """MLSERVE_GRPC_PORT as Flask config: start_grpc_server(app) serves that app's state."""
    from flask import Flask

    import mlserve
    from mlserve.serving.app import create_app
    from mlserve.serving.grpc_service import start_grpc_server

    app = Flask("own")
    app.config.update(MLSERVE_GRPC_PORT=0, MLSERVE_RELOAD_INTERVAL=0, MLSERVE_ACCESS_LOG=False)
    app.register_blueprint(mlserve.blueprint(str(store_dir)), url_prefix="/ml")
    running = start_grpc_server(app, threads=2)
    try:
        assert running.port > 0
        with grpcclient.InferenceServerClient(f"127.0.0.1:{running.port}") as client:
            result = client.infer("reg", [infer_input(X, "FP64")])
            np.testing.assert_allclose(result.as_numpy("predict"), models["reg"].predict(X))
    finally:
        running.stop(grace=1)
    with pytest.raises(ValueError, match="no gRPC port: pass port= or set MLSERVE_GRPC_PORT"):
        start_grpc_server(create_app(store_dir))
