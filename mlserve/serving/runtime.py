"""The protocol-neutral middle of serving: which model answers, and the one predict path.

:class:`ServingState` (one per app and blueprint, kept in
``app.extensions["mlserve"]``) holds an immutable snapshot of the store's
manifests and the loaded, warmed models. A refresh builds a new snapshot off to
the side, loads and warms every version it will route to, then swaps it in
with one assignment: requests in flight keep the objects they already hold, so
a publish or an alias move never fails a request.

:func:`predict` is the single function that every protocol (V1, V2, MLflow,
simple) calls with a decoded float matrix. When batching is on for a model,
each loaded version has a :class:`~mlserve.serving.batching.Batcher` and
:func:`predict` hands it the validated rows.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Mapping, Sequence

import numpy as np

from mlserve.serving.batching import Batcher, BatchTimeout
from mlserve.serving.config import ServingConfig
from mlserve.serving.errors import BadRequest, ModelNotFound, NotReady
from mlserve.store import Manifest, ModelNotFoundError, ModelStore, StoreError

__all__ = [
    "LoadedModel", "ServingState", "Timings", "predict", "PREDICT", "PREDICT_PROBA", "TRANSFORM",
]  # fmt: skip

log = logging.getLogger("mlserve.serving")

PREDICT = "predict"
MAX_EXTRA_VERSIONS = 4  # per model: loaded versions kept beyond those aliases and "latest" need
PREDICT_PROBA = "predict_proba"
TRANSFORM = "transform"  # a k-means model's distances to every center ("return": "distances")


@dataclass
class Timings:
    """Milliseconds spent in each stage of one request, for the Server-Timing header.

    ``queue`` is the wait for a micro-batch and ``batch`` the rows of the core
    call that computed this request (its own rows when it ran alone).
    """

    decode: float = 0.0
    queue: float = 0.0
    compute: float = 0.0
    encode: float = 0.0
    batch: int = 0

    def header(self) -> str:
        return (
            f"decode;dur={self.decode:.3f}, queue;dur={self.queue:.3f}, "
            f"compute;dur={self.compute:.3f}, encode;dur={self.encode:.3f}, "
            f"batch;desc={self.batch}"
        )


@dataclass(frozen=True)
class OutputSpec:
    name: str
    dtype: np.dtype
    shape: tuple[int, ...]  # without the batch dimension


@dataclass(frozen=True)
class LoadedModel:
    """A loaded, warmed model version and what serving needs to know about it."""

    name: str
    version: int
    model: Any
    metadata: Mapping[str, Any]
    n_features: int
    feature_names: tuple[str, ...] | None
    is_classifier: bool
    outputs: Mapping[str, OutputSpec] = field(default_factory=dict)
    batcher: Batcher | None = field(default=None, compare=False, repr=False)
    #: a graph model's per-sample input shape (rows are reshaped to it before predict)
    input_shape: tuple[int, ...] | None = None

    @classmethod
    def from_model(cls, name: str, version: int, model: Any) -> "LoadedModel":
        metadata = dict(model.metadata)
        n_features = int(metadata["n_features"])
        is_classifier = metadata.get("task") == "classification"
        names = metadata.get("feature_names")
        outputs: dict[str, OutputSpec] = {}
        if is_classifier:
            classes = np.asarray(model.classes_)
            outputs[PREDICT] = OutputSpec(PREDICT, classes.dtype, ())
            outputs[PREDICT_PROBA] = OutputSpec(
                PREDICT_PROBA, np.dtype(np.float64), (len(classes),)
            )
        elif metadata.get("task") == "clustering":  # cluster ids, and distances to the centers
            n_clusters = int(np.asarray(model.cluster_centers_).shape[0])
            outputs[PREDICT] = OutputSpec(PREDICT, np.dtype(np.int64), ())
            outputs[TRANSFORM] = OutputSpec(
                TRANSFORM, np.dtype(model.cluster_centers_.dtype), (n_clusters,)
            )
        elif isinstance(metadata.get("graph"), Mapping):  # a neural network: float32 tensors
            graph = metadata["graph"]
            shape = () if graph.get("ravel") else tuple(int(s) for s in graph["output_shape"][1:])
            outputs[PREDICT] = OutputSpec(PREDICT, np.dtype(np.float32), shape)
        else:
            shape = tuple(int(s) for s in metadata.get("output_shape") or ())
            outputs[PREDICT] = OutputSpec(PREDICT, np.dtype(np.float64), shape)
        graph = metadata.get("graph")
        input_shape = None
        if isinstance(graph, Mapping) and graph.get("source_kind") == "onnx":
            input_shape = tuple(int(s) for s in graph["input_shape"][1:])
        return cls(
            name=name,
            version=int(version),
            model=model,
            metadata=metadata,
            n_features=n_features,
            feature_names=tuple(names) if names else None,
            is_classifier=is_classifier,
            outputs=outputs,
            input_shape=input_shape,
        )

    @property
    def is_clusterer(self) -> bool:
        return self.metadata.get("task") == "clustering"

    @property
    def is_recommender(self) -> bool:
        """A Recommender answers /recommend and /similar, not predict."""
        return self.metadata.get("task") == "recommender"

    @property
    def input_dtype(self) -> np.dtype:
        return np.dtype(self.metadata.get("dtype") or "float64")

    def warm_up(self) -> None:
        """Run one predict on a row of zeros, so the first real request is not the first call."""
        if self.is_recommender:
            self.model._warm_up()  # one top-1 query, and the id lookups built
            return
        row = np.zeros((1, self.n_features), dtype=self.input_dtype)
        if self.input_shape is not None:
            row = row.reshape(1, *self.input_shape)
        if self.metadata.get("input_schema") is not None:  # a pipeline: named columns
            from mlserve.serving.tabular import warm_up_columns

            row = warm_up_columns(self)
            if self.metadata.get("task") == "transform":
                self.model.transform(row)
                return
        self.model.predict(row)
        if self.is_classifier:
            self.model.predict_proba(row)
        if TRANSFORM in self.outputs:
            self.model.transform(row)


def predict(
    loaded: LoadedModel,
    rows: np.ndarray,
    outputs: Sequence[str],
    timings: Timings,
) -> dict[str, np.ndarray]:
    """Run the model on a decoded batch; the one predict path of every protocol.

    ``rows`` is a 2-D numeric array already checked by a codec; ``outputs``
    names the outputs wanted (``"predict"``, ``"predict_proba"``). A model's
    ValueError/TypeError (NaN, wrong width) becomes a 400.
    """
    if loaded.is_recommender:
        raise BadRequest(
            f"model {loaded.name!r} is a recommender: it has no predict; use POST "
            f"/recommend/{loaded.name} or /similar/{loaded.name}"
        )
    if rows.ndim != 2:
        raise BadRequest(f"expected a 2-D batch of rows, got {rows.ndim} dimensions")
    if rows.shape[1] != loaded.n_features:
        raise BadRequest(f"expected {loaded.n_features} features, got {rows.shape[1]}")
    for name in outputs:
        if name not in loaded.outputs:
            raise BadRequest(
                f"model {loaded.name!r} has no output {name!r}; "
                f"its outputs are {', '.join(loaded.outputs)}"
            )
    batcher = loaded.batcher
    if batcher is not None and rows.shape[0]:
        try:
            results, queue_ms, compute_ms, batch_rows = batcher.predict(rows, outputs)
        except (ValueError, TypeError) as exc:
            raise BadRequest(str(exc)) from exc
        except BatchTimeout as exc:
            raise NotReady(str(exc)) from None
        timings.queue += queue_ms
        timings.compute += compute_ms
        timings.batch = batch_rows
        return results
    start = time.perf_counter()
    try:
        results = _compute(loaded, rows, outputs)
    except (ValueError, TypeError) as exc:
        raise BadRequest(str(exc)) from exc
    timings.compute += (time.perf_counter() - start) * 1000.0
    timings.batch = rows.shape[0]
    return results


def _compute(loaded: LoadedModel, rows: np.ndarray, outputs: Sequence[str]) -> dict[str, np.ndarray]:
    """The model's outputs for ``rows`` (the core call; raises the model's errors)."""
    results: dict[str, np.ndarray] = {}
    if loaded.input_shape is not None and rows.shape[0]:  # flat rows -> the graph's tensor
        rows = rows.reshape(rows.shape[0], *loaded.input_shape)
    for name in outputs:
        spec = loaded.outputs[name]
        if rows.shape[0] == 0:
            results[name] = np.empty((0, *spec.shape), dtype=spec.dtype)
        elif name == PREDICT_PROBA:
            results[name] = loaded.model.predict_proba(rows)
        elif name == TRANSFORM or loaded.metadata.get("task") == "transform":
            results[name] = loaded.model.transform(rows)  # k-means distances, a ColumnTransformer
        else:
            results[name] = loaded.model.predict(rows)
    return results


@dataclass(frozen=True)
class _Snapshot:
    manifests: Mapping[str, Manifest]
    tokens: Mapping[str, Any]
    models: Mapping[tuple[str, int], LoadedModel]


class ServingState:
    """What one mounted blueprint serves: its store, config and loaded models."""

    def __init__(self, store: ModelStore, config: ServingConfig) -> None:
        self.store = store
        self.config = config
        self._snapshot = _Snapshot({}, {}, {})
        self._refresh_lock = threading.Lock()
        self._load_lock = threading.Lock()
        self._last_refresh = 0.0
        self._used: dict[tuple[str, int], float] = {}  # when each loaded version last answered
        self.ready = False
        # models a client unloaded (Triton's repository unload): not served by this
        # worker until loaded again; replaced whole, so readers need no lock
        self.unloaded: frozenset[str] = frozenset()
        # set by the blueprint that owns this state (mlserve.serving.blueprint)
        self.guard: Any = None
        self.request_metrics: Any = None
        self.hooks: Any = None  # mlserve.serving.hooks.Hooks, or None: no hooks
        self.drift: Any = None  # mlserve.serving.drift.DriftMonitor, or None: MLSERVE_DRIFT off
        self.shadow: Any = None  # mlserve.serving.shadow.ShadowMirror

    # -------------------------------------------------------------- refreshing

    def maybe_refresh(self) -> None:
        """Refresh if the reload interval has passed; never blocks a request on another refresh."""
        interval = self.config.reload_interval
        if interval <= 0 or time.monotonic() - self._last_refresh < interval:
            return
        if self._refresh_lock.acquire(blocking=False):
            try:
                self._refresh_locked()
            except Exception:  # a store we cannot read now must not fail the request
                log.exception(
                    "mlserve: reloading the model store failed; serving the previous state"
                )
            finally:
                self._refresh_lock.release()

    def refresh(self) -> dict[str, list[int]]:
        """Re-read the store now; return the versions loaded per model."""
        with self._refresh_lock:
            self._refresh_locked()
        snap = self._snapshot
        loaded: dict[str, list[int]] = {}
        for name, version in sorted(snap.models):
            loaded.setdefault(name, []).append(version)
        return loaded

    def _refresh_locked(self) -> None:
        self._last_refresh = time.monotonic()
        old = self._snapshot
        manifests: dict[str, Manifest] = {}
        tokens: dict[str, Any] = {}
        models: dict[tuple[str, int], LoadedModel] = {}
        for name in self.store.names():
            if name in self.unloaded:
                continue  # dropped below like a deleted model: batchers closed, memory freed
            token = self.store.manifest_token(name)
            manifest = old.manifests.get(name)
            if token is None:
                continue
            if manifest is None or old.tokens.get(name) != token:
                try:
                    manifest = self.store.manifest(name)
                except (StoreError, OSError) as exc:
                    log.error("mlserve: cannot read model %r: %s", name, exc)
                    if manifest is None:
                        continue
                    token = old.tokens.get(name)
            needed = _versions_to_keep_warm(manifest)
            fresh: dict[tuple[str, int], LoadedModel] = {}
            try:
                for version in needed:
                    fresh[(name, version)] = old.models.get((name, version)) or self._load(
                        name, version
                    )
            except Exception as exc:  # a broken new version must not take traffic
                log.error(
                    "mlserve: cannot load model %r: %s; keeping the previous state", name, exc
                )
                previous = old.manifests.get(name)
                if previous is None:
                    continue
                manifest, token = previous, old.tokens.get(name)
                fresh = {k: v for k, v in old.models.items() if k[0] == name}
            # besides the versions an alias or "latest" points at, keep the
            # MAX_EXTRA_VERSIONS most recently used ones that still exist (a version a
            # request named, the one an alias just left: a rollback is instant); a
            # server that sees many publishes must not keep every version it ever
            # served (found by the soak: +4% RSS over 112 publishes)
            extra = sorted(
                (key for key in old.models
                 if key[0] == name and key not in fresh and key[1] in manifest.versions),
                key=lambda k: self._used.get(k, 0.0),
            )[-MAX_EXTRA_VERSIONS:]  # fmt: skip
            for key in extra:
                fresh[key] = old.models[key]
            manifests[name] = manifest
            tokens[name] = token
            models.update(fresh)
        for key in old.models.keys() - models.keys():
            self._used.pop(key, None)
            self.store.forget(*key)
            batcher = old.models[key].batcher
            if batcher is not None:
                batcher.close(timeout=0)  # its worker runs what is queued, then exits
        self._snapshot = _Snapshot(manifests, tokens, models)
        self.ready = True

    def _load(self, name: str, version: int) -> LoadedModel:
        from mlserve.serving.metrics import observe_model_load

        start = time.perf_counter()
        model = self.store.load_version(name, version)
        loaded = LoadedModel.from_model(name, version, model)
        loaded = self._with_batcher(loaded)
        if self.config.warmup:
            loaded.warm_up()
        observe_model_load(name, time.perf_counter() - start)
        return loaded

    def _with_batcher(self, loaded: LoadedModel) -> LoadedModel:
        """``loaded`` with a Batcher when batching is on for its model (MLSERVE_BATCHING*)."""
        config = self.config.batching_for(loaded.name)
        if not config.enabled or loaded.is_recommender:  # a recommender does not predict rows
            return loaded
        if loaded.metadata.get("input_schema") is not None:  # pipelines take columns, unbatched
            return loaded
        compute = partial(_compute, loaded)  # the model without the batcher
        batcher = Batcher(compute, config, loaded.input_dtype, f"{loaded.name}-v{loaded.version}")
        if self.request_metrics is not None:
            # Prometheus histograms and V2 executions, applied off the request path
            batcher.stats.listeners.append(
                self.request_metrics.batch_listener(loaded.name, loaded.version)
            )
        else:
            from mlserve.serving.metrics import batch_listener

            batcher.stats.listeners.append(batch_listener(loaded.name))  # Prometheus histograms
        return replace(loaded, batcher=batcher)

    # ---------------------------------------------------------------- routing

    def manifest(self, name: str) -> Manifest:
        manifest = self._snapshot.manifests.get(name)
        if manifest is None:
            raise self._not_found(name)
        return manifest

    def _not_found(self, name: str) -> ModelNotFound:
        if name in self.unloaded:
            return ModelNotFound(
                f"model {name!r} was unloaded from this worker; "
                f"POST /v2/repository/models/{name}/load serves it again"
            )
        return ModelNotFound(f"model {name!r} not found")

    def loaded_versions(self) -> dict[str, list[int]]:
        """The versions loaded now, per model (what refresh() returns, without refreshing)."""
        loaded: dict[str, list[int]] = {}
        for name, version in sorted(self._snapshot.models):
            loaded.setdefault(name, []).append(version)
        return loaded

    def unload(self, name: str) -> None:
        """Stop serving model ``name`` in this worker (its loaded versions are dropped)."""
        with self._refresh_lock:
            self.unloaded = self.unloaded | {name}
            self._refresh_locked()

    def load(self, name: str) -> list[int]:
        """Serve model ``name`` again (re-read from the store, warmed); the versions loaded.

        Raises ModelNotFound if the store has no such model, NotReady if it cannot be loaded.
        """
        if name not in self.store.names():
            raise ModelNotFound(
                f"model {name!r} is not in the store; its models are: "
                + (", ".join(self.store.names()) or "none")
            )
        with self._refresh_lock:
            self.unloaded = self.unloaded - {name}
            self._refresh_locked()
        versions = self.loaded_versions().get(name)
        if not versions:
            raise NotReady(f"model {name!r} cannot be loaded; the server log says why")
        return versions

    def names(self) -> list[str]:
        return sorted(self._snapshot.manifests)

    def select(
        self, name: str, version: str | int | None = None, alias: str | None = None,
        sticky_key: str | None = None,
    ) -> LoadedModel:  # fmt: skip
        """The loaded model that answers a request for ``name`` (version wins over alias).

        ``sticky_key`` (the MLSERVE_CANARY_KEY_HEADER value) makes a canary split's
        pick stable per key (see ModelStore.resolve)."""
        snap = self._snapshot  # one snapshot for the whole lookup
        manifest = snap.manifests.get(name)
        if manifest is None:
            raise self._not_found(name)
        try:
            number = self.store.resolve(
                name,
                version,
                alias,
                default_alias=self.config.default_alias,
                manifest=manifest,
                sticky_key=sticky_key,
            )
        except ModelNotFoundError as exc:
            raise ModelNotFound(str(exc)) from None
        loaded = snap.models.get((name, number))
        if loaded is not None:
            self._used[(name, number)] = time.monotonic()
            return loaded
        return self._load_on_demand(name, number)

    def _load_on_demand(self, name: str, version: int) -> LoadedModel:
        with self._load_lock:
            snap = self._snapshot
            loaded = snap.models.get((name, version))
            if loaded is not None:
                return loaded
            try:
                loaded = self._load(name, version)
            except ModelNotFoundError as exc:
                raise ModelNotFound(str(exc)) from None
            except Exception as exc:
                log.error("mlserve: cannot load model %r version %d: %s", name, version, exc)
                raise NotReady(f"model {name!r} version {version} cannot be loaded") from exc
            models = dict(snap.models)
            models[(name, version)] = loaded
            self._used[(name, version)] = time.monotonic()
            self._snapshot = _Snapshot(snap.manifests, snap.tokens, models)
            return loaded

    def default_model_name(self) -> str:
        """The model answering /invocations: MLSERVE_DEFAULT_MODEL, or the only model."""
        if self.config.default_model:
            return self.config.default_model
        names = self.names()
        if len(names) == 1:
            return names[0]
        raise ModelNotFound(
            "no default model: set MLSERVE_DEFAULT_MODEL"
            + (f" to one of {', '.join(names)}" if names else " after publishing a model")
        )


def _versions_to_keep_warm(manifest: Manifest) -> list[int]:
    versions = {t.version for targets in manifest.aliases.values() for t in targets}
    versions.update(manifest.shadows.values())  # shadow versions take mirrored traffic
    if manifest.latest is not None:
        versions.add(manifest.latest)
    return sorted(v for v in versions if v in manifest.versions)
