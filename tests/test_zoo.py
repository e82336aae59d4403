"""The model zoo: the released weight files against the registry, the numbers the registry claims
recomputed from the loaded model, and the download path over real HTTP from a server on
127.0.0.1 that serves the repository's own weight files (good, corrupted, cut short or missing).
"""

import functools
import glob
import hashlib
import http.server
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

import keras_vae as kv
from keras_vae import zoo

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO / "weights"
SMALL = "kw_digits_z2"  # the model whose claimed numbers the tests recompute


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def cache_files(home):
    """Every file under the zoo's cache folder of a Keras home (partial downloads included)."""
    return sorted(glob.glob(os.path.join(str(home), "models", "keras_vae", "*")))


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """A fresh $KERAS_HOME per test and no zoo settings from the caller's environment."""
    home = tmp_path / "keras_home"
    monkeypatch.setenv("KERAS_HOME", str(home))
    monkeypatch.delenv(zoo.URL_ENV, raising=False)
    monkeypatch.delenv(zoo.OFFLINE_ENV, raising=False)
    return home


# ----------------------------------------------------------------- a real HTTP server
class WeightServer:
    """Serves WEIGHTS over HTTP on 127.0.0.1 in a thread. `modes[file]` changes what one file
    looks like: "ok", "corrupt" (same length, one byte changed), "short" (the first half, with
    a matching Content-Length) or "cut" (Content-Length of the whole file, then the connection
    closes after half of it). `requests` lists the paths asked for."""

    def __init__(self, root=WEIGHTS):
        self.modes = {}
        self.requests = []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                name = self.path.rsplit("/", 1)[-1]
                mode = server.modes.get(name, "ok")
                path = Path(root) / name
                if mode == "ok" or not path.is_file():
                    return super().do_GET()
                data = path.read_bytes()
                length = len(data)
                if mode == "corrupt":
                    data = data[:-100] + bytes([data[-100] ^ 0xFF]) + data[-99:]
                elif mode == "short":
                    data = data[: length // 2]
                    length = len(data)
                elif mode == "cut":
                    data = data[: length // 2]
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(length))
                self.end_headers()
                self.wfile.write(data)
                self.wfile.flush()
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def server():
    s = WeightServer()
    yield s
    s.stop()


def file_of(name):
    return WEIGHTS / zoo.REGISTRY[name]["file"]


# ----------------------------------------------------------------- registry vs files
def test_every_released_model_has_its_verified_small_file():
    names = zoo.released_names()
    assert SMALL in names
    for required in ("kw_mnist_z2", "kw_mnist_z20", "mlp_mnist_z20", "conv_mnist_z16",
                     "iwae_mnist_z50", "mlp_digits_z8", "conv_digits_z4"):
        assert required in names
    for name in names:
        entry = zoo.REGISTRY[name]
        path = file_of(name)
        assert path.is_file(), f"{name}: {path} missing"
        assert sha256(path) == entry["sha256"], name
        assert path.stat().st_size == entry["size_bytes"] < 5 * 2 ** 20, name
        results, training = entry["results"], entry["training"]
        assert training["command"].startswith(f"keras-vae zoo build {name}")
        assert 1 <= training["best_epoch"] <= training["epochs"] <= training["max_epochs"]
        assert training["train_wall_time_s"] > 0 and training["hardware"]
        # The importance-weighted bound is tighter than the ELBO on the same examples.
        same = results.get("nll_examples_neg_elbo", results["test_neg_elbo"])
        assert results["test_nll"] < same, name
        assert results["nll_samples"] >= 100


def test_list_reports_the_registry():
    rows = zoo.list()
    assert [r["name"] for r in rows] == zoo.released_names()
    for row in rows:
        entry = zoo.REGISTRY[row["name"]]
        assert row["test_nll"] == entry["results"]["test_nll"]
        assert row["test_neg_elbo"] == entry["results"]["test_neg_elbo"]
        assert row["size_bytes"] == entry["size_bytes"]
        assert row["latent_dim"] == entry["config"]["latent_dim"]
        assert row["license"] == "Apache-2.0" and row["data_license"]
    unreleased = {r["name"] for r in zoo.list(include_unreleased=True)} - set(zoo.released_names())
    assert all(zoo.REGISTRY[n]["sha256"] is None for n in unreleased)
    table = zoo.table(markdown=True)
    for row in rows:
        assert f"| {row['name']} |" in table
        assert f"{row['test_nll']:.2f}" in table


def test_readme_shows_the_registry_table():
    readme = (REPO / "README.md").read_text()
    assert zoo.table(markdown=True) in readme.split("## Model zoo", 1)[1]


def test_loaded_weights_are_exactly_the_files_arrays():
    """Every array in each released file ends up in the model, and every model weight comes from
    the file (nothing left at its random initial value)."""
    for name in zoo.released_names():
        vae = zoo.load(name, base_url=WEIGHTS, verbose=False)
        arrays = {}
        with h5py.File(file_of(name), "r") as f:
            f.visititems(lambda key, obj: arrays.__setitem__(key, obj[()])
                         if isinstance(obj, h5py.Dataset) else None)
        assert not any(k.startswith("optimizer") for k in arrays), f"{name} holds optimizer state"
        weights = [np.asarray(w) for w in vae.get_weights()]
        assert len(weights) == len(arrays), name
        remaining = list(arrays.values())
        for w in weights:
            match = next((i for i, a in enumerate(remaining)
                          if a.shape == w.shape and np.array_equal(a, w)), None)
            assert match is not None, f"{name}: a weight of shape {w.shape} is not in the file"
            remaining.pop(match)
        assert zoo.loader.count_parameters(vae) == zoo.REGISTRY[name]["parameters"]
        assert vae.input_shape_ == tuple(zoo.REGISTRY[name]["config"].get(
            "input_shape", [zoo.REGISTRY[name]["config"].get("input_dim")]))


# ----------------------------------------------------------------- the claimed numbers
def digits_test_split():
    """The zoo's digits test split, written out independently of keras_vae: load_digits / 16
    binarized at 0.5, every 10th image starting with the first."""
    from sklearn.datasets import load_digits

    x = (load_digits().data / 16.0 > 0.5).astype("float32")
    return x[np.arange(len(x)) % 10 == 0]


def numpy_bounds(vae, x, num_samples, seed=0, chunk=20):
    """Per-example ELBO (L = num_samples) and importance-weighted ln p(x) (k = num_samples), both
    in nats, from the encoder's and decoder's outputs with NumPy (THEORY eqs [7], [27], [32] and
    the Burda et al. estimate); plus the Monte Carlo variance of each example's ELBO estimate."""
    rng = np.random.default_rng(seed)
    mean, log_var = (np.asarray(a, dtype=np.float64) for a in vae.encoder(x, training=False))
    std = np.exp(0.5 * log_var)
    kl = -0.5 * np.sum(1 + log_var - mean ** 2 - np.exp(log_var), axis=1)
    elbo, elbo_var, log_px = [], [], []
    for start in range(0, len(x), chunk):
        b = slice(start, start + chunk)
        eps = rng.standard_normal((num_samples,) + mean[b].shape)       # (S, B, K)
        z = mean[b] + std[b] * eps
        logits = np.asarray(vae.decoder(z.reshape(-1, z.shape[-1]).astype("float32"),
                                        training=False), dtype=np.float64)
        logits = logits.reshape(z.shape[:2] + (-1,))                    # (S, B, D)
        # ln p(x|z) = sum_j x_j ln s(l_j) + (1 - x_j) ln(1 - s(l_j)) = sum_j x_j l_j - softplus(l_j)
        log_lik = np.sum(x[b] * logits - np.logaddexp(0.0, logits), axis=-1)
        log_prior = -0.5 * np.sum(z ** 2 + np.log(2 * np.pi), axis=-1)
        log_q = -0.5 * np.sum(eps ** 2 + np.log(2 * np.pi) + log_var[b], axis=-1)
        log_w = log_lik + log_prior - log_q
        elbo.append(log_lik.mean(0) - kl[b])
        elbo_var.append(log_lik.var(0) / num_samples)
        m = log_w.max(0)
        log_px.append(m + np.log(np.mean(np.exp(log_w - m), axis=0)))
    return np.concatenate(elbo), np.concatenate(elbo_var), np.concatenate(log_px)


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    home = tmp_path_factory.mktemp("keras_home")
    return zoo.load(SMALL, base_url=WEIGHTS, cache_dir=home, verbose=False)


def test_small_model_gives_the_numbers_its_entry_claims(small_model):
    claimed = zoo.REGISTRY[SMALL]["results"]
    x = digits_test_split()
    assert claimed["test_examples"] == len(x) == 180
    assert claimed["nll_samples"] == 5000 and claimed["nll_examples"] == len(x)
    elbo, elbo_var, log_px = numpy_bounds(small_model, x, num_samples=5000)
    # Monte Carlo error of our mean ELBO; the registry's (L=1000) is about sqrt(5) times ours.
    se = math.sqrt(elbo_var.sum()) / len(x)
    assert abs(-elbo.mean() - claimed["test_neg_elbo"]) < 6 * math.sqrt(6) * se + 0.002
    # The k=5000 estimate of each ln p(x) varies by ~0.01 nats between seeds for this model
    # (measured: 5 seeds); 0.05 nats on the mean is many standard errors, and far below the gap
    # between ELBO and NLL.
    assert abs(-log_px.mean() - claimed["test_nll"]) < 0.05
    assert claimed["test_nll"] < claimed["test_neg_elbo"] - 0.1
    # The model's own loss agrees too (one sample per example: a noisier estimate).
    got = small_model.evaluate(x, batch_size=180, verbose=0, return_dict=True)
    spread = np.sqrt(elbo_var * 5000).mean() / math.sqrt(len(x))
    assert abs(got["neg_elbo"] - claimed["test_neg_elbo"]) < 6 * spread
    # And the model learned something: far better than independent pixels fitted on train.
    from sklearn.datasets import load_digits

    data = (load_digits().data / 16.0 > 0.5).astype("float64")
    index = np.arange(len(data)) % 10
    p = data[(index != 0) & (index != 5)].mean(0).clip(1e-3, 1 - 1e-3)
    independent_nll = -np.mean(x @ np.log(p) + (1 - x) @ np.log(1 - p))
    assert claimed["test_nll"] < independent_nll - 5


def test_from_pretrained_is_zoo_load(small_model):
    vae = kv.VAE.from_pretrained(SMALL, base_url=WEIGHTS, verbose=False, seed=3)
    assert isinstance(vae, kv.VAE) and vae.name == SMALL and vae.seed == 3
    for a, b in zip(vae.get_weights(), small_model.get_weights()):
        np.testing.assert_array_equal(a, b)
    x = digits_test_split()[:5]
    np.testing.assert_allclose(vae.reconstruct(x), small_model.reconstruct(x), rtol=1e-6)


# ----------------------------------------------------------------- download over HTTP
def test_download_over_http_then_cache_hit_with_the_server_stopped(server, isolated_cache):
    path = zoo.download(SMALL, base_url=server.url, verbose=False)
    assert server.requests == [f"/{file_of(SMALL).name}"]
    assert Path(path).parent == isolated_cache / "models" / "keras_vae"  # $KERAS_HOME honoured
    assert sha256(path) == zoo.REGISTRY[SMALL]["sha256"]
    assert cache_files(isolated_cache) == [path]
    first = zoo.load(SMALL, base_url=server.url, verbose=False)
    assert len(server.requests) == 1  # the second load read the cache
    server.stop()
    again = zoo.load(SMALL, base_url=server.url, verbose=False)
    offline = zoo.load(SMALL, base_url="http://127.0.0.1:9/unreachable/", offline=True,
                       verbose=False)
    for a, b, c in zip(first.get_weights(), again.get_weights(), offline.get_weights()):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


def test_download_takes_its_base_url_from_the_environment(server, monkeypatch, isolated_cache):
    monkeypatch.setenv(zoo.URL_ENV, server.url.rstrip("/"))  # with or without the slash
    path = zoo.download(SMALL, verbose=False)
    assert server.requests == [f"/{file_of(SMALL).name}"]
    assert sha256(path) == zoo.REGISTRY[SMALL]["sha256"]


@pytest.mark.parametrize("mode", ["corrupt", "short", "cut"])
def test_bad_download_raises_naming_model_and_hash_and_leaves_nothing(server, isolated_cache,
                                                                     mode):
    server.modes[file_of(SMALL).name] = mode
    expected = zoo.REGISTRY[SMALL]["sha256"]
    with pytest.raises(zoo.IntegrityError) as info:
        zoo.download(SMALL, base_url=server.url, verbose=False)
    assert SMALL in str(info.value) and expected in str(info.value)
    assert len(server.requests) == 1
    assert cache_files(isolated_cache) == []  # no corrupt file, no partial download
    server.modes.clear()  # the next attempt is not poisoned by the failed one
    path = zoo.download(SMALL, base_url=server.url, verbose=False)
    assert sha256(path) == expected and cache_files(isolated_cache) == [path]


def test_missing_file_raises_404_and_leaves_nothing(server, isolated_cache):
    with pytest.raises(zoo.DownloadError) as info:
        zoo.download(SMALL, base_url=server.url + "no/such/folder/", verbose=False)
    message = str(info.value)
    assert "404" in message and SMALL in message and zoo.REGISTRY[SMALL]["sha256"] in message
    assert isinstance(info.value, FileNotFoundError)
    assert server.requests == [f"/no/such/folder/{file_of(SMALL).name}"]
    assert cache_files(isolated_cache) == []


def test_offline_fails_fast_without_touching_the_network(server, monkeypatch, isolated_cache):
    monkeypatch.setenv(zoo.OFFLINE_ENV, "1")
    with pytest.raises(zoo.DownloadError) as info:
        zoo.load(SMALL, base_url=server.url, verbose=False)
    message = str(info.value)
    assert SMALL in message and "offline" in message
    assert f"keras-vae zoo download {SMALL}" in message
    assert server.requests == []
    assert cache_files(isolated_cache) == []
    # Offline still reads local sources, and then the cache.
    zoo.load(SMALL, base_url=WEIGHTS, verbose=False)
    zoo.load(SMALL, base_url=server.url, verbose=False)
    assert server.requests == []
    monkeypatch.setenv(zoo.OFFLINE_ENV, "0")  # "0" switches it off
    zoo.download(SMALL, base_url=server.url, cache_dir=isolated_cache / "other", verbose=False)
    assert len(server.requests) == 1


def test_a_partial_file_left_in_the_cache_is_replaced(server, isolated_cache):
    """A download killed before it finished (e.g. by an older tool writing in place, or a cache
    damaged on disk) leaves a short file at the cache name: loads detect it by its hash."""
    target = Path(zoo.downloader.cache_path(zoo.REGISTRY[SMALL], None))
    target.parent.mkdir(parents=True)
    target.write_bytes(file_of(SMALL).read_bytes()[:1000])
    # Offline, it cannot be repaired: a clear error, and the bad file is gone.
    with pytest.raises(zoo.DownloadError, match="offline"):
        zoo.download(SMALL, base_url=server.url, offline=True, verbose=False)
    assert not target.exists()
    target.write_bytes(file_of(SMALL).read_bytes()[:1000])
    # Online, it is fetched again.
    old_part = Path(str(target) + ".part-1-deadbeef")  # left by a killed download long ago
    old_part.write_bytes(b"x")
    os.utime(old_part, (time.time() - 7200, time.time() - 7200))
    path = zoo.download(SMALL, base_url=server.url, verbose=False)
    assert sha256(path) == zoo.REGISTRY[SMALL]["sha256"]
    assert len(server.requests) == 1
    assert cache_files(isolated_cache) == [str(target)]


def test_download_from_a_local_folder_or_file_url_checks_the_hash(isolated_cache):
    for base in (str(WEIGHTS), WEIGHTS.as_uri(), WEIGHTS.as_uri() + "/"):
        cache = isolated_cache / base.replace("/", "_").replace(":", "")
        path = zoo.download(SMALL, base_url=base, cache_dir=cache, verbose=False)
        assert sha256(path) == zoo.REGISTRY[SMALL]["sha256"]
        assert Path(path).parent == cache / "models" / "keras_vae"
    with pytest.raises(zoo.DownloadError, match="neither a URL nor an existing folder"):
        zoo.download(SMALL, base_url=str(REPO / "no_such_folder"), verbose=False)


def test_clear_errors_for_bad_names_and_overrides():
    with pytest.raises(ValueError, match="Did you mean 'kw_digits_z2'"):
        zoo.load("kw_digit_z2")
    with pytest.raises(ValueError, match="cannot change latent_dim"):
        zoo.load(SMALL, base_url=WEIGHTS, latent_dim=3)
    unreleased = [n for n, e in zoo.REGISTRY.items() if not e["sha256"]]
    for name in unreleased:
        with pytest.raises(ValueError, match="no released weights"):
            zoo.load(name)


# ----------------------------------------------------------------- command line
def cli(capsys, *args):
    """Runs `keras-vae zoo ARGS` in this process; returns (exit code, stdout, stderr)."""
    from keras_vae.cli import main

    code = main(["zoo", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_list_info_and_errors(capsys, server, monkeypatch, isolated_cache):
    code, out, _ = cli(capsys, "list")
    assert code == 0
    for row in zoo.list():
        line = next(l for l in out.splitlines() if l.startswith(row["name"] + " "))
        cells = line.split()
        assert f"{row['test_neg_elbo']:.2f}" == cells[5] and f"{row['test_nll']:.2f}" == cells[6]
        assert str(row["nll_samples"]) == cells[7]
    code, out, _ = cli(capsys, "list", "--markdown")
    assert code == 0 and out.strip() == zoo.table(markdown=True)

    monkeypatch.setenv(zoo.URL_ENV, server.url)
    code, out, _ = cli(capsys, "info", SMALL)
    assert code == 0 and '"cached": false' in out and server.url + file_of(SMALL).name in out
    assert zoo.REGISTRY[SMALL]["sha256"] in out and server.requests == []
    code, out, err = cli(capsys, "download", SMALL)
    assert code == 0 and out == f"{SMALL}\t{zoo.downloader.cache_path(zoo.REGISTRY[SMALL], None)}\n"
    assert "Downloading" in err  # keras' messages and progress bar go to stderr
    code, out, _ = cli(capsys, "info", SMALL)
    assert code == 0 and '"cached": true' in out

    other = next(n for n in zoo.released_names() if n != SMALL)  # not in this cache
    code, out, err = cli(capsys, "download", other, "--offline")
    assert code == 2 and out == "" and "offline" in err and other in err
    server.modes[file_of(other).name] = "corrupt"
    code, _, err = cli(capsys, "download", other)
    assert code == 2 and zoo.REGISTRY[other]["sha256"] in err
    code, _, err = cli(capsys, "info", "kw_mnist_z21")
    assert code == 2 and "Did you mean" in err and "'kw_mnist_z20'" in err
    assert cache_files(isolated_cache) == [zoo.downloader.cache_path(zoo.REGISTRY[SMALL], None)]


@pytest.mark.large
def test_cli_download_in_a_fresh_process(server, isolated_cache):
    """The installed entry point end to end: a new interpreter, settings from the environment."""
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3",
               KERAS_HOME=str(isolated_cache), **{zoo.URL_ENV: server.url})
    got = subprocess.run([sys.executable, "-m", "keras_vae", "zoo", "download", SMALL],
                         capture_output=True, text=True, env=env, timeout=300)
    assert got.returncode == 0, got.stderr
    name, path = got.stdout.strip().split("\t")
    assert name == SMALL and sha256(path) == zoo.REGISTRY[SMALL]["sha256"]
    assert Path(path).parent == isolated_cache / "models" / "keras_vae"
    assert server.requests == [f"/{file_of(SMALL).name}"]


# ----------------------------------------------------------------- build
def test_build_refuses_to_overwrite(tmp_path):
    existing = tmp_path / zoo.REGISTRY[SMALL]["file"]
    existing.write_bytes(b"user's file")
    with pytest.raises(FileExistsError, match="--overwrite"):
        zoo.build(SMALL, out=tmp_path)
    assert existing.read_bytes() == b"user's file"
    with pytest.raises(ValueError, match="needs --data"):
        zoo.build("kw_mnist_z20", out=tmp_path)
    with pytest.raises(FileNotFoundError, match="No binarized MNIST file"):
        zoo.build("kw_mnist_z20", data=tmp_path / "missing.npz", out=tmp_path)
    bad = tmp_path / "bad.npz"
    np.savez(bad, train=np.zeros((5, 784)), valid=np.zeros((5, 784)), test=np.full((5, 784), 2))
    with pytest.raises(ValueError, match="'test' is not binary"):
        zoo.build("kw_mnist_z20", data=bad, out=tmp_path)
    np.savez(bad, train=np.zeros((5, 28, 28)), valid=np.zeros((5, 784)), test=np.zeros((5, 784)))
    with pytest.raises(ValueError, match=r"'train' has shape \(5, 28, 28\)"):
        zoo.build("kw_mnist_z20", data=bad, out=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.npz", existing.name]


def test_build_lowers_the_learning_rate_when_validation_stalls(tmp_path, monkeypatch):
    """The MNIST recipes' schedule: with reduce_lr_patience, Adam's rate is halved each time the
    validation -ELBO stops improving, and the entry records the rate training ended with. At a
    rate of 1e-9 the weights stand still, so the validation -ELBO can only improve by its own
    sampling noise: over 8 epochs at least one reduction must happen."""
    recipe = dict(zoo.REGISTRY[SMALL]["train"], learning_rate=1e-9, max_epochs=8, patience=100,
                  reduce_lr_patience=1, reduce_lr_factor=0.5, min_learning_rate=1e-15)
    monkeypatch.setitem(zoo.REGISTRY, "lr_probe", dict(
        zoo.REGISTRY[SMALL], train=recipe, file="lr_probe.weights.h5", sha256=None))
    entry = zoo.build("lr_probe", out=tmp_path, nll_samples=0, verbose=0)
    halvings = math.log2(1e-9 / entry["training"]["final_learning_rate"])
    assert entry["training"]["epochs"] == 8
    assert 1 <= round(halvings) <= 7 and abs(halvings - round(halvings)) < 1e-3


def test_build_with_polyak_averaging_keeps_the_averaged_weights(tmp_path, monkeypatch):
    """A recipe with ema_momentum validates, early-stops on and saves the moving average of the
    weights, not the raw ones. Keras starts the average at the weights after the first step,
    which Adam moves by at most its learning rate per weight (|m/sqrt(v)| <= 1); with momentum
    0.99999 the average then barely moves in 2 epochs (58 steps), while the raw weights move
    far. So the saved file must hold the initial weights (reproduced here from the recipe's
    seed) to within one learning rate."""
    def build(label, **changes):
        recipe = dict(zoo.REGISTRY[SMALL]["train"], max_epochs=2, patience=100, **changes)
        monkeypatch.setitem(zoo.REGISTRY, label, dict(
            zoo.REGISTRY[SMALL], train=recipe, file=f"{label}.weights.h5", sha256=None))
        zoo.build(label, out=tmp_path, nll_samples=0, verbose=0)
        vae = zoo.loader.construct(zoo.REGISTRY[label])
        vae.load_weights(str(tmp_path / f"{label}.weights.h5"))
        return [np.asarray(w) for w in vae.trainable_weights]

    import keras

    seed = zoo.REGISTRY[SMALL]["train"]["seed"]
    keras.utils.set_random_seed(seed)
    initial = [np.asarray(w) for w in zoo.loader.construct(
        zoo.REGISTRY[SMALL], seed=seed, name="ema_probe").trainable_weights]
    moved = lambda weights: max(float(np.max(np.abs(w - w0)))  # noqa: E731
                                for w, w0 in zip(weights, initial))
    lr = zoo.REGISTRY[SMALL]["train"]["learning_rate"]
    raw = moved(build("raw_probe"))
    averaged = moved(build("ema_probe", ema_momentum=0.99999))
    assert raw > 20 * lr, raw  # training moves the weights ...
    assert averaged < 1.05 * lr, (averaged, raw)  # ... their average (what is kept) does not


def test_build_with_kl_warmup_ramps_beta_and_keeps_the_last_weights(tmp_path, monkeypatch):
    """kl_warmup_epochs: beta starts at 0, so the KL is left unpenalized at first and the
    encoder spends more nats on z than the same build (bit-reproducible otherwise) at beta = 1;
    training that ends inside the warm-up, which early stopping skips, keeps its last epoch."""
    def build(label, **changes):
        recipe = dict(zoo.REGISTRY[SMALL]["train"], max_epochs=3, patience=100, **changes)
        monkeypatch.setitem(zoo.REGISTRY, label, dict(
            zoo.REGISTRY[SMALL], train=recipe, file=f"{label}.weights.h5", sha256=None))
        return zoo.build(label, out=tmp_path, nll_samples=0, verbose=0)

    plain, warm = build("plain_probe"), build("warm_probe", kl_warmup_epochs=10)
    assert warm["results"]["test_kl"] > plain["results"]["test_kl"] + 1.0, (warm, plain)
    assert (warm["training"]["epochs"], warm["training"]["best_epoch"]) == (3, 3)


def test_digits_split_is_the_documented_one():
    train, valid, test = zoo.load_data("digits")
    assert (train.shape, valid.shape, test.shape) == ((1437, 64), (180, 64), (180, 64))
    np.testing.assert_array_equal(test, digits_test_split())
    assert set(np.unique(train)) == {0.0, 1.0} and train.dtype == np.float32


def test_build_is_reproducible_and_its_entry_describes_its_file(tmp_path):
    pytest.importorskip("keras_vae.evaluation", reason="keras_vae.evaluation (issue 5) not merged")
    entries = [zoo.build(SMALL, out=tmp_path / str(i), max_epochs=2, nll_samples=50, verbose=0)
               for i in range(2)]
    import keras

    if keras.backend.backend() == "tensorflow":  # deterministic ops for the build only
        from tensorflow.python.framework import config as tf_config

        assert not tf_config.is_op_determinism_enabled()
    first = tmp_path / "0" / zoo.REGISTRY[SMALL]["file"]
    assert entries[0]["sha256"] == sha256(first) == entries[1]["sha256"]  # same bits twice
    assert entries[0]["size_bytes"] == first.stat().st_size
    training, results = entries[0]["training"], entries[0]["results"]
    assert training["epochs"] == 2 and training["stopped_by"] == "max_epochs"
    assert training["command"] == f"keras-vae zoo build {SMALL} --max-epochs 2 --nll-samples 50"
    assert results["nll_samples"] == 50 and results["test_examples"] == 180
    # The file holds what the entry measured: reload it and recompute.
    vae = zoo.loader.construct(zoo.REGISTRY[SMALL])
    vae.load_weights(str(first))
    elbo, elbo_var, _ = numpy_bounds(vae, digits_test_split(), num_samples=500)
    se = math.sqrt(elbo_var.sum()) / len(elbo)
    assert abs(-elbo.mean() - results["test_neg_elbo"]) < 8 * se + 0.002
    assert zoo.loader.count_parameters(vae) == entries[0]["parameters"] == zoo.REGISTRY[SMALL]["parameters"]
