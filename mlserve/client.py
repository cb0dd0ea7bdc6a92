"""A Python client for an mlserve server: predictions as NumPy arrays over KServe V2.

    client = mlserve.Client("http://127.0.0.1:8000", api_key="...")
    labels = client.predict("churn", X)                   # V2 binary tensors both ways
    proba = client.predict("churn", X, output="proba", alias="canary")

One ``requests.Session`` with a connection pool serves every thread: the
session's state is fixed when the client is made (headers; cookies are never
stored), so concurrent calls share only urllib3's thread-safe pool.
Connection failures and 503 answers are retried a bounded number of times with
exponential backoff (a 503's Retry-After is honoured, capped); every other
error is a ClientError with the HTTP status and the server's message.
"""

from __future__ import annotations

import http.cookiejar
import json
import math
import struct
import threading
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import numpy as np
import requests
from requests.adapters import HTTPAdapter

from ._errors import MLServeError
from .serving.codecs import V2_DATATYPES

__all__ = ["Client", "ClientError"]

_DATATYPES = V2_DATATYPES  # the server's own table: one definition of the wire types
_BY_DTYPE = {dtype: name for name, dtype in _DATATYPES.items()}

#: Client.predict's output= names -> the server's V2 output names
_OUTPUTS = {"labels": "predict", "proba": "predict_proba", "distances": "transform"}

#: longest single wait between two attempts, whatever Retry-After says
MAX_BACKOFF_S = 5.0


class ClientError(MLServeError):
    """A request the server refused or could not be reached for.

    ``status`` is the HTTP status (None when no answer came: connection refused,
    timeout), ``message`` the server's ``{"error": ...}`` text or the reason.
    """

    def __init__(self, message: str, status: int | None = None, url: str | None = None) -> None:
        self.status = status
        self.message = message
        self.url = url
        prefix = f"HTTP {status}" if status is not None else "no answer"
        super().__init__(f"{prefix} from {url}: {message}" if url else f"{prefix}: {message}")


class Client:
    """An mlserve server's predict, metadata, model list, health and recommend endpoints.

    ``retries`` extra attempts (default 3) are made after a connection failure
    or a 503, waiting ``backoff`` seconds, doubled each time (at most
    MAX_BACKOFF_S). ``pool_size`` is the most connections kept open to the
    server (one per concurrently calling thread). Use it as a context manager,
    or call close(), to close them.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float = 10,
        *,
        retries: int = 3,
        backoff: float = 0.1,
        pool_size: int = 10,
    ) -> None:
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http:// or https:// URL, got {base_url!r}")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be an int >= 0, got {retries!r}")
        for label, value, lowest in (("timeout", timeout, 0.0), ("backoff", backoff, -1.0)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                math.isfinite(value) and value > lowest
            ):
                bound = "> 0" if lowest == 0 else ">= 0"
                raise ValueError(f"{label} must be a finite number {bound}, got {value!r}")
        if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
            raise ValueError(f"pool_size must be an int >= 1, got {pool_size!r}")
        self.base_url = base_url.rstrip("/")
        self.timeout = float(timeout)
        self.retries = retries
        self.backoff = float(backoff)
        session = requests.Session()
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_size)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        # no shared mutable state between threads: cookies are never stored
        session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
        session.headers["User-Agent"] = "mlserve-client"
        if api_key is not None:
            session.headers["Authorization"] = f"Bearer {api_key}"
        self._session = session
        self._closed = threading.Event()

    def __repr__(self) -> str:
        return f"Client({self.base_url!r})"

    def __enter__(self) -> Client:  # noqa: PYI034 (Self needs Python 3.11)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the pooled connections; the client takes no more calls."""
        self._closed.set()
        self._session.close()

    # ------------------------------------------------------------ endpoints

    def predict(
        self,
        name: str,
        X: Any,
        version: int | str | None = None,
        alias: str | None = None,
        output: str = "labels",
    ) -> np.ndarray:
        """Predictions of model ``name`` for the rows of ``X`` (2-D), as a NumPy array.

        ``output`` is "labels" (predict), "proba" (predict_proba, classifiers),
        "distances" (a k-means model's transform) or a V2 output name. ``version``
        or ``alias`` picks the model version (default: the server's default alias).
        """
        if version is not None and alias is not None:
            raise ValueError("give version or alias, not both")
        if not isinstance(output, str):
            raise TypeError(f"output must be a string, got {type(output).__name__}")
        rows = _as_rows(X)
        path = f"/v2/models/{_segment(name, 'name')}"
        if version is not None:
            path += f"/versions/{_segment(str(version), 'version')}"
        path += "/infer"
        params = {"alias": alias} if alias is not None else None
        wanted = _OUTPUTS.get(output, output)
        raw = rows.tobytes()
        header = json.dumps(
            {
                "inputs": [
                    {
                        "name": "input",
                        "shape": list(rows.shape),
                        "datatype": _BY_DTYPE[rows.dtype],
                        "parameters": {"binary_data_size": len(raw)},
                    }
                ],
                "outputs": [{"name": wanted, "parameters": {"binary_data": True}}],
            },
            separators=(",", ":"),
        ).encode()
        response = self._request(
            "POST",
            path,
            params=params,
            data=header + raw,
            headers={
                "Content-Type": "application/octet-stream",
                "Inference-Header-Content-Length": str(len(header)),
            },
        )
        return _decode_v2_output(response, wanted)

    def models(self) -> list[dict[str, Any]]:
        """The models the server serves, each with its versions and aliases (GET /models)."""
        return self._json("GET", "/models")["models"]  # type: ignore[no-any-return]

    def metadata(self, name: str, version: int | str | None = None) -> dict[str, Any]:
        """Model ``name``'s V2 metadata: inputs, outputs (with classes), versions."""
        path = f"/v2/models/{_segment(name, 'name')}"
        if version is not None:
            path += f"/versions/{_segment(str(version), 'version')}"
        return self._json("GET", path)  # type: ignore[no-any-return]

    def health(self) -> bool:
        """True when the server is ready (GET /v2/health/ready answers 200), False on 503.

        A not-ready server is not retried; one that cannot be reached is (then ClientError).
        """
        response = self._request("GET", "/v2/health/ready", retry_unavailable=False)
        return response.status_code == 200

    def recommend(
        self,
        name: str,
        users: Any = None,
        *,
        user: Any = None,
        items: Any = None,
        k: int = 10,
        exclude: Any = None,
        candidates: Any = None,
        version: int | str | None = None,
        alias: str | None = None,
    ) -> dict[str, Any]:
        """A Recommender's top ``k`` items (POST /recommend/<name>): the server's answer.

        Give exactly one of ``users`` (a list of ids), ``user`` (one id) or
        ``items`` (a new user's history). The answer holds "items" and "scores".
        """
        body: dict[str, Any] = {"k": k}
        for key, value in (("users", users), ("user", user), ("items", items),
                           ("exclude", exclude), ("candidates", candidates)):  # fmt: skip
            if value is not None:
                body[key] = _jsonable(value)
        params = {
            key: str(value)
            for key, value in (("version", version), ("alias", alias))
            if value is not None
        }
        return self._json(  # type: ignore[no-any-return]
            "POST", f"/recommend/{_segment(name, 'name')}", params=params or None, json=body
        )

    # ------------------------------------------------------------ transport

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._request(method, path, **kwargs)
        try:
            return response.json()
        except ValueError:
            raise ClientError(
                "the answer is not JSON", response.status_code, response.url
            ) from None

    def _request(
        self, method: str, path: str, *, retry_unavailable: bool = True, **kwargs: Any
    ) -> requests.Response:
        """One call, retried after a connection failure or a 503; errors become ClientError."""
        if self._closed.is_set():
            raise ClientError("the client is closed", None, self.base_url)
        url = self.base_url + path
        delay = self.backoff
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                response = self._session.request(method, url, timeout=self.timeout, **kwargs)
            except requests.ConnectionError as exc:
                if last:
                    raise ClientError(f"cannot connect: {_reason(exc)}", None, url) from None
                time.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF_S)
                continue
            except requests.Timeout:
                raise ClientError(f"no answer within {self.timeout:g} s", None, url) from None
            if response.status_code == 503 and retry_unavailable and not last:
                time.sleep(min(max(delay, _retry_after(response)), MAX_BACKOFF_S))
                delay = min(delay * 2, MAX_BACKOFF_S)
                continue
            if response.status_code >= 400 and not (
                response.status_code == 503 and not retry_unavailable
            ):
                raise ClientError(_server_message(response), response.status_code, url)
            return response
        raise AssertionError("unreachable")  # pragma: no cover


# ------------------------------------------------------------------ helpers


def _segment(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string, got {value!r}")
    return quote(value, safe="")


def _as_rows(X: Any) -> np.ndarray:
    try:
        rows = np.asarray(X)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"X must be a 2-D array of numbers: {exc}") from None
    if rows.ndim != 2:
        raise ValueError(f"X must be 2-D (rows, features), got {rows.ndim}-D shape {rows.shape}")
    if rows.dtype.kind not in "biuf":
        raise ValueError(f"X must hold numbers, got dtype {rows.dtype}")
    target = np.dtype("?") if rows.dtype.kind == "b" else rows.dtype.newbyteorder("<")
    return np.ascontiguousarray(rows, dtype=target)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _reason(exc: Exception) -> str:
    """The innermost cause of a requests.ConnectionError (e.g. Connection refused)."""
    reason: Any = exc
    for _ in range(10):  # bounded: a cause chain could loop
        inner = getattr(reason, "reason", None) or (
            reason.args[0] if getattr(reason, "args", None) and isinstance(reason.args[0], Exception)
            else None
        )
        if inner is None or inner is reason:
            break
        reason = inner
    return str(reason)


def _retry_after(response: requests.Response) -> float:
    try:
        value = float(response.headers.get("Retry-After", "0"))
    except ValueError:
        return 0.0
    return value if math.isfinite(value) and value > 0 else 0.0


def _server_message(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500] or response.reason or "error"
    if isinstance(body, dict) and "error" in body:
        return str(body["error"])
    return json.dumps(body)[:500]


def _decode_v2_output(response: requests.Response, wanted: str) -> np.ndarray:
    """The output tensor ``wanted`` of a V2 answer (binary tensors after a JSON header)."""
    body = response.content
    length_header = response.headers.get("Inference-Header-Content-Length")
    try:
        length = len(body) if length_header is None else int(length_header)
        if not 0 <= length <= len(body):
            raise ValueError(f"header length {length} for a body of {len(body)} bytes")
        header = json.loads(body[:length])
        binary = memoryview(body)[length:]
        offset = 0
        for tensor in header["outputs"]:
            shape = [int(s) for s in tensor["shape"]]
            size = (tensor.get("parameters") or {}).get("binary_data_size")
            if tensor["name"] != wanted:
                offset += int(size or 0)
                continue
            datatype = tensor["datatype"]
            if size is None:  # sent as JSON data
                return np.asarray(tensor["data"]).reshape(shape)
            raw = binary[offset : offset + int(size)]
            if len(raw) != int(size):
                raise ValueError(f"output {wanted!r} runs past the end of the body")
            if datatype == "BYTES":
                return _decode_bytes(raw, math.prod(shape)).reshape(shape)
            return np.frombuffer(raw, dtype=_DATATYPES[datatype]).reshape(shape).copy()
    except (KeyError, TypeError, ValueError, struct.error) as exc:
        raise ClientError(
            f"malformed V2 answer: {exc!r}", response.status_code, response.url
        ) from None
    raise ClientError(f"the answer has no output {wanted!r}", response.status_code, response.url)


def _decode_bytes(raw: memoryview, count: int) -> np.ndarray:
    """BYTES elements: each a 4-byte little-endian length, then the UTF-8 text."""
    values = []
    offset = 0
    for _ in range(count):
        (n,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + n > len(raw):
            raise ValueError("a BYTES element runs past the end of its tensor")
        values.append(bytes(raw[offset : offset + n]).decode())
        offset += n
    if offset != len(raw):
        raise ValueError("BYTES tensor has trailing bytes")
    return np.array(values, dtype=str)
