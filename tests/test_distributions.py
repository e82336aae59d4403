"""The closed forms of distributions.py against NumPy/SciPy ground truth and Monte Carlo."""

import numpy as np
import pytest
from keras import ops
from scipy import stats

import keras_vae as kv
from keras_vae import distributions as D


def np_kl(m0, s0, m1, s1):
    """THEORY eq [26] in plain NumPy, one pair at a time."""
    k = len(m0)
    s1_inv = np.linalg.inv(s1)
    d = m0 - m1
    return 0.5 * (np.log(np.linalg.det(s1) / np.linalg.det(s0)) - k + np.trace(s1_inv @ s0)
                  + d @ s1_inv @ d)


def random_spd(rng, k, n):
    a = rng.normal(size=(n, k, k))
    return a @ np.swapaxes(a, -1, -2) + 0.5 * np.eye(k)


def test_kl_divergence_matches_numpy_eq26_batched():
    rng = np.random.default_rng(0)
    k, n = 4, 16
    m0, m1 = rng.normal(size=(n, k)), rng.normal(size=(n, k))
    s0, s1 = random_spd(rng, k, n), random_spd(rng, k, n)
    got = ops.convert_to_numpy(kv.kl_divergence(m0, s0, m1, s1))
    want = np.array([np_kl(m0[i], s0[i], m1[i], s1[i]) for i in range(n)])
    assert got.shape == (n,)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # KL(p||p) = 0 and KL >= 0
    same = ops.convert_to_numpy(kv.kl_divergence(m0, s0, m0, s0))
    np.testing.assert_allclose(same, 0.0, atol=1e-4)
    assert np.all(got > 0)


def test_kl_divergence_matches_monte_carlo():
    rng = np.random.default_rng(1)
    k = 3
    m0, m1 = rng.normal(size=k), rng.normal(size=k)
    s0, s1 = random_spd(rng, k, 1)[0], random_spd(rng, k, 1)[0]
    z = rng.multivariate_normal(m0, s0, size=400_000)
    log_ratio = stats.multivariate_normal(m0, s0).logpdf(z) - stats.multivariate_normal(m1, s1).logpdf(z)
    mc, se = log_ratio.mean(), log_ratio.std() / np.sqrt(len(z))
    got = float(ops.convert_to_numpy(kv.kl_divergence(m0[None], s0[None], m1[None], s1[None]))[0])
    assert abs(got - mc) < 4 * se + 1e-3, (got, mc, se)


def test_kl_to_standard_normal_is_eq26_with_standard_prior():
    rng = np.random.default_rng(2)
    n, k = 10, 5
    mu, log_var = rng.normal(size=(n, k)), rng.normal(size=(n, k))
    diag = ops.convert_to_numpy(kv.kl_to_standard_normal(mu, log_var))
    cov = np.stack([np.diag(np.exp(v)) for v in log_var])
    general = ops.convert_to_numpy(kv.kl_divergence(mu, cov, np.zeros((n, k)), np.eye(k)[None]))
    closed = -0.5 * np.sum(1 + log_var - mu**2 - np.exp(log_var), axis=-1)
    np.testing.assert_allclose(diag, closed, rtol=1e-5)
    np.testing.assert_allclose(general, closed, rtol=1e-4, atol=1e-4)


def test_full_and_diagonal_kl_agree_for_a_diagonal_factor():
    rng = np.random.default_rng(3)
    n, k = 7, 4
    mu, log_var = rng.normal(size=(n, k)), rng.normal(size=(n, k))
    tril = np.stack([np.diag(np.exp(0.5 * v)) for v in log_var])
    np.testing.assert_allclose(ops.convert_to_numpy(kv.kl_to_standard_normal_tril(mu, tril)),
                               ops.convert_to_numpy(kv.kl_to_standard_normal(mu, log_var)),
                               rtol=1e-5)


def test_full_kl_matches_eq26_for_a_general_factor():
    rng = np.random.default_rng(4)
    n, k = 6, 3
    mu = rng.normal(size=(n, k))
    tril = np.tril(rng.normal(size=(n, k, k)))
    idx = np.arange(k)
    tril[:, idx, idx] = np.abs(tril[:, idx, idx]) + 0.3
    cov = tril @ np.swapaxes(tril, -1, -2)
    want = np.array([np_kl(mu[i], cov[i], np.zeros(k), np.eye(k)) for i in range(n)])
    np.testing.assert_allclose(ops.convert_to_numpy(kv.kl_to_standard_normal_tril(mu, tril)), want,
                               rtol=1e-4, atol=1e-5)


def test_bernoulli_log_likelihood_is_eq32_and_stable():
    rng = np.random.default_rng(5)
    logits = rng.normal(scale=3, size=(8, 20))
    x = rng.uniform(size=(8, 20))
    y = 1 / (1 + np.exp(-logits))
    want = np.sum(x * np.log(y) + (1 - x) * np.log(1 - y), axis=-1)
    np.testing.assert_allclose(ops.convert_to_numpy(kv.bernoulli_log_likelihood(x, logits)), want,
                               rtol=1e-5)
    # Saturated logits: clipped probabilities would give -inf or a clipping floor; logits are exact.
    big = np.array([[200.0, -200.0]], dtype="float32")
    got = ops.convert_to_numpy(kv.bernoulli_log_likelihood(np.array([[0.0, 1.0]]), big))
    np.testing.assert_allclose(got, [-400.0], rtol=1e-6)
    # image-shaped events sum over all three trailing axes
    img = ops.convert_to_numpy(kv.bernoulli_log_likelihood(x.reshape(8, 4, 5, 1),
                                                           logits.reshape(8, 4, 5, 1), event_ndim=3))
    np.testing.assert_allclose(img, want, rtol=1e-5)


def test_gaussian_log_likelihood_matches_scipy():
    rng = np.random.default_rng(6)
    x, m = rng.normal(size=(5, 7)), rng.normal(size=(5, 7))
    log_var = rng.normal(size=(7,))  # per-feature variance, broadcast over the batch
    want = stats.norm(m, np.exp(0.5 * log_var)).logpdf(x).sum(-1)
    got = ops.convert_to_numpy(kv.gaussian_log_likelihood(x, m, log_var))
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_log_densities_match_scipy():
    rng = np.random.default_rng(7)
    k = 3
    mean = rng.normal(size=(4, k))
    tril = np.tril(rng.normal(size=(4, k, k)))
    idx = np.arange(k)
    tril[:, idx, idx] = np.abs(tril[:, idx, idx]) + 0.5
    z = rng.normal(size=(2, 4, k))  # two sample rows broadcast against a batch of 4
    got = ops.convert_to_numpy(D.tril_gaussian_log_density(z, mean, tril))
    want = np.array([[stats.multivariate_normal(mean[b], tril[b] @ tril[b].T).logpdf(z[s, b])
                      for b in range(4)] for s in range(2)])
    np.testing.assert_allclose(got, want, rtol=1e-5)
    log_var = rng.normal(size=(4, k))
    got = ops.convert_to_numpy(D.diagonal_gaussian_log_density(z, mean, log_var))
    want = stats.norm(mean, np.exp(0.5 * log_var)).logpdf(z).sum(-1)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    np.testing.assert_allclose(ops.convert_to_numpy(D.standard_normal_log_density(z)),
                               stats.norm().logpdf(z).sum(-1), rtol=1e-6)


def test_fill_scale_tril_fills_rows_with_a_positive_softplus_diagonal():
    k = 3
    raw = np.arange(1, 7, dtype="float32")[None]  # 6 = K(K+1)/2 entries
    tril = ops.convert_to_numpy(D.fill_scale_tril(raw, k, min_scale=0.0))[0]
    softplus = lambda v: np.log1p(np.exp(v))  # noqa: E731
    want = np.array([[softplus(1), 0, 0], [2, softplus(3), 0], [4, 5, softplus(6)]])
    np.testing.assert_allclose(tril, want, rtol=1e-6)
    # very negative raw diagonal still gives a strictly positive scale
    low = ops.convert_to_numpy(D.fill_scale_tril(np.full((1, 6), -50.0, "float32"), k))[0]
    assert np.all(np.diag(low) > 0)
