"""Exports of table detectors: the location-scale likelihoods (decoder (B, D, 2), scaling layers
inside) export, the bundle's manifest carries the detector's threshold, and the TF-free
runtime's `score` of raw CSV rows gives `keras-vae score`'s scores and flags."""

import copy
import csv
import json

import keras
import numpy as np
import pytest
from scipy import stats

import keras_vae as kv
from keras_vae import scaling
from keras_vae.detector import score_rows
from keras_vae.exporting import anomaly
from keras_vae.model import VAE
from keras_vae_cli import main as cli
from keras_vae_runtime import runtime

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                reason="exports are written on the TensorFlow backend")


def planted(n, d=4, seed=0, rate=0.1):
    """Correlated rows on scales 0.01 .. 100 with `rate` rows pushed 6 standard deviations off
    in one column: (x, y)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2)) @ rng.normal(size=(2, d)) + 0.2 * rng.normal(size=(n, d))
    y = np.zeros(n, dtype="int64")
    k = int(rate * n)
    x[:k, 0] += 6.0 * x[:, 0].std() * rng.choice([-1, 1], k)
    y[:k] = 1
    return x * np.logspace(-2, 2, d) + 5.0, y


def write_csv(path, x, y=None):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        # the label column in the middle: both readers must leave it out
        writer.writerow(["f0", "f1"] + ([] if y is None else ["label"])
                        + [f"f{i}" for i in range(2, x.shape[1])])
        for i, row in enumerate(x):
            cells = [f"{v:.6g}" for v in row]
            writer.writerow(cells[:2] + ([] if y is None else [int(y[i])]) + cells[2:])
    return path


def read_scores(path):
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    return rows[0], [r[0] for r in rows[1:]], np.array([float(r[1]) for r in rows[1:]]), (
        np.array([int(r[2]) for r in rows[1:]]) if len(rows[0]) > 2 else None)


# ----------------------------------------------------------------------------- densities
@pytest.mark.parametrize("kind", ["gaussian_hetero", "student_t", "laplace"])
def test_runtime_log_densities_match_scipy(kind):
    rng = np.random.default_rng(1)
    x, loc = rng.normal(size=50) * 10, rng.normal(size=50) * 5
    log_scale = rng.uniform(-3, 3, 50)
    got = runtime.location_scale_log_density(kind, x, loc, log_scale, df=4.0)
    scale = np.exp(log_scale)
    want = {"gaussian_hetero": stats.norm.logpdf(x, loc, scale),
            "student_t": stats.t.logpdf(x, 4.0, loc, scale),
            "laplace": stats.laplace.logpdf(x, loc, scale)}[kind]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    if kind == "student_t":  # the manifest's degrees of freedom are used
        np.testing.assert_allclose(
            runtime.location_scale_log_density(kind, x, loc, log_scale, df=2.5),
            stats.t.logpdf(x, 2.5, loc, scale), rtol=1e-12)


# ----------------------------------------------------------------------------- the CLI path
@pytest.fixture(scope="module")
def run_bundle(tmp_path_factory):
    """A tiny table run (`keras-vae train`), its bundle (`keras-vae export`), and new rows."""
    root = tmp_path_factory.mktemp("table_export")
    x, y = planted(240)
    train_csv = write_csv(root / "train.csv", x, y)
    run_dir, bundle = root / "run", root / "bundle"
    assert cli(["train", "--dataset", str(train_csv), "--label-column", "label",
                "--contamination", "0.1", "--epochs", "8", "--run-dir", str(run_dir)]) == 0
    assert cli(["export", str(run_dir), "--out", str(bundle), "--formats", "onnx",
                "--quiet"]) == 0
    x_new, y_new = planted(150, seed=3)
    new_csv = write_csv(root / "new.csv", x_new, y_new)
    return root, run_dir, bundle, new_csv


@pytest.mark.large
def test_manifest_carries_the_runs_threshold(run_bundle):
    _, run_dir, bundle, _ = run_bundle
    manifest = json.loads((bundle / "manifest.json").read_text())
    state = json.loads((run_dir / "detector.json").read_text())
    section = manifest["anomaly"]
    assert section["threshold"] == state["anomaly_threshold"]
    assert section["contamination"] == 0.1 and section["score"] == "elbo"
    assert section["table"]["columns"] == ["f0", "f1", "f2", "f3"]
    assert section["table"]["label_column"] == "label"
    assert manifest["likelihood"] == "student_t"
    assert [t["name"] for t in manifest["contract"]["decoder"]["outputs"]] == [
        "x_mean", "x_log_scale"]
    # the stored upper half of the training scores reproduces numpy.quantile at q >= 0.5
    vae = runtime.ExportedVAE(bundle)
    scores = np.asarray(state["decision_scores"])
    for c in (0.5, 0.3, 0.1, 0.013, 1 / len(scores)):
        assert vae.detector_threshold(c) == pytest.approx(np.quantile(scores, 1 - c),
                                                          rel=1e-15)


@pytest.mark.large
@pytest.mark.parametrize("extra", [[], ["--contamination", "0.3"], ["--threshold", "10"]])
def test_runtime_score_equals_keras_vae_score(run_bundle, extra):
    root, run_dir, bundle, new_csv = run_bundle
    name = "_".join(extra).replace(".", "") or "default"
    python_out, runtime_out = root / f"py_{name}.csv", root / f"rt_{name}.csv"
    assert cli(["score", str(run_dir), "--data", str(new_csv), "--out", str(python_out),
                *extra]) == 0
    assert runtime.main(["score", str(bundle), "--data", str(new_csv), "--out",
                         str(runtime_out), *extra]) == 0
    header, rows, scores, flags = read_scores(runtime_out)
    want_header, want_rows, want_scores, want_flags = read_scores(python_out)
    assert header == want_header == ["row", "score", "flag"]
    assert rows == want_rows == [str(i + 1) for i in range(150)]
    # both print 6 significant digits of float32 computations
    np.testing.assert_allclose(scores, want_scores, rtol=3e-5, atol=1e-4)
    threshold = (float(extra[1]) if extra[:1] == ["--threshold"] else
                 runtime.ExportedVAE(bundle).detector_threshold(
                     float(extra[1]) if extra else None))
    clear = np.abs(want_scores - threshold) > 1e-3 * max(1.0, abs(threshold))
    assert clear.sum() > 140
    np.testing.assert_array_equal(flags[clear], want_flags[clear])
    assert 0 < flags.sum() < 150


@pytest.mark.large
def test_runtime_score_errors_are_one_line(run_bundle, capsys):
    root, _, bundle, new_csv = run_bundle
    bad = root / "bad.csv"
    bad.write_text("f0,f1,f2,f3\n1,2,3,4\n1,2,x,4\n")
    assert runtime.main(["score", str(bundle), "--data", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vae_runtime score: error: ") and "\n" not in err
    assert "column 'f2', row 2 holds 'x'" in err
    out = root / "exists.csv"
    out.write_text("keep me")
    assert runtime.main(["score", str(bundle), "--data", str(new_csv), "--out", str(out)]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err and out.read_text() == "keep me"
    assert runtime.main(["score", str(bundle), "--data", str(new_csv), "--threshold", "1",
                         "--contamination", "0.2"]) == 2
    assert "pass one of them" in capsys.readouterr().err


# ----------------------------------------------------------------------------- each likelihood
@pytest.mark.large
@pytest.mark.parametrize("likelihood", ["gaussian_hetero", "laplace"])
def test_location_scale_models_export_and_score_like_python(likelihood, tmp_path):
    """A detector's model with each location-scale likelihood exports (the parity checks pass)
    and the runtime's -ELBO and IWAE scores of raw rows equal `score_rows`'."""
    x, _ = planted(200, seed=7)
    loc, scale = scaling.robust_statistics(x)
    keras.utils.set_random_seed(0)
    encoder, decoder = scaling.tabular_networks(4, 2, (16, 8), loc=loc, scale=scale)
    vae = VAE(encoder, decoder, likelihood=likelihood)
    manifest = kv.export(vae, tmp_path / "b", formats=["onnx"], data=x.astype("float32"))
    assert manifest["likelihood"] == likelihood and "anomaly" not in manifest
    bundle = runtime.ExportedVAE(tmp_path / "b")
    rows = x[:70].astype("float32")
    for method in ("elbo", "iwae"):
        want = score_rows(vae, rows, method, num_samples=5, seed=3, batch_size=2048)
        got = bundle.detector_score(rows, method=method, num_samples=5, seed=3)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    # the deterministic score at the posterior mean: ln p(x | z_mean) - KL, by hand
    z_mean, z_log_var = (np.asarray(v) for v in vae.encoder(rows))
    params = np.asarray(vae.decoder(z_mean))
    log_lik = np.asarray(vae.log_likelihood_given(rows, params))
    kl = np.asarray(vae.kl(z_mean, z_log_var))
    np.testing.assert_allclose(bundle.anomaly_score(rows), -(log_lik - kl), rtol=1e-5,
                               atol=1e-4)


@pytest.mark.large
def test_detector_object_exports_its_threshold(tmp_path):
    x, _ = planted(120, seed=2)
    detector = kv.VAEDetector(contamination=0.2, max_epochs=2, hidden_units=(8, 4),
                              latent_dim=2).fit(x)
    manifest = kv.export(detector, tmp_path / "d", formats=["onnx"])
    assert manifest["anomaly"]["threshold"] == detector.threshold_
    assert "table" not in manifest["anomaly"]
    bundle = runtime.ExportedVAE(tmp_path / "d")
    got = bundle.detector_score(x)
    np.testing.assert_allclose(got, detector.decision_scores_, rtol=1e-5, atol=1e-4)
    flags = got > bundle.detector_threshold()
    assert abs(int(flags.sum()) - round(0.2 * len(x))) <= 1
    # a detector averaging several models has no single-model threshold to carry
    two = copy.copy(detector)
    two.models_ = detector.models_ * 2
    section = anomaly.from_detector(two)
    assert section["threshold"] is None and "averages the scores of 2 models" in section["note"]
    manifest_path = tmp_path / "d" / "manifest.json"
    manifest_path.write_text(json.dumps({**json.loads(manifest_path.read_text()),
                                         "anomaly": section}))
    two_models = runtime.ExportedVAE(tmp_path / "d")
    assert two_models.detector_threshold() is None
    with pytest.raises(runtime.RuntimeInputError, match="no training scores"):
        two_models.detector_threshold(0.1)
    np.testing.assert_allclose(two_models.detector_score(x), got)
