"""A static web page that runs an exported VAE in the browser (onnxruntime-web, wasm backend).

    kv.export(vae, "bundle/", formats=("web",))      # or: keras-vae export ... --formats web
    python -m http.server -d bundle/ 8000            # then open http://127.0.0.1:8000/

The export writes the fp32 ONNX files, then `write_web_app` adds to the same folder:

    index.html, app.js, vae.js, style.css   the page: plain JavaScript modules, no build step
    ort/                                    onnxruntime-web's wasm runtime, copied from a local
                                            `npm install onnxruntime-web@ORT_WEB_VERSION`
    web.json                                the model card facts, the bundle's anomaly threshold
                                            (if any) and the self-check: latent points and the
                                            Keras decoder's x_mean for them

The page works offline from any static file server (single-threaded wasm, so no
cross-origin-isolation headers are needed). It shows: a seeded grid of samples from the prior
(resample button); sliders over the latent space (a 2-D manifold when K = 2); interpolation
between two prior samples; for image models a drawing canvas that is encoded, reconstructed and
scored; the model card; decode latency at batch 1 and 64; and a self-check on load.

What the page computes, exactly (so Python reproduces it):
- Self-check: the decoder's x_mean for `web.json`'s `check.z`, compared with Keras's
  (`check.x_mean`); the element `#selfcheck` gets `data-max-abs-diff` (the largest absolute
  difference) and the text "ok" when that is <= SELF_CHECK_TOLERANCE * max(1, max |Keras|),
  else "mismatch".
- Anomaly score: -ELBO(x) in nats at the posterior mean, z = mu(x) (one decoder pass, no
  sampling), the KL in closed form: exactly the TF-free runtime's
  `ExportedVAE(bundle).anomaly_score(x, samples=0)` (both evaluate in float64 from the float32
  network outputs).
  `#score` gets `data-score`, `data-reconstruction` (-ln p(x|mu)) and `data-kl`.
- Prior samples: z = Box-Muller normals from the mulberry32 generator seeded with the seed
  shown (`prior_normals` below is the same generator in Python).
  `#samples` (the grid canvas) gets `data-seed`, `data-x-mean` (the mean of x_mean over the
  grid) and `data-mean`/`data-std` of its gray levels (0..255).
- Latency: `#latency` gets `data-batch1-ms` and `data-batch64-ms`, the mean wall time of a
  decode call over 200 calls at batch 1 and 30 at batch 64, after warm-up calls.

Query parameters (for tests and scripts): `x=BASE64` scores one input as if it were drawn (the
URL-safe base64 of its float32 little-endian bytes, `encode_input`); `seed=N` seeds the first
grid; `latency=0` skips the timing; `report=PATH` POSTs the numbers above as JSON to PATH when
the page has finished (`keras_vae.web.browser.page_report`).
"""

import base64
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np

from keras_vae.files import atomic_path, atomic_write_bytes, file_sha256

# The onnxruntime-web release the page is written and tested against.
ORT_WEB_VERSION = "1.30.0"
# What the single-threaded wasm backend loads: the ES module API (wasm backend only), its
# Emscripten loader and the WebAssembly binary (SIMD build; it runs single-threaded without
# SharedArrayBuffer when numThreads = 1).
ORT_WEB_FILES = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
ORT_WEB_ENV = "KERAS_VAE_ORT_WEB"
ASSETS = ("index.html", "app.js", "vae.js", "style.css")
SELF_CHECK_TOLERANCE = 1e-4
NUM_CHECK = 8  # latent points of the self-check
WEB_FORMAT = "web"

_HERE = Path(__file__).resolve().parent


class OrtWebNotFound(FileNotFoundError):
    """onnxruntime-web's runtime files are not where `find_ort_web` looks."""


def _install_hint():
    return (f"run `npm install onnxruntime-web@{ORT_WEB_VERSION}` in the current folder, or "
            f"pass its dist folder with --ort-web PATH (ort_web=PATH, or ${ORT_WEB_ENV})")


def _dist_folder(path):
    """The folder holding ORT_WEB_FILES under `path` (a dist folder, the package folder or a
    node_modules folder), or None."""
    path = Path(path)
    for candidate in (path, path / "dist", path / "onnxruntime-web" / "dist",
                      path / "node_modules" / "onnxruntime-web" / "dist"):
        if all((candidate / name).is_file() for name in ORT_WEB_FILES):
            return candidate
    return None


def find_ort_web(ort_web=None):
    """The folder of onnxruntime-web's runtime files (its `dist/`).

    Looks, in this order, at `ort_web` (when given, only there), `$KERAS_VAE_ORT_WEB`,
    `node_modules/onnxruntime-web/dist` under the current folder, and under the source tree's
    root (a development checkout). Each may name the dist folder, the package folder or a folder
    holding `node_modules`.

    Raises:
        OrtWebNotFound: with one line saying what to install or pass.
    """
    if ort_web is not None:
        found = _dist_folder(ort_web)
        if found is None:
            raise OrtWebNotFound(f"--ort-web {ort_web} does not hold onnxruntime-web's "
                                 f"{', '.join(ORT_WEB_FILES)}; {_install_hint()}.")
        return found
    places = []
    if os.environ.get(ORT_WEB_ENV):
        places.append(Path(os.environ[ORT_WEB_ENV]))
    places += [Path.cwd(), _HERE.parent.parent]
    for place in places:
        found = _dist_folder(place)
        if found is not None:
            return found
    raise OrtWebNotFound("The web app needs onnxruntime-web's runtime files and none were found "
                         f"(looked in {', '.join(str(p) for p in places)}): {_install_hint()}.")


def ort_web_version(dist):
    """The version in the package.json next to `dist` (None when there is none)."""
    package = Path(dist).parent / "package.json"
    try:
        return json.loads(package.read_text()).get("version")
    except (OSError, ValueError):
        return None


def split_formats(formats):
    """`formats` without "web", and whether "web" was asked for; "web" adds the fp32 ONNX
    files the page runs ("onnx")."""
    formats = (formats,) if isinstance(formats, str) else tuple(formats)
    if WEB_FORMAT not in formats:
        return formats, False
    rest = tuple(f for f in formats if f != WEB_FORMAT)
    return (rest if "onnx" in rest else rest + ("onnx",)), True


def plan(vae, formats, ort_web=None):
    """What `keras_vae.export` does about "web", checked before any work.

    Returns:
        (formats without "web" (plus "onnx" when "web" was asked for), onnxruntime-web's dist
        folder or None when "web" was not asked for).

    Raises:
        OrtWebNotFound: "web" asked for and onnxruntime-web not installed (see `find_ort_web`).
        ValueError: "web" asked for an autoregressive VAE, or one with a learned prior.
    """
    formats, with_web = split_formats(formats)
    if not with_web:
        return formats, None
    if getattr(vae, "autoregressive", False):
        raise ValueError("The web page decodes z alone, and this VAE's decoder also reads x "
                         "(autoregressive); leave 'web' out of formats, or export a VAE with a "
                         "decoder of z only (VAE.conv, VAE.mlp).")
    prior = getattr(vae, "prior", "standard")
    if prior != "standard":
        raise ValueError(f"The web page draws z from N(0, I), and this VAE's prior is {prior!r} "
                         "(a learned mixture); leave 'web' out of formats (the bundle's runtime "
                         "samples from the mixture), or export a VAE with prior='standard'.")
    return formats, find_ort_web(ort_web)


# --------------------------------------------------------------------------- the PRNG
def mulberry32(seed):
    """The page's uniform generator (mulberry32, 32-bit state): yields floats in [0, 1)."""
    state = int(seed) & 0xFFFFFFFF
    while True:
        state = (state + 0x6D2B79F5) & 0xFFFFFFFF
        t = state
        t = ((t ^ (t >> 15)) * (t | 1)) & 0xFFFFFFFF
        t ^= (t + (((t ^ (t >> 7)) * (t | 61)) & 0xFFFFFFFF)) & 0xFFFFFFFF
        yield ((t ^ (t >> 14)) & 0xFFFFFFFF) / 4294967296.0


def prior_normals(seed, n, k):
    """The page's prior draws z ~ N(0, I), shape (n, k) float32: Box-Muller pairs from
    `mulberry32(seed)` (u1 in (0, 1]: 1 - u), filled row by row."""
    uniform = mulberry32(seed)
    out = np.empty(n * k, dtype="float64")
    for i in range(0, n * k, 2):
        u1, u2 = 1.0 - next(uniform), next(uniform)
        radius = math.sqrt(-2.0 * math.log(u1))
        out[i] = radius * math.cos(2.0 * math.pi * u2)
        if i + 1 < n * k:
            out[i + 1] = radius * math.sin(2.0 * math.pi * u2)
    return out.reshape(n, k).astype("float32")


def encode_input(x):
    """The `?x=` query value for one example: base64 (URL-safe) of its float32 LE bytes."""
    data = np.asarray(x, dtype="<f4").reshape(-1).tobytes()
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


# --------------------------------------------------------------------------- writing
def _atomic_write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)


def _atomic_copy(src, dst):
    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def _keras_x_mean(vae, z):
    """E[x|z] as Keras computes it (sigmoid of the logits for Bernoulli), float32."""
    from keras import ops

    params = vae.decoder(ops.convert_to_tensor(z, dtype="float32"), training=False)
    if vae.likelihood == "bernoulli":
        params = ops.sigmoid(params)
    return np.asarray(ops.convert_to_numpy(ops.cast(params, "float32")), dtype="float32")


def _floats(array):
    """Nested lists of Python floats that round-trip float32 exactly through JSON."""
    return np.asarray(array, dtype="float32").astype("float64").tolist()


def web_facts(vae, manifest, name=None, card=None, threshold=None, seed=0):
    """The contents of `web.json` (see the module docstring); `manifest` is the export's."""
    manifest = manifest or {}
    if threshold is None:
        threshold = manifest.get("threshold")
        if threshold is None and isinstance(manifest.get("anomaly"), dict):
            threshold = manifest["anomaly"].get("threshold")
    facts = {
        "name": name or manifest.get("model_name") or vae.name,
        "latent_dim": int(vae.latent_dim),
        "input_shape": [int(d) for d in vae.input_shape_],
        "likelihood": vae.likelihood,
        "posterior": vae.posterior,
        "parameters": int(sum(math.prod(w.shape) for w in vae.trainable_weights)),
    }
    for artifact in manifest.get("artifacts", []):
        if artifact.get("format") == "onnx":
            facts[f"{artifact['path']} vs Keras (export check)"] = artifact.get("max_abs_diff")
    for key in ("card", "model_card"):
        if isinstance(manifest.get(key), dict):
            facts.update({k: v for k, v in manifest[key].items()
                          if isinstance(v, (str, int, float)) or v is None})
    facts.update(card or {})
    z = prior_normals(seed + 1_000_003, NUM_CHECK, vae.latent_dim)
    return {
        "web_version": 1,
        "ort_web_version": None,
        "card": facts,
        "threshold": None if threshold is None else float(threshold),
        "score": ("-ELBO in nats at the posterior mean z = mu(x) (no sampling); "
                  "= ExportedVAE(bundle).anomaly_score(x, samples=0)"),
        "check": {"tolerance": SELF_CHECK_TOLERANCE, "z": _floats(z),
                  "x_mean": _floats(_keras_x_mean(vae, z).reshape(NUM_CHECK, -1))},
        "seed": int(seed),
    }


def write_web_app(vae, folder, name=None, card=None, threshold=None, ort_web=None, seed=0,
                  manifest=None):
    """Adds the web page to an export folder that holds the fp32 `encoder.onnx` and
    `decoder.onnx` (written by `keras_vae.export`).

    Args:
        vae: the exported `keras_vae.VAE` (its decoder gives the self-check's reference).
        folder: the export folder.
        name: model name shown on the page (default: manifest.json's, else `vae.name`).
        card: extra facts for the page's model card, e.g. {"data": "binarized MNIST",
            "test NLL (nats)": 84.3}; manifest.json's "card" is shown too when present.
        threshold: anomaly threshold on the score (nats); default: manifest.json's
            "threshold" (or "anomaly": {"threshold"}) when present, else none.
        ort_web: onnxruntime-web's dist folder (see `find_ort_web`).
        seed: seed of the page's first sample grid.
        manifest: the export's manifest, which the caller updates with the returned entry
            (`keras_vae.export` does). Default: `folder/manifest.json`, which then gets the
            entry as its "web" key (rewritten atomically).

    Returns:
        The manifest entry: {"path": "index.html", "format": "web", "ort_web_version",
        "files": [{path, sha256, size_bytes}, ...]}.

    Raises:
        OrtWebNotFound: onnxruntime-web is not installed where it is looked for.
        FileNotFoundError: the folder lacks encoder.onnx / decoder.onnx.
    """
    folder = Path(folder)
    for component in ("encoder", "decoder"):
        if not (folder / f"{component}.onnx").is_file():
            raise FileNotFoundError(f"{folder} has no {component}.onnx; export with formats "
                                    "including 'onnx' (the 'web' format adds it).")
    _, dist = plan(vae, (WEB_FORMAT,), ort_web)
    update_manifest = manifest is None and (folder / "manifest.json").is_file()
    if update_manifest:
        manifest = json.loads((folder / "manifest.json").read_text())
    facts = web_facts(vae, manifest, name=name, card=card, threshold=threshold, seed=seed)
    facts["ort_web_version"] = ort_web_version(dist)
    written = []
    for asset in ASSETS:
        _atomic_copy(_HERE / "static" / asset, folder / asset)
        written.append(asset)
    for file_name in ORT_WEB_FILES:
        _atomic_copy(dist / file_name, folder / "ort" / file_name)
        written.append(f"ort/{file_name}")
    _atomic_write(folder / "web.json", (json.dumps(facts) + "\n").encode())
    written.append("web.json")
    files = [{"path": p, "sha256": file_sha256(folder / p),
              "size_bytes": (folder / p).stat().st_size} for p in written]
    entry = {"path": "index.html", "format": WEB_FORMAT,
             "ort_web_version": facts["ort_web_version"], "uses": ["encoder.onnx", "decoder.onnx"],
             "files": files}
    if update_manifest:
        manifest["web"] = entry
        _atomic_write(folder / "manifest.json", (json.dumps(manifest, indent=2) + "\n").encode())
    return entry
