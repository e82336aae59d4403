"""`keras_vae.VAEDetector` on synthetic tables with planted anomalies, its files, and the
`keras-vae train` (table) / `keras-vae score` commands end to end in subprocesses."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

import keras_vae as kv

REPO = Path(__file__).resolve().parents[1]
FAST = dict(max_epochs=40, patience=10, hidden_units=(16, 8), latent_dim=2)


def planted(n=400, d=5, seed=0, rate=0.05):
    """Rows near a 2-D plane, columns on scales 0.01 .. 1000, and `rate` planted anomalies
    (two columns pushed 5-8 standard deviations off): (x, y)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2)) @ rng.normal(size=(2, d)) + 0.2 * rng.normal(size=(n, d))
    y = np.zeros(n, dtype="int64")
    k = int(rate * n)
    std = x.std(0)
    for i in range(k):
        cols = rng.choice(d, 2, replace=False)
        x[i, cols] += rng.choice([-1, 1], 2) * rng.uniform(5, 8, 2) * std[cols]
    y[:k] = 1
    return x * np.logspace(-2, 3, d) + 7.0, y


@pytest.fixture(scope="module")
def fitted():
    x, y = planted()
    return kv.VAEDetector(contamination=0.05, seed=0, **FAST).fit(x), x, y


def test_detector_finds_planted_anomalies(fitted):
    detector, x, y = fitted
    assert roc_auc_score(y, detector.decision_scores_) > 0.9
    x_new, y_new = planted(seed=1)
    assert roc_auc_score(y_new, detector.decision_function(x_new)) > 0.9
    # PyOD conventions: the threshold flags the contamination share of the training rows
    assert detector.labels_.mean() == pytest.approx(0.05, abs=1.5 / len(x))
    np.testing.assert_array_equal(detector.predict(x), detector.labels_)
    assert set(np.unique(detector.predict(x_new))) <= {0, 1}
    detector.set_contamination(0.1)
    assert detector.predict(x).mean() == pytest.approx(0.1, abs=1.5 / len(x))
    detector.set_contamination(0.05)


def test_scores_are_densities_of_raw_rows(fitted):
    """Rescaling a column of new rows moves their scores by ln c (the raw units' Jacobian)
    only if the detector was fitted on the rescaled data; on the original detector a row
    far outside the data scores higher than every training row."""
    detector, x, _ = fitted
    far = x[:1].copy()
    far[0, 2] += 50 * x[:, 2].std()
    assert detector.decision_function(far)[0] > detector.decision_scores_.max()


@pytest.mark.large
def test_affine_rescaling_shifts_scores_by_the_log_jacobian():
    x, _ = planted(n=200, seed=2)
    c = np.array([1.0, 10.0, 0.1, 3.0, 1.0])
    a = kv.VAEDetector(seed=0, max_epochs=3, hidden_units=(8,), latent_dim=2).fit(x)
    b = kv.VAEDetector(seed=0, max_epochs=3, hidden_units=(8,), latent_dim=2).fit(x * c - 4)
    shift = b.decision_scores_ - a.decision_scores_
    np.testing.assert_allclose(shift, np.log(c).sum(), atol=2e-2)


def test_save_load_identical_scores(fitted, tmp_path):
    detector, x, _ = fitted
    path = detector.save(tmp_path / "det")
    assert sorted(os.listdir(path)) == ["detector.json", "model.keras"]
    with pytest.raises(FileExistsError):
        detector.save(path)
    loaded = kv.VAEDetector.load(path)
    assert loaded.threshold_ == detector.threshold_
    assert loaded.get_params() == detector.get_params()
    np.testing.assert_array_equal(loaded.decision_function(x[:50]),
                                  detector.decision_function(x[:50]))
    state = json.loads((Path(path) / "detector.json").read_text())
    assert state["anomaly_threshold"] == detector.threshold_


def test_min_scale_floors_each_features_scale_in_raw_units(fitted):
    """p(x|z)'s scale of feature j never falls below min_scale x the feature's robust scale,
    and reaches it exactly where the network asks for a zero scale (softplus -> 0)."""
    detector, x, _ = fitted
    loc, scale = kv.scaling.robust_statistics(x)
    vae = detector.models_[0]
    z = 3.0 * np.random.default_rng(0).normal(size=(512, vae.latent_dim)).astype("float32")
    log_scale = np.asarray(vae.decoder(z))[..., 1]
    assert np.all(log_scale >= np.log(detector.min_scale * scale) - 1e-5)
    other = kv.VAEDetector(min_scale=0.05, **FAST)._build(x.shape[1], len(x), loc, scale, 0)
    last = other.decoder.get_layer("x_params_standardized")
    kernel, bias = last.get_weights()
    last.set_weights([np.zeros_like(kernel), np.full_like(bias, -60.0)])
    log_scale = np.asarray(other.decoder(z[:4]))[..., 1]
    np.testing.assert_allclose(log_scale, np.broadcast_to(np.log(0.05 * scale), (4, 5)),
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="min_scale"):
        kv.VAEDetector(min_scale=0.0)


def test_schedule_checks_every_200_steps_within_the_step_budget():
    """Keras epochs hold whole passes adding up to about `check_every` gradient steps (the
    held-out check comes that often), and all epochs together stay within `max_steps`
    (or `max_epochs` passes) up to one epoch's rounding."""
    from keras_vae.detector import default_sizes
    detector = kv.VAEDetector()
    assert (detector.max_steps, detector.check_every) == (2000, 200)
    for rows in (60, 150, 700, 7828, 34367, 200000):
        batch = default_sizes(6, rows)[2]
        epochs, passes, patience = detector._schedule(rows, batch)
        per_pass = -(-rows // batch)
        per_epoch = passes * per_pass
        assert patience == detector.patience
        if per_pass <= 200:
            assert abs(per_epoch - 200) <= per_pass / 2, (rows, per_epoch)
        else:
            assert passes == 1
        budget = min(detector.max_steps, detector.max_epochs * per_pass)
        assert budget <= epochs * per_epoch < budget + per_epoch, (rows, epochs, per_epoch)


def test_bad_input_messages(fitted):
    detector, x, _ = fitted
    with pytest.raises(ValueError, match="has 3 columns but the detector was fitted on 5"):
        detector.decision_function(x[:, :3])
    bad = x[:10].copy()
    bad[4, 1] = np.nan
    with pytest.raises(ValueError, match="missing or infinite value in column 1, row 4"):
        detector.decision_function(bad)
    with pytest.raises(ValueError, match="not fitted"):
        kv.VAEDetector().predict(x)
    with pytest.raises(ValueError, match="contamination must be in"):
        kv.VAEDetector(contamination=0.7)


# ----------------------------------------------------------------------------- CLI
def run_cli(*args, timeout=600):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO),
                                                        os.environ.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, "-m", "keras_vae", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=timeout)


def write_csv(path, x, y=None, names=None):
    names = names or [f"f{i}" for i in range(x.shape[1])]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(names + ([] if y is None else ["label"]))
        for i, row in enumerate(x):
            writer.writerow([f"{v:.6g}" for v in row] + ([] if y is None else [int(y[i])]))
    return path


@pytest.mark.large
def test_cli_train_on_csv_then_score_another(tmp_path):
    x, y = planted(n=300)
    train_csv = write_csv(tmp_path / "train.csv", x, y)
    run_dir = tmp_path / "run"
    result = run_cli("train", "--dataset", train_csv, "--label-column", "label",
                     "--contamination", "0.05", "--epochs", "40", "--run-dir", run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["rows"] == 300 and summary["features"] == 5 and summary["flagged"] == 15
    assert summary["train_auroc"] > 0.9
    config = json.loads((run_dir / "config.json").read_text())
    assert config["columns"] == [f"f{i}" for i in range(5)] and config["label_column"] == "label"
    threshold = json.loads((run_dir / "detector.json").read_text())["anomaly_threshold"]
    assert threshold == summary["anomaly_threshold"]

    x_new, y_new = planted(n=120, seed=5)
    new_csv = write_csv(tmp_path / "new.csv", x_new)  # no label column
    out = tmp_path / "scores.csv"
    result = run_cli("score", run_dir, "--data", new_csv, "--out", out)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["row"] for r in rows] == [str(i + 1) for i in range(120)]
    scores = np.array([float(r["score"]) for r in rows])
    flags = np.array([int(r["flag"]) for r in rows])
    np.testing.assert_array_equal(flags, scores > threshold)
    assert roc_auc_score(y_new, scores) > 0.9
    # the same numbers as the Python detector of the run
    detector = kv.VAEDetector.load(run_dir)
    rows_read = kv.datasets.tabular.read_table(new_csv).x  # as written: 6 significant digits
    np.testing.assert_allclose(scores, detector.decision_function(rows_read), rtol=2e-5)
    # --contamination refits the threshold on the stored training scores
    result = run_cli("score", run_dir, "--data", new_csv, "--out", out, "--contamination",
                     "0.3", "--overwrite")
    assert result.returncode == 0, result.stderr[-3000:]
    with open(out, newline="") as handle:
        more = sum(int(r["flag"]) for r in csv.DictReader(handle))
    assert more > flags.sum()

    # one-line errors
    result = run_cli("score", run_dir, "--data", new_csv, "--out", out)
    assert result.returncode == 2 and "exists; pass --overwrite" in result.stderr
    bad = tmp_path / "bad.csv"
    bad.write_text("f0,f1,f2,f3,f4\n1,2,3,4,5\n1,2,x,4,5\n")
    result = run_cli("score", run_dir, "--data", bad, "--out", tmp_path / "b.csv")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(
        "keras-vae score: error: ") and "column 'f2', row 2 holds 'x'" in result.stderr
    result = run_cli("train", "--dataset", bad, "--run-dir", tmp_path / "r2")
    assert result.returncode == 2 and "keras-vae train: error:" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow  # the benchmark script end to end; `pytest -m slow` runs it
def test_benchmark_quick(tmp_path):
    results = tmp_path / "tabular.json"
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "anomaly_tabular.py"),
                           "--quick", "--results", str(results)], capture_output=True,
                          text=True, env=env, timeout=900, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(results.read_text())
    assert set(data["datasets"]) == {"synthetic_a", "synthetic_b"}
    for entry in data["datasets"].values():
        assert entry["n_train"] + entry["n_test"] in (1000, 600)
        res = entry["keras-vae"]
        assert 0.0 <= res["auprc"] <= 1.0 and res["seconds"] > 0 and len(res["runs"]) == 1
    # planted anomalies two columns 4-8 standard deviations off: the detector finds them
    assert data["summary"]["keras-vae"]["mean_auroc"] > 0.95
    assert data["summary"]["keras-vae"]["num_datasets"] == 2


@pytest.mark.large
def test_readme_example_runs(tmp_path, monkeypatch):
    import re
    text = (REPO / "README.md").read_text()
    start = text.index("## Tabular data and anomaly detection\n")
    code = re.search(r"```python\n(.*?)```", text[start:], re.S).group(1)
    assert "kv.VAEDetector(contamination=0.05)" in code
    code = code.replace("kv.VAEDetector(contamination=0.05)",
                        "kv.VAEDetector(contamination=0.05, **FAST)")
    x, y = planted(n=300, seed=3)
    monkeypatch.chdir(tmp_path)
    write_csv(tmp_path / "data.csv", x, y)
    namespace = {"FAST": FAST}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["table"].columns == [f"f{i}" for i in range(5)]
    assert roc_auc_score(y, namespace["scores"]) > 0.9
    assert namespace["flags"].mean() == pytest.approx(0.05, abs=1 / 300)
    np.testing.assert_array_equal(namespace["detector"].decision_function(namespace["table"].x),
                                  namespace["scores"])  # the reloaded detector
