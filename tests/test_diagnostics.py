"""Posterior-collapse diagnostics (keras_vae.diagnostics, re-exported by keras_vae.evaluation)
against ground truth: hand-built linear encoders whose posterior means and variances are known,
the closed-form KL in NumPy, and the mutual information of a linear-Gaussian encoder,
I(x; z) = 1/2 ln(1 + a^2 / s^2) for x ~ N(0, 1) and q(z|x) = N(a x, s^2)."""

import math

import keras
import numpy as np
import pytest

import keras_vae as kv
from keras_vae import diagnostics, evaluation


def linear_vae(mean_kernel, mean_bias, log_var_bias, log_var_kernel=None):
    """A Gaussian-likelihood VAE whose encoder is linear: mu(x) = x W + b and
    ln sigma^2(x) = x V + c (V = 0 unless given), weights set by hand."""
    mean_kernel = np.asarray(mean_kernel, "float32")
    d, k = mean_kernel.shape
    x = keras.Input((d,))
    mean = keras.layers.Dense(k, name="z_mean")(x)
    log_var = keras.layers.Dense(k, name="z_log_var")(x)
    encoder = keras.Model(x, [mean, log_var])
    encoder.get_layer("z_mean").set_weights([mean_kernel, np.asarray(mean_bias, "float32")])
    encoder.get_layer("z_log_var").set_weights([
        np.zeros((d, k), "float32") if log_var_kernel is None
        else np.asarray(log_var_kernel, "float32"), np.asarray(log_var_bias, "float32")])
    z = keras.Input((k,))
    decoder = keras.Model(z, keras.layers.Dense(d)(z))
    return kv.VAE(encoder, decoder, likelihood="gaussian", seed=0)


def full_linear_vae(mean_kernel, tril_bias):
    """A full-posterior VAE: mu(x) = x W, and a constant raw factor (kernel 0) -> the
    ScaleTril layer's L."""
    mean_kernel = np.asarray(mean_kernel, "float32")
    d, k = mean_kernel.shape
    x = keras.Input((d,))
    z_mean, z_tril = kv.networks.posterior_head(x, k, "full")
    encoder = keras.Model(x, [z_mean, z_tril])
    encoder.get_layer("z_mean").set_weights([mean_kernel, np.zeros(k, "float32")])
    encoder.get_layer("z_scale_tril_raw").set_weights([
        np.zeros((d, len(tril_bias)), "float32"), np.asarray(tril_bias, "float32")])
    z = keras.Input((k,))
    decoder = keras.Model(z, keras.layers.Dense(d)(z))
    return kv.VAE(encoder, decoder, likelihood="gaussian", posterior="full", seed=0)


@pytest.fixture(scope="module")
def five_dims():
    """5 latent dims from 3 inputs: dims 0-2 move with x, dims 3-4 have constant means; the
    log-variances depend on x too."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 3)).astype("float32")
    w = np.zeros((3, 5))
    w[0, 0], w[1, 1], w[2, 2], w[0, 2] = 1.0, 0.5, 2.0, -0.3
    b = np.array([0.1, -0.2, 0.0, 0.7, -1.5])
    v = 0.2 * rng.standard_normal((3, 5))
    c = np.array([-1.0, 0.0, 0.5, 0.0, -2.0])
    return linear_vae(w, b, c, v), x, (w, b, v, c)


def test_kl_per_dimension_is_the_closed_form_and_sums_to_the_models_kl(five_dims):
    vae, x, (w, b, v, c) = five_dims
    x64 = x.astype("float64")
    mu, log_var = x64 @ w + b, x64 @ v + c
    expected = np.mean(0.5 * (mu ** 2 + np.exp(log_var) - 1.0 - log_var), axis=0)
    got = evaluation.kl_per_dimension(vae, x)
    assert got.shape == (5,)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    # the K values add up to the model's own mean KL term (closed form, eq [27])
    model_kl = evaluation.elbo(vae, x, seed=0).kl.mean()
    assert got.sum() == pytest.approx(model_kl, rel=1e-5)


def test_active_units_counts_the_dims_whose_mean_moves(five_dims):
    vae, x, (w, b, _, _) = five_dims
    count, variances = evaluation.active_units(vae, x)
    assert count == 3
    np.testing.assert_allclose(variances, np.var(x.astype("float64") @ w + b, axis=0, ddof=1),
                               rtol=1e-5, atol=1e-12)
    assert np.all(variances[3:] < 1e-12)  # constant means: no variance over x


def test_active_units_threshold_edge():
    """Unit variances just above and just below 0.01: only the ones strictly above count."""
    x = np.array([[-1.0], [1.0]] * 50, "float32")
    unit_var = np.var(x[:, 0].astype("float64"), ddof=1)  # 100/99
    scales = np.sqrt(np.array([0.0102, 0.0098, 0.011, 0.009, 0.0]) / unit_var)
    vae = linear_vae(scales[None, :], np.zeros(5), np.zeros(5))
    count, variances = evaluation.active_units(vae, x)
    np.testing.assert_allclose(variances, [0.0102, 0.0098, 0.011, 0.009, 0.0], rtol=1e-5,
                               atol=1e-12)
    assert count == 2
    assert evaluation.active_units(vae, x, threshold=0.0099)[0] == 2  # 0.0098 is below
    assert evaluation.active_units(vae, x, threshold=0.0097)[0] == 3
    assert evaluation.active_units(vae, x, threshold=0.0105)[0] == 1
    assert evaluation.active_units(vae, x, threshold=0.0)[0] == 4     # strictly above


def test_mutual_information_is_zero_when_the_encoder_ignores_x():
    x = np.random.default_rng(1).standard_normal((300, 2)).astype("float32")
    vae = linear_vae(np.zeros((2, 4)), [0.3, -1.0, 0.0, 2.0], [0.0, -1.0, 1.0, -3.0])
    assert evaluation.mutual_information(vae, x, num_samples=3, seed=0) == pytest.approx(
        0.0, abs=1e-9)


@pytest.mark.parametrize("a, s", [(1.0, 1.0), (2.0, 0.5)])
def test_mutual_information_of_a_linear_gaussian_encoder(a, s):
    """x ~ N(0, 1), q(z|x) = N(a x, s^2): q(z) = N(0, a^2 + s^2) and I = 1/2 ln(1 + a^2/s^2).
    With N = 2000 examples the estimate is within a few Monte Carlo standard errors (about
    0.01 nats here) of it."""
    x = np.random.default_rng(2).standard_normal((2000, 1)).astype("float32")
    vae = linear_vae([[a]], [0.0], [2.0 * math.log(s)])
    truth = 0.5 * math.log(1.0 + a * a / (s * s))
    got = evaluation.mutual_information(vae, x, num_samples=2, seed=0)
    assert got == pytest.approx(truth, abs=0.03)
    # more than one latent dimension: independent copies add up
    vae2 = linear_vae([[a, a]], [0.0, 0.0], [2.0 * math.log(s)] * 2)
    truth2 = 0.5 * math.log(1.0 + 2 * a * a / (s * s))  # z = (a x + e1, a x + e2)
    assert evaluation.mutual_information(vae2, x, num_samples=2, seed=0) == pytest.approx(
        truth2, abs=0.04)


def test_mutual_information_is_at_most_ln_n():
    """An encoder whose posteriors barely overlap saturates at ln N (the estimate's bound)."""
    x = np.random.default_rng(3).standard_normal((50, 1)).astype("float32")
    vae = linear_vae([[1.0]], [0.0], [2.0 * math.log(1e-4)])
    got = evaluation.mutual_information(vae, x, num_samples=4, seed=0)
    assert got <= math.log(50) + 1e-9
    assert got == pytest.approx(math.log(50), abs=1e-3)
    # and it stays below ln N for overlapping posteriors too (every term is)
    vae = linear_vae([[3.0]], [0.0], [0.0])
    assert evaluation.mutual_information(vae, x[:5], num_samples=20, seed=1) <= math.log(5)


def test_full_posterior_uses_the_marginals_and_its_mi_matches_the_closed_form():
    """Full posterior N(a x, L L^T) with a constant factor L: KL per dimension from the
    marginal variances diag(L L^T), their sum at most the full KL (Hadamard), and
    I(x; z) = 1/2 ln(1 + a^T Sigma^-1 a)."""
    a = np.array([1.0, 0.5])
    vae = full_linear_vae(a[None, :], [0.3, 0.8, -0.5])  # raw: L00, L10, L11 (softplus diag)
    x = np.random.default_rng(4).standard_normal((2000, 1)).astype("float32")
    mean, tril = vae.encode(x)
    tril = tril[0].astype("float64")
    assert tril[1, 0] == pytest.approx(0.8) and tril[0, 1] == 0.0
    sigma = tril @ tril.T
    mu = x.astype("float64") @ a[None, :]
    expected = np.mean(0.5 * (mu ** 2 + np.diag(sigma) - 1.0 - np.log(np.diag(sigma))), axis=0)
    got = evaluation.kl_per_dimension(vae, x)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert got.sum() < evaluation.elbo(vae, x, seed=0).kl.mean()  # correlated: strictly below
    truth = 0.5 * math.log(1.0 + a @ np.linalg.solve(sigma, a))
    # the estimate's standard deviation over seeds is ~0.0125 nats here: 4 of them
    assert evaluation.mutual_information(vae, x, num_samples=2, seed=0) == pytest.approx(
        truth, abs=0.05)
    assert evaluation.active_units(vae, x)[0] == 2


def test_collapse_report_holds_the_functions_values(five_dims):
    vae, x, _ = five_dims
    report = evaluation.collapse_report(vae, x, num_samples=2, seed=5)
    assert report["n"] == 400 and report["latent_dim"] == 5 and report["prior"] == "standard"
    np.testing.assert_allclose(report["kl_per_dimension"], evaluation.kl_per_dimension(vae, x))
    assert report["kl_total"] == pytest.approx(sum(report["kl_per_dimension"]))
    count, variances = evaluation.active_units(vae, x)
    assert report["active_units"] == count == 3
    np.testing.assert_allclose(report["unit_variances"], variances)
    assert report["mutual_information"] == evaluation.mutual_information(vae, x, num_samples=2,
                                                                         seed=5)
    assert report["mutual_information_max"] == pytest.approx(math.log(400))
    table = evaluation.format_collapse_report(report).splitlines()
    rows = [line.split() for line in table[2:7]]
    kl = np.array(report["kl_per_dimension"])
    assert [int(r[0]) for r in rows] == list(np.argsort(-kl))  # sorted by KL, largest first
    assert [float(r[1]) for r in rows] == pytest.approx(np.sort(kl)[::-1], abs=1e-4)
    assert [r[3] for r in rows] == ["yes" if variances[int(r[0])] > 0.01 else "no"
                                    for r in rows]
    assert "active units: 3 of 5" in table[-2]


def test_a_learned_prior_skips_the_kl_but_keeps_the_rest(five_dims):
    vae, x, _ = five_dims
    standard = evaluation.collapse_report(vae, x)
    vae.prior = "vamp"
    try:
        with pytest.raises(ValueError, match="prior is 'vamp'"):
            evaluation.kl_per_dimension(vae, x)
        report = evaluation.collapse_report(vae, x)
        assert report["kl_per_dimension"] is None and "'vamp'" in report["kl_note"]
        assert report["active_units"] == standard["active_units"]
        assert report["mutual_information"] == standard["mutual_information"]
        assert "not computed" in evaluation.format_collapse_report(report)
    finally:
        vae.prior = "standard"


def test_bad_arguments_get_one_line_each(five_dims):
    vae, x, _ = five_dims
    with pytest.raises(ValueError, match="threshold must be a number >= 0"):
        evaluation.active_units(vae, x, threshold=-1)
    with pytest.raises(ValueError, match="num_samples must be an integer >= 1"):
        evaluation.mutual_information(vae, x, num_samples=0)
    with pytest.raises(ValueError, match="at least 2 examples"):
        evaluation.active_units(vae, x[:1])
    with pytest.raises(ValueError, match="expects"):
        evaluation.collapse_report(vae, x[:, :2])
    assert diagnostics.collapse_report is evaluation.collapse_report


# ----------------------------------------------------------------------------- command line
@pytest.mark.large  # a whole (tiny) training run, then `evaluate` twice
def test_train_logs_and_evaluate_prints_the_diagnostics(tmp_path, capsys):
    """A tiny `keras-vae train` run writes the per-epoch diagnostics to logs/collapse, and
    `keras-vae evaluate` prints the table (stderr) and saves the numbers under "collapse" in
    evaluation.json and the printed JSON, equal to the Python functions' on the same data."""
    import json

    import tensorflow as tf

    from keras_vae import cli, training

    run_dir = tmp_path / "run"
    assert cli.main(["train", "--dataset", "digits", "--model", "kingma-welling",
                     "--latent-dim", "3", "--hidden-units", "32", "--batch-size", "100",
                     "--epochs", "2", "--seed", "1", "--run-dir", str(run_dir)]) == 0
    capsys.readouterr()
    assert cli.main(["evaluate", str(run_dir), "--diagnostics-examples", "150",
                     "--seed", "4"]) == 0
    out, err = capsys.readouterr()
    printed = json.loads(out)
    assert printed == json.loads((run_dir / "evaluation.json").read_text())
    collapse = printed["collapse"]
    vae = keras.saving.load_model(run_dir / "model.keras")
    config = json.loads((run_dir / "config.json").read_text())
    x, _ = training.load_split(config, "test", limit=150, numpy=True)
    assert collapse["n"] == 150 and collapse["latent_dim"] == 3 and collapse["seed"] == 4
    np.testing.assert_allclose(collapse["kl_per_dimension"], evaluation.kl_per_dimension(vae, x),
                               rtol=1e-6)
    count, variances = evaluation.active_units(vae, x)
    assert collapse["active_units"] == count
    np.testing.assert_allclose(collapse["unit_variances"], variances, rtol=1e-6)
    assert collapse["mutual_information"] == pytest.approx(
        evaluation.mutual_information(vae, x, seed=4), rel=1e-9)
    # the KL per dimension adds up to the evaluation's KL (on these 150 of the 180 examples)
    mean, log_var = vae.encode(x)
    assert sum(collapse["kl_per_dimension"]) == pytest.approx(
        np.mean(0.5 * np.sum(mean ** 2 + np.exp(log_var) - 1.0 - log_var, axis=1)), rel=1e-5)
    assert f"active units: {count} of 3" in err
    assert f"I(x; z): {collapse['mutual_information']:.4f} nats" in err
    # the training run logged the diagnostics of each epoch for TensorBoard
    steps = set()
    for path in (run_dir / "logs" / "collapse").glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            steps.update(event.step for v in event.summary.value
                         if v.tag == "collapse/mutual_information")
    assert steps == {0, 1}
    # 0 skips them; a single example cannot have a variance
    assert cli.main(["evaluate", str(run_dir), "--diagnostics-examples", "0"]) == 0
    assert "collapse" not in json.loads(capsys.readouterr().out)
    assert cli.main(["evaluate", str(run_dir), "--diagnostics-examples", "1"]) == 2
    assert "--diagnostics-examples must be 0 (skip) or >= 2" in capsys.readouterr().err
