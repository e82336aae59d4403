"""Learned priors p(z): a mixture of diagonal Gaussians and the VampPrior.

    vae = VAE.mlp((784,), latent_dim=40, prior="vamp")            # 500 pseudo-inputs
    vae = VAE.kingma_welling(latent_dim=20, prior="mog", prior_components=10)

- "standard": p(z) = N(0, I), the prior of Kingma & Welling; the KL is in closed form.
- "mog": p(z) = sum_c pi_c N(z | m_c, diag(exp(v_c))) with C trainable means m_c, log-variances
  v_c and mixture logits (pi = softmax(logits)). Means start spread as N(0, I) draws,
  log-variances at 0, logits equal.
- "vamp": the VampPrior of Tomczak & Welling (2018), p(z) = 1/C sum_c q(z | u_c), the mixture
  of the encoder's posteriors at C trainable pseudo-inputs u_c (shaped like one example). It
  follows the encoder, so it needs the diagonal posterior. For Bernoulli data the pseudo-inputs
  go through a hard clip to [0, 1] (the paper's hardtanh) and start as N(0.05, 0.01^2) draws
  (the paper's initialization); for other data they start as N(0, 0.1^2).
  `VAE.set_pseudo_inputs(x)` puts examples of the data there instead.

Neither learned prior has a closed-form KL(q(z|x) || p(z)); the VAE uses the Monte Carlo
estimate ln q(z|x) - ln p(z) at its posterior samples z (unbiased), and the importance-weighted
estimate of ln p(x) uses ln p(z) as it is. Both priors are a mixture of diagonal Gaussians,
which is what an export stores (`VAE.prior_mixture`).

Everything here uses `keras.ops` / `keras.random`, so it runs on every backend.
"""

import keras
from keras import ops

from keras_vae.distributions import LOG_2PI

PRIORS = ("standard", "vamp", "mog")
#: Components when `prior_components` is None: the VampPrior paper's 500 pseudo-inputs, and 10
#: Gaussians for the mixture.
DEFAULT_COMPONENTS = {"vamp": 500, "mog": 10}


def check_prior(prior, components, posterior="diagonal"):
    """The number of components C for `prior`, after refusing bad options with one line."""
    if prior not in PRIORS:
        raise ValueError(f"Unknown prior {prior!r}: expected one of {PRIORS} ('standard' for "
                         "N(0, I), 'vamp' for the VampPrior, 'mog' for a mixture of Gaussians).")
    if prior == "standard":
        if components is not None:
            raise ValueError("prior_components applies to prior='vamp' or 'mog' only; leave "
                             "it None for the standard prior.")
        return None
    if components is None:
        components = DEFAULT_COMPONENTS[prior]
    if isinstance(components, bool) or not isinstance(components, int) or components < 1:
        raise ValueError(f"prior_components must be an integer >= 1 (the mixture's "
                         f"components), got {components!r}.")
    if prior == "vamp" and posterior != "diagonal":
        raise ValueError("prior='vamp' mixes the encoder's posteriors, which must then be "
                         "diagonal Gaussians: use posterior='diagonal', or prior='mog'.")
    return components


def mixture_log_density(z, logits, means, log_vars):
    """ln sum_c pi_c N(z | m_c, diag(exp(v_c))), pi = softmax(logits), for points z (..., K).

    Args:
        z: (..., K) points; any leading axes.
        logits: (C,) unnormalized mixture log-weights.
        means, log_vars: (C, K) each component's mean and log-variance.

    Returns:
        (...,) log densities in nats. The squared distances are expanded into matrix products,
        so no (..., C, K) tensor is formed (memory stays that of z plus (..., C)).
    """
    z = ops.convert_to_tensor(z)
    logits, means, log_vars = (ops.cast(a, z.dtype) for a in (logits, means, log_vars))
    precision = ops.exp(-log_vars)                                          # (C, K)
    quad = (ops.matmul(ops.square(z), ops.transpose(precision))
            - 2.0 * ops.matmul(z, ops.transpose(means * precision))
            + ops.sum(ops.square(means) * precision, axis=-1))              # (..., C)
    k = ops.cast(ops.shape(means)[-1], z.dtype)
    component = -0.5 * (k * LOG_2PI + ops.sum(log_vars, axis=-1) + ops.maximum(quad, 0.0))
    log_weights = logits - ops.logsumexp(logits, axis=-1, keepdims=True)
    return ops.logsumexp(component + log_weights, axis=-1)


def sample_mixture(n, logits, means, log_vars, seed=None):
    """n draws z (n, K) from the mixture: a component c ~ Categorical(softmax(logits)), then
    z = m_c + exp(v_c / 2) * eps, eps ~ N(0, I). `seed`: int, None or a SeedGenerator."""
    if isinstance(seed, int) or seed is None:
        seed = keras.random.SeedGenerator(seed)
    logits = ops.cast(ops.convert_to_tensor(logits), "float32")
    means = ops.cast(ops.convert_to_tensor(means), "float32")
    log_vars = ops.cast(ops.convert_to_tensor(log_vars), "float32")
    index = keras.random.categorical(ops.expand_dims(logits, 0), n, seed=seed)[0]
    eps = keras.random.normal((n, ops.shape(means)[-1]), seed=seed)
    return ops.take(means, index, axis=0) + ops.exp(0.5 * ops.take(log_vars, index, axis=0)) * eps


@keras.saving.register_keras_serializable(package="keras_vae")
class MixturePrior(keras.layers.Layer):
    """The trainable mixture of `components` diagonal Gaussians over `latent_dim` latents
    (prior="mog"). `mixture(encoder)` returns (logits (C,), means (C, K), log_vars (C, K))."""

    def __init__(self, components, latent_dim, seed=None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.components = int(components)
        self.latent_dim = int(latent_dim)
        self.seed = seed
        self.means = self.add_weight(
            shape=(self.components, self.latent_dim), name="means",
            initializer=keras.initializers.RandomNormal(0.0, 1.0, seed=seed))
        self.log_vars = self.add_weight(shape=(self.components, self.latent_dim),
                                        initializer="zeros", name="log_vars")
        self.logits = self.add_weight(shape=(self.components,), initializer="zeros",
                                      name="logits")
        self.built = True

    def mixture(self, encoder=None):
        return self.logits, self.means, self.log_vars

    def get_config(self):
        return {**super().get_config(), "components": self.components,
                "latent_dim": self.latent_dim, "seed": self.seed}


@keras.saving.register_keras_serializable(package="keras_vae")
class VampPrior(keras.layers.Layer):
    """The VampPrior's `components` trainable pseudo-inputs u_c, shaped (C, *input_shape).

    `mixture(encoder)` runs the encoder on them and returns the equal-weight mixture of its
    posteriors: (logits (C,) all 0, means (C, K), log_vars (C, K)). With `clip` (Bernoulli
    data) the encoder sees the pseudo-inputs clipped to [0, 1].
    """

    def __init__(self, components, input_shape, clip=True, seed=None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.components = int(components)
        self.example_shape = tuple(int(d) for d in input_shape)
        self.clip = bool(clip)
        self.seed = seed
        mean, stddev = (0.05, 0.01) if self.clip else (0.0, 0.1)
        self.pseudo_inputs = self.add_weight(
            shape=(self.components,) + self.example_shape, name="pseudo_inputs",
            initializer=keras.initializers.RandomNormal(mean, stddev, seed=seed))
        self.built = True

    def inputs_for_encoder(self):
        u = self.pseudo_inputs
        return ops.clip(u, 0.0, 1.0) if self.clip else u

    def mixture(self, encoder):
        z_mean, z_log_var = encoder(self.inputs_for_encoder())
        z_mean, z_log_var = ops.cast(z_mean, "float32"), ops.cast(z_log_var, "float32")
        return ops.zeros((self.components,), "float32"), z_mean, z_log_var

    def get_config(self):
        return {**super().get_config(), "components": self.components,
                "input_shape": list(self.example_shape), "clip": self.clip, "seed": self.seed}


def make_prior(prior, components, latent_dim, input_shape, likelihood, seed=None):
    """The prior's layer for a VAE (None for the standard prior)."""
    if prior == "mog":
        return MixturePrior(components, latent_dim, seed=seed, name="prior")
    if prior == "vamp":
        return VampPrior(components, input_shape, clip=likelihood == "bernoulli", seed=seed,
                         name="prior")
    return None


def free_bits_kl(kl, floor):
    """The free-bits KL term of Kingma et al. (2016): sum_j max(floor, E_batch[KL_j]).

    Args:
        kl: (B, J) per-example KL of J groups (latent dimensions, or J = 1 for the whole KL).
        floor: lambda, the floor of each group's batch-mean KL, in nats.

    Returns:
        A scalar: the training loss's KL term (groups below the floor get no gradient).
    """
    return ops.sum(ops.maximum(ops.mean(kl, axis=0), float(floor)))


def standard_normal_kl_per_dim(z_mean, z_log_var):
    """KL(N(mu_j, exp(v_j)) || N(0, 1)) per latent dimension j, (..., K): the summands of
    THEORY eq [27]."""
    return -0.5 * (1.0 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var))

