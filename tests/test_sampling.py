"""The reparameterization layer: draws must have the mean and covariance they claim."""

import numpy as np
from keras import ops

import keras_vae as kv


def test_diagonal_sampling_has_the_claimed_mean_and_variance():
    mu = np.array([[1.0, -2.0, 0.5]], dtype="float32")
    log_var = np.array([[0.0, np.log(4.0), np.log(0.25)]], dtype="float32")
    n = 200_000
    z = ops.convert_to_numpy(kv.Sampling(seed=1)([mu, log_var], num_samples=n))[:, 0]
    assert z.shape == (n, 3)
    cov = np.diag(np.exp(log_var[0]))
    se = np.sqrt(np.diag(cov) / n)
    np.testing.assert_array_less(np.abs(z.mean(0) - mu[0]), 5 * se)
    np.testing.assert_allclose(np.cov(z.T), cov, atol=0.03)


def test_full_covariance_sampling_has_the_claimed_mean_and_covariance():
    mu = np.array([[0.5, -1.0]], dtype="float32")
    tril = np.array([[[1.5, 0.0], [-0.8, 0.6]]], dtype="float32")
    n = 200_000
    z = ops.convert_to_numpy(kv.Sampling(seed=2)([mu, tril], num_samples=n))[:, 0]
    sigma = tril[0] @ tril[0].T
    np.testing.assert_array_less(np.abs(z.mean(0) - mu[0]), 5 * np.sqrt(np.diag(sigma) / n))
    np.testing.assert_allclose(np.cov(z.T), sigma, atol=0.03)


def test_sampling_shapes_and_the_same_seed_gives_the_same_draws():
    mu = np.zeros((4, 2), "float32")
    lv = np.zeros((4, 2), "float32")
    assert tuple(kv.Sampling()([mu, lv]).shape) == (4, 2)
    assert tuple(kv.Sampling()([mu, lv], num_samples=3).shape) == (3, 4, 2)
    a = ops.convert_to_numpy(kv.Sampling(seed=7)([mu, lv]))
    b = ops.convert_to_numpy(kv.Sampling(seed=7)([mu, lv]))
    c = ops.convert_to_numpy(kv.Sampling(seed=8)([mu, lv]))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
