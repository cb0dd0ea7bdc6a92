import os

import numpy as np
import pytest
from serving_support import fit_classifier, fit_regressor

from mlserve.store import ModelStore


@pytest.fixture
def rng(request):
    """A seeded generator; the seed is printed so a failure can be replayed."""
    seed = int(os.environ.get("MLSERVE_TEST_SEED", "12345"))
    print(f"rng seed: {seed} (set MLSERVE_TEST_SEED to change)")
    return np.random.default_rng(seed)


@pytest.fixture(scope="module")
def models():
    """A regressor and a classifier of tests/serving_support.py, fitted once per module."""
    return {"reg": fit_regressor(), "clf": fit_classifier()}


@pytest.fixture
def store(tmp_path, models):
    """A store serving both under "production" (modules may define their own store)."""
    store = ModelStore(tmp_path / "models")
    store.publish("reg", models["reg"], alias="production")
    store.publish("clf", models["clf"], alias="production")
    return store
