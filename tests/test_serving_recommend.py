"""POST /recommend/<name>, /similar/<name> and KServe V2 infer of a Recommender,
over real HTTP (gunicorn, 2 workers sharing the mapped factors)."""

from __future__ import annotations

import numpy as np
import pytest
import requests
from serving_support import Server, fit_regressor

import mlserve
from mlserve.store import ModelStore

N_USERS, N_ITEMS, D = 30, 400, 8


def _factors(seed):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(N_USERS, D)), rng.normal(size=(N_ITEMS, D))


ITEM_IDS = [f"sku-{j}" for j in range(N_ITEMS)]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("rec") / "models"
    store = ModelStore(root)
    U, V = _factors(0)
    plain = mlserve.Recommender(U, V)
    named = mlserve.Recommender(
        U, V, item_ids=ITEM_IDS, user_ids=list(range(100, 100 + N_USERS))
    )
    store.publish("rec", plain, alias="production")
    store.publish("shop", named, alias="production")
    U2, V2 = _factors(1)
    store.publish("shop", mlserve.Recommender(U2, V2, item_ids=ITEM_IDS,
                                              user_ids=list(range(100, 100 + N_USERS))))  # fmt: skip
    store.publish("reg", fit_regressor(), alias="production")
    server = Server(root, "--workers", "2", "--threads", "2", "--no-access-log")
    try:
        yield server, plain, named, mlserve.Recommender(U2, V2, item_ids=ITEM_IDS,
                                                        user_ids=list(range(100, 100 + N_USERS)))  # fmt: skip
    finally:
        server.stop()
    assert not any("Traceback" in line for line in server.log), "".join(server.log)[
        -4000:
    ]


def post(server, path, body, **kwargs):
    return requests.post(f"{server.url}{path}", json=body, timeout=30, **kwargs)


def test_one_user(served):
    server, plain, _, _ = served
    response = post(server, "/recommend/rec", {"user": 3, "k": 5})
    assert response.status_code == 200, response.text
    items, scores = plain.recommend([3], k=5)
    assert response.json() == {"items": items.tolist(), "scores": scores.tolist()}
    assert response.headers["X-Model-Version"] == "1"


def test_users_with_exclusions_and_candidates(served):
    server, plain, _, _ = served
    best = plain.recommend([1, 2], k=3)[0]
    body = {"users": [1, 2], "k": 4, "exclude": [best[0].tolist(), best[1].tolist()],
            "candidates": list(range(0, 400, 2))}  # fmt: skip
    response = post(server, "/recommend/rec", body)
    assert response.status_code == 200, response.text
    exclude = {1: best[0].tolist(), 2: best[1].tolist()}
    items, scores = plain.recommend(
        [1, 2], k=4, exclude=exclude, items=range(0, 400, 2)
    )
    assert response.json() == {"items": items.tolist(), "scores": scores.tolist()}
    shared = post(
        server, "/recommend/rec", {"users": [1, 2], "k": 2, "exclude": [5, 6]}
    ).json()
    assert (
        shared["items"]
        == plain.recommend([1, 2], k=2, exclude={1: [5, 6], 2: [5, 6]})[0].tolist()
    )


def test_ids_versions_and_aliases(served):
    server, _, named, newer = served
    default = post(
        server, "/recommend/shop", {"user": 104, "k": 3}
    )  # the production alias
    assert default.status_code == 200, default.text
    assert default.json()["items"] == named.recommend([104], k=3)[0].tolist()
    assert default.headers["X-Model-Version"] == "1"
    pinned = post(server, "/recommend/shop?version=2", {"user": 104, "k": 3}).json()
    assert pinned["items"] == newer.recommend([104], k=3)[0].tolist()
    production = post(server, "/recommend/shop?alias=production", {"user": 104, "k": 3})
    assert production.json()["items"] == default.json()["items"]
    assert all(isinstance(i, str) and i.startswith("sku-") for i in pinned["items"][0])


def test_new_user_from_history(served):
    server, plain, _, _ = served
    response = post(server, "/recommend/rec", {"items": [3, 17, 250], "k": 6})
    assert response.status_code == 200, response.text
    items, scores = plain.recommend_for_history([3, 17, 250], k=6)
    got = response.json()
    assert got["items"] == items.tolist()
    np.testing.assert_allclose(got["scores"], scores, rtol=1e-12)
    assert not {3, 17, 250} & set(got["items"][0])


def test_similar_items(served):
    server, _, named, newer = served
    response = post(server, "/similar/shop?version=1", {"item": "sku-7", "k": 4})
    assert response.status_code == 200, response.text
    items, scores = named.similar_items(["sku-7"], k=4)
    assert response.json() == {"items": items.tolist(), "scores": scores.tolist()}
    many = post(
        server, "/similar/shop?version=2", {"items": ["sku-1", "sku-2"], "k": 2}
    ).json()
    assert many["items"] == newer.similar_items(["sku-1", "sku-2"], k=2)[0].tolist()


def test_rows_shorter_than_k_when_exclusions_leave_fewer(served):
    server, plain, _, _ = served
    body = {"user": 0, "k": 3, "candidates": [1, 2, 3], "exclude": [2]}
    got = post(server, "/recommend/rec", body).json()
    assert len(got["items"][0]) == len(got["scores"][0]) == 2
    assert (
        got["items"][0]
        == plain.recommend([0], k=3, items=[1, 2, 3], exclude={0: [2]})[0][
            0, :2
        ].tolist()
    )


def test_kserve_v2_with_user_ids(served):
    server, _, named, _ = served
    body = {"inputs": [{"name": "users", "shape": [2], "datatype": "INT64", "data": [101, 103]}],
            "parameters": {"k": 3}}  # fmt: skip
    response = post(server, "/v2/models/shop/versions/1/infer", body)
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    items, scores = named.recommend([101, 103], k=3)
    assert outputs["items"]["datatype"] == "BYTES" and outputs["items"]["shape"] == [
        2,
        3,
    ]
    assert outputs["items"]["data"] == items.reshape(-1).tolist()
    assert outputs["scores"]["datatype"] == "FP64"
    np.testing.assert_allclose(outputs["scores"]["data"], scores.reshape(-1))
    metadata = requests.get(f"{server.url}/v2/models/shop", timeout=10).json()
    assert metadata["inputs"] == [{"name": "users", "datatype": "INT64", "shape": [-1]}]
    assert [o["name"] for o in metadata["outputs"]] == ["items", "scores"]


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/recommend/shop", {"user": 99, "k": 3}, "unknown user id 99"),
        ("/recommend/shop", {"user": "ann"}, "users must be user ids of type int, got str 'ann'"),
        ("/recommend/shop", {"user": 101, "candidates": ["nope"]}, "unknown item id 'nope'"),
        ("/recommend/rec", {"user": 3, "k": 0}, "k must be between 1 and the 400 items, got 0"),
        ("/recommend/rec", {"user": 3, "k": 401}, "k must be between 1 and the 400 items, got 401"),
        ("/recommend/rec", {"user": 3, "k": "ten"}, "k must be an integer, got a string"),
        ("/recommend/rec", {"user": 3, "k": 2.5}, "k must be an integer, got a number"),
        ("/recommend/rec", {"user": 3.5}, "user must be an integer or a string id, got 3.5"),
        ("/recommend/rec", {"user": True}, "user must be an integer or a string id, got a boolean"),
        ("/recommend/rec", {"user": 30}, r"user index 30 is out of range \[0, 30\)"),
        ("/recommend/rec", {"users": []}, "users is empty"),
        ("/recommend/rec", {"users": 3}, "users must be a list of ids, got a number"),
        ("/recommend/rec", {"user": 1, "users": [1]}, 'exactly one of "user"'),
        ("/recommend/rec", {"k": 3}, 'exactly one of "user" .* got none'),
        ("/recommend/rec", {"user": 1, "top": 3}, "unknown key 'top' in the recommend body"),
        ("/recommend/rec", {"users": [1, 2], "exclude": [[1]]}, "exclude has 1 lists but there are 2 users"),
        ("/recommend/rec", {"items": [1], "exclude": [2]}, '"exclude" goes with "user"/"users"'),
        ("/recommend/rec", {"items": []}, "the history has no items"),
        ("/similar/rec", {"item": 400}, r"item index 400 is out of range \[0, 400\)"),
        ("/similar/rec", {"item": 1, "k": 400}, "k must be between 1 and the 399 other items, got 400"),
        ("/similar/rec", {"user": 1}, "unknown key 'user' in the similar body"),
        ("/recommend/reg", {"user": 1}, "model 'reg' is not a recommender"),
        ("/predict/rec", {"instances": [[0.0] * 8]}, "model 'rec' is a recommender: it has no predict"),
        ("/v2/models/rec/infer", {"inputs": [{"name": "x", "shape": [1, 8], "datatype": "FP64", "data": [0.0] * 8}]},
         "the user ids tensor must be INT64 or BYTES, got datatype 'FP64'"),
        ("/v2/models/rec/infer", {"inputs": [{"name": "u", "shape": [2], "datatype": "INT64", "data": [1]}]},
         r"the user ids tensor has shape \[2\] but 1 values"),
    ],
)  # fmt: skip
def test_bad_requests_are_400_naming_the_problem(served, path, body, message):
    import re

    server = served[0]
    response = post(server, path, body)
    assert response.status_code == 400, response.text
    assert re.search(message, response.json()["error"]), response.json()["error"]


def test_malformed_body_unknown_model_and_media_type(served):
    server = served[0]
    bad = requests.post(f"{server.url}/recommend/rec", data=b"{nope", timeout=10,
                        headers={"Content-Type": "application/json"})  # fmt: skip
    assert bad.status_code == 400
    assert post(server, "/recommend/missing", {"user": 1}).status_code == 404
    assert post(server, "/recommend/rec?version=9", {"user": 1}).status_code == 404
    text = requests.post(f"{server.url}/recommend/rec", data=b"x", timeout=10,
                         headers={"Content-Type": "text/plain"})  # fmt: skip
    assert text.status_code == 415
    assert requests.get(f"{server.url}/recommend/rec", timeout=10).status_code == 405


def test_openapi_documents_the_endpoints(served):
    document = requests.get(f"{served[0].url}/openapi.json", timeout=10).json()
    assert "post" in document["paths"]["/recommend/{name}"]
    assert "post" in document["paths"]["/similar/{name}"]
