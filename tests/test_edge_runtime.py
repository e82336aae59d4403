"""The edge runtime `keras_vae_runtime/runtime.py` (each bundle's `vae_runtime.py`) runs in a process where TensorFlow and Keras cannot
be imported, on folders exported here, and gives what the Keras model gives: decoded pictures,
latent means, and -ELBO anomaly scores (at the posterior mean, and Monte Carlo with known eps)."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
from keras import ops  # noqa: E402
from PIL import Image  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

import keras_vae as kv  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
RUNTIME = REPO_ROOT / "keras_vae_runtime" / "runtime.py"

# Put first on PYTHONPATH, this sitecustomize makes any import of these packages fail.
BLOCKER = textwrap.dedent("""
    import sys
    BLOCKED = ("tensorflow", "keras", "tf_keras", "tensorboard", "jax", "torch")

    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is blocked: the edge runtime must not need it")
            return None

    sys.meta_path.insert(0, Blocker())
""")


@pytest.fixture(scope="module")
def blocked_env(tmp_path_factory):
    site = tmp_path_factory.mktemp("blocker")
    (site / "sitecustomize.py").write_text(BLOCKER)
    env = dict(os.environ, PYTHONPATH=str(site))
    probe = subprocess.run([sys.executable, "-c", "import tensorflow"], env=env,
                           capture_output=True, text=True)
    assert probe.returncode != 0 and "blocked" in probe.stderr  # the blocker works
    probe = subprocess.run([sys.executable, "-c", "import keras"], env=env,
                           capture_output=True, text=True)
    assert probe.returncode != 0 and "blocked" in probe.stderr
    return env


def runtime(env, *args, check=True):
    proc = subprocess.run([sys.executable, str(RUNTIME), *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=120)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="module")
def digits():
    return (load_digits().data / 16.0).astype("float32")


@pytest.fixture(scope="module")
def bernoulli(digits, tmp_path_factory):
    """A briefly trained Bernoulli MLP VAE, diagonal posterior, exported with fp32 and int8."""
    keras.utils.set_random_seed(2)
    vae = kv.VAE.kingma_welling(64, 4, hidden_units=48)
    vae.compile(optimizer=keras.optimizers.Adam(3e-3))
    vae.fit(digits, epochs=5, batch_size=64, verbose=0)
    folder = tmp_path_factory.mktemp("bernoulli") / "export"
    kv.export(vae, folder, formats=("onnx", "onnx_int8"), data=digits[:500])
    return vae, folder


@pytest.fixture(scope="module")
def gaussian_full(digits, tmp_path_factory):
    """A Gaussian-likelihood VAE with a full-covariance posterior (ONNX only)."""
    keras.utils.set_random_seed(3)
    vae = kv.VAE.mlp((64,), 3, hidden_units=(32,), likelihood="gaussian", posterior="full")
    vae.compile(optimizer=keras.optimizers.Adam(3e-3))
    vae.fit(digits * 2.0 - 1.0, epochs=4, batch_size=64, verbose=0)
    folder = tmp_path_factory.mktemp("gaussian") / "export"
    kv.export(vae, folder, formats="onnx")
    return vae, folder


def keras_neg_elbo(vae, x, eps=None):
    """-ELBO from the Keras model: at z = posterior mean, or Monte Carlo with given eps (L,n,K)."""
    z_mean, z_scale = vae.encode(x)
    kl = ops.convert_to_numpy(vae.kl(z_mean, z_scale))
    if eps is None:
        zs = [z_mean]
    elif vae.posterior == "diagonal":
        zs = [z_mean + np.exp(0.5 * z_scale) * e for e in eps]
    else:
        zs = [z_mean + np.einsum("nij,nj->ni", z_scale, e) for e in eps]
    log_lik = np.mean([ops.convert_to_numpy(vae.log_likelihood_given(
        x, vae.decoder(z.astype("float32")))) for z in zs], axis=0)
    return -(log_lik - kl)


def test_sample_png_matches_keras_decoder(bernoulli, blocked_env, tmp_path):
    vae, folder = bernoulli
    runtime(blocked_env, "sample", folder, "--n", 10, "--seed", 7, "--out", tmp_path / "s.png",
            "--npy", tmp_path / "s.npy", "--zoom", 1)
    z = np.random.default_rng(7).standard_normal((10, 4)).astype("float32")  # documented draw
    expected = vae.decode(z)
    got = np.load(tmp_path / "s.npy")
    assert np.abs(got - expected).max() < 1e-5
    # The PNG: a 4x3 grid of 8x8 tiles with 1-pixel white borders, pixels = round(255 p).
    picture = np.asarray(Image.open(tmp_path / "s.png"))
    assert picture.shape == (3 * 9 + 1, 4 * 9 + 1)
    tile = picture[1 + 9:1 + 9 + 8, 1 + 2 * 9:1 + 2 * 9 + 8]  # sample 6: row 1, column 2
    assert np.abs(tile.astype(int) - np.round(expected[6].reshape(8, 8) * 255)).max() <= 1
    assert (picture[0] == 255).all()


def test_encode_and_decode_given_points(bernoulli, blocked_env, digits, tmp_path):
    vae, folder = bernoulli
    x = digits[1500:1600]
    np.save(tmp_path / "x.npy", x.reshape(-1, 8, 8))  # (n, 8, 8) is reshaped to (n, 64)
    runtime(blocked_env, "encode", folder, "--x", tmp_path / "x.npy", "--out", tmp_path / "z.npy")
    z = np.load(tmp_path / "z.npy")
    z_keras, _ = vae.encode(x)
    assert z.shape == (100, 4) and np.abs(z - z_keras).max() < 1e-5
    runtime(blocked_env, "decode", folder, "--z", tmp_path / "z.npy", "--out",
            tmp_path / "r.png", "--npy", tmp_path / "r.npy")
    assert np.abs(np.load(tmp_path / "r.npy") - vae.reconstruct(x)).max() < 1e-5
    assert Image.open(tmp_path / "r.png").size[0] > 8 * 10  # zoomed to about 28 px a tile


def test_anomaly_scores_match_keras(bernoulli, blocked_env, digits, tmp_path):
    vae, folder = bernoulli
    x = digits[1600:1700]
    np.save(tmp_path / "x.npy", x)
    runtime(blocked_env, "score", folder, "--x", tmp_path / "x.npy", "--out", tmp_path / "m.npy")
    assert np.abs(np.load(tmp_path / "m.npy") - keras_neg_elbo(vae, x)).max() < 1e-3
    runtime(blocked_env, "score", folder, "--x", tmp_path / "x.npy", "--samples", 6,
            "--seed", 11, "--out", tmp_path / "s.npy")
    eps = np.random.default_rng(11).standard_normal((6, 100, 4))  # documented eps
    mc = np.load(tmp_path / "s.npy")
    assert np.abs(mc - keras_neg_elbo(vae, x, eps)).max() < 1e-3
    # and -ELBO is what the training loss estimates: its mean matches Keras's evaluate()
    # (independent eps) within Monte Carlo error
    neg_elbo = vae.evaluate(x, batch_size=100, verbose=0, return_dict=True)["neg_elbo"]
    assert abs(mc.mean() - neg_elbo) < 4 * mc.std() / np.sqrt(len(mc))
    # an unusual input (digits upside down and inverted) scores higher
    np.save(tmp_path / "odd.npy", 1.0 - x[:, ::-1])
    runtime(blocked_env, "score", folder, "--x", tmp_path / "odd.npy", "--out",
            tmp_path / "o.npy")
    assert np.median(np.load(tmp_path / "o.npy")) > np.median(np.load(tmp_path / "m.npy")) + 5


def test_int8_variant_and_python_api_in_a_blocked_process(bernoulli, gaussian_full,
                                                           blocked_env, digits, tmp_path):
    """Gaussian likelihood + full posterior (the other KL and log-likelihood branches), and
    the int8 variant, through the Python API of the runtime in a TF-free process."""
    script = textwrap.dedent(f"""
        import sys, numpy as np
        sys.path.insert(0, {str(RUNTIME.parent)!r})
        from runtime import ExportedVAE
        x = np.load(sys.argv[1])
        gauss = ExportedVAE(sys.argv[2])
        int8 = ExportedVAE(sys.argv[3], precision="int8")
        np.savez(sys.argv[4], z_mean=gauss.encode(x)[0], tril=gauss.encode(x)[1],
                 mean_score=gauss.anomaly_score(x), mc_score=gauss.anomaly_score(x, 3, seed=4),
                 int8_z=int8.encode(np.load(sys.argv[5]))[0],
                 loaded=np.array(sorted(sys.modules)))
    """)
    (tmp_path / "run.py").write_text(script)
    x_gauss = digits[1700:1760] * 2.0 - 1.0
    x_bern = digits[1700:1760]
    np.save(tmp_path / "xg.npy", x_gauss)
    np.save(tmp_path / "xb.npy", x_bern)
    proc = subprocess.run([sys.executable, str(tmp_path / "run.py"), tmp_path / "xg.npy",
                           gaussian_full[1], bernoulli[1], tmp_path / "out.npz",
                           tmp_path / "xb.npy"], env=blocked_env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = np.load(tmp_path / "out.npz")
    assert not [m for m in out["loaded"] if m.split(".")[0] in ("tensorflow", "keras")]

    vae = gaussian_full[0]
    z_mean, tril = vae.encode(x_gauss)
    assert np.abs(out["z_mean"] - z_mean).max() < 1e-5
    assert np.abs(out["tril"] - tril).max() < 1e-5
    assert np.abs(out["mean_score"] - keras_neg_elbo(vae, x_gauss)).max() < 1e-3
    eps = np.random.default_rng(4).standard_normal((3, 60, 3))
    assert np.abs(out["mc_score"] - keras_neg_elbo(vae, x_gauss, eps)).max() < 1e-3

    budget = kv.exporting.ERROR_BUDGETS["onnx_int8"]
    z_keras = bernoulli[0].encode(x_bern)[0]
    diff = np.abs(out["int8_z"] - z_keras) / max(1.0, np.abs(z_keras).max())
    assert 1e-6 < diff.mean() <= budget["mean"] and diff.max() <= budget["max"]


def test_clear_errors(bernoulli, blocked_env, digits, tmp_path):
    vae, folder = bernoulli
    np.save(tmp_path / "bad.npy", np.zeros((3, 10), "float32"))
    proc = runtime(blocked_env, "encode", folder, "--x", tmp_path / "bad.npy", "--out",
                   tmp_path / "z.npy", check=False)
    assert proc.returncode == 2 and "shape (3, 10)" in proc.stderr
    np.save(tmp_path / "big.npy", digits[:3] * 255)
    proc = runtime(blocked_env, "score", folder, "--x", tmp_path / "big.npy", check=False)
    assert proc.returncode == 2 and "scale it" in proc.stderr
    proc = runtime(blocked_env, "sample", folder, "--precision", "fp16", "--out",
                   tmp_path / "a.png", check=False)
    assert proc.returncode == 2 and "--formats onnx_fp16" in proc.stderr

    # A corrupted file is caught by the manifest's sha256 before it runs.
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for name in ("manifest.json", "encoder.onnx"):
        (corrupt / name).write_bytes((folder / name).read_bytes())
    data = bytearray((folder / "decoder.onnx").read_bytes())
    data[-1] ^= 1
    (corrupt / "decoder.onnx").write_bytes(bytes(data))
    proc = runtime(blocked_env, "info", corrupt, check=False)
    assert proc.returncode == 2 and "sha256" in proc.stderr
    info = json.loads(runtime(blocked_env, "info", folder).stdout)
    assert info["latent_dim"] == 4 and info["input_shape"] == [64]
