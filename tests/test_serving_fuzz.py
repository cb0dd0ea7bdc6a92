"""Arbitrary and near-valid bodies on every predict endpoint: a 2xx or a 4xx with a JSON error, never a 500."""

from __future__ import annotations

import json
from urllib.parse import quote

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlserve.serving.app import create_app
from mlserve.store import ModelStore
from serving_support import fit_classifier, fit_named_classifier, fit_regressor

CLIENT_STATUSES = {200, 400, 404, 405, 413, 415}
ENDPOINTS = [
    "/v1/models/{name}:predict",
    "/v2/models/{name}/infer",
    "/invocations",
    "/predict/{name}",
]

numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
)
scalars = st.one_of(numbers, st.text(max_size=5))
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5), st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=20,
)
rows = st.lists(st.lists(numbers, min_size=0, max_size=6), min_size=0, max_size=4)
datatypes = st.sampled_from(
    ["FP32", "FP64", "INT32", "INT64", "BOOL", "UINT8", "FP16", "BYTES", "X"]
)
shapes = st.lists(st.integers(min_value=-1, max_value=5), max_size=3)
v2_tensor = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["input", "a", "b", "c", "d"]),
        "shape": shapes,
        "datatype": datatypes,
    },
    optional={
        "data": st.one_of(rows, st.lists(numbers, max_size=8), json_values),
        "parameters": st.one_of(
            st.fixed_dictionaries({"binary_data_size": st.integers(-1, 64)}), json_values
        ),
    },
)
v2_bodies = st.fixed_dictionaries(
    {"inputs": st.one_of(st.lists(v2_tensor, max_size=4), json_values)},
    optional={
        "outputs": st.one_of(
            st.lists(
                st.fixed_dictionaries(
                    {"name": st.sampled_from(["predict", "predict_proba", "x"])},
                    optional={"parameters": json_values},
                ),
                max_size=3,
            ),
            json_values,
        ),
        "parameters": json_values,
        "id": json_values,
    },
)
row_bodies = st.dictionaries(
    st.sampled_from(
        ["instances", "inputs", "features", "return", "dataframe_split", "dataframe_records"]
    ),
    st.one_of(
        rows,
        st.lists(numbers, max_size=6),
        json_values,
        st.sampled_from(["predict", "proba", "all"]),
        st.fixed_dictionaries(
            {
                "columns": st.lists(st.sampled_from(["a", "b", "c", "d", "e"]), max_size=5),
                "data": rows,
            }
        ),
        st.lists(
            st.dictionaries(st.sampled_from(["a", "b", "c", "d", "e"]), numbers, max_size=5),
            max_size=3,
        ),
    ),
    max_size=3,
)


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    """The app ``mlserve serve`` runs (its routing errors are JSON too)."""
    store = ModelStore(tmp_path_factory.mktemp("fuzz") / "models")
    store.publish("reg", fit_regressor())
    store.publish("clf", fit_classifier())
    store.publish("named", fit_named_classifier())
    app = create_app(store.root, MLSERVE_RELOAD_INTERVAL=0, MLSERVE_DEFAULT_MODEL="named")
    return app.test_client()


def check(response) -> None:
    assert response.status_code in CLIENT_STATUSES, response.get_data(as_text=True)
    if response.status_code != 200:
        assert set(response.json) == {"error"}


FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@FUZZ
@given(
    body=st.one_of(json_values, row_bodies, v2_bodies),
    endpoint=st.sampled_from(ENDPOINTS),
    name=st.sampled_from(["reg", "clf", "named"]),
)
def test_json_bodies_never_give_500(client, body, endpoint, name):
    try:
        data = json.dumps(body)
    except ValueError:
        return
    check(client.post(endpoint.format(name=name), data=data, content_type="application/json"))


@FUZZ
@given(
    raw=st.binary(max_size=200),
    endpoint=st.sampled_from(ENDPOINTS),
    content_type=st.sampled_from(
        ["application/json", "application/x-npy", "text/csv", "application/octet-stream", ""]
    ),
    header_length=st.one_of(
        st.none(),
        st.integers(-5, 250).map(str),
        st.text(st.characters(codec="ascii", exclude_categories=["Cc"]), max_size=3),
    ),
)
def test_raw_bodies_never_give_500(client, raw, endpoint, content_type, header_length):
    headers = {}
    if header_length is not None:
        headers["Inference-Header-Content-Length"] = header_length
    response = client.post(
        endpoint.format(name="clf"), data=raw, content_type=content_type, headers=headers
    )
    check(response)


@FUZZ
@given(
    header=v2_bodies,
    tail=st.binary(max_size=80),
    values=st.lists(st.floats(width=32), max_size=12),
)
def test_binary_v2_never_gives_500(client, header, tail, values):
    try:
        raw_header = json.dumps(header).encode()
    except ValueError:
        return
    body = raw_header + np.asarray(values, dtype="<f4").tobytes() + tail
    response = client.post(
        "/v2/models/reg/infer",
        data=body,
        headers={"Inference-Header-Content-Length": str(len(raw_header))},
    )
    check(response)


url_parts = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="/?#%"), min_size=1, max_size=8
)


@FUZZ
@given(
    name=st.one_of(st.sampled_from(["reg", "clf"]), url_parts),
    ref=st.one_of(st.sampled_from(["1", "2", "latest", "production"]), url_parts),
    template=st.sampled_from(
        [
            "GET /v1/models/{name}",
            "GET /v1/models/{name}/versions/{ref}",
            "GET /v1/models/{name}/labels/{ref}/metadata",
            "POST /v1/models/{name}/versions/{ref}:predict",
            "POST /v1/models/{name}/labels/{ref}:{ref}",
            "GET /v2/models/{name}/versions/{ref}",
            "GET /v2/models/{name}/versions/{ref}/ready",
            "POST /v2/models/{name}/versions/{ref}/infer",
            "POST /predict/{name}?version={ref}",
            "POST /predict/{name}?alias={ref}",
            "POST /invocations?version={ref}",
            "GET /models/{name}",
        ]
    ),
)
def test_any_name_version_or_alias_in_the_url_is_a_client_error(client, name, ref, template):
    method, path = template.split(" ")
    url = path.format(name=quote(name, safe=":"), ref=quote(ref, safe=":"))
    if method == "GET":
        response = client.get(url)
    else:
        response = client.post(url, json={"instances": [[1.0, 2.0, 3.0, 4.0]]})
    check(response)
