"""Evaluation of a trained VAE: per-example ELBO, importance-weighted ln p(x), anomaly detection.

    import keras_vae as kv
    parts = kv.evaluation.elbo(vae, x_test)              # .elbo, .reconstruction, .kl (n,) nats
    log_px = kv.evaluation.log_likelihood(vae, x_test, num_samples=5000, seed=0)   # (n,) nats
    print("test NLL", -log_px.mean(), "nats;", kv.evaluation.bits_per_dim(log_px, 784).mean())

    detector = kv.evaluation.AnomalyDetector(vae, method="elbo", fpr=0.05).fit(x_valid)
    flags = detector.predict(x_new)                      # True = anomalous
    report = detector.evaluate(x_normal, x_anomalous)    # {"auroc": ..., "tpr": ..., ...}

The importance-weighted estimate (Burda et al. 2015, THEORY "Beyond the notes") is

    ln p(x) ~= logsumexp_k [ln p(x|z_k) + ln p(z_k) - ln q(z_k|x)] - ln k,   z_k ~ q(z|x).

It is a lower bound on ln p(x) in expectation for every k, equals the ELBO in expectation for
k = 1, and increases to ln p(x) as k grows. The k samples are drawn in chunks and combined with a
streaming logsumexp (in float64), and examples are processed in batches, so memory is bounded by
`max_elements` (decoder outputs per compiled call), not by k or the data size. Each chunk runs
in one compiled function (XLA through `tf.function(jit_compile=True)` on TensorFlow,
`jax.jit` on JAX, eager elsewhere); everything inside is `keras.ops` / `keras.random`.

All values are in nats per example unless a name says otherwise.
"""

import math
import weakref
from typing import NamedTuple

import keras
import numpy as np
from keras import ops

from keras_vae.diagnostics import (  # noqa: F401  (posterior collapse, re-exported here)
    ActiveUnits,
    active_units,
    collapse_report,
    format_collapse_report,
    kl_per_dimension,
    mutual_information,
)

__all__ = [
    "ELBO",
    "elbo",
    "log_likelihood",
    "bits_per_dim",
    "likelihood_report",
    "anomaly_score",
    "fit_threshold",
    "detection_metrics",
    "AnomalyDetector",
    "ANOMALY_METHODS",
    "kl_per_dimension",
    "active_units",
    "mutual_information",
    "collapse_report",
]

# Decoder outputs (samples x examples x features) per compiled call: 2**23 float32 values are
# 32 MiB per tensor of that shape. Measured peak for k=5000 on 784-dim MNIST (Kingma-Welling
# model): ~155 MiB above the process's baseline, whatever k and n (benchmarks/README.md).
DEFAULT_MAX_ELEMENTS = 2 ** 23
ANOMALY_METHODS = ("elbo", "iwae")
LOG_2PI = math.log(2.0 * math.pi)


class ELBO(NamedTuple):
    """Per-example terms of the evidence lower bound, each a NumPy array (n,) in nats.

    elbo = -reconstruction - kl  (THEORY eqs [2]-[7]).
    """

    elbo: np.ndarray
    reconstruction: np.ndarray  # -E_q[ln p(x|z)], Monte Carlo over the posterior samples
    kl: np.ndarray              # KL(q(z|x) || p(z)), closed form (eq [27])


# ----------------------------------------------------------------------------- compiled chunk
def _chunk_fn(vae):
    """Returns f(x (B, ...), seed_generator, num_samples S, valid) -> (lse, sum_loglik, kl).

    lse (B,): logsumexp over the first `valid` of S importance log-weights;
    sum_loglik (B,): sum over those samples of ln p(x|z); kl (B,): closed-form KL.
    """
    def chunk(x, seed_generator, num_samples, valid):
        log_w, log_lik, kl = vae.importance_log_weights(x, num_samples, seed_generator)
        mask = ops.expand_dims(ops.arange(num_samples) < valid, -1)
        lse = ops.logsumexp(ops.where(mask, log_w, -np.inf), axis=0)
        sum_loglik = ops.sum(ops.where(mask, log_lik, 0.0), axis=0)
        return lse, sum_loglik, kl

    return chunk


class _Compiled:
    """One compiled chunk function per (VAE, S, B), with its own reseedable generator."""

    def __init__(self, vae):
        self.seed_generator = keras.random.SeedGenerator(0, name="evaluation_seed")
        fn = _chunk_fn(vae)
        backend = keras.backend.backend()
        if backend == "tensorflow":
            import tensorflow as tf

            # num_samples is a Python int: one trace per chunk size, reused for every batch.
            self._fn = tf.function(lambda x, s, v: fn(x, self.seed_generator, s, v),
                                   jit_compile=True, reduce_retracing=False, autograph=False)
        elif backend == "jax":
            import jax

            def stateless(state, x, num_samples, valid):
                with keras.StatelessScope(state_mapping=[(self.seed_generator.state, state)]) as sc:
                    out = fn(x, self.seed_generator, num_samples, valid)
                    new_state = sc.get_current_value(self.seed_generator.state)
                return out, new_state

            jitted = jax.jit(stateless, static_argnums=(2,))

            def call(x, num_samples, valid):
                out, new_state = jitted(self.seed_generator.state.value, x, num_samples, valid)
                self.seed_generator.state.assign(new_state)
                return out

            self._fn = call
        else:
            self._fn = lambda x, s, v: fn(x, self.seed_generator, s, v)

    def reseed(self, seed):
        if seed is None:
            seed = int(np.random.SeedSequence().generate_state(1)[0] % (2 ** 31 - 1))
        state = self.seed_generator.state
        state.assign(ops.convert_to_tensor(np.array([int(seed), 0]), dtype=state.dtype))

    def __call__(self, x, num_samples, valid):
        valid = ops.convert_to_tensor(np.int32(valid))
        return [np.asarray(ops.convert_to_numpy(o), dtype=np.float64)
                for o in self._fn(x, num_samples, valid)]


# JAX closes over the weights' values at trace time, so only TensorFlow's functions (which read
# the variables at run time) are cached across calls.
_CACHE = weakref.WeakKeyDictionary()


def _compiled(vae):
    if keras.backend.backend() != "tensorflow":
        return _Compiled(vae)
    if vae not in _CACHE:
        _CACHE[vae] = _Compiled(vae)
    return _CACHE[vae]


def _plan(n, num_samples, features, batch_size, chunk_size, max_elements):
    """Examples per call B and samples per call S within max_elements = S * B * features."""
    for name, value in (("batch_size", batch_size), ("chunk_size", chunk_size)):
        if value is not None and (isinstance(value, bool) or not isinstance(
                value, (int, np.integer)) or value < 1):  # before dividing by it
            raise ValueError(f"{name} must be an integer >= 1 or None, got {value!r}.")
    rows = max(1, int(max_elements) // max(1, features))
    if chunk_size is None:
        per_example = rows if batch_size is None else max(1, rows // batch_size)
        chunk_size = min(num_samples, per_example)
    if batch_size is None:
        batch_size = max(1, min(n, rows // chunk_size))
    for name, value in (("batch_size", batch_size), ("chunk_size", chunk_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
    return int(batch_size), int(min(chunk_size, num_samples))


def _check_num_samples(num_samples):
    if (isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer))
            or num_samples < 1):
        raise ValueError(f"num_samples must be an integer >= 1 (the k of the estimate), "
                         f"got {num_samples!r}.")
    return int(num_samples)


def _prepare(vae, x):
    x = np.asarray(x)
    vae.check_data(x, "x")
    return x.astype(keras.backend.standardize_dtype(vae.compute_dtype), copy=False)


def _run(vae, x, num_samples, batch_size, chunk_size, seed, max_elements, verbose):
    """Streams all chunks; returns (lse (n,), mean ln p(x|z) (n,), kl (n,)) in float64."""
    num_samples = _check_num_samples(num_samples)
    x = _prepare(vae, x)
    n = len(x)
    features = int(np.prod(vae.input_shape_))
    if getattr(vae.decoder, "autoregressive", False):
        # Its head holds `filters` values per pixel for every sample: bounding those keeps a
        # call's working set small (PixelVAE on MNIST: ~2x faster, benchmarks/README.md).
        features *= int(getattr(vae.decoder, "filters", 1))
    batch_size, chunk_size = _plan(n, num_samples, features, batch_size, chunk_size,
                                   max_elements)
    compiled = _compiled(vae)
    compiled.reseed(seed)
    num_chunks = math.ceil(num_samples / chunk_size)
    if verbose == "auto":
        verbose = int(n * num_samples >= 2_000_000)
    progbar = keras.utils.Progbar(n, unit_name="example") if verbose else None
    lse_all = np.empty(n)
    loglik_all = np.empty(n)
    kl_all = np.empty(n)
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        batch = x[start:stop]
        if len(batch) < batch_size:  # pad to one shape so the compiled function is reused
            pad = np.repeat(batch[-1:], batch_size - len(batch), axis=0)
            batch = np.concatenate([batch, pad])
        batch = ops.convert_to_tensor(batch)
        lse = np.full(batch_size, -np.inf)
        loglik = np.zeros(batch_size)
        for c in range(num_chunks):
            valid = min(chunk_size, num_samples - c * chunk_size)
            chunk_lse, chunk_loglik, kl = compiled(batch, chunk_size, valid)
            lse = np.logaddexp(lse, chunk_lse)
            loglik += chunk_loglik
        m = stop - start
        lse_all[start:stop] = lse[:m]
        loglik_all[start:stop] = loglik[:m] / num_samples
        kl_all[start:stop] = kl[:m]
        if progbar is not None:
            progbar.update(stop)
    return lse_all, loglik_all, kl_all


# ----------------------------------------------------------------------------- public API
def elbo(vae, x, num_samples=1, batch_size=None, seed=None, chunk_size=None,
         max_elements=DEFAULT_MAX_ELEMENTS, verbose="auto"):
    """Per-example evidence lower bound and its two terms (THEORY eqs [2]-[7]).

    The reconstruction term -E_q[ln p(x|z)] is a Monte Carlo average over `num_samples` draws
    z ~ q(z|x) (eq [7]); the KL term is the closed form (eq [27]), or for a learned prior
    (`VAE(prior="vamp" | "mog")`) the Monte Carlo mean of ln q(z|x) - ln p(z) over the last
    chunk's draws. beta is ignored: this is the ELBO itself, whatever the training weight.

    Args:
        vae: a `keras_vae.VAE`.
        x: data (n, *vae.input_shape_), checked with `vae.check_data`.
        num_samples: L, posterior samples per example (1 gives the training objective's noise;
            more gives a less noisy per-example value with the same expectation).
        batch_size, chunk_size: examples and samples per compiled call; None picks them so that
            samples * examples * features <= max_elements.
        seed: int for reproducible samples (same seed, same batching -> same numbers).
        max_elements: memory bound, decoder outputs per call.
        verbose: 0, 1 or "auto" (a progress bar for large jobs).

    Returns:
        `ELBO(elbo, reconstruction, kl)`, three float64 NumPy arrays (n,) in nats.
    """
    _, loglik, kl = _run(vae, x, num_samples, batch_size, chunk_size, seed, max_elements,
                         verbose)
    return ELBO(elbo=loglik - kl, reconstruction=-loglik, kl=kl)


def log_likelihood(vae, x, num_samples=5000, batch_size=None, seed=None, chunk_size=None,
                   max_elements=DEFAULT_MAX_ELEMENTS, verbose="auto"):
    """Importance-weighted estimate of ln p(x) per example (Burda et al. 2015), in nats.

        ln p(x) ~= logsumexp_{i<=k} [ln p(x|z_i) + ln p(z_i) - ln q(z_i|x)] - ln k

    with z_i ~ q(z|x). Papers report -mean(ln p(x)) over the test set with k = 5000 as the
    "test NLL". Works for diagonal and full posteriors, Bernoulli and Gaussian likelihoods.

    Args:
        vae: a `keras_vae.VAE`.
        x: data (n, *vae.input_shape_).
        num_samples: k, importance samples per example (k = 1 is an unbiased ELBO sample).
        batch_size: examples per compiled call (None: as many as fit in `max_elements`).
        seed: int for reproducible results (the estimate depends on the seed and on the
            batch/chunk sizes, not on anything else).
        chunk_size: samples per compiled call; the k samples are split into chunks whose
            logsumexps are combined exactly (streaming, float64).
        max_elements: bound on samples * examples * features per call. The peak memory
            follows it, not k or n: for k=5000 on 784-dim data, ~115 / 155 / 340 MiB above
            the baseline for 2**21 / 2**23 (default) / 2**25 (benchmarks/README.md).
        verbose: 0, 1 or "auto" (progress bar when n * k >= 2e6).

    Returns:
        float64 NumPy array (n,): the estimates of ln p(x) in nats (negate for the NLL).
    """
    num_samples = _check_num_samples(num_samples)
    lse, _, _ = _run(vae, x, num_samples, batch_size, chunk_size, seed, max_elements,
                     verbose)
    return lse - math.log(num_samples)


def bits_per_dim(log_likelihood_nats, num_dims):
    """Converts ln p(x) in nats per example to bits per dimension: -ln p(x) / (D ln 2).

    Args:
        log_likelihood_nats: scalar or array of ln p(x) per example, in nats.
        num_dims: D, the number of data dimensions per example (784 for MNIST).

    Returns:
        Same shape as the input: bits per dimension (lower is better).
    """
    if int(num_dims) < 1:
        raise ValueError(f"num_dims must be >= 1, got {num_dims!r}.")
    return -np.asarray(log_likelihood_nats, dtype=np.float64) / (int(num_dims) * math.log(2.0))


def nll_summary(log_px, num_dims):
    """Summary of per-example log-likelihoods (n,) in nats over data with `num_dims` dimensions.

    Returns:
        dict with "nll" (-mean ln p(x), nats per example), "nll_stderr" (its standard error
        over examples; nan for one example) and "bits_per_dim".
    """
    log_px = np.asarray(log_px, dtype="float64")
    return {
        "nll": float(-log_px.mean()),
        "nll_stderr": float(log_px.std(ddof=1) / math.sqrt(len(log_px))) if len(log_px) > 1
        else float("nan"),
        "bits_per_dim": float(bits_per_dim(log_px.mean(), num_dims)),
    }


def likelihood_report(vae, x, num_samples=5000, seed=0, batch_size=None, elbo_samples=1,
                      verbose="auto"):
    """Summary numbers for a data set, the ones the `evaluate` command and benchmarks print.

    Args:
        vae, x: the model and the data (n, *input_shape).
        num_samples: k for the importance-weighted NLL (0 skips it: ELBO only).
        seed: seed of both estimates.
        elbo_samples: posterior samples per example for the ELBO's reconstruction term.

    Returns:
        dict of floats, per example, in nats unless named otherwise: "n", "neg_elbo",
        "reconstruction", "kl", and with num_samples > 0 also "nll", "nll_stderr" (Monte
        Carlo standard error over examples), "bits_per_dim", "num_samples", plus "seconds"
        (wall time of the whole report).
    """
    import time

    start = time.perf_counter()
    parts = elbo(vae, x, num_samples=elbo_samples, batch_size=batch_size, seed=seed,
                 verbose=0)
    out = {
        "n": int(len(parts.elbo)),
        "neg_elbo": float(-parts.elbo.mean()),
        "reconstruction": float(parts.reconstruction.mean()),
        "kl": float(parts.kl.mean()),
    }
    if num_samples:
        log_px = log_likelihood(vae, x, num_samples=num_samples, batch_size=batch_size,
                                seed=seed, verbose=verbose)
        out.update(nll_summary(log_px, int(np.prod(vae.input_shape_))))
        out["num_samples"] = int(num_samples)
    out["seconds"] = time.perf_counter() - start
    return out


# ----------------------------------------------------------------------------- anomalies
def anomaly_score(vae, x, method="elbo", num_samples=None, batch_size=None, seed=0,
                  verbose="auto"):
    """How unusual each example is under the model: higher means more anomalous, in nats.

    Args:
        vae, x: the model and the data (n, *input_shape).
        method: "elbo" for -ELBO(x) (cheap, an upper bound on -ln p(x)), or "iwae" for the
            importance-weighted estimate of -ln p(x) (tighter, k times the decoder cost).
        num_samples: posterior samples per example; None gives 10 for "elbo" and 200 for
            "iwae".
        seed: seed of the samples (fixed by default so scores are reproducible).

    Returns:
        float64 NumPy array (n,) of scores in nats.
    """
    if method not in ANOMALY_METHODS:
        raise ValueError(f"Unknown anomaly method {method!r}: expected one of {ANOMALY_METHODS} "
                         "('elbo' for -ELBO, 'iwae' for the importance-weighted -ln p(x)).")
    if method == "elbo":
        k = 10 if num_samples is None else num_samples
        return -elbo(vae, x, num_samples=k, batch_size=batch_size, seed=seed,
                     verbose=verbose).elbo
    k = 200 if num_samples is None else num_samples
    return -log_likelihood(vae, x, num_samples=k, batch_size=batch_size, seed=seed,
                           verbose=verbose)


def fit_threshold(scores, fpr=0.05):
    """The score above which an example is flagged, chosen on normal (validation) data.

    Returns the smallest observed normal score t such that at most a fraction `fpr` of the
    normal scores is strictly above t; so on these scores the false-positive rate is <= fpr,
    and on new normal data it is fpr up to sampling error (about sqrt(fpr (1-fpr) / n)).

    Args:
        scores: anomaly scores (n,) of normal examples only.
        fpr: wanted false-positive rate in [0, 1).

    Returns:
        float threshold; flag `score > threshold`.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if scores.size == 0:
        raise ValueError("fit_threshold needs at least one normal score.")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores contain NaN or infinite values.")
    if not 0.0 <= float(fpr) < 1.0:
        raise ValueError(f"fpr must be in [0, 1), got {fpr!r}.")
    ordered = np.sort(scores)
    # Allowed number of normal scores above the threshold.
    allowed = int(math.floor(float(fpr) * ordered.size + 1e-9))
    return float(ordered[ordered.size - 1 - allowed])


def detection_metrics(normal_scores, anomaly_scores, threshold=None):
    """How well scores separate normal from anomalous examples.

    Args:
        normal_scores: scores (n0,) of normal examples (label 0).
        anomaly_scores: scores (n1,) of anomalies (label 1).
        threshold: optional flagging threshold (from `fit_threshold`); adds the rates at it.

    Returns:
        dict: "auroc" (area under the ROC curve, 0.5 = chance, 1 = perfect; from
        sklearn.metrics.roc_auc_score), "average_precision", "roc_fpr" and "roc_tpr" (the
        curve, lists), "n_normal", "n_anomaly"; with a threshold also "threshold", "fpr"
        (fraction of normal flagged), "tpr" (fraction of anomalies flagged).
    """
    from sklearn import metrics

    normal = np.asarray(normal_scores, dtype=np.float64).ravel()
    anomaly = np.asarray(anomaly_scores, dtype=np.float64).ravel()
    if normal.size == 0 or anomaly.size == 0:
        raise ValueError("detection_metrics needs at least one normal and one anomalous score.")
    labels = np.concatenate([np.zeros(normal.size), np.ones(anomaly.size)])
    scores = np.concatenate([normal, anomaly])
    fpr, tpr, _ = metrics.roc_curve(labels, scores)
    out = {
        "auroc": float(metrics.roc_auc_score(labels, scores)),
        "average_precision": float(metrics.average_precision_score(labels, scores)),
        "roc_fpr": fpr.tolist(),
        "roc_tpr": tpr.tolist(),
        "n_normal": int(normal.size),
        "n_anomaly": int(anomaly.size),
    }
    if threshold is not None:
        out.update({"threshold": float(threshold),
                    "fpr": float(np.mean(normal > threshold)),
                    "tpr": float(np.mean(anomaly > threshold))})
    return out


class AnomalyDetector:
    """Flags examples a VAE finds unlikely: score, fit a threshold on normal data, evaluate.

        detector = AnomalyDetector(vae, method="elbo", fpr=0.05).fit(x_valid_normal)
        detector.predict(x)        # bool (n,), True = anomalous
        detector.evaluate(x_normal_test, x_anomalous_test)["auroc"]

    Args:
        vae: a trained `keras_vae.VAE` (trained on normal data only).
        method: "elbo" or "iwae", see `anomaly_score`.
        fpr: false-positive rate the threshold is fitted for.
        num_samples, seed: passed to `anomaly_score`.
    """

    def __init__(self, vae, method="elbo", fpr=0.05, num_samples=None, seed=0):
        if method not in ANOMALY_METHODS:
            raise ValueError(f"Unknown anomaly method {method!r}: expected one of "
                             f"{ANOMALY_METHODS}.")
        if not 0.0 <= float(fpr) < 1.0:
            raise ValueError(f"fpr must be in [0, 1), got {fpr!r}.")
        self.vae = vae
        self.method = method
        self.fpr = float(fpr)
        self.num_samples = num_samples
        self.seed = seed
        self.threshold_ = None

    def score(self, x):
        """Anomaly scores (n,) in nats, higher = more anomalous."""
        return anomaly_score(self.vae, x, method=self.method, num_samples=self.num_samples,
                             seed=self.seed, verbose=0)

    def fit(self, x_normal):
        """Fits the threshold on normal validation data; returns self."""
        self.threshold_ = fit_threshold(self.score(x_normal), self.fpr)
        return self

    def _check_fitted(self):
        if self.threshold_ is None:
            raise ValueError("The detector has no threshold yet: call fit(x_normal_valid) "
                             "first.")

    def predict(self, x):
        """bool (n,): True where the score is above the fitted threshold."""
        self._check_fitted()
        return self.score(x) > self.threshold_

    def evaluate(self, x_normal, x_anomalous):
        """`detection_metrics` of the scores of held-out normal and anomalous data, at the
        fitted threshold."""
        self._check_fitted()
        return detection_metrics(self.score(x_normal), self.score(x_anomalous), self.threshold_)
