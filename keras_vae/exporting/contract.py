"""The I/O contract of an export: what every input and output of every graph is, in the order
every format gives them, and the math that stays outside the graphs (prior, sampling, scoring).

`manifest.json["contract"]` holds it, each artifact entry repeats its component's `inputs` and
`outputs`, and every ONNX file carries it in `metadata_props["contract"]` (JSON) and a prose
summary in its `doc_string`. A client needs nothing else: tests/test_bundles.py writes one from
the manifest alone.
"""

import math

from keras_vae.likelihoods import STUDENT_T_DF
from keras_vae.scaling import Standardize

# How each format orders its inputs and outputs (read by index: ONNX `session.get_outputs()`,
# LiteRT `interpreter.get_output_details()`).
POSITIONAL_ORDER = {
    "onnx": "inputs and outputs by index in the order listed here",
    "tflite": "inputs and outputs by index (get_input_details / get_output_details) in the "
              "order listed here; tensor names and the 'serving_default' signature use the "
              "same names",
    "saved_model": "signature 'serving_default' takes and returns tensors keyed by name (no "
                   "positional order; TF Serving's REST/gRPC responses are keyed by name too)",
}


def _dims(shape):
    """Named axes of one example's shape: flat vectors ("features") or images NHWC."""
    if len(shape) == 1:
        return ["batch", "features"], "flat"
    if len(shape) == 3:
        return ["batch", "height", "width", "channels"], "NHWC"
    return ["batch"] + [f"axis_{i + 1}" for i in range(len(shape))], "row-major"


def _layout_text(shape, layout):
    if layout == "flat":
        side = math.isqrt(shape[0])
        pixels = (f" (a {side}x{side} image's pixels in row-major order)"
                  if side * side == shape[0] and shape[0] > 1 else "")
        return f"flat: {shape[0]} values per example{pixels}"
    if layout == "NHWC":
        return f"NHWC: (batch, height {shape[0]}, width {shape[1]}, channels {shape[2]})"
    return "row-major"


def _tensor(index, name, shape, layout, meaning, **extra):
    dims, _ = _dims(shape) if layout != "latent" else (["batch", "latent"], None)
    if layout == "latent_matrix":
        dims = ["batch", "latent", "latent"]
    return {"index": index, "name": name, "dtype": "float32", "shape": ["batch"] + list(shape),
            "dims": dims, "layout": layout if layout in ("latent", "latent_matrix")
            else _layout_text(shape, layout), "meaning": meaning, **extra}


def input_domain(vae):
    if vae.likelihood == "bernoulli":
        return {"range": [0.0, 1.0], "binarized": bool(getattr(vae, "autoregressive", False)),
                "text": "values in [0, 1] (probabilities of a pixel being on; the zoo's MNIST "
                        "models were trained on binarized 0/1 data)"
                        + ("; the autoregressive decoder's x must be binary 0/1"
                           if getattr(vae, "autoregressive", False) else "")}
    if _standardizes(vae):
        return {"range": None, "binarized": False,
                "text": "raw table rows: real values in the data's own units, columns in "
                        "training order (the encoder standardizes them inside the graph)"}
    return {"range": None, "binarized": False,
            "text": "real values, scaled as the training data was (the model does no scaling)"}


def _standardizes(vae):
    """Whether the encoder starts with `keras_vae.scaling.Standardize` (raw rows in)."""
    return any(isinstance(layer, Standardize) for layer in getattr(vae.encoder, "layers", []))


# ln p(x|z) of the location-scale likelihoods (keras_vae.likelihoods), with u = (x - x_mean) *
# exp(-x_log_scale): the formulas the runtime implements outside the graphs.
LOCATION_SCALE_FORMULAS = {
    "gaussian_hetero": "ln p(x|z) = sum_i [-0.5 ln(2 pi) - x_log_scale_i - 0.5 u_i^2], "
                       "u = (x - x_mean) * exp(-x_log_scale) (s = exp(x_log_scale) is the "
                       "standard deviation)",
    "student_t": "ln p(x|z) = sum_i [lgamma((nu + 1) / 2) - lgamma(nu / 2) - 0.5 ln(nu pi) - "
                 "x_log_scale_i - (nu + 1) / 2 * ln(1 + u_i^2 / nu)], u = (x - x_mean) * "
                 "exp(-x_log_scale), nu = {nu:g} degrees of freedom",
    "laplace": "ln p(x|z) = sum_i [-ln 2 - x_log_scale_i - |u_i|], u = (x - x_mean) * "
               "exp(-x_log_scale)",
}


def component_contract(vae):
    """{"encoder": {"inputs": [...], "outputs": [...]}, "decoder": {...}}: every tensor's index,
    name, dtype, shape (with "batch" the dynamic axis), dims (the axes' names), layout, meaning."""
    shape = list(vae.input_shape_)
    k = vae.latent_dim
    _, layout = _dims(shape)
    domain = input_domain(vae)
    x_in = _tensor(0, "x", shape, layout, "the input examples", domain=domain["text"],
                   range=domain["range"], binarized=domain["binarized"],
                   preprocessing=(
                       "inside the graph: the encoder's Standardize layer computes (x - loc) / "
                       "scale per column (clipped); feed raw rows" if _standardizes(vae) else
                       "none inside the graph: scale inputs as in training (images: "
                       "pixel / 255 for 8-bit pictures; flat models take the "
                       "row-major pixels)"))
    z_mean = _tensor(0, "z_mean", [k], "latent", "mean of the Gaussian posterior q(z|x)")
    if vae.posterior == "diagonal":
        second = _tensor(1, "z_log_var", [k], "latent",
                         "natural log of the variance of q(z|x) per latent: "
                         "sigma^2 = exp(z_log_var)")
    else:
        second = _tensor(1, "z_scale_tril", [k, k], "latent_matrix",
                         "lower-triangular Cholesky factor L of q(z|x)'s covariance, "
                         "Sigma = L L^T (positive diagonal)")
    encoder = {"inputs": [x_in], "outputs": [z_mean, second]}
    prior = ("N(0, I)" if getattr(vae, "prior", "standard") == "standard"
             else "p(z), manifest.json's \"prior\"")
    z_in = _tensor(0, "z", [k], "latent", f"a latent point (a draw from the prior {prior} or "
                                           "from q(z|x); see 'sampling')")
    if getattr(vae, "autoregressive", False):
        x_ctx = _tensor(1, "x", shape, layout,
                        "the image whose pixels condition each logit: the logit of pixel i "
                        "reads only the pixels before i in raster order (row by row), so any "
                        "value at i and after is ignored", domain="binary 0/1 pixels",
                        range=[0.0, 1.0], binarized=True)
        logits = _tensor(0, "x_logits", shape, layout,
                         "logit of p(x_i = 1 | x_<i, z) per pixel (raster order); "
                         "p = sigmoid(x_logits) = 1 / (1 + exp(-x_logits))")
        decoder = {"inputs": [z_in, x_ctx], "outputs": [logits]}
    elif vae.likelihood == "bernoulli":
        decoder = {"inputs": [z_in], "outputs": [
            _tensor(0, "x_mean", shape, layout, "E[x|z]: Bernoulli probabilities, "
                                                "x_mean = sigmoid(x_logits)"),
            _tensor(1, "x_logits", shape, layout, "logits of the Bernoulli p(x|z); use these "
                                                  "(not x_mean) for exact ln p(x|z)")]}
    elif vae.likelihood in LOCATION_SCALE_FORMULAS:
        decoder = {"inputs": [z_in], "outputs": [
            _tensor(0, "x_mean", shape, layout,
                    f"location of the {vae.likelihood} p(x|z) per value (its mean and median)"
                    + (", in the raw data's units" if _standardizes(vae) else "")),
            _tensor(1, "x_log_scale", shape, layout,
                    "natural log of the scale s of p(x|z) per value (per example: the "
                    "decoder's output); s is the standard deviation for gaussian_hetero, the "
                    "scale parameter for student_t and laplace")]}
    else:
        decoder = {"inputs": [z_in], "outputs": [
            _tensor(0, "x_mean", shape, layout, "E[x|z]: means of the Gaussian p(x|z)"),
            _tensor(1, "x_log_var", shape, layout,
                    "natural log of the variance of p(x|z) per value (the decoder's learned "
                    "log-variance, broadcast to x's shape)")]}
    return {"encoder": encoder, "decoder": decoder}


def model_contract(vae):
    """The manifest's "contract": tensors per component plus the math outside the graphs."""
    k = vae.latent_dim
    autoregressive = bool(getattr(vae, "autoregressive", False))
    if vae.posterior == "diagonal":
        sampling = "z = z_mean + exp(z_log_var / 2) * eps, eps ~ N(0, I) of shape (batch, K)"
        kl = ("KL = -0.5 * sum_k (1 + z_log_var - z_mean^2 - exp(z_log_var))")
    else:
        sampling = "z = z_mean + z_scale_tril @ eps, eps ~ N(0, I) of shape (batch, K)"
        kl = ("KL = 0.5 * (sum_k z_mean^2 + ||z_scale_tril||_F^2 - K - "
              "2 * sum_k ln z_scale_tril[k, k])")
    if autoregressive:
        likelihood = {
            "name": "bernoulli_autoregressive",
            "log_p_x_given_z": "ln p(x|z) = sum_i [x_i * l_i - ln(1 + exp(l_i))], "
                               "l = x_logits(z, x): one decoder pass scores a whole image",
            "sampling": "raster order: x = 0; for each pixel i (row by row): l = "
                        "x_logits(z, x); x_i = 1 if u_i < sigmoid(l_i) else 0, u_i ~ U(0, 1); "
                        "H * W decoder passes (vae_runtime.py sample does it)",
        }
    elif vae.likelihood == "bernoulli":
        likelihood = {
            "name": "bernoulli",
            "log_p_x_given_z": "ln p(x|z) = sum_i [x_i * l_i - ln(1 + exp(l_i))], l = "
                               "x_logits (exact; avoids ln of clipped probabilities)",
        }
    elif vae.likelihood in LOCATION_SCALE_FORMULAS:
        likelihood = {
            "name": vae.likelihood,
            "log_p_x_given_z": LOCATION_SCALE_FORMULAS[vae.likelihood].format(nu=STUDENT_T_DF),
        }
        if vae.likelihood == "student_t":
            likelihood["degrees_of_freedom"] = STUDENT_T_DF
    else:
        likelihood = {
            "name": "gaussian",
            "log_p_x_given_z": "ln p(x|z) = -0.5 * sum_i [ln(2 pi) + x_log_var_i + "
                               "(x_i - x_mean_i)^2 * exp(-x_log_var_i)]",
        }
    prior = f"p(z) = N(0, I) over the {k} latents"
    if getattr(vae, "prior", "standard") != "standard":
        prior = (f"p(z) = sum_c w_c N(z | m_c, diag(exp(v_c))), a mixture of "
                 f"{vae.prior_components} diagonal Gaussians over the {k} latents (learned "
                 f"{vae.prior!r} prior), w, m and v in manifest.json's \"prior\"; draw z by "
                 "picking c with probability w_c, then z = m_c + exp(v_c / 2) * eps")
        kl = ("no closed form for this prior: the Monte Carlo mean of ln q(z|x) - ln p(z) "
              "over draws z ~ q(z|x)")
    return {
        **component_contract(vae),
        "latent_dim": k,
        "prior": prior,
        "sampling": {"formula": sampling, "in_graphs": False,
                     "text": "every graph is deterministic: draws of z (and of x) happen "
                             "outside, in the client"},
        "likelihood": likelihood,
        "kl": (f"KL(q(z|x) || N(0, I)) in closed form: {kl}"
               if getattr(vae, "prior", "standard") == "standard"
               else f"KL(q(z|x) || p(z)): {kl}"),
        "score": {"name": "-ELBO (nats per example, higher = more unusual)",
                  "formula": "-ELBO(x) = -E_q[ln p(x|z)] + KL, E_q estimated at z = z_mean "
                             "(deterministic) or averaged over L draws z (Monte Carlo, unbiased)",
                  "units": "nats"},
        "positional_order": POSITIONAL_ORDER,
    }


def prior_entry(vae):
    """manifest["prior"] for a learned prior: p(z) as the mixture of diagonal Gaussians it is
    ({"kind", "components", "weights" (C,), "means" (C, K), "log_vars" (C, K)}, plain lists;
    a VampPrior's components are the encoder's posteriors at its pseudo-inputs, computed
    now). None for the standard prior, whose manifest has no "prior"."""
    if getattr(vae, "prior", "standard") == "standard":
        return None
    mixture = vae.prior_mixture()
    return {"kind": vae.prior, "components": int(len(mixture["weights"])),
            "formula": "p(z) = sum_c weights[c] * N(z | means[c], diag(exp(log_vars[c])))",
            **{key: mixture[key].astype("float32").astype(float).tolist()
               for key in ("weights", "means", "log_vars")}}


def doc_string(name, component, precision, contract):
    """A prose form of one component's contract, for ONNX `doc_string`."""
    part = contract[component]

    def describe(tensors):
        return "; ".join(f"[{t['index']}] {t['name']} {t['dtype']} "
                         f"({', '.join(map(str, t['shape']))}): {t['meaning']}" for t in tensors)

    return (f"keras-vae {component} of {name} ({precision}). Inputs: {describe(part['inputs'])}. "
            f"Outputs: {describe(part['outputs'])}. Prior: {contract['prior']}. Sampling (not "
            f"in the graph): {contract['sampling']['formula']}. Likelihood: "
            f"{contract['likelihood']['log_p_x_given_z']}. Full contract: metadata_props "
            "'contract' (JSON) and the bundle's manifest.json.")
