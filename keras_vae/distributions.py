"""The probability math of the VAE: Gaussian KL divergences and log-likelihoods.

Every function here is written with `keras.ops`, so it runs on the TensorFlow, JAX and
PyTorch backends, and every one is batched over leading axes. Equation numbers refer to
the theory notes (`docs/theory.md`, from `THEORY.md`).

Conventions:
- A diagonal Gaussian is given by its mean and its log-variance, both shaped (..., K).
- A full-covariance Gaussian is given by its mean (..., K) and a lower-triangular factor
  `scale_tril` (..., K, K) with a positive diagonal, so that Sigma = L L^T.
- Log-likelihoods are summed over all event axes (every axis but the leading batch axes)
  and are in nats.
"""

import math

import keras
from keras import ops

LOG_2PI = math.log(2.0 * math.pi)


def kl_to_standard_normal(z_mean, z_log_var):
    """KL(N(mu, diag(exp(v))) || N(0, I)), THEORY eq [27] in its diagonal form.

    KL = -1/2 sum_k (1 + v_k - mu_k^2 - exp(v_k)).

    Args:
        z_mean: (..., K) posterior means.
        z_log_var: (..., K) posterior log-variances.

    Returns:
        (...,) KL divergence in nats, one per batch element.
    """
    z_mean, z_log_var = ops.convert_to_tensor(z_mean), ops.convert_to_tensor(z_log_var)
    return -0.5 * ops.sum(1.0 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var), axis=-1)


def kl_to_standard_normal_tril(z_mean, z_scale_tril):
    """KL(N(mu, L L^T) || N(0, I)), THEORY eq [27] with a full covariance.

    KL = 1/2 [ -ln|Sigma| - K + Tr(Sigma) + mu^T mu ], where ln|Sigma| = 2 sum_k ln L_kk and
    Tr(Sigma) = sum_ij L_ij^2 (the squared Frobenius norm of the factor).

    Args:
        z_mean: (..., K) means.
        z_scale_tril: (..., K, K) lower-triangular factors with positive diagonal.

    Returns:
        (...,) KL divergence in nats.
    """
    z_mean, z_scale_tril = ops.convert_to_tensor(z_mean), ops.convert_to_tensor(z_scale_tril)
    k = ops.shape(z_mean)[-1]
    log_det = 2.0 * ops.sum(ops.log(ops.diagonal(z_scale_tril, axis1=-2, axis2=-1)), axis=-1)
    trace = ops.sum(ops.square(z_scale_tril), axis=(-2, -1))
    return 0.5 * (-log_det - ops.cast(k, z_mean.dtype) + trace + ops.sum(ops.square(z_mean), axis=-1))


def kl_divergence(mean0, cov0, mean1, cov1):
    """KL(N(mean0, cov0) || N(mean1, cov1)) between general Gaussians, THEORY eq [26].

    KL = 1/2 [ ln(|S1|/|S0|) - K + Tr(S1^-1 S0) + (m0-m1)^T S1^-1 (m0-m1) ].

    Args:
        mean0, mean1: (..., K) means (broadcastable against each other).
        cov0, cov1: (..., K, K) symmetric positive-definite covariance matrices.

    Returns:
        (...,) KL divergence in nats.
    """
    mean0, cov0 = ops.convert_to_tensor(mean0), ops.convert_to_tensor(cov0)
    mean1, cov1 = ops.convert_to_tensor(mean1), ops.convert_to_tensor(cov1)
    k = ops.shape(mean0)[-1]
    diff = mean0 - mean1
    # Broadcast every argument to one common batch shape (adding zeros is the portable way).
    zeros = ops.zeros_like(cov0 + cov1 + ops.expand_dims(diff, -1))
    chol0 = ops.linalg.cholesky(cov0 + zeros)
    chol1 = ops.linalg.cholesky(cov1 + zeros)
    diff = diff + zeros[..., 0]
    log_det0 = 2.0 * ops.sum(ops.log(ops.diagonal(chol0, axis1=-2, axis2=-1)), axis=-1)
    log_det1 = 2.0 * ops.sum(ops.log(ops.diagonal(chol1, axis1=-2, axis2=-1)), axis=-1)
    # Tr(S1^-1 S0) = ||L1^-1 L0||_F^2 ; Mahalanobis term = ||L1^-1 (m0 - m1)||^2.
    a = ops.linalg.solve_triangular(chol1, chol0, lower=True)
    b = ops.linalg.solve_triangular(chol1, ops.expand_dims(diff, -1), lower=True)
    trace = ops.sum(ops.square(a), axis=(-2, -1))
    mahalanobis = ops.sum(ops.square(b), axis=(-2, -1))
    return 0.5 * (log_det1 - log_det0 - ops.cast(k, mean0.dtype) + trace + mahalanobis)


def _sum_event(values, event_ndim):
    """Sums the last `event_ndim` axes."""
    if event_ndim == 0:
        return values
    return ops.sum(values, axis=tuple(range(-event_ndim, 0)))


def bernoulli_log_likelihood(x, logits, event_ndim=1):
    """ln p(x|z) for a Bernoulli decoder, THEORY eq [32], computed from logits.

    ln p = sum_j [x_j ln y_j + (1-x_j) ln(1-y_j)] with y = sigmoid(logits), evaluated as
    -sum_j BCE_from_logits (no clipped probabilities). Targets in [0,1] need not be binary.

    Args:
        x: (..., *event) targets in [0, 1].
        logits: decoder logits, same shape as `x` (or broadcastable).
        event_ndim: how many trailing axes form one example (1 for vectors, 3 for HxWxC).

    Returns:
        (...,) log-likelihood in nats.
    """
    logits = ops.convert_to_tensor(logits)
    x = ops.cast(x, logits.dtype)
    # max(l,0) - l x + log(1 + exp(-|l|)): exact and stable for all logits.
    bce = ops.relu(logits) - logits * x + ops.softplus(-ops.abs(logits))
    return -_sum_event(bce, event_ndim)


def gaussian_log_likelihood(x, mean, log_var, event_ndim=1):
    """ln p(x|z) = sum_j ln N(x_j | m_j, s_j^2) for a Gaussian decoder (THEORY, Decoder).

    Args:
        x: (..., *event) real-valued targets.
        mean: decoder means, broadcastable with `x`.
        log_var: log-variances s_j^2, broadcastable with `x` (per-feature or scalar).
        event_ndim: how many trailing axes form one example.

    Returns:
        (...,) log-likelihood in nats.
    """
    mean = ops.convert_to_tensor(mean)
    x = ops.cast(x, mean.dtype)
    log_var = ops.cast(log_var, mean.dtype)
    values = -0.5 * (LOG_2PI + log_var + ops.square(x - mean) * ops.exp(-log_var))
    values = values + ops.zeros_like(x)  # broadcast a per-feature variance over the batch
    return _sum_event(values, event_ndim)


def diagonal_gaussian_log_density(z, mean, log_var):
    """ln N(z | mean, diag(exp(log_var))), summed over the last axis. Shapes broadcast."""
    z, mean, log_var = (ops.convert_to_tensor(a) for a in (z, mean, log_var))
    return -0.5 * ops.sum(LOG_2PI + log_var + ops.square(z - mean) * ops.exp(-log_var), axis=-1)


def tril_gaussian_log_density(z, mean, scale_tril):
    """ln N(z | mean, L L^T) for lower-triangular L with positive diagonal.

    Args:
        z: (S, ..., K) or (..., K) points; leading sample axes broadcast against `mean`.
        mean: (..., K).
        scale_tril: (..., K, K).
    """
    z, mean, scale_tril = (ops.convert_to_tensor(a) for a in (z, mean, scale_tril))
    k = ops.shape(mean)[-1]
    diff = z - mean
    batch_shape = ops.shape(diff)[:-1]
    chol = ops.broadcast_to(scale_tril, tuple(batch_shape) + (k, k))
    white = ops.linalg.solve_triangular(chol, ops.expand_dims(diff, -1), lower=True)[..., 0]
    log_det = ops.sum(ops.log(ops.diagonal(scale_tril, axis1=-2, axis2=-1)), axis=-1)
    return (-0.5 * ops.cast(k, mean.dtype) * LOG_2PI - log_det
            - 0.5 * ops.sum(ops.square(white), axis=-1))


def standard_normal_log_density(z):
    """ln N(z | 0, I), summed over the last axis: the prior p(z)."""
    z = ops.convert_to_tensor(z)
    return -0.5 * ops.sum(LOG_2PI + ops.square(z), axis=-1)


def num_tril_entries(latent_dim):
    """K (K + 1) / 2: how many numbers parameterize a K x K lower-triangular factor."""
    return latent_dim * (latent_dim + 1) // 2


def fill_scale_tril(raw, latent_dim, min_scale=1e-4):
    """Builds L (..., K, K) from K(K+1)/2 raw numbers: lower triangle, softplus diagonal.

    The diagonal is softplus(raw) + min_scale, so it is strictly positive and Sigma = L L^T
    is positive definite. Uses only a gather (no scatter), so it exports to ONNX and LiteRT.
    """
    import numpy as np

    k = latent_dim
    index = np.zeros((k, k), dtype="int32")  # 0 -> the padded zero
    rows, cols = np.tril_indices(k)
    index[rows, cols] = np.arange(1, len(rows) + 1)
    is_diag = np.zeros((num_tril_entries(k) + 1,), dtype="float32")
    is_diag[index[np.arange(k), np.arange(k)]] = 1.0

    raw = ops.convert_to_tensor(raw)
    padded = ops.concatenate([ops.zeros_like(raw[..., :1]), raw], axis=-1)
    mask = ops.cast(is_diag, raw.dtype)
    positive = ops.softplus(padded) + min_scale
    padded = mask * positive + (1.0 - mask) * padded
    flat = ops.take(padded, index.reshape(-1), axis=-1)
    if len(raw.shape) == 2:  # the common (batch, entries) case; batch may be unknown
        return ops.reshape(flat, (-1, k, k))
    return ops.reshape(flat, tuple(ops.shape(raw)[:-1]) + (k, k))
