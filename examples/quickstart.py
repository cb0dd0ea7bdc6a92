"""Fit in C, save one .mls file, load it memory-mapped, predict.

Run: python examples/quickstart.py
"""
import os
import tempfile

import numpy as np

import mlserve

rng = np.random.default_rng(0)
X = rng.normal(size=(1000, 20))
y = np.where(X[:, 0] - 0.5 * X[:, 1] + 0.1 * rng.normal(size=1000) > 0, "churn", "stay")

model = mlserve.LogisticRegression(C=1.0).fit(X, y)  # fit runs in C
print(f"fitted {model!r}: classes {model.classes_.tolist()}, accuracy {model.score(X, y):.3f}")

with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "churn.mls")
    mlserve.save(model, path)
    print(f"saved {path} ({os.path.getsize(path)} bytes)")

    loaded = mlserve.load(path)  # memory-mapped, checksummed, runs no code
    row = X[0].tolist()
    print("predict one row     :", loaded.predict(row))
    print("predict_proba batch :", loaded.predict_proba(X[:3]).round(3).tolist())
    assert (loaded.predict(X) == model.predict(X)).all()

mlserve.show_config()
