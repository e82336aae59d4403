"""keras_vae.evaluation against ground truth.

- A linear-Gaussian VAE (linear decoder, Gaussian likelihood) has the exact marginal
  ln p(x) = ln N(x | b, W^T W + diag(psi)) and an exact Gaussian posterior, both computed here in
  NumPy from the decoder's weights. With the exact posterior as encoder (full covariance) every
  importance weight equals p(x), so the estimate is exact for every k; with a mismatched diagonal
  encoder the estimate rises to ln p(x) as k grows and stays below it up to Monte Carlo error.
- A Bernoulli VAE with one latent dimension has ln p(x) = ln integral p(x|z) N(z) dz, computed by
  quadrature on a dense grid.
- The k = 1 estimate equals the ELBO in expectation; the ELBO's terms match the closed forms.
- Anomaly thresholds and AUROC against known score distributions (AUROC = Phi(d / sqrt 2)).
"""

import math
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest
from scipy import stats

import keras

import keras_vae as kv
from conftest import (D, K, bernoulli_1d, exact_log_px, linear_gaussian,  # noqa: F401
                      linear_gaussian_data, quadrature_log_px)

from keras_vae import evaluation


# The ground-truth references (linear-Gaussian VAE, 1-D Bernoulli VAE) live in conftest.py.


def test_exact_posterior_gives_exact_log_likelihood_for_every_k():
    vae, w, b, psi = linear_gaussian("full", exact_posterior=True)
    x = linear_gaussian_data(w, b, psi, 50)
    exact = exact_log_px(x, w, b, psi)
    for k in (1, 7):
        est = evaluation.log_likelihood(vae, x, num_samples=k, seed=3)
        np.testing.assert_allclose(est, exact, atol=2e-3, rtol=0)
    # With q = p(z|x) the KL(q || p(z|x)) gap vanishes: the ELBO is ln p(x) too.
    parts = evaluation.elbo(vae, x, num_samples=2000, seed=0)
    np.testing.assert_allclose(parts.elbo, exact, atol=0.1)
    np.testing.assert_allclose(parts.elbo, -parts.reconstruction - parts.kl)


def test_estimate_rises_to_exact_value_and_stays_below_it():
    # Diagonal posterior with the right means but twice too narrow, uncorrelated variances.
    vae, w, b, psi = linear_gaussian("diagonal", var_scale=0.5)
    x = linear_gaussian_data(w, b, psi, 200)
    exact = exact_log_px(x, w, b, psi)
    gaps, errors = [], []
    for k in (1, 10, 100, 3000):
        gap = np.concatenate([exact - evaluation.log_likelihood(vae, x, num_samples=k, seed=s)
                              for s in range(3)])
        gaps.append(gap.mean())
        errors.append(gap.std(ddof=1) / math.sqrt(gap.size))
        # A lower bound in expectation: never above ln p(x) beyond Monte Carlo error.
        assert gap.mean() > -3 * errors[-1], (k, gap.mean(), errors[-1])
    assert gaps[0] > 0.1  # the mismatch costs something at k = 1 ...
    assert all(g1 > g2 for g1, g2 in zip(gaps, gaps[1:])), gaps  # ... less as k grows ...
    assert abs(gaps[-1]) < max(0.01, 4 * errors[-1]), gaps  # ... and vanishes.


def test_bernoulli_estimate_matches_quadrature():
    vae, x = bernoulli_1d()
    exact = quadrature_log_px(vae, x)
    est = evaluation.log_likelihood(vae, x, num_samples=20000, seed=0)
    assert np.all(est <= exact + 0.02)
    np.testing.assert_allclose(est, exact, atol=0.02)
    assert abs(np.mean(est - exact)) < 0.005
    parts = evaluation.elbo(vae, x, num_samples=200, seed=0)
    assert parts.elbo.mean() < exact.mean() - 0.01  # a random encoder leaves a gap


def test_k1_estimate_equals_elbo_in_expectation():
    vae, x = bernoulli_1d(seed=2)
    x = np.tile(x, (8, 1))  # 512 independent draws of the k = 1 estimate
    k1 = np.concatenate([evaluation.log_likelihood(vae, x, num_samples=1, seed=s)
                         for s in range(4)])
    ref = np.tile(evaluation.elbo(vae, x, num_samples=500, seed=9).elbo, 4)
    diff = k1 - ref
    stderr = diff.std(ddof=1) / math.sqrt(diff.size)
    assert abs(diff.mean()) < 3.5 * stderr + 1e-3, (diff.mean(), stderr)
    # ... and it is a different, noisier quantity per draw, not the same number.
    assert diff.std() > 0.1


# ----------------------------------------------------------------- the IWAE training objective
def iwae_loss(vae, psi, x, k, seed):
    """The training loss of `vae`'s networks under objective="iwae" with k samples:
    -mean over x of the importance-weighted bound, as `evaluate` reports it."""
    iw = kv.VAE(vae.encoder, vae.decoder, vae.latent_dim, likelihood="gaussian",
                posterior=vae.posterior, objective="iwae", num_samples=k, seed=seed)
    iw.decoder_log_var.assign(np.log(psi))
    iw.compile()
    return iw.evaluate(x, batch_size=len(x), verbose=0, return_dict=True)["loss"]


def test_iwae_objective_is_exact_with_the_exact_posterior():
    # Every importance weight is p(x): the bound is ln p(x) for any k, up to float32 rounding.
    vae, w, b, psi = linear_gaussian("full", exact_posterior=True)
    x = linear_gaussian_data(w, b, psi, 64)
    exact = exact_log_px(x, w, b, psi).mean()
    for k in (1, 5):
        assert iwae_loss(vae, psi, x, k, seed=0) == pytest.approx(-exact, abs=2e-3)


def test_iwae_objective_tightens_from_the_elbo_towards_the_exact_likelihood():
    vae, w, b, psi = linear_gaussian("diagonal", var_scale=0.5)
    x = linear_gaussian_data(w, b, psi, 400)
    exact = exact_log_px(x, w, b, psi).mean()
    elbo = evaluation.elbo(vae, x, num_samples=2000, seed=0).elbo.mean()
    assert exact - elbo > 0.1  # the mismatched posterior leaves a gap to close
    losses = {k: np.array([iwae_loss(vae, psi, x, k, seed=s) for s in range(seeds)])
              for k, seeds in ((1, 8), (10, 2), (500, 2))}
    # k = 1 is the ELBO (with a Monte Carlo KL) in expectation: 8 x 400 single draws, whose
    # spread per example is measured from two independent k = 1 estimates.
    draw_a, draw_b = (evaluation.log_likelihood(vae, x, num_samples=1, seed=s) for s in (10, 11))
    per_draw = np.std(draw_a - draw_b) / math.sqrt(2)
    assert -losses[1].mean() == pytest.approx(elbo, abs=4 * per_draw / math.sqrt(8 * len(x)))
    # It rises with k, stays below ln p(x), and at k = 500 sits within 0.02 nats of it.
    means = [-losses[k].mean() for k in (1, 10, 500)]
    assert means[0] < means[1] < means[2] < exact + 1e-3, (means, exact)
    assert exact - means[2] < 0.02


def objective_gradients(vae, psi, x, objective, k, seed=None, beta=1.0, draws=1):
    """Per draw of the noise, the gradient of the training loss under `objective` with k
    samples, flattened: (encoder's weights (draws, P), decoder's weights (draws, Q))."""
    import tensorflow as tf

    model = kv.VAE(vae.encoder, vae.decoder, vae.latent_dim, likelihood="gaussian",
                   posterior=vae.posterior, objective=objective, num_samples=k, seed=seed,
                   beta=beta)
    model.decoder_log_var.assign(np.log(psi))
    encoder, decoder = model.encoder.trainable_weights, model.decoder.trainable_weights
    flat = lambda grads: np.concatenate([np.ravel(g) for g in grads])  # noqa: E731
    enc, dec = [], []
    for _ in range(draws):  # each call draws new noise from the model's seed generator
        with tf.GradientTape() as tape:
            model(x, training=True)
            loss = tf.add_n(model.losses)
        grads = tape.gradient(loss, encoder + decoder)
        enc.append(flat(grads[:len(encoder)]))
        dec.append(flat(grads[len(encoder):]))
    return np.array(enc), np.array(dec)


def test_dreg_is_the_iwae_bound_with_no_encoder_noise_at_the_exact_posterior():
    # Same loss values as "iwae"; with the exact posterior every ln w_i is ln p(x) whatever z,
    # so the doubly reparameterized encoder gradient is exactly zero (the plain one is not:
    # its score-function term is only zero in expectation); the decoder's gradient is the
    # same sum_i v_i d ln p(x|z_i) under both, for the same draws.
    vae, w, b, psi = linear_gaussian("full", exact_posterior=True)
    x = linear_gaussian_data(w, b, psi, 64)
    for k in (1, 5):
        dreg = kv.VAE(vae.encoder, vae.decoder, K, likelihood="gaussian", posterior="full",
                      objective="iwae_dreg", num_samples=k, seed=0)
        dreg.decoder_log_var.assign(np.log(psi))
        dreg.compile()
        loss = dreg.evaluate(x, batch_size=len(x), verbose=0, return_dict=True)["loss"]
        assert loss == pytest.approx(iwae_loss(vae, psi, x, k, seed=0), abs=1e-5)
        enc_dreg, dec_dreg = objective_gradients(vae, psi, x, "iwae_dreg", k, seed=3)
        enc_iwae, dec_iwae = objective_gradients(vae, psi, x, "iwae", k, seed=3)
        assert np.abs(enc_dreg).max() < 1e-4 < 0.01 < np.abs(enc_iwae).max()
        np.testing.assert_allclose(dec_dreg, dec_iwae, rtol=1e-4, atol=1e-5)


# beta = 0.5 checks the same identity with the KL weight inside the bound (slow: 35 s)
@pytest.mark.parametrize("beta", [1.0, pytest.param(0.5, marks=pytest.mark.slow)])
def test_dreg_encoder_gradient_is_unbiased(beta):
    # A posterior off in mean and variance: both estimators' encoder gradients must have the
    # same expectation (the bound's gradient; for beta != 1 with the coefficients derived in
    # VAE._dreg_surrogate), 300 draws each; per draw, the decoder's gradients agree exactly.
    vae, w, b, psi = linear_gaussian("diagonal", var_scale=0.5)
    layer = vae.encoder.get_layer("z_mean")
    kernel, bias = layer.get_weights()
    layer.set_weights([1.5 * kernel, bias + 0.5])
    x = linear_gaussian_data(w, b, psi, 16)
    draws, k = 300, 10
    enc_dreg, dec_dreg = objective_gradients(vae, psi, x, "iwae_dreg", k, 7, beta, draws)
    enc_iwae, dec_iwae = objective_gradients(vae, psi, x, "iwae", k, 7, beta, draws)
    np.testing.assert_allclose(dec_dreg, dec_iwae, rtol=1e-4, atol=1e-5)
    stderr = np.maximum(np.sqrt((enc_dreg.var(0) + enc_iwae.var(0)) / draws), 1e-12)
    assert (np.abs(enc_iwae.mean(0)) / stderr).max() > 20  # a clear gradient to agree on
    z_scores = np.abs(enc_dreg.mean(0) - enc_iwae.mean(0)) / stderr
    assert z_scores.max() < 4.5, z_scores


def test_dreg_encoder_gradient_is_quieter_near_the_posterior():
    # The score-function term that DReG removes is what makes the plain encoder gradient
    # noisy when q is close to the posterior (at the exact one, above, it is all the noise).
    # (Far from it, DReG's squared weights can be the noisier: not claimed.)
    vae, w, b, psi = linear_gaussian("diagonal", var_scale=0.5)
    x = linear_gaussian_data(w, b, psi, 16)
    enc_dreg, _ = objective_gradients(vae, psi, x, "iwae_dreg", 10, 7, draws=200)
    enc_iwae, _ = objective_gradients(vae, psi, x, "iwae", 10, 7, draws=200)
    assert enc_dreg.var(0).sum() < 0.4 * enc_iwae.var(0).sum()


def test_unknown_objective_is_refused():
    with pytest.raises(ValueError, match="objective 'vi'.*'iwae'"):
        kv.VAE.kingma_welling(8, 2, objective="vi")


def test_elbo_terms_match_closed_forms_on_linear_gaussian():
    vae, w, b, psi = linear_gaussian("diagonal", var_scale=0.7, seed=4)
    x = linear_gaussian_data(w, b, psi, 40, seed=5)
    z_mean, z_log_var = vae.encode(x)
    var = np.exp(z_log_var.astype(np.float64))
    kl = 0.5 * np.sum(var + z_mean ** 2 - 1.0 - np.log(var), axis=1)
    # E_q ln N(x | W^T z + b, Psi) = ln N(x | W^T m + b, Psi) - 1/2 tr(Psi^-1 W^T S W).
    mean = z_mean @ w + b
    rec = -(stats.norm.logpdf(x, mean, np.sqrt(psi)).sum(1)
            - 0.5 * np.einsum("nk,kd->n", var, w ** 2 / psi))
    parts = evaluation.elbo(vae, x, num_samples=4000, seed=1)
    np.testing.assert_allclose(parts.kl, kl, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(parts.reconstruction, rec, atol=0.05)
    assert parts.reconstruction.dtype == np.float64 and parts.elbo.shape == (40,)


def test_full_posterior_bernoulli_and_conv_shapes_run_through_the_same_math():
    # Full posterior on image-shaped data: k=1 estimate vs ELBO in expectation again.
    keras.utils.set_random_seed(1)
    vae = kv.VAE.conv((8, 8, 1), latent_dim=3, filters=(4,), dense_units=16, posterior="full")
    rng = np.random.default_rng(0)
    x = (rng.uniform(size=(256, 8, 8, 1)) < 0.3).astype("float32")
    k1 = evaluation.log_likelihood(vae, x, num_samples=1, seed=0)
    ref = evaluation.elbo(vae, x, num_samples=200, seed=1).elbo
    diff = k1 - ref
    assert abs(diff.mean()) < 3.5 * diff.std(ddof=1) / math.sqrt(diff.size)
    big = evaluation.log_likelihood(vae, x[:32], num_samples=500, seed=0)
    assert big.shape == (32,) and np.all(big > ref[:32] - 0.5)


# ----------------------------------------------------------------------------- mechanics
def test_seed_chunking_and_batching():
    vae, w, b, psi = linear_gaussian("diagonal", var_scale=0.5)
    x = linear_gaussian_data(w, b, psi, 37)
    kw = dict(num_samples=300, batch_size=8, chunk_size=64)
    a = evaluation.log_likelihood(vae, x, seed=5, **kw)
    np.testing.assert_array_equal(a, evaluation.log_likelihood(vae, x, seed=5, **kw))
    assert not np.array_equal(a, evaluation.log_likelihood(vae, x, seed=6, **kw))
    # Chunks of 64 (the last one partly masked) combine to the same estimator as one chunk:
    # both average to the same value up to Monte Carlo error.
    one = evaluation.log_likelihood(vae, x, num_samples=300, batch_size=37, seed=5)
    assert abs(a.mean() - one.mean()) < 0.05
    # With the exact posterior every log-weight is ln p(x), so the streamed logsumexp is exact
    # only if every chunk counts exactly its valid samples (300 = 4 x 64 + 44, masked tail),
    # also when a tiny max_elements forces one example and 40 samples per call.
    vae, w, b, psi = linear_gaussian("full")
    exact = exact_log_px(x, w, b, psi)
    np.testing.assert_allclose(evaluation.log_likelihood(vae, x, seed=1, **kw), exact, atol=2e-3)
    tiny = evaluation.log_likelihood(vae, x[:5], num_samples=300, max_elements=40 * D, seed=1)
    np.testing.assert_allclose(tiny, exact[:5], atol=2e-3)


def test_bits_per_dim_and_report():
    np.testing.assert_allclose(evaluation.bits_per_dim(-784 * math.log(2.0), 784), 1.0)
    vae, w, b, psi = linear_gaussian("full")
    x = linear_gaussian_data(w, b, psi, 30)
    report = evaluation.likelihood_report(vae, x, num_samples=5, seed=0)
    exact = exact_log_px(x, w, b, psi)
    assert report["n"] == 30 and report["num_samples"] == 5
    assert report["nll"] == pytest.approx(-exact.mean(), abs=2e-3)
    assert report["bits_per_dim"] == pytest.approx(-exact.mean() / (D * math.log(2)), abs=1e-3)
    assert report["neg_elbo"] == pytest.approx(report["reconstruction"] + report["kl"])


def test_bad_input_is_rejected_with_a_clear_message():
    vae, x = bernoulli_1d()
    with pytest.raises(ValueError, match="num_samples"):
        evaluation.log_likelihood(vae, x, num_samples=0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        evaluation.elbo(vae, x * 3)
    with pytest.raises(ValueError, match="shape"):
        evaluation.log_likelihood(vae, x[:, :5], num_samples=2)
    with pytest.raises(ValueError, match="method"):
        evaluation.anomaly_score(vae, x, method="bogus")
    with pytest.raises(ValueError, match="fit"):
        evaluation.AnomalyDetector(vae).predict(x)


# ----------------------------------------------------------------------------- anomalies
def test_anomaly_scores_are_negative_elbo_and_negative_log_likelihood():
    vae, x = bernoulli_1d()
    np.testing.assert_allclose(vae.anomaly_score(x, method="elbo", num_samples=3, seed=4),
                               -evaluation.elbo(vae, x, num_samples=3, seed=4).elbo)
    iwae = vae.anomaly_score(x, method="iwae", num_samples=2000, seed=0)
    np.testing.assert_allclose(iwae, -quadrature_log_px(vae, x), atol=0.08)


def test_threshold_hits_the_false_positive_rate():
    rng = np.random.default_rng(0)
    val = rng.normal(size=20000)
    t = evaluation.fit_threshold(val, fpr=0.05)
    assert np.mean(val > t) <= 0.05
    assert t == pytest.approx(stats.norm.ppf(0.95), abs=0.03)
    test = rng.normal(size=20000)  # fresh normal data: fpr up to sampling error
    assert abs(np.mean(test > t) - 0.05) < 4 * math.sqrt(0.05 * 0.95 / 20000)
    assert evaluation.fit_threshold([1.0, 2.0, 3.0], fpr=0.0) == 3.0
    with pytest.raises(ValueError, match="fpr"):
        evaluation.fit_threshold(val, fpr=1.5)


def test_detection_metrics_match_the_binormal_closed_form():
    # Normal scores N(0, 1), anomalies N(d, 1): AUROC = P(anomaly > normal) = Phi(d / sqrt 2).
    rng = np.random.default_rng(1)
    d = 1.3
    normal, anomal = rng.normal(size=20000), rng.normal(d, 1.0, size=20000)
    t = stats.norm.ppf(0.9)
    m = evaluation.detection_metrics(normal, anomal, threshold=t)
    assert m["auroc"] == pytest.approx(stats.norm.cdf(d / math.sqrt(2)), abs=0.01)
    assert m["fpr"] == pytest.approx(0.1, abs=0.01)
    assert m["tpr"] == pytest.approx(stats.norm.sf(t - d), abs=0.01)
    assert m["roc_fpr"][0] == 0.0 and m["roc_tpr"][-1] == 1.0


def test_detector_flags_data_the_model_finds_unlikely():
    # Ground truth by construction: the linear-Gaussian model is exact for its own data, and
    # points shifted far off its support are anomalies.
    vae, w, b, psi = linear_gaussian("full")
    normal = linear_gaussian_data(w, b, psi, 400, seed=2)
    valid = linear_gaussian_data(w, b, psi, 400, seed=3)
    shifted = linear_gaussian_data(w, b, psi, 400, seed=4) + 2.0 * np.sqrt(psi)
    det = evaluation.AnomalyDetector(vae, method="iwae", fpr=0.1, num_samples=4).fit(valid)
    report = det.evaluate(normal, shifted)
    exact = evaluation.detection_metrics(-exact_log_px(normal, w, b, psi),
                                         -exact_log_px(shifted, w, b, psi))
    assert report["auroc"] == pytest.approx(exact["auroc"], abs=1e-3)
    assert report["auroc"] > 0.9
    assert abs(report["fpr"] - 0.1) < 0.05
    assert det.predict(shifted).mean() == pytest.approx(report["tpr"])


@pytest.mark.large
def test_jax_backend_gives_the_exact_value_too():
    # keras.ops only, compiled with jax.jit there: the same ground truth must hold.
    import subprocess
    import sys

    pytest.importorskip("jax")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = (
        "import sys; sys.path.insert(0, 'tests')\n"
        "import keras, numpy as np\n"
        "import test_evaluation as t\n"
        "assert keras.backend.backend() == 'jax'\n"
        "t.test_exact_posterior_gives_exact_log_likelihood_for_every_k()\n"
        "t.test_iwae_objective_is_exact_with_the_exact_posterior()\n"
        "t.test_seed_chunking_and_batching()\n"
        "print('ok')\n")
    env = dict(os.environ, KERAS_BACKEND="jax", PYTHONPATH=repo, TF_CPP_MIN_LOG_LEVEL="3",
               JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", code], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]
