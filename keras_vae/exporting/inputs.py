"""The inputs on which an export is checked (and int8 variants calibrated)."""

import numpy as np

from keras_vae.exporting.formats import (
    NUM_CALIBRATION,
    NUM_EVAL,
    NUM_PRIOR_CALIBRATION,
    PARITY_BATCH_SIZES,
)


# --------------------------------------------------------------------------- inputs
def check_inputs(vae, graphs, data, seed):
    """Inputs for the parity checks and for int8 calibration, from `data` or from the model.

    Returns:
        {"encoder": (eval_x, calib_x), "decoder": (eval_z, calib_z), "source": str}. The
        decoder's inputs are prior draws z ~ N(0, I) and posterior means of the x's.
    """
    rng = np.random.default_rng(seed)
    k = vae.latent_dim
    mixture = vae.prior_mixture() if getattr(vae, "prior", "standard") != "standard" else None

    def prior_draws(n):
        """z ~ p(z): N(0, I), or a learned prior's mixture (a component, then a Gaussian)."""
        if mixture is None:
            return rng.standard_normal((n, k)).astype("float32")
        comp = rng.choice(len(mixture["weights"]), size=n, p=mixture["weights"])
        return (mixture["means"][comp] + np.exp(0.5 * mixture["log_vars"][comp])
                * rng.standard_normal((n, k))).astype("float32")
    if data is not None:
        if hasattr(data, "element_spec") or not hasattr(data, "__len__"):
            raise ValueError("data must be an array (n, *input_shape), not a dataset or "
                             "generator; take some batches, e.g. np.concatenate(list("
                             "ds.take(8).as_numpy_iterator())).")
        data = np.asarray(data)
        vae.check_data(data, "data")
        data = data.astype("float32")
        order = rng.permutation(len(data))
        eval_x = data[order[:NUM_EVAL]]
        calib_x = data[order[NUM_EVAL:NUM_EVAL + NUM_CALIBRATION]]
        if len(calib_x) < 16:  # too little data to hold some out: calibrate on the same rows
            calib_x = eval_x
        if len(eval_x) < max(PARITY_BATCH_SIZES):
            eval_x = eval_x[rng.integers(0, len(eval_x), max(PARITY_BATCH_SIZES))]
        source = f"given data ({len(data)} examples)"
    elif graphs.autoregressive:
        # Drawing from an autoregressive decoder takes H * W passes: binary noise of the
        # density of MNIST's ink instead (any binary image is a valid decoder input).
        def model_samples(n):
            return (rng.random((n,) + tuple(vae.input_shape_)) < 0.2).astype("float32")

        eval_x, calib_x = model_samples(NUM_EVAL), model_samples(NUM_CALIBRATION)
        source = "binary noise images (20% ones; no data given)"
    else:
        # The model's own samples: x ~ p(x|z), z ~ N(0, I), what a trained model calls typical.
        def model_samples(n):
            params = graphs.reference("decoder", prior_draws(n))
            if vae.likelihood == "bernoulli":
                return (rng.random(params["x_mean"].shape) < params["x_mean"]).astype("float32")
            noise = rng.standard_normal(params["x_mean"].shape)
            log_std = (params["x_log_scale"] if "x_log_scale" in params
                       else 0.5 * params["x_log_var"])
            return (params["x_mean"] + np.exp(log_std) * noise).astype("float32")

        eval_x, calib_x = model_samples(NUM_EVAL), model_samples(NUM_CALIBRATION)
        source = (f"the model's own samples x ~ p(x|z), z ~ "
                  f"{'N(0, I)' if mixture is None else 'p(z)'} (no data given)")

    def latents(x, num_prior):
        z_mean = graphs.reference("encoder", x)["z_mean"]
        prior = prior_draws(num_prior)
        return rng.permutation(np.concatenate([prior, z_mean])).astype("float32")

    # Decoder inputs: prior draws and posterior means of x's. Latents cost nothing, so the
    # calibration set is large enough to see the prior's tails (full-integer LiteRT clips
    # activations outside the calibrated range).
    half = len(eval_x) // 2
    decoder_eval = latents(eval_x[half:], len(eval_x) - half)
    decoder_calib = latents(calib_x, NUM_PRIOR_CALIBRATION)
    if graphs.autoregressive:  # named inputs (z, x): latents with images to condition on
        decoder_eval = {"z": decoder_eval, "x": eval_x[rng.permutation(len(eval_x))]}
        decoder_calib = {"z": decoder_calib[:len(calib_x)], "x": calib_x}
    return {"encoder": (eval_x, calib_x),
            "decoder": (decoder_eval, decoder_calib),
            "source": source}


def num_rows(inputs):
    """Rows of an input array, or of named inputs (a dict of equally long arrays)."""
    return len(next(iter(inputs.values()))) if isinstance(inputs, dict) else len(inputs)


def take(inputs, n):
    """The first n rows of an input array or of named inputs."""
    if isinstance(inputs, dict):
        return {k: v[:n] for k, v in inputs.items()}
    return inputs[:n]
