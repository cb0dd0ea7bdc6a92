"""Helpers for the store and serving tests: small fitted models and a real gunicorn server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import requests

import mlserve

SERVER_START_TIMEOUT = 30.0
N_FEATURES = 4


class NamedColumns:
    """A minimal table with string column names, so a model records feature names."""

    def __init__(self, data: np.ndarray, columns: list[str]) -> None:
        self.data = data
        self.columns = columns

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return np.asarray(self.data, dtype=dtype)


def training_data(seed: int = 0, n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, N_FEATURES))
    y = X @ np.array([1.0, -2.0, 0.5, 3.0]) + 0.25
    return X, y


def fit_regressor(seed: int = 0) -> Any:
    X, y = training_data(seed)
    return mlserve.LinearRegression().fit(X, y)


def fit_classifier(seed: int = 0) -> Any:
    X, y = training_data(seed)
    labels = np.where(y > 0, "high", "low")
    return mlserve.LogisticRegression().fit(X, labels)


def fit_named_classifier(seed: int = 0) -> Any:
    X, y = training_data(seed)
    labels = (y > 0).astype(np.int64)
    return mlserve.LogisticRegression().fit(NamedColumns(X, ["a", "b", "c", "d"]), labels)


class Server:
    """A gunicorn server (``mlserve serve`` by default) on an ephemeral 127.0.0.1 port."""

    def __init__(
        self,
        store_dir: Path | str,
        *args: str,
        command: list[str] | None = None,
        ready_path: str = "/v2/health/ready",
    ) -> None:
        """Run ``mlserve serve STORE_DIR ARGS``, or ``command`` (which must bind port 0)."""
        if command is None:
            command = [
                sys.executable, "-m", "mlserve.cli", "serve", str(store_dir),
                "--host", "127.0.0.1", "--port", "0", *args,
            ]  # fmt: skip
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env
        )
        self.ready_path = ready_path
        self.log: list[str] = []
        self._port_found = threading.Event()
        self.port: int | None = None
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _read_log(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.log.append(line)
            match = re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", line)
            if match and self.port is None:
                self.port = int(match.group(1))
                self._port_found.set()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        if not self._port_found.wait(SERVER_START_TIMEOUT):
            raise RuntimeError("server did not start:\n" + "".join(self.log))
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("server exited:\n" + "".join(self.log))
            try:
                if requests.get(f"{self.url}{self.ready_path}", timeout=10).status_code == 200:
                    return
            except (requests.ConnectionError, requests.Timeout):
                pass  # still starting: a busy machine can take seconds to answer
            time.sleep(0.05)
        raise RuntimeError("server did not get ready:\n" + "".join(self.log))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(timeout=5)
        if self.process.stderr is not None:
            self.process.stderr.close()
