#!/usr/bin/env python3
"""Run an exported keras-vae model with NumPy and onnxruntime only: no TensorFlow, no Keras.

Copy this file and a folder written by `keras-vae export` to a device, then:

    python vae_runtime.py info   EXPORT_DIR
    python vae_runtime.py sample EXPORT_DIR --n 64 --seed 0 --out samples.png
    python vae_runtime.py decode EXPORT_DIR --z z.npy --out grid.png [--npy x_mean.npy]
    python vae_runtime.py encode EXPORT_DIR --x images.npy --out z_mean.npy
    python vae_runtime.py score  EXPORT_DIR --x images.npy [--samples 0] --out scores.npy

or from Python: `vae = ExportedVAE("EXPORT_DIR"); vae.encode(x); vae.decode(z); ...`.

`--precision fp16|int8` picks the `encoder.fp16.onnx` / `encoder.int8.onnx` variants (when they
were exported). Files are checked against the sha256 sums of `manifest.json` before use.

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
"""

import argparse
import hashlib
import json
import math
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


# --------------------------------------------------------------------------- the model
class ExportedVAE:
    """An exported VAE folder, run with onnxruntime.

    Args:
        folder: a folder written by `keras-vae export` (holds encoder.onnx, decoder.onnx and
            manifest.json).
        precision: "fp32", "fp16" or "int8": which ONNX variant to run.
        verify: check each file's sha256 against manifest.json before loading it.
        threads: onnxruntime intra-op threads (None: its default, all cores).
    """

    def __init__(self, folder, precision="fp32", verify=True, threads=None):
        if ort is None:
            raise RuntimeError("onnxruntime is not installed: pip install onnxruntime")
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"{self.folder} is not a folder; pass the folder that "
                                    "`keras-vae export` wrote.")
        if precision not in PRECISION_SUFFIX:
            raise ValueError(f"precision must be one of {list(PRECISION_SUFFIX)}, got "
                             f"{precision!r}.")
        self.precision = precision
        self.verify = verify
        self.threads = threads
        manifest_path = self.folder / "manifest.json"
        self.manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else None
        self._sessions = {}
        meta = self._session("decoder").get_modelmeta().custom_metadata_map
        self.latent_dim = int(meta["latent_dim"])
        self.input_shape = tuple(json.loads(meta["input_shape"]))
        self.likelihood = meta["likelihood"]
        self.posterior = meta["posterior"]
        self.model_name = meta.get("model_name", "")

    def _path(self, component):
        return self.folder / f"{component}{PRECISION_SUFFIX[self.precision]}.onnx"

    def _session(self, component):
        if component not in self._sessions:
            path = self._path(component)
            if not path.is_file():
                raise FileNotFoundError(
                    f"{path} does not exist; export it with `keras-vae export ... --formats "
                    f"{'onnx' if self.precision == 'fp32' else 'onnx_' + self.precision}`.")
            data = path.read_bytes()
            if self.verify and self.manifest is not None:
                self._check_sha256(path.name, data)
            options = ort.SessionOptions()
            options.log_severity_level = 3
            if self.threads:
                options.intra_op_num_threads = int(self.threads)
            self._sessions[component] = ort.InferenceSession(
                data, options, providers=["CPUExecutionProvider"])
        return self._sessions[component]

    def _check_sha256(self, name, data):
        for artifact in self.manifest.get("artifacts", []):
            for entry in artifact.get("files", []):
                if entry["path"] == name:
                    digest = hashlib.sha256(data).hexdigest()
                    if digest != entry["sha256"]:
                        raise ValueError(f"{self.folder / name} has sha256 {digest} but "
                                         f"manifest.json says {entry['sha256']}: the file is "
                                         "corrupt or was changed; copy it again.")
                    return
        raise ValueError(f"manifest.json does not list {name}; pass verify=False (--no-verify) "
                         "to run it anyway.")

    def _run(self, component, inputs, batch_size):
        session = self._session(component)
        input_name = session.get_inputs()[0].name
        names = [o.name for o in session.get_outputs()]
        parts = [session.run(names, {input_name: inputs[i:i + batch_size]})
                 for i in range(0, len(inputs), batch_size)]
        return {name: np.concatenate([p[j] for p in parts]) for j, name in enumerate(names)}

    # ----------------------------------------------------------------- inputs
    def check_x(self, x):
        """x as float32 (n, *input_shape); flat rows of the right size are reshaped.
        Raises ValueError naming the problem."""
        x = np.asarray(x)
        if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
            raise ValueError(f"x must be numeric, got dtype {x.dtype}.")
        size = int(np.prod(self.input_shape))
        if x.ndim >= 1 and x.shape[1:] != self.input_shape:
            if x.ndim >= 2 and int(np.prod(x.shape[1:])) == size:
                x = x.reshape((-1,) + self.input_shape)
            else:
                raise ValueError(f"x has shape {x.shape} but the model takes (n, "
                                 f"{', '.join(map(str, self.input_shape))}).")
        if x.ndim < 1 or len(x) == 0:
            raise ValueError(f"x is empty: shape {x.shape}.")
        x = x.astype("float32")
        if not np.all(np.isfinite(x)):
            raise ValueError("x contains NaN or infinite values.")
        if self.likelihood == "bernoulli" and (x.min() < 0 or x.max() > 1):
            raise ValueError(f"x has values in [{x.min():g}, {x.max():g}] but this Bernoulli "
                             "model takes data in [0, 1]; scale it (e.g. x / 255).")
        return x

    def check_z(self, z):
        z = np.asarray(z, dtype="float32")
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"z must have shape (n, {self.latent_dim}), got {z.shape}.")
        return z

    # ----------------------------------------------------------------- the API
    def encode(self, x, batch_size=256):
        """Parameters of q(z|x): (z_mean (n, K), z_log_var (n, K)) or, for a full posterior,
        (z_mean, z_scale_tril (n, K, K))."""
        out = self._run("encoder", self.check_x(x), batch_size)
        second = "z_log_var" if self.posterior == "diagonal" else "z_scale_tril"
        return out["z_mean"], out[second]

    def decode_params(self, z, batch_size=256):
        """All decoder outputs for z (n, K): {"x_mean", "x_logits"} (Bernoulli) or
        {"x_mean", "x_log_var"} (Gaussian), each (n, *input_shape)."""
        return self._run("decoder", self.check_z(z), batch_size)

    def decode(self, z, batch_size=256):
        """E[x|z] (n, *input_shape): probabilities (Bernoulli) or means (Gaussian)."""
        return self.decode_params(z, batch_size)["x_mean"]

    def sample(self, n, seed=None):
        """E[x|z] for n draws z ~ N(0, I) (NumPy's default_rng(seed)); returns (x_mean, z)."""
        z = np.random.default_rng(seed).standard_normal((int(n), self.latent_dim))
        z = z.astype("float32")
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
        log_var = params["x_log_var"].astype("float64")
        return (-0.5 * (LOG_2PI + log_var + (x - mean) ** 2 * np.exp(-log_var))).sum(axis=axes)

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
            (n,) float64 scores.
        """
        x = self.check_x(x)
        z_mean, z_scale = self.encode(x, batch_size)
        kl = self.kl(z_mean, z_scale)
        if not samples:
            return -(self.log_likelihood(x, self.decode_params(z_mean, batch_size)) - kl)
        samples = int(samples)
        eps = np.random.default_rng(seed).standard_normal((samples,) + z_mean.shape)
        if self.posterior == "diagonal":
            z = z_mean + np.exp(0.5 * z_scale) * eps
        else:
            z = z_mean + np.einsum("nij,snj->sni", z_scale, eps)
        log_lik = np.zeros(len(x))
        for s in range(samples):
            log_lik += self.log_likelihood(x, self.decode_params(z[s].astype("float32"),
                                                                 batch_size))
        return -(log_lik / samples - kl)

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
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                           + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


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


# --------------------------------------------------------------------------- command line
def _model(args):
    return ExportedVAE(args.folder, precision=args.precision, verify=not args.no_verify,
                       threads=args.threads)


def _zoom(vae, args):
    if args.zoom:
        return args.zoom
    return max(1, 28 // vae.image_shape(args.image_shape)[0])


def _info(args):
    vae = _model(args)
    print(json.dumps({"model_name": vae.model_name, "latent_dim": vae.latent_dim,
                      "input_shape": list(vae.input_shape), "likelihood": vae.likelihood,
                      "posterior": vae.posterior, "precision": vae.precision}, indent=2))


def _write_decoded(vae, args, x_mean, what):
    """The PNG grid of decoded means at args.out (and the array at args.npy, if given)."""
    write_png(args.out, image_grid(vae.to_pixels(x_mean, args.image_shape), zoom=_zoom(vae, args)))
    if args.npy:
        np.save(args.npy, x_mean)
    print(f"wrote {args.out}: {len(x_mean)} {what}")


def _sample(args):
    vae = _model(args)
    x_mean, _ = vae.sample(args.n, seed=args.seed)
    _write_decoded(vae, args, x_mean, "samples from the prior")


def _decode(args):
    vae = _model(args)
    _write_decoded(vae, args, vae.decode(np.load(args.z, allow_pickle=False)), "decoded points")


def _encode(args):
    vae = _model(args)
    z_mean, _ = vae.encode(load_inputs(args.x, args.key))
    np.save(args.out, z_mean)
    print(f"wrote {args.out}: latent means, shape {z_mean.shape}")


def _score(args):
    vae = _model(args)
    scores = vae.anomaly_score(load_inputs(args.x, args.key), samples=args.samples,
                               seed=args.seed)
    if args.out:
        np.save(args.out, scores)
    how = "at the posterior mean" if not args.samples else f"with {args.samples} samples"
    print(f"-ELBO {how} (nats): mean {scores.mean():.3f}, min {scores.min():.3f}, "
          f"max {scores.max():.3f}" + (f"; wrote {args.out}" if args.out else ""))


def build_parser():
    parser = argparse.ArgumentParser(
        prog="vae_runtime", description="Run an exported keras-vae model with onnxruntime "
                                        "(no TensorFlow): sample, decode, encode, score.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name, func, help_text):
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("folder", metavar="EXPORT_DIR", help="folder written by keras-vae export")
        sub.add_argument("--precision", choices=list(PRECISION_SUFFIX), default="fp32")
        sub.add_argument("--threads", type=int, help="onnxruntime threads (default: all cores)")
        sub.add_argument("--no-verify", action="store_true",
                         help="skip the sha256 check against manifest.json")
        sub.set_defaults(func=func)
        return sub

    command("info", _info, "print the model's latent size, input shape and likelihood")
    for name, func, text in (("sample", _sample, "decode z ~ N(0, I) to a PNG grid"),
                             ("decode", _decode, "decode given latent points to a PNG grid")):
        sub = command(name, func, text)
        if name == "sample":
            sub.add_argument("--n", type=int, default=64, help="how many samples (default 64)")
            sub.add_argument("--seed", type=int, default=0)
        else:
            sub.add_argument("--z", required=True, help=".npy of latent points (n, K)")
        sub.add_argument("--out", required=True, help="PNG file to write")
        sub.add_argument("--npy", help="also save E[x|z] to this .npy")
        sub.add_argument("--image-shape", type=int, nargs="+", metavar="N",
                         help="H W [C] of one example (default: from the input shape)")
        sub.add_argument("--zoom", type=int, help="pixel repeat factor (default: to ~28 px)")
    sub = command("encode", _encode, "encode inputs to their latent means")
    sub.add_argument("--x", required=True, nargs="+", help=".npy/.npz of inputs, or image files")
    sub.add_argument("--key", help="array name in a .npz")
    sub.add_argument("--out", required=True, help=".npy file for z_mean (n, K)")
    sub = command("score", _score, "anomaly score -ELBO (nats) of each input")
    sub.add_argument("--x", required=True, nargs="+", help=".npy/.npz of inputs, or image files")
    sub.add_argument("--key", help="array name in a .npz")
    sub.add_argument("--samples", type=int, default=0,
                     help="0: z = posterior mean (default); L: Monte Carlo -ELBO with L draws")
    sub.add_argument("--seed", type=int, default=0, help="seed of the draws")
    sub.add_argument("--out", help=".npy file for the scores (n,)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"vae_runtime {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
