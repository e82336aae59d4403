"""Encoder and decoder builders: the Kingma-Welling MLP, deeper MLPs and convolutional nets.

Every builder returns a standalone functional `keras.Model` with no random op inside:
- encoders map `x` (B, *input_shape) to `[z_mean, z_log_var]` (diagonal posterior) or
  `[z_mean, z_scale_tril]` (full posterior), see `posterior_head`;
- decoders map `z` (B, K) to the decoder's distribution parameter with the data's shape:
  logits for a Bernoulli likelihood, means for a Gaussian one.
Use `posterior_head` to give a custom encoder body the heads the VAE expects.
"""

import math

import keras
from keras import layers, ops

from keras_vae import distributions
from keras_vae.layers import GatedActivation, MaskedConv2D, ScaleTril

POSTERIORS = ("diagonal", "full")


def check_latent_dim(latent_dim):
    """Raises a ValueError unless latent_dim is an int >= 1."""
    if isinstance(latent_dim, bool) or not isinstance(latent_dim, int) or latent_dim < 1:
        raise ValueError(
            f"latent_dim must be an integer >= 1 (the size K of z), got {latent_dim!r}.")
    return latent_dim


def check_posterior(posterior):
    """Raises ValueError unless `posterior` is "diagonal" or "full"."""
    if posterior not in POSTERIORS:
        raise ValueError(
            f"Unknown posterior {posterior!r}: expected one of {POSTERIORS} "
            "('diagonal': mean and log-variance; 'full': mean and lower-triangular factor).")
    return posterior


def _shape(shape, what):
    if isinstance(shape, int):
        shape = (shape,)
    shape = tuple(shape)
    if not shape or any((not isinstance(d, int)) or d < 1 for d in shape):
        raise ValueError(f"{what} must be a tuple of positive ints such as (784,) or (28, 28, 1), "
                         f"got {shape!r}.")
    return shape


def posterior_head(h, latent_dim, posterior="diagonal"):
    """Adds the q(z|x) heads to a feature tensor `h` (THEORY eqs [28]-[30]).

    Returns:
        `[z_mean, z_log_var]` for "diagonal", `[z_mean, z_scale_tril]` for "full"; layers
        named `z_mean`, `z_log_var` / `z_scale_tril` so exported signatures keep the names.
    """
    check_latent_dim(latent_dim)
    check_posterior(posterior)
    z_mean = layers.Dense(latent_dim, name="z_mean")(h)
    if posterior == "diagonal":
        return [z_mean, layers.Dense(latent_dim, name="z_log_var")(h)]
    raw = layers.Dense(distributions.num_tril_entries(latent_dim), name="z_scale_tril_raw")(h)
    return [z_mean, ScaleTril(latent_dim, name="z_scale_tril")(raw)]


def mlp_encoder(input_shape, latent_dim, hidden_units=(500,), activation="tanh",
                posterior="diagonal", name="encoder"):
    """MLP encoder: flatten, Dense(units, activation) for each entry of hidden_units, heads.

    `mlp_encoder((784,), K)` is the Kingma & Welling encoder: h = tanh(W_h x + b_h).
    """
    input_shape = _shape(input_shape, "input_shape")
    x = keras.Input(input_shape, name="x")
    h = layers.Flatten(name="flatten")(x) if len(input_shape) > 1 else x
    for i, units in enumerate(hidden_units):
        h = layers.Dense(units, activation=activation, name=f"hidden_{i}")(h)
    return keras.Model(x, posterior_head(h, latent_dim, posterior), name=name)


def mlp_decoder(latent_dim, output_shape, hidden_units=(500,), activation="tanh",
                name="decoder"):
    """MLP decoder: Dense(units, activation) layers, then a linear layer to the data's shape.

    `mlp_decoder(K, (784,))` is the Kingma & Welling decoder (eq [31] before the sigmoid).
    """
    check_latent_dim(latent_dim)
    output_shape = _shape(output_shape, "output_shape")
    z = keras.Input((latent_dim,), name="z")
    h = z
    for i, units in enumerate(hidden_units):
        h = layers.Dense(units, activation=activation, name=f"hidden_{i}")(h)
    out = layers.Dense(math.prod(output_shape), name="x_params")(h)
    if len(output_shape) > 1:
        out = layers.Reshape(output_shape, name="x_params_image")(out)
    return keras.Model(z, out, name=name)


def conv_encoder(input_shape=(28, 28, 1), latent_dim=16, filters=(32, 64), kernel_size=3,
                 dense_units=256, activation="relu", posterior="diagonal", name="encoder"):
    """Convolutional encoder for HxWxC images: stride-2 convolutions, a dense layer, heads."""
    input_shape = _shape(input_shape, "input_shape")
    if len(input_shape) != 3:
        raise ValueError(f"conv_encoder needs images shaped (H, W, C), got input_shape={input_shape}; "
                         "use mlp_encoder for flat vectors.")
    x = keras.Input(input_shape, name="x")
    h = x
    for i, f in enumerate(filters):
        h = layers.Conv2D(f, kernel_size, strides=2, padding="same", activation=activation,
                          name=f"conv_{i}")(h)
    h = layers.Flatten(name="flatten")(h)
    if dense_units:
        h = layers.Dense(dense_units, activation=activation, name="dense")(h)
    return keras.Model(x, posterior_head(h, latent_dim, posterior), name=name)


def conv_decoder(latent_dim=16, output_shape=(28, 28, 1), filters=(64, 32), kernel_size=3,
                 dense_units=256, activation="relu", name="decoder"):
    """Convolutional decoder: dense, reshape, stride-2 transposed convolutions, a final conv.

    Any H x W fits: the net upsamples to the next multiple of 2**len(filters) and crops.
    """
    check_latent_dim(latent_dim)
    output_shape = _shape(output_shape, "output_shape")
    if len(output_shape) != 3:
        raise ValueError(f"conv_decoder needs images shaped (H, W, C), got output_shape={output_shape}.")
    height, width, channels = output_shape
    scale = 2 ** len(filters)
    h0, w0 = math.ceil(height / scale), math.ceil(width / scale)
    z = keras.Input((latent_dim,), name="z")
    h = z
    if dense_units:
        h = layers.Dense(dense_units, activation=activation, name="dense")(h)
    h = layers.Dense(h0 * w0 * filters[0], activation=activation, name="project")(h)
    h = layers.Reshape((h0, w0, filters[0]), name="unflatten")(h)
    for i, f in enumerate(filters):
        h = layers.Conv2DTranspose(f, kernel_size, strides=2, padding="same",
                                   activation=activation, name=f"deconv_{i}")(h)
    crop_h, crop_w = h0 * scale - height, w0 * scale - width
    if crop_h or crop_w:
        h = layers.Cropping2D(((0, crop_h), (0, crop_w)), name="crop")(h)
    out = layers.Conv2D(channels, kernel_size, padding="same", name="x_params")(h)
    return keras.Model(z, out, name=name)


@keras.saving.register_keras_serializable(package="keras_vae")
class PixelCNNDecoder(keras.Model):
    """Autoregressive Bernoulli decoder for one-channel images (a small PixelVAE, Gulrajani et
    al. 2016): p(x|z) = prod_i p(x_i | x_<i, z) in raster order, so ln p(x|z) is still the
    summed binary cross-entropy, of logits that see the pixels before each one as well as z.

    A functional model mapping `[z (B, K), x (B, H, W, 1)]` to logits (B, H, W, 1), built from
    three parts, each a `keras.Model` attribute:
    - `context_net` x -> (B, H, W, filters): a mask-"A" convolution (7x7) and `num_layers`
      residual mask-"B" convolutions (3x3), ReLU: what the pixels before each pixel say;
    - `latent_net` z -> (B, H, W, filters): Dense(latent_units, relu), a linear layer to
      `latent_channels` maps of H x W, a 1x1 convolution: what z says about each pixel;
    - `head` [latent features, context] -> logits: ReLU of their sum, a 1x1 convolution with
      ReLU and a 1x1 convolution to one logit per pixel.
    With `gated=True` the context layers are gated instead (Gated PixelCNN, van den Oord et
    al. 2016; PixelVAE): the mask-"A" convolution and each mask-"B" one give 2 * filters maps
    a, b, combined as tanh(a) * sigmoid(b) (`layers.GatedActivation`); each mask-"B" layer adds
    a 1x1 convolution of its gate to the running features (a residual step).
    z enters only the cheap head, so the k posterior samples of an importance-weighted
    likelihood share one context computation (`logits_from`). Evaluating ln p(x|z) takes one
    pass; drawing x takes H * W steps, pixel by pixel (`VAE.decode`). Logit i depends only on
    z and on the pixels before i within `receptive_rows` (R) rows above it and R columns either
    side: `context_net` and `head` take images of any size, so a drawing step
    (`keras_vae.drawing`) runs them on a window of (R + 1) x (2R + 1) pixels only.

    Args:
        latent_dim: K.
        output_shape: (H, W, 1).
        filters: channels of the context and head.
        num_layers: mask-"B" residual layers after the first, mask-"A" one.
        latent_units: hidden units of `latent_net`.
        latent_channels: feature maps `latent_net` projects z to.
        gated: gated residual context layers instead of ReLU ones (False: the original
            decoder; its saved config has no "gated" key).
    """

    autoregressive = True

    def __init__(self, latent_dim, output_shape=(28, 28, 1), filters=32, num_layers=3,
                 latent_units=256, latent_channels=3, gated=False, name="decoder", **kwargs):
        check_latent_dim(latent_dim)
        output_shape = _shape(output_shape, "output_shape")
        if len(output_shape) != 3 or output_shape[-1] != 1:
            raise ValueError("PixelCNNDecoder models one-channel images shaped (H, W, 1), got "
                             f"output_shape={output_shape}; use conv_decoder for other data.")
        height, width, _ = output_shape
        gated = bool(gated)
        x = keras.Input((None, None, 1), name="x")  # any window of rows and columns (drawing)
        if gated:
            h = GatedActivation(name="gate_a")(
                MaskedConv2D(2 * filters, 7, "A", name="masked_conv_a")(x))
            for i in range(num_layers):
                step = GatedActivation(name=f"gate_b{i}")(
                    MaskedConv2D(2 * filters, 3, "B", name=f"masked_conv_b{i}")(h))
                step = layers.Conv2D(filters, 1, name=f"gate_proj_{i}")(step)
                h = layers.Add(name=f"residual_{i}")([h, step])
        else:
            h = layers.Activation("relu", name="relu_a")(
                MaskedConv2D(filters, 7, "A", name="masked_conv_a")(x))
            for i in range(num_layers):
                step = MaskedConv2D(filters, 3, "B", name=f"masked_conv_b{i}")(h)
                h = layers.Add(name=f"residual_{i}")([h, layers.Activation("relu")(step)])
        context_net = keras.Model(x, h, name="context_net")

        z = keras.Input((latent_dim,), name="z")
        g = layers.Dense(latent_units, activation="relu", name="hidden")(z)
        g = layers.Dense(height * width * latent_channels, name="maps")(g)
        g = layers.Reshape((height, width, latent_channels), name="unflatten")(g)
        g = layers.Conv2D(filters, 1, name="project")(g)
        latent_net = keras.Model(z, g, name="latent_net")

        latent_in = keras.Input((None, None, filters), name="latent_features")
        context_in = keras.Input((None, None, filters), name="context")
        f = layers.Activation("relu")(layers.Add(name="fuse")([latent_in, context_in]))
        f = layers.Conv2D(filters, 1, activation="relu", name="mix")(f)
        logits = layers.Conv2D(1, 1, name="x_params")(f)
        head = keras.Model([latent_in, context_in], logits, name="head")

        z_in = keras.Input((latent_dim,), name="z")
        x_in = keras.Input(output_shape, name="x")
        super().__init__([z_in, x_in], head([latent_net(z_in), context_net(x_in)]), name=name,
                         **kwargs)
        self.context_net, self.latent_net, self.head = context_net, latent_net, head
        self.latent_dim, self.output_shape_ = latent_dim, output_shape
        self.filters, self.num_layers = filters, num_layers
        self.latent_units, self.latent_channels = latent_units, latent_channels
        self.gated = gated
        # Rows above pixel i that logit i reads: 3 for the 7x7 mask "A", 1 per 3x3 mask "B".
        self.receptive_rows = 3 + num_layers

    def context(self, x, training=False):
        """The context features of images x (B, H, W, 1), shared by every z."""
        return self.context_net(x, training=training)

    def logits_from(self, z, context, training=False):
        """Logits for latents z (N, K) and context features (N, H, W, filters)."""
        return self.head([self.latent_net(z, training=training), context], training=training)

    def get_config(self):
        return {"latent_dim": self.latent_dim, "output_shape": list(self.output_shape_),
                "filters": self.filters, "num_layers": self.num_layers,
                "latent_units": self.latent_units, "latent_channels": self.latent_channels,
                "name": self.name, "trainable": self.trainable,
                **({"gated": True} if self.gated else {})}


def decode_samples(decoder, z, x, training=False):
    """The decoder's outputs for samples z (S, B, K) or (B, K) of examples x (B, ...), flat
    (S * B, ...).

    An autoregressive decoder (`networks.PixelCNNDecoder`) also reads x: its context is
    computed once per example and shared by the S samples."""
    z = ops.reshape(z, (-1, ops.shape(z)[-1]))
    if not getattr(decoder, "autoregressive", False):
        return decoder(z, training=training)
    context = decoder.context(x, training=training)
    num_samples = ops.shape(z)[0] // ops.shape(x)[0]
    context = ops.tile(context, (num_samples,) + (1,) * (len(context.shape) - 1))
    return decoder.logits_from(z, context, training=training)
