"""The web page of an export (`keras_vae.web`), checked in a real headless Chromium that loads it
from a server on 127.0.0.1: the page's decoder matches Keras (self-check), its prior samples are
the ones Python draws with the same seed, and its anomaly score for a given input is the TF-free
runtime's (`ExportedVAE.anomaly_score(x, samples=0)` of export/vae_runtime.py).

The browser tests need Chromium (`apt-get install chromium`) and onnxruntime-web
(`npm install onnxruntime-web@VERSION` in the repository); `.ci/run` installs both. Without
them these tests fail, naming what to install; they carry the `browser` marker, so
`pytest -m "not slow and not browser"` leaves them out on purpose.
"""

import importlib.util
import json
import math
import types
from pathlib import Path

import numpy as np
import pytest

from keras_vae import web
from keras_vae.files import file_sha256
from keras_vae.web import browser

REPO_ROOT = Path(__file__).resolve().parents[1]
RUNTIME = REPO_ROOT / "export" / "vae_runtime.py"
SCORE_TOLERANCE = 1e-3  # nats


def _runtime(folder):
    """The TF-free runtime's ExportedVAE: the installed `keras_vae_runtime` package where there
    is one, else the file export/vae_runtime.py."""
    try:
        from keras_vae_runtime import ExportedVAE
    except ImportError:
        spec = importlib.util.spec_from_file_location("vae_runtime_for_web_tests", RUNTIME)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        ExportedVAE = module.ExportedVAE  # noqa: N806 - a class
    return ExportedVAE(folder)


def _missing(reason):
    """A missing browser is a failure, never a skip: these tests check the page users open, so
    a machine that cannot run them must say so. `.ci/run` installs both; a developer without
    them deselects the tests by name (`pytest -m "not slow and not browser"`)."""
    pytest.fail(f"{reason}; `.ci/run` installs it, or deselect these tests with "
                "-m \"not slow and not browser\"")


def _needs_browser():
    """onnxruntime-web's dist folder; fails when it or Chromium is not installed here."""
    if browser.find_chromium() is None:
        _missing("Chromium is not installed (apt-get install chromium)")
    try:
        return web.find_ort_web()
    except web.OrtWebNotFound:
        _missing(f"onnxruntime-web is not installed (npm install onnxruntime-web@"
                 f"{web.ORT_WEB_VERSION} in the repository)")


def _open(folder, query):
    """The page's DOM after it settled, and the attributes of its checked elements."""
    with browser.serve(folder) as (base, _):
        page = browser.dump_dom(f"{base}index.html?{query}")
    body = browser.element_attributes(page, "title")
    assert body is not None, page[:2000]
    found = {name: browser.element_attributes(page, name)
             for name in ("selfcheck", "samples", "score", "latency")}
    assert "data-error" not in page.split("<body", 1)[1].split(">", 1)[0], page[:3000]
    return found


# --------------------------------------------------------------------------- no browser
def test_prior_normals_are_seeded_standard_normals():
    z = web.prior_normals(3, 2000, 5)
    assert z.shape == (2000, 5) and z.dtype == np.float32
    assert np.array_equal(z, web.prior_normals(3, 2000, 5))
    assert not np.array_equal(z, web.prior_normals(4, 2000, 5))
    # mean within 4 standard errors of 0, variance within 4 of 1 (var of s^2 is 2/n)
    assert abs(z.mean()) < 4 / math.sqrt(z.size)
    assert abs(z.var() - 1) < 4 * math.sqrt(2 / z.size)
    # odd sizes use the first value of the last pair (a row of 3 takes pairs 1, 2)
    assert np.array_equal(web.prior_normals(9, 1, 3)[0], web.prior_normals(9, 1, 4)[0, :3])


def test_web_format_brings_the_fp32_onnx_files():
    assert web.split_formats(("web",)) == (("onnx",), True)
    assert web.split_formats("web") == (("onnx",), True)
    assert web.split_formats(["onnx_int8", "web"]) == (("onnx_int8", "onnx"), True)
    assert web.split_formats(("saved_model", "onnx")) == (("saved_model", "onnx"), False)
    # nothing to find without "web"; an autoregressive decoder is refused before any work
    assert web.plan(object(), ("onnx",), ort_web="/nowhere") == (("onnx",), None)
    with pytest.raises(ValueError, match="autoregressive"):
        web.plan(types.SimpleNamespace(autoregressive=True), ("web",))


def test_missing_onnxruntime_web_is_one_line_naming_the_fix(tmp_path, capsys):
    import keras

    from keras_vae import VAE, cli

    with pytest.raises(web.OrtWebNotFound, match=f"npm install onnxruntime-web@"
                                                 f"{web.ORT_WEB_VERSION}"):
        web.find_ort_web(tmp_path)
    vae = VAE.mlp(input_shape=(16,), latent_dim=2, hidden_units=(8,))
    vae(np.zeros((1, 16), "float32"))
    keras.saving.save_model(vae, tmp_path / "m.keras")
    out = tmp_path / "bundle"
    status = cli.main(["export", str(tmp_path / "m.keras"), "--out", str(out), "--formats", "web",
                       "--ort-web", str(tmp_path / "nowhere")])
    err = capsys.readouterr().err.strip()
    assert status == 2 and not out.exists()
    assert len(err.splitlines()) == 1 and err.startswith("keras-vae export: error: ")
    assert f"npm install onnxruntime-web@{web.ORT_WEB_VERSION}" in err and "--ort-web" in err


def test_static_files_are_package_data():
    import fnmatch
    import tomllib

    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["keras_vae.web"]
    for asset in web.ASSETS:
        assert (REPO_ROOT / "keras_vae" / "web" / "static" / asset).is_file()
        assert any(fnmatch.fnmatch(f"static/{asset}", p) for p in patterns), asset


# --------------------------------------------------------------------------- in Chromium
def test_a_missing_browser_fails_and_names_the_fix(monkeypatch):
    monkeypatch.setattr(browser, "find_chromium", lambda: None)
    with pytest.raises(pytest.fail.Exception, match="apt-get install chromium.*not browser"):
        _needs_browser()


@pytest.fixture(scope="module")
def kw_mnist_z20_bundle(tmp_path_factory):
    """`keras-vae export MODEL --out DIR --formats web` of the zoo's kw_mnist_z20."""
    dist = _needs_browser()
    import keras

    import keras_vae as kv
    from keras_vae import cli

    tmp = tmp_path_factory.mktemp("web")
    vae = kv.zoo.load("kw_mnist_z20", base_url=str(REPO_ROOT / "weights"), verbose=False)
    keras.saving.save_model(vae, tmp / "kw_mnist_z20.keras")
    out = tmp / "bundle"
    assert cli.main(["export", str(tmp / "kw_mnist_z20.keras"), "--out", str(out), "--formats",
                     "web", "--ort-web", str(dist), "--quiet"]) == 0
    return out


@pytest.mark.large
@pytest.mark.browser
def test_page_computes_what_keras_and_the_runtime_compute(kw_mnist_z20_bundle):
    folder = kw_mnist_z20_bundle
    manifest = json.loads((folder / "manifest.json").read_text())
    assert {f["path"] for f in manifest["web"]["files"]} >= {
        "index.html", "app.js", "web.json", *(f"ort/{n}" for n in web.ORT_WEB_FILES)}
    runtime = _runtime(folder)
    # an input to score: a binarized sample of the model (a plausible digit)
    x = (runtime.sample(1, seed=5)[0] > 0.5).astype("float32")
    found = _open(folder, f"latency=0&seed=3&x={web.encode_input(x)}")

    check = found["selfcheck"]
    assert float(check["data-max-abs-diff"]) <= 1e-4
    assert check["data-ok"] == "1" and check["#text"].startswith("ok")

    samples = found["samples"]
    assert samples["data-seed"] == "3"
    assert float(samples["data-std"]) > 20  # gray levels 0..255: not a blank canvas
    expected = runtime.decode(web.prior_normals(3, 64, runtime.latent_dim)).mean()
    assert abs(float(samples["data-x-mean"]) - expected) < 1e-5

    score = found["score"]
    want = runtime.anomaly_score(x[None], samples=0)[0]
    assert abs(float(score["data-score"]) - want) <= SCORE_TOLERANCE
    z_mean, z_log_var = runtime.encode(x[None])
    assert abs(float(score["data-kl"]) - runtime.kl(z_mean, z_log_var)[0]) <= SCORE_TOLERANCE
    assert "nats" in score["#text"] and "data-flag" not in score  # no threshold in this bundle


@pytest.mark.large
@pytest.mark.browser
def test_gaussian_full_covariance_page_with_a_threshold(tmp_path):
    """The other likelihood and posterior, a 2-D latent space (the manifold view) and the
    anomaly flag from a threshold."""
    dist = _needs_browser()
    import keras_vae as kv

    vae = kv.VAE.mlp(input_shape=(16,), latent_dim=2, hidden_units=(32,),
                     likelihood="gaussian", posterior="full")
    vae(np.zeros((1, 16), "float32"))
    folder = tmp_path / "bundle"
    kv.export(vae, folder, formats="web", ort_web=dist)
    runtime = _runtime(folder)
    x = np.random.default_rng(0).normal(size=(1, 16)).astype("float32")
    want = runtime.anomaly_score(x, samples=0)[0]
    web.write_web_app(vae, folder, threshold=want - 0.5, ort_web=dist)
    # the manifest lists the rewritten files with their new digests
    entry = json.loads((folder / "manifest.json").read_text())["web"]
    digests = {f["path"]: f["sha256"] for f in entry["files"]}
    assert digests["web.json"] == file_sha256(folder / "web.json")
    assert json.loads((folder / "web.json").read_text())["threshold"] == pytest.approx(want - 0.5)

    found = _open(folder, f"latency=0&x={web.encode_input(x)}")
    assert float(found["selfcheck"]["data-max-abs-diff"]) <= 1e-4
    assert found["selfcheck"]["data-ok"] == "1"
    assert abs(float(found["score"]["data-score"]) - want) <= SCORE_TOLERANCE
    assert found["score"]["data-flag"] == "1" and "unusual" in found["score"]["#text"]


# The drawing canvas's pixels as the model's input: one value per image pixel, read at the
# centre of each zoomed pixel (the canvas has a 1-pixel border).
READ_DRAWING = """(() => {
  const canvas = document.getElementById('draw');
  const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  const zoom = Math.floor((canvas.width - 2) / 28);
  const values = [];
  for (let y = 0; y < 28; y++) {
    for (let x = 0; x < 28; x++) {
      const at = (1 + y * zoom + (zoom >> 1)) * canvas.width + 1 + x * zoom + (zoom >> 1);
      values.push(data[4 * at] / 255);
    }
  }
  return values;
})()"""


@pytest.mark.large
@pytest.mark.browser
def test_drawing_with_the_mouse_is_scored_like_the_runtime(kw_mnist_z20_bundle):
    """A '7' drawn with mouse events (DevTools protocol) is encoded, reconstructed and scored
    when the button is released; the score is the runtime's for the pixels the canvas shows."""
    folder = kw_mnist_z20_bundle
    with browser.serve(folder) as (base, _), browser.DevTools() as tab:
        tab.navigate(f"{base}index.html?latency=0")
        tab.wait_for("document.body.dataset.ready === '1'")
        assert tab.evaluate("document.body.dataset.error || ''") == ""
        assert tab.evaluate("document.getElementById('score').dataset.score") is None
        left, top, width, height = tab.evaluate(
            "(() => { const c = document.getElementById('draw'); c.scrollIntoView();"
            " const r = c.getBoundingClientRect(); return [r.left, r.top, r.width, r.height];"
            " })()")
        # a bar from (6, 6) to (21, 6), then down to (11, 23), in image pixels
        corners = [(6, 6), (21, 6), (11, 23)]
        path = [(x0 + (x1 - x0) * t / 40, y0 + (y1 - y0) * t / 40)
                for (x0, y0), (x1, y1) in zip(corners, corners[1:]) for t in range(41)]

        def mouse(kind, point, buttons):
            tab.call("Input.dispatchMouseEvent", type=kind, button="left", buttons=buttons,
                     clickCount=1, x=left + (point[0] + 0.5) / 28 * width,
                     y=top + (point[1] + 0.5) / 28 * height)

        mouse("mousePressed", path[0], 1)
        for point in path[1:]:
            mouse("mouseMoved", point, 1)
        mouse("mouseReleased", path[-1], 0)
        score = float(tab.wait_for("document.getElementById('score').dataset.score"))
        x = np.asarray(tab.evaluate(READ_DRAWING), dtype="float32").reshape(1, 784)
        reconstruction = tab.evaluate(
            "(() => { const c = document.getElementById('reconstruction');"
            " const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
            " let s = 0; for (let i = 0; i < d.length; i += 4) s += d[i];"
            " return s / (d.length / 4); })()")
    assert set(np.unique(x)) == {0.0, 1.0} and 40 < x.sum() < 200  # a stroke, not a blot
    assert x[0, 6 * 28 + 6] == 1 and x[0, 23 * 28 + 11] == 1  # both ends painted
    assert 5 < reconstruction < 250  # dark background, some white: not blank, not all border
    assert abs(score - _runtime(folder).anomaly_score(x, samples=0)[0]) <= SCORE_TOLERANCE
