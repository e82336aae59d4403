import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_VAE_FAST", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def binary_digits():
    """scikit-learn's bundled 8x8 digits, thresholded at half intensity: (train, test) of shape
    (1500, 64) and (297, 64), float32 in {0, 1}, in a fixed shuffled order."""
    from sklearn.datasets import load_digits

    x = (load_digits().data / 16.0 > 0.5).astype("float32")
    x = x[np.random.default_rng(0).permutation(len(x))]
    return x[:1500], x[1500:]
