"""The variational autoencoder: a subclassed `keras.Model` trained by plain `model.fit`.

    vae = VAE.kingma_welling(input_dim=784, latent_dim=20)
    vae.compile(optimizer="adam")
    vae.fit(x_train, epochs=10, batch_size=100, validation_data=x_val)
    vae.evaluate(x_test, return_dict=True)  # loss, reconstruction, kl, neg_elbo (nats/example)

`call(x)` encodes, samples z with the `Sampling` layer, decodes, and adds the two terms of
-ELBO (THEORY eqs [2]-[7]) with `add_loss`: the Monte Carlo reconstruction error averaged over
`num_samples` draws, and `beta` times the closed-form KL (or, with `objective="iwae"`, the
importance-weighted bound of Burda et al. instead). So `fit`, `evaluate`, `predict` and
`validation_data` all work without targets.
"""

import math

import keras
import numpy as np
from keras import ops

from keras_vae import compat, distributions, drawing, evaluation, likelihoods, networks, priors
from keras_vae.callbacks.stop_on_nan import StopOnNaN
from keras_vae.layers import Sampling
from keras_vae.networks import decode_samples

LIKELIHOODS = ("bernoulli", "gaussian") + likelihoods.TWO_PARAMETER
OBJECTIVES = ("elbo", "iwae", "iwae_dreg")


def monitored_metric(objective):
    """The validation metric that tracks what `objective` trains, for checkpoints, early
    stopping and schedules: the -ELBO ("val_neg_elbo", beta-independent unlike val_loss), or
    for the IWAE objectives the bound itself ("val_loss"): the ELBO of such a model gets worse
    as the bound improves, so its best epoch by the ELBO is not its best model."""
    return "val_neg_elbo" if objective == "elbo" else "val_loss"


DEFAULT_STEPS_PER_EXECUTION = 20

# The model zoo lives in a higher layer (keras_vae.zoo), which registers its loader here when it
# is imported, so `VAE.from_preset` / `VAE.from_pretrained` work without this module importing
# upward.
_PRESET_LOADER = None


def register_preset_loader(load):
    """Makes `VAE.from_preset(handle, **kwargs)` (and its alias `VAE.from_pretrained`) call
    `load(handle, **kwargs)`."""
    global _PRESET_LOADER
    _PRESET_LOADER = load


def _as_numpy(x):
    """Array-likes and backend tensors to NumPy; datasets and generators pass through."""
    if isinstance(x, np.ndarray):
        return x
    if isinstance(x, (list, tuple)) and x and not isinstance(x[0], (list, tuple, np.ndarray)):
        return np.asarray(x)
    if isinstance(x, (list, tuple)):
        return np.asarray(x)
    if hasattr(x, "shape") and hasattr(x, "dtype") and not hasattr(x, "element_spec"):
        return np.asarray(ops.convert_to_numpy(x))
    return None


def _under_distribution_strategy(model):
    """True when the model was built under a tf.distribute strategy other than the default."""
    strategy = getattr(model, "distribute_strategy", None)  # TensorFlow backend only
    return strategy is not None and not type(strategy).__name__.startswith("_Default")


def _xla_by_default(model, run_eagerly):
    """Whether "auto" should mean XLA: TensorFlow, CPU or not, except where Keras refuses it.

    Keras's own rule (every layer supports jit, op determinism off) decides; only its
    "CPU-only machine" exception is dropped. run_eagerly is checked here because Keras warns
    when it has to turn a requested jit_compile=True off.
    """
    if keras.backend.backend() != "tensorflow" or run_eagerly:
        return False
    if _under_distribution_strategy(model):
        return False
    return compat.model_supports_jit(model)  # the rule behind Keras's "auto"


def _check_batch_size(batch_size):
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
            or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}.")


class NonFiniteLoss(RuntimeError):
    """`VAE.fit` stopped because the loss became NaN or infinite; the message names where."""


class _NonFiniteGuard(StopOnNaN):
    """StopOnNaN that keeps the model's and optimizer's variables of the start of each epoch,
    so `VAE.fit` can put them back after stopping on a non-finite loss."""

    def _variables(self):
        optimizer = getattr(self.model, "optimizer", None)
        return list(self.model.variables) + list(getattr(optimizer, "variables", []) or [])

    def on_epoch_begin(self, epoch, logs=None):
        super().on_epoch_begin(epoch, logs)
        self._saved = {id(v): ops.convert_to_numpy(v) for v in self._variables()}

    def restore(self):
        saved = getattr(self, "_saved", {})
        for variable in self._variables():
            value = saved.get(id(variable))
            if value is None:  # created during the epoch (the optimizer's slots): start over
                value = np.zeros(tuple(variable.shape),
                                 keras.backend.standardize_dtype(variable.dtype))
            variable.assign(value)

    def message(self, model):
        epoch, batch = self.stopped_at
        per_execution = int(getattr(model, "steps_per_execution", 1) or 1)
        where = (f"batch {batch + 1}" if per_execution == 1 else
                 f"one of batches {max(1, batch + 2 - per_execution)}-{batch + 1} (run "
                 f"{per_execution} per compiled execution; compile with "
                 "steps_per_execution=1 to find the batch)")
        return (f"the loss became NaN or infinite in epoch {epoch + 1}, {where}; training "
                f"stopped and the weights of the start of epoch {epoch + 1} were restored. "
                "Check the data for NaN or infinite values, or lower the learning rate "
                "(fit(..., stop_on_nan=False) trains on regardless).")


@keras.saving.register_keras_serializable(package="keras_vae")
class VAE(keras.Model):
    """Variational autoencoder with a Gaussian posterior q(z|x) and the prior p(z) = N(0, I)
    or a learned one (`prior`: the VampPrior or a mixture of Gaussians, `keras_vae.priors`).

    Args:
        encoder: `keras.Model` mapping x (B, *input_shape) to `[z_mean, z_log_var]` (both (B, K))
            for `posterior="diagonal"`, or `[z_mean, z_scale_tril]` ((B, K), (B, K, K)) for
            `posterior="full"`. No random op inside (see `networks.posterior_head`).
        decoder: `keras.Model` mapping z (B, K) to the likelihood's parameter, shaped like x:
            logits for "bernoulli", means for "gaussian".
        latent_dim: K. Inferred from the encoder when None; checked against it otherwise.
        likelihood: "bernoulli" (data in [0, 1]; summed binary cross-entropy from logits) or
            "gaussian" (real-valued data); for tables "gaussian_hetero", "student_t" or
            "laplace" (`keras_vae.likelihoods`: the decoder returns a location and a log-scale
            per feature, shaped (B, *input_shape, 2); see `scaling.tabular_networks`).
        posterior: "diagonal" or "full" (full covariance through a triangular factor).
        num_samples: L, the Monte Carlo samples of z per example in the reconstruction term
            (for `objective="iwae"`, the k of the importance-weighted bound).
        beta: weight of the KL term (1 gives the ELBO; a `KLWarmup` callback may change it).
        objective: what training minimizes. "elbo" (default): -ELBO, the Monte Carlo
            reconstruction error plus `beta` times the closed-form KL, two `add_loss` terms.
            "iwae": the negative importance-weighted bound of Burda et al. (2015) with
            k = `num_samples`, -ln (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x) (THEORY, "Beyond the
            notes"), one `add_loss` term: as tight as the ELBO at k = 1 (equal in expectation)
            and tighter as k grows, which trains models of higher likelihood. `beta` then
            weights ln p(z) - ln q(z|x) inside the bound. "iwae_dreg": the same bound (same
            loss values) with the doubly reparameterized gradient of Tucker et al. (2018) for
            the encoder: unbiased like the plain one, but without its score-function term,
            the noise that drowns the encoder's gradient as k grows and q nears the
            posterior (Rainforth et al. 2018); with the exact posterior the encoder's
            gradient is exactly zero (far from the posterior it can be the noisier one). The
            decoder's gradient is the plain one. It decodes the k samples twice (once with z
            held fixed, for the decoder's gradient), so a step costs more.
            The reported `reconstruction`, `kl` and `neg_elbo` metrics are the ELBO's
            either way; `loss` is the bound.
        decoder_variance: Gaussian likelihood only: "learned" (a trainable per-feature
            log-variance) or a positive float (a fixed variance for every feature).
        seed: seed of the sampling noise.
        prior: p(z): "standard" (N(0, I), closed-form KL), "vamp" (the VampPrior of Tomczak &
            Welling 2018: the mixture of the encoder's posteriors at `prior_components`
            trainable pseudo-inputs; diagonal posterior only) or "mog" (a trainable mixture
            of `prior_components` diagonal Gaussians); see `keras_vae.priors`. A learned
            prior has no closed-form KL: training and the `kl` metric use the Monte Carlo
            estimate ln q(z|x) - ln p(z) at the posterior samples z (unbiased), and the
            importance-weighted bounds use ln p(z) itself.
        prior_components: C, the mixture's components (None: 500 for "vamp", the paper's,
            10 for "mog").
        free_bits: lambda >= 0, the free-bits floor of Kingma et al. (2016) in nats per
            latent dimension, `objective="elbo"` only. The training loss's KL term becomes
            sum_j max(lambda, mean over the batch of KL_j): per latent dimension j for the
            standard prior with the diagonal posterior (its closed-form KL splits over
            dimensions); otherwise (a learned prior's KL estimate, a full posterior's KL do
            not split) one group, max(K * lambda, mean KL). Only the loss
            changes: the reported `kl` and `neg_elbo` stay the true KL and -ELBO.
    """

    def __init__(self, encoder, decoder, latent_dim=None, likelihood="bernoulli",
                 posterior="diagonal", num_samples=1, beta=1.0, decoder_variance="learned",
                 seed=None, objective="elbo", prior="standard", prior_components=None,
                 free_bits=0.0, **kwargs):
        super().__init__(**kwargs)
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"Unknown likelihood {likelihood!r}: expected one of {LIKELIHOODS} "
                             "('bernoulli' for data in [0, 1], 'gaussian' for real values, "
                             "the others for tables: see keras_vae.likelihoods).")
        networks.check_posterior(posterior)
        if objective not in OBJECTIVES:
            raise ValueError(f"Unknown objective {objective!r}: expected one of {OBJECTIVES} "
                             "('elbo' for the ELBO, 'iwae' for the importance-weighted bound "
                             "with k = num_samples, 'iwae_dreg' for that bound with "
                             "doubly reparameterized encoder gradients).")
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be an integer >= 1 (L in THEORY eq [7]), "
                             f"got {num_samples!r}.")
        if not float(beta) >= 0.0:
            raise ValueError(f"beta must be a number >= 0 (the KL weight), got {beta!r}.")
        components = priors.check_prior(prior, prior_components, posterior)
        if isinstance(free_bits, bool) or not isinstance(free_bits, (int, float)) \
                or not float(free_bits) >= 0.0 or not math.isfinite(float(free_bits)):
            raise ValueError(f"free_bits must be a number >= 0 (nats per latent dimension), "
                             f"got {free_bits!r}.")
        if free_bits and objective != "elbo":
            raise ValueError("free_bits floors the ELBO's KL term: use objective='elbo', or "
                             "free_bits=0 with the importance-weighted objectives.")
        if likelihood == "gaussian" and decoder_variance != "learned":
            if isinstance(decoder_variance, str) or not float(decoder_variance) > 0:
                raise ValueError("decoder_variance must be 'learned' or a positive float, got "
                                 f"{decoder_variance!r}.")
        if not isinstance(encoder, keras.Model) or not isinstance(decoder, keras.Model):
            raise ValueError("encoder and decoder must be keras.Model instances (for example "
                             "from keras_vae.networks), got "
                             f"{type(encoder).__name__} and {type(decoder).__name__}.")

        self.input_shape_ = tuple(encoder.inputs[0].shape[1:])
        outputs = encoder.outputs
        if len(outputs) != 2:
            raise ValueError(f"The encoder must return 2 tensors, [z_mean, z_log_var] or "
                             f"[z_mean, z_scale_tril]; it returns {len(outputs)}.")
        encoder_k = outputs[0].shape[-1]
        if latent_dim is None:
            latent_dim = encoder_k
        networks.check_latent_dim(latent_dim)
        if encoder_k != latent_dim:
            raise ValueError(f"latent_dim={latent_dim} but the encoder's z_mean has {encoder_k} "
                             "units; pass latent_dim=None to infer it.")
        second = tuple(outputs[1].shape[1:])
        expected = (latent_dim,) if posterior == "diagonal" else (latent_dim, latent_dim)
        if second != expected:
            raise ValueError(f"posterior={posterior!r} expects the encoder's second output to have "
                             f"shape (batch, {', '.join(map(str, expected))}), got (batch, "
                             f"{', '.join(map(str, second))}). Build the encoder with "
                             f"networks.posterior_head(h, {latent_dim}, {posterior!r}).")
        if tuple(decoder.inputs[0].shape[1:]) != (latent_dim,):
            raise ValueError(f"The decoder takes inputs of shape {tuple(decoder.inputs[0].shape)}, "
                             f"expected (None, {latent_dim}) for latent_dim={latent_dim}.")
        self.autoregressive = bool(getattr(decoder, "autoregressive", False))
        if self.autoregressive and likelihood != "bernoulli":
            raise ValueError("An autoregressive decoder (networks.PixelCNNDecoder) models binary "
                             "pixels: use likelihood='bernoulli', or conv_decoder for real values.")
        self.likelihood = likelihood
        if tuple(decoder.outputs[0].shape[1:]) != self.params_shape:
            raise ValueError(f"The decoder returns shape {tuple(decoder.outputs[0].shape[1:])} per "
                             f"example but the encoder takes {self.input_shape_}; the "
                             f"{likelihood!r} likelihood needs {self.params_shape}.")

        self.encoder = encoder
        self.decoder = decoder
        self.latent_dim = latent_dim
        self.likelihood = likelihood
        self.posterior = posterior
        self.num_samples = num_samples
        self.objective = objective
        self.beta_target = float(beta)
        self.decoder_variance = decoder_variance
        self.seed = seed
        self.prior = prior
        self.prior_components = components
        self.free_bits = float(free_bits)
        # Sampling, the KL and the likelihood run in float32 even under a mixed-precision
        # policy: only the encoder and decoder networks compute in float16/bfloat16.
        self.sampling = Sampling(seed=seed, name="sampling", dtype="float32")
        self.beta = self.add_weight(shape=(), initializer=keras.initializers.Constant(beta),
                                    trainable=False, name="beta", dtype="float32")
        if likelihood == "gaussian" and decoder_variance == "learned":
            self.decoder_log_var = self.add_weight(shape=self.input_shape_, initializer="zeros",
                                                   name="decoder_log_var", dtype="float32")
        if prior != "standard":
            self.prior_layer = priors.make_prior(prior, components, latent_dim,
                                                 self.input_shape_, likelihood, seed)
        self.reconstruction_tracker = keras.metrics.Mean(name="reconstruction")
        self.kl_tracker = keras.metrics.Mean(name="kl")
        self.neg_elbo_tracker = keras.metrics.Mean(name="neg_elbo")
        self.built = True

    # ----------------------------------------------------------------- constructors
    @classmethod
    def kingma_welling(cls, input_dim=784, latent_dim=20, hidden_units=500,
                       likelihood="bernoulli", posterior="diagonal", **kwargs):
        """The original MLP of Kingma & Welling (2013): one tanh hidden layer of 500 units in
        the encoder and in the decoder, Bernoulli decoder by default."""
        encoder = networks.mlp_encoder((input_dim,), latent_dim, (hidden_units,), "tanh", posterior)
        decoder = networks.mlp_decoder(latent_dim, (input_dim,), (hidden_units,), "tanh")
        return cls(encoder, decoder, latent_dim, likelihood=likelihood, posterior=posterior,
                   **kwargs)

    @classmethod
    def mlp(cls, input_shape=(784,), latent_dim=20, hidden_units=(512, 256), activation="relu",
            likelihood="bernoulli", posterior="diagonal", **kwargs):
        """A deeper MLP: the encoder uses `hidden_units`, the decoder the same in reverse."""
        encoder = networks.mlp_encoder(input_shape, latent_dim, hidden_units, activation, posterior)
        decoder = networks.mlp_decoder(latent_dim, input_shape, tuple(reversed(hidden_units)),
                                       activation)
        return cls(encoder, decoder, latent_dim, likelihood=likelihood, posterior=posterior,
                   **kwargs)

    @classmethod
    def conv(cls, input_shape=(28, 28, 1), latent_dim=16, filters=(32, 64), dense_units=256,
             activation="relu", likelihood="bernoulli", posterior="diagonal", **kwargs):
        """A convolutional VAE for HxWxC images (stride-2 convolutions, mirrored decoder)."""
        encoder = networks.conv_encoder(input_shape, latent_dim, filters, 3, dense_units,
                                        activation, posterior)
        decoder = networks.conv_decoder(latent_dim, input_shape, tuple(reversed(filters)), 3,
                                        dense_units, activation)
        return cls(encoder, decoder, latent_dim, likelihood=likelihood, posterior=posterior,
                   **kwargs)

    @classmethod
    def pixel_cnn(cls, input_shape=(28, 28, 1), latent_dim=32, filters=(32, 64),
                  dense_units=128, pixel_filters=32, pixel_layers=3, latent_units=256,
                  latent_channels=3, activation="relu", posterior="diagonal", gated=False,
                  **kwargs):
        """A VAE with an autoregressive decoder for binary one-channel images (a small
        PixelVAE): the conv encoder of `VAE.conv` and a `networks.PixelCNNDecoder`, whose
        logits see the pixels before each one as well as z. Bernoulli likelihood only.
        `gated=True` gives the decoder gated residual layers (tanh * sigmoid)."""
        encoder = networks.conv_encoder(input_shape, latent_dim, filters, 3, dense_units,
                                        activation, posterior)
        decoder = networks.PixelCNNDecoder(latent_dim, input_shape, pixel_filters,
                                           pixel_layers, latent_units, latent_channels,
                                           gated=gated)
        return cls(encoder, decoder, latent_dim, posterior=posterior, **kwargs)

    # ----------------------------------------------------------------- the model
    @property
    def event_ndim(self):
        """How many trailing axes of x form one example (1 for vectors, 3 for HxWxC)."""
        return len(self.input_shape_)

    @property
    def params_shape(self):
        """The decoder's output shape per example: `input_shape_`, or `input_shape_ + (2,)`
        ([location, log-scale] per feature) for the likelihoods of `keras_vae.likelihoods`."""
        if self.likelihood in likelihoods.TWO_PARAMETER:
            return tuple(self.input_shape_) + (2,)
        return tuple(self.input_shape_)

    def log_likelihood_given(self, x, params):
        """ln p(x|z) from the decoder's output `params` (..., *params_shape); returns (...,)."""
        if self.likelihood == "bernoulli":
            return distributions.bernoulli_log_likelihood(x, params, self.event_ndim)
        if self.likelihood in likelihoods.TWO_PARAMETER:
            return likelihoods.location_scale_log_likelihood(self.likelihood, x, params,
                                                             self.event_ndim)
        return distributions.gaussian_log_likelihood(x, params, self.decoder_log_variance(),
                                                     self.event_ndim)

    def decoder_log_variance(self):
        """The Gaussian decoder's log-variance (per feature, or a fixed scalar)."""
        if self.decoder_variance == "learned":
            return self.decoder_log_var
        return float(np.log(float(self.decoder_variance)))

    def mean_from_params(self, params):
        """E[x|z]: sigmoid(logits) for Bernoulli, the means themselves for Gaussian, the
        location (the mean; the median too) for the location-scale likelihoods."""
        if self.likelihood == "bernoulli":
            return ops.sigmoid(params)
        if self.likelihood in likelihoods.TWO_PARAMETER:
            return params[..., 0]
        return params

    def kl(self, z_mean, z_scale):
        """Closed-form KL(q(z|x) || N(0, I)) per example, THEORY eq [27]."""
        if self.posterior == "diagonal":
            return distributions.kl_to_standard_normal(z_mean, z_scale)
        return distributions.kl_to_standard_normal_tril(z_mean, z_scale)

    def posterior_log_density(self, z, z_mean, z_scale):
        """ln q(z|x) for points z (..., B, K) under the posterior parameters (B, ...)."""
        if self.posterior == "diagonal":
            return distributions.diagonal_gaussian_log_density(z, z_mean, z_scale)
        return distributions.tril_gaussian_log_density(z, z_mean, z_scale)

    def prior_log_density(self, z, mixture=None):
        """ln p(z) for points z (..., K); returns (...,): the standard normal, or the learned
        mixture (`mixture`: `prior_parameters()`'s output, computed here when None)."""
        if self.prior == "standard":
            return distributions.standard_normal_log_density(z)
        if mixture is None:
            mixture = self.prior_parameters()
        return priors.mixture_log_density(z, *mixture)

    def prior_parameters(self):
        """A learned prior as the mixture it is, (logits (C,), means (C, K), log_vars (C, K))
        as float32 tensors (the VampPrior's: the encoder's posteriors at its pseudo-inputs);
        None for the standard prior."""
        if self.prior == "standard":
            return None
        return self.prior_layer.mixture(self.encoder)

    def prior_mixture(self):
        """p(z) as a mixture of diagonal Gaussians in NumPy: {"weights" (C,), "means" (C, K),
        "log_vars" (C, K)}; the standard prior is the one component N(0, I)."""
        if self.prior == "standard":
            k = self.latent_dim
            return {"weights": np.ones(1), "means": np.zeros((1, k)),
                    "log_vars": np.zeros((1, k))}
        logits, means, log_vars = (np.asarray(ops.convert_to_numpy(a), dtype=np.float64)
                                   for a in self.prior_parameters())
        weights = np.exp(logits - logits.max())
        return {"weights": weights / weights.sum(), "means": means, "log_vars": log_vars}

    def set_pseudo_inputs(self, x, seed=None):
        """prior="vamp": puts C examples of x (drawn without replacement with NumPy's
        default_rng(seed); all of x, repeated, when it has fewer than C) at the pseudo-inputs,
        instead of their random start."""
        if self.prior != "vamp":
            raise ValueError(f"set_pseudo_inputs applies to prior='vamp'; this VAE's prior is "
                             f"{self.prior!r}.")
        x = np.asarray(x, dtype="float32")
        self.check_data(x, "x")
        c = self.prior_components
        rng = np.random.default_rng(seed)
        index = (rng.choice(len(x), c, replace=False) if len(x) >= c
                 else np.resize(rng.permutation(len(x)), c))
        self.prior_layer.pseudo_inputs.assign(x[index])

    def kl_estimate(self, z, z_mean, z_scale, mixture=None):
        """KL(q(z|x) || p(z)) per example (B,): the closed form for the standard prior, else
        the Monte Carlo estimate mean_l [ln q(z_l|x) - ln p(z_l)] over the samples z (B, K) or
        (L, B, K) (unbiased; one sample is the single-sample estimate)."""
        if self.prior == "standard":
            return self.kl(z_mean, z_scale)
        log_ratio = (self.posterior_log_density(z, z_mean, z_scale)
                     - self.prior_log_density(z, mixture))
        return log_ratio if len(z.shape) == 2 else ops.mean(log_ratio, axis=0)

    def _kl_loss(self, kl, z_mean, z_scale):
        """The training loss's KL term (a scalar, before beta): mean KL, or with free bits
        sum_j max(lambda, batch-mean KL_j) (see the class docstring)."""
        if not self.free_bits:
            return ops.mean(kl)
        if self.prior == "standard" and self.posterior == "diagonal":
            return priors.free_bits_kl(priors.standard_normal_kl_per_dim(z_mean, z_scale),
                                       self.free_bits)
        return priors.free_bits_kl(ops.expand_dims(kl, -1), self.free_bits * self.latent_dim)

    def importance_log_weights(self, x, num_samples, seed=None):
        """The importance log-weights of S = `num_samples` posterior samples per example, the
        terms of the importance-weighted estimate of ln p(x) (THEORY, "Beyond the notes"):

            ln w_s = ln p(x|z_s) + ln p(z_s) - ln q(z_s|x),   z_s ~ q(z|x),

        with no beta and no training-time noise handling: this is the evaluation path
        (`keras_vae.evaluation`). `seed` is a `keras.random` seed (a SeedGenerator inside
        compiled code). Returns (log_w (S, B), log_lik (S, B) = ln p(x|z_s),
        kl (B,) = KL(q(z|x) || p(z)): closed form for the standard prior, for a learned one
        the mean of ln q(z_s|x) - ln p(z_s) over these S samples).
        """
        z_mean, z_scale = self.encoder(x, training=False)
        eps = keras.random.normal((num_samples,) + tuple(ops.shape(z_mean)),
                                  dtype=z_mean.dtype, seed=seed)
        if self.posterior == "diagonal":
            z = z_mean + ops.exp(0.5 * z_scale) * eps
            # ln q(z|x) from eps: ln N(z | mu, diag(s^2)) = ln N(eps | 0, I) - sum ln s.
            log_det = 0.5 * ops.sum(z_scale, axis=-1)
        else:
            z = z_mean + ops.einsum("bij,sbj->sbi", z_scale, eps)
            log_det = ops.sum(ops.log(ops.diagonal(z_scale, axis1=-2, axis2=-1)), axis=-1)
        log_q = distributions.standard_normal_log_density(eps) - log_det       # (S, B)
        params = decode_samples(self.decoder, z, x)
        params = ops.reshape(params, (num_samples, -1) + tuple(self.params_shape))
        log_lik = self.log_likelihood_given(x, params)                         # (S, B)
        log_p = self.prior_log_density(z)
        log_w = log_lik + log_p - log_q
        if self.prior == "standard":
            return log_w, log_lik, self.kl(z_mean, z_scale)
        return log_w, log_lik, ops.mean(log_q - log_p, axis=0)

    def call(self, x, training=False):
        """Returns a dict of per-example tensors and adds -ELBO's two terms with add_loss (for
        `objective="iwae"`, the negative importance-weighted bound, one term).

        Returns:
            {"x_mean": E[x|z] for the sampled z (averaged over the L samples), shaped like x;
             "z_mean": (B, K); "reconstruction": -E_q ln p(x|z) (B,) in nats;
             "kl": KL(q(z|x) || p(z)) (B,) in nats}
        """
        x = ops.cast(x, "float32")
        z_mean, z_scale = self.encoder(x, training=training)
        z_mean, z_scale = ops.cast(z_mean, "float32"), ops.cast(z_scale, "float32")
        num_samples = self.num_samples
        if num_samples == 1 and self.objective == "elbo":
            z = self.sampling([z_mean, z_scale])
            params = ops.cast(decode_samples(self.decoder, z, x, training), "float32")
            log_lik = self.log_likelihood_given(x, params)
            x_mean = self.mean_from_params(params)
        else:
            z = self.sampling([z_mean, z_scale], num_samples=num_samples)  # (L, B, K)
            params = self._decode_samples(z, x, training)
            log_lik_samples = self.log_likelihood_given(x, params)  # (L, B)
            log_lik = ops.mean(log_lik_samples, axis=0)  # eq [7]
            x_mean = ops.mean(self.mean_from_params(params), axis=0)
        reconstruction = -log_lik
        mixture = self.prior_parameters()  # None for the standard prior
        kl = self.kl_estimate(z, z_mean, z_scale, mixture)
        if self.objective == "elbo":
            self.add_loss(ops.mean(reconstruction))
            self.add_loss(self.beta * self._kl_loss(kl, z_mean, z_scale))
        else:  # ln (1/k) sum_i w_i, w_i = p(x|z_i) p(z_i) / q(z_i|x), computed in log space
            dreg = self.objective == "iwae_dreg"
            # DReG holds q's parameters fixed inside ln q: only z carries the encoder's gradient
            q_mean, q_scale = ((ops.stop_gradient(z_mean), ops.stop_gradient(z_scale)) if dreg
                               else (z_mean, z_scale))
            log_w = log_lik_samples + self.beta * (
                self.prior_log_density(z, mixture)
                - self.posterior_log_density(z, q_mean, q_scale))  # (L, B)
            log_sum = ops.logsumexp(log_w, axis=0)
            bound = log_sum - math.log(num_samples)
            if dreg:
                prior_fixed_z = (None if mixture is None else
                                 self.prior_log_density(ops.stop_gradient(z), mixture))
                bound = self._with_dreg_gradient(bound, log_w, log_sum, x, z, training,
                                                 prior_fixed_z)
            self.add_loss(-ops.mean(bound))
        return {"x_mean": x_mean, "z_mean": z_mean, "reconstruction": reconstruction, "kl": kl}

    def _decode_samples(self, z, x, training):
        """The decoder's outputs for the samples z (L, B, K) of x (B, ...), float32
        (L, B, *input_shape)."""
        params = decode_samples(self.decoder, z, x, training)
        return ops.reshape(ops.cast(params, "float32"), (ops.shape(z)[0], -1) + self.params_shape)

    def _with_dreg_gradient(self, bound, log_w, log_sum, x, z, training, prior_fixed_z=None):
        """The IWAE bound per example (B,), its value kept, with the doubly reparameterized
        gradient. `log_w` (L, B) must hold q's parameters fixed inside ln q.

        With ln w_i = ln p(x|z_i) + beta (ln p(z_i) - ln q(z_i|x)), z_i = mu + sigma eps_i and
        normalized weights v_i = w_i / sum_j w_j, the bound's gradient is sum_i v_i d ln w_i.
        For the decoder that is kept. For the encoder it splits into the path through z_i and
        the score term -beta sum_i v_i d ln q(z_i)/d phi at fixed z_i, whose expectation is
        -beta sum_i (v_i - v_i^2) (d ln w_i/d z_i)(d z_i/d phi) (reparameterizing it, as
        Tucker et al. 2018 do for beta = 1). So the encoder gets sum_i c_i (d ln w_i/d z_i)
        (d z_i/d phi), c_i = (1 - beta) v_i + beta v_i^2: only the path through z, with q's
        parameters held fixed inside ln q. A decoder pass at z held fixed gives the decoder
        the rest of its weight, v_i - c_i. A learned prior's own parameters (the mixture's,
        or the encoder's through the VampPrior's pseudo-inputs) enter ln p(z_i) directly,
        outside the score term, so they get the plain weight v_i the same way:
        `prior_fixed_z` (L, B) is ln p(z_i) at z held fixed.
        """
        stop = ops.stop_gradient
        weights = stop(ops.exp(log_w - log_sum))
        coefficients = (1.0 - self.beta) * weights + self.beta * ops.square(weights)
        log_lik_fixed_z = self.log_likelihood_given(  # decoder weights only
            x, self._decode_samples(stop(z), x, training))
        rest = log_lik_fixed_z
        if prior_fixed_z is not None:
            rest = rest + self.beta * prior_fixed_z
        surrogate = ops.sum(coefficients * log_w + (weights - coefficients) * rest, axis=0)
        return stop(bound) + surrogate - stop(surrogate)

    def compile(self, *args, steps_per_execution=None, jit_compile="auto", **kwargs):
        """`keras.Model.compile` with two defaults changed for speed (benchmarks/README.md).

        `steps_per_execution` defaults to 20 instead of 1: running 20 training steps per
        compiled call cut the CPU time per step of the Kingma-Welling model by ~15% on 2
        cores; callbacks' per-batch hooks then fire every 20 steps. Pass 1 for the Keras
        default. Under a `tf.distribute` strategy it stays 1: Keras's multi-step loop over a
        distributed dataset fails on its last, partial execution (TensorFlow 2.21); so on the
        PyTorch backend, which only supports 1.

        `jit_compile="auto"` means XLA on TensorFlow on CPU too, where Keras's own "auto"
        turns it off: on 2 idle cores the XLA-compiled step trains the Kingma-Welling model
        ~1.4x faster (benchmarks/README.md, "Training throughput"). It stays off under a
        `tf.distribute` strategy, with `run_eagerly=True`, when op determinism is on, and for
        a layer with `supports_jit=False`, as in Keras. Pass `jit_compile=False` to opt out
        (compilation costs a few seconds).
        """
        if steps_per_execution is None:
            steps_per_execution = (1 if keras.backend.backend() == "torch"
                                   or _under_distribution_strategy(self)
                                   else DEFAULT_STEPS_PER_EXECUTION)
        if jit_compile == "auto" and _xla_by_default(self, kwargs.get("run_eagerly", False)):
            jit_compile = True
        self._requested_steps_per_execution = int(steps_per_execution)
        super().compile(*args, steps_per_execution=steps_per_execution,
                        jit_compile=jit_compile, **kwargs)

    def compile_from_config(self, config):
        # Keras skips compile on load for models that override compile() unless this is
        # overridden too; the saved config holds every argument, so replaying it is exact.
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if getattr(self, "optimizer", None) is not None and self.built:
            self.optimizer.build(self.trainable_variables)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        self.reconstruction_tracker.update_state(y_pred["reconstruction"])
        self.kl_tracker.update_state(y_pred["kl"])
        self.neg_elbo_tracker.update_state(y_pred["reconstruction"] + y_pred["kl"])
        return self.get_metrics_result()

    # ----------------------------------------------------------------- input checks
    def check_data(self, data, what="x"):
        """Raises a ValueError naming the problem if `data` cannot be this VAE's input.

        Checks arrays fully (shape, finite values, [0, 1] range for Bernoulli) and the element
        spec plus the first batch of a `tf.data.Dataset`. Later batches of a dataset are not
        read here: a NaN or infinity in one makes the loss non-finite, which stops `fit` (see
        its `stop_on_nan`), but Bernoulli data outside [0, 1] after the first batch is not
        detected (its loss stays finite).
        """
        arr = _as_numpy(data)
        if arr is None and hasattr(data, "element_spec"):
            spec = data.element_spec
            if isinstance(spec, tuple):
                spec = spec[0]
            if hasattr(spec, "shape") and spec.shape.rank is not None:
                got = tuple(spec.shape[1:])
                if len(got) != len(self.input_shape_) or any(
                        g is not None and g != e for g, e in zip(got, self.input_shape_)):
                    raise ValueError(
                        f"{what}: the dataset yields batches shaped {tuple(spec.shape)} but this "
                        f"VAE expects (batch, {', '.join(map(str, self.input_shape_))}). Batch "
                        "the dataset and reshape its elements to the encoder's input shape.")
            for first in data.take(1):
                if isinstance(first, tuple):
                    first = first[0]
                arr = np.asarray(first)
            if arr is None:
                return
        if arr is None:
            return
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number)
                                       or arr.dtype == bool):
            raise ValueError(f"{what} must be numeric, got dtype {arr.dtype}.")
        if arr.ndim >= 1 and tuple(arr.shape[1:]) != self.input_shape_:
            hint = ""
            if int(np.prod(arr.shape[1:])) == int(np.prod(self.input_shape_)):
                hint = f" Reshape it with x.reshape(-1, {', '.join(map(str, self.input_shape_))})."
            raise ValueError(
                f"{what} has shape {arr.shape} but this VAE expects (n, "
                f"{', '.join(map(str, self.input_shape_))}).{hint}")
        if arr.ndim < 1 or arr.shape[0] == 0:
            raise ValueError(f"{what} is empty: got shape {arr.shape}.")
        if not np.all(np.isfinite(arr)):
            bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
            raise ValueError(f"{what} contains {bad} NaN or infinite values; clean or impute "
                             "them before training.")
        if self.likelihood == "bernoulli":
            lo, hi = float(np.min(arr)), float(np.max(arr))
            if lo < 0.0 or hi > 1.0:
                raise ValueError(
                    f"{what} has values in [{lo:g}, {hi:g}] but the Bernoulli likelihood needs "
                    "data in [0, 1]. Scale it (e.g. x / 255.0) or use likelihood='gaussian'.")

    def fit(self, x=None, y=None, *args, validation_data=None, stop_on_nan=True, **kwargs):
        """`keras.Model.fit` without targets (`y` stays None): x and validation_data are
        checked first (see `check_data`), so bad data fails with a message before any training.
        Returns the History (loss, reconstruction, kl, neg_elbo per epoch, in nats per example).

        With `stop_on_nan` (the default) training stops as soon as the loss is NaN or infinite
        (a NaN in a later batch of a dataset, a diverging learning rate): the weights and the
        optimizer's state are put back to what they were at the start of that epoch and
        `NonFiniteLoss` is raised, naming the epoch and the batch. The loss is looked at once
        per compiled execution (`steps_per_execution` batches), so with more than one step
        per execution the message names the batches of that execution. Passing your own
        `keras.callbacks.TerminateOnNaN` (or `stop_on_nan=False`) turns this off.
        """
        self.check_data(x, "x")
        if validation_data is not None:
            val = validation_data[0] if isinstance(validation_data, tuple) else validation_data
            self.check_data(val, "validation_data")
        batch_size = args[0] if args else kwargs.get("batch_size")
        self._match_steps_per_execution(x, batch_size, kwargs.get("steps_per_epoch"))
        positional = len(args) > 3  # fit(x, y, batch_size, epochs, verbose, callbacks, ...)
        callbacks = args[3] if positional else kwargs.get("callbacks")
        guard = None
        if stop_on_nan and not any(isinstance(c, keras.callbacks.TerminateOnNaN)
                                   for c in (callbacks or [])):
            guard = _NonFiniteGuard()
            if positional:
                args = (*args[:3], [*(callbacks or []), guard], *args[4:])
            else:
                kwargs["callbacks"] = [*(callbacks or []), guard]
        history = super().fit(x, y, *args, validation_data=validation_data, **kwargs)
        if guard is not None and guard.stopped_at is not None:
            guard.restore()
            raise NonFiniteLoss(guard.message(self))
        return history

    def _match_steps_per_execution(self, x, batch_size, steps_per_epoch):
        """Makes the steps per compiled execution divide the epoch's steps where it can.

        Keras runs an epoch in executions of `steps_per_execution` steps and reports the end
        of each as its last step, so with 15 steps per epoch and 20 per execution the progress
        bar reads "20/15" (and a cached tf.data pipeline warns it was not read to its end).
        The requested number (compile's, default 20) is lowered to the epoch's step count when
        that is smaller, else to its largest divisor between 5 and the request, if any.
        """
        requested = getattr(self, "_requested_steps_per_execution", 1)
        if requested <= 1:
            return
        steps = steps_per_epoch
        if steps is None:
            if hasattr(x, "cardinality"):  # a tf.data.Dataset: its batches
                steps = int(x.cardinality())
            elif hasattr(x, "shape") and len(getattr(x, "shape", ())) > 0:
                steps = math.ceil(int(x.shape[0]) / (batch_size or 32))  # Keras's default
        if not steps or steps < 1:  # unknown (-2) or infinite (-1) cardinality
            return
        chosen = steps if steps <= requested else next(
            (d for d in range(requested, 4, -1) if steps % d == 0), requested)
        if chosen != self.steps_per_execution:
            self.steps_per_execution = chosen
            self.train_function = self.test_function = self.predict_function = None

    def evaluate(self, x=None, y=None, *args, **kwargs):
        """`keras.Model.evaluate` after the same data check as `fit`; with return_dict=True the
        keys are loss, reconstruction, kl and neg_elbo (nats per example)."""
        self.check_data(x, "x")
        return super().evaluate(x, y, *args, **kwargs)

    # ----------------------------------------------------------------- user API
    def _run_batched(self, fn, x, batch_size):
        _check_batch_size(batch_size)
        outs = []
        for start in range(0, len(x), batch_size):
            out = fn(ops.convert_to_tensor(x[start:start + batch_size], dtype="float32"))
            outs.append([ops.convert_to_numpy(ops.cast(o, "float32"))
                         for o in (out if isinstance(out, (list, tuple)) else [out])])
        return [np.concatenate(parts) for parts in zip(*outs)]

    def encode(self, x, batch_size=1024):
        """Parameters of q(z|x): `(z_mean, z_log_var)`, or `(z_mean, z_scale_tril)` for a full
        posterior, as NumPy arrays shaped (n, K) and (n, K) or (n, K, K)."""
        x = np.asarray(x)
        self.check_data(x, "x")
        z_mean, z_scale = self._run_batched(lambda b: self.encoder(b, training=False), x,
                                            batch_size)
        return z_mean, z_scale

    def decode(self, z, batch_size=1024, seed=None):
        """E[x|z] for latent points z (n, K): probabilities (Bernoulli) or means (Gaussian).

        An autoregressive decoder has no closed-form E[x|z]: it returns a draw x ~ p(x|z)
        instead, made pixel by pixel in raster order in one compiled loop of H * W steps
        (`keras_vae.drawing`), pixel i set where u_i < p(x_i = 1 | x_<i, z), u from
        `numpy.random.default_rng(seed)` in the bundle runtime's order (`seed` makes it
        reproducible)."""
        z = np.asarray(z, dtype="float32")
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"z must have shape (n, {self.latent_dim}), got {z.shape}.")
        _check_batch_size(batch_size)
        if len(z) == 0:  # empty in, empty out
            return np.zeros((0,) + self.input_shape_, dtype="float32")
        if self.autoregressive:
            rng = np.random.default_rng(seed)  # one stream across the batches
            draw, pixels = drawing.compiled(self.decoder), int(np.prod(self.input_shape_))
            return self._run_batched(lambda b: draw(b, rng.random((pixels, int(b.shape[0])))),
                                     z, batch_size)[0]
        fn = lambda b: self.mean_from_params(  # noqa: E731
            ops.cast(self.decoder(b, training=False), "float32"))
        return self._run_batched(fn, z, batch_size)[0]

    def sample(self, n, seed=None):
        """Draws n points z ~ p(z) from the prior (N(0, I), or the learned mixture: a
        component, then a Gaussian draw) and returns E[x|z], shape (n, *input_shape)
        (an autoregressive decoder: a draw x ~ p(x|z), see `decode`). n = 0 gives an empty
        array of that shape; n must be a whole number >= 0."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"n must be a whole number >= 0 (how many samples), got {n!r}.")
        if n == 0:
            return np.zeros((0,) + self.input_shape_, dtype="float32")
        return self.decode(self.sample_prior(n, seed), seed=seed)

    def sample_prior(self, n, seed=None):
        """n draws z ~ p(z) as a NumPy array (n, K)."""
        if self.prior == "standard":
            z = keras.random.normal((int(n), self.latent_dim), seed=seed)
        else:
            z = priors.sample_mixture(int(n), *self.prior_parameters(), seed=seed)
        return np.asarray(ops.convert_to_numpy(z), dtype="float32")

    def reconstruct(self, x, seed=None):
        """E[x|z] at the posterior mean z = mu(x): a deterministic reconstruction of x (an
        autoregressive decoder: a draw x ~ p(x|z) there, see `decode`)."""
        return self.decode(self.encode(x)[0], seed=seed)

    def anomaly_score(self, x, method="elbo", **kwargs):
        """How unlikely each x is (higher = more anomalous), in nats: -ELBO(x) ("elbo") or the
        importance-weighted -ln p(x) ("iwae"). See `keras_vae.evaluation.anomaly_score`."""
        return evaluation.anomaly_score(self, x, method=method, **kwargs)

    @classmethod
    def from_preset(cls, handle, **kwargs):
        """A ready VAE from a preset: a zoo name, `hf://owner/name[@revision]`, a local preset
        folder or an http(s)/`file://` mirror; see `keras_vae.zoo.preset.from_preset`."""
        if _PRESET_LOADER is None:
            raise RuntimeError("No preset loader is registered: `import keras_vae` (or "
                               "keras_vae.zoo) registers the model zoo's.")
        return _PRESET_LOADER(handle, **kwargs)

    @classmethod
    def from_pretrained(cls, name, **kwargs):
        """The same as `from_preset` (kept for code written before it)."""
        return cls.from_preset(name, **kwargs)

    # ----------------------------------------------------------------- serialization
    def get_config(self):
        """Hyperparameters plus the serialized encoder and decoder (no weights)."""
        return {
            "name": self.name,
            "trainable": self.trainable,
            "encoder": keras.saving.serialize_keras_object(self.encoder),
            "decoder": keras.saving.serialize_keras_object(self.decoder),
            "latent_dim": self.latent_dim,
            "likelihood": self.likelihood,
            "posterior": self.posterior,
            "num_samples": self.num_samples,
            "beta": self.beta_target,
            "decoder_variance": self.decoder_variance,
            "seed": self.seed,
            "objective": self.objective,
            "prior": self.prior,
            "prior_components": self.prior_components,
            "free_bits": self.free_bits,
        }

    @classmethod
    def from_config(cls, config):
        """Rebuilds the VAE from `get_config`'s dict (weights are loaded separately)."""
        config = dict(config)
        config["encoder"] = keras.saving.deserialize_keras_object(config["encoder"])
        config["decoder"] = keras.saving.deserialize_keras_object(config["decoder"])
        return cls(**config)
