import os

import numpy as np
import pytest


@pytest.fixture
def rng(request):
    """A seeded generator; the seed is printed so a failure can be replayed."""
    seed = int(os.environ.get("MLSERVE_TEST_SEED", "12345"))
    print(f"rng seed: {seed} (set MLSERVE_TEST_SEED to change)")
    return np.random.default_rng(seed)
