"""One small .mls file of every model kind: the seeds of the model-level fuzzer
(tests/fuzz/fuzz_mls_models.c), so its mutations start from files that load."""
from __future__ import annotations

import os

import numpy as np


def write_seeds(directory) -> list[str]:
    """Saves the seeds into `directory`; returns their paths."""
    import pandas as pd
    from graph_support import small_cnn
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    import mlserve

    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    y = (X[:, 0] > 0).astype(int)
    frame = pd.DataFrame({"a": X[:, 0], "c": np.where(y > 0, "x", "y")})
    pipeline = Pipeline([
        ("prep", ColumnTransformer([("n", StandardScaler(), ["a"]),
                                    ("c", OneHotEncoder(handle_unknown="ignore"), ["c"])])),
        ("model", LogisticRegression())]).fit(frame, y)
    forest = RandomForestClassifier(n_estimators=2, max_depth=3, random_state=0).fit(X, y)
    mlp = MLPClassifier(hidden_layer_sizes=(4,), solver="lbfgs", max_iter=2000, random_state=0).fit(X, y)
    models = {  # one of each kind in csrc/mls_model.h
        "linear": mlserve.LinearRegression().fit(X, X[:, 1]),
        "logistic": mlserve.LogisticRegression().fit(X, y),
        "trees": mlserve.convert(forest),
        "kmeans": mlserve.KMeans(n_clusters=2, random_state=0).fit(X),
        "recommender": mlserve.Recommender(rng.normal(size=(5, 4)).astype(np.float32),
                                           rng.normal(size=(7, 4)).astype(np.float32)),
        "mlp": mlserve.convert(mlp),
        "cnn": mlserve.from_onnx(small_cnn(rng)),
        "pipeline": mlserve.convert(pipeline),
    }
    paths = []
    for name, model in models.items():
        paths.append(os.path.join(directory, f"{name}.mls"))
        mlserve.save(model, paths[-1])
    return paths
