"""Feature scaling inside the model, so raw table rows go in and raw units come out.

- `Standardize` is the encoder's first layer: (x - loc) / scale per feature, clipped to
  [-clip, clip] so a wild value cannot saturate the network.
- `ToDataUnits` is the decoder's last layer for a location-scale likelihood
  (`keras_vae.likelihoods`): it maps the network's output in standardized units, (..., D, 2),
  to [location, log-scale] in the data's raw units: location = loc + scale * m and
  log-scale = ln(scale) + ln(min_scale + softplus(r)). So ln p(x|z) is the density of the RAW
  row: the log-Jacobian of the scaling, -sum_j ln scale_j, is inside it.

Both layers hold `loc` and `scale` as (non-trainable) weights, saved with the model in
`.keras` files and exports; `adapt` sets them from training data. The statistics are robust to
the anomalies an unsupervised training set holds: the median and the interquartile range
(/ 1.349, the standard deviation of a Gaussian), or the standard deviation where the IQR is 0
(mostly constant or binary columns), or 1 for a constant column.
"""

import numpy as np

import keras
from keras import layers, ops

from keras_vae import networks


def robust_statistics(x):
    """(loc, scale) float32 arrays (D,) for data (n, D): median and IQR / 1.349 (see module)."""
    x = np.asarray(x, dtype="float64")
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"Scaling statistics need data shaped (n, features), got {x.shape}.")
    loc = np.median(x, axis=0)
    q1, q3 = np.percentile(x, [25, 75], axis=0)
    scale = (q3 - q1) / 1.349
    std = x.std(axis=0)
    scale = np.where(scale > 1e-12 * (1.0 + np.abs(loc)), scale, std)
    scale = np.where(scale > 1e-12 * (1.0 + np.abs(loc)), scale, 1.0)
    return loc.astype("float32"), scale.astype("float32")


class _Scaling(keras.layers.Layer):
    def __init__(self, num_features, **kwargs):
        super().__init__(**kwargs)
        self.num_features = int(num_features)
        self.loc = self.add_weight(shape=(self.num_features,), initializer="zeros",
                                   trainable=False, name="loc", dtype="float32")
        self.scale = self.add_weight(shape=(self.num_features,), initializer="ones",
                                     trainable=False, name="scale", dtype="float32")

    def set_statistics(self, loc, scale):
        """Sets the per-feature loc and (positive) scale."""
        loc, scale = np.asarray(loc, "float32"), np.asarray(scale, "float32")
        if loc.shape != (self.num_features,) or scale.shape != (self.num_features,):
            raise ValueError(f"loc and scale must have shape ({self.num_features},), got "
                             f"{loc.shape} and {scale.shape}.")
        if not np.all(scale > 0) or not np.all(np.isfinite(loc)):
            raise ValueError("scale must be positive and loc finite.")
        self.loc.assign(loc)
        self.scale.assign(scale)

    def adapt(self, x):
        """Sets loc and scale from training data (n, D) (`robust_statistics`)."""
        self.set_statistics(*robust_statistics(x))

    def get_config(self):
        return {**super().get_config(), "num_features": self.num_features}


@keras.saving.register_keras_serializable(package="keras_vae")
class Standardize(_Scaling):
    """(x - loc) / scale per feature, clipped to [-clip, clip] (no clipping for clip=None).

    Args:
        num_features: D, the size of the last axis.
        clip: bound on the standardized values the network sees.
    """

    def __init__(self, num_features, clip=10.0, **kwargs):
        super().__init__(num_features, **kwargs)
        self.clip = None if clip is None else float(clip)

    def call(self, x):
        x = ops.cast(x, "float32")
        out = (x - self.loc) / self.scale
        if self.clip is not None:
            out = ops.clip(out, -self.clip, self.clip)
        return ops.cast(out, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "clip": self.clip}


@keras.saving.register_keras_serializable(package="keras_vae")
class ToDataUnits(_Scaling):
    """Decoder outputs (..., D, 2) in standardized units -> [location, log-scale] in raw units.

    location = loc + scale * out[..., 0]; log-scale = ln(scale) + ln(min_scale +
    softplus(out[..., 1])). `min_scale` (in standardized units) keeps the density bounded on
    discrete columns, where a continuous likelihood could otherwise shrink its scale to zero.

    Args:
        num_features: D.
        min_scale: the smallest scale, as a fraction of the feature's `scale`.
    """

    def __init__(self, num_features, min_scale=0.01, **kwargs):
        super().__init__(num_features, **kwargs)
        self.min_scale = float(min_scale)

    def call(self, out):
        out = ops.cast(out, "float32")
        location = self.loc + self.scale * out[..., 0]
        log_scale = ops.log(self.scale) + ops.log(self.min_scale + ops.softplus(out[..., 1]))
        return ops.stack([location, log_scale], axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "min_scale": self.min_scale}


def tabular_networks(num_features, latent_dim, hidden_units=(64, 32), activation="relu",
                     clip=10.0, min_scale=0.01, loc=None, scale=None):
    """Encoder and decoder for raw table rows (n, D) and a location-scale likelihood.

    encoder: x (B, D) -> Standardize -> Dense layers -> [z_mean, z_log_var];
    decoder: z (B, K) -> Dense layers (reversed) -> (B, D, 2) -> ToDataUnits, i.e.
    [location, log-scale] in raw units for `keras_vae.likelihoods`.

    Args:
        loc, scale: the scaling statistics (D,) (default 0 and 1: set them later with
            `set_scaling`).

    Returns:
        (encoder, decoder), functional `keras.Model`s.
    """
    d = int(num_features)
    x = keras.Input((d,), name="x")
    h = Standardize(d, clip=clip, name="standardize")(x)
    for i, units in enumerate(hidden_units):
        h = layers.Dense(units, activation=activation, name=f"hidden_{i}")(h)
    encoder = keras.Model(x, networks.posterior_head(h, latent_dim), name="encoder")
    z = keras.Input((latent_dim,), name="z")
    g = z
    for i, units in enumerate(reversed(tuple(hidden_units))):
        g = layers.Dense(units, activation=activation, name=f"hidden_{i}")(g)
    g = layers.Dense(2 * d, name="x_params_standardized")(g)
    g = layers.Reshape((d, 2), name="per_feature")(g)
    out = ToDataUnits(d, min_scale=min_scale, name="to_data_units")(g)
    decoder = keras.Model(z, out, name="decoder")
    if loc is not None or scale is not None:
        set_scaling(encoder, decoder, loc, scale)
    return encoder, decoder


def set_scaling(encoder, decoder, loc, scale):
    """Sets the statistics of every `Standardize` / `ToDataUnits` layer of the two networks."""
    found = 0
    for net in (encoder, decoder):
        for layer in net.layers:
            if isinstance(layer, _Scaling):
                layer.set_statistics(loc, scale)
                found += 1
    if not found:
        raise ValueError("The networks hold no Standardize or ToDataUnits layer.")
