"""Drawing x ~ p(x|z) from an autoregressive decoder (`networks.PixelCNNDecoder`) in one
compiled loop.

Pixel i (raster order) is set to 1 where u_i < sigmoid(logit_i), logit_i computed from z and the
pixels drawn before it, with u_i uniform noise given by the caller (`VAE.decode` takes it from
`numpy.random.default_rng(seed)` in the order the bundle runtime uses, so both draw the same
image for the same z and seed, up to float32 round-off of the logits).

Each of the H * W steps computes one logit only, from a window of the image: logit i reads z
and, through the causal masks, only the `decoder.receptive_rows` (R) rows above pixel i and R
columns on either side of it. The step runs `context_net` on the (R + 1) x (2R + 1) window that
ends at pixel i's row and is centred on its column, clipped to the image (where the clip
reaches the image's edge, the convolutions' zero padding is the image's own; elsewhere the
window's wrong border values reach at most R rows / columns inward, never pixel i), and `head`
on that one pixel's features; `latent_net(z)` runs once. The whole loop is one
`keras.ops.fori_loop`, compiled with XLA on TensorFlow (`tf.function(jit_compile=True)`) and
JAX (`jax.jit`), eager elsewhere.
"""

import weakref

import keras
from keras import ops


def draw_pixels(decoder, z, noise):
    """x ~ p(x|z) for latents z (B, K) and uniform noise (H * W, B) (row i: pixel i in raster
    order): returns (B, H, W, 1) float32 of 0/1. Plain `keras.ops`, traceable."""
    height, width, _ = decoder.output_shape_
    reach = int(decoder.receptive_rows)
    rows, cols = min(reach + 1, height), min(2 * reach + 1, width)  # the window, clipped
    z = ops.convert_to_tensor(z, dtype="float32")
    noise = ops.convert_to_tensor(noise, dtype="float32")
    batch = ops.shape(z)[0]
    filters = int(decoder.filters)
    latent = decoder.latent_net(z, training=False)  # (B, H, W, F), once
    image = ops.zeros((batch, height, width, 1), dtype="float32")

    def step(i, image):
        i = ops.cast(i, "int32")
        row, col = i // width, i % width
        top = ops.clip(row - (rows - 1), 0, height - rows)
        left = ops.clip(col - reach, 0, width - cols)
        window = ops.slice(image, [0, top, left, 0], [batch, rows, cols, 1])
        context = decoder.context_net(window, training=False)
        context = ops.slice(context, [0, row - top, col - left, 0], [batch, 1, 1, filters])
        features = ops.slice(latent, [0, row, col, 0], [batch, 1, 1, filters])
        logit = ops.reshape(ops.cast(decoder.head([features, context], training=False),
                                     "float32"), (-1,))
        p = 0.5 + 0.5 * ops.tanh(0.5 * logit)  # sigmoid, written as the runtime writes it
        bit = ops.cast(ops.take(noise, i, axis=0) < p, "float32")
        return ops.slice_update(image, [0, row, col, 0], ops.reshape(bit, (-1, 1, 1, 1)))

    return ops.fori_loop(0, height * width, step, image)


class _Compiled:
    """`draw_pixels` for one decoder, compiled for the backend (one trace per batch size)."""

    def __init__(self, decoder):
        backend = keras.backend.backend()
        fn = lambda z, noise: draw_pixels(decoder, z, noise)  # noqa: E731
        if backend == "tensorflow":
            import tensorflow as tf

            self._fn = tf.function(fn, jit_compile=True, reduce_retracing=False,
                                   autograph=False)
        elif backend == "jax":
            import jax

            # The weights are arguments (not constants captured at trace time), so one
            # compilation serves every later call, also after the weights change.
            variables = list(decoder.variables)

            def stateless(values, z, noise):
                with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                    return fn(z, noise)

            jitted = jax.jit(stateless)
            self._fn = lambda z, noise: jitted([v.value for v in variables], z, noise)
        else:
            self._fn = fn

    def __call__(self, z, noise):
        return ops.convert_to_numpy(self._fn(ops.convert_to_tensor(z, dtype="float32"),
                                             ops.convert_to_tensor(noise, dtype="float32")))


# One compiled function per decoder (TensorFlow reads the variables at run time, JAX gets their
# values as arguments), so repeated draws compile once per batch size.
_CACHE = weakref.WeakKeyDictionary()


def compiled(decoder):
    """A callable (z (B, K), noise (H * W, B)) -> NumPy x (B, H, W, 1), see `draw_pixels`."""
    if decoder not in _CACHE:
        _CACHE[decoder] = _Compiled(decoder)
    return _CACHE[decoder]
