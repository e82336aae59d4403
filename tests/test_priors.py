"""Learned priors (VampPrior, mixture of Gaussians) and free bits against ground truth.

- The mixture density against SciPy's Gaussian densities and a NumPy logsumexp; draws from the
  mixture against its mean, variance and component weights, within a few standard errors.
- A VampPrior with one pseudo-input at which the encoder returns N(0, I) is the standard
  prior: the same ln p(z), the same importance weights, a KL estimate whose mean is the closed
  form.
- With a two-component prior on a one-dimensional latent, ln p(x) is an integral computed by
  quadrature; the importance-weighted estimate converges to it.
- Free bits change the training loss's KL term as sum_j max(lambda, mean_batch KL_j) says,
  and leave the reported KL alone.
- Saving and loading keep the prior's weights and density.
"""

import json
import math
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest
from scipy import special, stats

import keras
from keras import ops

from conftest import quadrature_log_px, widen_proposal

import keras_vae as kv
from keras_vae import evaluation, networks, priors


def numpy_mixture_log_density(z, logits, means, log_vars):
    log_w = logits - special.logsumexp(logits)
    comps = np.stack([stats.multivariate_normal(m, np.diag(np.exp(v))).logpdf(z)
                      for m, v in zip(means, log_vars)], axis=-1)
    return special.logsumexp(comps + log_w, axis=-1)


# ----------------------------------------------------------------------------- the mixture
def test_mixture_log_density_matches_scipy():
    rng = np.random.default_rng(0)
    c, k = 4, 3
    logits = rng.normal(size=c)
    means = rng.normal(size=(c, k)) * 2
    log_vars = rng.normal(size=(c, k)) * 0.7
    z = rng.normal(size=(5, 7, k)) * 2.5
    got = ops.convert_to_numpy(priors.mixture_log_density(
        z.astype("float32"), logits.astype("float32"), means.astype("float32"),
        log_vars.astype("float32")))
    want = numpy_mixture_log_density(z, logits, means, log_vars)
    assert got.shape == (5, 7)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    # one component N(0, I) is the standard normal
    one = priors.mixture_log_density(z.astype("float32"), np.zeros(1, "float32"),
                                     np.zeros((1, k), "float32"), np.zeros((1, k), "float32"))
    np.testing.assert_allclose(ops.convert_to_numpy(one),
                               stats.multivariate_normal(np.zeros(k)).logpdf(z), atol=1e-4)


def test_mixture_draws_follow_the_mixture():
    logits = np.log(np.array([0.2, 0.5, 0.3]))
    means = np.array([[-6.0, 0.0], [0.0, 5.0], [6.0, -2.0]])
    log_vars = np.log(np.array([[0.5, 1.0], [1.0, 0.2], [2.0, 0.5]]))
    n = 20000
    z = ops.convert_to_numpy(priors.sample_mixture(
        n, logits.astype("float32"), means.astype("float32"), log_vars.astype("float32"),
        seed=1))
    assert z.shape == (n, 2)
    # The components are far apart: the nearest mean tells a draw's component.
    comp = np.argmin(((z[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
    freq = np.bincount(comp, minlength=3) / n
    weights = np.exp(logits)
    np.testing.assert_array_less(np.abs(freq - weights), 4 * np.sqrt(weights * (1 - weights) / n))
    for c in range(3):
        zc = z[comp == c]
        se = np.sqrt(np.exp(log_vars[c]) / len(zc))
        np.testing.assert_array_less(np.abs(zc.mean(0) - means[c]), 4 * se)
        np.testing.assert_allclose(zc.var(0), np.exp(log_vars[c]), rtol=0.1)


# ----------------------------------------------------------------- VampPrior = standard prior
D, K = 6, 2


def linear_vaes(prior):
    """A standard-prior VAE and one with `prior` sharing its linear encoder (zero biases, so
    x = 0 maps to N(0, I)) and decoder weights."""
    rng = np.random.default_rng(0)
    out = []
    for p in ("standard", prior):
        encoder = networks.mlp_encoder((D,), K, hidden_units=())
        decoder = networks.mlp_decoder(K, (D,), hidden_units=())
        extra = {} if p == "standard" else {"prior": p, "prior_components": 1}
        out.append(kv.VAE(encoder, decoder, K, likelihood="gaussian", seed=3, **extra))
    weights = {name: [rng.normal(size=w.shape).astype("float32") * 0.5 if w.ndim == 2
                      else np.zeros(w.shape, "float32") for w in
                      out[0].encoder.get_layer(name).get_weights()]
               for name in ("z_mean", "z_log_var")}
    for vae in out:
        for name, value in weights.items():
            vae.encoder.get_layer(name).set_weights(value)
        vae.decoder.set_weights(out[0].decoder.get_weights())
    out[1].prior_layer.pseudo_inputs.assign(np.zeros((1, D), "float32"))
    return out


def test_vamp_with_one_pseudo_input_at_the_standard_normal_is_the_standard_prior():
    standard, vamp = linear_vaes("vamp")
    logits, means, log_vars = (ops.convert_to_numpy(a) for a in vamp.prior_parameters())
    np.testing.assert_allclose(means, 0.0, atol=1e-7)
    np.testing.assert_allclose(log_vars, 0.0, atol=1e-7)
    z = np.random.default_rng(1).normal(size=(4, 9, K)).astype("float32") * 2
    np.testing.assert_allclose(ops.convert_to_numpy(vamp.prior_log_density(z)),
                               stats.multivariate_normal(np.zeros(K)).logpdf(z), atol=1e-4)
    x = np.random.default_rng(2).normal(size=(64, D)).astype("float32")
    # Same seed, same draws: the importance weights, hence ln p(x) estimates, agree.
    np.testing.assert_allclose(evaluation.log_likelihood(vamp, x, num_samples=5, seed=4),
                               evaluation.log_likelihood(standard, x, num_samples=5, seed=4),
                               atol=1e-4)
    # The KL estimate is ln q(z|x) - ln N(z | 0, I) per draw; its mean is the closed form.
    z_mean, z_log_var = standard.encode(x)
    closed = ops.convert_to_numpy(standard.kl(z_mean, z_log_var))
    assert closed.mean() > 0.5  # q differs from the prior: the check is not 0 == 0
    draws = z_mean + np.exp(0.5 * z_log_var) * np.random.default_rng(5).normal(
        size=(4000,) + z_mean.shape)
    est = ops.convert_to_numpy(vamp.kl_estimate(ops.convert_to_tensor(draws.astype("float32")),
                                                z_mean, z_log_var))
    per_draw = (stats.norm.logpdf(draws, z_mean, np.exp(0.5 * z_log_var)).sum(-1)
                - stats.norm.logpdf(draws).sum(-1))
    np.testing.assert_allclose(est, per_draw.mean(0), atol=1e-3)
    se = per_draw.std(0) / math.sqrt(len(draws))
    np.testing.assert_array_less(np.abs(est - closed), 4 * se + 1e-4)
    # In the model's forward pass too: the reported KL is the estimate, centred on the closed form.
    out = vamp(np.repeat(x, 50, axis=0))
    diff = ops.convert_to_numpy(out["kl"]) - np.repeat(closed, 50)
    assert abs(diff.mean()) < 4 * diff.std() / math.sqrt(diff.size)


# ----------------------------------------------------------------- IWAE with a 2-component prior
MOG = dict(logits=np.array([0.0, 0.7]), means=np.array([[-1.5], [1.2]]),
           log_vars=np.log(np.array([[0.4], [0.7]])))


def bernoulli_mog_1d(seed=0, dims=12):
    keras.utils.set_random_seed(seed)
    vae = kv.VAE.mlp((dims,), latent_dim=1, hidden_units=(8,), activation="tanh", prior="mog",
                     prior_components=2)
    vae.prior_layer.logits.assign(MOG["logits"].astype("float32"))
    vae.prior_layer.means.assign(MOG["means"].astype("float32"))
    vae.prior_layer.log_vars.assign(MOG["log_vars"].astype("float32"))
    widen_proposal(vae)
    rng = np.random.default_rng(seed)
    z = vae.sample_prior(32, seed=seed)
    probs = vae.decode(z)
    x = (rng.uniform(size=probs.shape) < probs).astype("float32")
    return vae, x


def test_iwae_estimate_converges_to_the_exact_likelihood_under_a_two_component_prior():
    vae, x = bernoulli_mog_1d()
    exact = quadrature_log_px(vae, x, lambda z: numpy_mixture_log_density(z, **MOG))
    est = evaluation.log_likelihood(vae, x, num_samples=20000, seed=0)
    assert np.all(est <= exact + 0.02)
    np.testing.assert_allclose(est, exact, atol=0.02)
    assert abs(np.mean(est - exact)) < 0.005


# ----------------------------------------------------------------------------- free bits
def kl_term(vae, x):
    out = vae(x)
    losses = [float(ops.convert_to_numpy(v)) for v in vae.losses]
    assert len(losses) == 2
    return losses[1], ops.convert_to_numpy(out["kl"])


@pytest.mark.parametrize("free_bits", [0.0, 2.0, 50.0])
def test_free_bits_floor_each_dimension_of_the_standard_prior_kl(free_bits):
    keras.utils.set_random_seed(0)
    vae = kv.VAE.mlp((10,), latent_dim=4, hidden_units=(8,), free_bits=free_bits, beta=0.5)
    vae.encoder.get_layer("z_mean").set_weights(
        [w * 3 for w in vae.encoder.get_layer("z_mean").get_weights()])
    x = (np.random.default_rng(0).uniform(size=(32, 10)) < 0.4).astype("float32")
    z_mean, z_log_var = vae.encode(x)
    per_dim = -0.5 * (1 + z_log_var - z_mean ** 2 - np.exp(z_log_var))      # (B, K)
    term, kl = kl_term(vae, x)
    np.testing.assert_allclose(kl, per_dim.sum(1), rtol=1e-5)  # the reported KL is the true one
    want = 0.5 * np.maximum(per_dim.mean(0), free_bits).sum()
    np.testing.assert_allclose(term, want, rtol=1e-5)
    if free_bits == 2.0:  # some dimensions above the floor, some below: a real mix
        assert (per_dim.mean(0) > 2.0).any() and (per_dim.mean(0) < 2.0).any()


@pytest.mark.parametrize("prior", ["mog", "vamp"])
def test_free_bits_floor_the_whole_kl_estimate_of_a_learned_prior(prior):
    keras.utils.set_random_seed(0)
    x = (np.random.default_rng(0).uniform(size=(32, 10)) < 0.4).astype("float32")
    for free_bits in (0.0, 0.05, 10.0):
        vae = kv.VAE.mlp((10,), latent_dim=3, hidden_units=(8,), prior=prior,
                         prior_components=3, free_bits=free_bits, seed=1)
        term, kl = kl_term(vae, x)
        np.testing.assert_allclose(term, max(3 * free_bits, kl.mean()), rtol=1e-5)
    assert 3 * 0.05 < kl.mean() < 30  # the middle floor was below the estimate, the last above


# ----------------------------------------------------------------------------- persistence
@pytest.mark.parametrize("prior", ["mog", "vamp"])
def test_save_and_load_keep_the_prior(tmp_path, prior):
    keras.utils.set_random_seed(0)
    vae = kv.VAE.mlp((10,), latent_dim=3, hidden_units=(8,), prior=prior, prior_components=4,
                     free_bits=0.25)
    rng = np.random.default_rng(0)
    for weight in vae.prior_layer.weights:  # away from their initial values
        weight.assign(rng.uniform(0.1, 0.9, size=tuple(weight.shape)).astype("float32"))
    path = tmp_path / "vae.keras"
    vae.save(path)
    loaded = keras.saving.load_model(path)
    assert (loaded.prior, loaded.prior_components, loaded.free_bits) == (prior, 4, 0.25)
    before, after = vae.prior_mixture(), loaded.prior_mixture()
    for key in ("weights", "means", "log_vars"):
        np.testing.assert_allclose(after[key], before[key], rtol=1e-6)
    z = np.random.default_rng(1).normal(size=(20, 3)).astype("float32")
    np.testing.assert_allclose(ops.convert_to_numpy(loaded.prior_log_density(z)),
                               numpy_mixture_log_density(z, np.log(before["weights"]),
                                                         before["means"], before["log_vars"]),
                               atol=1e-4)


def test_model_draws_from_its_learned_prior():
    vae = kv.VAE.mlp((10,), latent_dim=2, hidden_units=(8,), prior="mog", prior_components=2)
    vae.prior_layer.logits.assign(np.log([0.25, 0.75]).astype("float32"))
    vae.prior_layer.means.assign(np.array([[-8.0, 0.0], [8.0, 1.0]], "float32"))
    z = vae.sample_prior(8000, seed=0)
    frac = np.mean(z[:, 0] > 0)
    assert abs(frac - 0.75) < 4 * math.sqrt(0.75 * 0.25 / 8000)
    assert vae.sample(5, seed=0).shape == (5, 10)


def test_bad_prior_options_are_refused():
    with pytest.raises(ValueError, match="Unknown prior"):
        kv.VAE.mlp((10,), latent_dim=2, prior="gmm")
    with pytest.raises(ValueError, match="posterior='diagonal'"):
        kv.VAE.mlp((10,), latent_dim=2, prior="vamp", posterior="full")
    with pytest.raises(ValueError, match="prior_components must be"):
        kv.VAE.mlp((10,), latent_dim=2, prior="mog", prior_components=0)
    with pytest.raises(ValueError, match="free_bits must be"):
        kv.VAE.mlp((10,), latent_dim=2, free_bits=-1.0)
    with pytest.raises(ValueError, match="objective='elbo'"):
        kv.VAE.mlp((10,), latent_dim=2, free_bits=0.1, objective="iwae")


# ----------------------------------------------------------------------------- recipe and CLI
def test_cli_and_recipe_carry_the_prior_to_the_model():
    from keras_vae import priors as owner
    from keras_vae.training import build_model, check_config
    from keras_vae.training.recipe import Recipe
    from keras_vae_cli import build_parser
    from keras_vae_cli import constants

    assert constants.PRIORS == owner.PRIORS
    args = build_parser().parse_args(["train", "--prior", "vamp", "--prior-components", "7",
                                      "--free-bits", "0.1", "--latent-dim", "3"])
    assert (args.prior, args.prior_components, args.free_bits) == ("vamp", 7, 0.1)
    recipe = Recipe(prior=args.prior, prior_components=args.prior_components,
                    free_bits=args.free_bits, latent_dim=3, input_shape=[12])
    assert Recipe.from_dict(recipe.to_dict()) == recipe
    vae = build_model(recipe, compile=False)
    assert (vae.prior, vae.prior_components, vae.free_bits) == ("vamp", 7, 0.1)
    assert tuple(vae.prior_layer.pseudo_inputs.shape) == (7, 12)
    # a run written before the option existed reads as the standard prior
    old = {k: v for k, v in recipe.to_dict().items()
           if k not in ("prior", "prior_components", "free_bits")}
    assert build_model(old, compile=False).prior == "standard"
    for bad, message in (({"prior": "gmm"}, "Unknown --prior"),
                         ({"prior_components": 3}, "--prior-components applies"),
                         ({"prior": "mog", "free_bits": -1.0}, "--free-bits must be"),
                         ({"prior": "vamp", "posterior": "full"}, "--posterior diagonal")):
        with pytest.raises(ValueError, match=message):
            check_config(recipe.replace(**{"prior": "standard", "prior_components": None,
                                           **bad}).to_dict())


# ----------------------------------------------------------------------------- export, runtime
def test_vamp_prior_exports_as_the_mixture_of_its_pseudo_inputs_posteriors():
    from keras_vae.exporting.contract import model_contract, prior_entry

    keras.utils.set_random_seed(0)
    vae = kv.VAE.mlp((10,), latent_dim=3, hidden_units=(8,), prior="vamp", prior_components=4)
    vae.set_pseudo_inputs((np.random.default_rng(0).uniform(size=(9, 10)) < 0.5)
                          .astype("float32"), seed=0)
    entry = prior_entry(vae)
    z_mean, z_log_var = vae.encode(np.asarray(vae.prior_layer.pseudo_inputs))
    assert entry["kind"] == "vamp" and entry["components"] == 4
    np.testing.assert_allclose(entry["weights"], 0.25, rtol=1e-6)
    np.testing.assert_allclose(entry["means"], z_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(entry["log_vars"], z_log_var, rtol=1e-5, atol=1e-6)
    assert "mixture of 4" in model_contract(vae)["prior"]
    standard = kv.VAE.mlp((10,), latent_dim=3, hidden_units=(8,))
    assert prior_entry(standard) is None
    assert model_contract(standard)["prior"] == "p(z) = N(0, I) over the 3 latents"


@pytest.fixture(scope="module")
def mog_bundle(tmp_path_factory):
    pytest.importorskip("onnxruntime")
    keras.utils.set_random_seed(0)
    vae = kv.VAE.mlp((10,), latent_dim=2, hidden_units=(8,), prior="mog", prior_components=3)
    vae.prior_layer.logits.assign(np.log([0.2, 0.5, 0.3]).astype("float32"))
    vae.prior_layer.means.assign(np.array([[-6.0, 0.0], [0.0, 5.0], [6.0, -2.0]], "float32"))
    vae.prior_layer.log_vars.assign(np.log([[0.5, 1.0], [1.0, 0.2], [2.0, 0.5]])
                                    .astype("float32"))
    folder = tmp_path_factory.mktemp("mog") / "bundle"
    kv.export(vae, folder, formats=("onnx",))
    return vae, folder


def test_runtime_draws_follow_the_stored_mixture(mog_bundle):
    from keras_vae_runtime.runtime import ExportedVAE

    vae, folder = mog_bundle
    manifest = json.loads((folder / "manifest.json").read_text())
    mixture = vae.prior_mixture()
    for key in ("weights", "means", "log_vars"):
        np.testing.assert_allclose(manifest["prior"][key], mixture[key], rtol=1e-6)
    runtime = ExportedVAE(folder)
    z_points = np.random.default_rng(3).normal(size=(50, 2)) * 4
    np.testing.assert_allclose(runtime.prior_log_density(z_points),
                               ops.convert_to_numpy(vae.prior_log_density(
                                   z_points.astype("float32"))), atol=1e-4)
    n = 20000
    x_mean, z = runtime.sample(n, seed=0)
    assert x_mean.shape == (n, 10)
    means, log_vars, weights = (np.asarray(manifest["prior"][k])
                                for k in ("means", "log_vars", "weights"))
    comp = np.argmin(((z[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
    freq = np.bincount(comp, minlength=3) / n
    np.testing.assert_array_less(np.abs(freq - weights), 4 * np.sqrt(weights * (1 - weights) / n))
    for c in range(3):
        zc = z[comp == c]
        np.testing.assert_array_less(np.abs(zc.mean(0) - means[c]),
                                     4 * np.sqrt(np.exp(log_vars[c]) / len(zc)))
        np.testing.assert_allclose(zc.var(0), np.exp(log_vars[c]), rtol=0.1)
    np.testing.assert_allclose(runtime.decode(z[:5]), vae.decode(z[:5]), atol=1e-5)


def test_runtime_score_uses_the_mixture_kl(mog_bundle):
    from keras_vae_runtime.runtime import ExportedVAE

    vae, folder = mog_bundle
    runtime = ExportedVAE(folder)
    x = (np.random.default_rng(0).uniform(size=(16, 10)) < 0.4).astype("float32")
    samples = 400
    score = runtime.anomaly_score(x, samples=samples, seed=0)
    # the same draws in NumPy: -mean_l [ln p(x|z_l) + ln p(z_l) - ln q(z_l|x)]
    z_mean, z_log_var = vae.encode(x)
    eps = np.random.default_rng(0).standard_normal((samples,) + z_mean.shape)
    z = z_mean + np.exp(0.5 * z_log_var) * eps
    log_q = stats.norm.logpdf(z, z_mean, np.exp(0.5 * z_log_var)).sum(-1)
    mix = vae.prior_mixture()
    log_p = numpy_mixture_log_density(z, np.log(mix["weights"]), mix["means"], mix["log_vars"])
    probs = vae.decode(z.reshape(-1, 2).astype("float32")).reshape(z.shape[:2] + (10,))
    log_lik = (x * np.log(probs) + (1 - x) * np.log1p(-probs)).sum(-1)
    np.testing.assert_allclose(score, -(log_lik + log_p - log_q).mean(0), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("builder", ["conv", "pixel_cnn"])
def test_image_architectures_take_a_vamp_prior(builder):
    keras.utils.set_random_seed(0)
    small = dict(filters=(4,), dense_units=8)
    if builder == "pixel_cnn":
        small.update(pixel_filters=4, pixel_layers=1, latent_units=8, latent_channels=1)
    vae = getattr(kv.VAE, builder)((6, 6, 1), latent_dim=2, prior="vamp", prior_components=3,
                                   **small)
    assert tuple(vae.prior_layer.pseudo_inputs.shape) == (3, 6, 6, 1)
    x = (np.random.default_rng(0).uniform(size=(5, 6, 6, 1)) < 0.5).astype("float32")
    vae.set_pseudo_inputs(x, seed=0)
    z_mean, z_log_var = vae.encode(np.asarray(vae.prior_layer.pseudo_inputs))
    mix = vae.prior_mixture()
    np.testing.assert_allclose(mix["means"], z_mean, atol=1e-6)
    np.testing.assert_allclose(mix["log_vars"], z_log_var, atol=1e-6)
    out = vae(x)  # the reported KL is ln q(z|x) - ln p(z) at the drawn z: finite, and the
    kl = ops.convert_to_numpy(out["kl"])  # mean over many draws is >= 0 (a KL)
    assert kl.shape == (5,) and np.all(np.isfinite(kl))
    qm, qv = vae.encode(x)
    draws = qm + np.exp(0.5 * qv) * np.random.default_rng(1).normal(size=(3000,) + qm.shape)
    est = ops.convert_to_numpy(vae.kl_estimate(ops.convert_to_tensor(draws.astype("float32")),
                                               qm, qv))
    want = (stats.norm.logpdf(draws, qm, np.exp(0.5 * qv)).sum(-1)
            - numpy_mixture_log_density(draws, np.log(mix["weights"]), mix["means"],
                                        mix["log_vars"])).mean(0)
    np.testing.assert_allclose(est, want, atol=1e-3)
    assert np.all(est > -1e-3)


def test_models_that_cannot_carry_a_learned_prior_refuse_it_by_name():
    from keras_vae import diagnostics, web

    # The web page draws z from N(0, I): exporting it for a mixture prior would sample wrongly.
    vae = kv.VAE.mlp((6,), latent_dim=2, hidden_units=(4,), prior="mog", prior_components=3)
    with pytest.raises(ValueError, match="web.*'mog'"):
        web.plan(vae, ["onnx", "web"])
    assert web.plan(kv.VAE.mlp((6,), latent_dim=2, hidden_units=(4,)), ["onnx"])[1] is None
    # A two-layer VAE's top prior is N(0, I) and z1's is p(z1|z2): no learned prior there, and
    # the KL to N(0, 1) per dimension of z1 is not its KL.
    with pytest.raises(ValueError, match="prior='vamp'"):
        kv.HierarchicalVAE.mlp(input_shape=(6,), latent_dims=(4, 2), hidden_units=(4,),
                               prior="vamp")
    two = kv.HierarchicalVAE.mlp(input_shape=(6,), latent_dims=(4, 2), hidden_units=(4,))
    x = np.random.default_rng(0).random((8, 6)).astype("float32")
    with pytest.raises(ValueError, match="p\\(z1\\|z2\\)"):
        diagnostics.kl_per_dimension(two, x)
    assert diagnostics.kl_per_dimension(kv.VAE.mlp((6,), latent_dim=2, hidden_units=(4,)),
                                        x).shape == (2,)
