"""A VAE with two stochastic layers (a hierarchical VAE): z1 | z2 in the generative model.

    import keras_vae as kv
    vae = kv.HierarchicalVAE.mlp(input_shape=(784,), latent_dims=(32, 16))
    vae.compile(optimizer="adam")
    vae.fit(x_train, epochs=10, batch_size=100)
    log_px = kv.evaluation.log_likelihood(vae, x_test, num_samples=5000, seed=0)

Generative model (top-down): p(z2) = N(0, I), p(z1|z2) = N(mu(z2), diag sigma^2(z2)) and the
usual likelihood p(x|z1) (Bernoulli, Gaussian, ...). Inference model (bottom-up, as in the
two-layer models of Burda et al. 2015): q(z1|x) and q(z2|z1), both diagonal Gaussians. So

    ln p(x) >= E_q [ln p(x|z1) + ln p(z1|z2) + ln p(z2) - ln q(z1|x) - ln q(z2|z1)],

estimated with one (or `num_samples`) draws z1 ~ q(z1|x), z2 ~ q(z2|z1). The bracket is the
importance log-weight of the pair (z1, z2), so `keras_vae.evaluation` (ELBO, importance-weighted
ln p(x), anomaly scores) works unchanged through `importance_log_weights`.

The two-layer option of the builders is this class: `HierarchicalVAE.mlp(latent_dims=(K1, K2))`
and `HierarchicalVAE.conv(latent_dims=(K1, K2))` take the arguments of `VAE.mlp` / `VAE.conv`
with `latent_dims` in place of `latent_dim` (`VAE.mlp` itself stays single-layer).
"""

import math

import keras
import numpy as np
from keras import ops

from keras_vae import distributions, networks
from keras_vae.model import VAE

HIERARCHICAL_OBJECTIVES = ("elbo", "iwae")
DEFAULT_LATENT_HIDDEN = (100,)

EXPORT_UNSUPPORTED = (
    "a HierarchicalVAE cannot be exported: the export's decoder maps one latent z ~ N(0, I) "
    "to x, but this model draws z1 from p(z1|z2); use the Keras model itself "
    "(vae.save('model.keras'), keras.saving.load_model) or a single-layer VAE for export.")


def latent_networks(latent_dims, hidden_units=DEFAULT_LATENT_HIDDEN, activation="tanh"):
    """The two small MLPs on the latent side of a two-layer model, K1, K2 = `latent_dims`:

    - `z2_encoder` z1 (B, K1) -> [z2_mean, z2_log_var] (B, K2): the inference net q(z2|z1);
    - `z1_prior` z2 (B, K2) -> [z1_mean, z1_log_var] (B, K1): the generative net p(z1|z2)
      (its hidden layers are `hidden_units` in reverse).

    `hidden_units=()` makes both linear maps. Returns `(z2_encoder, z1_prior)`.
    """
    k1, k2 = _check_latent_dims(latent_dims)
    hidden_units = tuple(hidden_units)
    z2_encoder = networks.mlp_encoder((k1,), k2, hidden_units, activation, "diagonal",
                                      name="z2_encoder")
    z1_prior = networks.mlp_encoder((k2,), k1, tuple(reversed(hidden_units)), activation,
                                    "diagonal", name="z1_prior")
    return z2_encoder, z1_prior


def _check_latent_dims(latent_dims):
    if isinstance(latent_dims, (str, bytes)) or not hasattr(latent_dims, "__len__") \
            or len(latent_dims) != 2:
        raise ValueError("latent_dims must be two integers (K1, K2), the sizes of z1 and z2 "
                         f"(e.g. (32, 16)), got {latent_dims!r}.")
    return tuple(networks.check_latent_dim(int(k) if isinstance(k, np.integer) else k)
                 for k in latent_dims)


def _check_gaussian_net(net, what, in_dim, out_dim, builder):
    shapes = [tuple(o.shape[1:]) for o in net.outputs]
    if tuple(net.inputs[0].shape[1:]) != (in_dim,) or shapes != [(out_dim,), (out_dim,)]:
        raise ValueError(
            f"{what} must map (batch, {in_dim}) to [mean, log_var], each (batch, {out_dim}); "
            f"it maps {tuple(net.inputs[0].shape)} to {[tuple(o.shape) for o in net.outputs]}. "
            f"Build it with {builder}.")


@keras.saving.register_keras_serializable(package="keras_vae")
class HierarchicalVAE(VAE):
    """A two-stochastic-layer VAE: p(z2) p(z1|z2) p(x|z1) with q(z1|x) q(z2|z1).

    Everything of `VAE` (fit, evaluate, the data checks, `keras_vae.evaluation`, `.keras`
    saving) works. What differs:

    - `encode(x)` returns q(z1|x)'s `(z1_mean, z1_log_var)`, the bottom layer's posterior
      (`encode_top` gives q(z2|z1) at z1's mean); `reconstruct(x)` decodes z1's mean.
    - `decode(z1)` takes bottom-layer latents (n, K1) (`latent_dim` is K1).
    - `sample(n)` draws ancestrally: z2 ~ N(0, I), z1 ~ p(z1|z2), then E[x|z1].
    - The `kl` metric (and `evaluation.elbo(...).kl`) is the Monte Carlo estimate of
      E_q[ln q(z1|x) + ln q(z2|z1) - ln p(z1|z2) - ln p(z2)] from the same draws as the
      reconstruction term (no closed form here), so it is noisy per example and can be
      negative for one draw; -ELBO = reconstruction + kl as for `VAE`.
    - Posteriors are diagonal; objectives "elbo" and "iwae" (`beta` weights the whole
      ln p(z1|z2) + ln p(z2) - ln q(z1|x) - ln q(z2|z1) part in both).
    - It cannot be exported (`keras_vae.export` raises, naming why); save the Keras model.
    - `VAEDetector` (closed-form KL of a single layer) does not apply; `evaluation`'s anomaly
      scores do.

    Args:
        encoder: x -> [z1_mean, z1_log_var] (B, K1), a `keras_vae.networks` encoder.
        decoder: z1 (B, K1) -> the likelihood's parameter, a `keras_vae.networks` decoder.
        z2_encoder: z1 (B, K1) -> [z2_mean, z2_log_var] (B, K2), q(z2|z1).
        z1_prior: z2 (B, K2) -> [z1_mean, z1_log_var] (B, K1), p(z1|z2).
        latent_dim: K1 (inferred when None).
        **kwargs: the other arguments of `VAE` (likelihood, num_samples, beta, objective,
            decoder_variance, seed, name).
    """

    export_unsupported = EXPORT_UNSUPPORTED

    def __init__(self, encoder, decoder, z2_encoder, z1_prior, latent_dim=None,
                 posterior="diagonal", objective="elbo", **kwargs):
        if posterior != "diagonal":
            raise ValueError(f"HierarchicalVAE supports posterior='diagonal' only, got "
                             f"{posterior!r}.")
        if kwargs.get("prior", "standard") != "standard":
            raise ValueError(f"HierarchicalVAE's top layer has the prior p(z2) = N(0, I); got "
                             f"prior={kwargs['prior']!r}. Use prior='standard' here, or a "
                             "one-layer VAE (kv.VAE.mlp, kv.VAE.conv) for a learned prior.")
        if objective not in HIERARCHICAL_OBJECTIVES:
            raise ValueError(f"HierarchicalVAE supports objective 'elbo' or 'iwae' (k = "
                             f"num_samples), got {objective!r}.")
        super().__init__(encoder, decoder, latent_dim, posterior=posterior, objective=objective,
                         **kwargs)
        if self.autoregressive:
            raise ValueError("HierarchicalVAE does not take an autoregressive decoder; use "
                             "networks.mlp_decoder or networks.conv_decoder.")
        k1 = self.latent_dim
        for net, what in ((z2_encoder, "z2_encoder"), (z1_prior, "z1_prior")):
            if not isinstance(net, keras.Model) or len(net.outputs) != 2:
                raise ValueError(f"{what} must be a keras.Model returning [mean, log_var] (e.g. "
                                 "from keras_vae.hierarchical.latent_networks), got "
                                 f"{type(net).__name__}.")
        k2 = int(z2_encoder.outputs[0].shape[-1])
        builder = f"keras_vae.hierarchical.latent_networks(({k1}, {k2}))"
        _check_gaussian_net(z2_encoder, "z2_encoder", k1, k2, builder)
        _check_gaussian_net(z1_prior, "z1_prior", k2, k1, builder)
        self.z2_encoder = z2_encoder
        self.z1_prior = z1_prior
        self.latent_dims = (k1, k2)

    # ----------------------------------------------------------------- constructors
    @classmethod
    def mlp(cls, input_shape=(784,), latent_dims=(32, 16), hidden_units=(512, 256),
            activation="relu", likelihood="bernoulli", latent_hidden_units=DEFAULT_LATENT_HIDDEN,
            latent_activation="tanh", **kwargs):
        """The two-layer version of `VAE.mlp`: its encoder x -> q(z1|x) and decoder
        z1 -> p(x|z1), plus `latent_networks(latent_dims, latent_hidden_units)`."""
        k1, _ = _check_latent_dims(latent_dims)
        encoder = networks.mlp_encoder(input_shape, k1, hidden_units, activation, "diagonal")
        decoder = networks.mlp_decoder(k1, input_shape, tuple(reversed(hidden_units)),
                                       activation)
        z2_encoder, z1_prior = latent_networks(latent_dims, latent_hidden_units,
                                               latent_activation)
        return cls(encoder, decoder, z2_encoder, z1_prior, k1, likelihood=likelihood, **kwargs)

    @classmethod
    def conv(cls, input_shape=(28, 28, 1), latent_dims=(32, 16), filters=(32, 64),
             dense_units=256, activation="relu", likelihood="bernoulli",
             latent_hidden_units=DEFAULT_LATENT_HIDDEN, latent_activation="tanh", **kwargs):
        """The two-layer version of `VAE.conv`: its convolutional encoder and decoder for z1,
        plus `latent_networks(latent_dims, latent_hidden_units)`."""
        k1, _ = _check_latent_dims(latent_dims)
        encoder = networks.conv_encoder(input_shape, k1, filters, 3, dense_units, activation,
                                        "diagonal")
        decoder = networks.conv_decoder(k1, input_shape, tuple(reversed(filters)), 3,
                                        dense_units, activation)
        z2_encoder, z1_prior = latent_networks(latent_dims, latent_hidden_units,
                                               latent_activation)
        return cls(encoder, decoder, z2_encoder, z1_prior, k1, likelihood=likelihood, **kwargs)

    # ----------------------------------------------------------------- the model
    def _gaussian(self, net, z, training):
        """`net`'s [mean, log_var] for points z (..., K_in), float32, shaped (..., K_out)."""
        lead = tuple(ops.shape(z)[:-1])
        mean, log_var = net(ops.reshape(z, (-1, ops.shape(z)[-1])), training=training)
        k = ops.shape(mean)[-1]
        return (ops.reshape(ops.cast(mean, "float32"), lead + (k,)),
                ops.reshape(ops.cast(log_var, "float32"), lead + (k,)))

    def _latent_terms(self, z1, z1_mean, z1_log_var, draw_z2, training=False):
        """For draws z1 (S, B, K1) of q(z1|x), with z2 = draw_z2(z2_mean, z2_log_var) the
        reparameterized draw of q(z2|z1): the per-draw (S, B)
        ln q(z1|x) + ln q(z2|z1) - ln p(z1|z2) - ln p(z2)."""
        log_q1 = distributions.diagonal_gaussian_log_density(z1, z1_mean, z1_log_var)
        z2_mean, z2_log_var = self._gaussian(self.z2_encoder, z1, training)
        z2 = draw_z2(z2_mean, z2_log_var)
        log_q2 = distributions.diagonal_gaussian_log_density(z2, z2_mean, z2_log_var)
        p_mean, p_log_var = self._gaussian(self.z1_prior, z2, training)
        log_p1 = distributions.diagonal_gaussian_log_density(z1, p_mean, p_log_var)
        log_p2 = distributions.standard_normal_log_density(z2)
        return log_q1 + log_q2 - log_p1 - log_p2

    def importance_log_weights(self, x, num_samples, seed=None):
        """The importance log-weights of S = `num_samples` draws (z1, z2) ~ q(z1|x) q(z2|z1)
        per example:

            ln w_s = ln p(x|z1_s) + ln p(z1_s|z2_s) + ln p(z2_s) - ln q(z1_s|x) - ln q(z2_s|z1_s)

        (no beta: the evaluation path, `keras_vae.evaluation`). `seed`: an int, None or a
        `keras.random.SeedGenerator` (both layers' noise comes from one draw). Returns
        (log_w (S, B), log_lik (S, B) = ln p(x|z1_s), kl (B,) = the mean over the S draws of
        ln q(z1|x) + ln q(z2|z1) - ln p(z1|z2) - ln p(z2), an unbiased estimate of
        KL(q(z1, z2|x) || p(z1, z2))).
        """
        x = ops.cast(x, "float32")
        z1_mean, z1_log_var = self.encoder(x, training=False)
        z1_mean, z1_log_var = ops.cast(z1_mean, "float32"), ops.cast(z1_log_var, "float32")
        k1, k2 = self.latent_dims
        batch = ops.shape(z1_mean)[0]
        eps = keras.random.normal((num_samples, batch, k1 + k2), dtype="float32", seed=seed)
        z1 = z1_mean + ops.exp(0.5 * z1_log_var) * eps[..., :k1]
        eps2 = eps[..., k1:]
        kl_samples = self._latent_terms(
            z1, z1_mean, z1_log_var, lambda mean, log_var: mean + ops.exp(0.5 * log_var) * eps2)
        params = self._decode_samples(z1, x, False)
        log_lik = self.log_likelihood_given(x, params)                          # (S, B)
        return log_lik - kl_samples, log_lik, ops.mean(kl_samples, axis=0)

    def call(self, x, training=False):
        """Returns the dict of `VAE.call` and adds -ELBO's two terms with add_loss (for
        `objective="iwae"`, the negative importance-weighted bound, one term). With
        `num_samples` L > 1 the reconstruction and kl are averages over L draws (z1, z2).

        Returns:
            {"x_mean": E[x|z1] (averaged over the L draws), shaped like x; "z_mean": z1's
             posterior mean (B, K1); "reconstruction": -ln p(x|z1) (B,) in nats; "kl": the
             Monte Carlo ln q(z1|x) + ln q(z2|z1) - ln p(z1|z2) - ln p(z2) (B,) in nats}
        """
        x = ops.cast(x, "float32")
        z1_mean, z1_log_var = self.encoder(x, training=training)
        z1_mean, z1_log_var = ops.cast(z1_mean, "float32"), ops.cast(z1_log_var, "float32")
        num_samples = self.num_samples
        z1 = self.sampling([z1_mean, z1_log_var], num_samples=num_samples)     # (L, B, K1)
        kl_samples = self._latent_terms(  # (L, B)
            z1, z1_mean, z1_log_var, lambda mean, log_var: self.sampling([mean, log_var]),
            training)
        params = self._decode_samples(z1, x, training)
        log_lik_samples = self.log_likelihood_given(x, params)                 # (L, B)
        reconstruction = -ops.mean(log_lik_samples, axis=0)
        kl = ops.mean(kl_samples, axis=0)
        if self.objective == "elbo":
            self.add_loss(ops.mean(reconstruction))
            self.add_loss(self.beta * ops.mean(kl))
        else:
            log_w = log_lik_samples - self.beta * kl_samples
            bound = ops.logsumexp(log_w, axis=0) - math.log(num_samples)
            self.add_loss(-ops.mean(bound))
        x_mean = ops.mean(self.mean_from_params(params), axis=0)
        return {"x_mean": x_mean, "z_mean": z1_mean, "reconstruction": reconstruction,
                "kl": kl}

    # ----------------------------------------------------------------- user API
    def encode_top(self, x, batch_size=1024):
        """Parameters of q(z2|z1) at z1 = the mean of q(z1|x): `(z2_mean, z2_log_var)`, NumPy
        arrays (n, K2)."""
        z1_mean, _ = self.encode(x, batch_size)
        return tuple(self._run_batched(lambda b: self.z2_encoder(b, training=False), z1_mean,
                                       batch_size))

    def sample(self, n, seed=None):
        """Draws n examples ancestrally, z2 ~ N(0, I) then z1 ~ p(z1|z2), and returns E[x|z1],
        shape (n, *input_shape). n = 0 gives an empty array of that shape."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"n must be a whole number >= 0 (how many samples), got {n!r}.")
        if n == 0:
            return np.zeros((0,) + self.input_shape_, dtype="float32")
        k1, k2 = self.latent_dims
        eps = keras.random.normal((int(n), k1 + k2), seed=seed)
        mean, log_var = self._gaussian(self.z1_prior, eps[:, k1:], False)
        z1 = mean + ops.exp(0.5 * log_var) * eps[:, :k1]
        return self.decode(ops.convert_to_numpy(z1), seed=seed)

    # ----------------------------------------------------------------- serialization
    def get_config(self):
        """`VAE.get_config` plus the serialized `z2_encoder` and `z1_prior` (no weights)."""
        return {**super().get_config(),
                "z2_encoder": keras.saving.serialize_keras_object(self.z2_encoder),
                "z1_prior": keras.saving.serialize_keras_object(self.z1_prior)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("encoder", "decoder", "z2_encoder", "z1_prior"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)
