"""Posterior-collapse diagnostics: per-dimension KL, active units and the mutual information
I(x; z) of the encoder.

    import keras_vae as kv
    report = kv.evaluation.collapse_report(vae, x_valid[:1000])
    report["active_units"], report["mutual_information"], report["kl_per_dimension"]

A collapsed latent dimension is one the decoder does not use: its posterior q(z_j|x) equals the
prior for every x, so it carries no information about x. Three numbers show it:

- `kl_per_dimension`: the mean over x of KL(q(z_j|x) || N(0, 1)) for each dimension j (THEORY
  eq [27] term by term). A collapsed dimension has KL ~ 0; the sum over j is the model's KL
  term for a diagonal posterior. Only for the standard normal prior: with a learned prior
  (`vae.prior` other than "standard") the KL to N(0, 1) is not the model's KL and is not
  computed.
- `active_units` (Burda et al. 2015): dimension j is active when A_j = Cov_x(E_q[z_j | x]), the
  variance over the data of the posterior mean, is above a threshold (0.01). A collapsed
  dimension has a constant posterior mean, A_j = 0. Any prior.
- `mutual_information`: I(x; z) = E_{q(x, z)}[ln q(z|x) - ln q(z)] under the encoder's joint
  q(x, z) = p_data(x) q(z|x), with the aggregate posterior q(z) = E_x q(z|x) replaced by the
  mixture (1/N) sum_n q(z|x_n) over the N given examples (Hoffman & Johnson 2016; the estimator
  of He et al. 2019). Zero when q(z|x) does not depend on x. Any prior.

All values are in nats; everything is computed in float64 NumPy from the encoder's outputs
(`vae.encode`), one encoder pass over x.
"""

import math
from typing import NamedTuple

import numpy as np

__all__ = [
    "ActiveUnits",
    "ACTIVE_THRESHOLD",
    "kl_per_dimension",
    "active_units",
    "mutual_information",
    "collapse_report",
    "format_collapse_report",
]

ACTIVE_THRESHOLD = 0.01  # Burda et al. (2015), section 5.2
LOG_2PI = math.log(2.0 * math.pi)
# Pairwise log-densities (z samples x examples x latent dims) held at once by the MI estimate.
_MAX_ELEMENTS = 2 ** 22


class ActiveUnits(NamedTuple):
    """`active_units`' result: `count` (int) dimensions whose `variances[j]` is above the
    threshold; `variances` (K,) float64, Cov_x(E_q[z_j|x]) per dimension."""

    count: int
    variances: np.ndarray


class _Posterior(NamedTuple):
    mean: np.ndarray       # (n, K)
    variance: np.ndarray   # (n, K), the marginal variances
    scale_tril: object     # (n, K, K) for a full posterior, else None


def _encode(vae, x, batch_size):
    """The posterior parameters of x, float64 (one encoder pass)."""
    x = np.asarray(x)
    if len(x) == 0:
        raise ValueError("The diagnostics need at least one example, got none.")
    mean, second = vae.encode(x, batch_size=batch_size)
    mean, second = np.asarray(mean, "float64"), np.asarray(second, "float64")
    if getattr(vae, "posterior", "diagonal") == "full":
        return _Posterior(mean, np.sum(second ** 2, axis=-1), second)  # diag(L L^T)
    return _Posterior(mean, np.exp(second), None)


def _prior_of(vae):
    if len(getattr(vae, "latent_dims", ())) > 1:  # HierarchicalVAE: z1's prior is p(z1|z2)
        return "p(z1|z2) (a second stochastic layer)"
    return getattr(vae, "prior", "standard")


def _check_standard_prior(vae):
    prior = _prior_of(vae)
    if prior != "standard":
        raise ValueError(f"kl_per_dimension measures the KL to N(0, 1), which is the model's KL "
                         f"only for the standard normal prior; this VAE's prior is {prior!r}. "
                         "Use active_units or mutual_information, which hold for any prior.")


def _kl_per_dimension(post):
    mean, var = post.mean, post.variance
    return np.mean(0.5 * (mean ** 2 + var - 1.0 - np.log(var)), axis=0)


def _unit_variances(post):
    if len(post.mean) < 2:
        raise ValueError("active_units needs at least 2 examples (a variance over x), got "
                         f"{len(post.mean)}.")
    return np.var(post.mean, axis=0, ddof=1)


def _check_threshold(threshold):
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating,
                                                                 np.integer)) \
            or not threshold >= 0:
        raise ValueError(f"threshold must be a number >= 0, got {threshold!r}.")
    return float(threshold)


def _check_num_samples(num_samples):
    if (isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer))
            or num_samples < 1):
        raise ValueError(f"num_samples must be an integer >= 1 (draws of z per example), got "
                         f"{num_samples!r}.")
    return int(num_samples)


def _log_q_matrix(z, post, inverse_tril):
    """ln q(z_c | x_m) for every row z_c of z (c, K) and every example m: (c, n)."""
    n, k = post.mean.shape
    if post.scale_tril is None:
        inv_var = 1.0 / post.variance                              # (n, K)
        # sum_k (z_k - mu_mk)^2 / v_mk expanded into matrix products: memory c * n, not c*n*K
        sq = (z ** 2) @ inv_var.T - 2.0 * z @ (post.mean * inv_var).T \
            + np.sum(post.mean ** 2 * inv_var, axis=1)
        log_det = np.sum(np.log(post.variance), axis=1)            # (n,)
    else:
        # Mahalanobis distance |L_m^-1 (z_c - mu_m)|^2
        # (one matrix product: the n inverse factors stacked into an (n K, K) matrix)
        white = (z @ inverse_tril.reshape(n * k, k).T).reshape(len(z), n, k) \
            - np.einsum("mij,mj->mi", inverse_tril, post.mean)[None]
        sq = np.sum(white ** 2, axis=-1)
        log_det = 2.0 * np.sum(np.log(np.diagonal(post.scale_tril, axis1=-2, axis2=-1)), axis=1)
    return -0.5 * (np.maximum(sq, 0.0) + log_det[None] + k * LOG_2PI)


def _mutual_information(post, num_samples, seed):
    n, k = post.mean.shape
    rng = np.random.default_rng(seed)
    eps = rng.standard_normal((num_samples, n, k))
    if post.scale_tril is None:
        z = post.mean + np.sqrt(post.variance) * eps                # (S, n, K)
        log_det = np.sum(np.log(post.variance), axis=1)
        inverse_tril = None
    else:
        z = post.mean + np.einsum("nij,snj->sni", post.scale_tril, eps)
        log_det = 2.0 * np.sum(np.log(np.diagonal(post.scale_tril, axis1=-2, axis2=-1)), axis=1)
        inverse_tril = np.linalg.inv(post.scale_tril)
    # ln q(z_sn | x_n) of each draw under its own posterior (eps is its whitened value)
    log_own = -0.5 * (np.sum(eps ** 2, axis=-1) + log_det[None] + k * LOG_2PI)   # (S, n)
    z = z.reshape(-1, k)
    per_row = n * (k if inverse_tril is not None else 1)
    rows = max(1, _MAX_ELEMENTS // max(1, per_row))
    log_aggregate = np.empty(len(z))
    for start in range(0, len(z), rows):
        block = _log_q_matrix(z[start:start + rows], post, inverse_tril)     # (c, n)
        top = block.max(axis=1, keepdims=True)
        log_aggregate[start:start + rows] = (top[:, 0] + np.log(np.sum(np.exp(block - top),
                                                                       axis=1)))
    log_aggregate -= math.log(n)
    return float(np.mean(log_own.reshape(-1) - log_aggregate))


# ----------------------------------------------------------------------------- public API
def kl_per_dimension(vae, x, batch_size=1024):
    """Mean over x of KL(q(z_j|x) || N(0, 1)) for each latent dimension j, in nats.

        KL_j = mean_x 1/2 (mu_j(x)^2 + sigma_j(x)^2 - 1 - ln sigma_j(x)^2)

    For a diagonal posterior the K values sum to the model's mean KL term. For a full posterior
    the values are those of the marginals q(z_j|x) = N(mu_j, Sigma_jj): their sum is at most the
    full KL (Hadamard's inequality; the gap is the correlation between the dimensions within
    q(z|x)), and each still reads ~0 for a dimension that is the prior for every x.

    Args:
        vae: a `keras_vae.VAE` (any object with `encode` and `posterior`).
        x: data (n, *vae.input_shape_).
        batch_size: examples per encoder call.

    Returns:
        float64 NumPy array (K,), nats per example.

    Raises:
        ValueError: the VAE has a learned prior (`vae.prior` other than "standard"): the KL to
            N(0, 1) is then not the model's KL.
    """
    _check_standard_prior(vae)
    return _kl_per_dimension(_encode(vae, x, batch_size))


def active_units(vae, x, threshold=ACTIVE_THRESHOLD, batch_size=1024):
    """The number of active latent units (Burda et al. 2015) and the statistic behind it.

    A_j = Cov_x(E_{q(z|x)}[z_j]), the variance over the n examples (unbiased, ddof=1, as in He
    et al. 2019's code) of the posterior mean of dimension j; unit j is active when
    A_j > threshold. A collapsed unit has a posterior mean that does not move with x (A_j = 0).
    Holds for any prior (it reads the encoder only).

    Args:
        vae, x: the model and the data (n >= 2 examples).
        threshold: the activity threshold (0.01 in Burda et al.); strictly above counts.
        batch_size: examples per encoder call.

    Returns:
        `ActiveUnits(count, variances)`: int, and float64 (K,).
    """
    threshold = _check_threshold(threshold)
    variances = _unit_variances(_encode(vae, x, batch_size))
    return ActiveUnits(int(np.sum(variances > threshold)), variances)


def mutual_information(vae, x, num_samples=1, seed=0, batch_size=1024):
    """Estimate of the mutual information I(x; z) between the data and the latent code, nats.

        I(x; z) = E_{x, z ~ q(z|x)} [ln q(z|x) - ln q(z)],
        q(z) ~= (1/N) sum_m q(z|x_m)     (the aggregate posterior over the N examples)

    with `num_samples` draws z ~ q(z|x_n) per example (Hoffman & Johnson 2016; He et al.
    2019's estimator, which uses one draw per example). Diagonal and full posteriors.

    What it estimates, and its bias: it is an unbiased Monte Carlo estimate of the mutual
    information between z and the index of an example drawn uniformly from the N given ones.
    That quantity is at most ln N (the entropy of the index), and so is every term of the
    estimate (the mixture contains the example's own posterior with weight 1/N), so the value
    is always <= ln N: with an encoder whose posteriors barely overlap it saturates at ln N
    whatever the true I(x; z). As N grows it approaches I(x; z) of the data distribution; use
    the same N to compare models, and read values near ln N as "at least this much". An encoder
    that ignores x gives exactly 0.

    Args:
        vae, x: the model and N examples (n, *vae.input_shape_).
        num_samples: draws of z per example (more lowers the Monte Carlo noise, not the bias).
        seed: seed of the draws (NumPy), for a reproducible value.
        batch_size: examples per encoder call.

    Returns:
        float, nats (<= ln N).
    """
    num_samples = _check_num_samples(num_samples)
    return _mutual_information(_encode(vae, x, batch_size), num_samples, seed)


def collapse_report(vae, x, threshold=ACTIVE_THRESHOLD, num_samples=1, seed=0,
                    batch_size=1024):
    """All posterior-collapse diagnostics from one encoder pass over x.

    Returns:
        dict (JSON-ready): "n" (examples), "latent_dim", "prior"; "kl_per_dimension" (list of
        K floats, nats; None with a learned prior, and then "kl_note" says why) and "kl_total"
        (their sum or None); "active_units" (int), "active_threshold", "unit_variances" (list
        of K floats, Cov_x(E_q[z_j])); "mutual_information" (nats), "mutual_information_max"
        (ln N, its upper bound), "mi_samples", "seed". The values are those of
        `kl_per_dimension`, `active_units` and `mutual_information` with the same arguments.
    """
    threshold = _check_threshold(threshold)
    num_samples = _check_num_samples(num_samples)
    post = _encode(vae, x, batch_size)
    n, k = post.mean.shape
    prior = _prior_of(vae)
    report = {"n": int(n), "latent_dim": int(k), "prior": str(prior)}
    if prior == "standard":
        kl = _kl_per_dimension(post)
        report.update(kl_per_dimension=kl.tolist(), kl_total=float(np.sum(kl)))
    else:
        report.update(kl_per_dimension=None, kl_total=None,
                      kl_note=f"not computed: the prior is {prior!r}, so the KL to N(0, 1) "
                              "is not the model's KL")
    variances = _unit_variances(post)
    report.update(active_units=int(np.sum(variances > threshold)), active_threshold=threshold,
                  unit_variances=variances.tolist(),
                  mutual_information=_mutual_information(post, num_samples, seed),
                  mutual_information_max=math.log(n), mi_samples=num_samples, seed=seed)
    return report


def format_collapse_report(report):
    """The report of `collapse_report` as a text table: one row per latent dimension, sorted
    by KL (largest first; by activity with a learned prior), then the totals."""
    kl = report.get("kl_per_dimension")
    variances = report["unit_variances"]
    threshold = report["active_threshold"]
    order = sorted(range(len(variances)),
                   key=lambda j: -(kl[j] if kl is not None else variances[j]))
    lines = [f"Posterior collapse diagnostics ({report['n']} examples, latent_dim "
             f"{report['latent_dim']}, prior {report['prior']})",
             f"{'dim':>5}  {'KL (nats)':>10}  {'Cov_x E[z]':>10}  active"]
    for j in order:
        kl_text = f"{kl[j]:10.4f}" if kl is not None else f"{'-':>10}"
        lines.append(f"{j:>5}  {kl_text}  {variances[j]:10.4f}  "
                     f"{'yes' if variances[j] > threshold else 'no'}")
    if kl is not None:
        lines.append(f"KL total: {report['kl_total']:.4f} nats per example")
    else:
        lines.append(f"KL per dimension: {report['kl_note']}")
    lines.append(f"active units: {report['active_units']} of {report['latent_dim']} "
                 f"(Cov_x E[z_j] > {threshold:g})")
    lines.append(f"mutual information I(x; z): {report['mutual_information']:.4f} nats "
                 f"(at most ln N = {report['mutual_information_max']:.4f})")
    return "\n".join(lines)
