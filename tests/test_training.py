"""Training callbacks and pictures, checked against their definitions (in-process, fast)."""

import statistics

import keras
import numpy as np
import pytest
from matplotlib import image as mpimg

import keras_vae as kv
from keras_vae import plots, training


def tiny_vae(beta=1.0, input_dim=16, steps_per_execution=1):
    vae = kv.VAE.kingma_welling(input_dim=input_dim, latent_dim=2, hidden_units=8, beta=beta,
                                seed=0)
    vae.compile(optimizer=keras.optimizers.Adam(1e-3), steps_per_execution=steps_per_execution)
    return vae


class BetaRecorder(keras.callbacks.Callback):
    """Reads vae.beta after every training batch."""

    def on_train_begin(self, logs=None):
        self.values = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self.values.append((self.epoch, batch, float(self.model.beta.numpy())))


def test_kl_warmup_ramps_beta_linearly_per_batch():
    x = (np.random.default_rng(0).random((40, 16)) > 0.5).astype("float32")
    vae = tiny_vae(beta=0.5)
    recorder = BetaRecorder()
    history = vae.fit(x, epochs=4, batch_size=10, verbose=0,
                      callbacks=[kv.KLWarmup(2), recorder])  # 4 batches per epoch
    for epoch, batch, beta in recorder.values:
        assert beta == pytest.approx(0.5 * min(1.0, (epoch + batch / 4) / 2), abs=1e-7)
    # logged at each epoch's end: the value of its last batch (b = 3)
    assert history.history["beta"] == pytest.approx([0.1875, 0.4375, 0.5, 0.5])
    with pytest.raises(ValueError, match="epochs > 0"):
        kv.KLWarmup(0)


def test_kl_warmup_with_several_steps_per_execution_is_coarse_and_says_so():
    # 4 steps per execution, 8 batches per epoch: beta is set at batches 0 and 4 only, so
    # each execution runs with the beta of its first batch.
    x = (np.random.default_rng(0).random((80, 16)) > 0.5).astype("float32")
    vae = tiny_vae(beta=1.0, steps_per_execution=4)
    with pytest.warns(UserWarning, match="steps_per_execution=1"):
        history = vae.fit(x, epochs=3, batch_size=10, verbose=0, callbacks=[kv.KLWarmup(2)])
    assert history.history["beta"] == pytest.approx([(0 + 4 / 8) / 2, (1 + 4 / 8) / 2, 1.0])


def test_stop_on_nan_records_where_and_stops():
    x = np.random.default_rng(1).random((40, 16)).astype("float32")
    vae = tiny_vae()
    vae.compile(optimizer=keras.optimizers.SGD(1e12))
    stop = kv.StopOnNaN()
    history = vae.fit(x, epochs=5, batch_size=10, verbose=0, callbacks=[stop])
    assert stop.stopped_at is not None
    epoch, batch = stop.stopped_at
    assert len(history.history["loss"]) == epoch + 1 < 5  # stopped in that epoch


def test_resumable_early_stopping_matches_an_uninterrupted_run():
    values = [5.0, 4.0, 4.5, 4.6, 4.7, 3.0]
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])

    def stop_epoch(callback, start, feed):
        callback.set_model(model)
        model.stop_training = False
        callback.on_train_begin()
        for epoch in range(start, len(feed)):
            callback.on_epoch_end(epoch, {"val_neg_elbo": feed[epoch]})
            if model.stop_training:
                return epoch
        return None

    for patience in (1, 2, 3, 4):
        full = stop_epoch(keras.callbacks.EarlyStopping("val_neg_elbo", patience=patience,
                                                        mode="min"),
                          0, values)
        for resume_at in range(1, 5):
            if full is not None and resume_at > full:
                continue
            resumed = kv.ResumableEarlyStopping(values[:resume_at], monitor="val_neg_elbo",
                                                patience=patience, mode="min")
            assert stop_epoch(resumed, resume_at, values) == full, (patience, resume_at)


def test_build_model_follows_config():
    config = dict(model="mlp", input_shape=[64], latent_dim=3, hidden_units=[32, 16],
                  likelihood="bernoulli", posterior="full", num_samples=2, beta=0.5, seed=1,
                  lr=0.01, dataset="digits")
    vae = training.build_model(config)
    assert vae.latent_dim == 3 and vae.posterior == "full" and vae.num_samples == 2
    assert [layer.units for layer in vae.encoder.layers if layer.name.startswith("hidden")] \
        == [32, 16]
    assert float(vae.optimizer.learning_rate.numpy()) == pytest.approx(0.01)
    with pytest.raises(ValueError, match="exactly one hidden layer"):
        training.build_model({**config, "model": "kingma-welling"})
    with pytest.raises(ValueError, match="needs image data"):
        training.build_model({**config, "model": "conv"})


# ----------------------------------------------------------------------------- pictures
def test_tile_images_places_images_row_by_row_with_padding():
    images = np.arange(5 * 2 * 3, dtype="float32").reshape(5, 2, 3, 1) / 30
    grid = plots.tile_images(images, ncols=3, pad=1, pad_value=-1)
    assert grid.shape == (2 * 2 + 1, 3 * 3 + 2, 1)
    np.testing.assert_array_equal(grid[0:2, 4:7], images[1])
    np.testing.assert_array_equal(grid[3:5, 0:3], images[3])
    assert np.all(grid[2] == -1) and np.all(grid[3:5, 8:11] == -1)  # padding and empty cell


def test_save_image_grid_writes_the_pixels(tmp_path):
    images = np.random.default_rng(2).random((6, 8, 8, 1)).astype("float32")
    path = tmp_path / "grid.png"
    grid = plots.save_image_grid(images, path, ncols=3)  # 8 px tiles -> enlarged 4x
    png = mpimg.imread(path)
    assert png.shape[:2] == (2 * 32 + 4, 3 * 32 + 8)
    np.testing.assert_allclose(png, grid[..., 0], atol=0.5 / 255 + 1e-6)
    np.testing.assert_allclose(png[36:36 + 32:4, 36:36 + 32:4], images[4, :, :, 0],
                               atol=0.5 / 255 + 1e-6)


def test_save_reconstructions_puts_originals_above(tmp_path):
    originals = np.zeros((4, 28, 28, 1), "float32")
    recon = np.ones((4, 28, 28, 1), "float32")
    plots.save_reconstructions(originals, recon, tmp_path / "r.png")
    png = mpimg.imread(tmp_path / "r.png")
    assert png.shape[:2] == (28 + 2 + 28, 4 * 28 + 3)
    assert np.all(png[:28, :28] == 0) and np.all(png[30:, :28] == 1)
    np.testing.assert_allclose(png[28:30], 0.5, atol=0.5 / 255 + 1e-6)


def test_latent_manifold_grid_is_prior_quantiles_oriented():
    z = plots.latent_manifold_grid(5).reshape(5, 5, 2)
    q95 = statistics.NormalDist().inv_cdf(0.95)
    np.testing.assert_allclose(z[0, 0], [-q95, q95], rtol=1e-6)  # top left: z1 low, z2 high
    np.testing.assert_allclose(z[4, 4], [q95, -q95], rtol=1e-6)
    np.testing.assert_allclose(z[2, 2], [0, 0], atol=1e-6)
    assert np.all(np.diff(z[..., 0], axis=1) > 0) and np.all(np.diff(z[..., 1], axis=0) < 0)


def test_latent_coordinates_pca_preserves_a_planar_cloud():
    rng = np.random.default_rng(3)
    plane = rng.normal(size=(200, 2)) * [3.0, 1.0]
    basis, _ = np.linalg.qr(rng.normal(size=(5, 2)))
    z = plane @ basis.T + 7.0  # a 2-D cloud inside R^5
    coords, labels, ratio = plots.latent_coordinates(z)
    dist = lambda a: np.linalg.norm(a[:, None] - a[None], axis=-1)  # noqa: E731
    np.testing.assert_allclose(dist(coords), dist(plane), atol=1e-8)  # an isometry
    np.testing.assert_allclose(ratio.sum(), 1.0)
    assert labels[0].startswith("PC 1")
    two = rng.normal(size=(10, 2))
    np.testing.assert_array_equal(plots.latent_coordinates(two)[0], two)


def test_training_curves_plot_the_history(tmp_path):
    history = {"epoch": [0, 1, 2], "loss": [3.0, 2.0, 1.5], "val_loss": [3.1, 2.2, 1.9],
               "neg_elbo": [4.0, 3.0, 2.0], "val_neg_elbo": [4.1, 3.2, 2.5],
               "reconstruction": [2, 1.5, 1], "kl": [1, 1.5, 1], "beta": [0.5, 1.0, 1.0]}
    fig = plots.save_training_curves(history, tmp_path / "c.png")
    first = fig.axes[0]
    assert first.get_title().startswith("-ELBO")
    (train_line, val_line) = first.get_lines()
    np.testing.assert_array_equal(train_line.get_xdata(), [1, 2, 3])
    np.testing.assert_array_equal(val_line.get_ydata(), history["val_neg_elbo"])
    beta_axis = fig.axes[-1]
    np.testing.assert_array_equal(beta_axis.get_lines()[0].get_ydata(), history["beta"])
    assert (tmp_path / "c.png").stat().st_size > 10_000


def test_train_under_a_strategy_with_mixed_precision(tmp_path):
    """`--strategy mirrored --mixed-precision mixed_bfloat16`: the networks compute in bfloat16,
    the run learns (test -ELBO well below the untrained model's), the saved model keeps the
    policy, and the global policy is restored afterwards."""
    config = training.make_config("digits", latent_dim=2, epochs=3, batch_size=50, lr=3e-3,
                                  hidden_units=[32], strategy="mirrored",
                                  mixed_precision="mixed_bfloat16")
    untrained = training.build_model(config)
    before = training.evaluate_model(untrained, config)["neg_elbo"]
    summary = training.train(config, str(tmp_path / "run"), verbose=0)
    assert keras.mixed_precision.dtype_policy().name == "float32"
    assert summary["test"]["neg_elbo"] < before - 5.0
    vae, saved_config = training.load_run(str(tmp_path / "run"))
    assert saved_config["strategy"] == "mirrored"
    assert vae.encoder.get_layer("hidden_0").compute_dtype == "bfloat16"
    assert vae.encode(np.zeros((2, 64), "float32"))[0].dtype == np.float32
    with pytest.raises(ValueError, match="Unknown --strategy 'ring'"):
        training.make_config("digits", strategy="ring")


class StepRecorder(keras.callbacks.Callback):
    """The step indices Keras reports at the end of each execution."""

    def on_train_begin(self, logs=None):
        self.ends = []

    def on_train_batch_end(self, batch, logs=None):
        self.ends.append(batch)


@pytest.mark.parametrize("n, batch_size, expected", [
    (150, 10, 15),    # 15 steps per epoch < 20: one execution per epoch
    (500, 10, 10),    # 50 steps: the largest divisor <= 20 is 10
    (2000, 10, 20),   # 200 steps: 20 divides
    (1130, 10, 20),   # 113 steps, prime: no divisor in 5..20, the request stays
])
def test_steps_per_execution_divides_the_epoch(n, batch_size, expected):
    x = (np.random.default_rng(0).random((n, 16)) > 0.5).astype("float32")
    vae = tiny_vae(steps_per_execution=20)
    recorder = StepRecorder()
    vae.fit(x, epochs=1, batch_size=batch_size, verbose=0, callbacks=[recorder])
    steps = -(-n // batch_size)
    assert vae.steps_per_execution == expected
    executions = -(-steps // expected)
    # Keras reports each execution's end as begin + steps_per_execution - 1:
    assert recorder.ends == [(i + 1) * expected - 1 for i in range(executions)]
    # so the bar ends exactly at the epoch's last step whenever a divisor was found.
    assert (recorder.ends[-1] == steps - 1) == (steps % expected == 0)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow's XLA default")
def test_compile_turns_xla_on_for_tensorflow_on_cpu_and_it_trains_the_same(binary_digits):
    import tensorflow as tf
    from tensorflow.python.framework import config as tf_config

    assert not tf.config.list_physical_devices("GPU")  # where Keras's own "auto" means off
    x = binary_digits[0][:600]
    losses = {}
    for jit in ("auto", False):
        keras.utils.set_random_seed(0)
        vae = kv.VAE.kingma_welling(input_dim=64, latent_dim=2, hidden_units=32, seed=0)
        vae.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=jit)
        assert vae.jit_compile is (jit == "auto")
        losses[jit] = np.array(vae.fit(x, epochs=8, batch_size=50, verbose=0).history["loss"])
    # The same model, data and updates, compiled two ways. Under XLA TensorFlow's stateless
    # RNG picks another algorithm, so the eps draws differ and the curves agree only up to
    # sampling noise (< 1 nat here), far less than what 8 epochs gain (~13 of 36 nats).
    gain = losses[False][0] - losses[False][-1]
    assert gain > 0.05 * losses[False][0]
    assert np.abs(losses["auto"] - losses[False]).max() < 0.2 * gain
    # Where Keras refuses XLA, so does VAE.compile's "auto".
    vae = kv.VAE.kingma_welling(input_dim=16, latent_dim=2, hidden_units=8, seed=0)
    vae.compile(optimizer="adam", run_eagerly=True)
    assert vae.jit_compile is False
    tf.config.experimental.enable_op_determinism()
    try:
        vae.compile(optimizer="adam")
        assert vae.jit_compile is False
    finally:
        tf_config.disable_op_determinism()
    vae.compile(optimizer="adam")
    assert vae.jit_compile is True
    # A layer that declares it cannot be compiled by XLA (supports_jit=False) keeps it off.
    vae.encoder.get_layer("z_mean").supports_jit = False
    vae.compile(optimizer="adam")
    assert vae.jit_compile is False
