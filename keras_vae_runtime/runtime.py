#!/usr/bin/env python3
"""Run an exported keras-vae model with NumPy and onnxruntime only: no TensorFlow, no Keras.

Every bundle written by `keras-vae export` holds a copy of this file as `vae_runtime.py`; it is
also installed with keras-vae as the module `keras_vae_runtime` and the command
`keras-vae-runtime`. In a bundle folder:

    python vae_runtime.py info   .
    python vae_runtime.py sample . --n 64 --seed 0 --out samples.png
    python vae_runtime.py decode . --z z.npy --out grid.png [--npy x_mean.npy]
    python vae_runtime.py encode . --x images.npy --out z_mean.npy
    python vae_runtime.py score  . --x images.npy [--samples 0] --out scores.npy
    python vae_runtime.py score  . --data rows.csv --out scores.csv   # a table detector

or from Python: `vae = ExportedVAE("BUNDLE"); vae.encode(x); vae.decode(z); ...`.

`--precision fp16|int8` picks the `encoder.fp16.onnx` / `encoder.int8.onnx` variants (when they
were exported). `manifest.json` is required: each file is checked against its sha256 before use
(`--no-verify` skips the check and then also runs a folder without a manifest, reading the
model's description from the ONNX metadata).

Anomaly score (nats per example, higher = more unusual): -ELBO(x), THEORY eqs [2]-[7],
    -ELBO = -E_q[ln p(x|z)] + KL(q(z|x) || N(0, I)),
with the KL in closed form (eq [27]) and the expectation estimated either
- `samples=0` (default): at the posterior mean, z = mu(x). Deterministic and one decoder pass;
  it evaluates the ELBO's reconstruction term at the most likely z instead of averaging it,
  so it is usually a little lower than the Monte Carlo -ELBO (a trained decoder fits x best
  near the posterior mean); fine for ranking examples, not an estimate of -ELBO; or
- `samples=L`: the Monte Carlo average over L draws z = mu + Sigma^(1/2) eps (eq [7]),
  eps ~ N(0, I) from `numpy.random.default_rng(seed).standard_normal((L, n, K))`: the same
  estimator as `keras_vae`'s training loss, unbiased for -ELBO.
ln p(x|z) is computed from the decoder's `x_logits` (Bernoulli, never clipped probabilities)
or from `x_mean` and `x_log_var` (Gaussian).

Learned priors ("vamp", "mog"): manifest.json's "prior" holds p(z) as a mixture of diagonal
Gaussians, {"weights" (C,), "means" (C, K), "log_vars" (C, K)}; a bundle without it has the
standard prior N(0, I). `sample` then draws a component c ~ Categorical(weights) and
z = means[c] + exp(log_vars[c] / 2) * eps (`rng.choice` for the n components, then
`rng.standard_normal((n, K))` for eps), and the KL of the score has no closed form: it is the
Monte Carlo mean of ln q(z|x) - ln p(z) over the score's L draws (`samples=L`), or over
`KL_DRAWS` draws from `default_rng(seed)` with `samples=0`.

Table detectors (a bundle exported from a `keras_vae.VAEDetector` or its run directory):
manifest.json's "anomaly" section holds the threshold, the score settings and the table's
columns, and `score --data rows.csv --out scores.csv` writes `row, score, flag` per row as
`keras-vae score` does: the same Monte Carlo -ELBO (or IWAE) with the same NumPy draws, the
location-scale log-densities (gaussian_hetero, student_t, laplace) computed here in NumPy;
`--threshold` or `--contamination` (refit on the stored training scores) override the flag rule.

Autoregressive decoders (the PixelVAE): the decoder graph maps (z, x) to the logits of
p(x_i = 1 | x_<i, z), so ln p(x|z) is exact in one pass, and drawing x ~ p(x|z) takes H * W
passes in raster order: pixel i is set to 1 when u_i < sigmoid(logit_i), u from
`numpy.random.default_rng(seed)` (first the z draws, then one u per image and pixel).
"""

import argparse
import hashlib
import json
import math
import os
import struct
import sys
import zlib
from pathlib import Path

import numpy as np

try:
    import onnxruntime as ort
except ImportError:  # pragma: no cover - explained at run time
    ort = None

PRECISION_SUFFIX = {"fp32": "", "fp16": ".fp16", "int8": ".int8"}
LOG_2PI = math.log(2.0 * math.pi)
MANIFEST = "manifest.json"
KL_DRAWS = 64  # draws of the KL estimate of a mixture prior's score with samples=0
# Likelihoods whose decoder returns a location (x_mean) and a log-scale (x_log_scale) per value.
LOCATION_SCALE = ("gaussian_hetero", "student_t", "laplace")
STUDENT_T_DF = 4.0  # the default; a bundle's manifest names its own


def location_scale_log_density(kind, x, loc, log_scale, df=STUDENT_T_DF):
    """Elementwise ln p(x) in nats (float64) of a location-scale density with location `loc`
    and scale s = exp(log_scale): "gaussian_hetero" (s is the standard deviation),
    "student_t" (`df` degrees of freedom) or "laplace" (keras_vae.likelihoods, the same
    formulas)."""
    x = np.asarray(x, dtype="float64")
    log_scale = np.asarray(log_scale, dtype="float64")
    u = (x - np.asarray(loc, dtype="float64")) * np.exp(-log_scale)
    if kind == "gaussian_hetero":
        return -0.5 * LOG_2PI - log_scale - 0.5 * u ** 2
    if kind == "student_t":
        df = float(df)
        const = (math.lgamma((df + 1.0) / 2.0) - math.lgamma(df / 2.0)
                 - 0.5 * math.log(df * math.pi))
        return const - log_scale - 0.5 * (df + 1.0) * np.log1p(u ** 2 / df)
    if kind == "laplace":
        return -math.log(2.0) - log_scale - np.abs(u)
    _fail(f"unknown location-scale likelihood {kind!r}: expected one of {LOCATION_SCALE}.")


class RuntimeInputError(ValueError):
    """Bad input, a missing or corrupt file: the message names the problem and the fix."""


def _fail(message):
    raise RuntimeInputError(message)


# --------------------------------------------------------------------------- the model
class ExportedVAE:
    """An exported VAE folder (a bundle), run with onnxruntime.

    Args:
        folder: a folder written by `keras-vae export` (holds manifest.json and the .onnx files).
        precision: "fp32", "fp16" or "int8": which ONNX variant to run.
        verify: check each file's sha256 against manifest.json before loading it; a folder
            without manifest.json is refused unless verify=False.
        threads: onnxruntime intra-op threads (None: its default, all cores).

    Raises:
        RuntimeInputError (a ValueError) or FileNotFoundError, with a one-line message.
    """

    def __init__(self, folder, precision="fp32", verify=True, threads=None):
        if ort is None:
            raise RuntimeError("onnxruntime is not installed: pip install onnxruntime")
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"{self.folder} is not a folder; pass the folder that "
                                    "`keras-vae export` wrote.")
        if precision not in PRECISION_SUFFIX:
            _fail(f"precision must be one of {list(PRECISION_SUFFIX)}, got {precision!r}.")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                    or threads < 1):
            _fail(f"threads must be a positive integer, got {threads!r}.")
        self.precision = precision
        self.verify = verify
        self.threads = threads
        self.manifest = self._read_manifest()
        self._sessions = {}
        if self.manifest is not None:
            meta = self.manifest
            self.latent_dim = int(meta["latent_dim"])
            self.input_shape = tuple(int(d) for d in meta["input_shape"])
            self.likelihood = meta["likelihood"]
            self.posterior = meta["posterior"]
            self.model_name = meta.get("model_name", "")
            self.autoregressive = bool(meta.get("autoregressive", False))
            self.prior = self._parse_prior(meta.get("prior"))
        else:
            self.prior = None
            meta = self._session("decoder").get_modelmeta().custom_metadata_map
            try:
                self.latent_dim = int(meta["latent_dim"])
                self.input_shape = tuple(json.loads(meta["input_shape"]))
                self.likelihood = meta["likelihood"]
                self.posterior = meta["posterior"]
            except (KeyError, ValueError) as err:
                _fail(f"{self._path('decoder')} lacks keras-vae metadata ({err}); it was not "
                      "written by keras-vae export.")
            self.model_name = meta.get("model_name", "")
            self.autoregressive = meta.get("autoregressive", "false") == "true"

    def _read_manifest(self):
        """manifest.json, checked; None without one when verify=False (and then a malformed
        one is ignored as well: the ONNX metadata describe the model)."""
        try:
            return self._parse_manifest()
        except RuntimeInputError:
            if self.verify:
                raise
            return None

    def _parse_manifest(self):
        path = self.folder / MANIFEST
        if not path.is_file():
            if self.verify:
                _fail(f"{path} does not exist, so the files cannot be verified; copy the "
                      "bundle's manifest.json along with the .onnx files, or pass --no-verify "
                      "(verify=False) to run them unchecked.")
            return None
        try:
            manifest = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as err:
            _fail(f"{path} is not valid JSON ({str(err).splitlines()[0]}); copy it again from "
                  "the export, or pass --no-verify to ignore it.")
        required = {"latent_dim": int, "input_shape": list, "likelihood": str,
                    "posterior": str, "artifacts": list}
        if not isinstance(manifest, dict):
            _fail(f"{path} is not a keras-vae manifest (a JSON object expected); copy it again "
                  "from the export.")
        for key, kind in required.items():
            if not isinstance(manifest.get(key), kind):
                _fail(f"{path} is malformed: {key!r} is missing or not a {kind.__name__}; copy "
                      "it again from the export.")
        for artifact in manifest["artifacts"]:
            files = artifact.get("files") if isinstance(artifact, dict) else None
            if not isinstance(files, list) or not all(
                    isinstance(f, dict) and isinstance(f.get("path"), str)
                    and isinstance(f.get("sha256"), str) for f in files):
                _fail(f"{path} is malformed: an artifact lacks its files' paths and sha256; "
                      "copy it again from the export.")
        return manifest

    def _parse_prior(self, prior):
        """manifest["prior"] as NumPy arrays (None: the standard prior), checked."""
        if prior is None:
            return None
        try:
            weights = np.asarray(prior["weights"], dtype="float64")
            means = np.asarray(prior["means"], dtype="float64")
            log_vars = np.asarray(prior["log_vars"], dtype="float64")
        except (TypeError, KeyError, ValueError):
            weights = means = log_vars = np.zeros(0)
        c = len(weights)
        if (weights.ndim != 1 or c < 1 or means.shape != (c, self.latent_dim)
                or log_vars.shape != (c, self.latent_dim) or np.any(weights < 0)
                or abs(weights.sum() - 1.0) > 1e-6 or not np.all(np.isfinite(means))
                or not np.all(np.isfinite(log_vars))):
            _fail(f"{self.folder / MANIFEST} is malformed: 'prior' must hold weights (C,) "
                  f"summing to 1, means and log_vars (C, {self.latent_dim}), all finite; copy "
                  "it again from the export.")
        return {"weights": weights / weights.sum(), "means": means, "log_vars": log_vars}

    def prior_log_density(self, z):
        """ln p(z) (n,) for latent points z (..., K): N(0, I) or the stored mixture."""
        z = np.asarray(z, dtype="float64")
        if self.prior is None:
            return -0.5 * np.sum(LOG_2PI + z ** 2, axis=-1)
        means, log_vars = self.prior["means"], self.prior["log_vars"]
        precision = np.exp(-log_vars)                                        # (C, K)
        with np.errstate(divide="ignore"):
            const = (np.log(self.prior["weights"])
                     - 0.5 * np.sum(LOG_2PI + log_vars + means ** 2 * precision, axis=-1))
        flat = z.reshape(-1, z.shape[-1])
        out = np.empty(len(flat))
        for start in range(0, len(flat), 4096):  # (rows, C) at a time, never (rows, C, K)
            rows = flat[start:start + 4096]
            comps = const - 0.5 * (rows ** 2 @ precision.T) + rows @ (means * precision).T
            top = comps.max(axis=-1, keepdims=True)
            out[start:start + 4096] = (top + np.log(np.exp(comps - top).sum(
                axis=-1, keepdims=True)))[:, 0]
        return out.reshape(z.shape[:-1])

    def sample_prior(self, n, rng):
        """n draws z (n, K) float32 from the prior with the NumPy Generator `rng`."""
        if self.prior is None:
            return rng.standard_normal((n, self.latent_dim)).astype("float32")
        comp = rng.choice(len(self.prior["weights"]), size=n, p=self.prior["weights"])
        eps = rng.standard_normal((n, self.latent_dim))
        return (self.prior["means"][comp] + np.exp(0.5 * self.prior["log_vars"][comp]) * eps
                ).astype("float32")

    def _path(self, component, precision=None):
        suffix = PRECISION_SUFFIX[precision or self.precision]
        return self.folder / f"{component}{suffix}.onnx"

    def available_precisions(self):
        """The precisions whose encoder and decoder .onnx files are both in the folder."""
        return [p for p in PRECISION_SUFFIX
                if all(self._path(c, p).is_file() for c in ("encoder", "decoder"))]

    def _missing(self, component):
        path = self._path(component)
        refused = [r for r in (self.manifest or {}).get("refused", [])
                   if isinstance(r, dict) and r.get("path") == path.name]
        if refused:
            return (f"{path.name} was refused at export: {refused[0].get('reason', '')}; "
                    f"run another precision (--precision "
                    f"{'|'.join(p for p in self.available_precisions()) or 'fp32'}).")
        present = [p for p in PRECISION_SUFFIX if p != self.precision
                   and self._path(component, p).is_file()]
        fmt = "onnx" if self.precision == "fp32" else "onnx_" + self.precision
        fix = (f"copy it with the bundle, or export it with `keras-vae export ... --formats "
               f"{fmt}`")
        if present:
            return (f"{path} does not exist, but this folder holds the {' and '.join(present)} "
                    f"variant{'s' if len(present) > 1 else ''}: pass --precision {present[0]} "
                    f"(precision={present[0]!r}), or {fix}.")
        return f"{path} does not exist; {fix}."

    def _session(self, component):
        if component not in self._sessions:
            path = self._path(component)
            if not path.is_file():
                raise FileNotFoundError(self._missing(component))
            data = path.read_bytes()
            if self.verify:
                self._check_sha256(path.name, data)
            options = ort.SessionOptions()
            options.log_severity_level = 3
            if self.threads:
                options.intra_op_num_threads = int(self.threads)
                options.inter_op_num_threads = 1
            try:
                self._sessions[component] = ort.InferenceSession(
                    data, options, providers=["CPUExecutionProvider"])
            except Exception as err:  # onnxruntime's own Fail/InvalidProtobuf
                _fail(f"onnxruntime cannot load {path} ({str(err).splitlines()[0][:200]}); "
                      "copy it again from the export.")
        return self._sessions[component]

    def _check_sha256(self, name, data):
        for artifact in self.manifest.get("artifacts", []):
            for entry in artifact.get("files", []):
                if entry["path"] == name:
                    digest = hashlib.sha256(data).hexdigest()
                    if digest != entry["sha256"]:
                        _fail(f"{self.folder / name} has sha256 {digest} but manifest.json "
                              f"says {entry['sha256']}: the file is corrupt or was changed; "
                              "copy it again.")
                    return
        _fail(f"manifest.json does not list {name}; pass verify=False (--no-verify) to run it "
              "anyway.")

    def _run(self, component, feeds, batch_size):
        """Runs a graph on named inputs, in batches; returns {output name: array}. Inputs are
        fed and outputs read by name, so the result does not depend on their positions."""
        session = self._session(component)
        names = [o.name for o in session.get_outputs()]
        n = len(next(iter(feeds.values())))
        if n == 0:
            shapes = {o.name: tuple(d if isinstance(d, int) else 0 for d in o.shape)
                      for o in session.get_outputs()}
            return {name: np.zeros((0,) + shapes[name][1:], "float32") for name in names}
        parts = [session.run(names, {k: v[i:i + batch_size] for k, v in feeds.items()})
                 for i in range(0, n, batch_size)]
        return {name: np.concatenate([p[j] for p in parts]) for j, name in enumerate(names)}

    # ----------------------------------------------------------------- inputs
    @staticmethod
    def _real(array, what):
        array = np.asarray(array)
        if array.dtype == object or not (np.issubdtype(array.dtype, np.number)
                                         or array.dtype == bool):
            _fail(f"{what} must be a numeric array, got dtype {array.dtype}.")
        if np.issubdtype(array.dtype, np.complexfloating):
            _fail(f"{what} is complex ({array.dtype}); the model takes real float32 values.")
        return array

    def check_x(self, x, what="x"):
        """x as float32 (n, *input_shape); flat rows of the right size are reshaped.
        Raises RuntimeInputError naming the problem."""
        x = self._real(x, what)
        size = int(np.prod(self.input_shape))
        if x.ndim >= 1 and x.shape[1:] != self.input_shape:
            if x.ndim >= 2 and int(np.prod(x.shape[1:])) == size:
                x = x.reshape((-1,) + self.input_shape)
            else:
                _fail(f"{what} has shape {x.shape} but the model takes (n, "
                      f"{', '.join(map(str, self.input_shape))}) (or n rows of {size} values).")
        if x.ndim < 1:
            _fail(f"{what} must be an array of examples, got a scalar.")
        with np.errstate(over="ignore", invalid="ignore"):  # reported below, in one line
            x = x.astype("float32")
        if len(x) and not np.all(np.isfinite(x)):
            _fail(f"{what} contains NaN or infinite values (or values too large for float32).")
        if len(x) and self.likelihood == "bernoulli" and (x.min() < 0 or x.max() > 1):
            _fail(f"{what} has values in [{x.min():g}, {x.max():g}] but this Bernoulli model "
                  "takes data in [0, 1]; scale it (e.g. x / 255).")
        if len(x) and self.autoregressive and not np.all((x == 0) | (x == 1)):
            _fail(f"{what} must be binary (0/1) for this autoregressive model; binarize it "
                  "(e.g. x > 0.5).")
        return x

    def check_z(self, z):
        z = self._real(z, "z")
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            _fail(f"z must have shape (n, {self.latent_dim}), got {z.shape}.")
        with np.errstate(over="ignore", invalid="ignore"):  # reported below, in one line
            z = z.astype("float32")
        if not np.all(np.isfinite(z)):
            _fail("z contains NaN or infinite values (or values too large for float32).")
        return z

    @staticmethod
    def _count(n, what, minimum=0):
        if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) \
                or n < minimum:
            _fail(f"{what} must be an integer >= {minimum}, got {n!r}.")
        return int(n)

    # ----------------------------------------------------------------- the API
    def encode(self, x, batch_size=256):
        """Parameters of q(z|x): (z_mean (n, K), z_log_var (n, K)) or, for a full posterior,
        (z_mean, z_scale_tril (n, K, K))."""
        out = self._run("encoder", {"x": self.check_x(x)}, batch_size)
        second = "z_log_var" if self.posterior == "diagonal" else "z_scale_tril"
        return out["z_mean"], out[second]

    def decode_params(self, z, x=None, batch_size=256):
        """All decoder outputs for z (n, K): {"x_mean", "x_logits"} (Bernoulli) or
        {"x_mean", "x_log_var"} (Gaussian), each (n, *input_shape). An autoregressive decoder
        also needs the image x (n, *input_shape) and returns {"x_logits"}."""
        feeds = {"z": self.check_z(z)}
        if self.autoregressive:
            if x is None:
                _fail("this decoder is autoregressive: decode_params needs the image x as well "
                      "as z (use decode/sample to draw images).")
            feeds["x"] = self.check_x(x)
            if len(feeds["x"]) != len(feeds["z"]):
                _fail(f"z has {len(feeds['z'])} rows but x has {len(feeds['x'])}.")
        return self._run("decoder", feeds, batch_size)

    def draw(self, z, seed=None, batch_size=256):
        """x ~ p(x|z) from an autoregressive decoder, pixel by pixel in raster order (H * W
        decoder passes); `seed` seeds `numpy.random.default_rng`."""
        z = self.check_z(z)
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        x = np.zeros((len(z),) + self.input_shape, dtype="float32")
        height, width = self.input_shape[0], self.input_shape[1]
        session = self._session("decoder")
        for start in range(0, len(z), batch_size):
            zb, xb = z[start:start + batch_size], x[start:start + batch_size]
            for row in range(height):
                for col in range(width):
                    logits = session.run(["x_logits"], {"z": zb, "x": xb})[0]
                    p = 0.5 + 0.5 * np.tanh(0.5 * logits[:, row, col, 0].astype("float64"))
                    xb[:, row, col, 0] = rng.random(len(p)) < p
        return x

    def decode(self, z, batch_size=256, seed=None):
        """E[x|z] (n, *input_shape): probabilities (Bernoulli) or means (Gaussian). An
        autoregressive decoder has no closed-form E[x|z]: a draw x ~ p(x|z) instead."""
        if self.autoregressive:
            return self.draw(z, seed=seed, batch_size=batch_size)
        return self.decode_params(z, batch_size=batch_size)["x_mean"]

    def sample(self, n, seed=None):
        """E[x|z] for n draws z ~ p(z) (N(0, I), or the bundle's mixture prior; NumPy's
        default_rng(seed)); returns (x_mean, z). An autoregressive decoder: x ~ p(x|z), drawn
        with the same generator after z."""
        n = self._count(n, "n")
        rng = np.random.default_rng(seed)
        z = self.sample_prior(n, rng)
        if self.autoregressive:
            return self.draw(z, seed=rng), z
        return self.decode(z), z

    def log_likelihood(self, x, params):
        """ln p(x|z) in nats, summed over x's features; params from `decode_params`."""
        axes = tuple(range(-len(self.input_shape), 0))
        if self.likelihood == "bernoulli":
            logits = params["x_logits"].astype("float64")
            # -BCE from logits: -(max(l, 0) - l x + ln(1 + exp(-|l|)))  (THEORY eq [32])
            bce = np.maximum(logits, 0) - logits * x + np.log1p(np.exp(-np.abs(logits)))
            return -bce.sum(axis=axes)
        mean = params["x_mean"].astype("float64")
        if self.likelihood in LOCATION_SCALE:
            df = (self.manifest or {}).get("contract", {}).get("likelihood", {}).get(
                "degrees_of_freedom", STUDENT_T_DF)
            return location_scale_log_density(self.likelihood, x, mean,
                                              params["x_log_scale"], df).sum(axis=axes)
        log_var = params["x_log_var"].astype("float64")
        return (-0.5 * (LOG_2PI + log_var + (x - mean) ** 2 * np.exp(-log_var))).sum(axis=axes)

    def log_p_x_given_z(self, x, z, batch_size=256):
        """Exact ln p(x|z) (n,) in nats for images x and latents z, one decoder pass."""
        x = self.check_x(x)
        return self.log_likelihood(x, self.decode_params(z, x if self.autoregressive else None,
                                                         batch_size))

    def kl(self, z_mean, z_scale):
        """KL(q(z|x) || N(0, I)) per example in nats, THEORY eq [27]."""
        mu = z_mean.astype("float64")
        if self.posterior == "diagonal":
            v = z_scale.astype("float64")
            return -0.5 * np.sum(1.0 + v - mu ** 2 - np.exp(v), axis=-1)
        tril = z_scale.astype("float64")
        log_det = 2.0 * np.sum(np.log(np.diagonal(tril, axis1=-2, axis2=-1)), axis=-1)
        trace = np.sum(tril ** 2, axis=(-2, -1))
        return 0.5 * (-log_det - self.latent_dim + trace + np.sum(mu ** 2, axis=-1))

    def anomaly_score(self, x, samples=0, seed=0, batch_size=256):
        """-ELBO(x) in nats per example (higher = more unusual); see the module docstring.

        Args:
            x: (n, *input_shape) inputs.
            samples: 0 for z = posterior mean (deterministic), L >= 1 for the Monte Carlo
                -ELBO with L draws per example.
            seed: seed of the draws when samples >= 1.

        Returns:
            (n,) float64 scores (empty for an empty x).
        """
        samples = self._count(samples, "samples")
        x = self.check_x(x)
        if len(x) == 0:
            return np.zeros(0)
        z_mean, z_scale = self.encode(x, batch_size)
        context = x if self.autoregressive else None
        if self.prior is None:
            kl = self.kl(z_mean, z_scale)
        else:  # no closed form: the mean of ln q(z|x) - ln p(z) over the draws
            eps = np.random.default_rng(seed).standard_normal(
                (samples or KL_DRAWS,) + z_mean.shape)
            kl = np.mean(self._log_q(eps, z_scale) - self.prior_log_density(
                self._draws(z_mean, z_scale, eps)), axis=0)
        if not samples:
            return -(self.log_likelihood(x, self.decode_params(z_mean, context, batch_size))
                     - kl)
        eps = np.random.default_rng(seed).standard_normal((samples,) + z_mean.shape)
        z = self._draws(z_mean, z_scale, eps)
        log_lik = np.zeros(len(x))
        for s in range(samples):
            log_lik += self.log_likelihood(x, self.decode_params(z[s].astype("float32"),
                                                                 context, batch_size))
        return -(log_lik / samples - kl)

    def _draws(self, z_mean, z_scale, eps):
        """z = mu + Sigma^(1/2) eps for eps (S, n, K): (S, n, K)."""
        if self.posterior == "diagonal":
            return z_mean + np.exp(0.5 * z_scale) * eps
        return z_mean + np.einsum("nij,snj->sni", z_scale, eps)

    def _log_q(self, eps, z_scale):
        """ln q(z|x) (S, n) at z = _draws(z_mean, z_scale, eps)."""
        if self.posterior == "diagonal":
            log_det = 0.5 * np.sum(z_scale.astype("float64"), axis=-1)
        else:
            log_det = np.sum(np.log(np.diagonal(z_scale.astype("float64"), axis1=-2,
                                                axis2=-1)), axis=-1)
        return -0.5 * np.sum(LOG_2PI + eps ** 2, axis=-1) - log_det

    # ----------------------------------------------------------------- table detectors
    @property
    def detector(self):
        """manifest["anomaly"]: a table detector's threshold and score settings (written when
        the export came from a `keras_vae.VAEDetector` or its run directory), or None."""
        section = (self.manifest or {}).get("anomaly")
        return section if isinstance(section, dict) else None

    def detector_score(self, x, method=None, num_samples=None, seed=None):
        """Anomaly scores (n,) float64 of rows x as `keras-vae score` (`VAEDetector`) computes
        them, nats, higher = more unusual: the Monte Carlo -ELBO ("elbo") or the
        importance-weighted -ln p(x) ("iwae") over `num_samples` posterior draws per row, the
        draws eps made by numpy.random.default_rng(seed) batch by batch (manifest["anomaly"]
        ["noise"]). Settings default to the manifest's "anomaly" section."""
        settings = self.detector or {}
        method = method or settings.get("score", "elbo")
        if method not in ("elbo", "iwae"):
            _fail(f"score method must be 'elbo' or 'iwae', got {method!r}.")
        samples = self._count(settings.get("num_samples", 16) if num_samples is None
                              else num_samples, "num_samples", 1)
        seed = settings.get("seed", 0) if seed is None else seed
        batch = int(settings.get("batch_size", 2048))
        if self.posterior != "diagonal" or self.autoregressive:
            _fail("detector scores need a diagonal-posterior, non-autoregressive model; use "
                  "anomaly_score (score --samples) for this one.")
        x = self.check_x(x)
        rng = np.random.default_rng(seed)
        k = self.latent_dim
        out = np.empty(len(x))
        for start in range(0, len(x), batch):
            xb = x[start:start + batch]
            b = len(xb)
            z_mean, z_log_var = self.encode(xb, batch_size=batch)
            mu, log_var = z_mean.astype("float64"), z_log_var.astype("float64")
            eps = rng.standard_normal((samples, b, k)).astype("float32").astype("float64")
            z = self._draws(mu, log_var, eps)                              # (S, b, K)
            params = self.decode_params(z.reshape(-1, k).astype("float32"),
                                        batch_size=samples * b)
            params = {name: v.reshape((samples, b) + v.shape[1:]) for name, v in params.items()}
            log_lik = self.log_likelihood(xb.astype("float64"), params)    # (S, b)
            if method == "elbo":
                value = log_lik.mean(axis=0) - self.kl(z_mean, z_log_var)
            else:
                log_w = log_lik + self.prior_log_density(z) - self._log_q(eps, log_var)
                top = log_w.max(axis=0)
                value = top + np.log(np.exp(log_w - top).sum(axis=0)) - math.log(samples)
            out[start:start + b] = -value
        return out

    def detector_threshold(self, contamination=None):
        """The score above which a row is flagged: manifest["anomaly"]["threshold"], or for a
        given `contamination` in (0, 0.5] the (1 - contamination) quantile of the training
        rows' scores (as `VAEDetector.set_contamination`); None when the bundle has none."""
        section = self.detector or {}
        if contamination is None:
            value = section.get("threshold")
            return None if value is None else float(value)
        if isinstance(contamination, bool) or not isinstance(contamination, (int, float)) \
                or not 0.0 < contamination <= 0.5:
            _fail(f"contamination must be a number in (0, 0.5], got {contamination!r}.")
        stored = section.get("training_scores")
        if not isinstance(stored, dict):
            _fail("this bundle holds no training scores to refit the threshold from "
                  + (f"({section['note']}); " if section.get("note") else "(it was not "
                     "exported from a table detector); ") + "pass a threshold instead.")
        n, first, values = int(stored["count"]), int(stored["from_index"]), stored["sorted"]
        # numpy.quantile's default ("linear") method, on the stored upper half
        h = (n - 1) * (1.0 - float(contamination))
        lo = int(math.floor(h))
        hi = min(lo + 1, n - 1)
        a, b, t = float(values[lo - first]), float(values[hi - first]), h - lo
        return b - (b - a) * (1.0 - t) if t >= 0.5 else a + (b - a) * t

    # ----------------------------------------------------------------- pictures
    def image_shape(self, image_shape=None):
        """(H, W, C) of one example as a picture; flat inputs must be square (or give it)."""
        if image_shape is not None:
            shape = tuple(int(d) for d in image_shape)
            shape = shape + (1,) if len(shape) == 2 else shape
            if int(np.prod(shape)) != int(np.prod(self.input_shape)):
                raise ValueError(f"--image-shape {shape} does not hold "
                                 f"{int(np.prod(self.input_shape))} values.")
            return shape
        if len(self.input_shape) == 3 and self.input_shape[-1] in (1, 3):
            return self.input_shape
        if len(self.input_shape) == 2:
            return self.input_shape + (1,)
        size = int(np.prod(self.input_shape))
        for channels in (1, 3):
            side = math.isqrt(size // channels)
            if side * side * channels == size:
                return (side, side, channels)
        raise ValueError(f"Inputs of shape {self.input_shape} are not square images; pass "
                         "--image-shape H W [C].")

    def to_pixels(self, x_mean, image_shape=None):
        """(n, H, W, C) uint8 pictures from decoder means: probabilities are used as they are,
        Gaussian means are stretched from their min..max to 0..255."""
        images = np.asarray(x_mean, dtype="float64").reshape((-1,) + self.image_shape(image_shape))
        if self.likelihood == "gaussian":
            lo, hi = images.min(), images.max()
            images = (images - lo) / (hi - lo if hi > lo else 1.0)
        return np.round(np.clip(images, 0.0, 1.0) * 255).astype("uint8")


# --------------------------------------------------------------------------- PNG
def image_grid(images, columns=None, zoom=1, padding=1):
    """Tiles (n, H, W, C) uint8 images into one (rows*H', cols*W', C) picture."""
    n, h, w, c = images.shape
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    if zoom > 1:
        images = images.repeat(zoom, axis=1).repeat(zoom, axis=2)
        h, w = h * zoom, w * zoom
    grid = np.full((rows * (h + padding) + padding, columns * (w + padding) + padding, c), 255,
                   dtype="uint8")
    for i, image in enumerate(images):
        r, col = divmod(i, columns)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        grid[top:top + h, left:left + w] = image
    return grid


def write_png(path, pixels):
    """Writes (H, W) or (H, W, 1|3) uint8 pixels as an 8-bit grayscale or RGB PNG (stdlib only).
    """
    pixels = np.asarray(pixels, dtype="uint8")
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    height, width = pixels.shape[:2]
    color_type = 0 if pixels.ndim == 2 else 2
    raw = b"".join(b"\x00" + row.tobytes() for row in pixels)  # filter type 0 per row

    def chunk(kind, body):
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    write_atomic(path, b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                 + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def write_atomic(path, data):
    """Writes bytes to a temporary name next to `path`, then renames it into place."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_npy(path, array):
    """np.save, atomically (the path is used as given: no ".npy" is appended)."""
    import io

    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    write_atomic(path, buffer.getvalue())


# --------------------------------------------------------------------------- files
def load_inputs(paths, key=None):
    """Inputs from one .npy/.npz file, or from image files (needs Pillow), as an array.
    Image pixels are scaled to [0, 1]."""
    paths = [Path(p) for p in paths]
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist.")
    if len(paths) == 1 and paths[0].suffix == ".npy":
        return np.load(paths[0], allow_pickle=False)
    if len(paths) == 1 and paths[0].suffix == ".npz":
        with np.load(paths[0], allow_pickle=False) as archive:
            names = list(archive.keys())
            key = key or (names[0] if len(names) == 1 else None)
            if key not in names:
                raise ValueError(f"{paths[0]} holds arrays {names}; choose one with --key.")
            return archive[key]
    try:
        from PIL import Image
    except ImportError:
        raise ValueError("Reading image files needs Pillow (pip install pillow); or pass a "
                         ".npy array of inputs.") from None
    images = [np.asarray(Image.open(p)) for p in paths]
    if len({im.shape for im in images}) != 1:
        raise ValueError("The images have different sizes: " + ", ".join(
            f"{p.name} {im.shape}" for p, im in zip(paths, images)))
    return np.stack(images).astype("float32") / 255.0


_MISSING = ("", "na", "nan", "n/a", "null", "none", "?")


def _number(text):
    try:
        return float(text)
    except ValueError:
        return None


def read_table(path, table=None):
    """The feature rows (n, D) float64 of a CSV/TSV file, read as `keras-vae score` reads it:
    `table` is manifest["anomaly"]["table"] ({"columns", "label_column", "header", "impute"};
    None: every column). The delimiter is tab for .tsv/.tab, else the most frequent of
    , tab ; | in the first line; header "auto" takes the first row as names when it holds a
    non-number above a number. Bad values fail with the column and row named (rows count
    from 1 after the header)."""
    import csv

    table = table or {}
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist.")
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            first = handle.readline()
            if path.suffix.lower() in (".tsv", ".tab"):
                delimiter = "\t"
            else:
                counts = {d: first.count(d) for d in (",", "\t", ";", "|")}
                best = max(counts, key=counts.get)
                delimiter = best if counts[best] else ","
            handle.seek(0)
            rows = [row for row in csv.reader(handle, delimiter=delimiter)
                    if row and any(f.strip() for f in row)]
    except UnicodeDecodeError as err:
        _fail(f"{path} is not a UTF-8 text table ({err.reason} at byte {err.start}).")
    if not rows:
        _fail(f"{path} holds no rows.")

    def missing(text):
        return text.strip().lower() in _MISSING

    header = table.get("header", "auto")
    if header not in (True, False):
        header = (any(_number(a) is None and not missing(a) and _number(b) is not None
                      for a, b in zip(rows[0], rows[1])) if len(rows) > 1 else
                  any(_number(f) is None and not missing(f) for f in rows[0]))
    names = [f.strip() for f in rows[0]] if header else [str(i) for i in range(len(rows[0]))]
    body = rows[1:] if header else rows

    def index_of(key):
        key = str(key)
        if key in names:
            return names.index(key)
        if key.isdigit() and int(key) < len(names):
            return int(key)
        _fail(f"{path}: no column named {key!r}; the model was trained on the columns "
              f"{', '.join(map(repr, table.get('columns') or []))}.")

    label = table.get("label_column")
    label = names.index(label) if label is not None and label in names else None
    chosen = ([index_of(c) for c in table["columns"]] if table.get("columns")
              else [i for i in range(len(names)) if i != label])
    x = np.empty((len(body), len(chosen)))
    for i, row in enumerate(body):
        if len(row) != len(names):
            _fail(f"{path}: row {i + 1} has {len(row)} fields but "
                  f"{'the header has' if header else 'row 1 has'} {len(names)}; every row "
                  "needs the same number of fields.")
        for j, c in enumerate(chosen):
            value = _number(row[c])
            if value is None:
                if not missing(row[c]):
                    _fail(f"{path}: column {names[c]!r}, row {i + 1} holds {row[c].strip()!r}, "
                          "not a number.")
                value = math.nan
            x[i, j] = value
    holes = np.isnan(x)
    if holes.any():
        impute = table.get("impute")
        row, col = np.argwhere(holes)[0]
        if impute not in ("median", "mean") or holes.all(axis=0).any():
            _fail(f"{path}: column {names[chosen[col]]!r}, row {row + 1} is missing "
                  f"({int(holes.sum())} missing values in all); fill them in first.")
        with np.errstate(all="ignore"):
            fill = (np.nanmedian if impute == "median" else np.nanmean)(x, axis=0)
        x = np.where(holes, fill, x)
    if not np.all(np.isfinite(x)):
        row, col = np.argwhere(~np.isfinite(x))[0]
        _fail(f"{path}: column {names[chosen[col]]!r}, row {row + 1} is infinite; replace it "
              "with a finite number.")
    return x


def write_scores_csv(path, scores, flags=None):
    """row (from 1), score (6 significant digits) [, flag] per row, as `keras-vae score`."""
    lines = ["row,score" + (",flag" if flags is not None else "")]
    for i, value in enumerate(scores):
        lines.append(f"{i + 1},{value:.6g}" + (f",{int(flags[i])}" if flags is not None
                                                else ""))
    write_atomic(path, ("\r\n".join(lines) + "\r\n").encode())


# --------------------------------------------------------------------------- command line
def _model(args):
    return ExportedVAE(args.folder, precision=args.precision, verify=not args.no_verify,
                       threads=args.threads)


def _zoom(vae, args):
    if args.zoom:
        return args.zoom
    return max(1, 28 // vae.image_shape(args.image_shape)[0])


def _check_writable(*paths):
    """Fails before any work when an output file's folder does not exist or is not writable."""
    for path in paths:
        if path is None:
            continue
        folder = Path(path).parent
        if not folder.is_dir():
            _fail(f"cannot write {path}: the folder {folder} does not exist; create it first.")
        if not os.access(folder, os.W_OK):
            _fail(f"cannot write {path}: the folder {folder} is not writable; choose another "
                  "output path.")


def _info(args):
    vae = _model(args)
    vae._session("decoder")  # the chosen precision's files exist (and match manifest.json)
    vae._session("encoder")
    info = {"model_name": vae.model_name, "latent_dim": vae.latent_dim,
            "input_shape": list(vae.input_shape), "likelihood": vae.likelihood,
            "posterior": vae.posterior, "autoregressive": vae.autoregressive,
            "precision": vae.precision, "precisions_here": vae.available_precisions()}
    if vae.manifest is not None and "contract" in vae.manifest:
        contract = vae.manifest["contract"]
        for component in ("encoder", "decoder"):
            info[component] = {
                "inputs": [f"{t['name']} {t['dtype']} ({', '.join(map(str, t['shape']))})"
                           for t in contract[component]["inputs"]],
                "outputs": [f"{t['name']} {t['dtype']} ({', '.join(map(str, t['shape']))})"
                            for t in contract[component]["outputs"]]}
        info["sampling"] = contract["sampling"]["formula"]
    print(json.dumps(info, indent=2))


def _write_decoded(vae, args, x_mean, what):
    """The PNG grid of decoded means at args.out (and the array at args.npy, if given)."""
    write_png(args.out, image_grid(vae.to_pixels(x_mean, args.image_shape), zoom=_zoom(vae, args)))
    if args.npy:
        save_npy(args.npy, x_mean)
    print(f"wrote {args.out}: {len(x_mean)} {what}")


def _sample(args):
    if args.n < 1:
        _fail(f"--n must be at least 1 (a picture of {args.n} samples is empty).")
    _check_writable(args.out, args.npy)
    vae = _model(args)
    x_mean, _ = vae.sample(args.n, seed=args.seed)
    _write_decoded(vae, args, x_mean, "samples from the prior"
                   + (" (x ~ p(x|z))" if vae.autoregressive else ""))


def _decode(args):
    _check_writable(args.out, args.npy)
    vae = _model(args)
    z = load_inputs([args.z])
    if len(z) == 0:
        _fail(f"{args.z} holds no latent points (shape {z.shape}); nothing to draw.")
    _write_decoded(vae, args, vae.decode(z, seed=args.seed), "decoded points")


def _encode(args):
    _check_writable(args.out)
    vae = _model(args)
    z_mean, _ = vae.encode(load_inputs(args.x, args.key))
    save_npy(args.out, z_mean)
    print(f"wrote {args.out}: latent means, shape {z_mean.shape}")


def _score(args):
    if args.samples is not None and args.samples < 0:
        _fail(f"--samples must be 0 (z = posterior mean) or a positive number of draws, got "
              f"{args.samples}.")
    if (args.x is None) == (args.data is None):
        _fail("pass the inputs with --x (.npy/.npz or image files) or --data (a CSV/TSV "
              "table), one of the two.")
    if args.threshold is not None and args.contamination is not None:
        _fail("--threshold and --contamination both set the threshold; pass one of them.")
    as_csv = bool(args.out) and args.out.lower().endswith(".csv")
    if as_csv and Path(args.out).exists() and not args.overwrite:
        _fail(f"{args.out} exists; pass --overwrite to replace it.")
    _check_writable(args.out)
    vae = _model(args)
    if args.data is not None:
        x = read_table(args.data, (vae.detector or {}).get("table"))
    else:
        x = load_inputs(args.x, args.key)
    if vae.detector is not None and args.samples is None:
        scores = vae.detector_score(x, seed=args.seed)
        how = (f"{vae.detector.get('score', 'elbo')} score with "
               f"{vae.detector.get('num_samples', 16)} samples")
    else:
        samples = args.samples or 0
        scores = vae.anomaly_score(x, samples=samples, seed=args.seed or 0)
        how = ("-ELBO at the posterior mean" if not samples
               else f"-ELBO with {samples} samples")
    threshold = (args.threshold if args.threshold is not None
                 else vae.detector_threshold(args.contamination))
    flags = None if threshold is None else (scores > threshold).astype("int64")
    if as_csv:
        write_scores_csv(args.out, scores, flags)
    elif args.out:
        save_npy(args.out, scores)
    wrote = f"; wrote {args.out}" if args.out else ""
    if len(scores) == 0:
        print("no inputs: nothing scored" + wrote)
        return
    print(f"{how} (nats): mean {scores.mean():.3f}, min {scores.min():.3f}, "
          f"max {scores.max():.3f}"
          + ("" if flags is None else f"; {int(flags.sum())} flagged (score > {threshold:.4g})")
          + wrote)


def build_parser(prog="vae_runtime"):
    parser = argparse.ArgumentParser(
        prog=prog, description="Run an exported keras-vae model with onnxruntime "
                               "(no TensorFlow): sample, decode, encode, score.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name, func, help_text):
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("folder", metavar="BUNDLE", help="folder written by keras-vae export")
        sub.add_argument("--precision", choices=list(PRECISION_SUFFIX), default="fp32")
        sub.add_argument("--threads", type=int, help="onnxruntime threads (default: all cores)")
        sub.add_argument("--no-verify", action="store_true",
                         help="skip the sha256 check against manifest.json (and run a folder "
                              "without one)")
        sub.set_defaults(func=func)
        return sub

    command("info", _info, "print the model's latent size, input shape, likelihood and I/O")
    for name, func, text in (("sample", _sample, "decode z ~ N(0, I) to a PNG grid"),
                             ("decode", _decode, "decode given latent points to a PNG grid")):
        sub = command(name, func, text)
        if name == "sample":
            sub.add_argument("--n", type=int, default=64, help="how many samples (default 64)")
        else:
            sub.add_argument("--z", required=True, help=".npy of latent points (n, K)")
        sub.add_argument("--seed", type=int, default=0,
                         help="seed of z (sample) and of the pixel draws (autoregressive)")
        sub.add_argument("--out", required=True, help="PNG file to write")
        sub.add_argument("--npy", help="also save E[x|z] to this .npy")
        sub.add_argument("--image-shape", type=int, nargs="+", metavar="N",
                         help="H W [C] of one example (default: from the input shape)")
        sub.add_argument("--zoom", type=int, help="pixel repeat factor (default: to ~28 px)")
    sub = command("encode", _encode, "encode inputs to their latent means")
    sub.add_argument("--x", required=True, nargs="+", help=".npy/.npz of inputs, or image files")
    sub.add_argument("--key", help="array name in a .npz")
    sub.add_argument("--out", required=True, help=".npy file for z_mean (n, K)")
    sub = command("score", _score, "anomaly score -ELBO (nats) of each input; a table "
                                    "detector's bundle also flags rows above its threshold")
    sub.add_argument("--x", nargs="+", help=".npy/.npz of inputs, or image files")
    sub.add_argument("--data", help="a CSV/TSV table of raw rows (a table detector's bundle "
                                    "reads the columns it was trained on)")
    sub.add_argument("--key", help="array name in a .npz")
    sub.add_argument("--samples", type=int, default=None,
                     help="0: z = posterior mean (the default, except for a table detector's "
                          "bundle, which scores as keras-vae score); L: Monte Carlo -ELBO with "
                          "L draws")
    sub.add_argument("--seed", type=int, default=None,
                     help="seed of the draws (default 0, or the detector's)")
    sub.add_argument("--threshold", type=float, default=None,
                     help="flag rows whose score is above this (default: the bundle's)")
    sub.add_argument("--contamination", type=float, default=None,
                     help="flag this share of the detector's training rows instead: refits "
                          "the threshold from the training scores in manifest.json")
    sub.add_argument("--out", help=".npy file for the scores (n,), or .csv for row, score "
                                   "(and flag, when a threshold is known) per row")
    sub.add_argument("--overwrite", action="store_true",
                     help="replace an existing .csv --out file")
    return parser


def main(argv=None, prog="vae_runtime"):
    args = build_parser(prog).parse_args(argv)
    try:
        args.func(args)
    except (ValueError, OSError, RuntimeError) as err:  # FileNotFoundError is an OSError
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        if isinstance(err, OSError) and not isinstance(err, FileNotFoundError) \
                and err.filename is not None:
            message = f"cannot write or read {err.filename}: {err.strerror}"
        print(f"{prog} {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog} {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


def console_main():
    """The `keras-vae-runtime` command."""
    return main(prog="keras-vae-runtime")


if __name__ == "__main__":
    sys.exit(main())
