"""Converters for scikit-learn's KMeans and MiniBatchKMeans (scikit-learn is not imported).

Both predict the nearest of ``cluster_centers_`` and transform to the
Euclidean distances to them, which is what the C k-means model computes, so
the conversion copies the centers (in the requested dtype) and the scalars.
"""
from __future__ import annotations

import json

import numpy as np

from .. import _core
from .._errors import ConvertError
from .._kmeans import KMeans
from ._common import qualified_name, require_fitted, source_info


def convert_kmeans(est, dtype):
    require_fitted(est, "cluster_centers_")
    centers = np.asarray(est.cluster_centers_)
    if centers.ndim != 2 or centers.shape[0] < 1 or centers.shape[1] < 1:
        raise ConvertError(
            f"{type(est).__name__}.cluster_centers_ has unexpected shape {centers.shape}"
        )
    if not np.isfinite(centers).all():
        raise ConvertError(f"{type(est).__name__}.cluster_centers_ contains NaN or infinity")
    centers = np.ascontiguousarray(centers, dtype=dtype)
    target = KMeans()
    init = est.get_params().get("init")
    params = {
        k: v
        for k, v in est.get_params().items()
        if k in ("n_clusters", "max_iter", "tol", "random_state", "n_init")
        and (v is None or isinstance(v, (bool, int, float, str)))
    }
    if isinstance(init, str) and init in ("k-means++", "random"):
        params["init"] = init
    target.set_params(**params)
    target.n_features_in_ = centers.shape[1]
    names = getattr(est, "feature_names_in_", None)
    if names is not None:
        target.feature_names_in_ = np.asarray(names, dtype=object)
    meta = json.loads(
        target._build_metadata(
            1,
            [],
            {
                "task": "clustering",
                "n_clusters": int(centers.shape[0]),
                "inertia": float(getattr(est, "inertia_", float("nan"))),
                "n_iter": int(getattr(est, "n_iter_", 0)),
            },
        )
    )
    meta["dtype"] = np.dtype(dtype).name
    meta["source"] = source_info("scikit-learn", "sklearn", qualified_name(type(est)))
    target._install(_core.create(target._kind, {"cluster_centers": centers}, json.dumps(meta)))
    labels = getattr(est, "labels_", None)
    if labels is not None:
        target.labels_ = np.asarray(labels, dtype=np.int64)
    return target


CONVERTERS = {
    "sklearn.cluster._kmeans.KMeans": convert_kmeans,
    "sklearn.cluster._kmeans.MiniBatchKMeans": convert_kmeans,
}
