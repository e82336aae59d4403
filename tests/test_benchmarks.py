"""The benchmark scripts' --quick modes, so they cannot rot (synthetic or bundled data only).

Each check is on the numbers a benchmark writes, not only that it ran: the importance-weighted
NLL is at most -ELBO up to Monte Carlo error, ratios are consistent with the rates, AUROC is a
probability and the ROC curve is a PNG.
"""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(REPO, "benchmarks")

pytestmark = pytest.mark.large  # subprocesses


def run(script, *args, timeout=600):
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, os.path.join(BENCH, script), "--quick", *args],
                          capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_likelihood_quick(tmp_path):
    results = tmp_path / "likelihood.json"
    out_dir = tmp_path / "nll"
    run("likelihood.py", "--models", "kingma_welling,conv", "--out-dir", str(out_dir),
        "--results", str(results))
    data = json.loads(results.read_text())
    assert set(data["models"]) == {"kingma_welling", "conv"}
    for name, res in data["models"].items():
        test = res["test"]
        assert test["num_samples"] == 20 and test["n"] == 200
        # ln p(x) >= ELBO in expectation: the NLL may exceed -ELBO only by Monte Carlo error.
        assert test["nll"] <= test["neg_elbo"] + 4 * test["nll_stderr"] + 0.05
        assert test["neg_elbo"] == pytest.approx(test["reconstruction"] + test["kl"], abs=0.01)
        assert 0 < test["bits_per_dim"] < 1.1  # 64 binary pixels: ~1 bit each at most
        assert res["epochs_run"] == 3 and res["evaluation_peak_rss_mib"] > 0
        assert (out_dir / name / "model.keras").exists()
    # Resumable: a second run finds the results and skips the work.
    stdout = run("likelihood.py", "--models", "kingma_welling", "--out-dir", str(out_dir),
                 "--results", str(results))
    assert "skipping" in stdout
    # The memory sweep: one fresh process per memory bound, each reporting its peak.
    run("likelihood.py", "--memory-sweep", "--out-dir", str(out_dir), "--results", str(results))
    sweep = json.loads((tmp_path / "evaluation_memory.json").read_text())["runs"]
    assert [r["max_elements"] for r in sweep] == [2 ** 21, 2 ** 23, 2 ** 25]
    assert all(r["rss_increase_mib"] >= 0 and r["num_samples"] == 20 for r in sweep)


def peers_available():
    try:
        import torch  # noqa: F401  (the `bench` extra)
    except ImportError:
        return False
    return os.path.exists(os.path.join(os.path.dirname(REPO), "shared", "bench",
                                       "torch_reference.py"))


def test_throughput_quick(tmp_path):
    # With torch and ../shared/bench present the peers run too; without them (a user's
    # clone, CI without the `bench` extra) only keras-vae's variants do.
    results = tmp_path / "throughput.json"
    with_peers = peers_available()
    run("throughput.py", "--variants", "default,no_xla,jax", "--results", str(results),
        *([] if with_peers else ["--skip-peers"]))
    data = json.loads(results.read_text())
    rates = {k: v["median_samples_per_second"] for k, v in data["results"].items()}
    assert {"keras-vae:default", "keras-vae:no_xla", "keras-vae:jax"} <= set(rates)
    assert data["results"]["keras-vae:default"]["backend"] == "tensorflow"
    assert data["results"]["keras-vae:jax"]["backend"] == "jax"  # the variant's backend ran
    assert all(r > 0 for r in rates.values())
    # Same model, data and seed: the lever changes speed, not what is learned.
    assert abs(data["results"]["keras-vae:default"]["last_train_loss"]
               - data["results"]["keras-vae:no_xla"]["last_train_loss"]) < 1.0
    if with_peers:
        fastest = data["fastest_peer"]
        peers = ("torch", "torch-1-thread", "keras-example")
        assert rates[fastest] == max(rates[n] for n in peers)
        for name in ("keras-vae:default", "keras-vae:no_xla"):
            assert data["ratio_to_fastest_peer"][name] == pytest.approx(
                rates[name] / rates[fastest], abs=0.01)


def test_anomaly_quick(tmp_path):
    run("anomaly.py", "--out-dir", str(tmp_path))
    data = json.loads((tmp_path / "anomaly.json").read_text())
    (res,) = data["per_digit"]
    for method in ("elbo", "iwae"):
        assert 0.0 <= res[method]["auroc"] <= 1.0
        # Threshold fitted at 5% FPR on validation data: the test FPR is near it.
        assert res[method]["fpr"] <= 0.15
    # Even 5 epochs separate a held-out digit better than chance.
    assert res["elbo"]["auroc"] > 0.6
    png = (tmp_path / "anomaly_roc.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
