"""Fixtures and helpers shared by the tests: the digits data (thresholded, and the package's
named splits), a tiny VAE, and the environment of a `keras-vae` subprocess."""

import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_VAE_FAST", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def binary_digits():
    """scikit-learn's bundled 8x8 digits, thresholded at half intensity: (train, test) of shape
    (1500, 64) and (297, 64), float32 in {0, 1}, in a fixed shuffled order."""
    from sklearn.datasets import load_digits

    x = (load_digits().data / 16.0 > 0.5).astype("float32")
    x = x[np.random.default_rng(0).permutation(len(x))]
    return x[:1500], x[1500:]


@pytest.fixture(scope="session")
def digits_splits():
    """The package's `digits` splits binarized at 0.5, as `zoo build` trains and measures on
    them: (train, valid, test) of shape (1437, 64), (180, 64), (180, 64)."""
    from keras_vae.datasets.splits import load_splits

    return load_splits("digits")


def tiny_vae(input_dim=64, latent_dim=2, hidden_units=16, seed=0, **kwargs):
    """A small Kingma-Welling VAE (fresh weights) for tests that need any trained-able model."""
    import keras_vae as kv

    return kv.VAE.kingma_welling(input_dim=input_dim, latent_dim=latent_dim,
                                 hidden_units=hidden_units, seed=seed, **kwargs)


def subprocess_env(**changes):
    """The environment of a `keras-vae` subprocess: this checkout first on PYTHONPATH, quiet
    TensorFlow unless `changes` say otherwise (a value of None removes a variable)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def run_python(*args, timeout=300, env=None, cwd=None):
    """`python *args` in a subprocess with `subprocess_env()` (or `env`)."""
    return subprocess.run([sys.executable, *map(str, args)], env=env or subprocess_env(),
                          capture_output=True, text=True, timeout=timeout, cwd=cwd)


# ------------------------------------------------------------- ground-truth references
# A linear-Gaussian VAE (D = 6 features, K = 2 latents) has the exact marginal
# ln p(x) = ln N(x | b, W^T W + diag(psi)) and an exact Gaussian posterior, computed in NumPy from
# the decoder's weights; a Bernoulli VAE with one latent has ln p(x) by quadrature.
D, K = 6, 2


def linear_gaussian(posterior="full", exact_posterior=True, seed=0, var_scale=1.0):
    """A linear-Gaussian VAE with known weights; returns (vae, W (K, D), b (D,), psi (D,))."""
    import keras_vae as kv
    from keras_vae import networks

    rng = np.random.default_rng(seed)
    w = rng.normal(size=(K, D)).astype("float32")
    b = rng.normal(size=D).astype("float32")
    psi = rng.uniform(0.3, 1.0, size=D).astype("float32")
    encoder = networks.mlp_encoder((D,), K, hidden_units=(), posterior=posterior)
    decoder = networks.mlp_decoder(K, (D,), hidden_units=())
    vae = kv.VAE(encoder, decoder, K, likelihood="gaussian", posterior=posterior)
    decoder.get_layer("x_params").set_weights([w, b])
    vae.decoder_log_var.assign(np.log(psi))
    # Exact posterior p(z|x) = N(A x + c, S), S = (I + W Psi^-1 W^T)^-1, A = S W Psi^-1.
    s = np.linalg.inv(np.eye(K) + (w / psi) @ w.T)
    a = s @ (w / psi)
    c = -a @ b
    encoder.get_layer("z_mean").set_weights([a.T.astype("float32"), c.astype("float32")])
    if posterior == "full":
        chol = np.linalg.cholesky(s if exact_posterior else s * var_scale)
        rows, cols = np.tril_indices(K)
        raw = chol[rows, cols].copy()
        diag = rows == cols
        raw[diag] = np.log(np.expm1(raw[diag] - 1e-4))  # inverse of softplus(.) + min_scale
        layer = encoder.get_layer("z_scale_tril_raw")
        layer.set_weights([np.zeros((D, len(raw)), "float32"), raw.astype("float32")])
    else:
        log_var = np.log(np.diag(s) * var_scale)
        encoder.get_layer("z_log_var").set_weights([np.zeros((D, K), "float32"),
                                                    log_var.astype("float32")])
    return vae, w, b, psi


def exact_log_px(x, w, b, psi):
    """The linear-Gaussian VAE's exact ln p(x) (float64)."""
    from scipy import stats

    cov = w.T.astype(np.float64) @ w + np.diag(psi.astype(np.float64))
    return stats.multivariate_normal(mean=b, cov=cov).logpdf(x)


def linear_gaussian_data(w, b, psi, n, seed=1):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, K))
    return (z @ w + b + rng.normal(size=(n, D)) * np.sqrt(psi)).astype("float32")


def bernoulli_1d(seed=0, dims=12):
    """A Bernoulli VAE with K = 1 and random weights; data drawn from its own generative model."""
    import keras

    import keras_vae as kv

    keras.utils.set_random_seed(seed)
    vae = kv.VAE.mlp((dims,), latent_dim=1, hidden_units=(8,), activation="tanh")
    widen_proposal(vae)
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(64, 1)).astype("float32")
    probs = vae.decode(z)
    x = (rng.uniform(size=probs.shape) < probs).astype("float32")
    return vae, x


def widen_proposal(vae):
    """Sets a 1-D Bernoulli VAE's encoder to a wide proposal (q's variance 2, its mean varying
    mildly with x), which keeps the importance weights bounded, so k = 20000 pins ln p(x) down
    to ~0.005 nats."""
    import math

    head = vae.encoder.get_layer("z_log_var")
    head.set_weights([np.zeros_like(w) + v for w, v in zip(head.get_weights(), (0.0, math.log(2)))])
    head = vae.encoder.get_layer("z_mean")
    head.set_weights([w * 0.3 for w in head.get_weights()])


def quadrature_log_px(vae, x, log_prior=None):
    """ln integral p(x|z) p(z) dz of a 1-D Bernoulli VAE on a dense grid over [-9, 9]
    (trapezoid rule); p(z) is N(0, 1), or `log_prior(z (G, 1)) -> (G,)`."""
    from scipy import special, stats

    grid = np.linspace(-9.0, 9.0, 4001)
    logits = vae.decoder.predict(grid[:, None].astype("float32"), verbose=0).astype(np.float64)
    # ln p(x|z_g) for every (example, grid point): (n, G)
    log_lik = x @ logits.T - np.sum(np.logaddexp(0.0, logits), axis=1)[None, :]
    log_p = stats.norm.logpdf(grid) if log_prior is None else log_prior(grid[:, None])
    log_w = log_lik + log_p[None, :] + np.log(np.gradient(grid))[None, :]
    return special.logsumexp(log_w, axis=1)


# ----------------------------------------------------------------------------- ln p(x)
