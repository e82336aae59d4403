"""The two-stochastic-layer VAE against ground truth: a linear-Gaussian hierarchy whose marginal
p(x), posterior p(z1, z2|x) and ELBO are known in closed form, realized exactly by linear
networks."""

import math

import keras
import numpy as np
import pytest
from scipy.stats import multivariate_normal

import keras_vae as kv
from keras_vae import networks
from keras_vae.hierarchical import latent_networks


# ----------------------------------------------------------------------------- the linear model
class LinearGaussian:
    """z2 ~ N(0, I), z1 = A z2 + b + N(0, diag s1), x = C z1 + d + N(0, sx I)."""

    def __init__(self, A, b, s1, C, d, sx):
        self.A, self.b, self.s1, self.C, self.d, self.sx = A, b, s1, C, d, sx
        self.k1, self.k2 = A.shape
        self.dim = C.shape[0]
        self.cov_z1 = A @ A.T + np.diag(s1)
        # p(z1|x) = N(M x + m, cov1)
        precision = np.linalg.inv(self.cov_z1) + C.T @ C / sx
        self.cov1 = np.linalg.inv(precision)
        self.M = self.cov1 @ C.T / sx
        self.m = self.cov1 @ (np.linalg.solve(self.cov_z1, b) - C.T @ d / sx)
        # p(z2|z1, x) = p(z2|z1) = N(N z1 + n, cov2)
        self.cov2 = np.linalg.inv(np.eye(self.k2) + A.T @ np.diag(1 / s1) @ A)
        self.N = self.cov2 @ A.T @ np.diag(1 / s1)
        self.n = -self.N @ b

    def log_px(self, x):
        cov = self.C @ self.cov_z1 @ self.C.T + self.sx * np.eye(self.dim)
        return multivariate_normal(self.C @ self.b + self.d, cov).logpdf(x)

    def sample_x(self, n, rng):
        z2 = rng.standard_normal((n, self.k2))
        z1 = z2 @ self.A.T + self.b + rng.standard_normal((n, self.k1)) * np.sqrt(self.s1)
        return (z1 @ self.C.T + self.d
                + rng.standard_normal((n, self.dim)) * math.sqrt(self.sx)).astype("float32")

    @staticmethod
    def _joint(mean1, cov1, N, n, cov2):
        """Mean and covariance of (z1, z2) with z1 ~ N(mean1, cov1), z2|z1 ~ N(N z1 + n, cov2)."""
        mean = np.concatenate([mean1, N @ mean1 + n])
        cov = np.block([[cov1, cov1 @ N.T], [N @ cov1, N @ cov1 @ N.T + cov2]])
        return mean, cov

    def elbo(self, x, q):
        """ln p(x) - KL(q(z1, z2|x) || p(z1, z2|x)) for the linear q (M, m, v1, N, n, v2)."""
        out = []
        for xi in x:
            mq, cq = self._joint(q["M"] @ xi + q["m"], np.diag(q["v1"]), q["N"], q["n"],
                                 np.diag(q["v2"]))
            mp, cp = self._joint(self.M @ xi + self.m, self.cov1, self.N, self.n, self.cov2)
            inv = np.linalg.inv(cp)
            kl = 0.5 * (np.trace(inv @ cq) + (mp - mq) @ inv @ (mp - mq) - len(mq)
                        + np.linalg.slogdet(cp)[1] - np.linalg.slogdet(cq)[1])
            out.append(kl)
        return self.log_px(x) - np.array(out)

    def exact_q(self):
        return {"M": self.M, "m": self.m, "v1": np.diag(self.cov1).copy(), "N": self.N,
                "n": self.n, "v2": np.diag(self.cov2).copy()}

    def vae(self, q, **kwargs):
        """A HierarchicalVAE whose linear networks realize this model and the posterior q."""
        encoder = networks.mlp_encoder((self.dim,), self.k1, ())
        decoder = networks.mlp_decoder(self.k1, (self.dim,), ())
        z2_encoder, z1_prior = latent_networks((self.k1, self.k2), ())

        def gaussian_head(net, W, w, var):
            net.get_layer("z_mean").set_weights([W.T, w])
            net.get_layer("z_log_var").set_weights([np.zeros((W.shape[1], W.shape[0])),
                                                    np.log(var)])

        gaussian_head(encoder, q["M"], q["m"], q["v1"])
        gaussian_head(z2_encoder, q["N"], q["n"], q["v2"])
        gaussian_head(z1_prior, self.A, self.b, self.s1)
        decoder.get_layer("x_params").set_weights([self.C.T, self.d])
        return kv.HierarchicalVAE(encoder, decoder, z2_encoder, z1_prior,
                                  likelihood="gaussian", decoder_variance=self.sx, **kwargs)


def general_model(seed=0):
    """K1 = 3, K2 = 2, D = 4 with dense A and C: p(z1|x) and p(z2|z1) have correlated
    covariances, which a diagonal q cannot match."""
    rng = np.random.default_rng(seed)
    return LinearGaussian(A=0.5 * rng.normal(size=(3, 2)), b=rng.normal(size=3),
                          s1=rng.uniform(0.3, 1.0, 3), C=0.5 * rng.normal(size=(4, 3)),
                          d=rng.normal(size=4), sx=0.5)


def diagonal_model(seed=1):
    """K1 = K2 = 2, D = 4, A diagonal and C with orthogonal columns: both exact posteriors are
    diagonal Gaussians, so the networks can realize them."""
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.normal(size=(4, 2)))
    return LinearGaussian(A=np.diag([1.5, -0.7]), b=np.array([0.3, -0.2]),
                          s1=np.array([0.4, 0.8]), C=Q * np.array([2.0, 1.2]),
                          d=rng.normal(size=4), sx=0.3)


def approximate_q(model):
    """The exact posterior's means with its marginal variances widened 1.5 times."""
    q = model.exact_q()
    q["v1"], q["v2"] = 1.5 * q["v1"], 1.5 * q["v2"]
    return q


@pytest.fixture(scope="module")
def general():
    model = general_model()
    x = model.sample_x(40, np.random.default_rng(5))
    return model, x, model.vae(approximate_q(model))


# ----------------------------------------------------------------------------- ground truth
def test_exact_posterior_gives_log_px_for_every_k():
    """With q = p(z1, z2|x) every importance weight is p(x): the estimate is ln p(x) for k = 1
    as for k = 100, and so is the IWAE training loss and the ELBO."""
    model = diagonal_model()
    x = model.sample_x(16, np.random.default_rng(2))
    exact = model.log_px(x)
    vae = model.vae(model.exact_q(), objective="iwae", num_samples=3)
    for k in (1, 100):
        estimate = kv.evaluation.log_likelihood(vae, x, num_samples=k, seed=k, chunk_size=1)
        np.testing.assert_allclose(estimate, exact, atol=2e-4)
    log_w, _, _ = vae.importance_log_weights(x, 50, seed=3)
    np.testing.assert_allclose(np.asarray(log_w), np.broadcast_to(exact, (50, 16)), atol=2e-4)
    vae(x)  # objective "iwae": one add_loss term, -mean of the bound
    assert float(sum(vae.losses)) == pytest.approx(-exact.mean(), abs=2e-4)
    np.testing.assert_allclose(kv.evaluation.elbo(vae, x, seed=0).elbo, exact, atol=2e-4)


def test_importance_weighted_estimate_converges_to_log_px(general):
    """With a diagonal q that misses the posterior's correlations (ELBO gap ~0.5 nats), the
    estimate's error (ln p(x) - estimate, averaged over 40 examples) shrinks with k: within
    0.5 nats of that gap at k = 1 (one noisy draw per example), below 0.1 nats at k = 20 and
    0.01 at k = 2000 (numbers of the same model in NumPy, 8 seeds: k = 20 within +-0.061,
    k = 2000 within +-0.0042)."""
    model, x, vae = general
    exact = model.log_px(x)
    errors = {k: float(np.mean(exact - kv.evaluation.log_likelihood(
        vae, x, num_samples=k, seed=11, chunk_size=min(k, 20)))) for k in (1, 20, 2000)}
    analytic_gap = float(np.mean(exact - model.elbo(x, approximate_q(model))))
    assert analytic_gap > 0.4  # the test's model has a gap to close
    assert abs(errors[1] - analytic_gap) < 0.5
    assert abs(errors[20]) < 0.1
    assert abs(errors[2000]) < 0.01


def test_elbo_matches_closed_form_and_orders_below_iwae(general):
    """The ELBO (evaluation's and the training loss's) agrees with ln p(x) - KL(q || p(z|x))
    in closed form, and ELBO < IWAE(k=5) < ln p(x) on average."""
    model, x, vae = general
    analytic = model.elbo(x, approximate_q(model))
    # 4000 draws, log-weights' spread ~1.4 nats: standard error ~0.022 per example, ~0.0035
    # for the mean of 40
    parts = kv.evaluation.elbo(vae, x, num_samples=4000, seed=1)
    np.testing.assert_allclose(parts.elbo, analytic, atol=0.1)
    assert parts.elbo.mean() == pytest.approx(analytic.mean(), abs=0.015)
    np.testing.assert_allclose(parts.elbo, -parts.reconstruction - parts.kl, atol=1e-9)
    # IWAE with k = 5 on 50 copies of each example (NumPy, 4 seeds: ln p(x) - IWAE =
    # 0.052-0.065, standard error 0.008; ln p(x) - ELBO = 0.52)
    copies = np.repeat(x, 50, axis=0)
    iwae = kv.evaluation.log_likelihood(vae, copies, num_samples=5, seed=2).mean()
    assert analytic.mean() + 0.3 < iwae < model.log_px(copies).mean() - 0.02

    # The training path: objective "elbo" with L draws adds mean(reconstruction) and
    # beta * mean(kl); its -ELBO matches the closed form.
    train = model.vae(approximate_q(model), num_samples=4000, beta=0.5, seed=3)
    out = train(x)
    neg_elbo = np.asarray(out["reconstruction"]) + np.asarray(out["kl"])
    np.testing.assert_allclose(-neg_elbo, analytic, atol=0.1)
    assert -neg_elbo.mean() == pytest.approx(analytic.mean(), abs=0.015)
    losses = [float(v) for v in train.losses]
    assert losses[0] == pytest.approx(float(np.mean(out["reconstruction"])), rel=1e-5)
    assert losses[1] == pytest.approx(0.5 * float(np.mean(out["kl"])), rel=1e-5)


def test_sample_draws_from_the_marginal():
    """sample(n) draws z2 ~ N(0, I), z1 ~ p(z1|z2) and returns E[x|z1] = C z1 + d, whose
    covariance is C (A A^T + S1) C^T."""
    model = general_model()
    vae = model.vae(approximate_q(model))
    draws = vae.sample(20000, seed=4)
    assert draws.shape == (20000, 4)
    expected = model.C @ model.cov_z1 @ model.C.T
    np.testing.assert_allclose(draws.mean(0), model.C @ model.b + model.d, atol=0.1)
    np.testing.assert_allclose(np.cov(draws.T), expected, atol=0.08 * np.abs(expected).max())


# ----------------------------------------------------------------------------- training
def test_short_fit_on_digits_lowers_the_elbo(binary_digits):
    """Two epochs on the thresholded 8x8 digits lower the test -ELBO of a small two-layer MLP
    by more than 15 nats (measured: 52.8 nats untrained, 25.9 after two epochs)."""
    train, test = binary_digits
    keras.utils.set_random_seed(0)
    vae = kv.HierarchicalVAE.mlp(input_shape=(64,), latent_dims=(8, 4), hidden_units=(64,),
                                 latent_hidden_units=(32,), seed=0)
    vae.compile(optimizer=keras.optimizers.Adam(3e-3), jit_compile=False)  # no XLA build
    before = vae.evaluate(test, batch_size=len(test), verbose=0, return_dict=True)
    history = vae.fit(train, epochs=2, batch_size=50, verbose=0)
    after = vae.evaluate(test, batch_size=len(test), verbose=0, return_dict=True)
    before, after = before["neg_elbo"], after["neg_elbo"]
    assert set(history.history) >= {"loss", "reconstruction", "kl", "neg_elbo"}
    assert before - after > 15.0, (before, after)


def test_save_load_round_trip(tmp_path, binary_digits):
    """A `.keras` file brings back the class, the four networks and their weights: the same
    seed gives the same log-weights."""
    vae = kv.HierarchicalVAE.mlp(input_shape=(64,), latent_dims=(6, 3), hidden_units=(16,),
                                 latent_hidden_units=(8,), seed=1, objective="iwae",
                                 num_samples=4)
    x = binary_digits[1][:8]
    path = tmp_path / "hier.keras"
    vae.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is kv.HierarchicalVAE
    assert loaded.latent_dims == (6, 3) and loaded.objective == "iwae"
    a = [np.asarray(t) for t in vae.importance_log_weights(x, 5, seed=7)]
    b = [np.asarray(t) for t in loaded.importance_log_weights(x, 5, seed=7)]
    for left, right in zip(a, b):
        np.testing.assert_array_equal(left, right)


def test_export_refuses_in_one_line(tmp_path, capsys):
    """The export bundle's decoder draws one z ~ N(0, I), which is not this model: kv.export
    and `keras-vae export` refuse, naming why and what to use, and write nothing."""
    from keras_vae import cli

    vae = kv.HierarchicalVAE.mlp(input_shape=(8,), latent_dims=(4, 2), hidden_units=(8,),
                                 latent_hidden_units=(4,))
    with pytest.raises(ValueError, match="HierarchicalVAE cannot be exported.*model.keras"):
        kv.export(vae, tmp_path / "out")
    vae.save(tmp_path / "hier.keras")
    assert cli.main(["export", str(tmp_path / "hier.keras"), "--out",
                     str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("keras-vae export: error: a HierarchicalVAE cannot be exported")
    assert "\n" not in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_conv_builder_shapes():
    vae = kv.HierarchicalVAE.conv(input_shape=(8, 8, 1), latent_dims=(4, 2), filters=(4, 8),
                                  dense_units=16, latent_hidden_units=(8,), seed=0)
    x = (np.random.default_rng(0).random((3, 8, 8, 1)) > 0.5).astype("float32")
    log_w, log_lik, kl = (np.asarray(t) for t in vae.importance_log_weights(x, 2, seed=0))
    assert log_w.shape == log_lik.shape == (2, 3) and kl.shape == (3,)
    np.testing.assert_allclose(kl, (log_lik - log_w).mean(0), rtol=1e-5, atol=1e-5)
    assert vae.sample(2, seed=0).shape == (2, 8, 8, 1)


# ----------------------------------------------------------------------------- bad input
def test_bad_arguments_name_the_problem():
    with pytest.raises(ValueError, match="objective 'elbo' or 'iwae'"):
        kv.HierarchicalVAE.mlp(input_shape=(8,), latent_dims=(4, 2), objective="iwae_dreg")
    with pytest.raises(ValueError, match="latent_dims must be two integers"):
        kv.HierarchicalVAE.mlp(input_shape=(8,), latent_dims=4)
    with pytest.raises(ValueError, match="posterior='diagonal' only"):
        kv.HierarchicalVAE.mlp(input_shape=(8,), latent_dims=(4, 2), posterior="full")
    encoder = networks.mlp_encoder((8,), 4, ())
    decoder = networks.mlp_decoder(4, (8,), ())
    z2_encoder, _ = latent_networks((4, 2), ())
    _, wrong_prior = latent_networks((3, 2), ())
    with pytest.raises(ValueError, match="z1_prior must map"):
        kv.HierarchicalVAE(encoder, decoder, z2_encoder, wrong_prior)


# ----------------------------------------------------------------------------- recipes, CLI
def test_recipe_with_latent_dims_builds_a_two_layer_model():
    """model_options {"latent_dims": [K1, K2]} (what `keras-vae train --latent-dims K1,K2`
    writes) makes the one model builder return a HierarchicalVAE, so runs reload as one."""
    from keras_vae.training import build_model, make_config

    config = make_config("digits", model="mlp", latent_dim=4, hidden_units=[16],
                         model_options={"latent_dims": [4, 2]}, objective="iwae",
                         num_samples=3)
    vae = build_model(config, compile=False)
    assert type(vae) is kv.HierarchicalVAE
    assert vae.latent_dims == (4, 2) and vae.input_shape_ == (64,)
    assert vae.objective == "iwae" and vae.num_samples == 3
    assert [layer.units for layer in vae.encoder.layers if hasattr(layer, "units")][0] == 16
    with pytest.raises(ValueError, match="first of latent_dims"):
        build_model({**config, "latent_dim": 3}, compile=False)


@pytest.mark.parametrize("args, message", [
    (["--model", "kingma-welling", "--latent-dims", "4,2"], "from --model mlp or conv"),
    (["--model", "mlp", "--latent-dims", "4"], "two positive integers K1,K2"),
    (["--model", "mlp", "--latent-dims", "4,x"], "two positive integers K1,K2"),
    (["--model", "mlp", "--latent-dim", "3", "--latent-dims", "4,2"], "disagrees"),
])
def test_cli_latent_dims_errors(tmp_path, capsys, args, message):
    from keras_vae import cli

    run_dir = tmp_path / "run"
    assert cli.main(["train", *args, "--epochs", "1", "--run-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("keras-vae train: error: --latent-dim") and message in err
    assert not run_dir.exists()
