"""Drift monitoring: the rows a model version serves, against its training data.

With ``MLSERVE_DRIFT`` on, every answered predict request hands its decoded
rows and its outputs to :meth:`DriftMonitor.observe`: one bounded deque
append (a request that finds the deque full is not recorded and is counted
as dropped: under more traffic than the monitor can afford it samples). A
:class:`~mlserve.serving.deferred.Flusher` thread drains the deque: it turns
each row into bin numbers against the version's reference (the bins stored
in the model file, see :mod:`mlserve._reference`) and writes them into a
ring of the last ``MLSERVE_DRIFT_WINDOW`` rows. The ring holds bin numbers
(two bytes per feature and row), never the served values.

Across gunicorn workers: with ``PROMETHEUS_MULTIPROC_DIR`` set (``mlserve
serve`` sets it), each worker's ring is a memory-mapped file in
``<that folder>/mlserve-drift/``, one per model version and worker; a
``GET /drift/<name>`` (or a ``/metrics`` scrape), whichever worker answers it,
reads every live worker's ring and merges them (the newest rows of each, in
proportion, up to the window size). Without it, the ring is in this
process's memory. A worker that exits takes its rows with it.

The numbers (PSI per feature and for the prediction, KS for numeric
features) are computed when they are read, from bin counts only.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
import threading
from collections import deque
from collections.abc import Mapping
from typing import Any

import numpy as np
from prometheus_client import Gauge

from mlserve._reference import Reference, parse_reference
from mlserve.serving.deferred import FLUSH_INTERVAL_SECONDS, Flusher, take_all

__all__ = ["DRIFT_SUBDIR", "NO_REFERENCE", "DriftMonitor"]

log = logging.getLogger("mlserve.serving")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
DRIFT_SUBDIR = "mlserve-drift"
#: most requests waiting for the drift thread; more are dropped (counted)
MAX_PENDING = 4096
#: most model versions with a window per worker (the least recently fed goes first)
MAX_WINDOWS = 64
NO_REFERENCE = (
    "no reference: the model file has no training statistics (bins); fit it with mlserve or "
    "convert it with mlserve.convert(model, reference=X_train)"
)
_MAGIC = 0x4D4C5344524654  # "MLSDRFT"
_HEADER = 8  # int64 values: magic, n_cols, capacity, count, pid, ...
_MAX_CAPACITY = 10_000_000

FEATURE_PSI = Gauge(
    "mlserve_feature_drift_psi",
    "PSI of a feature's served values (the drift window) against the training data.",
    ["model", "version", "feature"],
    multiprocess_mode="livemostrecent",
)
PREDICTION_PSI = Gauge(
    "mlserve_prediction_drift_psi",
    "PSI of a model version's predictions (the drift window) against those on the training data.",
    ["model", "version"],
    multiprocess_mode="livemostrecent",
)


class _Ring:
    """The bin numbers of a version's last ``capacity`` rows (one column per feature and
    one for the prediction), in memory or in a memory-mapped file other workers read."""

    def __init__(self, n_cols: int, capacity: int, path: str | None) -> None:
        self.path = path
        if path is None:
            self.header = np.zeros(_HEADER, dtype=np.int64)
            self.codes = np.zeros((capacity, n_cols), dtype=np.uint16)
        else:
            size = _HEADER * 8 + capacity * n_cols * 2
            with open(path, "wb") as f:
                f.truncate(size)
            mapped = np.memmap(path, dtype=np.uint8, mode="r+", shape=(size,))
            self.header = mapped[: _HEADER * 8].view(np.int64)
            self.codes = mapped[_HEADER * 8:].view(np.uint16).reshape(capacity, n_cols)
        self.header[:5] = (_MAGIC, n_cols, capacity, 0, os.getpid())

    def add(self, codes: np.ndarray) -> None:
        capacity = self.codes.shape[0]
        codes = codes[-capacity:]
        start = int(self.header[3])
        positions = (start + np.arange(codes.shape[0])) % capacity
        self.codes[positions] = codes
        self.header[3] = start + codes.shape[0]  # readers take rows below this count

    def close(self) -> None:
        if self.path is not None:
            try:
                os.unlink(self.path)
            except OSError:
                pass


def _newest(codes: np.ndarray, count: int, k: int) -> np.ndarray:
    """The newest ``k`` rows of a ring that has taken ``count`` rows."""
    capacity = codes.shape[0]
    k = min(k, count, capacity)
    positions = (count - k + np.arange(k)) % capacity
    return codes[positions]


def _read_ring(path: str, n_cols: int) -> tuple[np.ndarray, int, int] | None:
    """(codes, count, dropped) of a worker's ring file, or None if it is not one we can use."""
    try:
        size = os.path.getsize(path)
        if size < _HEADER * 8:
            return None
        mapped = np.memmap(path, dtype=np.uint8, mode="r", shape=(size,))
    except (OSError, ValueError):
        return None
    header = mapped[: _HEADER * 8].view(np.int64)
    magic, cols, capacity, count = (int(v) for v in header[:4])
    dropped = max(int(header[5]), 0)
    if (
        magic != _MAGIC
        or cols != n_cols
        or not 0 < capacity <= _MAX_CAPACITY
        or size != _HEADER * 8 + capacity * cols * 2
        or count < 0
    ):
        return None
    codes = mapped[_HEADER * 8:].view(np.uint16).reshape(capacity, cols)
    return codes, count, dropped


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class DriftMonitor:
    """Per ServingState: the drift windows of the versions it serves, and their report.

    Parameters
    ----------
    window : int
        Rows per model version (MLSERVE_DRIFT_WINDOW).
    threshold : float
        A feature with a PSI at or above this is ``drifted`` (MLSERVE_DRIFT_PSI_THRESHOLD).
    store_root : str
        The store's folder (names the ring files, so two stores never mix).
    """

    def __init__(self, window: int, threshold: float, store_root: str) -> None:
        self.window = int(window)
        self.threshold = float(threshold)
        self._tag = hashlib.blake2b(str(store_root).encode(), digest_size=6).hexdigest()
        self._pending: deque[tuple[Any, np.ndarray, Mapping[str, np.ndarray]]] = deque()
        # requests not recorded (the deque was full), per version; written into the
        # version's ring header (slot 5), so a read sums them over workers
        self._dropped: dict[tuple[str, int], int] = {}
        self._references: dict[tuple[str, int], Reference | None] = {}
        self._rings: dict[tuple[str, int], _Ring] = {}
        self._lock = threading.Lock()  # the rings dict, between the drain and a reader
        self._drain_lock = threading.Lock()
        self._flusher = Flusher(self._drain, FLUSH_INTERVAL_SECONDS, "mlserve-drift")

    # ------------------------------------------------------------ request path

    def observe(self, loaded: Any, rows: np.ndarray, results: Mapping[str, np.ndarray]) -> None:
        """Note an answered request's rows and outputs (one append; never blocks)."""
        pending = self._pending
        if len(pending) >= MAX_PENDING:
            key = (loaded.name, loaded.version)
            self._dropped[key] = self._dropped.get(key, 0) + 1  # approximate under threads
            return
        pending.append((loaded, rows, results))
        if self._flusher.idle:
            self._flusher.wake()

    # ------------------------------------------------------------ drift thread

    def _directory(self) -> str | None:
        base = os.environ.get(MULTIPROC_ENV)
        if not base:
            return None
        path = os.path.join(base, DRIFT_SUBDIR)
        os.makedirs(path, exist_ok=True)
        return path

    def _prefix(self, name: str) -> str:
        return f"{self._tag}@{name}@"

    def _reference(self, loaded: Any) -> Reference | None:
        key = (loaded.name, loaded.version)
        if key not in self._references:
            ref = None
            if not getattr(loaded, "is_recommender", False):
                ref = parse_reference(loaded.metadata)
            self._references[key] = ref
        return self._references[key]

    def _ring(self, key: tuple[str, int], n_cols: int) -> _Ring:
        ring = self._rings.get(key)
        if ring is not None:
            self._rings[key] = self._rings.pop(key)  # most recently fed last
            return ring
        directory = self._directory()
        path = None
        if directory is not None:
            name, version = key
            path = os.path.join(directory, f"{self._prefix(name)}{version}@{os.getpid()}.win")
        try:
            ring = _Ring(n_cols, self.window, path)
        except (OSError, ValueError) as exc:  # e.g. a full disk: this worker's window only
            log.error("mlserve: cannot create the drift window file %s: %s; keeping it in "
                      "this worker's memory (other workers' reads will not see it)", path, exc)
            ring = _Ring(n_cols, self.window, None)
        with self._lock:
            self._rings[key] = ring
            while len(self._rings) > MAX_WINDOWS:
                oldest = next(iter(self._rings))
                self._rings.pop(oldest).close()
        return ring

    def _drain(self) -> bool:
        # a reader's flush and the drift thread may both drain: one at a time, so the
        # rings are fed by one thread and no popped row is lost
        with self._drain_lock:
            return self._drain_locked()

    def _drain_locked(self) -> bool:
        pending = self._pending
        if not pending:
            return False
        items = take_all(pending)
        window = self.window
        # per loaded version: [loaded, reference, rows parts, prediction parts, rows held]
        groups: dict[int, list | None] = {}
        for loaded, rows, results in items:
            group = groups.get(id(loaded), False)
            if group is False:
                ref = self._reference(loaded)
                ok = ref is not None and rows.ndim == 2 and rows.shape[1] == len(ref.features)
                group = groups[id(loaded)] = [loaded, ref, deque(), deque(), 0] if ok else None
            if group is None:
                continue
            n = rows.shape[0]
            predicted = results.get("predict")
            if predicted is None or predicted.ndim != 1:
                predicted = _prediction(loaded, results, n)
            if n > window:  # rare: one request larger than the window
                rows = rows[-window:]
                predicted = predicted[-window:] if predicted is not None else None
                n = window
            group[2].append(rows)
            group[3].append(predicted)
            group[4] += n
            while group[4] - group[2][0].shape[0] >= window:  # older rows would fall out
                group[4] -= group[2].popleft().shape[0]
                group[3].popleft()
        for group in groups.values():
            if group is None:
                continue
            loaded, ref, row_parts, prediction_parts, _ = group
            X = np.concatenate(row_parts)[-window:]
            n_features = len(ref.features)
            codes = np.zeros((X.shape[0], n_features + 1), dtype=np.uint16)
            for j, column in enumerate(ref.features):
                codes[:, j] = column.code(X[:, j])
            if ref.prediction is not None and all(p is not None for p in prediction_parts):
                predictions = np.concatenate(prediction_parts)[-window:]
                codes[:, n_features] = ref.prediction.code(predictions)
            key = (loaded.name, loaded.version)
            ring = self._ring(key, n_features + 1)
            ring.add(codes)
            ring.header[5] = self._dropped.get(key, 0)
        return True

    def discard_pending(self) -> None:
        """After a fork: the parent's pending rows and rings are the parent's."""
        self._pending.clear()
        self._rings = {}
        self._lock = threading.Lock()
        self._drain_lock = threading.Lock()

    def flush(self) -> None:
        """Apply what is pending now (before a read of this worker's windows)."""
        self._flusher.flush()

    # ---------------------------------------------------------------- reading

    def _windows(self, name: str) -> dict[int, list[tuple[np.ndarray, int]]]:
        """Every worker's (codes, count) per version of model ``name``."""
        self.flush()
        found: dict[int, list[tuple[np.ndarray, int]]] = {}
        directory = self._directory()
        prefix = self._prefix(name)
        paths = [] if directory is None else glob.glob(
            os.path.join(glob.escape(directory), glob.escape(prefix) + "*.win")
        )
        for path in paths:  # the other workers' rings
            parts = os.path.basename(path)[len(prefix):-len(".win")].split("@")
            if len(parts) != 2 or not all(p.isdigit() for p in parts):
                continue
            version, pid = int(parts[0]), int(parts[1])
            if pid != os.getpid() and not _alive(pid):
                try:
                    os.unlink(path)  # a worker that exited: its rows went with it
                except OSError:
                    pass
                continue
            if pid == os.getpid():
                continue  # this worker's own ring: taken from memory below
            found.setdefault(version, []).append((path, 0))  # read below, once n_cols is known
        with self._lock:  # this worker's rings, from memory
            rings = [(k, r) for k, r in self._rings.items() if k[0] == name]
        for (_, version), ring in rings:
            found.setdefault(version, []).append((ring.codes, int(ring.header[3])))
        return found

    def report(self, name: str, versions: list[tuple[int, Any]]) -> dict[str, Any]:
        """The drift of model ``name``: one entry per (version, loaded model) given."""
        windows = self._windows(name)
        entries = []
        for version, loaded in versions:
            entries.append(self._version_report(name, version, loaded, windows.get(version, [])))
        return {
            "model": name,
            "window": self.window,
            "psi_threshold": self.threshold,
            "versions": entries,
        }

    def _version_report(
        self, name: str, version: int, loaded: Any, sources: list[tuple[Any, int]]
    ) -> dict[str, Any]:
        ref = self._reference(loaded)
        entry: dict[str, Any] = {"version": version}
        if ref is None:
            entry.update(reference=False, message=NO_REFERENCE, window_size=0)
            return entry
        n_cols = len(ref.features) + 1
        rings = []
        dropped = self._dropped.get((name, version), 0)  # this worker's
        for source, count in sources:
            if isinstance(source, str):  # another worker's ring file
                read = _read_ring(source, n_cols)
                if read is None:
                    continue
                source, count, theirs = read
                dropped += theirs
            elif source.shape[1] != n_cols:
                continue
            rings.append((source, count))
        sizes = [min(count, codes.shape[0]) for codes, count in rings]
        total = sum(sizes)
        if total > self.window:  # several workers: the newest rows of each, in proportion
            shares = [self.window * s / total for s in sizes]
            sizes = [int(s) for s in shares]
            by_remainder = sorted(range(len(shares)), key=lambda i: sizes[i] - shares[i])
            for i in by_remainder[: self.window - sum(sizes)]:
                sizes[i] += 1
        columns = [*ref.features, ref.prediction]
        counts = [np.zeros(c.n_bins if c is not None else 1) for c in columns]
        for (codes, count), k in zip(rings, sizes):
            newest = _newest(codes, count, k).astype(np.int64)
            for j, column in enumerate(columns):
                if column is not None and k:
                    counts[j] += np.bincount(newest[:, j], minlength=column.n_bins)[: column.n_bins]
        size = int(sum(sizes))
        entry.update(reference=True, window_size=size)
        names = loaded.feature_names or tuple(f"x{j}" for j in range(len(ref.features)))
        features = []
        for j, column in enumerate(ref.features):
            item: dict[str, Any] = {"name": names[j], "type": column.kind}
            if size:
                value = column.psi(counts[j])
                item["psi"] = value
                ks = column.ks(counts[j])
                if ks is not None:
                    item["ks"] = ks
                item["drifted"] = bool(value >= self.threshold)
            else:
                item.update(psi=None, drifted=False)
                if column.kind == "numeric":
                    item["ks"] = None
            features.append(item)
        entry["features"] = features
        entry["drifted_features"] = [f["name"] for f in features if f["drifted"]]
        if ref.prediction is not None:
            value = ref.prediction.psi(counts[-1]) if size else None
            entry["prediction"] = {
                "type": ref.prediction.kind,
                "psi": value,
                "drifted": bool(value is not None and value >= self.threshold),
            }
        else:
            entry["prediction"] = None
        entry["dropped"] = dropped
        return entry

    def update_gauges(self, name: str, report: Mapping[str, Any]) -> None:
        """Set the Prometheus gauges from a report (see :meth:`report`)."""
        for entry in report["versions"]:
            if not entry.get("reference") or not entry.get("window_size"):
                continue
            version = str(entry["version"])
            for feature in entry["features"]:
                FEATURE_PSI.labels(name, version, feature["name"]).set(feature["psi"])
            prediction = entry.get("prediction")
            if prediction and prediction.get("psi") is not None:
                PREDICTION_PSI.labels(name, version).set(prediction["psi"])


def _prediction(loaded: Any, results: Mapping[str, np.ndarray], n: int) -> np.ndarray | None:
    """A request's predictions as one value per row: label, cluster or first output."""
    labels = results.get("predict")
    if labels is not None:
        labels = np.asarray(labels)
        return labels.reshape(n, -1)[:, 0] if labels.ndim > 1 else labels
    proba = results.get("predict_proba")
    if proba is not None:
        return np.asarray(loaded.model.classes_).take(np.argmax(proba, axis=1))
    distances = results.get("transform")
    if distances is not None:
        return np.argmin(distances, axis=1)
    return None
