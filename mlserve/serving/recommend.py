"""Serving a Recommender: the bodies of POST /recommend/<name>, /similar/<name> and V2 infer.

The blueprint reads and decodes the body and picks the model version; this
module turns the decoded JSON into one :class:`mlserve.Recommender` call and
its result into the response payload. Every client mistake is a
:class:`BadRequest` naming it (an unknown user or item id, k out of range,
a wrong type, an unknown key).

Bodies (k defaults to 10; ``candidates`` restricts the items in every form):

- ``{"user": 3, "k": 10}`` or ``{"users": [3, 4], "k": 10, "exclude": [...]}``:
  ``exclude`` is a list of items excluded for every user, or a list of lists,
  one per user;
- ``{"items": [7, 9], "k": 10}``: a new user from their history (fold-in,
  see Recommender.user_vector); the history's items are not recommended;
- /similar: ``{"item": 7, "k": 10}`` or ``{"items": [7, 9], "k": 10}``.

Answer: ``{"items": [[...]], "scores": [[...]]}``, one row per user (or
item), best first, ids where the model has ids. A row is shorter than k
when exclusions leave fewer items.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from mlserve.serving.errors import BadRequest

__all__ = ["is_recommender", "recommend_payload", "similar_payload", "v2_recommend"]

DEFAULT_K = 10
_RECOMMEND_KEYS = {"user", "users", "items", "k", "exclude", "candidates"}
_SIMILAR_KEYS = {"item", "items", "k"}


def is_recommender(metadata: Mapping[str, Any]) -> bool:
    return metadata.get("task") == "recommender"


def _keys(payload: Mapping[str, Any], allowed: set[str], what: str) -> None:
    unknown = sorted(set(payload) - allowed)
    if unknown:
        raise BadRequest(
            f"unknown key {unknown[0]!r} in the {what} body; expected {', '.join(sorted(allowed))}"
        )


def _id(value: Any, what: str) -> Any:
    """One user or item from JSON: an int (JSON numbers arrive as int or float) or a str."""
    if isinstance(value, bool) or value is None:
        raise BadRequest(
            f"{what} must be an integer or a string id, got {_json_name(value)}"
        )
    if isinstance(value, float):
        if not value.is_integer():
            raise BadRequest(f"{what} must be an integer or a string id, got {value!r}")
        return int(value)
    if isinstance(value, (int, str)):
        return value
    raise BadRequest(
        f"{what} must be an integer or a string id, got {_json_name(value)}"
    )


def _ids(values: Any, what: str) -> list:
    if isinstance(values, np.ndarray):  # rectangular numbers arrive as one ndarray
        if values.ndim != 1:
            raise BadRequest(f"{what} must be a list of ids, got a nested list")
        if values.dtype == bool:
            raise BadRequest(f"{what} must be integer or string ids, got booleans")
        values = values.tolist()
    if not isinstance(values, list):
        raise BadRequest(f"{what} must be a list of ids, got {_json_name(values)}")
    return [_id(v, f"{what}[{j}]") for j, v in enumerate(values)]


def _json_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (dict,)):
        return "an object"
    if isinstance(value, (list, np.ndarray)):
        return "a list"
    if isinstance(value, str):
        return "a string"
    return "a number"


def _k(payload: Mapping[str, Any]) -> int:
    k = payload.get("k", DEFAULT_K)
    if isinstance(k, float) and k.is_integer():
        k = int(k)
    if isinstance(k, bool) or not isinstance(k, int):
        raise BadRequest(f"k must be an integer, got {_json_name(k)}")
    return k


def _rows(items: np.ndarray, scores: np.ndarray) -> dict[str, list]:
    """The answer payload; the padding of rows that ran out of items is dropped."""
    out_items, out_scores = [], []
    for row_items, row_scores in zip(items.tolist(), scores.tolist()):
        n = len(row_items)
        while (
            n and row_items[n - 1] in (-1, None) and row_scores[n - 1] == float("-inf")
        ):
            n -= 1
        out_items.append(row_items[:n])
        out_scores.append(row_scores[:n])
    return {"items": out_items, "scores": out_scores}


def _call(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except (ValueError, TypeError) as exc:
        raise BadRequest(str(exc)) from exc


def recommend_payload(
    model: Any, payload: Mapping[str, Any]
) -> tuple[dict[str, list], int]:
    """The answer to a /recommend body, and its number of query rows."""
    _keys(payload, _RECOMMEND_KEYS, "recommend")
    forms = [key for key in ("user", "users", "items") if key in payload]
    if len(forms) != 1:
        raise BadRequest(
            'the recommend body needs exactly one of "user" (one user), "users" (a list) or '
            f'"items" (a new user\'s history), got {" and ".join(map(repr, forms)) or "none"}'
        )
    k = _k(payload)
    candidates = payload.get("candidates")
    if candidates is not None:
        candidates = _ids(candidates, "candidates")
    if forms[0] == "items":
        if "exclude" in payload:
            raise BadRequest(
                '"exclude" goes with "user"/"users"; a history is excluded already'
            )
        history = _ids(payload["items"], "items")
        items, scores = _call(
            model.recommend_for_history, history, k=k, items=candidates
        )
        return _rows(items, scores), 1
    users = (
        [_id(payload["user"], "user")]
        if forms[0] == "user"
        else _ids(payload["users"], "users")
    )
    if not users:
        raise BadRequest("users is empty; give at least 1 user")
    exclude = _exclusions(payload.get("exclude"), users)
    items, scores = _call(
        model.recommend, users, k=k, exclude=exclude, items=candidates
    )
    return _rows(items, scores), len(users)


def _exclusions(value: Any, users: list) -> dict | None:
    if value is None:
        return None
    if isinstance(value, np.ndarray) and value.ndim == 2:
        value = value.tolist()
    if (
        isinstance(value, list)
        and value
        and all(isinstance(v, (list, np.ndarray)) for v in value)
    ):
        if len(value) != len(users):
            raise BadRequest(
                f"exclude has {len(value)} lists but there are {len(users)} users; give one "
                "list per user, or one list for all"
            )
        per_user = [_ids(v, f"exclude[{j}]") for j, v in enumerate(value)]
        if len(set(map(repr, users))) != len(users):
            raise BadRequest("users repeat; per-user exclude lists need distinct users")
        return dict(zip(users, per_user))
    shared = _ids(value, "exclude")
    return {user: shared for user in users}


def similar_payload(
    model: Any, payload: Mapping[str, Any]
) -> tuple[dict[str, list], int]:
    """The answer to a /similar body, and its number of query rows."""
    _keys(payload, _SIMILAR_KEYS, "similar")
    forms = [key for key in ("item", "items") if key in payload]
    if len(forms) != 1:
        raise BadRequest(
            'the similar body needs exactly one of "item" or "items", got '
            f"{' and '.join(map(repr, forms)) or 'none'}"
        )
    items = (
        [_id(payload["item"], "item")]
        if forms[0] == "item"
        else _ids(payload["items"], "items")
    )
    if not items:
        raise BadRequest("items is empty; give at least 1 item")
    found, scores = _call(model.similar_items, items, k=_k(payload))
    return _rows(found, scores), len(items)


def v2_recommend(
    model: Any, payload: Mapping[str, Any], name: str, version: int
) -> dict:
    """KServe V2 (JSON) for a recommender: one input tensor of user ids.

    Request: ``{"inputs": [{"name": "users", "shape": [n], "datatype": "INT64"|"BYTES",
    "data": [...]}], "parameters": {"k": 10}}``. Answer: tensors ``items``
    (INT64, or BYTES for string ids) and ``scores`` (FP32/FP64), shape [n, k].
    """
    inputs = payload.get("inputs")
    if (
        not isinstance(inputs, list)
        or len(inputs) != 1
        or not isinstance(inputs[0], dict)
    ):
        raise BadRequest(
            "a recommender takes exactly one V2 input tensor: the user ids (shape [n], INT64 "
            "or BYTES)"
        )
    tensor = inputs[0]
    datatype = tensor.get("datatype")
    if datatype not in ("INT64", "INT32", "UINT64", "UINT32", "BYTES"):
        raise BadRequest(
            f"the user ids tensor must be INT64 or BYTES, got datatype {datatype!r}"
        )
    data = tensor.get("data")
    if isinstance(data, np.ndarray):
        data = data.reshape(-1)
    users = _ids(data, "the user ids")
    shape = tensor.get("shape")
    if isinstance(shape, np.ndarray):  # a list of numbers arrives as a float64 array
        shape = [int(s) if float(s).is_integer() else s for s in shape.tolist()]
    if (
        not isinstance(shape, list)
        or not all(isinstance(s, int) and s >= 0 for s in shape)
        or int(np.prod(shape or [0])) != len(users)
    ):
        raise BadRequest(
            f"the user ids tensor has shape {shape!r} but {len(users)} values"
        )
    parameters = payload.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise BadRequest("parameters must be an object")
    k = _k(parameters)
    items, scores = _call(model.recommend, users, k=k)
    items_type = "BYTES" if items.dtype == object else "INT64"
    return {
        "model_name": name,
        "model_version": str(version),
        "outputs": [
            {"name": "items", "datatype": items_type, "shape": list(items.shape),
             "data": items.reshape(-1).tolist()},
            {"name": "scores", "datatype": "FP32" if scores.dtype == np.float32 else "FP64",
             "shape": list(scores.shape), "data": scores.reshape(-1).tolist()},
        ],
    }  # fmt: skip
