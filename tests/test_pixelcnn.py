"""The autoregressive decoder (a small PixelVAE) against ground truth: causality of its masks,
p(x|z) summing to exactly 1 over every binary image, pixel-by-pixel sampling matching p(x|z),
the shared-context evaluation path, saving, and its errors."""

import itertools

import keras
import numpy as np
import pytest
from keras import ops

import keras_vae as kv
from keras_vae import evaluation, networks
from keras_vae.layers import MaskedConv2D
from keras_vae.networks import decode_samples


def tiny_vae(height=3, width=3, latent_dim=2, seed=0):
    """A PixelVAE on height x width binary images with random (not trained) weights large
    enough that every logit depends visibly on z and on the pixels before it."""
    vae = kv.VAE.pixel_cnn(input_shape=(height, width, 1), latent_dim=latent_dim, filters=(4,),
                           dense_units=8, pixel_filters=8, pixel_layers=2, latent_units=8,
                           latent_channels=2, seed=seed)
    rng = np.random.default_rng(seed)
    vae.set_weights([rng.normal(0.0, 0.7, w.shape).astype("float32") for w in vae.get_weights()])
    return vae


def all_images(height, width):
    """Every binary image of height x width pixels, (2**(h*w), h, w, 1)."""
    return np.array(list(itertools.product([0.0, 1.0], repeat=height * width)),
                    dtype="float32").reshape(-1, height, width, 1)


def log_p_x_given_z(vae, z, x):
    logits = ops.convert_to_numpy(vae.decoder([z, x]))
    return -(np.logaddexp(0.0, logits) - x * logits).sum(axis=(1, 2, 3))


def test_logits_see_only_earlier_pixels():
    vae = tiny_vae(4, 4)
    rng = np.random.default_rng(1)
    z = rng.standard_normal((1, 2)).astype("float32")
    x = (rng.random((1, 4, 4, 1)) < 0.5).astype("float32")
    base = ops.convert_to_numpy(vae.decoder([z, x]))[0, ..., 0].ravel()
    for i in range(16):
        later = x.copy().reshape(-1)
        later[i:] = 1.0 - later[i:]  # flip pixel i and every pixel after it
        logits = ops.convert_to_numpy(vae.decoder([z, later.reshape(x.shape)]))[0, ..., 0].ravel()
        np.testing.assert_allclose(logits[:i + 1], base[:i + 1], atol=1e-5)
        if i > 0:  # and pixel i's logit does read the pixels before it
            earlier = x.copy().reshape(-1)
            earlier[:i] = 1.0 - earlier[:i]
            moved = ops.convert_to_numpy(vae.decoder([z, earlier.reshape(x.shape)]))
            assert abs(moved[0, ..., 0].ravel()[i] - base[i]) > 1e-3


def test_p_x_given_z_sums_to_one_over_all_images():
    """Exact normalization (a leaking mask breaks it), for several z, and z matters."""
    vae = tiny_vae(3, 3)
    xs = all_images(3, 3)
    rng = np.random.default_rng(2)
    totals, first = [], []
    for _ in range(3):
        z = np.repeat(rng.standard_normal((1, 2)).astype("float32"), len(xs), axis=0)
        log_p = log_p_x_given_z(vae, z, xs)
        totals.append(np.exp(log_p).sum())
        first.append(log_p[0])
    np.testing.assert_allclose(totals, 1.0, atol=1e-5)
    assert np.ptp(first) > 0.1


def test_decode_draws_from_p_x_given_z():
    """Pixel-by-pixel sampling: frequencies of the 16 images of 2x2 match p(x|z) (chi-square)."""
    from scipy import stats

    vae = tiny_vae(2, 2)
    z = np.random.default_rng(3).standard_normal((1, 2)).astype("float32")
    n = 20000
    draws = vae.decode(np.repeat(z, n, axis=0), batch_size=n, seed=0)
    assert set(np.unique(draws)) <= {0.0, 1.0}
    xs = all_images(2, 2)
    p = np.exp(log_p_x_given_z(vae, np.repeat(z, 16, axis=0), xs).astype("float64"))
    expected = p / p.sum() * n  # p sums to 1 within float32 round-off (tested above)
    index = draws.reshape(n, 4) @ np.array([8, 4, 2, 1])
    observed = np.bincount(index.astype(int), minlength=16)
    assert stats.chisquare(observed, expected).pvalue > 1e-3
    # a different seed gives different draws, the same seed the same ones
    np.testing.assert_array_equal(vae.decode(z, seed=5), vae.decode(z, seed=5))


def test_shared_context_equals_decoding_each_sample():
    vae = tiny_vae(3, 3)
    rng = np.random.default_rng(4)
    x = (rng.random((5, 3, 3, 1)) < 0.5).astype("float32")
    z = rng.standard_normal((7, 5, 2)).astype("float32")  # 7 samples for each of 5 examples
    shared = ops.convert_to_numpy(decode_samples(vae.decoder, z, x))
    direct = ops.convert_to_numpy(vae.decoder([z.reshape(-1, 2), np.tile(x, (7, 1, 1, 1))]))
    np.testing.assert_allclose(shared, direct, atol=1e-5)


def test_log_likelihood_is_exact_by_enumerating_z():
    """ln p(x) of a 1-latent PixelVAE by quadrature over z against the importance-weighted
    estimate: within Monte Carlo error at k = 2000, and the -ELBO above it. q(z|x) is set to
    the prior, a proposal that covers every posterior of this model, so the estimate converges
    fast."""
    vae = tiny_vae(2, 3, latent_dim=1, seed=6)
    for head in ("z_mean", "z_log_var"):
        layer = vae.encoder.get_layer(head)
        layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])
    x = all_images(2, 3)[[5, 22, 41, 63]]
    grid = np.linspace(-8.0, 8.0, 4001, dtype="float32")
    log_prior = -0.5 * grid ** 2 - 0.5 * np.log(2 * np.pi)
    exact = []
    for image in x:
        log_lik = log_p_x_given_z(vae, grid[:, None], np.repeat(image[None], len(grid), 0))
        exact.append(np.logaddexp.reduce(log_lik + log_prior) + np.log(grid[1] - grid[0]))
    estimate = evaluation.log_likelihood(vae, x, num_samples=2000, seed=0)
    np.testing.assert_allclose(estimate, exact, atol=0.05)
    assert np.all(-evaluation.elbo(vae, x, num_samples=200, seed=0).elbo >= -np.array(exact) - 0.05)


def test_trains_with_fit_and_round_trips_through_keras_file(tmp_path):
    rng = np.random.default_rng(7)
    # images whose pixels copy their left neighbour: easy for the decoder, hard without it
    x = np.repeat((rng.random((256, 4, 1, 1)) < 0.5), 4, axis=2).astype("float32")
    vae = kv.VAE.pixel_cnn(input_shape=(4, 4, 1), latent_dim=2, filters=(4,), dense_units=8,
                           pixel_filters=8, pixel_layers=1, latent_units=8, seed=0)
    vae.compile(optimizer=keras.optimizers.Adam(0.02))
    history = vae.fit(x, epochs=30, batch_size=64, verbose=0)
    # each row: 4 free pixels -> ln 16 bits of entropy, 2.77 nats; the rest is determined
    assert history.history["neg_elbo"][-1] < 4 * np.log(2) + 1.0
    path = tmp_path / "pixel.keras"
    vae.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.decoder, networks.PixelCNNDecoder) and loaded.autoregressive
    z = rng.standard_normal((3, 2)).astype("float32")
    np.testing.assert_allclose(ops.convert_to_numpy(loaded.decoder([z, x[:3]])),
                               ops.convert_to_numpy(vae.decoder([z, x[:3]])), atol=1e-6)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="one-channel images"):
        networks.PixelCNNDecoder(4, (8, 8, 3))
    with pytest.raises(ValueError, match="likelihood='bernoulli'"):
        kv.VAE.pixel_cnn(input_shape=(4, 4, 1), latent_dim=2, likelihood="gaussian")
    with pytest.raises(ValueError, match="mask_type"):
        MaskedConv2D(4, 3, "C")
    with pytest.raises(ValueError, match="odd"):
        MaskedConv2D(4, 4, "A")
    vae = tiny_vae(3, 3)
    with pytest.raises(kv.exporting.ExportError, match="autoregressive"):
        kv.export(vae, "never-written", formats=("onnx", "tflite"))  # LiteRT: not for them


# ----------------------------------------------------------------------------- gated layers
def tiny_gated_vae(height=3, width=3, latent_dim=2, layers=2, seed=0, scale=0.7):
    vae = kv.VAE.pixel_cnn(input_shape=(height, width, 1), latent_dim=latent_dim, filters=(4,),
                           dense_units=8, pixel_filters=8, pixel_layers=layers, latent_units=8,
                           latent_channels=2, gated=True, seed=seed)
    rng = np.random.default_rng(seed)
    vae.set_weights([rng.normal(0.0, scale, w.shape).astype("float32")
                     for w in vae.get_weights()])
    return vae


def test_gated_layers_are_causal_and_normalized():
    """Flipping pixel i and everything after it leaves the logits of pixels <= i unchanged; p(x|z)
    sums to 1 over all 512 binary 3x3 images; logit i reads the pixels before it."""
    vae = tiny_gated_vae(4, 4)
    names = [layer.name for layer in vae.decoder.context_net.layers]
    assert "gate_a" in names and "gate_b1" in names and "gate_proj_1" in names
    rng = np.random.default_rng(11)
    z = rng.standard_normal((1, 2)).astype("float32")
    x = (rng.random((1, 4, 4, 1)) < 0.5).astype("float32")
    base = ops.convert_to_numpy(vae.decoder([z, x]))[0, ..., 0].ravel()
    for i in range(16):
        later = x.copy().reshape(-1)
        later[i:] = 1.0 - later[i:]
        logits = ops.convert_to_numpy(vae.decoder([z, later.reshape(x.shape)]))[0, ..., 0]
        np.testing.assert_allclose(logits.ravel()[:i + 1], base[:i + 1], atol=1e-5)
        if i > 0:
            earlier = x.copy().reshape(-1)
            earlier[:i] = 1.0 - earlier[:i]
            moved = ops.convert_to_numpy(vae.decoder([z, earlier.reshape(x.shape)]))
            assert abs(moved[0, ..., 0].ravel()[i] - base[i]) > 1e-4
    small = tiny_gated_vae(3, 3, seed=1)
    xs = all_images(3, 3)
    z = np.repeat(rng.standard_normal((1, 2)).astype("float32"), len(xs), axis=0)
    np.testing.assert_allclose(np.exp(log_p_x_given_z(small, z, xs)).sum(), 1.0, atol=1e-5)


def test_gated_option_round_trips_and_default_config_is_unchanged(tmp_path):
    plain = tiny_vae(3, 3)
    assert "gated" not in plain.decoder.get_config()  # saved configs of existing models
    assert not any(isinstance(layer, kv.layers.GatedActivation)
                   for layer in plain.decoder.context_net.layers)
    vae = tiny_gated_vae(3, 3)
    assert vae.decoder.get_config()["gated"] is True
    path = tmp_path / "gated.keras"
    vae.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.decoder.gated
    rng = np.random.default_rng(12)
    z = rng.standard_normal((4, 2)).astype("float32")
    x = (rng.random((4, 3, 3, 1)) < 0.5).astype("float32")
    np.testing.assert_allclose(ops.convert_to_numpy(loaded.decoder([z, x])),
                               ops.convert_to_numpy(vae.decoder([z, x])), atol=1e-6)


# ----------------------------------------------------------------------------- compiled drawing
def full_pass_draw(decoder, z, noise):
    """Reference: H * W passes of the whole decoder over the whole image, pixel i set from the
    i-th pass where noise[i] < sigmoid(logit_i)."""
    height, width, _ = decoder.output_shape_
    x = np.zeros((len(z), height, width, 1), dtype="float32")
    for i in range(height * width):
        row, col = divmod(i, width)
        logits = ops.convert_to_numpy(decoder([z, x]))[:, row, col, 0]
        x[:, row, col, 0] = noise[i] < 1.0 / (1.0 + np.exp(-logits))
    return x


@pytest.mark.parametrize("gated", [False, True])
def test_compiled_draw_equals_full_passes_with_the_same_noise(gated):
    """6 x 10 images with one masked "B" layer: the receptive field (4 rows up, 4 columns either
    side) is smaller than the image, so the drawing windows are clipped at every edge and slide
    in between; the draws equal the full-pass reference pixel for pixel."""
    from keras_vae import drawing

    vae = tiny_gated_vae(6, 10, layers=1, seed=3) if gated else _tiny_one_layer(6, 10, seed=3)
    decoder = vae.decoder
    assert decoder.receptive_rows == 4
    rng = np.random.default_rng(13)
    z = rng.standard_normal((6, 2)).astype("float32")
    noise = rng.random((60, 6)).astype("float32")
    expected = full_pass_draw(decoder, z, noise)
    assert 0.1 < expected.mean() < 0.9  # the draws depend on the noise and the logits
    np.testing.assert_array_equal(drawing.compiled(decoder)(z, noise), expected)
    # VAE.decode uses the same noise as the bundle runtime: numpy's default_rng(seed), (H*W, n)
    np.testing.assert_array_equal(
        vae.decode(z, seed=4), full_pass_draw(decoder, z, np.random.default_rng(4).random((60, 6))))


def _tiny_one_layer(height, width, seed):
    vae = kv.VAE.pixel_cnn(input_shape=(height, width, 1), latent_dim=2, filters=(4,),
                           dense_units=8, pixel_filters=8, pixel_layers=1, latent_units=8,
                           latent_channels=2, seed=seed)
    rng = np.random.default_rng(seed)
    vae.set_weights([rng.normal(0.0, 0.7, w.shape).astype("float32") for w in vae.get_weights()])
    return vae
