"""Bundles: what `keras-vae export` writes is usable by someone who only has the folder.

A client written from manifest.json alone (no keras_vae) gets the Keras numbers; every format
gives inputs and outputs by index in the manifest's order (LiteRT read through the raw
interpreter); SavedModels load from TF Serving's versioned path in another process; the
PixelVAE's decoder exports as (z, x) -> logits, and the bundle's runtime scores exactly and
draws from the same distribution as the Keras model, in a Python that cannot import
TensorFlow; `--formats all` keeps what meets its budget and lists the rest; the zoo's models
export from the command line by name."""

import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
from keras import ops  # noqa: E402

import keras_vae as kv  # noqa: E402
from keras_vae import exporting  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]


def tiny_pixel_vae(height=2, width=2, latent_dim=2, seed=0):
    """A PixelVAE with random weights large enough that every logit reads z and earlier pixels
    (as tests/test_pixelcnn.py builds it)."""
    vae = kv.VAE.pixel_cnn(input_shape=(height, width, 1), latent_dim=latent_dim, filters=(4,),
                           dense_units=8, pixel_filters=8, pixel_layers=2, latent_units=8,
                           latent_channels=2, seed=seed)
    rng = np.random.default_rng(seed)
    vae.set_weights([rng.normal(0.0, 0.7, w.shape).astype("float32") for w in vae.get_weights()])
    return vae


@pytest.fixture(scope="module")
def conv_bundle(tmp_path_factory):
    """A briefly trained conv VAE on 8x8 digit images, exported with SavedModel, ONNX, LiteRT."""
    from sklearn.datasets import load_digits

    x = (load_digits().data / 16.0).astype("float32").reshape(-1, 8, 8, 1)
    keras.utils.set_random_seed(4)
    vae = kv.VAE.conv((8, 8, 1), 3, filters=(8, 16), dense_units=32)
    vae.compile(optimizer=keras.optimizers.Adam(3e-3))
    vae.fit(x[:1000], epochs=3, batch_size=64, verbose=0)
    folder = tmp_path_factory.mktemp("conv") / "bundle"
    kv.export(vae, folder, formats=("saved_model", "onnx", "tflite"), data=x[:500],
              name="conv_digits_test")
    return vae, x[1000:], folder


@pytest.fixture(scope="module")
def pixel_bundle(tmp_path_factory):
    vae = tiny_pixel_vae()
    folder = tmp_path_factory.mktemp("pixel") / "bundle"
    kv.export(vae, folder, name="pixel_test")
    return vae, folder


def isolated_path(tmp_path):
    """A folder whose only packages are numpy, onnxruntime and Pillow (links to the installed
    ones), for `python -S -I`: no site-packages, no PYTHONPATH."""
    import numpy
    import onnxruntime
    import PIL

    site = tmp_path / "only_numpy_onnxruntime_pillow"
    site.mkdir()
    for module, libs in ((numpy, "numpy.libs"), (onnxruntime, None), (PIL, "pillow.libs")):
        package = Path(module.__file__).parent
        (site / package.name).symlink_to(package)
        if libs and (package.parent / libs).is_dir():  # bundled shared libraries of wheels
            (site / libs).symlink_to(package.parent / libs)
    return site


def run_isolated(site, code, *args):
    launcher = f"import sys; sys.path[:0] = [{str(site)!r}]\n" + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-S", "-I", "-c", launcher, *map(str, args)],
                          capture_output=True, text=True, timeout=300)


# --------------------------------------------------------------------------- the contract
def test_manifest_alone_is_enough_to_get_the_keras_numbers(conv_bundle, tmp_path):
    """A client that knows only json, numpy and onnxruntime: it finds the files, feeds and
    reads tensors by the manifest's index, samples z with the manifest's formula and scores
    with its likelihood; its numbers are the Keras model's."""
    vae, x, folder = conv_bundle
    client = textwrap.dedent("""
        import json, sys
        import numpy as np, onnxruntime as ort
        folder, x_path, out = sys.argv[1:4]
        m = json.load(open(folder + "/manifest.json"))
        c = m["contract"]
        def session(component):
            art = [a for a in m["artifacts"] if a["component"] == component
                   and a["format"] == "onnx"][0]
            s = ort.InferenceSession(folder + "/" + art["path"], providers=["CPUExecutionProvider"])
            assert [i.name for i in s.get_inputs()] == [t["name"] for t in art["inputs"]]
            assert [o.name for o in s.get_outputs()] == [t["name"] for t in art["outputs"]]
            return s, art
        enc, enc_art = session("encoder")
        dec, dec_art = session("decoder")
        x_spec = enc_art["inputs"][0]
        x = np.load(x_path).astype(x_spec["dtype"]).reshape([-1] + x_spec["shape"][1:])
        lo, hi = x_spec["range"]
        assert lo <= x.min() and x.max() <= hi
        outs = enc.run(None, {x_spec["name"]: x})          # by index
        z_mean, z_log_var = outs[0], outs[1]
        assert enc_art["outputs"][1]["name"] == "z_log_var" and "natural log" in \\
            enc_art["outputs"][1]["meaning"]
        eps = np.random.default_rng(0).standard_normal(z_mean.shape).astype("float32")
        assert c["sampling"]["formula"].startswith("z = z_mean + exp(z_log_var / 2) * eps")
        z = z_mean + np.exp(z_log_var / 2) * eps
        x_mean, x_logits = dec.run(None, {dec_art["inputs"][0]["name"]: z_mean})
        assert c["likelihood"]["name"] == "bernoulli"
        log_lik = (x * x_logits - np.logaddexp(0, x_logits)).reshape(len(x), -1).sum(1)
        kl = -0.5 * (1 + z_log_var - z_mean ** 2 - np.exp(z_log_var)).sum(1)
        np.savez(out, z_mean=z_mean, z=z, x_mean=x_mean, score=-(log_lik - kl),
                 modules=np.array(sorted(sys.modules)))
    """)
    (tmp_path / "client.py").write_text(client)
    np.save(tmp_path / "x.npy", x[:20].reshape(20, -1))  # flat rows: the client reshapes them
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, str(tmp_path / "client.py"), folder,
                           tmp_path / "x.npy", tmp_path / "out.npz"], capture_output=True,
                          text=True, timeout=120, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    got = np.load(tmp_path / "out.npz")
    assert not [m for m in got["modules"] if m.split(".")[0] in ("keras_vae", "tensorflow",
                                                                 "keras")]
    z_mean, z_log_var = vae.encode(x[:20])
    np.testing.assert_allclose(got["z_mean"], z_mean, atol=1e-5)
    eps = np.random.default_rng(0).standard_normal(z_mean.shape).astype("float32")
    np.testing.assert_allclose(got["z"], z_mean + np.exp(z_log_var / 2) * eps, atol=1e-4)
    np.testing.assert_allclose(got["x_mean"], vae.decode(z_mean), atol=1e-5)
    logits = vae.decoder(z_mean)
    want = -(ops.convert_to_numpy(vae.log_likelihood_given(x[:20], logits))
             - ops.convert_to_numpy(vae.kl(z_mean, z_log_var)))
    np.testing.assert_allclose(got["score"], want, rtol=1e-4, atol=1e-3)


def test_manifest_and_onnx_carry_the_typed_contract(conv_bundle):
    import onnx

    _, _, folder = conv_bundle
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["written_by"] == "keras-vae export"
    contract = manifest["contract"]
    x_in = contract["encoder"]["inputs"][0]
    assert x_in["shape"] == ["batch", 8, 8, 1] and x_in["dims"] == ["batch", "height", "width",
                                                                     "channels"]
    assert x_in["layout"].startswith("NHWC") and x_in["range"] == [0.0, 1.0]
    assert [t["name"] for t in contract["encoder"]["outputs"]] == ["z_mean", "z_log_var"]
    assert [t["index"] for t in contract["decoder"]["outputs"]] == [0, 1]
    assert "sigmoid(x_logits)" in contract["decoder"]["outputs"][0]["meaning"]
    assert contract["prior"].startswith("p(z) = N(0, I)")
    assert contract["sampling"]["in_graphs"] is False
    for artifact in manifest["artifacts"]:
        assert artifact["outputs"] == contract[artifact["component"]]["outputs"]
        assert all(t["dtype"] == "float32" for t in artifact["inputs"] + artifact["outputs"])
    model = onnx.load(str(folder / "encoder.onnx"))
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["contract"])["outputs"] == contract["encoder"]["outputs"]
    assert "[1] z_log_var float32 (batch, 3): natural log of the variance" in model.doc_string
    assert "z = z_mean + exp(z_log_var / 2) * eps" in model.doc_string
    card = (folder / "README.md").read_text()
    for text in ("# conv_digits_test", "## I/O contract", "`z_log_var`", "vae_runtime.py",
                 "saved_model/encoder", "p(z) = N(0, I)"):
        assert text in card, text
    assert (folder / "vae_runtime.py").read_bytes() == \
        (REPO_ROOT / "keras_vae_runtime" / "runtime.py").read_bytes()


def test_litert_outputs_by_index_follow_the_manifest(conv_bundle):
    """Read by index with the raw interpreter (not the signature runner): output 0 of the
    encoder is z_mean, of the decoder x_mean; the tensors carry the manifest's names."""
    import tensorflow as tf

    vae, x, folder = conv_bundle
    manifest = json.loads((folder / "manifest.json").read_text())
    z = np.random.default_rng(1).standard_normal((5, 3)).astype("float32")
    want = {"encoder": vae.encode(x[:5]), "decoder": (vae.decode(z),
                                                      ops.convert_to_numpy(vae.decoder(z)))}
    for component, inputs in (("encoder", x[:5]), ("decoder", z)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            interpreter = tf.lite.Interpreter(model_path=str(folder / f"{component}.tflite"))
        interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"],
                                        inputs.shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], inputs)
        interpreter.invoke()
        details = interpreter.get_output_details()
        names = [t["name"] for t in manifest["contract"][component]["outputs"]]
        assert [d["name"] for d in details] == names
        for i, expected in enumerate(want[component]):
            np.testing.assert_allclose(interpreter.get_tensor(details[i]["index"]), expected,
                                       atol=1e-5)


@pytest.mark.large  # a second TensorFlow process
def test_saved_models_load_from_the_tf_serving_path_in_another_process(conv_bundle, tmp_path):
    vae, x, folder = conv_bundle
    for component in ("encoder", "decoder"):
        version = folder / "saved_model" / component / "1"
        assert (version / "saved_model.pb").is_file() and (version / "variables").is_dir()
    np.save(tmp_path / "x.npy", x[:4])
    code = textwrap.dedent("""
        import sys, numpy as np, tensorflow as tf
        base = sys.argv[1]
        enc = tf.saved_model.load(base + "/saved_model/encoder/1").signatures["serving_default"]
        dec = tf.saved_model.load(base + "/saved_model/decoder/1").signatures["serving_default"]
        out = enc(x=tf.constant(np.load(sys.argv[2])))
        np.savez(sys.argv[3], z_mean=out["z_mean"].numpy(),
                 x_mean=dec(z=out["z_mean"])["x_mean"].numpy(), keys=np.array(sorted(out)))
    """)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([sys.executable, "-c", code, folder, tmp_path / "x.npy",
                           tmp_path / "o.npz"], capture_output=True, text=True, timeout=300,
                          env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = np.load(tmp_path / "o.npz")
    z_mean, _ = vae.encode(x[:4])
    np.testing.assert_allclose(got["z_mean"], z_mean, atol=1e-5)
    np.testing.assert_allclose(got["x_mean"], vae.decode(z_mean), atol=1e-5)
    assert list(got["keys"]) == ["z_log_var", "z_mean"]  # keyed by name, as documented
    manifest = json.loads((folder / "manifest.json").read_text())
    serving = [a["serving"] for a in manifest["artifacts"] if a["format"] == "saved_model"]
    assert serving[0] == {"model_base_path": "saved_model/encoder", "version": 1,
                          "signature": "serving_default",
                          "order": exporting.contract.POSITIONAL_ORDER["saved_model"]}


# --------------------------------------------------------------------------- formats "all"
def test_all_keeps_what_meets_its_budget_and_lists_the_rest(tmp_path, monkeypatch):
    keras.utils.set_random_seed(5)
    vae = kv.VAE.kingma_welling(16, 2, hidden_units=8)
    budgets = {k: dict(v) for k, v in exporting.ERROR_BUDGETS.items()}
    budgets["onnx_fp16"] = {"max": 1e-12, "mean": None}  # cannot be met
    monkeypatch.setattr(exporting.formats, "ERROR_BUDGETS", budgets)
    manifest = kv.export(vae, tmp_path / "all", formats=("onnx", "edge"))
    written = {a["path"] for a in manifest["artifacts"]}
    assert {"encoder.onnx", "encoder.tflite", "decoder.tflite"} <= written
    refused = {r["path"]: r for r in manifest["refused"]}
    assert set(refused) >= {"encoder.fp16.onnx", "decoder.fp16.onnx"}
    assert not (tmp_path / "all" / "encoder.fp16.onnx").exists()
    entry = refused["decoder.fp16.onnx"]
    assert entry["budget"] == {"max": 1e-12, "mean": None}
    assert entry["scaled_max_abs_diff"] > 1e-12 and "1e-12" in entry["reason"]
    assert "refused" in (tmp_path / "all" / "README.md").read_text()
    # an explicit list stays strict: nothing written
    with pytest.raises(exporting.ExportError, match="fp16"):
        kv.export(vae, tmp_path / "strict", formats=("onnx", "onnx_fp16"))
    assert not (tmp_path / "strict").exists()


# --------------------------------------------------------------------------- PixelVAE
def test_pixel_vae_decoder_exports_as_z_x_to_logits_within_1e5(pixel_bundle):
    import onnxruntime as ort

    vae, folder = pixel_bundle
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["autoregressive"] is True
    assert [t["name"] for t in manifest["contract"]["decoder"]["inputs"]] == ["z", "x"]
    assert [t["name"] for t in manifest["contract"]["decoder"]["outputs"]] == ["x_logits"]
    session = ort.InferenceSession(str(folder / "decoder.onnx"),
                                   providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["z", "x"]
    rng = np.random.default_rng(8)
    z = rng.standard_normal((33, 2)).astype("float32")
    x = (rng.random((33, 2, 2, 1)) < 0.5).astype("float32")
    got = session.run(None, {"z": z, "x": x})[0]
    want = ops.convert_to_numpy(vae.decoder([z, x]))
    assert np.abs(got - want).max() <= 1e-5 * max(1.0, np.abs(want).max())
    assert np.ptp(want) > 1.0  # the logits vary: the comparison is not trivial


def test_runtime_scores_exactly_and_draws_like_keras(pixel_bundle):
    """ln p(x|z) equals the Keras decoder's; the runtime's pixel-by-pixel draws of the 16
    images of 2x2 match p(x|z) (chi-square) and the Keras model's own draws (homogeneity)."""
    from scipy import stats

    from keras_vae_runtime import ExportedVAE

    vae, folder = pixel_bundle
    runtime = ExportedVAE(folder)
    images = np.array(np.meshgrid(*[[0.0, 1.0]] * 4, indexing="ij")).reshape(4, -1).T
    images = images.reshape(16, 2, 2, 1).astype("float32")  # index = 8 a + 4 b + 2 c + d
    z = np.random.default_rng(3).standard_normal((1, 2)).astype("float32")
    zs = np.repeat(z, 16, axis=0)
    logits = ops.convert_to_numpy(vae.decoder([zs, images]))
    exact = -(np.logaddexp(0.0, logits) - images * logits).sum(axis=(1, 2, 3))
    np.testing.assert_allclose(runtime.log_p_x_given_z(images, zs), exact, atol=1e-4)
    p = np.exp(exact.astype("float64"))
    assert abs(p.sum() - 1.0) < 1e-4

    n = 20000
    draws = runtime.draw(np.repeat(z, n, axis=0), seed=0, batch_size=n)
    codes = (draws.reshape(n, 4) @ np.array([8, 4, 2, 1])).astype(int)
    observed = np.bincount(codes, minlength=16)
    assert stats.chisquare(observed, p / p.sum() * n).pvalue > 1e-3
    keras_draws = vae.decode(np.repeat(z, n, axis=0), batch_size=n, seed=1)
    keras_counts = np.bincount((keras_draws.reshape(n, 4) @ np.array([8, 4, 2, 1])).astype(int),
                               minlength=16)
    table = np.array([observed, keras_counts])
    table = table[:, table.sum(axis=0) > 0]
    assert stats.chi2_contingency(table).pvalue > 1e-3
    # seeded: the same seed gives the same draws
    np.testing.assert_array_equal(runtime.sample(5, seed=2)[0], runtime.sample(5, seed=2)[0])
    # -ELBO at the posterior mean agrees with the Keras model's terms
    z_mean, z_log_var = vae.encode(images)
    kl = ops.convert_to_numpy(vae.kl(z_mean, z_log_var))
    logits = ops.convert_to_numpy(vae.decoder([z_mean, images]))
    want = (np.logaddexp(0.0, logits) - images * logits).sum(axis=(1, 2, 3)) + kl
    np.testing.assert_allclose(runtime.anomaly_score(images), want, atol=1e-3)


def test_pixel_bundle_draws_in_a_python_with_only_numpy_onnxruntime_pillow(pixel_bundle,
                                                                           tmp_path):
    from PIL import Image

    _, folder = pixel_bundle
    site = isolated_path(tmp_path)
    probe = run_isolated(site, """
        import importlib.util
        for name in ("tensorflow", "keras", "keras_vae", "jax", "torch"):
            assert importlib.util.find_spec(name) is None, name
        import numpy, onnxruntime, PIL.Image
        print("ok")
    """)
    assert probe.returncode == 0 and probe.stdout.strip() == "ok", probe.stderr
    Image.fromarray(np.array([[0, 255], [255, 0]], dtype="uint8")).save(tmp_path / "a.png")
    for args in (["sample", ".", "--n", "6", "--seed", "1", "--out", tmp_path / "s.png",
                  "--npy", tmp_path / "s.npy"],
                 ["score", ".", "--x", tmp_path / "a.png", "--out", tmp_path / "score.npy"]):
        proc = run_isolated(site, """
            import os, runpy, sys
            os.chdir(sys.argv[1])
            sys.path.insert(0, ".")
            sys.argv = ["vae_runtime.py"] + sys.argv[2:]
            runpy.run_path("vae_runtime.py", run_name="__main__")
        """, folder, *args)
        assert proc.returncode == 0, proc.stderr
    draws = np.load(tmp_path / "s.npy")
    assert draws.shape == (6, 2, 2, 1) and set(np.unique(draws)) <= {0.0, 1.0}
    assert np.asarray(Image.open(tmp_path / "s.png")).ndim == 2
    assert np.load(tmp_path / "score.npy").shape == (1,)


def test_pixel_vae_formats_it_cannot_take_are_named(tmp_path):
    vae = tiny_pixel_vae()
    with pytest.raises(exporting.ExportError, match="autoregressive.*saved_model, onnx"):
        kv.export(vae, tmp_path / "a", formats=("onnx", "tflite"))
    assert not (tmp_path / "a").exists()


# --------------------------------------------------------------------------- the zoo by name
def _zoo_export(tmp_path, name, *args):
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), TF_CPP_MIN_LOG_LEVEL="3",
               KERAS_VAE_WEIGHTS_URL=str(REPO_ROOT / "weights"),
               KERAS_HOME=str(tmp_path / "keras_home"))
    out = tmp_path / name
    proc = subprocess.run([sys.executable, "-m", "keras_vae", "export", name, "--out", str(out),
                           *args], env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source"] == {"kind": "zoo", "name": name}
    assert (out / "vae_runtime.py").is_file()
    card = (out / "README.md").read_text()
    assert "test NLL" in card and "## I/O contract" in card
    return out, manifest


@pytest.mark.large
def test_zoo_pixelcnn_exports_by_name_and_draws(tmp_path):
    from keras_vae.zoo.registry import REGISTRY

    out, manifest = _zoo_export(tmp_path, "pixelcnn_mnist_z32")
    assert f"{REGISTRY['pixelcnn_mnist_z32']['results']['test_nll']:.2f}" in \
        (out / "README.md").read_text()
    assert {a["path"] for a in manifest["artifacts"]} == {
        "saved_model/encoder/1", "saved_model/decoder/1", "encoder.onnx", "decoder.onnx"}
    from keras_vae_runtime import ExportedVAE

    runtime = ExportedVAE(out, threads=2)
    z = np.random.default_rng(0).standard_normal((2, 32)).astype("float32")
    images = runtime.draw(z, seed=0)
    assert images.shape == (2, 28, 28, 1) and 0.02 < images.mean() < 0.4  # MNIST-like ink


@pytest.mark.slow
@pytest.mark.parametrize("name", ["kw_mnist_z20", "conv_mnist_z16"])
def test_zoo_models_export_all_formats_by_name(tmp_path, name):
    import tensorflow as tf

    out, manifest = _zoo_export(tmp_path, name, "--formats", "all")
    written = {a["format"] for a in manifest["artifacts"]}
    assert {"saved_model", "onnx", "tflite"} <= written
    for refused in manifest["refused"]:
        assert refused["scaled_max_abs_diff"] > 0 and refused["budget"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(model_path=str(out / "encoder.tflite"))
    assert interpreter.get_output_details()[0]["name"] == "z_mean"


def test_installed_runtime_imports_without_tensorflow(pixel_bundle):
    """`keras_vae_runtime` (shipped in the wheel, console script keras-vae-runtime) never
    imports TensorFlow or Keras, and its command line runs a bundle."""
    _, folder = pixel_bundle
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()  # (tomllib needs Python 3.11)
    assert 'keras-vae-runtime = "keras_vae_runtime.runtime:console_main"' in pyproject
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    code = ("import sys, keras_vae_runtime, keras_vae_runtime.runtime as r; "
            "assert callable(r.console_main); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('tensorflow', 'keras', 'keras_vae', 'jax')))")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stderr
    proc = subprocess.run([sys.executable, "-m", "keras_vae_runtime", "info", str(folder)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["autoregressive"] is True
