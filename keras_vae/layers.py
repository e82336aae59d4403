"""Custom layers: the reparameterization `Sampling` layer, the `ScaleTril` posterior head and
the causal `MaskedConv2D` of autoregressive decoders."""

import keras
import numpy as np
from keras import ops

from keras_vae import distributions


def _replica_normal(shape, dtype, seed_generator):
    """eps for one replica of a `tf.distribute` strategy with several replicas, else None.

    Every replica holds a copy of the seed generator's state, so `keras.random.normal` would
    draw the *same* eps on every replica (and every worker): example i of each shard would get
    identical noise. Folding the replica's id into the seed gives each replica its own stream.
    """
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return None
    seed = tf.cast(tf.math.floormod(seed_generator.next(), tf.int32.max - 1), "int32")
    seed = tf.random.experimental.stateless_fold_in(seed, context.replica_id_in_sync_group)
    return tf.random.stateless_normal(shape, seed=seed, dtype=dtype)


@keras.saving.register_keras_serializable(package="keras_vae")
class Sampling(keras.layers.Layer):
    """Draws z = mu + Sigma^(1/2) eps with eps ~ N(0, I): the reparameterization trick.

    THEORY eq [34]: diagonal Sigma uses the element-wise product sigma * eps (eq [45]); a full
    covariance given by its lower-triangular factor L (Sigma = L L^T) uses z = mu + L eps.
    Gradients flow to mu and to the scale; eps is the only random op of the model. Under a
    `tf.distribute` strategy with several replicas each replica draws its own eps.

    Call arguments:
        inputs: `(z_mean, z_log_var)` with shapes (B, K), (B, K) for a diagonal posterior, or
            `(z_mean, z_scale_tril)` with shapes (B, K), (B, K, K) for a full one; the rank of
            the second tensor tells which.
        num_samples: `None` for one draw per example, shape (B, K); an int L for L draws,
            shape (L, B, K).

    Args:
        seed: int or None; makes the stream of eps reproducible.
    """

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, num_samples=None):
        z_mean, scale = inputs
        shape = tuple(ops.shape(z_mean))
        if num_samples is not None:
            shape = (num_samples,) + shape
        eps = _replica_normal(shape, z_mean.dtype, self.seed_generator)
        if eps is None:
            eps = keras.random.normal(shape, dtype=z_mean.dtype, seed=self.seed_generator)
        if len(scale.shape) == len(z_mean.shape) + 1:  # full covariance: L eps
            return z_mean + ops.matmul(scale, ops.expand_dims(eps, -1))[..., 0]
        return z_mean + ops.exp(0.5 * scale) * eps

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


@keras.saving.register_keras_serializable(package="keras_vae")
class ScaleTril(keras.layers.Layer):
    """Maps K(K+1)/2 unconstrained numbers to a lower-triangular L with positive diagonal.

    The diagonal goes through softplus (+ `min_scale`), the rest is copied, so Sigma = L L^T is
    always a valid covariance. Deterministic (a gather), so encoders using it export cleanly.
    """

    def __init__(self, latent_dim, min_scale=1e-4, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim = int(latent_dim)
        self.min_scale = float(min_scale)

    def call(self, raw):
        return distributions.fill_scale_tril(raw, self.latent_dim, self.min_scale)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.latent_dim, self.latent_dim)

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim, "min_scale": self.min_scale}


def causal_mask(kernel_size, in_channels, out_channels, include_center):
    """The 0/1 mask of a PixelCNN convolution (van den Oord et al. 2016) for one image channel:
    1 at the kernel taps above the center row and left of the center in its row, so the output
    at pixel i sees only pixels before i in raster order; the center tap too with
    `include_center` (mask "B", for layers after the first), never for the first ("A")."""
    mask = np.zeros((kernel_size, kernel_size, in_channels, out_channels), dtype="float32")
    center = kernel_size // 2
    mask[:center] = 1.0
    mask[center, :center] = 1.0
    if include_center:
        mask[center, center] = 1.0
    return mask


@keras.saving.register_keras_serializable(package="keras_vae")
class MaskedConv2D(keras.layers.Layer):
    """A stride-1 "same" convolution whose kernel is multiplied by `causal_mask`, so output
    pixel i depends only on input pixels before i in raster order (mask "A") or on pixels up
    to and including i (mask "B"). The building block of `networks.PixelCNNDecoder`."""

    def __init__(self, filters, kernel_size, mask_type, **kwargs):
        super().__init__(**kwargs)
        if mask_type not in ("A", "B"):
            raise ValueError(f"mask_type must be 'A' (first layer: excludes the pixel itself) or "
                             f"'B' (later layers: includes it), got {mask_type!r}.")
        if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be an odd int >= 1, got {kernel_size!r}.")
        self.filters, self.kernel_size, self.mask_type = int(filters), kernel_size, mask_type

    def build(self, input_shape):
        in_channels = int(input_shape[-1])
        self.kernel = self.add_weight(
            shape=(self.kernel_size, self.kernel_size, in_channels, self.filters),
            initializer="glorot_uniform", name="kernel")
        self.bias = self.add_weight(shape=(self.filters,), initializer="zeros", name="bias")
        self.mask = causal_mask(self.kernel_size, in_channels, self.filters,
                                self.mask_type == "B")

    def call(self, x):
        kernel = self.kernel * ops.cast(self.mask, self.kernel.dtype)
        return ops.conv(x, ops.cast(kernel, x.dtype), padding="same") + ops.cast(self.bias,
                                                                                 x.dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.filters,)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters,
                "kernel_size": self.kernel_size, "mask_type": self.mask_type}


@keras.saving.register_keras_serializable(package="keras_vae")
class GatedActivation(keras.layers.Layer):
    """The gated activation of Gated PixelCNN (van den Oord et al. 2016) and PixelVAE:
    tanh(a) * sigmoid(b), where a and b are the first and second halves of the last axis (so
    the output has half the input's channels). Elementwise per pixel: it keeps a masked
    convolution's causality."""

    def call(self, x):
        a, b = ops.split(x, 2, axis=-1)
        return ops.tanh(a) * ops.sigmoid(b)

    def compute_output_shape(self, input_shape):
        if input_shape[-1] is not None and input_shape[-1] % 2:
            raise ValueError(f"GatedActivation needs an even number of channels, got "
                             f"{input_shape[-1]}.")
        return tuple(input_shape[:-1]) + (
            None if input_shape[-1] is None else input_shape[-1] // 2,)
